"""The engine's kernel state, shared by both twins: only what the kernel keeps.

* ``recent`` tables (xt_recent): per table and address, when it was last seen;
* nft sets with timeouts (kube-proxy's affinity sets): key -> expiry;
* connection tracking: a tracked connection's NAT decision;
* IPVS: the schedulers' state (round-robin position, connection counts) and
  persistence templates.

Both twins call these methods, so their state can never drift apart. In *dry*
mode (``Engine.distribution``) nothing is written. Times are seconds from the
engine's clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from kservice.engine.compile import Program, VirtualServerSpec

__all__ = ["CONNTRACK_TIMEOUT", "State"]

#: How long a tracked connection lives without packets (nf_conntrack defaults
#: for an established TCP connection, an assured UDP stream and SCTP).
CONNTRACK_TIMEOUT = {6: 432000.0, 17: 120.0, 132: 432000.0}
_GOLDEN_RATIO_32 = 0x61C88647
_TAB_SIZE = 256

Oracle = Any  # see kservice.engine._explore.Oracle


class State:
    """Kernel state for one engine (see the module docstring)."""

    def __init__(self, program: Program, now: float) -> None:
        self.program = program
        self.recent_seen: dict[tuple[int, int], float] = {}
        self.dynamic: dict[tuple[int, tuple[int, int, int]], float] = {}
        self.conntrack: dict[tuple[int, int, int, int, int], tuple[float, tuple[int, ...]]] = {}
        for sid, spec in enumerate(program.sets):
            if spec.kind == 2:  # static elements of a timeout set expire like added ones
                for key in spec.elements:
                    self.dynamic[sid, key] = now + spec.timeout
        self.vs_index = {
            (vs.address, vs.protocol, vs.port): i for i, vs in enumerate(program.virtual_servers)
        }
        n = len(program.virtual_servers)
        self.rr_pos = [-1] * n
        self.wrr = [(-1, 0)] * n  # (current index, current weight)
        self.conns = [[0] * len(vs.servers) for vs in program.virtual_servers]
        self.templates: dict[tuple[int, int], tuple[int, float]] = {}
        self._tables: dict[int, list[int]] = {}

    # -- snapshots (Engine.follow) ------------------------------------------------
    def snapshot(self) -> tuple[Any, ...]:
        """Everything a lookup may write, copied (restore with :meth:`restore`)."""
        return (
            dict(self.recent_seen),
            dict(self.dynamic),
            dict(self.conntrack),
            list(self.rr_pos),
            list(self.wrr),
            [list(c) for c in self.conns],
            dict(self.templates),
        )

    def restore(self, snap: tuple[Any, ...], *, scheduler: bool = True) -> None:
        """Put back a :meth:`snapshot`, in place (the twins hold these objects);
        with ``scheduler=False`` the IPVS round-robin positions move on."""
        recent, dynamic, conntrack, rr_pos, wrr, conns, templates = snap
        for mine, saved in (
            (self.recent_seen, recent),
            (self.dynamic, dynamic),
            (self.conntrack, conntrack),
            (self.templates, templates),
        ):
            mine.clear()
            mine.update(saved)
        if scheduler:
            self.rr_pos[:] = rr_pos
            self.wrr[:] = wrr
        for mine_c, saved_c in zip(self.conns, conns, strict=True):
            mine_c[:] = saved_c

    # -- xt_recent ------------------------------------------------------------------
    def recent(
        self, table: int, flags: int, seconds: int, addr: int, now: float, dry: bool
    ) -> bool:
        """``-m recent``; ``flags`` = mode | rdest<<4 | reap<<5 | negate<<6."""
        mode = flags & 15
        key = (table, addr)
        if mode == 0:  # --set: always matches, records the address
            if not dry:
                self.recent_seen[key] = now
            hit = True
        else:
            last = self.recent_seen.get(key)
            hit = last is not None and (seconds < 0 or now - last < seconds)
            if last is not None and not dry:
                if flags & 32 and seconds >= 0 and now - last >= seconds:  # --reap
                    del self.recent_seen[key]
                elif hit and mode == 2:  # --update
                    self.recent_seen[key] = now
                elif hit and mode == 3:  # --remove
                    del self.recent_seen[key]
        return hit != bool(flags & 64)

    # -- nft sets with timeouts --------------------------------------------------------
    def dyn_has(self, sid: int, key: tuple[int, int, int], now: float) -> bool:
        expiry = self.dynamic.get((sid, key))
        return expiry is not None and now < expiry

    def dyn_update(self, sid: int, key: tuple[int, int, int], now: float, dry: bool) -> None:
        if not dry:
            self.dynamic[sid, key] = now + self.program.sets[sid].timeout

    # -- ipsets with net dimensions -------------------------------------------------------
    def rows_have(self, sid: int, values: list[int]) -> bool:
        for row in self.program.sets[sid].rows:
            for value, (net, mask) in zip(values, row, strict=True):
                if value & mask != net:
                    break
            else:
                return True
        return False

    # -- conntrack -----------------------------------------------------------------------
    def ct_get(self, key: tuple[int, int, int, int, int], now: float) -> tuple[int, ...] | None:
        found = self.conntrack.get(key)
        if found is None:
            return None
        expiry, entry = found
        if now >= expiry:
            del self.conntrack[key]
            return None
        self.conntrack[key] = (now + CONNTRACK_TIMEOUT[key[0]], entry)
        return entry

    def ct_put(
        self, key: tuple[int, int, int, int, int], entry: tuple[int, ...], now: float
    ) -> None:
        """``entry`` = (DNAT address id or -1, DNAT port, masquerade, IPVS service, server)."""
        self.conntrack[key] = (now + CONNTRACK_TIMEOUT[key[0]], entry)
        vs, server = entry[3], entry[4]
        if vs >= 0 and server >= 0:
            self.conns[vs][server] += 1

    # -- IPVS ---------------------------------------------------------------------------
    def ipvs_lookup(self, daddr: int, proto: int, dport: int) -> int:
        return self.vs_index.get((daddr, proto, dport), -1)

    def ipvs_schedule(
        self, vs_id: int, saddr: int, daddr: int, now: float, oracle: Oracle | None
    ) -> int:
        """The real server for a new connection to ``vs_id`` (-1: none available).

        Persistence (``-p``, ClientIP affinity) first: a client's template sends
        it to the same server until the timeout passes without connections.
        With an ``oracle`` (dry mode) the scheduler's long-run shares become a
        random choice and nothing is written.
        """
        vs = self.program.virtual_servers[vs_id]
        if vs.persistence:
            tpl = self.templates.get((vs_id, saddr))
            if tpl is not None and now < tpl[1] and vs.servers[tpl[0]].weight > 0:
                if oracle is None:
                    self.templates[vs_id, saddr] = (tpl[0], now + vs.persistence)
                return tpl[0]
        if oracle is not None:
            shares = self.shares(vs, saddr, daddr)
            return oracle.choose(shares) if shares else -1
        server = self._schedule(vs_id, vs, saddr, daddr)
        if server >= 0 and vs.persistence:
            self.templates[vs_id, saddr] = (server, now + vs.persistence)
        return server

    def shares(self, vs: VirtualServerSpec, saddr: int, daddr: int) -> list[tuple[int, Fraction]]:
        """Each server's share of new connections (see ``Engine.distribution``)."""
        live = [i for i, rs in enumerate(vs.servers) if rs.weight > 0]
        if not live:
            return []
        if vs.scheduler in ("sh", "dh"):
            server = self._hashed(vs, saddr if vs.scheduler == "sh" else daddr)
            return [] if server < 0 else [(server, Fraction(1))]
        if vs.scheduler in ("wrr", "wlc", "sed"):
            total = sum(vs.servers[i].weight for i in live)
            return [(i, Fraction(vs.servers[i].weight, total)) for i in live]
        return [(i, Fraction(1, len(live))) for i in live]

    def _schedule(self, vs_id: int, vs: VirtualServerSpec, saddr: int, daddr: int) -> int:
        servers = vs.servers
        n = len(servers)
        if n == 0:
            return -1
        sched = vs.scheduler
        if sched == "rr":
            pos = self.rr_pos[vs_id]
            for step in range(1, n + 1):
                i = (pos + step) % n
                if servers[i].weight > 0:
                    self.rr_pos[vs_id] = i
                    return i
            return -1
        if sched == "wrr":
            return self._wrr(vs_id, vs)
        if sched in ("sh", "dh"):
            return self._hashed(vs, saddr if sched == "sh" else daddr)
        conns = self.conns[vs_id]
        live = [i for i in range(n) if servers[i].weight > 0]
        if not live:
            return -1
        if sched == "nq":
            for i in live:
                if conns[i] == 0:
                    return i
        cost: Callable[[int], Fraction]
        if sched == "lc":

            def cost(i: int) -> Fraction:
                return Fraction(conns[i])

        elif sched == "wlc":

            def cost(i: int) -> Fraction:
                return Fraction(conns[i], servers[i].weight)

        else:  # sed, nq

            def cost(i: int) -> Fraction:
                return Fraction(conns[i] + 1, servers[i].weight)

        return min(live, key=cost)

    def _wrr(self, vs_id: int, vs: VirtualServerSpec) -> int:
        """ip_vs_wrr: step through servers, lowering the current weight by the
        weights' gcd each round, taking servers whose weight reaches it."""
        weights = [rs.weight for rs in vs.servers]
        mw = max(weights)
        if mw <= 0:
            return -1
        di = 0
        for w in weights:
            if w > 0:
                di = math.gcd(di, w)
        i, cw = self.wrr[vs_id]
        if i < 0:
            cw = mw
        n = len(weights)
        for _ in range(n * (mw // di + 1) + 1):
            i += 1
            if i >= n:
                i = 0
                cw -= di
                if cw <= 0:
                    cw = mw
            if weights[i] >= cw:
                self.wrr[vs_id] = (i, cw)
                return i
        return -1

    def _hashed(self, vs: VirtualServerSpec, addr: int) -> int:
        """ip_vs_sh / ip_vs_dh: a 256-bucket table filled with the servers in
        turn (sh: ``weight`` buckets each), indexed by a hash of the address."""
        key = id(vs)
        table = self._tables.get(key)
        if table is None:
            table = []
            servers = vs.servers
            p = 0
            count = 0
            for _ in range(_TAB_SIZE):
                if not servers:
                    break
                table.append(p)
                count += 1
                if vs.scheduler == "dh" or count >= servers[p].weight:
                    p = (p + 1) % len(servers)
                    count = 0
            self._tables[key] = table
        if not table:
            return -1
        fold = addr
        if addr >> 32:
            fold = (addr >> 96) ^ (addr >> 64) ^ (addr >> 32) ^ addr
        fold &= 0xFFFFFFFF
        if vs.scheduler == "sh":
            bucket = ((fold * _GOLDEN_RATIO_32) & 0xFFFFFFFF) >> 24
        else:
            bucket = (fold * 2654435761) & (_TAB_SIZE - 1)
        server = table[bucket]
        return server if vs.servers[server].weight > 0 else -1
