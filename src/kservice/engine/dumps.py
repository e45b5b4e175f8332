"""A real node's dumps as one Ruleset the engine can trace.

``iptables-save``, ``nft list ruleset`` (or an ``nft -f`` script),
``ipvsadm-save -n`` and ``ipset save`` output, as many as a node needs (IPVS
mode: all four of its parts), are told apart by their first lines and read with
the compiler's own parsers. The dumps do not say which addresses are the
node's own, which ``addrtype LOCAL``, IPVS and MASQUERADE's choice of source
depend on: give them as ``node_ips`` (IPVS virtual addresses count as local,
as on ``kube-ipvs0``). Given, and none in the dumps' family, masqueraded
packets are dropped as the kernel drops them; not given, masquerade is
assumed to find an address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

from kservice.engine.packet import EngineError
from kservice.netfilter import iptables_text, ipvs_text, nft_text
from kservice.netfilter.ruleset import Interface, IPSet, Ruleset, Table, VirtualServer

__all__ = ["detect_format", "ruleset_from_dumps"]


def detect_format(text: str) -> str:
    """``iptables``, ``nft-list``, ``nft-script``, ``ipvsadm`` or ``ipset``."""
    for line in text.splitlines():
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        if word.startswith("*") or word.startswith(":") or word == "COMMIT":
            return "iptables"
        if word.startswith("table "):
            return "nft-list"
        words = word.split()
        nft_objects = ("table", "chain", "set", "map", "rule", "element", "ruleset")
        if words[0] in ("add", "flush", "create", "delete", "destroy", "insert") and (
            len(words) > 1 and words[1] in nft_objects
        ):
            return "nft-script"
        if words[0] in ("-A", "-a") and len(words) > 1 and words[1] in ("-t", "-u", "--sctp"):
            return "ipvsadm"
        if words[0] in ("create", "add"):
            return "ipset"
        break
    raise EngineError("cannot tell which tool wrote this dump (iptables-save, nft, ipvsadm-save?)")


def ruleset_from_dumps(
    dumps: Sequence[tuple[str, str]],
    *,
    family: str = "IPv4",
    node_ips: Iterable[str] = (),
) -> Ruleset:
    """One Ruleset from ``(name, text)`` dumps (see the module docstring)."""
    if family not in ("IPv4", "IPv6"):
        raise EngineError(f"family: {family!r} is not IPv4 or IPv6")
    tables: list[Table] = []
    ipsets: list[IPSet] = []
    servers: list[VirtualServer] = []
    iptables_texts: list[tuple[str, str]] = []
    for name, text in dumps:
        try:
            kind = detect_format(text)
        except EngineError as exc:
            raise EngineError(f"{name}: {exc}") from None
        try:
            if kind == "iptables":
                iptables_texts.append((name, text))
            elif kind == "nft-list":
                tables += nft_text.parse_list(text, family=family).tables  # type: ignore[arg-type]
            elif kind == "nft-script":
                tables += nft_text.parse_script(text).tables
            elif kind == "ipvsadm":
                servers += ipvs_text.parse_ipvsadm_save(text)
            else:
                ipsets += ipvs_text.parse_ipset_save(text)
        except ValueError as exc:
            raise EngineError(f"{name}: {exc}") from None
    set_types = {s.name: s.type for s in ipsets}
    ipt_family: Literal["ip", "ip6"] = "ip6" if family == "IPv6" else "ip"
    mode: Literal["iptables", "ipvs"] = "ipvs" if servers else "iptables"
    for name, text in iptables_texts:
        try:
            parsed = iptables_text.parse(text, family=ipt_family, mode=mode, set_types=set_types)
        except ValueError as exc:
            raise EngineError(f"{name}: {exc}") from None
        tables += parsed.ruleset.tables
    if not tables and not servers:
        raise EngineError("no rules in the dumps")
    addresses = []
    for ip in node_ips:
        try:
            addresses.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            raise EngineError(f"node IP: {ip!r} is not an IP address") from None
    # without node IPs the node's interfaces are unknown: no eth0 to say it
    # has no address (the engine would then drop masqueraded packets)
    interfaces = [Interface("lo", ("127.0.0.1" if family == "IPv4" else "::1",), "loopback")]
    if addresses:
        interfaces.append(Interface("eth0", tuple(addresses)))
    if servers:
        vips = tuple(dict.fromkeys(vs.address for vs in servers if vs.address not in addresses))
        interfaces.append(Interface("kube-ipvs0", vips, "dummy"))
    nft = any(t.dialect == "nft" for t in tables)
    ruleset = Ruleset(
        "ipvs" if servers else "nftables" if nft else "iptables",
        family,  # type: ignore[arg-type]
        tables=tuple(tables),
        ipsets=tuple(ipsets),
        virtual_servers=tuple(servers),
        interfaces=tuple(interfaces),
    )
    return ruleset
