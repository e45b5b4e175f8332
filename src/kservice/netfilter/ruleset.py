"""The Ruleset: what the kernel holds after kube-proxy (or a real node) programmed it.

One typed model serves all three modes, so the packet engine has a single
compile path and the renderers/parsers of each text format work on the same
objects:

* :class:`Table` / :class:`Chain` / :class:`Rule` model both iptables (tables
  ``nat``/``filter`` of family ``ip``/``ip6``, ``dialect="iptables"``) and
  nftables (``table ip kube-proxy``, ``dialect="nft"``).
* A :class:`Rule` is an ordered tuple of *expressions* followed by an optional
  *verdict*, evaluated as the kernel does: each :data:`Match` must hold (the
  first failing one ends the rule), each :data:`Statement` takes effect when
  reached (``recent --set``, ``update @set``, ``meta mark set``), and the
  verdict decides what happens next. A rule without verdict continues with the
  next rule (iptables' non-terminating targets such as ``-j MARK`` are the
  statement :class:`MarkSet` with no verdict).
* nftables :class:`NftSet` (sets and maps, verdict maps included) live in their
  table; IPVS mode adds :class:`VirtualServer` entries and :class:`IPSet` sets.
* :class:`Interface` records the addresses the kernel considers local (the
  node's own IPs, ``kube-ipvs0``): kernel state that ``addrtype LOCAL`` /
  ``fib daddr type local`` and IPVS depend on, not rules.

Every object is immutable (attrs, frozen, slots) and hashable, so rulesets can
be compared, diffed and used as cache keys. Values are kept as the text the
tools print (addresses in canonical form, CIDRs with their prefix), integers
where the tools print numbers. Anything a parser does not understand is kept as
:class:`RawMatch` / :class:`RawStatement` (text verbatim) and reported, never
dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, TypeAlias

import attrs

__all__ = [
    "DNAT",
    "SNAT",
    "Accept",
    "AddrTypeMatch",
    "Chain",
    "Counter",
    "CtStateMatch",
    "Dialect",
    "Drop",
    "Goto",
    "IPMatch",
    "IPSet",
    "IfaceMatch",
    "Interface",
    "Jump",
    "MarkMatch",
    "MarkSet",
    "Masquerade",
    "Match",
    "NftSet",
    "NumgenVmap",
    "PortMatch",
    "ProtoMatch",
    "RawMatch",
    "RawStatement",
    "RealServer",
    "RecentMatch",
    "Reject",
    "Return",
    "Rule",
    "Ruleset",
    "SetMatch",
    "SetUpdate",
    "Statement",
    "StatisticMatch",
    "Table",
    "Verdict",
    "VirtualServer",
    "VmapLookup",
]

Dialect = Literal["iptables", "nft"]
#: Packet fields a match or set key can read. ``saddr``/``daddr`` are the IP
#: addresses, ``sport``/``dport`` the transport ports (``th`` in nft),
#: ``l4proto`` the transport protocol, ``iif``/``oif`` interface names, ``mark``
#: the packet mark.
Field = Literal["saddr", "daddr", "sport", "dport", "l4proto", "iif", "oif", "mark"]


def _tuple(value: Iterable[Any] | None) -> tuple[Any, ...]:
    return tuple(value) if value is not None else ()


# ----------------------------------------------------------------------------- matches
@attrs.frozen
class IPMatch:
    """``-s/-d CIDR`` / ``ip saddr|daddr {a, b}``: the address is in any of ``cidrs``."""

    field: Literal["saddr", "daddr"]
    cidrs: tuple[str, ...] = attrs.field(converter=_tuple)
    negate: bool = False


@attrs.frozen
class ProtoMatch:
    """``-p tcp`` / ``meta l4proto tcp``: the transport protocol (lower case).

    ``module`` (iptables text only) says whether the rule loads the protocol's
    match module. True (the default) is kube-proxy's iptables mode, ``-m tcp -p
    tcp`` (or a bare ``-p tcp`` when a RawMatch such as ``-m tcp --syn`` loads
    the module itself); False is a bare ``-p tcp`` with no ``-m tcp`` at all, as
    kube-proxy's IPVS proxier writes it. The kernel matches the protocol the
    same way either way; the flag means something only for a non-negated
    tcp/udp/sctp match, and nftables has no such module (nft ignores it).
    """

    protocols: tuple[str, ...] = attrs.field(converter=_tuple)
    negate: bool = False
    module: bool = True


@attrs.frozen
class PortMatch:
    """``--dport 80`` / ``th dport 80``: the port is in one of the inclusive ranges."""

    field: Literal["sport", "dport"]
    ranges: tuple[tuple[int, int], ...] = attrs.field(converter=_tuple)
    negate: bool = False


@attrs.frozen
class IfaceMatch:
    """``-i/-o NAME`` / ``iifname/oifname``; a trailing ``+`` (``*`` in nft) is a prefix."""

    field: Literal["iif", "oif"]
    name: str
    negate: bool = False


@attrs.frozen
class MarkMatch:
    """``-m mark --mark VALUE/MASK`` / ``meta mark & MASK == VALUE``."""

    value: int
    mask: int = 0xFFFFFFFF
    negate: bool = False


@attrs.frozen
class AddrTypeMatch:
    """``-m addrtype --dst-type LOCAL`` / ``fib daddr type local``.

    ``limit_iface_in`` is ``--limit-iface-in`` (only addresses of the input
    interface count).
    """

    field: Literal["saddr", "daddr"]
    addr_type: str = "LOCAL"
    negate: bool = False
    limit_iface_in: bool = False


@attrs.frozen
class CtStateMatch:
    """``-m conntrack --ctstate NEW,...`` / ``ct state new``: upper-case state names."""

    states: tuple[str, ...] = attrs.field(converter=_tuple)
    negate: bool = False


@attrs.frozen
class StatisticMatch:
    """``-m statistic --mode random --probability P``: holds with probability ``p``.

    ``text`` keeps the probability exactly as printed (kube-proxy prints 11
    decimals), so rendering is byte-exact.
    """

    probability: float
    text: str


@attrs.frozen
class RecentMatch:
    """``-m recent``: ``--rcheck --seconds N --reap`` checks, ``--set`` records.

    ``side`` is ``rsource`` (the source address is remembered) or ``rdest``;
    ``mask`` is the address mask kube-proxy passes (``255.255.255.255``).
    ``mode="set"`` always holds and records the packet (a statement in effect).
    """

    name: str
    mode: Literal["set", "rcheck", "update", "remove"]
    seconds: int | None = None
    reap: bool = False
    side: Literal["rsource", "rdest"] = "rsource"
    mask: str | None = None
    negate: bool = False


@attrs.frozen
class SetMatch:
    """A set lookup: ``ip daddr . meta l4proto . th dport @set`` (nft) or
    ``-m set --match-set NAME dst,dst`` (ipset). ``keys`` are the packet fields
    concatenated, in order."""

    set_name: str
    keys: tuple[str, ...] = attrs.field(converter=_tuple)
    negate: bool = False


@attrs.frozen
class RawMatch:
    """A match the parser did not understand, kept verbatim (and reported)."""

    text: str


Match: TypeAlias = (
    IPMatch
    | ProtoMatch
    | PortMatch
    | IfaceMatch
    | MarkMatch
    | AddrTypeMatch
    | CtStateMatch
    | StatisticMatch
    | RecentMatch
    | SetMatch
    | RawMatch
)


# -------------------------------------------------------------------------- statements
@attrs.frozen
class MarkSet:
    """``-j MARK --or-mark V`` / ``meta mark set mark or V``: ``op`` is set, or, xor
    (``set`` with a mask is ``--set-xmark V/M``)."""

    op: Literal["set", "or", "xor", "and"]
    value: int
    mask: int = 0xFFFFFFFF


@attrs.frozen
class SetUpdate:
    """nft ``update @set { ip saddr }``: adds the key (refreshing its timeout)."""

    set_name: str
    keys: tuple[str, ...] = attrs.field(converter=_tuple)


@attrs.frozen
class Counter:
    """``counter``: counts, changes nothing."""


@attrs.frozen
class RawStatement:
    """A statement or target the parser did not understand, kept verbatim."""

    text: str


Statement: TypeAlias = MarkSet | SetUpdate | Counter | RawStatement


# ---------------------------------------------------------------------------- verdicts
@attrs.frozen
class Accept:
    pass


@attrs.frozen
class Drop:
    pass


@attrs.frozen
class Return:
    pass


@attrs.frozen
class Jump:
    chain: str


@attrs.frozen
class Goto:
    chain: str


@attrs.frozen
class Reject:
    """``-j REJECT [--reject-with T]`` / ``reject [with icmp type T]``."""

    with_: str | None = None


@attrs.frozen
class DNAT:
    """``-j DNAT --to-destination ip:port`` / ``dnat to ip:port``."""

    address: str
    port: int | None = None


@attrs.frozen
class SNAT:
    address: str
    port: int | None = None


@attrs.frozen
class Masquerade:
    """``-j MASQUERADE [--random-fully]`` / ``masquerade [fully-random]``."""

    fully_random: bool = False


@attrs.frozen
class VmapLookup:
    """``KEYS vmap @map``: the verdict is the map's value for the packet's key
    (no match: continue with the next rule)."""

    map_name: str
    keys: tuple[str, ...] = attrs.field(converter=_tuple)


@attrs.frozen
class NumgenVmap:
    """``numgen random mod N vmap { 0 : goto A, 1 : goto B }``: a uniformly
    random number in ``[0, modulus)`` selects the verdict (``offset`` added)."""

    modulus: int
    mapping: tuple[tuple[int, Jump | Goto], ...] = attrs.field(converter=_tuple)
    offset: int = 0


Verdict: TypeAlias = (
    Accept
    | Drop
    | Return
    | Jump
    | Goto
    | Reject
    | DNAT
    | SNAT
    | Masquerade
    | VmapLookup
    | NumgenVmap
)


# ------------------------------------------------------------------------ containers
@attrs.frozen
class Rule:
    """An ordered list of matches and statements, then an optional verdict."""

    exprs: tuple[Match | Statement, ...] = attrs.field(default=(), converter=_tuple)
    verdict: Verdict | None = None
    comment: str | None = None


@attrs.frozen
class Chain:
    """A chain; base chains (nft) have ``type``/``hook``/``priority``/``policy``.

    iptables built-in chains (PREROUTING, ...) carry their hook and policy too,
    so both dialects share one representation.
    """

    name: str
    rules: tuple[Rule, ...] = attrs.field(default=(), converter=_tuple)
    type: str | None = None
    hook: str | None = None
    priority: int | None = None
    policy: str | None = None
    comment: str | None = None

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@attrs.frozen
class NftSet:
    """An nftables set or map (``map`` when ``value_type`` is set).

    ``key_type`` is the nft type, concatenations joined with `` . `` as nft
    prints them (``ipv4_addr . inet_proto . inet_service``); ``elements`` are
    ``(key, value)`` pairs, ``key`` a tuple of element texts and ``value`` the
    map value (a verdict for verdict maps) or None for sets.
    """

    name: str
    key_type: str
    value_type: str | None = None
    flags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    timeout: int | None = None  # seconds
    elements: tuple[tuple[tuple[str, ...], str | Jump | Goto | None], ...] = attrs.field(
        default=(), converter=_tuple
    )
    comment: str | None = None

    @property
    def is_map(self) -> bool:
        return self.value_type is not None


@attrs.frozen
class Table:
    """A netfilter table: ``family`` ip/ip6/inet, ``name`` nat/filter/kube-proxy."""

    family: str
    name: str
    dialect: Dialect
    chains: tuple[Chain, ...] = attrs.field(default=(), converter=_tuple)
    sets: tuple[NftSet, ...] = attrs.field(default=(), converter=_tuple)
    comment: str | None = None

    def chain(self, name: str) -> Chain:
        for chain in self.chains:
            if chain.name == name:
                return chain
        raise KeyError(f"no chain {name!r} in table {self.family} {self.name}")

    def set(self, name: str) -> NftSet:
        for s in self.sets:
            if s.name == name:
                return s
        raise KeyError(f"no set {name!r} in table {self.family} {self.name}")


@attrs.frozen
class IPSet:
    """An ipset (IPVS mode): ``hash:ip,port`` etc., elements as ipset prints them.

    The hash-set header is what ``ipset save`` prints: ``hashsize`` and
    ``maxelem`` (kube-proxy creates every hash set with 1024 and 65536; the
    kernel doubles ``hashsize`` as the set grows), and ``bucketsize`` /
    ``initval``, which kernels with ipset 7.11+ report (12 and a random hash
    seed unless given) and kube-proxy never passes: None when not known, as in a
    compiled Ruleset. ``bitmap:port`` sets have none of these.
    """

    name: str
    type: str
    family: str = "inet"
    elements: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    comment: str | None = None
    hashsize: int = 1024
    maxelem: int = 65536
    bucketsize: int | None = None
    initval: int | None = None


@attrs.frozen
class RealServer:
    address: str
    port: int
    weight: int = 1
    forward: Literal["masq", "route", "tunnel"] = "masq"


@attrs.frozen
class VirtualServer:
    """An IPVS virtual service (``-A -t VIP:PORT -s rr [-p TIMEOUT] [-b FLAGS]``).

    ``flags`` are the scheduler flags by the names ``ipvsadm`` prints for the
    scheduler, in its order: ``sh-fallback``, ``sh-port`` (``sh``),
    ``mh-fallback``, ``mh-port`` (``mh``), ``flag-1``/``flag-2`` (any other
    scheduler), then ``flag-3``. kube-proxy sets ``mh-port`` with ``mh`` and no
    other.
    """

    address: str
    protocol: Literal["tcp", "udp", "sctp"]
    port: int
    scheduler: str = "rr"
    persistence: int | None = None  # seconds; ClientIP affinity
    real_servers: tuple[RealServer, ...] = attrs.field(default=(), converter=_tuple)
    flags: tuple[str, ...] = attrs.field(default=(), converter=_tuple)


@attrs.frozen
class Interface:
    """A kernel interface and its addresses (``dummy`` for ``kube-ipvs0``)."""

    name: str
    addresses: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    kind: str = "device"


@attrs.frozen
class Ruleset:
    """Everything kube-proxy programs on one node, for one IP family."""

    mode: Literal["iptables", "nftables", "ipvs"]
    family: Literal["IPv4", "IPv6"] = "IPv4"
    tables: tuple[Table, ...] = attrs.field(default=(), converter=_tuple)
    ipsets: tuple[IPSet, ...] = attrs.field(default=(), converter=_tuple)
    virtual_servers: tuple[VirtualServer, ...] = attrs.field(default=(), converter=_tuple)
    interfaces: tuple[Interface, ...] = attrs.field(default=(), converter=_tuple)

    def table(self, name: str, family: str | None = None) -> Table:
        for t in self.tables:
            if t.name == name and (family is None or t.family == family):
                return t
        raise KeyError(f"no table {name!r}")

    @property
    def local_addresses(self) -> tuple[str, ...]:
        """Every address the node considers its own (``addrtype LOCAL``)."""
        return tuple(a for iface in self.interfaces for a in iface.addresses)

    def iter_rules(self) -> Iterator[tuple[Table, Chain, int, Rule]]:
        for table in self.tables:
            for chain in table.chains:
                for i, rule in enumerate(chain.rules):
                    yield table, chain, i, rule
