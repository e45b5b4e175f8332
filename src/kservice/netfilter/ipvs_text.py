"""IPVS mode's kernel state as text: ``ipvsadm-save -n`` and ``ipset save``.

``ipvsadm-save -n`` (``ipvsadm -S -n``) prints one ``-A`` line per virtual
service and one ``-a`` line per destination, in the order ipvsadm's own
``print_service_entry`` uses::

    -A -t 10.96.0.1:443 -s rr -p 10800
    -a -t 10.96.0.1:443 -r 192.168.1.10:6443 -m -w 1

The protocol switch is ``-t`` (tcp), ``-u`` (udp) or ``--sctp-service``;
IPv6 addresses are bracketed (``[fd00::1]:80``); ``-p TIMEOUT`` appears for
persistent services (kube-proxy's ClientIP affinity); then, when the service
has scheduler flags, ``-b`` and their names joined by commas, fallback before
port (``-A -t 10.96.0.1:443 -s mh -p 10800 -b mh-port``: ipvsadm names the
``IP_VS_SVC_F_SCHED1/2/3`` bits ``sh-fallback``/``sh-port`` for ``sh``,
``mh-fallback``/``mh-port`` for ``mh``, ``flag-1``/``flag-2`` otherwise, and
``flag-3``). The forwarding method is ``-m`` (masquerading), ``-g``
(gatewaying/direct routing) or ``-i`` (ipip tunnel), then ``-w WEIGHT``.

``ipset save`` prints, per set, a ``create`` line then one ``add`` line per
entry. kube-proxy creates hash sets with ``family inet|inet6 hashsize 1024
maxelem 65536`` and ``bitmap:port`` sets with ``range 0-65535``
(``pkg/proxy/ipvs/ipset/ipset.go`` ``createSet``), and adds bare entries (no
per-entry comment, no ``comment`` flag on the set). What the kernel gives back
differs in the header of hash sets: ipset 7.11+ appends ``bucketsize 12
initval 0x6abf6a37`` (the hash seed, random per set), and ``hashsize`` is the
table's current size, doubled by the kernel as the set grows (2048 once
KUBE-CLUSTER-IP holds 5,000 entries). :class:`~kservice.netfilter.ruleset.IPSet`
keeps all four, so a real dump reads and prints back byte for byte; a compiled
Ruleset has kube-proxy's ``hashsize``/``maxelem`` and no ``bucketsize`` or
``initval``, and so prints kube-proxy's own ``create`` arguments. The sets'
comments exist only in kube-proxy (they appear in iptables rule comments), so
:func:`parse_ipset_save` restores them from a name -> comment map
(kube-proxy's, by default). ``bitmap:port`` sets have no family; they are read
as ``inet``.

Both parsers raise :class:`IPVSTextError` on anything they do not understand
(with the line number), so nothing is dropped silently.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable, Mapping
from typing import Final, Literal, cast

import attrs

from kservice.errors import KServiceError
from kservice.netfilter.ruleset import IPSet, RealServer, Ruleset, VirtualServer

__all__ = [
    "IPVSTextError",
    "parse_ipset_save",
    "parse_ipvsadm_save",
    "render_ipset_save",
    "render_ipvsadm_save",
]

_PROTO_SWITCH: Final = {"tcp": "-t", "udp": "-u", "sctp": "--sctp-service"}
_SWITCH_PROTO: Final = {
    "-t": "tcp",
    "--tcp-service": "tcp",
    "-u": "udp",
    "--udp-service": "udp",
    "--sctp-service": "sctp",
}
_FWD_SWITCH: Final = {"masq": "-m", "route": "-g", "tunnel": "-i"}
_SWITCH_FWD: Final = {
    "-m": "masq",
    "--masquerading": "masq",
    "-g": "route",
    "--gatewaying": "route",
    "-i": "tunnel",
    "--ipip": "tunnel",
}
#: Scheduler flag names -> their IP_VS_SVC_F_SCHEDn bit, and the scheduler a
#: name is restricted to (ipvsadm refuses "incompatible scheduler flag"s).
_FLAG_BITS: Final[dict[str, tuple[int, str | None]]] = {
    "flag-1": (0x08, None),
    "flag-2": (0x10, None),
    "flag-3": (0x20, None),
    "sh-fallback": (0x08, "sh"),
    "sh-port": (0x10, "sh"),
    "mh-fallback": (0x08, "mh"),
    "mh-port": (0x10, "mh"),
}
#: What ipvsadm-save prints for each bit, per scheduler, in its order.
_FLAG_NAMES: Final[dict[str, tuple[tuple[int, str], ...]]] = {
    "sh": ((0x08, "sh-fallback"), (0x10, "sh-port"), (0x20, "flag-3")),
    "mh": ((0x08, "mh-fallback"), (0x10, "mh-port"), (0x20, "flag-3")),
    "": ((0x08, "flag-1"), (0x10, "flag-2"), (0x20, "flag-3")),
}
_HASHSIZE: Final = 1024
_MAXELEM: Final = 65536
_PORT_RANGE: Final = "0-65535"


class IPVSTextError(KServiceError, ValueError):
    """Text that is not valid ``ipvsadm-save -n`` / ``ipset save`` output (or cannot be written)."""

    def __init__(self, message: str, *, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


# ------------------------------------------------------------------------------ ipvsadm
def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _service_words(vs: VirtualServer) -> str:
    switch = _PROTO_SWITCH.get(vs.protocol)
    if switch is None:
        raise IPVSTextError(f"virtual server protocol {vs.protocol!r} is not tcp, udp or sctp")
    return f"{switch} {_host_port(vs.address, vs.port)}"


def _flag_bits(scheduler: str, names: Iterable[str]) -> int:
    """The flag bits of ``names``; ValueError for a name ipvsadm does not take here."""
    bits = 0
    for name in names:
        if name not in _FLAG_BITS:
            raise ValueError(f"invalid scheduler flag {name!r}")
        bit, only = _FLAG_BITS[name]
        if only is not None and only != scheduler:
            raise ValueError(f"incompatible scheduler flag {name!r} for scheduler {scheduler!r}")
        bits |= bit
    return bits


def _flag_names(scheduler: str, bits: int) -> tuple[str, ...]:
    """The names ipvsadm-save prints for ``bits``, in its order."""
    table = _FLAG_NAMES.get(scheduler, _FLAG_NAMES[""])
    return tuple(name for bit, name in table if bits & bit)


def render_ipvsadm_save(ruleset: Ruleset) -> str:
    """``ipvsadm-save -n`` of ``ruleset.virtual_servers`` (in their order).

    A virtual server's ``flags`` must be what ipvsadm-save itself prints for
    them (its names for the scheduler, each once, in its order), or
    :class:`IPVSTextError` is raised: anything else would read back different.
    """
    lines: list[str] = []
    for vs in ruleset.virtual_servers:
        svc = _service_words(vs)
        line = f"-A {svc} -s {vs.scheduler}"
        if vs.persistence is not None:
            line += f" -p {vs.persistence}"
        if vs.flags:
            try:
                canonical = _flag_names(vs.scheduler, _flag_bits(vs.scheduler, vs.flags))
            except ValueError as exc:
                raise IPVSTextError(f"virtual server {svc}: {exc}") from None
            if canonical != vs.flags:
                raise IPVSTextError(
                    f"virtual server {svc}: flags {vs.flags!r} are not as ipvsadm-save "
                    f"prints them ({canonical!r})"
                )
            line += " -b " + ",".join(vs.flags)
        lines.append(line)
        for rs in vs.real_servers:
            fwd = _FWD_SWITCH.get(rs.forward)
            if fwd is None:
                raise IPVSTextError(f"real server forward method {rs.forward!r} unknown")
            lines.append(f"-a {svc} -r {_host_port(rs.address, rs.port)} {fwd} -w {rs.weight}")
    return "".join(line + "\n" for line in lines)


def _split_host_port(text: str, number: int) -> tuple[str, int]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise IPVSTextError(f"bad address {text!r}", line=number)
        host, port = text[1:end], text[end + 2 :]
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            raise IPVSTextError(f"bad address {text!r}", line=number)
    try:
        addr = ipaddress.ip_address(host)
        port_num = int(port)
    except ValueError:
        raise IPVSTextError(f"bad address {text!r}", line=number) from None
    if not 0 <= port_num <= 65535 or not port.isdigit():
        raise IPVSTextError(f"bad port in {text!r}", line=number)
    return str(addr), port_num


def _int(text: str, what: str, number: int) -> int:
    if not text.isdigit():
        raise IPVSTextError(f"{what} {text!r} is not a number", line=number)
    return int(text)


def parse_ipvsadm_save(text: str) -> tuple[VirtualServer, ...]:
    """Read ``ipvsadm-save -n`` output back into virtual servers (in file order).

    Blank lines and ``#`` comments are skipped. A ``-a`` line must follow the
    ``-A`` of its service.
    """
    order: list[tuple[str, str, int]] = []
    heads: dict[tuple[str, str, int], VirtualServer] = {}
    reals: dict[tuple[str, str, int], list[RealServer]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        cmd = words[0]
        if cmd not in ("-A", "-a") or len(words) < 3:
            raise IPVSTextError(f"expected -A or -a, got {line!r}", line=number)
        proto = _SWITCH_PROTO.get(words[1])
        if proto is None:
            raise IPVSTextError(f"unknown service switch {words[1]!r}", line=number)
        address, port = _split_host_port(words[2], number)
        key = (address, proto, port)
        opts = words[3:]
        if cmd == "-A":
            if key in heads:
                raise IPVSTextError(f"service {words[2]} defined twice", line=number)
            scheduler = "wlc"  # ipvsadm's default when -s is absent
            persistence: int | None = None
            flag_words: list[str] = []
            i = 0
            while i < len(opts):
                opt = opts[i]
                if opt in ("-s", "--scheduler") and i + 1 < len(opts):
                    scheduler = opts[i + 1]
                    i += 2
                elif opt in ("-p", "--persistent") and i + 1 < len(opts):
                    persistence = _int(opts[i + 1], "timeout", number)
                    i += 2
                elif opt in ("-b", "--sched-flags") and i + 1 < len(opts):
                    flag_words += opts[i + 1].split(",")
                    i += 2
                else:
                    raise IPVSTextError(f"unsupported option {opt!r}", line=number)
            try:
                flags = _flag_names(scheduler, _flag_bits(scheduler, flag_words))
            except ValueError as exc:
                raise IPVSTextError(str(exc), line=number) from None
            heads[key] = VirtualServer(
                address,
                cast(Literal["tcp", "udp", "sctp"], proto),
                port,
                scheduler,
                persistence,
                flags=flags,
            )
            order.append(key)
            reals[key] = []
            continue
        if key not in heads:
            raise IPVSTextError(f"destination for unknown service {words[2]}", line=number)
        r_addr: tuple[str, int] | None = None
        forward = "route"  # ipvsadm's default method is gatewaying
        weight = 1
        i = 0
        while i < len(opts):
            opt = opts[i]
            if opt in ("-r", "--real-server") and i + 1 < len(opts):
                r_addr = _split_host_port(opts[i + 1], number)
                i += 2
            elif opt in _SWITCH_FWD:
                forward = _SWITCH_FWD[opt]
                i += 1
            elif opt in ("-w", "--weight") and i + 1 < len(opts):
                weight = _int(opts[i + 1], "weight", number)
                i += 2
            else:
                raise IPVSTextError(f"unsupported option {opt!r}", line=number)
        if r_addr is None:
            raise IPVSTextError("destination without -r", line=number)
        reals[key].append(
            RealServer(
                r_addr[0], r_addr[1], weight, cast(Literal["masq", "route", "tunnel"], forward)
            )
        )
    out = []
    for key in order:
        head = heads[key]
        out.append(
            VirtualServer(
                head.address,
                head.protocol,
                head.port,
                head.scheduler,
                head.persistence,
                tuple(reals[key]),
                head.flags,
            )
        )
    return tuple(out)


# -------------------------------------------------------------------------------- ipset
def _check_word(text: str, what: str) -> None:
    if not text or any(c.isspace() for c in text) or '"' in text:
        raise IPVSTextError(f"{what} {text!r} cannot be written to ipset save text")


def render_ipset_save(ruleset: Ruleset) -> str:
    """``ipset save`` of ``ruleset.ipsets``: per set its ``create`` line, then its ``add`` lines."""
    lines: list[str] = []
    for s in ruleset.ipsets:
        _check_word(s.name, "set name")
        _check_word(s.type, "set type")
        if len(s.name) > 31:
            raise IPVSTextError(f"set name {s.name!r} is longer than 31 characters")
        if s.type.startswith("bitmap:"):
            if (s.hashsize, s.maxelem, s.bucketsize, s.initval) != (
                _HASHSIZE,
                _MAXELEM,
                None,
                None,
            ):
                raise IPVSTextError(
                    f"set {s.name}: a {s.type} set has no hashsize, maxelem, bucketsize or initval"
                )
            lines.append(f"create {s.name} {s.type} range {_PORT_RANGE}")
        else:
            if s.family not in ("inet", "inet6"):
                raise IPVSTextError(f"set family {s.family!r} is not inet or inet6")
            sizes = [("hashsize", s.hashsize), ("maxelem", s.maxelem), ("bucketsize", s.bucketsize)]
            for what, value in sizes:
                if value is not None and value < 1:
                    raise IPVSTextError(f"set {s.name}: {what} {value} is not positive")
            if s.initval is not None and not 0 <= s.initval <= 0xFFFFFFFF:
                raise IPVSTextError(f"set {s.name}: initval {s.initval} is not 32-bit")
            line = (
                f"create {s.name} {s.type} family {s.family} "
                f"hashsize {s.hashsize} maxelem {s.maxelem}"
            )
            if s.bucketsize is not None:
                line += f" bucketsize {s.bucketsize}"
            if s.initval is not None:
                line += f" initval 0x{s.initval:08x}"  # as ipset prints it
            lines.append(line)
        for element in s.elements:
            _check_word(element, "element")
            lines.append(f"add {s.name} {element}")
    return "".join(line + "\n" for line in lines)


#: Hash-set header options kept in IPSet (``initval`` is hexadecimal).
_HASH_OPTIONS: Final = frozenset({"hashsize", "maxelem", "bucketsize", "initval"})


def _header_number(opt: str, text: str, number: int) -> int:
    """A create option's number: ``initval`` in hex (``0x6abf6a37``), the sizes decimal."""
    try:
        value = int(text, 16) if opt == "initval" and text.lower().startswith("0x") else int(text)
    except ValueError:
        raise IPVSTextError(f"{opt} {text!r} is not a number", line=number) from None
    if value < (0 if opt == "initval" else 1) or value > 0xFFFFFFFF or not text.isalnum():
        raise IPVSTextError(f"{opt} {text!r} is out of range", line=number)
    return value


def parse_ipset_save(text: str, *, comments: Mapping[str, str] | None = None) -> tuple[IPSet, ...]:
    """Read ``ipset save`` output back into IPSets (in file order).

    ``comments`` maps set names to the comment to attach (default: kube-proxy's
    set comments, :func:`kservice.proxy.ipvs.ipset_comments`). A hash set's
    ``family``, ``hashsize``, ``maxelem``, ``bucketsize`` and ``initval`` are
    kept; a ``bitmap:port`` set's ``range`` must be kube-proxy's ``0-65535``.
    Any other option, and per-entry extensions (``comment``, ``timeout``...),
    raise :class:`IPVSTextError`.
    """
    if comments is None:
        from kservice.proxy.ipvs import ipset_comments

        comments = ipset_comments()
    order: list[str] = []
    heads: dict[str, IPSet] = {}
    elements: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError:
            raise IPVSTextError(f"unterminated quote in {line!r}", line=number) from None
        cmd = words[0]
        if cmd in ("create", "-N") and len(words) >= 3:
            name, set_type = words[1], words[2]
            if name in heads:
                raise IPVSTextError(f"set {name!r} created twice", line=number)
            bitmap = set_type.startswith("bitmap:")
            family = "inet"
            header: dict[str, int] = {}
            opts = words[3:]
            i = 0
            while i < len(opts):
                opt = opts[i]
                if opt == "family" and i + 1 < len(opts) and not bitmap:
                    family = opts[i + 1]
                    if family not in ("inet", "inet6"):
                        raise IPVSTextError(f"unknown family {family!r}", line=number)
                    i += 2
                elif opt in _HASH_OPTIONS and i + 1 < len(opts) and not bitmap:
                    header[opt] = _header_number(opt, opts[i + 1], number)
                    i += 2
                elif opt == "range" and i + 1 < len(opts) and bitmap:
                    if opts[i + 1] != _PORT_RANGE:
                        raise IPVSTextError(
                            f"range {opts[i + 1]!r} is not modelled (kube-proxy's: {_PORT_RANGE})",
                            line=number,
                        )
                    i += 2
                else:
                    raise IPVSTextError(f"unsupported create option {opt!r}", line=number)
            heads[name] = IPSet(
                name,
                set_type,
                family,
                hashsize=header.get("hashsize", _HASHSIZE),
                maxelem=header.get("maxelem", _MAXELEM),
                bucketsize=header.get("bucketsize"),
                initval=header.get("initval"),
            )
            elements[name] = []
            order.append(name)
        elif cmd in ("add", "-A") and len(words) >= 3:
            name = words[1]
            if name not in heads:
                raise IPVSTextError(f"add to unknown set {name!r}", line=number)
            if len(words) > 3:
                raise IPVSTextError(f"unsupported entry options {words[3:]!r}", line=number)
            elements[name].append(words[2])
        else:
            raise IPVSTextError(f"expected create or add, got {line!r}", line=number)
    return tuple(
        attrs.evolve(heads[name], elements=tuple(elements[name]), comment=comments.get(name))
        for name in order
    )
