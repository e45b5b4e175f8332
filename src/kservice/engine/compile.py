"""Ruleset -> flat tables: the one translation both engine twins execute.

The engine never walks :class:`~kservice.netfilter.ruleset.Ruleset` objects
per packet. :func:`build` turns a ruleset into a :class:`Program`: integers
and lists of integers only, which the compiled twin copies into C arrays and
the pure twin reads as they are, so both see exactly the same program.

Layout
------
* ``code`` is one array of fixed-width *ops* ``(opcode, a, b, c)``, every
  value an unsigned 32-bit integer. A chain is its rules back to back, then
  ``END``; a rule is a ``RULE`` header (rule id, offset of the next rule), its
  matches and statements in order, then exactly one verdict op (``V_NONE``
  when the rule has no verdict). Jumps, gotos, verdict-map values and
  ``numgen`` tables (inline, after their op) hold code offsets, not chain ids,
  so a packet walks memory in order and a service's rules sit together: at
  100,000 Services what matters is how few cache lines a packet touches.
* Hooks list their base chains in priority order, as the kernel runs them:
  iptables tables at their fixed priorities (raw -300, mangle -150, nat -100
  or 100, filter 0, security 50), nft base chains at their own, and IPVS as a
  pseudo-chain ``IPVS_CHAIN`` at LOCAL_IN priority 98 and LOCAL_OUT -99 (where
  ``ip_vs`` registers its hooks) when the ruleset has virtual servers.
* Addresses are integers (IPv4 or IPv6 by the ruleset's family); CIDRs are
  ``(network, mask)`` pairs; the node's local addresses (``addrtype LOCAL``,
  ``fib ... type local``) are a CIDR list, loopback counting as 127.0.0.0/8
  (``::1`` for IPv6) as the kernel's local routing table does.
* Set keys are packed into three integers (see :func:`pack_fields`), so a set
  or verdict-map lookup is one hash probe, as in the kernel's hash sets.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import math
import socket
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from kservice._gc import gc_paused
from kservice.engine.packet import PROTOCOLS, EngineError
from kservice.netfilter.ruleset import (
    DNAT,
    SNAT,
    Accept,
    AddrTypeMatch,
    Chain,
    Counter,
    CtStateMatch,
    Drop,
    Goto,
    IfaceMatch,
    Interface,
    IPMatch,
    Jump,
    MarkMatch,
    MarkSet,
    Masquerade,
    NftSet,
    NumgenVmap,
    PortMatch,
    ProtoMatch,
    RawMatch,
    RecentMatch,
    Reject,
    Return,
    Ruleset,
    SetMatch,
    SetUpdate,
    StatisticMatch,
    Table,
    VirtualServer,
    VmapLookup,
)

__all__ = ["IPVS_CHAIN", "Program", "build", "pack_fields"]

# ----------------------------------------------------------------------- opcodes
M_SADDR, M_DADDR, M_PROTO, M_SPORT, M_DPORT, M_IIF, M_OIF = 1, 2, 3, 4, 5, 6, 7
M_MARK, M_ADDRTYPE, M_CTSTATE, M_STAT, M_RECENT, M_SET, M_IPVS = 8, 9, 10, 11, 12, 13, 14
S_MARK, S_SETUPD, S_NOP = 20, 21, 22
V_NONE, V_ACCEPT, V_DROP, V_REJECT, V_RETURN, V_JUMP, V_GOTO = 30, 31, 32, 33, 34, 35, 36
V_DNAT, V_SNAT, V_MASQ, V_VMAP, V_NUMGEN = 37, 38, 39, 40, 41
# IPv4 fast forms: one CIDR or one port range inline
M_SADDR4, M_DADDR4, M_SPORT1, M_DPORT1 = 15, 16, 17, 18
#: A match that never holds (``b`` = negate): ``-m physdev --physdev-is-in``.
M_NEVER = 19
#: A rule's header (rule id, offset of the next rule) and a chain's end (chain id).
RULE, END = 50, 51

HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
H_PREROUTING, H_INPUT, H_FORWARD, H_OUTPUT, H_POSTROUTING = range(5)
#: The pseudo-chain standing for IPVS in a hook's chain list.
IPVS_CHAIN = -1

#: Packet fields as set-key components.
F_SADDR, F_DADDR, F_L4PROTO, F_SPORT, F_DPORT, F_MARK = range(6)
FIELD_CODE = {"saddr": 0, "daddr": 1, "l4proto": 2, "sport": 3, "dport": 4, "mark": 5}
_FIELD_BITS = {F_L4PROTO: 8, F_SPORT: 16, F_DPORT: 16, F_MARK: 32}

#: conntrack states as bits (``ctstate`` and nft ``ct state``).
CT_BITS = {
    "NEW": 1,
    "ESTABLISHED": 2,
    "RELATED": 4,
    "INVALID": 8,
    "UNTRACKED": 16,
    "SNAT": 32,
    "DNAT": 64,
}
CT_NEW, CT_ESTABLISHED, CT_DNAT = 1, 2, 64

#: IP protocol bits for ProtoMatch (``a`` is a mask over these).
PROTO_BIT = {6: 1, 17: 2, 132: 4}

_TABLE_PRIORITY = {"raw": -300, "mangle": -150, "filter": 0, "security": 50}
_NAT_PRIORITY = {"prerouting": -100, "output": -100, "input": 100, "postrouting": 100}
_IPVS_PRIORITY = {"input": 98, "output": -99}
_RECENT_MODES = {"set": 0, "rcheck": 1, "update": 2, "remove": 3}
_MARK_OPS = {"set": 0, "or": 1, "xor": 2, "and": 3}
_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh")
_STRING_VERDICTS = {"accept": V_ACCEPT, "drop": V_DROP, "return": V_RETURN, "continue": V_NONE}

MASK32 = 0xFFFFFFFF


def pack_fields(layout: Sequence[int], values: Sequence[int]) -> tuple[int, int, int]:
    """Pack a set key into ``(address, small, 0)``.

    At most one address field (kube-proxy's keys have one: ``ip daddr . meta
    l4proto . th dport``); the other fields are shifted into ``small`` in key
    order (protocol 8 bits, ports 16, mark 32), so keys of one set never
    collide. Both twins hash exactly these integers.
    """
    addr = 0
    small = 0
    for field, value in zip(layout, values, strict=True):
        if field <= F_DADDR:
            addr = value
        else:
            small = (small << _FIELD_BITS[field]) | value
    return addr, small, 0


@attrs.define
class SetSpec:
    """One nft set or map (or an ipset) as the twins use it.

    ``kind`` 0: exact-match hash (``elements`` maps the packed key to a verdict
    id, 0 for plain sets); 1: intervals over one field (``cidrs`` or
    ``ports``); 2: dynamic with timeouts (state, in :mod:`kservice.engine._state`);
    3: an ipset with ``net`` dimensions (``hash:ip,port,net``), matched row by
    row against ``rows`` (the kernel hashes per prefix length; same answer).
    """

    name: str
    layout: tuple[int, ...]
    kind: int
    elements: dict[tuple[int, int, int], int]
    interval_list: int = -1
    timeout: float = math.inf
    # kind 3 (ipsets with net dimensions): each element as (value, mask) per key field
    rows: list[list[tuple[int, int]]] = attrs.Factory(list)


@attrs.define
class RealServerSpec:
    address: int
    port: int
    weight: int
    text: str
    addr_id: int = -1


@attrs.define
class VirtualServerSpec:
    address: int
    protocol: int
    port: int
    scheduler: str
    persistence: int | None
    flags: tuple[str, ...]
    servers: list[RealServerSpec]
    text: str


@attrs.define
class Program:
    """A ruleset flattened for the engine (see the module docstring)."""

    family: int
    code: list[int]
    chain_offset: list[int]  # chain id -> offset (in ops) of its first op
    chain_policy: list[int]  # 0 accept, 1 drop
    chain_nat: list[int]  # 1 for nat-type base chains
    hooks: list[list[int]]  # per hook: chain ids (IPVS_CHAIN for IPVS) by priority
    cidr_lists: list[list[tuple[int, int]]]
    port_lists: list[list[tuple[int, int]]]
    local_list: int
    iface_patterns: list[tuple[str, bool]]  # (name or prefix, is_prefix)
    sets: list[SetSpec]
    layouts: list[tuple[int, ...]]
    verdicts: list[tuple[int, int]]  # map values: (V_* opcode, argument)
    # DNAT/SNAT targets, as integers and as text (two lists of untracked
    # objects: no tuples for the collector to scan)
    address_values: list[int]
    address_texts: list[str]
    recent_tables: list[str]
    virtual_servers: list[VirtualServerSpec]
    # For traces: each rule's (table index, chain name, index in chain).
    rule_where: RuleIndex
    chain_tables: list[int]  # chain id -> table index
    chain_names: list[str]  # chain id -> name
    tables: list[Table]
    primary_interface: str
    node_address: int | None
    # False when the node's addresses are known and none can be a MASQUERADE
    # source: the kernel then drops the packet (see _Builder.masquerade_source)
    masquerade_source: bool

    @property
    def n_rules(self) -> int:
        return len(self.rule_where)


class RuleIndex:
    """Rule number -> (table index, chain name, index in its chain).

    Rules are numbered in chain order, so one first-rule number per chain
    is enough (a bisection finds the chain): no per-rule objects, which at
    323,000 rules would cost a tenth of a second to make and as long again
    for the collector to scan.
    """

    __slots__ = ("_chain_names", "_chain_tables", "_first", "_n")

    def __init__(
        self, first: list[int], chain_tables: list[int], chain_names: list[str], n: int
    ) -> None:
        self._first = first
        self._chain_tables = chain_tables
        self._chain_names = chain_names
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuleIndex):
            return NotImplemented
        return (self._first, self._chain_tables, self._chain_names, self._n) == (
            other._first,
            other._chain_tables,
            other._chain_names,
            other._n,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable lists inside

    def __getitem__(self, rule: int) -> tuple[int, str, int]:
        if not 0 <= rule < self._n:
            raise IndexError(f"rule {rule} of {self._n}")
        chain = bisect.bisect_right(self._first, rule) - 1  # skips empty chains
        return self._chain_tables[chain], self._chain_names[chain], rule - self._first[chain]


# ------------------------------------------------------------------------ helpers
def _parse_net(text: str, version: int, where: str) -> tuple[int, int]:
    if version == 4:
        addr, _, prefix = text.partition("/")
        value = _fast_v4(addr)
        if value is not None and (not prefix or (prefix.isdigit() and int(prefix) <= 32)):
            bits = int(prefix) if prefix else 32
            mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
            return value & mask, mask
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise EngineError(f"{where}: {text!r} is not an address or CIDR") from None
    if net.version != version:
        raise EngineError(f"{where}: {text} is not an IPv{version} address")
    bits = 32 if version == 4 else 128
    mask = ((1 << bits) - 1) ^ ((1 << (bits - net.prefixlen)) - 1)
    return int(net.network_address), mask


def _fast_v4(text: str) -> int | None:
    """A dotted quad as an integer (inet_pton: no leading zeros), or None."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        return None


def _parse_addr(text: str, version: int, where: str) -> int:
    if version == 4:
        value = _fast_v4(text)
        if value is not None:
            return value
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise EngineError(f"{where}: {text!r} is not an IP address") from None
    if ip.version != version:
        raise EngineError(f"{where}: {text} is not an IPv{version} address")
    return int(ip)


class _Builder:
    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.version = 6 if ruleset.family == "IPv6" else 4
        self.code: list[int] = []
        self.chain_offset: list[int] = []
        self._fixups: list[int] = []  # code positions holding a chain id, to become offsets
        self._net4_cache: dict[str, tuple[int, int]] = {}
        self.chain_policy: list[int] = []
        self.chain_nat: list[int] = []
        self.chain_first_rule: list[int] = []  # chain id -> number of its first rule
        self.n_rules = 0
        self.chain_tables: list[int] = []
        self.chain_names: list[str] = []
        self.cidr_lists: list[list[tuple[int, int]]] = []
        self._cidr_ids: dict[tuple[str, ...], int] = {}
        self.port_lists: list[list[tuple[int, int]]] = []
        self._port_ids: dict[tuple[tuple[int, int], ...], int] = {}
        self.iface_patterns: list[tuple[str, bool]] = []
        self._iface_ids: dict[str, int] = {}
        self.sets: list[SetSpec] = []
        self.layouts: list[tuple[int, ...]] = []
        self._layout_ids: dict[tuple[int, ...], int] = {}
        self.verdicts: list[tuple[int, int]] = [(V_NONE, 0)]
        self._verdict_ids: dict[tuple[int, int], int] = {(V_NONE, 0): 0}
        self.address_values: list[int] = []
        self.address_texts: list[str] = []
        self._address_ids: dict[str, int] = {}
        self.recent_tables: list[str] = []
        self._recent_ids: dict[str, int] = {}
        self.tables = [t for t in ruleset.tables if self._family_matches(t.family)]
        # per table: chain name -> chain id; set name -> set id
        self.chain_ids: list[dict[str, int]] = []
        self.set_ids: list[dict[str, int]] = []

    def _family_matches(self, family: str) -> bool:
        if family == "inet":
            return True
        return family == ("ip6" if self.version == 6 else "ip")

    def _net4(self, text: str, where: str) -> tuple[int, int]:
        found = self._net4_cache.get(text)
        if found is None:
            found = _parse_net(text, 4, where)
            self._net4_cache[text] = found
        return found

    # -- interning ----------------------------------------------------------------
    def cidr_list(self, cidrs: Sequence[str], where: str) -> int:
        key = tuple(cidrs)
        found = self._cidr_ids.get(key)
        if found is None:
            found = len(self.cidr_lists)
            self.cidr_lists.append([_parse_net(c, self.version, where) for c in cidrs])
            self._cidr_ids[key] = found
        return found

    def port_list(self, ranges: Sequence[tuple[int, int]]) -> int:
        key = tuple(ranges)
        found = self._port_ids.get(key)
        if found is None:
            found = len(self.port_lists)
            self.port_lists.append(list(key))
            self._port_ids[key] = found
        return found

    def iface(self, name: str) -> int:
        found = self._iface_ids.get(name)
        if found is None:
            if len(self.iface_patterns) >= 62:
                raise EngineError("more than 62 distinct interface names in the rules")
            found = len(self.iface_patterns)
            prefix = name.endswith(("+", "*"))
            self.iface_patterns.append((name[:-1] if prefix else name, prefix))
            self._iface_ids[name] = found
        return found

    def layout(self, fields: Sequence[str], where: str) -> int:
        codes = []
        for f in fields:
            if f not in FIELD_CODE:
                raise EngineError(f"{where}: set keys on {f!r} are not modelled")
            codes.append(FIELD_CODE[f])
        if sum(1 for c in codes if c <= F_DADDR) > 1:
            raise EngineError(f"{where}: set keys with two addresses are not modelled")
        if sum(_FIELD_BITS.get(c, 0) for c in codes) > 62:
            raise EngineError(f"{where}: set key too wide to model")
        key = tuple(codes)
        found = self._layout_ids.get(key)
        if found is None:
            found = len(self.layouts)
            self.layouts.append(key)
            self._layout_ids[key] = found
        return found

    def verdict_id(self, op: int, arg: int) -> int:
        key = (op, arg)
        found = self._verdict_ids.get(key)
        if found is None:
            found = len(self.verdicts)
            self.verdicts.append(key)
            self._verdict_ids[key] = found
        return found

    def address(self, text: str, where: Any) -> int:
        found = self._address_ids.get(text)
        if found is None:
            fast = _fast_v4(text) if self.version == 4 else None
            if fast is not None:  # inet_pton takes canonical dotted quads only
                value, canonical = fast, text
            else:
                value = _parse_addr(text, self.version, where)
                canonical = str(ipaddress.ip_address(value))
            found = len(self.address_values)
            self.address_values.append(value)
            self.address_texts.append(canonical)
            self._address_ids[text] = found
        return found

    def recent(self, name: str) -> int:
        found = self._recent_ids.get(name)
        if found is None:
            found = len(self.recent_tables)
            self.recent_tables.append(name)
            self._recent_ids[name] = found
        return found

    # -- chains, sets ---------------------------------------------------------------
    def declare(self) -> None:
        for ti, table in enumerate(self.tables):
            first = len(self.chain_names)
            names = [c.name for c in table.chains]
            ids = {name: first + i for i, name in enumerate(names)}
            if len(ids) != len(names):
                twice = next(n for n in names if names.count(n) > 1)
                raise EngineError(f"table {table.family} {table.name}: chain {twice} twice")
            self.chain_tables += [ti] * len(names)
            self.chain_names += names
            self.chain_policy += [
                1 if c.policy is not None and c.policy.lower() == "drop" else 0
                for c in table.chains
            ]
            self.chain_nat += [1 if self._is_nat(table, c) else 0 for c in table.chains]
            self.chain_ids.append(ids)
            self.set_ids.append({})
        for ti, table in enumerate(self.tables):
            for s in table.sets:
                self.set_ids[ti][s.name] = len(self.sets)
                self.sets.append(self._set(ti, table, s))
        self._ipsets()

    @staticmethod
    def _is_nat(table: Table, chain: Chain) -> bool:
        if table.dialect == "iptables":
            return table.name == "nat"
        return chain.type == "nat"

    def _where_set(self, table: Table, s: NftSet) -> str:
        return f"set {s.name} in table {table.family} {table.name}"

    def _element_value(self, ti: int, value: Any, where: str) -> int:
        if value is None:
            return 0
        if isinstance(value, str):
            op = _STRING_VERDICTS.get(value)
            if op is None:
                raise EngineError(
                    f"{where}: map value {value!r} is not a verdict the engine models"
                )
            return self.verdict_id(op, 0)
        if isinstance(value, Jump | Goto):
            chain = self._chain(ti, value.chain, where)
            return self.verdict_id(V_JUMP if isinstance(value, Jump) else V_GOTO, chain)
        raise EngineError(f"{where}: map value {value!r} is not a verdict the engine models")

    def _key_values(self, types: Sequence[str], key: Sequence[str], where: str) -> list[int]:
        if len(types) != len(key):
            raise EngineError(f"{where}: element {' . '.join(key)} does not fit the key type")
        out = []
        for t, text in zip(types, key, strict=True):
            out.append(self._component(t, text, where))
        return out

    def _component(self, ktype: str, text: str, where: str) -> int:
        if ktype in ("ipv4_addr", "ipv6_addr"):
            return _parse_addr(text, 4 if ktype == "ipv4_addr" else 6, where)
        if ktype == "inet_proto":
            if text in PROTOCOLS:
                return PROTOCOLS[text]
            if text.isdigit():
                return int(text)
        elif ktype in ("inet_service", "mark"):
            try:
                return int(text, 0)
            except ValueError:
                pass
        raise EngineError(f"{where}: element value {text!r} of type {ktype} is not modelled")

    def _set(self, ti: int, table: Table, s: NftSet) -> SetSpec:
        where = self._where_set(table, s)
        types = [t.strip() for t in s.key_type.split(".")]
        fields = []
        for t in types:
            if t in ("ipv4_addr", "ipv6_addr"):
                fields.append("daddr")  # placeholder: addresses share the address slot
            elif t == "inet_proto":
                fields.append("l4proto")
            elif t == "inet_service":
                fields.append("dport")
            elif t == "mark":
                fields.append("mark")
            else:
                raise EngineError(f"{where}: key type {t} is not modelled")
        layout = tuple(FIELD_CODE[f] for f in fields)
        if s.value_type is not None and s.value_type != "verdict":
            raise EngineError(f"{where}: maps to {s.value_type} are not modelled")
        if "interval" in s.flags:
            return self._interval_set(s, types, layout, where)
        timeout = float(s.timeout) if s.timeout else math.inf
        dynamic = s.timeout is not None or "dynamic" in s.flags or "timeout" in s.flags
        elements: dict[tuple[int, int, int], int] = {}
        for key, value in s.elements:
            packed = pack_fields(layout, self._key_values(types, key, where))
            elements[packed] = self._element_value(ti, value, where)
        return SetSpec(s.name, layout, 2 if dynamic else 0, elements, timeout=timeout)

    def _interval_set(
        self, s: NftSet, types: Sequence[str], layout: tuple[int, ...], where: str
    ) -> SetSpec:
        if len(types) != 1 or s.value_type is not None:
            raise EngineError(f"{where}: concatenated or mapped interval sets are not modelled")
        texts = [key[0] for key, _ in s.elements]
        if types[0] in ("ipv4_addr", "ipv6_addr"):
            return SetSpec(s.name, layout, 1, {}, interval_list=self.cidr_list(texts, where))
        if types[0] == "inet_service":
            ranges = []
            for t in texts:
                lo, _, hi = t.partition("-")
                ranges.append((int(lo), int(hi or lo)))
            return SetSpec(s.name, (F_DPORT,), 1, {}, interval_list=self.port_list(ranges))
        raise EngineError(f"{where}: interval sets of {types[0]} are not modelled")

    def _ipsets(self) -> None:
        """ipsets (IPVS mode) live in a namespace of their own; id by name."""
        self.ipset_ids: dict[str, int] = {}
        for ipset in self.ruleset.ipsets:
            where = f"ipset {ipset.name}"
            kind, _, dims = ipset.type.partition(":")
            parts = dims.split(",")
            if kind == "bitmap" and parts == ["port"]:
                ranges = [self._port_range(e) for e in ipset.elements]
                spec = SetSpec(ipset.name, (F_DPORT,), 1, {}, interval_list=self.port_list(ranges))
            elif kind == "hash" and parts[0] == "net" and len(parts) == 1:
                lst = self.cidr_list(list(ipset.elements), where)
                spec = SetSpec(ipset.name, (F_DADDR,), 1, {}, interval_list=lst)
            elif kind == "hash" and all(p in ("ip", "port", "net") for p in parts):
                spec = self._hash_ipset(ipset.name, parts, ipset.elements, where)
            else:
                raise EngineError(f"{where}: type {ipset.type} is not modelled")
            self.ipset_ids[ipset.name] = len(self.sets)
            self.sets.append(spec)

    @staticmethod
    def _port_range(text: str) -> tuple[int, int]:
        text = text.split(":")[-1]
        lo, _, hi = text.partition("-")
        return int(lo), int(hi or lo)

    def _hash_ipset(
        self, name: str, parts: Sequence[str], elements: Iterable[str], where: str
    ) -> SetSpec:
        """``hash:ip,port,ip`` and friends: each dimension an exact component.

        ipset elements are written ``IP,proto:PORT,IP``; the key packs them as
        the ``--match-set NAME dst,dst,src`` flags name them (matched in
        :meth:`_expr`). ``net`` dimensions are only modelled as the first,
        single one (handled by the caller), so here every dimension is exact.
        """
        elements_out: dict[tuple[int, int, int], int] = {}
        layout: list[int] = []
        for i, p in enumerate(parts):
            if p in ("ip", "net"):
                layout.append(F_DADDR if i == 0 else F_SADDR)
            else:
                layout += [F_L4PROTO, F_DPORT]
        if "net" in parts:
            rows = []
            for text in elements:
                comps = text.split(",")
                if len(comps) != len(parts):
                    raise EngineError(f"{where}: element {text!r} does not fit {','.join(parts)}")
                row: list[tuple[int, int]] = []
                for p, comp in zip(parts, comps, strict=True):
                    if p in ("ip", "net"):
                        row.append(_parse_net(comp, self.version, where))
                    else:
                        proto, _, port = comp.rpartition(":")
                        row += [(PROTOCOLS.get(proto or "tcp", 0), -1), (int(port), -1)]
                rows.append(row)
            return SetSpec(name, tuple(layout), 3, {}, rows=rows)
        extra: dict[tuple[int, int, int], int] = {}
        for text in elements:
            comps = text.split(",")
            if len(comps) != len(parts):
                raise EngineError(f"{where}: element {text!r} does not fit {','.join(parts)}")
            values: list[int] = []
            addrs = []
            for p, comp in zip(parts, comps, strict=True):
                if p == "ip":
                    addrs.append(_parse_addr(comp, self.version, where))
                else:
                    proto, _, port = comp.rpartition(":")
                    values += [PROTOCOLS.get(proto or "tcp", 0), int(port)]
            key = _ipset_key(addrs, values)
            (extra if len(addrs) > 1 else elements_out)[key] = 0
        elements_out.update(extra)
        return SetSpec(name, tuple(layout), 0, elements_out)

    def _chain(self, ti: int, name: str, where: str) -> int:
        found = self.chain_ids[ti].get(name)
        if found is None:
            table = self.tables[ti]
            raise EngineError(
                f"{where}: jump to chain {name!r}, which table {table.family} {table.name} lacks"
            )
        return found

    def _set_id(self, ti: int, name: str, where: str) -> int:
        table = self.tables[ti]
        if table.dialect == "iptables":
            found = self.ipset_ids.get(name)
            if found is None:
                raise EngineError(f"{where}: match on ipset {name!r}, which the ruleset lacks")
            return found
        found = self.set_ids[ti].get(name)
        if found is None:
            raise EngineError(f"{where}: set {name!r} is not in table {table.family} {table.name}")
        return found

    # -- rules ------------------------------------------------------------------------
    def rules(self, compiled: bool) -> None:
        """Emit every rule, then turn chain ids in jumps into code offsets.
        ``compiled``: use the compiled twin of :meth:`emit_rules` when it loads."""
        emit = _compiled_emitter() if compiled else None
        if emit is None:
            self.emit_rules()
        else:
            emit(self)
        code = self.code
        chain_offset = self.chain_offset
        for pos in self._fixups:
            code[pos] = chain_offset[code[pos]]
        self.verdicts = [
            (op, chain_offset[arg] if op in (V_JUMP, V_GOTO) else arg) for op, arg in self.verdicts
        ]

    def emit_rules(self) -> None:
        # The hot loop of Engine(): one pass over every rule (323,000 at
        # 10,000 Services in iptables mode). kservice/engine/_rules.pyx is
        # its compiled twin: change both together (tests compare the
        # Programs). The commonest shapes are emitted inline with their
        # caches bound to locals; the rest go through _expr/_verdict.
        # ``where`` is one object moved along (errors format it at once), and
        # rule numbers are kept per chain (RuleIndex), so a rule costs no
        # objects beyond its ops.
        code = self.code
        fixups = self._fixups
        chain_offset = self.chain_offset
        chain_first = self.chain_first_rule
        net4_cache = self._net4_cache
        address_ids = self._address_ids
        address_values = self.address_values
        stat_cache: dict[StatisticMatch, int] = {}
        simple_verdicts = _SIMPLE_VERDICTS
        proto_mask = _PROTO_MASK
        ct_cache = _CT_CACHE
        v4 = self.version == 4
        n_rule = 0
        for ti, table in enumerate(self.tables):
            ids = self.chain_ids[ti]
            where: Any = _Where(table, "", 0)
            for chain in table.chains:
                where.chain = chain.name
                chain_offset.append(len(code) >> 2)
                chain_first.append(n_rule)
                for i, rule in enumerate(chain.rules):
                    where.index = i
                    header = len(code)
                    code += (RULE, n_rule, 0, 0)
                    n_rule += 1
                    exprs: tuple[Any, ...] = rule.exprs
                    for e in exprs:
                        t = type(e)
                        if t is IPMatch and v4 and len(e.cidrs) == 1:
                            found = net4_cache.get(e.cidrs[0])
                            if found is None:
                                found = self._net4(e.cidrs[0], where)
                            code += (
                                M_SADDR4 if e.field == "saddr" else M_DADDR4,
                                found[0],
                                found[1],
                                int(e.negate),
                            )
                        elif t is StatisticMatch:
                            threshold = stat_cache.get(e)
                            if threshold is None:
                                threshold = stat_cache[e] = statistic_threshold(e)
                            code += (M_STAT, threshold, 0, 0)
                        elif t is ProtoMatch and len(e.protocols) == 1:
                            bit = proto_mask.get(e.protocols[0])
                            if bit is None:
                                self._expr(ti, e, where)
                            else:
                                code += (M_PROTO, bit, int(e.negate), 0)
                        elif t is CtStateMatch and e.states in ct_cache:
                            code += (M_CTSTATE, ct_cache[e.states], int(e.negate), 0)
                        else:
                            self._expr(ti, e, where)
                    v: Any = rule.verdict
                    t = type(v)
                    simple = simple_verdicts.get(t)
                    if simple is not None:
                        code += (simple, 0, 0, 0)
                    elif t is Jump or t is Goto:
                        target = ids.get(v.chain)
                        if target is None:
                            target = self._chain(ti, v.chain, where)
                        fixups.append(len(code) + 1)
                        code += (V_JUMP if t is Jump else V_GOTO, target, 0, 0)
                    elif t is DNAT and v4:
                        aid = address_ids.get(v.address)
                        if aid is None:
                            aid = self.address(v.address, where)
                        code += (V_DNAT, aid, v.port or 0, address_values[aid])
                    else:
                        self._verdict(ti, v, where)
                    code[header + 2] = len(code) >> 2
                code += (END, ids[chain.name], 0, 0)
        self.n_rules = n_rule

    def _emit(self, op: int, a: int = 0, b: int = 0, c: int = 0) -> None:
        self.code += (op, a, b, c)

    def _emit_jump(self, op: int, chain: int) -> None:
        self._fixups.append(len(self.code) + 1)
        self.code += (op, chain, 0, 0)

    def _expr(self, ti: int, e: Any, where: str) -> None:
        neg = int(getattr(e, "negate", False))
        if isinstance(e, IPMatch):
            if self.version == 4 and len(e.cidrs) == 1:
                net, mask = self._net4(e.cidrs[0], where)
                self._emit(M_SADDR4 if e.field == "saddr" else M_DADDR4, net, mask, neg)
            else:
                op = M_SADDR if e.field == "saddr" else M_DADDR
                self._emit(op, self.cidr_list(e.cidrs, where), neg)
        elif isinstance(e, ProtoMatch):
            mask = 0
            for p in e.protocols:
                number = PROTOCOLS.get(p.lower(), int(p) if p.isdigit() else -1)
                if number not in PROTO_BIT:
                    raise EngineError(f"{where}: protocol {p!r} is not modelled (tcp, udp, sctp)")
                mask |= PROTO_BIT[number]
            self._emit(M_PROTO, mask, neg)
        elif isinstance(e, PortMatch):
            if len(e.ranges) == 1:
                lo, hi = e.ranges[0]
                self._emit(M_SPORT1 if e.field == "sport" else M_DPORT1, lo, hi, neg)
            else:
                op = M_SPORT if e.field == "sport" else M_DPORT
                self._emit(op, self.port_list(e.ranges), neg)
        elif isinstance(e, IfaceMatch):
            self._emit(M_IIF if e.field == "iif" else M_OIF, self.iface(e.name), neg)
        elif isinstance(e, MarkMatch):
            self._emit(M_MARK, e.value & MASK32, e.mask & MASK32, neg)
        elif isinstance(e, AddrTypeMatch):
            if e.addr_type.upper() != "LOCAL":
                raise EngineError(f"{where}: address type {e.addr_type} is not modelled (LOCAL)")
            self._emit(M_ADDRTYPE, 0 if e.field == "saddr" else 1, neg)
        elif isinstance(e, CtStateMatch):
            bits = 0
            for s in e.states:
                if s.upper() not in CT_BITS:
                    raise EngineError(f"{where}: conntrack state {s} is not modelled")
                bits |= CT_BITS[s.upper()]
            self._emit(M_CTSTATE, bits, neg)
        elif isinstance(e, StatisticMatch):
            self._emit(M_STAT, statistic_threshold(e), neg)
        elif isinstance(e, RecentMatch):
            if e.mask not in (None, "255.255.255.255", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
                raise EngineError(f"{where}: recent --mask {e.mask} is not modelled")
            flags = _RECENT_MODES[e.mode] | (16 if e.side == "rdest" else 0) | (32 if e.reap else 0)
            flags |= 64 * neg
            # seconds + 1, so that 0 means "no --seconds" in an unsigned word
            seconds = 0 if e.seconds is None else e.seconds + 1
            self._emit(M_RECENT, self.recent(e.name), flags, seconds)
        elif isinstance(e, SetMatch):
            sid = self._set_id(ti, e.set_name, where)
            spec = self.sets[sid]
            if self.tables[ti].dialect == "iptables":
                layout = self._ipset_layout(spec, e.keys, where)
            else:
                layout = self.layout(e.keys, where)
                self._check_layout(spec, layout, where)
            self._emit(M_SET, sid, layout, neg)
        elif isinstance(e, MarkSet):
            self._emit(S_MARK, _MARK_OPS[e.op], e.value & MASK32, e.mask & MASK32)
        elif isinstance(e, SetUpdate):
            sid = self._set_id(ti, e.set_name, where)
            layout = self.layout(e.keys, where)
            self._check_layout(self.sets[sid], layout, where)
            if self.sets[sid].kind != 2:
                raise EngineError(f"{where}: update @{e.set_name}: the set has no timeout")
            self._emit(S_SETUPD, sid, layout)
        elif isinstance(e, Counter):
            self._emit(S_NOP)
        elif isinstance(e, RawMatch) and e.text.split()[:2] == ["-m", "ipvs"]:
            self._ipvs_match(e.text, where)
        elif isinstance(e, RawMatch) and e.text in _PHYSDEV_IN:
            # The engine models pods on routed interfaces (veth), not bridge
            # ports: no packet entered through a bridge port.
            self._emit(M_NEVER, 0, int(e.text == _PHYSDEV_IN[1]))
        elif isinstance(e, RawMatch) and e.text.split()[:2] == ["-m", "nfacct"]:
            self._emit(S_NOP)  # xt_nfacct counts the packet and always matches
        else:
            text = getattr(e, "text", repr(e))
            raise EngineError(f"{where}: {text!r} is not something the engine can evaluate")

    def _ipvs_match(self, text: str, where: str) -> None:
        """``-m ipvs [--vaddr A[/M]] [--vproto P] [--vport N]``: the packet belongs to
        an IPVS connection of that virtual service (xt_ipvs; kube-proxy's
        KUBE-IPVS-OUT-FILTER)."""
        words = text.split()[2:]
        vaddr, proto, port = -1, 0, 0
        i = 0
        while i < len(words):
            opt = words[i]
            value = words[i + 1] if i + 1 < len(words) else ""
            if opt == "--vaddr":
                vaddr = self.cidr_list([value], where)
            elif opt == "--vproto":
                proto = PROTOCOLS.get(value, int(value) if value.isdigit() else -1)
                if proto < 0:
                    raise EngineError(f"{where}: -m ipvs --vproto {value} is not modelled")
            elif opt == "--vport":
                port = int(value)
            else:
                raise EngineError(f"{where}: -m ipvs option {opt} is not modelled")
            i += 2
        self._emit(M_IPVS, vaddr + 1, proto, port)  # 0: any virtual address

    def _check_layout(self, spec: SetSpec, layout: int, where: str) -> None:
        fields = self.layouts[layout]

        # addresses fit addresses and ports ports, whichever side they are read from
        def kind(f: int) -> int:
            return F_DADDR if f <= F_DADDR else F_DPORT if f == F_SPORT else f

        if tuple(map(kind, fields)) != tuple(map(kind, spec.layout)):
            raise EngineError(f"{where}: the key does not fit set {spec.name}'s type")

    def _ipset_layout(self, spec: SetSpec, flags: Sequence[str], where: str) -> int:
        """``--match-set NAME dst,dst,src``: which packet field each dimension reads."""
        dims = []
        i = 0
        for f in spec.layout:
            if f == F_L4PROTO:
                continue
            if i >= len(flags):
                raise EngineError(f"{where}: --match-set {spec.name} names too few directions")
            direction = flags[i]
            i += 1
            if direction not in ("src", "dst", "saddr", "daddr", "sport", "dport"):
                raise EngineError(f"{where}: --match-set direction {direction!r} is not modelled")
            is_src = direction.startswith("s")
            if f in (F_SADDR, F_DADDR):
                dims.append(F_SADDR if is_src else F_DADDR)
            else:
                dims += [F_L4PROTO, F_SPORT if is_src else F_DPORT]
        # layouts for ipsets are interned like nft ones, marked by a leading 100 + n
        key = (100 + len(dims), *dims)
        found = self._layout_ids.get(key)
        if found is None:
            found = len(self.layouts)
            self.layouts.append(key)
            self._layout_ids[key] = found
        return found

    def _verdict(self, ti: int, v: Any, where: str) -> None:
        if v is None:
            self._emit(V_NONE)
        elif isinstance(v, Accept):
            self._emit(V_ACCEPT)
        elif isinstance(v, Drop):
            self._emit(V_DROP)
        elif isinstance(v, Reject):
            self._emit(V_REJECT)
        elif isinstance(v, Return):
            self._emit(V_RETURN)
        elif isinstance(v, Jump):
            self._emit_jump(V_JUMP, self._chain(ti, v.chain, where))
        elif isinstance(v, Goto):
            self._emit_jump(V_GOTO, self._chain(ti, v.chain, where))
        elif isinstance(v, DNAT):
            aid = self.address(v.address, where)
            low = self.address_values[aid] if self.version == 4 else 0
            self._emit(V_DNAT, aid, v.port or 0, low)
        elif isinstance(v, SNAT):
            self._emit(V_SNAT, self.address(v.address, where), v.port or 0)
        elif isinstance(v, Masquerade):
            self._emit(V_MASQ)
        elif isinstance(v, VmapLookup):
            sid = self._set_id(ti, v.map_name, where)
            layout = self.layout(v.keys, where)
            self._check_layout(self.sets[sid], layout, where)
            if self.sets[sid].kind != 0:
                raise EngineError(f"{where}: vmap @{v.map_name} must be a plain verdict map")
            self._emit(V_VMAP, sid, layout)
        elif isinstance(v, NumgenVmap):
            if not 1 <= v.modulus <= 65536:
                raise EngineError(f"{where}: numgen modulus {v.modulus} is not modelled (1-65536)")
            mapping = dict(v.mapping)
            self._emit(V_NUMGEN, v.modulus, v.offset)
            for k in range(v.modulus):
                target = mapping.get(k + v.offset)
                if target is None:
                    self._emit(V_NONE)
                else:
                    chain = self._chain(ti, target.chain, where)
                    self._emit_jump(V_JUMP if isinstance(target, Jump) else V_GOTO, chain)
        else:
            raise EngineError(f"{where}: verdict {v!r} is not something the engine can follow")

    # -- hooks --------------------------------------------------------------------------
    def hooks(self) -> list[list[int]]:
        hooks: list[list[tuple[int, int, int]]] = [[] for _ in HOOKS]
        order = 0
        for ti, table in enumerate(self.tables):
            for chain in table.chains:
                if chain.hook is None:
                    continue
                hook = chain.hook.lower()
                if hook not in HOOKS:
                    continue  # ingress/egress: not on a Service packet's path
                if table.dialect == "iptables":
                    prio = (
                        _NAT_PRIORITY[hook]
                        if table.name == "nat"
                        else _TABLE_PRIORITY.get(table.name, 0)
                    )
                else:
                    prio = chain.priority or 0
                hooks[HOOKS.index(hook)].append((prio, order, self.chain_ids[ti][chain.name]))
                order += 1
        if self.ruleset.virtual_servers:
            for hook, prio in _IPVS_PRIORITY.items():
                hooks[HOOKS.index(hook)].append((prio, order, IPVS_CHAIN))
        return [[c for _, _, c in sorted(h)] for h in hooks]

    @functools.cached_property
    def interface_addresses(
        self,
    ) -> list[tuple[Interface, list[ipaddress.IPv4Address | ipaddress.IPv6Address]]]:
        """Each interface with its addresses, parsed once for local_list,
        primary and masquerade_source."""
        out = []
        for iface in self.ruleset.interfaces:
            ips = []
            for a in iface.addresses:
                try:
                    ips.append(ipaddress.ip_address(a.split("/")[0]))
                except ValueError:
                    raise EngineError(f"interface {iface.name}: {a!r} is not an address") from None
            out.append((iface, ips))
        return out

    def local_list(self) -> int:
        cidrs: list[str] = []
        for _, ips in self.interface_addresses:
            for ip in ips:
                if ip.version != self.version:
                    continue
                if ip.is_loopback and self.version == 4:
                    cidrs.append("127.0.0.0/8")
                else:
                    cidrs.append(str(ip))
        if self.version == 4 and "127.0.0.0/8" not in cidrs:
            cidrs.append("127.0.0.0/8")
        if self.version == 6 and "::1" not in cidrs:
            cidrs.append("::1")
        return self.cidr_list(cidrs, "interfaces")

    def virtual_servers(self) -> list[VirtualServerSpec]:
        out = []
        for vs in self.ruleset.virtual_servers:
            out.append(self._virtual_server(vs))
        return out

    def _virtual_server(self, vs: VirtualServer) -> VirtualServerSpec:
        where = f"virtual server {vs.protocol} {vs.address}:{vs.port}"
        if vs.scheduler not in _SCHEDULERS:
            raise EngineError(
                f"{where}: scheduler {vs.scheduler!r} is not modelled ({', '.join(_SCHEDULERS)})"
            )
        servers = [
            RealServerSpec(
                _parse_addr(rs.address, self.version, where),
                rs.port,
                rs.weight,
                str(ipaddress.ip_address(rs.address)),
            )
            for rs in vs.real_servers
        ]
        for rs in servers:
            rs.addr_id = self.address(rs.text, where)
        flags = tuple(getattr(vs, "flags", ()) or ())
        return VirtualServerSpec(
            _parse_addr(vs.address, self.version, where),
            PROTOCOLS[vs.protocol],
            vs.port,
            vs.scheduler,
            vs.persistence,
            flags,
            servers,
            f"{vs.protocol.upper()} {vs.address}:{vs.port} {vs.scheduler}",
        )

    def primary(self) -> tuple[str, int | None]:
        for iface, ips in self.interface_addresses:
            if iface.kind == "device":
                for ip in ips:
                    if ip.version == self.version:
                        return iface.name, int(ip)
                return iface.name, None
        return "eth0", None

    def masquerade_source(self) -> bool:
        """Whether MASQUERADE finds a source address on this node.

        For IPv4 the kernel takes a global-scope address of the outgoing
        interface or, failing that, of any interface in the namespace
        (``inet_select_addr``); loopback's 127.0.0.0/8 is host scope and
        never chosen. With none the packet is dropped. The ruleset's
        interfaces other than loopback (``eth0`` with the node's addresses
        of this family, ``kube-ipvs0`` with IPVS virtual addresses) describe
        the node; a ruleset with none says nothing, and a source is assumed.
        IPv6 is not modelled: its source selection (``ipv6_dev_get_saddr``)
        may fall back to a link-local address, so a source is assumed.
        """
        if self.version == 6:
            return True
        node = [ips for iface, ips in self.interface_addresses if iface.kind != "loopback"]
        return not node or any(ip.version == 4 and not ip.is_loopback for ips in node for ip in ips)


class _Where:
    """Where a rule is, formatted only when an error needs it."""

    __slots__ = ("chain", "index", "table")

    def __init__(self, table: Table, chain: str, index: int) -> None:
        self.table = table
        self.chain = chain
        self.index = index

    def __str__(self) -> str:
        t = self.table
        return f"table {t.family} {t.name} chain {self.chain} rule {self.index}"

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


_PHYSDEV_IN = ("-m physdev --physdev-is-in", "-m physdev ! --physdev-is-in")
_SIMPLE_VERDICTS: dict[type, int] = {
    type(None): V_NONE,
    Accept: V_ACCEPT,
    Drop: V_DROP,
    Reject: V_REJECT,
    Return: V_RETURN,
    Masquerade: V_MASQ,
}
_PROTO_MASK = {name: PROTO_BIT[number] for name, number in PROTOCOLS.items()}
_CT_CACHE: dict[tuple[str, ...], int] = {
    states: sum(CT_BITS[s] for s in states)
    for states in (
        ("NEW",),
        ("RELATED", "ESTABLISHED"),
        ("RELATED", "ESTABLISHED", "DNAT"),
        ("INVALID",),
        ("ESTABLISHED", "RELATED"),
    )
}


def _ipset_key(addrs: Sequence[int], values: Sequence[int]) -> tuple[int, int, int]:
    small = 0
    for v in values:
        small = (small << 16) | v
    return (addrs[0] if addrs else 0, small, addrs[1] if len(addrs) > 1 else 0)


def statistic_threshold(e: StatisticMatch) -> int:
    """The kernel's threshold for ``--probability P``: ``lround(P * 2**31)``.

    xt_statistic matches when ``(get_random_u32() & 0x7FFFFFFF) < threshold``,
    so the exact probability is ``threshold / 2**31``; the printed text is what
    iptables parsed, so it (not the float kept beside it) decides.
    """
    try:
        p = float(e.text)
    except (TypeError, ValueError):
        p = e.probability
    if not 0.0 <= p <= 1.0:
        raise EngineError(f"statistic probability {p} is not between 0 and 1")
    return math.floor(p * 2**31 + 0.5)


def build(ruleset: Ruleset, *, compiled: bool = True) -> Program:
    """Flatten ``ruleset`` into a :class:`Program`; :class:`EngineError` when the
    ruleset holds something the engine cannot evaluate (named, with where).
    ``compiled=False`` runs the pure-Python rule loop even when the compiled
    one is built (the Program is the same)."""
    with gc_paused():  # see kservice._gc
        return _build(ruleset, compiled)


@functools.cache
def _compiled_emitter() -> Any:
    """``kservice.engine._rules.emit_rules``, or None when the extensions are
    off (KSERVICE_NO_EXTENSIONS, read once by kservice.engine) or not built."""
    from kservice.engine import NO_EXTENSIONS  # the package is loaded by now

    if NO_EXTENSIONS:
        return None
    try:
        from kservice.engine._rules import emit_rules
    except ImportError:
        return None
    return emit_rules


def _build(ruleset: Ruleset, compiled: bool) -> Program:
    b = _Builder(ruleset)
    b.declare()
    b.rules(compiled)
    hooks = b.hooks()
    local = b.local_list()
    vss = b.virtual_servers()
    primary, node_address = b.primary()
    return Program(
        family=b.version,
        code=b.code,
        chain_offset=b.chain_offset,
        chain_policy=b.chain_policy,
        chain_nat=b.chain_nat,
        hooks=hooks,
        cidr_lists=b.cidr_lists,
        port_lists=b.port_lists,
        local_list=local,
        iface_patterns=b.iface_patterns,
        sets=b.sets,
        layouts=b.layouts,
        verdicts=b.verdicts,
        address_values=b.address_values,
        address_texts=b.address_texts,
        recent_tables=b.recent_tables,
        virtual_servers=vss,
        rule_where=RuleIndex(b.chain_first_rule, b.chain_tables, b.chain_names, b.n_rules),
        chain_tables=b.chain_tables,
        chain_names=b.chain_names,
        tables=b.tables,
        primary_interface=primary,
        node_address=node_address,
        masquerade_source=b.masquerade_source(),
    )
