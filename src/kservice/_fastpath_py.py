"""The packet engine's inner loop in pure Python: the twin of ``_fastpath.pyx``.

Same API, same program, same PRNG, same results for the same seed; the
compiled twin is this file with C types. Keep the two in step: every change
here has its counterpart there (tests/engine checks they agree on random
rulesets and packets).

The interpreter follows the kernel:

* hooks run their base chains in priority order; a chain's verdict ends that
  chain only (ACCEPT passes the packet on to the next base chain of the hook),
  DROP and REJECT end the packet;
* ``jump`` pushes a return point, ``goto`` does not, ``return`` (or the end
  of a chain) pops one, and the end of a base chain applies its policy;
* nat chains see only a connection's first packet; once one did NAT at a hook,
  later nat chains of that hook are skipped;
* ``-m statistic --mode random`` draws ``u32 & 0x7FFFFFFF < threshold`` and
  ``numgen random mod N`` ``(u32 * N) >> 32``, as xt_statistic and nft_numgen
  do, from a splitmix64 stream seeded by the engine.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

from kservice.engine.compile import (
    CT_DNAT,
    CT_ESTABLISHED,
    CT_NEW,
    END,
    F_DADDR,
    F_L4PROTO,
    F_MARK,
    H_FORWARD,
    H_INPUT,
    H_OUTPUT,
    H_POSTROUTING,
    H_PREROUTING,
    IPVS_CHAIN,
    M_ADDRTYPE,
    M_CTSTATE,
    M_DADDR,
    M_DADDR4,
    M_DPORT,
    M_DPORT1,
    M_IIF,
    M_IPVS,
    M_MARK,
    M_NEVER,
    M_OIF,
    M_PROTO,
    M_RECENT,
    M_SADDR,
    M_SADDR4,
    M_SET,
    M_SPORT,
    M_SPORT1,
    M_STAT,
    PROTO_BIT,
    S_MARK,
    S_NOP,
    S_SETUPD,
    V_ACCEPT,
    V_DNAT,
    V_DROP,
    V_GOTO,
    V_JUMP,
    V_MASQ,
    V_NONE,
    V_NUMGEN,
    V_REJECT,
    V_RETURN,
    V_SNAT,
    V_VMAP,
    Program,
)
from kservice.engine.packet import KINDS, EngineError, Packet, Verdict

__all__ = ["Machine"]

_M64 = (1 << 64) - 1
MAX_DEPTH = 64
# results of a chain
R_ACCEPT, R_DROP, R_REJECT, R_NAT = 0, 1, 2, 3
# verdict kinds (index into packet.KINDS)
K_ACCEPT, K_DNAT, K_REJECT, K_DROP = 0, 1, 2, 3
DEFAULT_POD_INTERFACE = "veth0"


class Machine:
    """One compiled program plus its PRNG; kernel state lives in ``state``."""

    def __init__(self, program: Program, state: Any, seed: int, flow_cache: bool = True) -> None:
        # ``flow_cache`` is the compiled twin's memo of stateless paths; it changes
        # no result, so this twin takes the flag and always runs the rules.
        self.flow_cache = flow_cache
        self.p = program
        self.state = state
        self.rng = seed & _M64
        self.code = program.code
        self.chain_offset = program.chain_offset
        self.chain_policy = program.chain_policy
        self.chain_nat = program.chain_nat
        self.hooks = program.hooks
        self.cidrs = program.cidr_lists
        self.ports = program.port_lists
        self.local = program.cidr_lists[program.local_list]
        self.sets = program.sets
        self.layouts = program.layouts
        self.verdicts = program.verdicts
        self.address_values = program.address_values
        self.address_texts = program.address_texts
        self.has_ipvs = bool(program.virtual_servers)
        self.node_address = -1 if program.node_address is None else program.node_address
        self.masquerade_source = program.masquerade_source
        self._iface_cache: dict[str, int] = {}
        self._verdicts: dict[tuple[int, int, int, int], Verdict] = {}
        self.primary_mask = self.iface_mask(program.primary_interface)
        self.lo_mask = self.iface_mask("lo")
        self.pod_mask = self.iface_mask(DEFAULT_POD_INTERFACE)

    def clear_flow_cache(self) -> None:
        """Nothing to clear: this twin keeps no flow cache."""

    def flow_cache_info(self) -> tuple[int, int, int]:
        return (0, 0, 0)

    # -- PRNG: splitmix64, the upper 32 bits of each output -------------------------
    def next_u32(self) -> int:
        self.rng = (self.rng + 0x9E3779B97F4A7C15) & _M64
        z = self.rng
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        z ^= z >> 31
        return z >> 32

    def get_rng_state(self) -> int:
        return self.rng

    def set_rng_state(self, value: int) -> None:
        self.rng = value & _M64

    # -- helpers ------------------------------------------------------------------------
    def iface_mask(self, name: str) -> int:
        """Bit i set when interface pattern i matches ``name``."""
        mask = self._iface_cache.get(name)
        if mask is None:
            mask = 0
            if name:
                for i, (pattern, prefix) in enumerate(self.p.iface_patterns):
                    if name.startswith(pattern) if prefix else name == pattern:
                        mask |= 1 << i
            self._iface_cache[name] = mask
        return mask

    def verdict(self, kind: int, addr: int, port: int, masq: int) -> Verdict:
        key = (kind, addr, port, masq)
        v = self._verdicts.get(key)
        if v is None:
            if kind == K_DNAT:
                v = Verdict(KINDS[kind], self.address_texts[addr], port, bool(masq))
            else:
                v = Verdict(KINDS[kind], None, None, bool(masq))
            self._verdicts[key] = v
        return v

    @staticmethod
    def _in(addr: int, cidrs: list[tuple[int, int]]) -> bool:
        return any(addr & mask == net for net, mask in cidrs)

    def _key(self, layout: tuple[int, ...], st: list[int]) -> tuple[int, int, int]:
        if layout[0] >= 100:  # ipset: addresses in slots 0 and 2, ports 16 bits each
            addrs = []
            small = 0
            for f in layout[1:]:
                if f <= F_DADDR:
                    addrs.append(st[f])
                else:
                    small = (small << 16) | st[f]
            return (addrs[0] if addrs else 0, small, addrs[1] if len(addrs) > 1 else 0)
        addr = 0
        small = 0
        for f in layout:
            if f <= F_DADDR:
                addr = st[f]
            else:
                small = (small << (8 if f == F_L4PROTO else 32 if f == F_MARK else 16)) | st[f]
        return addr, small, 0

    def _ipvs_match(self, st: list[int], vaddr: int, proto: int, port: int) -> bool:
        if st[12] < 0:
            return False
        vs = self.p.virtual_servers[st[12]]
        return (
            (vaddr < 0 or self._in(vs.address, self.cidrs[vaddr]))
            and (proto == 0 or vs.protocol == proto)
            and (port == 0 or vs.port == port)
        )

    def _set_has(self, sid: int, layout: int, st: list[int], now: float) -> bool:
        spec = self.sets[sid]
        lay = self.layouts[layout]
        if spec.kind == 1:
            field = lay[-1]
            value = st[field]
            if field <= F_DADDR:
                return self._in(value, self.cidrs[spec.interval_list])
            return any(lo <= value <= hi for lo, hi in self.ports[spec.interval_list])
        if spec.kind == 3:
            return bool(self.state.rows_have(sid, [st[f] for f in lay[1:]]))
        key = self._key(lay, st)
        if spec.kind == 2:
            return bool(self.state.dyn_has(sid, key, now))
        return key in spec.elements

    # -- the interpreter -------------------------------------------------------------------
    # st: [saddr, daddr, l4proto, sport, dport, mark, ctstate, iif, oif, masq, dnat, rules,
    #      IPVS service, IPVS server]
    def _chain(
        self, base: int, st: list[int], now: float, obs: list[Any] | None, oracle: Any
    ) -> int:
        code = self.code
        dry = oracle is not None
        stack: list[int] = []
        pc = self.chain_offset[base] * 4
        while True:
            op = code[pc]
            if op == END:
                if not stack:
                    return R_DROP if self.chain_policy[base] else R_ACCEPT
                pc = stack.pop()
                continue
            # a RULE header: (RULE, rule id, next rule, 0)
            st[11] += 1
            rule_id = code[pc + 1]
            next_pc = code[pc + 2] * 4
            pc += 4
            ok = True
            while True:
                op = code[pc]
                if op >= V_NONE:
                    break
                a = code[pc + 1]
                b = code[pc + 2]
                c = code[pc + 3]
                if op == M_DADDR4:
                    ok = (st[1] & b == a) != bool(c)
                elif op == M_SADDR4:
                    ok = (st[0] & b == a) != bool(c)
                elif op == M_DADDR:
                    ok = self._in(st[1], self.cidrs[a]) != bool(b)
                elif op == M_SADDR:
                    ok = self._in(st[0], self.cidrs[a]) != bool(b)
                elif op == M_PROTO:
                    ok = bool(PROTO_BIT.get(st[2], 0) & a) != bool(b)
                elif op == M_DPORT1:
                    ok = (a <= st[4] <= b) != bool(c)
                elif op == M_SPORT1:
                    ok = (a <= st[3] <= b) != bool(c)
                elif op in (M_DPORT, M_SPORT):
                    value = st[4] if op == M_DPORT else st[3]
                    ok = any(lo <= value <= hi for lo, hi in self.ports[a]) != bool(b)
                elif op == M_MARK:
                    ok = ((st[5] & b) == a) != bool(c)
                elif op == M_ADDRTYPE:
                    ok = self._in(st[a], self.local) != bool(b)
                elif op == M_CTSTATE:
                    ok = bool(st[6] & a) != bool(b)
                elif op == M_SET:
                    ok = self._set_has(a, b, st, now) != bool(c)
                elif op == M_STAT:
                    hit = oracle.bit(a) if dry else (self.next_u32() & 0x7FFFFFFF) < a
                    ok = hit != bool(b)
                elif op == M_RECENT:
                    addr = st[1] if b & 16 else st[0]
                    ok = self.state.recent(a, b, c - 1, addr, now, dry)
                elif op == M_IPVS:
                    ok = self._ipvs_match(st, a - 1, b, c)
                elif op == M_NEVER:
                    ok = bool(b)
                elif op == M_IIF:
                    ok = bool(st[7] >> a & 1) != bool(b)
                elif op == M_OIF:
                    ok = bool(st[8] >> a & 1) != bool(b)
                elif op == S_MARK:
                    if a == 0:
                        st[5] = (st[5] & ~c & 0xFFFFFFFF) ^ b
                    elif a == 1:
                        st[5] |= b
                    elif a == 2:
                        st[5] ^= b
                    else:
                        st[5] &= b
                elif op == S_SETUPD:
                    self.state.dyn_update(a, self._key(self.layouts[b], st), now, dry)
                elif op != S_NOP:  # pragma: no cover - the builder emits nothing else
                    raise EngineError(f"unknown opcode {op}")
                if not ok:
                    break
                pc += 4
            if obs is not None:
                obs.append((0, rule_id, ok))
            if not ok:
                pc = next_pc
                continue
            a = code[pc + 1]
            if op == V_VMAP:
                op, a = self.verdicts[
                    self.sets[a].elements.get(self._key(self.layouts[code[pc + 2]], st), 0)
                ]
            elif op == V_NUMGEN:
                pick = oracle.pick(a) if dry else (self.next_u32() * a) >> 32
                entry = pc + 4 + 4 * pick
                op = code[entry]
                a = code[entry + 1]
            if op == V_NONE:
                pc = next_pc
            elif op == V_JUMP:
                if len(stack) >= MAX_DEPTH:
                    raise EngineError("jump depth over 64: a loop in the rules?")
                stack.append(next_pc)
                pc = a * 4
            elif op == V_GOTO:
                pc = a * 4
            elif op == V_RETURN:
                if not stack:
                    return R_DROP if self.chain_policy[base] else R_ACCEPT
                pc = stack.pop()
            elif op == V_ACCEPT:
                return R_ACCEPT
            elif op == V_DROP:
                return R_DROP
            elif op == V_REJECT:
                return R_REJECT
            elif op == V_DNAT:
                st[1] = self.address_values[a]
                b = code[pc + 2]
                if b:
                    st[4] = b
                st[6] |= CT_DNAT
                st[10] = a
                return R_NAT
            elif op == V_SNAT or (op == V_MASQ and self.masquerade_source):
                st[9] = 1
                return R_NAT
            elif op == V_MASQ:  # no address to masquerade to: the kernel drops
                if obs is not None:
                    obs.append((5, 0, 0))
                return R_DROP
            else:  # pragma: no cover
                raise EngineError(f"unknown verdict opcode {op}")

    def _hook(
        self,
        h: int,
        st: list[int],
        est: tuple[int, ...] | None,
        now: float,
        obs: list[Any] | None,
        oracle: Any,
    ) -> int:
        """Run hook ``h``; R_NAT here means IPVS took the packet (DNAT and out)."""
        nat_done = False
        for c in self.hooks[h]:
            if c == IPVS_CHAIN:
                res = self._ipvs(st, est, now, obs, oracle)
                if res != R_ACCEPT:
                    return res
                continue
            if self.chain_nat[c]:
                if est is not None:
                    self._apply_ct(h, st, est)
                    continue
                if nat_done:
                    continue
            if obs is not None:
                obs.append((1, h, c))
            res = self._chain(c, st, now, obs, oracle)
            if res in (R_DROP, R_REJECT):
                return res
            if res == R_NAT:
                nat_done = True
        return R_ACCEPT

    def _apply_ct(self, h: int, st: list[int], est: tuple[int, ...]) -> None:
        """A tracked connection's NAT, applied where its nat chains would run."""
        if h in (H_PREROUTING, H_OUTPUT) and est[0] >= 0 and est[3] < 0:
            st[1] = self.address_values[est[0]]
            st[4] = est[1]
            st[10] = est[0]
        elif h == H_POSTROUTING and est[2]:
            st[9] = 1

    def _ipvs(
        self,
        st: list[int],
        est: tuple[int, ...] | None,
        now: float,
        obs: list[Any] | None,
        oracle: Any,
    ) -> int:
        state = self.state
        if est is not None:
            if est[3] < 0:
                return R_ACCEPT
            vs_id, server = est[3], est[4]
        else:
            vs_id = state.ipvs_lookup(st[1], st[2], st[4])
            if vs_id < 0:
                if obs is not None:
                    obs.append((2, -1, -1))
                return R_ACCEPT
            server = state.ipvs_schedule(vs_id, st[0], st[1], now, oracle)
            if obs is not None:
                obs.append((2, vs_id, server))
            if server < 0:
                return R_REJECT  # ip_vs_leave: ICMP port unreachable, then drop
        rs = self.p.virtual_servers[vs_id].servers[server]
        st[1] = rs.address
        st[4] = rs.port
        st[6] |= CT_DNAT
        st[10] = rs.addr_id
        st[12] = vs_id
        st[13] = server
        return R_NAT

    def run(
        self,
        origin: int,
        saddr: int,
        sport: int,
        daddr: int,
        dport: int,
        proto: int,
        iif: int,
        now: float,
        obs: list[Any] | None = None,
        oracle: Any = None,
    ) -> tuple[int, int, int, int, int]:
        """One packet: ``(kind, DNAT address id, port, masquerade, rules evaluated)``."""
        st = [saddr, daddr, proto, sport, dport, 0, CT_NEW, iif, 0, 0, -1, 0, -1, -1]
        est: tuple[int, ...] | None = None
        key = (proto, saddr, sport, daddr, dport)
        if sport:
            est = self.state.ct_get(key, now)
            if est is not None:
                st[6] = CT_ESTABLISHED | (CT_DNAT if est[0] >= 0 else 0)
                if obs is not None:
                    obs.append((3, 0, 0))
        if origin == 1:  # the node itself: OUTPUT, then POSTROUTING
            st[8] = self.primary_mask
            res = self._hook(H_OUTPUT, st, est, now, obs, oracle)
            if res == R_NAT:
                res = R_ACCEPT
            if res == R_ACCEPT:
                st[8] = self.lo_mask if self._in(st[1], self.local) else self.primary_mask
                res = self._hook(H_POSTROUTING, st, est, now, obs, oracle)
        else:
            res = self._hook(H_PREROUTING, st, est, now, obs, oracle)
            if res == R_ACCEPT:
                local = self._in(st[1], self.local)
                if obs is not None:
                    obs.append((4, int(local), 0))
                if local:
                    st[8] = self.lo_mask
                    res = self._hook(H_INPUT, st, est, now, obs, oracle)
                    if res == R_NAT:  # IPVS took it: out through POSTROUTING
                        st[8] = self.primary_mask
                        res = self._hook(H_POSTROUTING, st, est, now, obs, oracle)
                else:
                    st[8] = self.primary_mask
                    res = self._hook(H_FORWARD, st, est, now, obs, oracle)
                    if res == R_ACCEPT:
                        res = self._hook(H_POSTROUTING, st, est, now, obs, oracle)
        if res == R_NAT:
            res = R_ACCEPT
        if res == R_DROP:
            return K_DROP, -1, 0, 0, st[11]
        if res == R_REJECT:
            return K_REJECT, -1, 0, 0, st[11]
        if sport and est is None and oracle is None:
            self.state.ct_put(key, (st[10], st[4], st[9], st[12], st[13]), now)
        if st[10] >= 0:
            return K_DNAT, st[10], st[4], st[9], st[11]
        return K_ACCEPT, -1, 0, st[9], st[11]

    # -- Python-facing -------------------------------------------------------------------
    def packet_iif(self, packet: Packet) -> int:
        if packet.iif is not None:
            return self.iface_mask(packet.iif)
        origin = packet._origin
        return self.pod_mask if origin == 0 else self.primary_mask if origin == 2 else 0

    def lookup(self, packet: Packet, now: float) -> Verdict:
        if packet._version != self.p.family:
            raise EngineError(
                f"packet to {packet.dst}: an IPv{packet._version} packet for an "
                f"IPv{self.p.family} ruleset"
            )
        saddr = packet._src
        if saddr < 0:
            saddr = self.node_address
            if saddr < 0:
                raise EngineError("packet src: the ruleset names no node address to default to")
        kind, addr, port, masq, _ = self.run(
            packet._origin,
            saddr,
            packet._sport,
            packet._dst,
            packet.dport,
            packet._proto,
            self.packet_iif(packet),
            now,
        )
        return self.verdict(kind, addr, port, masq)

    def lookup_batch(
        self,
        dst: Any,
        dport: Any,
        proto: Any,
        src: Any,
        sport: Any,
        origin: int,
        iif: int,
        now: float,
        n: int,
        kind_out: Any,
        addr_out: Any,
        port_out: Any,
        masq_out: Any,
        rules_out: Any,
    ) -> None:
        """Fill the output buffers for ``n`` packets (buffers already checked).

        ``dst``/``src`` hold IPv4 addresses as integers, or IPv6 ones as two
        64-bit halves (high, low); ``proto``/``sport``/``src`` may be None (all
        TCP / untracked / the node's address).
        """
        v6 = self.p.family == 6
        run: Callable[..., tuple[int, int, int, int, int]] = self.run
        address_values = self.address_values
        for i in range(n):
            d = (dst[2 * i] << 64 | dst[2 * i + 1]) if v6 else dst[i]
            if src is None:
                s = self.node_address
            else:
                s = (src[2 * i] << 64 | src[2 * i + 1]) if v6 else src[i]
            kind, addr, port, masq, rules = run(
                origin,
                s,
                0 if sport is None else sport[i],
                d,
                dport[i],
                6 if proto is None else proto[i],
                iif,
                now,
            )
            kind_out[i] = kind
            a = address_values[addr] if addr >= 0 else 0
            if v6:
                addr_out[2 * i] = a >> 64
                addr_out[2 * i + 1] = a & _M64
            else:
                addr_out[i] = a
            port_out[i] = port
            masq_out[i] = masq
            rules_out[i] = rules


def new_array(code: str, n: int) -> array[Any]:
    return array(code, bytes(array(code).itemsize * n))
