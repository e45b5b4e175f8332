"""Packets, verdicts and traces: what goes into the engine and what comes out.

Addresses are parsed once, when a :class:`Packet` is made, so a lookup reads
integers only (netaddr's habit: integers underneath, strings at the edges).
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

import attrs

from kservice.errors import KServiceError

__all__ = [
    "ORIGINS",
    "PROTOCOLS",
    "EngineError",
    "Packet",
    "Step",
    "Trace",
    "Verdict",
    "VerdictKind",
]

Origin = Literal["pod", "node", "external"]
VerdictKind = Literal["accept", "dnat", "reject", "drop"]
#: Where a packet comes from; it decides the first hook, as in the kernel: a
#: pod's and an outside client's packets arrive on an interface (PREROUTING),
#: the node's own leave through OUTPUT.
ORIGINS: tuple[str, ...] = ("pod", "node", "external")
#: Transport protocols and their IANA numbers (what ``meta l4proto`` compares).
PROTOCOLS: dict[str, int] = {"tcp": 6, "udp": 17, "sctp": 132}
ORIGIN_CODE = {"pod": 0, "node": 1, "external": 2}
#: The verdict kinds in the order of their integer codes (batch results).
KINDS: tuple[VerdictKind, ...] = ("accept", "dnat", "reject", "drop")


class EngineError(KServiceError, ValueError):
    """A ruleset the engine cannot model, or a packet it cannot trace."""


def parse_address(value: str, what: str) -> tuple[int, int]:
    """``(version, integer)`` of an address; IPv4-mapped IPv6 counts as IPv4."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise EngineError(f"{what}: {value!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.version, int(ip)


def _port(value: int | None, what: str, *, optional: bool) -> int:
    if value is None and optional:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise EngineError(f"packet {what}: {value!r} is not a port number")
    if not 1 <= value <= 65535:
        raise EngineError(f"packet {what}: {value} must be between 1 and 65535, inclusive")
    return value


@attrs.frozen(slots=True, eq=True)
class Packet:
    """The first packet of a connection (or a later one, when ``sport`` is given).

    ``origin`` is ``"pod"`` (from a pod on this node: it arrives on the pod's
    interface), ``"node"`` (sent by the node itself) or ``"external"``
    (arriving on the node's interface from outside). ``src`` may be left out
    for ``"node"`` (the node's first address is used). ``sport``: without it
    every packet is the first of a new, untracked connection; with it the
    engine tracks the connection, so later packets with the same five-tuple
    keep the first one's NAT decision, as conntrack does. ``iif`` overrides
    the input interface (defaults: ``veth0`` for pods, the node's interface
    for external traffic).
    """

    dst: str
    dport: int
    proto: str = "tcp"
    src: str | None = None
    sport: int | None = None
    origin: Origin = "pod"
    iif: str | None = None
    # Parsed once (integers underneath).
    _dst: int = attrs.field(init=False, repr=False, eq=False)
    _src: int = attrs.field(init=False, repr=False, eq=False)
    _version: int = attrs.field(init=False, repr=False, eq=False)
    _proto: int = attrs.field(init=False, repr=False, eq=False)
    _origin: int = attrs.field(init=False, repr=False, eq=False)
    _sport: int = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        set_ = object.__setattr__
        if self.origin not in ORIGIN_CODE:
            raise EngineError(f"packet origin: {self.origin!r} is not one of {', '.join(ORIGINS)}")
        proto = self.proto.lower() if isinstance(self.proto, str) else self.proto
        if proto not in PROTOCOLS:
            raise EngineError(f"packet proto: {self.proto!r} is not one of tcp, udp, sctp")
        version, dst = parse_address(self.dst, "packet dst")
        src = -1
        if self.src is not None:
            src_version, src = parse_address(self.src, "packet src")
            if src_version != version:
                raise EngineError(
                    f"packet src {self.src} and dst {self.dst} are of different IP families"
                )
        elif self.origin != "node":
            raise EngineError(f"packet src: required for a packet from {self.origin!r}")
        set_(self, "proto", proto)
        set_(self, "_dst", dst)
        set_(self, "_src", src)
        set_(self, "_version", version)
        set_(self, "_proto", PROTOCOLS[proto])
        set_(self, "_origin", ORIGIN_CODE[self.origin])
        _port(self.dport, "dport", optional=False)
        set_(self, "_sport", _port(self.sport, "sport", optional=True))


@attrs.frozen(slots=True)
class Verdict:
    """Where a packet goes: its fate after every hook on this node.

    ``kind`` is ``"dnat"`` (destination rewritten to ``address:port``),
    ``"accept"`` (passed on unchanged), ``"reject"`` (refused: TCP reset or
    ICMP unreachable) or ``"drop"``. ``masquerade`` says whether the source
    was rewritten on the way out (POSTROUTING masquerade / SNAT).
    """

    kind: VerdictKind
    address: str | None = None
    port: int | None = None
    masquerade: bool = False

    @property
    def endpoint(self) -> str | None:
        """``ip:port`` (``[ip]:port`` for IPv6) of the DNAT target, or None."""
        if self.address is None:
            return None
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        text = {
            "dnat": f"DNAT to {self.endpoint}",
            "accept": "ACCEPT (unchanged)",
            "reject": "REJECT",
            "drop": "DROP",
        }[self.kind]
        return text + (", masqueraded" if self.masquerade else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "address": self.address,
            "port": self.port,
            "masquerade": self.masquerade,
        }


@attrs.frozen(slots=True)
class Step:
    """One event of a trace.

    ``event`` is ``"hook"`` (a base chain starts: ``chain`` at ``hook``),
    ``"rule"`` (a rule was evaluated; ``matched`` says whether all of its
    matches held and its statements and verdict took effect), ``"ipvs"``
    (IPVS looked the destination up), ``"route"`` (the routing decision
    after PREROUTING), ``"conntrack"`` (a tracked connection's NAT was
    reused) or ``"nat"`` (MASQUERADE found no source address: the node has
    none in the packet's family, and the kernel drops the packet).
    """

    event: Literal["hook", "rule", "ipvs", "route", "conntrack", "nat"]
    hook: str
    table: str = ""
    chain: str = ""
    index: int = -1
    text: str = ""
    matched: bool = False

    def __str__(self) -> str:
        if self.event == "rule":
            mark = "✓" if self.matched else "·"
            return f"  {mark} {self.table} {self.chain} #{self.index}: {self.text}"
        if self.event == "hook":
            return f"{self.hook}: {self.table} {self.chain}"
        return f"  [{self.event}] {self.text}"


@attrs.frozen(slots=True)
class Trace:
    """The path of one packet: every step, the verdict, and what it cost."""

    packet: Packet
    verdict: Verdict
    steps: tuple[Step, ...]
    rules_evaluated: int
    affinity: tuple[str, ...] = ()

    @property
    def matched(self) -> tuple[Step, ...]:
        """The rules that matched (took effect), in order."""
        return tuple(s for s in self.steps if s.event == "rule" and s.matched)

    def to_dict(self) -> dict[str, Any]:
        return {
            "packet": {
                "src": self.packet.src,
                "sport": self.packet.sport,
                "dst": self.packet.dst,
                "dport": self.packet.dport,
                "proto": self.packet.proto,
                "origin": self.packet.origin,
            },
            "verdict": self.verdict.to_dict(),
            "rules_evaluated": self.rules_evaluated,
            "affinity": list(self.affinity),
            "steps": [attrs.asdict(s) for s in self.steps],
        }
