"""The packet engine: where does this packet go, with what probability, and why.

An :class:`Engine` reads a :class:`~kservice.netfilter.ruleset.Ruleset` (from
the compiler, or parsed from a real node's dump), never Services: everything it
decides comes from the rules, as in the kernel. It flattens the ruleset once
(:mod:`kservice.engine.compile`) and runs packets through the flat tables in
the compiled twin ``kservice._fastpath`` or, when that is missing or
``KSERVICE_NO_EXTENSIONS`` is set, the pure-Python ``kservice._fastpath_py``.
Both give identical results for the same seed; :data:`IMPLEMENTATION` says
which one is live.
"""

from __future__ import annotations

import ipaddress
import os
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import attrs

from kservice._gc import gc_paused
from kservice.engine._explore import Oracle, explore
from kservice.engine._state import State
from kservice.engine.compile import HOOKS, IPVS_CHAIN, Program, build
from kservice.engine.packet import (
    KINDS,
    ORIGIN_CODE,
    PROTOCOLS,
    EngineError,
    Packet,
    Step,
    Trace,
    Verdict,
    parse_address,
)
from kservice.netfilter.ruleset import NftSet, RecentMatch, Rule, Ruleset, SetMatch, Table

__all__ = [
    "IMPLEMENTATION",
    "BatchResult",
    "Engine",
    "EngineError",
    "Packet",
    "Step",
    "Trace",
    "Verdict",
]

NO_EXTENSIONS = os.environ.get("KSERVICE_NO_EXTENSIONS", "") not in ("", "0")

if TYPE_CHECKING or NO_EXTENSIONS:
    from kservice._fastpath_py import Machine as _Machine

    IMPLEMENTATION = "python"
else:  # pragma: no branch
    try:
        from kservice._fastpath import Machine as _Machine

        IMPLEMENTATION = "cython"
    except ImportError:  # pragma: no cover - CI fails loudly when this happens
        from kservice._fastpath_py import Machine as _Machine

        IMPLEMENTATION = "python"


def _machine_class(implementation: str | None) -> Any:
    if implementation is None:
        return _Machine
    if implementation == "python":
        from kservice._fastpath_py import Machine

        return Machine
    if implementation == "cython":
        try:
            from kservice._fastpath import Machine as CMachine
        except ImportError as exc:
            raise EngineError(f"the compiled engine is not available: {exc}") from None
        return CMachine
    raise EngineError(f"implementation: {implementation!r} is not 'python' or 'cython'")


@attrs.frozen
class BatchResult:
    """The verdicts of :meth:`Engine.lookup_batch`, one array slot per packet.

    ``kind`` holds codes into :data:`KINDS` (0 accept, 1 dnat, 2 reject,
    3 drop); ``address`` the DNAT target as an integer (IPv4: one ``I`` per
    packet; IPv6: two ``Q`` halves, high then low), 0 when not DNATed;
    ``port`` the destination port after DNAT; ``masquerade`` 0/1; ``rules``
    how many rules each packet's path evaluated.
    """

    family: int
    kind: array[int]
    address: array[int]
    port: array[int]
    masquerade: array[int]
    rules: array[int]

    def __len__(self) -> int:
        return len(self.kind)

    def verdict(self, i: int) -> Verdict:
        kind = KINDS[self.kind[i]]
        masq = bool(self.masquerade[i])
        if kind != "dnat":
            return Verdict(kind, None, None, masq)
        if self.family == 6:
            value = self.address[2 * i] << 64 | self.address[2 * i + 1]
        else:
            value = self.address[i]
        return Verdict(kind, str(ipaddress.ip_address(value)), self.port[i], masq)

    def verdicts(self) -> list[Verdict]:
        return [self.verdict(i) for i in range(len(self))]


def _result_layout(family: int, n: int) -> tuple[tuple[str, str, int], ...]:
    """A BatchResult's arrays for ``n`` packets: (field, typecode, length), in
    field order."""
    return (
        ("kind", "B", n),
        ("address", "Q", 2 * n) if family == 6 else ("address", "I", n),
        ("port", "H", n),
        ("masquerade", "B", n),
        ("rules", "I", n),
    )


def _int_buffer(obj: Any, code: str, what: str, n: int | None) -> Any:
    """``obj`` as a 1-d buffer of ``code`` items (a copy only when it must)."""
    try:
        view = memoryview(obj)
    except TypeError:
        view = None
    if view is not None and view.ndim == 1 and view.format == code:
        buf = obj
        length = len(view)
    else:
        try:
            buf = array(code, view.tolist() if view is not None else obj)
        except (TypeError, OverflowError, ValueError) as exc:
            raise EngineError(f"lookup_batch {what}: {exc}") from None
        length = len(buf)
    if n is not None and length != n:
        raise EngineError(f"lookup_batch {what}: {length} items for {n} packets")
    return buf


class Engine:
    """A ruleset, flattened, with the kernel state the rules read and write.

    ``seed`` makes random choices reproducible (both twins draw the same
    numbers); ``clock`` (seconds, default :func:`time.monotonic`) times affinity
    entries, IPVS persistence and tracked connections, so tests can move time.
    ``flow_cache`` lets the compiled twin remember, per packet key, the paths
    that touch no kernel state (the random draws they make and where each
    leads), so a repeated flow costs one hash probe instead of a rule walk;
    results, rule counts and the random stream are exactly those of the rules.
    Turn it off to measure the rule walk itself.
    """

    def __init__(
        self,
        ruleset: Ruleset,
        *,
        seed: int | None = None,
        clock: Callable[[], float] | None = None,
        implementation: str | None = None,
        flow_cache: bool = True,
    ) -> None:
        if not isinstance(ruleset, Ruleset):
            raise EngineError(f"Engine needs a Ruleset, not {type(ruleset).__name__}")
        machine_class = _machine_class(implementation)
        self.ruleset = ruleset
        self.clock: Callable[[], float] = clock or time.monotonic
        self.seed = int.from_bytes(os.urandom(8), "little") if seed is None else int(seed)
        compiled = machine_class.__module__.endswith("_fastpath")
        with gc_paused():  # see kservice._gc: the tables are acyclic
            self.program: Program = build(ruleset, compiled=compiled)
            self.state = State(self.program, self.clock())
            self._machine = machine_class(self.program, self.state, self.seed, flow_cache)
        self.implementation = "cython" if compiled else "python"
        self._rule_texts: dict[int, str] = {}

    @property
    def family(self) -> int:
        return self.program.family

    # -- decisions ------------------------------------------------------------------------
    def lookup(self, packet: Packet) -> Verdict:
        """Where ``packet`` goes (the random choices drawn from the engine's stream)."""
        return self._machine.lookup(packet, self.clock())  # type: ignore[no-any-return]

    def _source(self, packet: Packet) -> int:
        if packet._version != self.program.family:
            raise EngineError(
                f"packet to {packet.dst}: an IPv{packet._version} packet for an "
                f"IPv{self.program.family} ruleset"
            )
        if packet._src >= 0:
            return packet._src
        if self.program.node_address is None:
            raise EngineError("packet src: the ruleset names no node address to default to")
        return self.program.node_address

    def _run(self, packet: Packet, obs: list[Any] | None, oracle: Oracle | None) -> tuple[int, ...]:
        m = self._machine
        result: tuple[int, ...] = m.run(
            packet._origin,
            self._source(packet),
            packet._sport,
            packet._dst,
            packet.dport,
            packet._proto,
            m.packet_iif(packet),
            self.clock(),
            obs,
            oracle,
        )
        return result

    def trace(self, packet: Packet) -> Trace:
        """Every rule ``packet`` meets, in order, and its verdict."""
        obs: list[Any] = []
        kind, addr, port, masq, rules = self._run(packet, obs, None)
        verdict = self._machine.verdict(kind, addr, port, masq)
        steps, affinity = self._steps(obs)
        return Trace(packet, verdict, steps, rules, affinity)

    def distribution(self, packet: Packet) -> dict[Verdict, float]:
        """The exact probability of each outcome for a new connection like
        ``packet``, computed from the rules (statistic thresholds, numgen,
        IPVS scheduler shares) with the engine's current state (affinity
        entries, tracked connections), which it does not change."""
        exact = self.exact_distribution(packet)
        return {v: float(p) for v, p in exact.items()}

    def exact_distribution(self, packet: Packet) -> dict[Verdict, Fraction]:
        """:meth:`distribution` as exact fractions."""
        m = self._machine

        def run(oracle: Oracle) -> Verdict:
            kind, addr, port, masq, _ = self._run(packet, None, oracle)
            return m.verdict(kind, addr, port, masq)  # type: ignore[no-any-return]

        found = explore(run)
        return dict(sorted(found.items(), key=lambda kv: (-kv[1], str(kv[0]))))  # type: ignore[arg-type]

    def sample(self, packet: Packet, count: int) -> Counter[Verdict]:
        """Send ``count`` new connections like ``packet``; how many went where.

        Each connection gets its own source port (1024 upwards), so connection
        tracking sees them as distinct while affinity (by source address) and
        IPVS persistence still apply.
        """
        if count < 0:
            raise EngineError(f"sample count: {count} must not be negative")
        out: Counter[Verdict] = Counter()
        for i in range(count):
            p = attrs.evolve(packet, sport=1024 + i % 64000) if packet.sport is None else packet
            out[self.lookup(p)] += 1
        return out

    def follow(self, packet: Packet, verdict: Verdict, *, attempts: int = 1000) -> bool:
        """Send ``packet`` as :meth:`lookup` does, but along a path that ends in
        ``verdict``, so the engine's state (affinity entries, tracked
        connections, IPVS counters) becomes what it would be had the kernel's
        random choice been the one observed. Returns False, changing nothing,
        when the rules cannot lead there from the current state.

        The engine draws from its own stream until a draw leads to ``verdict``
        (restoring its state after each miss, except the IPVS round-robin
        position, which moves on to the server the kernel's must have been
        at), so any path the rules allow is found: the chance of missing one
        with probability ``p`` is ``(1 - p) ** attempts``.
        """
        if verdict not in self.exact_distribution(packet):
            return False
        state = self.state
        start = state.snapshot()
        for _ in range(max(1, attempts)):
            saved = state.snapshot()
            if self.lookup(packet) == verdict:
                return True
            state.restore(saved, scheduler=False)
        state.restore(start)
        return False

    def lookup_batch(
        self,
        dst: Any,
        dport: Any,
        *,
        proto: str | int | Any = "tcp",
        src: str | Any | None = None,
        sport: Any | None = None,
        origin: str = "pod",
        iif: str | None = None,
        out: BatchResult | None = None,
    ) -> BatchResult:
        """Many packets at once over buffers; returns arrays (:class:`BatchResult`).

        ``dst``: IPv4 addresses as ``uint32`` integers (``array('I')``, a
        numpy ``uint32`` array, anything with the buffer protocol, or a
        sequence of ints or strings); for IPv6 rulesets, ``2n`` ``uint64``
        halves (``array('Q')``: high, low per packet) or a sequence of
        strings. ``dport``: ``uint16`` (``array('H')``). ``proto``: one
        protocol for all (name or number) or a ``uint8`` buffer of numbers.
        ``src``: one address for all, a buffer like ``dst``, or None (the
        node's address; required for pods and external clients). ``sport``:
        ``uint16`` buffer to track connections, or None. Buffers of exactly
        these types are read in place; anything else is converted first.
        ``out``: a result of an earlier batch of the same size to overwrite
        and return instead of allocating new arrays (for streams of batches:
        fresh arrays cost page faults on every call); if the batch fails,
        its contents are unspecified.
        """
        if origin not in ORIGIN_CODE:
            raise EngineError(f"lookup_batch origin: {origin!r} is not one of pod, node, external")
        v6 = self.program.family == 6
        dst_buf = self._addresses(dst, "dst")
        n = len(memoryview(dst_buf)) // (2 if v6 else 1)
        dport_buf = _int_buffer(dport, "H", "dport", n)
        proto_buf = None
        if isinstance(proto, str | int):
            number = PROTOCOLS.get(proto.lower(), -1) if isinstance(proto, str) else proto
            if number not in PROTOCOLS.values():
                raise EngineError(f"lookup_batch proto: {proto!r} is not one of tcp, udp, sctp")
            if number != 6:
                proto_buf = array("B", [number]) * n
        else:
            proto_buf = _int_buffer(proto, "B", "proto", n)
        src_buf = None
        if src is None:
            if origin != "node":
                raise EngineError(f"lookup_batch src: required for packets from {origin!r}")
            if self.program.node_address is None:
                raise EngineError("lookup_batch src: the ruleset names no node address")
        elif isinstance(src, str):
            version, value = parse_address(src, "lookup_batch src")
            if version != self.program.family:
                raise EngineError(
                    f"lookup_batch src: {src} is not an IPv{self.program.family} address"
                )
            src_buf = (
                array("Q", [value >> 64, value & ((1 << 64) - 1)]) * n
                if v6
                else array("I", [value]) * n
            )
        else:
            src_buf = self._addresses(src, "src")
            if len(memoryview(src_buf)) != len(memoryview(dst_buf)):
                raise EngineError("lookup_batch src: not as many addresses as dst")
        sport_buf = None if sport is None else _int_buffer(sport, "H", "sport", n)
        m = self._machine
        iif_mask = (
            m.iface_mask(iif)
            if iif is not None
            else (m.pod_mask if origin == "pod" else m.primary_mask if origin == "external" else 0)
        )
        layout = _result_layout(self.program.family, n)
        if out is None:
            # array([0]) * n repeats by memcpy: a twentieth of the cost of
            # array(bytes(...)), which zeroes a temporary and then copies it
            result = BatchResult(
                self.program.family, *(array(code, [0]) * length for _, code, length in layout)
            )
        else:
            result = self._check_out(out, n, layout)
        m.lookup_batch(
            dst_buf,
            dport_buf,
            proto_buf,
            src_buf,
            sport_buf,
            ORIGIN_CODE[origin],
            iif_mask,
            self.clock(),
            n,
            result.kind,
            result.address,
            result.port,
            result.masquerade,
            result.rules,
        )
        return result

    def _check_out(self, out: Any, n: int, layout: tuple[tuple[str, str, int], ...]) -> BatchResult:
        family = self.program.family
        if not isinstance(out, BatchResult):
            raise EngineError(
                f"lookup_batch out: a BatchResult of an earlier batch, not {type(out).__name__}"
            )
        if out.family != family:
            raise EngineError(
                f"lookup_batch out: holds IPv{out.family} results, the ruleset is IPv{family}"
            )
        for name, code, length in layout:
            buf = getattr(out, name)
            if not isinstance(buf, array) or buf.typecode != code or len(buf) != length:
                raise EngineError(
                    f"lookup_batch out: {name} must be array({code!r}) of {length} items "
                    f"for {n} packets"
                )
        return out

    def _addresses(self, obj: Any, what: str) -> Any:
        v6 = self.program.family == 6
        if isinstance(obj, Sequence) and obj and isinstance(obj[0], str):
            values = []
            for text in obj:
                try:
                    ip = ipaddress.ip_address(text)
                except ValueError:
                    raise EngineError(
                        f"lookup_batch {what}: {text!r} is not an IP address"
                    ) from None
                if ip.version != self.program.family:
                    raise EngineError(
                        f"lookup_batch {what}: {text} is not an IPv{self.program.family} address"
                    )
                values.append(int(ip))
            if v6:
                return array("Q", [h for v in values for h in (v >> 64, v & ((1 << 64) - 1))])
            return array("I", values)
        buf = _int_buffer(obj, "Q" if v6 else "I", what, None)
        if v6 and len(memoryview(buf)) % 2:
            raise EngineError(f"lookup_batch {what}: IPv6 needs two uint64 halves per packet")
        return buf

    def flush_conntrack(self) -> None:
        """Forget every tracked connection (``conntrack -F``)."""
        self.state.conntrack.clear()

    # -- traces -------------------------------------------------------------------------
    def rule_text(self, rule_id: int) -> str:
        text = self._rule_texts.get(rule_id)
        if text is None:
            ti, chain, index = self.program.rule_where[rule_id]
            table = self.program.tables[ti]
            text = _rule_text(table, chain, table.chain(chain).rules[index])
            self._rule_texts[rule_id] = text
        return text

    def _steps(self, obs: Iterable[Any]) -> tuple[tuple[Step, ...], tuple[str, ...]]:
        prog = self.program
        steps: list[Step] = []
        affinity: list[str] = []
        hook = ""
        for event, a, b in obs:
            if event == 0:
                ti, chain, index = prog.rule_where[a]
                table = prog.tables[ti]
                steps.append(
                    Step("rule", hook, table.name, chain, index, self.rule_text(a), bool(b))
                )
                if b:
                    affinity += _affinity_names(table, table.chain(chain).rules[index])
            elif event == 1:
                hook = HOOKS[a]
                if b == IPVS_CHAIN:
                    ti, chain = 0, "ipvs"
                else:
                    ti, chain = prog.chain_tables[b], prog.chain_names[b]
                steps.append(Step("hook", hook, prog.tables[ti].name, chain))
            elif event == 2:
                steps.append(Step("ipvs", hook, text=self._ipvs_text(a, b)))
            elif event == 3:
                steps.append(
                    Step("conntrack", hook, text="established connection: its NAT is reused")
                )
            elif event == 4:
                where = "local delivery (INPUT)" if a else "forwarded (FORWARD)"
                steps.append(Step("route", hook, text=f"routing decision: {where}"))
            elif event == 5:
                steps.append(
                    Step(
                        "nat",
                        hook,
                        text=f"MASQUERADE: the node has no IPv{prog.family} address to "
                        "masquerade to, so the kernel drops the packet",
                    )
                )
        return tuple(steps), tuple(dict.fromkeys(affinity))

    def _ipvs_text(self, vs_id: int, server: int) -> str:
        if vs_id < 0:
            return "IPVS: no virtual server for this destination"
        vs = self.program.virtual_servers[vs_id]
        if server < 0:
            if not any(rs.weight > 0 for rs in vs.servers):
                return f"IPVS: {vs.text}: no real server available (ICMP port unreachable)"
            return f"IPVS: {vs.text}"
        rs = vs.servers[server]
        host = f"[{rs.text}]" if ":" in rs.text else rs.text
        return f"IPVS: {vs.text} -> {host}:{rs.port} (weight {rs.weight})"


def _affinity_names(table: Table, rule: Rule) -> list[str]:
    names = []
    sets = {s.name: s for s in table.sets}
    for e in rule.exprs:
        if isinstance(e, RecentMatch) and e.mode == "rcheck" and not e.negate:
            names.append(e.name)
        elif isinstance(e, SetMatch) and not e.negate:
            s: NftSet | None = sets.get(e.set_name)
            if s is not None and (s.timeout is not None or "timeout" in s.flags):
                names.append(e.set_name)
    return names


def _rule_text(table: Table, chain: str, rule: Rule) -> str:
    """The rule as its tool prints it (``-A CHAIN ...`` or nft's rule text)."""
    if table.dialect == "iptables":
        from kservice.netfilter import iptables_text

        family = "IPv6" if table.family == "ip6" else "IPv4"
        return iptables_text._restore_rule(chain, rule, family)  # type: ignore[arg-type]
    from kservice.netfilter import nft_text

    return nft_text._render_rule(rule, nft_text._ctx_for(table), "list")
