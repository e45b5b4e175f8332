"""Upstream's packet-flow tables, answered by the packet engine.

kube-proxy's proxier tests trace a packet through the rules with a small
tracer and compare ``(output, masquerade)``: the DNAT targets any random
choice could pick (joined with ", "), or DROP/REJECT, and whether the packet is
masqueraded. :func:`flow` gives the same answer from
:meth:`kservice.engine.Engine.distribution`, so the compilers' flow tables
check the engine and the engine checks the compilers.
"""

from __future__ import annotations

import ipaddress

from kservice.engine import Engine, Packet
from kservice.netfilter.ruleset import Ruleset

__all__ = ["flow", "normalized"]


def normalized(output: str) -> str:
    """An expected output in comparable form: items sorted, ACCEPT as nothing.

    Upstream's tracer prints ACCEPT only when a rule accepts explicitly and
    nothing when no rule matched; both mean the packet passes unchanged.
    """
    items = sorted(i for i in output.split(", ") if i and i != "ACCEPT")
    return ", ".join(items)


def flow(
    ruleset: Ruleset,
    src: str,
    dst: str,
    port: int,
    proto: str = "tcp",
    *,
    implementation: str | None = None,
) -> tuple[str, bool]:
    """``(output, masq)`` for a new connection, as upstream's tracers report it.

    A source that is one of the node's addresses sends from the node itself
    (OUTPUT); any other arrives on the node's interface (PREROUTING).
    """
    engine = Engine(ruleset, seed=0, implementation=implementation)
    src_ip = ipaddress.ip_address(src)
    local = any(src_ip == ipaddress.ip_address(a) for a in ruleset.local_addresses if "/" not in a)
    packet = Packet(
        dst=dst, dport=port, proto=proto, src=src, origin="node" if local else "external"
    )
    outcomes = engine.distribution(packet)
    items = []
    for verdict in outcomes:
        if verdict.kind == "dnat":
            items.append(verdict.endpoint or "")
        elif verdict.kind != "accept":
            items.append(verdict.kind.upper())
    masq = any(v.masquerade for v in outcomes)
    return ", ".join(sorted(set(items))), masq
