"""The nftables-mode compiler: the ``kube-proxy`` table kube-proxy programs on one node.

:func:`compile` turns a :class:`~kservice.proxy.nodeview.NodeView` (one node,
one IP family) into the :class:`~kservice.netfilter.ruleset.Ruleset` kube-proxy's
nftables proxier holds after a full sync: one table ``ip kube-proxy`` (``ip6``
for IPv6) with its base chains, dispatch maps and per-service chains. It is a
pure function: equal views give equal rulesets, object for object, so the
rendered ``nft -f`` text is byte-for-byte stable.

:func:`delta` is kube-proxy's *partial sync*: the nft transaction that turns one
ruleset into another while touching only what changed (chains flushed and
refilled, map/set elements added and deleted, new chains added, stale ones
deleted), returned as a :class:`Transaction` whose ``text`` is what ``nft -f``
would be given.

Facts carried over (read, not copied) from kubernetes/kubernetes
``pkg/proxy/nftables/proxier.go`` and the expectations of ``proxier_test.go``
(``baseRules``, ``TestOverallNFTablesRules``, ``TestSyncProxyRulesRepeated``):

* ``setupNFTables``: table comment ``rules for kube-proxy``; base chains
  ``filter-prerouting-pre-dnat`` and ``filter-output-pre-dnat`` (type filter,
  priority dstnat-10 = -110), ``filter-input``, ``filter-forward``,
  ``filter-output`` (filter priority 0, i.e. after DNAT), ``nat-prerouting`` /
  ``nat-output`` (dstnat -100) and ``nat-postrouting`` (srcnat 100); the jump
  rules from them (``ct state new`` guards the filter ones); the
  ``mark-for-masquerade`` / ``masquerading`` chains with the masquerade bit;
  the ``cluster-ips`` set and ``cluster-ips-check`` (reject unknown ports of
  ClusterIPs, drop unallocated IPs of the Service CIDRs); ``nodeport-ips``
  (only when ``--nodeport-addresses`` does not match everything; loopback
  addresses left out), otherwise ``fib daddr type local`` plus a localhost
  exclusion; the ``no-endpoint-services`` / ``no-endpoint-nodeports`` verdict
  maps with ``reject-chain``; ``firewall-ips`` with ``firewall-check``;
  ``service-ips`` / ``service-nodeports`` with ``services``.
* ``syncProxyRules``, per service port: the ClusterIP always goes into
  ``cluster-ips``; with usable internal endpoints ``service-ips`` maps it to the
  Cluster- (or, for internalTrafficPolicy Local, the Local-) policy chain,
  otherwise ``no-endpoint-services`` rejects (no endpoints anywhere: ``goto
  reject-chain``) or drops (no local endpoint). ExternalIPs, load-balancer VIPs
  and the nodePort go to the ``external-`` chain when the Service has endpoints
  anywhere, and to the no-endpoint maps when external traffic has no endpoint
  (drop, or reject with none at all). ``firewall-`` chains exist when a port has
  both load-balancer VIPs and loadBalancerSourceRanges (the VIPs are allowed as
  sources too when a range contains the node IP). The policy chains masquerade
  off-cluster traffic to the ClusterIP (or everything with ``masqueradeAll``),
  check ClientIP affinity sets (``affinity-`` sets with ``flags
  dynamic,timeout``), and pick an endpoint with ``numgen random mod N vmap``;
  endpoint chains mark hairpin traffic, record affinity and ``dnat to``. The
  ``external-`` chain masquerades (policy Cluster) or short-circuits pod and
  host traffic to the Cluster chain (policy Local) before going to the policy
  chain.
* Chain names (``service-HASH-ns/name/proto/port`` ...) come from
  :mod:`kservice.proxy.naming`. Element comments are the service port name,
  cut to nft's 128-byte comment limit (kubernetes PR 139516: an over-long
  comment made the whole transaction fail).
* Partial sync (``TestSyncProxyRulesRepeated``): changed chains are ``add`` +
  ``flush`` + their rules again, map elements whose value changed are deleted
  and added again, stale elements deleted; stale chains are flushed (upstream
  deletes them one sync later, once the kernel has noticed the map element
  pointing at them is gone; :func:`delta` deletes them in the same transaction
  unless asked to ``defer_stale_chains``).
"""

from __future__ import annotations

import functools
import ipaddress
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal, TypeAlias, TypeVar

import attrs

from kservice._gc import gc_paused
from kservice.netfilter.nft_text import ElementKey, element_options, render_script
from kservice.netfilter.ruleset import (
    DNAT,
    AddrTypeMatch,
    Chain,
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
    Match,
    NftSet,
    NumgenVmap,
    ProtoMatch,
    Reject,
    Return,
    Rule,
    Ruleset,
    SetMatch,
    SetUpdate,
    Table,
    VmapLookup,
)
from kservice.proxy.naming import (
    NFTABLES_AFFINITY_PREFIX,
    NFTABLES_CLUSTER_PREFIX,
    NFTABLES_ENDPOINT_PREFIX,
    NFTABLES_EXTERNAL_PREFIX,
    NFTABLES_FIREWALL_PREFIX,
    NFTABLES_LOCAL_PREFIX,
    hash_and_truncate,
    hash_and_truncate_each,
)
from kservice.proxy.nodeview import (
    EndpointInfo,
    LocalTrafficDetector,
    NodeView,
    ServicePortInfo,
)

__all__ = [
    "BASE_CHAINS",
    "COMMENT_MAX_BYTES",
    "KUBE_PROXY_TABLE",
    "Operation",
    "Transaction",
    "clear_cache",
    "compile",
    "delta",
]

#: kube-proxy's table; every chain, set and map lives in it.
KUBE_PROXY_TABLE = "kube-proxy"
#: nft rejects comments longer than this (bytes).
COMMENT_MAX_BYTES = 128

# base chains: (name, type, hook, priority)
#: The base chains, in upstream's order. The filter chains that look at the
#: pre-DNAT destination run at dstnat-10; the others at filter (after DNAT).
BASE_CHAINS: tuple[tuple[str, str, str, int], ...] = (
    ("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
    ("filter-output-pre-dnat", "filter", "output", -110),
    ("filter-input", "filter", "input", 0),
    ("filter-forward", "filter", "forward", 0),
    ("filter-output", "filter", "output", 0),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
)

_SERVICES = "services"
_SERVICE_IPS = "service-ips"
_SERVICE_NODEPORTS = "service-nodeports"
_NODEPORT_IPS = "nodeport-ips"
_CLUSTER_IPS = "cluster-ips"
_SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
_NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
_NO_ENDPOINT_SERVICES = "no-endpoint-services"
_NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
_REJECT_CHAIN = "reject-chain"
_CLUSTER_IPS_CHECK = "cluster-ips-check"
_FIREWALL_IPS = "firewall-ips"
_FIREWALL_CHECK = "firewall-check"
_MARK_MASQ = "mark-for-masquerade"
_MASQUERADING = "masquerading"

# (destination chain, source base chain, guarded by ct state new): nftablesJumpChains
_JUMPS: tuple[tuple[str, str, bool], ...] = (
    (_NODEPORT_ENDPOINTS_CHECK, "filter-input", True),
    (_SERVICE_ENDPOINTS_CHECK, "filter-input", True),
    (_SERVICE_ENDPOINTS_CHECK, "filter-forward", True),
    (_SERVICE_ENDPOINTS_CHECK, "filter-output", True),
    (_FIREWALL_CHECK, "filter-prerouting-pre-dnat", True),
    (_FIREWALL_CHECK, "filter-output-pre-dnat", True),
    (_SERVICES, "nat-output", False),
    (_SERVICES, "nat-prerouting", False),
    (_MASQUERADING, "nat-postrouting", False),
    (_CLUSTER_IPS_CHECK, "filter-forward", True),
    (_CLUSTER_IPS_CHECK, "filter-output", True),
)

_CT_NEW = CtStateMatch(("NEW",))
_MASQ_JUMP = Jump(_MARK_MASQ)
_DEST = ("daddr", "l4proto", "dport")
_PROTO_PORT = ("l4proto", "dport")
_DROP = "drop"
_GOTO_REJECT = Goto(_REJECT_CHAIN)

_T = TypeVar("_T")
ElementValue: TypeAlias = str | Jump | Goto | None
Element: TypeAlias = tuple[tuple[str, ...], ElementValue]


# ----------------------------------------------------------------------------- helpers
def _comment(text: str) -> str:
    """``text`` cut to nft's comment limit (bytes, without splitting a character)."""
    raw = text.encode("utf-8")
    if len(raw) <= COMMENT_MAX_BYTES:
        return text
    return raw[:COMMENT_MAX_BYTES].decode("utf-8", errors="ignore")


def _family_cidrs(cidrs: Iterable[str], ipv6: bool) -> tuple[str, ...]:
    """The CIDRs of the family, canonical, in the given order (duplicates dropped)."""
    out: dict[str, None] = {}
    for text in cidrs:
        try:
            net = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            continue
        if (net.version == 6) == ipv6:
            out[str(net)] = None
    return tuple(out)


def _local_matches(detector: LocalTrafficDetector, negate: bool) -> tuple[Match, ...]:
    """``IfLocalNFT`` / ``IfNotLocalNFT`` of kube-proxy's local-traffic detector."""
    if detector.cidr:
        return (IPMatch("saddr", (detector.cidr,), negate),)
    if detector.interface_name:
        return (IfaceMatch("iif", detector.interface_name, negate),)
    if detector.interface_prefix:
        return (IfaceMatch("iif", detector.interface_prefix + "*", negate),)
    return ()


# the maps and sets service ports add elements to, by index in a fragment
_MAP_COUNT = 6
(
    _M_CLUSTER_IPS,
    _M_SERVICE_IPS,
    _M_SERVICE_NODEPORTS,
    _M_FIREWALL_IPS,
    _M_NO_EP_SERVICES,
    _M_NO_EP_NODEPORTS,
) = range(_MAP_COUNT)


@attrs.frozen
class _Fragment:
    """What one service port adds: its chains, its affinity sets, and its map
    elements as ``(map index, element)``."""

    chains: tuple[Chain, ...]
    sets: tuple[NftSet, ...]
    elements: tuple[tuple[int, Element], ...]


@attrs.frozen
class _Context:
    """What every service port's rules depend on besides the port itself."""

    ipv6: bool
    addr_type: str
    mark_masq_all: bool
    if_local: tuple[Match, ...]
    if_not_local: tuple[Match, ...]
    node_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None


# ---------------------------------------------------------------------------- compile
def compile(view: NodeView, *, service_cidrs: Iterable[str] = ()) -> Ruleset:
    """The ``kube-proxy`` nftables table for one node and IP family.

    ``service_cidrs`` are the cluster's Service CIDRs (kube-proxy learns them
    from ServiceCIDR objects); those of the view's family make
    ``cluster-ips-check`` drop traffic to unallocated ClusterIPs. Chains and
    sets come in a fixed order: the common ones, then each service port's
    (``service-``, ``local-``, ``external-``, ``firewall-``, ``endpoint-``), ports
    in :class:`~kservice.proxy.naming.ServicePortName` order.
    """
    with gc_paused():
        return _compile(view, service_cidrs)


def _compile(view: NodeView, service_cidrs: Iterable[str]) -> Ruleset:
    cfg = view.config
    ipv6 = view.ip_family == "IPv6"
    family = "ip6" if ipv6 else "ip"
    addr_type = "ipv6_addr" if ipv6 else "ipv4_addr"
    mark = cfg.masquerade_value
    npa = view.node_port_addresses
    detector = view.local_detector
    primary = view.node.primary_ip
    ctx = _Context(
        ipv6=ipv6,
        addr_type=addr_type,
        mark_masq_all=cfg.masquerade_all,
        if_local=_local_matches(detector, False),
        if_not_local=_local_matches(detector, True),
        node_ip=ipaddress.ip_address(primary) if primary else None,
    )
    common = _common_chains(ipv6, mark, npa.match_all, _family_cidrs(service_cidrs, ipv6))

    # -- the per-service part (syncProxyRules) -----------------------------------------
    # one dict per map/set, in _MAP_ORDER: key -> element (first place, last value)
    maps: tuple[dict[tuple[str, ...], Element], ...] = tuple({} for _ in range(_MAP_COUNT))
    affinity_sets: list[NftSet] = []
    service_chains: list[Chain] = []
    for port in view.service_ports:
        fragment = _fragment(port, ctx)
        service_chains += fragment.chains
        affinity_sets += fragment.sets
        for index, element in fragment.elements:
            maps[index][element[0]] = element
    cluster_ips, service_ips, service_nodeports, firewall_ips, no_ep_services, no_ep_nodeports = (
        tuple(m.values()) for m in maps
    )

    # -- assemble, in a fixed order -------------------------------------------------------
    vmap = f"{addr_type} . inet_proto . inet_service"
    sets: list[NftSet] = [
        NftSet(_CLUSTER_IPS, addr_type, elements=cluster_ips, comment="Active ClusterIPs")
    ]
    if not npa.match_all:
        node_ips = tuple(
            ((ip,), None) for ip in view.node_port_ips if not ipaddress.ip_address(ip).is_loopback
        )
        sets.append(
            NftSet(
                _NODEPORT_IPS,
                addr_type,
                elements=node_ips,
                comment="IPs that accept NodePort traffic",
            )
        )
    sets += [
        NftSet(
            _NO_ENDPOINT_SERVICES,
            vmap,
            "verdict",
            elements=no_ep_services,
            comment="vmap to drop or reject packets to services with no endpoints",
        ),
        NftSet(
            _NO_ENDPOINT_NODEPORTS,
            "inet_proto . inet_service",
            "verdict",
            elements=no_ep_nodeports,
            comment="vmap to drop or reject packets to service nodeports with no endpoints",
        ),
        NftSet(
            _FIREWALL_IPS,
            vmap,
            "verdict",
            elements=firewall_ips,
            comment="destinations that are subject to LoadBalancerSourceRanges",
        ),
        NftSet(
            _SERVICE_IPS,
            vmap,
            "verdict",
            elements=service_ips,
            comment="ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
        NftSet(
            _SERVICE_NODEPORTS,
            "inet_proto . inet_service",
            "verdict",
            elements=service_nodeports,
            comment="NodePort traffic",
        ),
    ]
    sets += affinity_sets
    table = Table(
        family,
        KUBE_PROXY_TABLE,
        "nft",
        common + tuple(service_chains),
        tuple(sets),
        comment="rules for kube-proxy",
    )
    return Ruleset(
        mode="nftables",
        family="IPv6" if ipv6 else "IPv4",
        tables=(table,),
        interfaces=_interfaces(view),
    )


@functools.lru_cache(maxsize=64)
def _common_chains(
    ipv6: bool, mark: int, match_all: bool, cidrs: tuple[str, ...]
) -> tuple[Chain, ...]:
    """The chains ``setupNFTables`` writes (the same objects for the same inputs)."""
    no_localhost = IPMatch("daddr", ("::1",) if ipv6 else ("127.0.0.0/8",), negate=True)
    chains: dict[str, list[Rule]] = {}
    decls: dict[str, Chain] = {}
    for name, ctype, hook, prio in BASE_CHAINS:
        decls[name] = Chain(name, (), ctype, hook, prio)
        chains[name] = []
    for dst, src, guarded in _JUMPS:
        chains.setdefault(dst, [])
        chains[src].append(Rule((_CT_NEW,) if guarded else (), Jump(dst)))
    for name in (_SERVICES, _CLUSTER_IPS_CHECK, _MASQUERADING, _MARK_MASQ):
        chains.setdefault(name, [])
    chains[_MARK_MASQ].append(Rule((MarkSet("or", mark),)))
    chains[_MASQUERADING] += [
        Rule((MarkMatch(0, mark),), Return()),
        Rule((MarkSet("xor", mark),)),
        Rule((), Masquerade(fully_random=True)),
    ]
    chains[_CLUSTER_IPS_CHECK].append(
        Rule(
            (SetMatch(_CLUSTER_IPS, ("daddr",)),),
            Reject(),
            "Reject traffic to invalid ports of ClusterIPs",
        )
    )
    if cidrs:
        chains[_CLUSTER_IPS_CHECK].append(
            Rule((IPMatch("daddr", cidrs),), Drop(), "Drop traffic to unallocated ClusterIPs")
        )
    decls[_REJECT_CHAIN] = Chain(
        _REJECT_CHAIN, comment="helper for @no-endpoint-services / @no-endpoint-nodeports"
    )
    chains[_REJECT_CHAIN] = [Rule((), Reject())]
    chains.setdefault(_SERVICE_ENDPOINTS_CHECK, []).append(
        Rule((), VmapLookup(_NO_ENDPOINT_SERVICES, _DEST))
    )
    if match_all:
        nodeport_match: tuple[Match, ...] = (no_localhost,)
        services_nodeport: tuple[Match, ...] = (AddrTypeMatch("daddr"), no_localhost)
    else:
        nodeport_match = (SetMatch(_NODEPORT_IPS, ("daddr",)),)
        services_nodeport = nodeport_match
    chains.setdefault(_NODEPORT_ENDPOINTS_CHECK, []).append(
        Rule(nodeport_match, VmapLookup(_NO_ENDPOINT_NODEPORTS, _PROTO_PORT))
    )
    chains.setdefault(_FIREWALL_CHECK, []).append(Rule((), VmapLookup(_FIREWALL_IPS, _DEST)))
    chains[_SERVICES] += [
        Rule((), VmapLookup(_SERVICE_IPS, _DEST)),
        Rule(services_nodeport, VmapLookup(_SERVICE_NODEPORTS, _PROTO_PORT)),
    ]
    return tuple(
        attrs.evolve(decls[name], rules=tuple(rules))
        if name in decls
        else Chain(name, tuple(rules))
        for name, rules in chains.items()
    )


def _interfaces(view: NodeView) -> tuple[Interface, ...]:
    """The addresses ``fib ... type local`` treats as the node's own."""
    loopback = "::1" if view.ip_family == "IPv6" else "127.0.0.1"
    # eth0 even without addresses, as in iptables mode: a node with none in
    # this family has nothing for MASQUERADE to take
    return (Interface("lo", (loopback,), kind="loopback"), Interface("eth0", view.node.ips))


#: Fragments of recent compiles, by (service port, context). Equal inputs give
#: equal fragments, so this changes no result; it makes successive compiles of
#: a cluster share the objects of unchanged service ports, as kube-proxy's
#: partial sync leaves unchanged Services alone, which makes recompiling cheap
#: and lets :func:`delta` skip them by identity.
_FRAGMENTS: dict[_Key, _Fragment] = {}
_FRAGMENTS_MAX = 1 << 16


class _Key:
    """(service port, context) with its hash computed once: hashing a service port
    hashes every endpoint, and a miss would hash it twice."""

    __slots__ = ("ctx", "hash", "port")

    def __init__(self, port: ServicePortInfo, ctx: _Context) -> None:
        self.port = port
        self.ctx = ctx
        self.hash = hash((port, ctx))

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Key)
            and self.hash == other.hash
            and self.port == other.port
            and self.ctx == other.ctx
        )


def clear_cache() -> None:
    """Forget the fragments of earlier compiles (results do not change; the next
    compile and :func:`delta` against earlier results are slower)."""
    _FRAGMENTS.clear()
    _common_chains.cache_clear()


def _fragment(port: ServicePortInfo, ctx: _Context) -> _Fragment:
    key = _Key(port, ctx)
    found = _FRAGMENTS.get(key)
    if found is None:
        found = _compile_port(port, ctx)
        if len(_FRAGMENTS) >= _FRAGMENTS_MAX:
            # forget the oldest half (dicts keep insertion order)
            for old in list(_FRAGMENTS)[: _FRAGMENTS_MAX // 2]:
                del _FRAGMENTS[old]
        _FRAGMENTS[key] = found
    return found


def _compile_port(port: ServicePortInfo, ctx: _Context) -> _Fragment:
    """One service port's chains, sets and map elements (``syncProxyRules``' loop body)."""
    spn = port.name
    protocol = port.protocol.lower()
    svc_name = f"{spn.namespace}/{spn.name}/{protocol}/{spn.port}"
    base = hash_and_truncate(svc_name)
    cluster_chain = NFTABLES_CLUSTER_PREFIX + base
    local_chain = NFTABLES_LOCAL_PREFIX + base
    external_chain = NFTABLES_EXTERNAL_PREFIX + base
    fw_chain = NFTABLES_FIREWALL_PREFIX + base
    comment = _comment(str(spn))
    port_text = str(port.port)

    cluster_eps = port.cluster_endpoints
    local_eps = port.local_endpoints
    reachable = port.all_reachable_endpoints
    has_endpoints = port.has_any_endpoints
    uses_cluster_chain = bool(cluster_eps) and port.uses_cluster_endpoints
    uses_local_chain = bool(local_eps) and port.uses_local_endpoints

    internal_chain = cluster_chain
    has_internal = has_endpoints
    if port.internal_policy_local:
        internal_chain = local_chain
        has_internal = has_endpoints and bool(local_eps)
    external_policy_chain = cluster_chain
    has_external = has_endpoints
    if port.external_policy_local:
        external_policy_chain = local_chain
        has_external = has_endpoints and bool(local_eps)
    uses_external_chain = has_endpoints and port.externally_accessible

    # no endpoints anywhere: reject; none for this kind of traffic: drop
    no_ep_verdict: ElementValue = _DROP if has_endpoints else _GOTO_REJECT

    # -- map elements ------------------------------------------------------------------
    elements: list[tuple[int, Element]] = []

    def add(index: int, key: tuple[str, ...], value: ElementValue = None) -> None:
        elements.append((index, (key, value)))

    def no_endpoints(index: int, key: tuple[str, ...]) -> None:
        elements.append((index, (ElementKey(key, comment=comment), no_ep_verdict)))

    cip = port.cluster_ip
    add(_M_CLUSTER_IPS, (cip,))
    if has_internal:
        add(_M_SERVICE_IPS, (cip, protocol, port_text), Goto(internal_chain))
    else:
        no_endpoints(_M_NO_EP_SERVICES, (cip, protocol, port_text))
    external_goto = Goto(external_chain)
    for ip in port.external_ips:
        if has_endpoints:
            add(_M_SERVICE_IPS, (ip, protocol, port_text), external_goto)
        if not has_external:
            no_endpoints(_M_NO_EP_SERVICES, (ip, protocol, port_text))
    vips = port.load_balancer_vips
    uses_fw_chain = bool(vips) and bool(port.load_balancer_source_ranges)
    for ip in vips:
        if has_endpoints:
            add(_M_SERVICE_IPS, (ip, protocol, port_text), external_goto)
        if uses_fw_chain:
            add(_M_FIREWALL_IPS, (ip, protocol, port_text), Goto(fw_chain))
    if not has_external:
        for ip in vips:
            no_endpoints(_M_NO_EP_SERVICES, (ip, protocol, port_text))
    if port.node_port:
        node_port_text = str(port.node_port)
        if has_endpoints:
            add(_M_SERVICE_NODEPORTS, (protocol, node_port_text), external_goto)
        if not has_external:
            no_endpoints(_M_NO_EP_NODEPORTS, (protocol, node_port_text))

    # -- chains ----------------------------------------------------------------------------
    # endpoint chain / affinity set name bases, once per endpoint
    bases = hash_and_truncate_each(
        svc_name + "__", [f"{ep.ip.replace(':', '.')}/{ep.port}" for ep in reachable]
    )
    ep_chains = [NFTABLES_ENDPOINT_PREFIX + base for base in bases]
    affinity = port.client_ip_affinity

    chain_rules: dict[str, list[Rule]] = {}
    if uses_cluster_chain:
        chain_rules[cluster_chain] = []
    if uses_local_chain:
        chain_rules[local_chain] = []
    if uses_external_chain:
        chain_rules[external_chain] = []
    if uses_fw_chain:
        chain_rules[fw_chain] = []

    # internal traffic: masquerade what does not come from a local pod (or everything)
    if has_internal and internal_chain in chain_rules:
        daddr = IPMatch("daddr", (cip,))
        if ctx.mark_masq_all:
            chain_rules[internal_chain].append(Rule((daddr,), _MASQ_JUMP))
        elif ctx.if_not_local:
            chain_rules[internal_chain].append(Rule((daddr, *ctx.if_not_local), _MASQ_JUMP))

    if uses_external_chain:
        rules = chain_rules[external_chain]
        if not port.external_policy_local:
            # non-local endpoints may be on another node: masquerade
            rules.append(Rule((), _MASQ_JUMP))
        else:
            cluster_goto = Goto(cluster_chain)
            if ctx.if_local:
                rules.append(Rule(ctx.if_local, cluster_goto, "short-circuit pod traffic"))
            local_src = AddrTypeMatch("saddr")
            rules.append(Rule((local_src,), _MASQ_JUMP, "masquerade local traffic"))
            rules.append(Rule((local_src,), cluster_goto, "short-circuit local traffic"))
        if has_external:
            rules.append(Rule((), Goto(external_policy_chain)))

    if uses_fw_chain:
        sources = list(port.load_balancer_source_ranges)
        node_ip = ctx.node_ip
        if node_ip is not None and any(
            node_ip in ipaddress.ip_network(cidr, strict=False) for cidr in sources
        ):
            sources += vips
        chain_rules[fw_chain].append(Rule((IPMatch("saddr", sources, negate=True),), Drop()))

    sets: list[NftSet] = []
    if affinity:
        timeout = port.sticky_max_age_seconds
        for base in bases:
            sets.append(
                NftSet(
                    NFTABLES_AFFINITY_PREFIX + base,
                    ctx.addr_type,
                    flags=("dynamic", "timeout"),
                    timeout=timeout,
                )
            )

    if uses_cluster_chain:
        _dispatch(chain_rules[cluster_chain], cluster_eps, reachable, bases, ep_chains, affinity)
    if uses_local_chain:
        _dispatch(chain_rules[local_chain], local_eps, reachable, bases, ep_chains, affinity)

    chains = [Chain(name, tuple(rules)) for name, rules in chain_rules.items()]
    proto_match = _proto_match(protocol)
    for ep, base, ep_chain in zip(reachable, bases, ep_chains, strict=True):
        ip = ep.ip
        masq = Rule((IPMatch("saddr", (ip,)),), _MASQ_JUMP)
        dnat = Rule(proto_match, DNAT(ip, ep.port))
        if affinity:
            update = Rule((SetUpdate(NFTABLES_AFFINITY_PREFIX + base, ("saddr",)),))
            chains.append(Chain(ep_chain, (masq, update, dnat)))
        else:
            chains.append(Chain(ep_chain, (masq, dnat)))
    return _Fragment(tuple(chains), tuple(sets), tuple(elements))


_PROTO_MATCHES: dict[str, tuple[ProtoMatch]] = {}


def _proto_match(protocol: str) -> tuple[ProtoMatch]:
    """``(ProtoMatch((protocol,)),)``, one shared (immutable) tuple per protocol."""
    found = _PROTO_MATCHES.get(protocol)
    if found is None:
        found = _PROTO_MATCHES[protocol] = (ProtoMatch((protocol,)),)
    return found


def _dispatch(
    rules: list[Rule],
    endpoints: Sequence[EndpointInfo],
    reachable: Sequence[EndpointInfo],
    reachable_bases: list[str],
    reachable_chains: list[str],
    affinity: bool,
) -> None:
    """``writeServiceToEndpointRules``: affinity lookups, then the random pick.

    ``reachable_bases`` / ``reachable_chains`` are the name bases and endpoint
    chains of ``reachable`` (the port's ``all_reachable_endpoints``, which
    ``endpoints`` often is); other endpoints are found there by address and port.
    """
    if endpoints is reachable:
        bases, targets = reachable_bases, reachable_chains
    else:
        index = {(ep.ip, ep.port): i for i, ep in enumerate(reachable)}
        found = [index[ep.ip, ep.port] for ep in endpoints]
        bases = [reachable_bases[i] for i in found]
        targets = [reachable_chains[i] for i in found]
    if affinity:
        for base, target in zip(bases, targets, strict=True):
            aff = NFTABLES_AFFINITY_PREFIX + base
            rules.append(Rule((SetMatch(aff, ("saddr",)),), Goto(target)))
    mapping = tuple(zip(range(len(targets)), map(Goto, targets), strict=True))
    rules.append(Rule((), NumgenVmap(len(targets), mapping)))


# ------------------------------------------------------------------------------- delta
Verb: TypeAlias = Literal["add", "flush", "delete"]
Kind: TypeAlias = Literal["table", "chain", "set", "map", "rule", "element"]


@attrs.frozen
class Operation:
    """One command of an nft transaction (knftables counts each as one operation).

    ``obj`` is what the command carries: the :class:`Table` (declaration only)
    for tables, the :class:`Chain` declaration for ``add chain``, the
    :class:`NftSet` declaration for ``add set``/``add map``, the :class:`Rule`
    for ``add rule``, the ``(key, value)`` element for ``add element`` and the
    key for ``delete element``; None for flush and delete of containers.
    ``name`` is the chain or set the command is about.
    """

    verb: Verb
    kind: Kind
    family: str
    table: str
    name: str = ""
    obj: Table | Chain | NftSet | Rule | Element | tuple[str, ...] | None = None


@attrs.frozen
class Transaction:
    """An nft transaction: its :class:`Operation` list and the ``nft -f`` text."""

    operations: tuple[Operation, ...]
    text: str

    def __len__(self) -> int:
        return len(self.operations)

    def __str__(self) -> str:
        return self.text

    @property
    def is_empty(self) -> bool:
        return not self.operations


def _references(chain: Chain) -> Iterator[str]:
    """Every chain and set a chain's rules name (jump/goto targets, @sets, @maps)."""
    for rule in chain.rules:
        for e in rule.exprs:
            if isinstance(e, SetMatch | SetUpdate):
                yield e.set_name
        v = rule.verdict
        if isinstance(v, Jump | Goto):
            yield v.chain
        elif isinstance(v, VmapLookup):
            yield v.map_name
        elif isinstance(v, NumgenVmap):
            for _, target in v.mapping:
                yield target.chain


def _same_element(a: Element, b: Element) -> bool:
    return a[1] == b[1] and element_options(a[0]) == element_options(b[0])


def _common_prefix(a: Sequence[_T], b: Sequence[_T], limit: int) -> int:
    """How many leading items of ``a`` and ``b`` (at most ``limit``) are the same objects.

    Galloping: blocks of doubling size are checked with C-level identity tests,
    and the first block that differs is bisected; the work is about twice the
    length of the common prefix.
    """
    same = operator.is_
    i, step = 0, 64
    while i < limit:
        j = min(i + step, limit)
        if all(map(same, a[i:j], b[i:j])):
            i, step = j, step * 2
            continue
        lo, hi = i, j - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if all(map(same, a[i:mid], b[i:mid])):
                lo = mid
            else:
                hi = mid - 1
        return lo
    return limit


def _common_suffix(a: Sequence[_T], b: Sequence[_T], limit: int) -> int:
    """:func:`_common_prefix` from the ends."""
    same = operator.is_
    na, nb = len(a), len(b)
    i, step = 0, 64
    while i < limit:
        j = min(i + step, limit)
        if all(map(same, a[na - j : na - i], b[nb - j : nb - i])):
            i, step = j, step * 2
            continue
        lo, hi = i, j - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if all(map(same, a[na - mid : na - i], b[nb - mid : nb - i])):
                lo = mid
            else:
                hi = mid - 1
        return lo
    return limit


def _changed(a: Sequence[_T], b: Sequence[_T]) -> tuple[list[_T], list[_T]]:
    """The items of ``a`` not in ``b`` and of ``b`` not in ``a``, by identity.

    Successive compiles keep their order and share the objects of unchanged
    service ports, so the common prefix and suffix are found by bisection
    (C-level identity checks) and only the middle is compared item by item.
    """
    if a is b:
        return [], []
    limit = min(len(a), len(b))
    head = _common_prefix(a, b, limit)
    tail = _common_suffix(a, b, limit - head)
    a_mid = a[head : len(a) - tail]
    b_mid = b[head : len(b) - tail]
    a_ids = set(map(id, a_mid))
    b_ids = set(map(id, b_mid))
    return [x for x in a_mid if id(x) not in b_ids], [x for x in b_mid if id(x) not in a_ids]


def _chain_decl_key(c: Chain) -> tuple[object, ...]:
    return (c.type, c.hook, c.priority, c.policy, c.comment)


def _set_decl_key(s: NftSet) -> tuple[object, ...]:
    return (s.key_type, s.value_type, s.flags, s.timeout, s.comment)


def _set_decl(s: NftSet) -> NftSet:
    return attrs.evolve(s, elements=())


def _chain_decl(c: Chain) -> Chain:
    return attrs.evolve(c, rules=())


def delta(old: Ruleset, new: Ruleset, *, defer_stale_chains: bool = False) -> Transaction:
    """The nft transaction that turns ``old`` into ``new`` (kube-proxy's partial sync).

    Only what differs is touched, per table:

    * a chain whose rules changed: ``add chain`` + ``flush chain`` + its rules
      (upstream's ``ensureChain``); a new chain: ``add chain`` + its rules;
    * a chain gone from ``new``: ``flush chain`` then ``delete chain`` (with
      ``defer_stale_chains`` only the flush, as kube-proxy does until the
      kernel has dropped the last map reference; applying the result then
      leaves those chains empty);
    * set and map elements: ``delete element`` for keys gone or whose value
      (or comment) changed, ``add element`` for keys new or changed;
    * a new set or map: ``add`` with its elements; one gone: ``delete``;
    * a chain or set whose declaration changed (type, hook, priority, flags,
      timeout, comment) is deleted and made again, and so is everything that
      refers to it.

    Commands are ordered so that nft accepts the transaction: flushes, then
    element deletions, then deletions of chains and sets (nothing refers to
    them any more), then additions of chains and sets, rules, elements. A
    table only in ``new`` is created whole; one only in ``old`` is deleted.
    """
    with gc_paused():
        return _delta(old, new, defer_stale_chains)


def _delta(old: Ruleset, new: Ruleset, defer_stale_chains: bool) -> Transaction:
    ops: list[Operation] = []
    lines: list[str] = []
    old_tables = {(t.family, t.name): t for t in old.tables}
    new_tables = {(t.family, t.name): t for t in new.tables}
    for key, table in old_tables.items():
        if key not in new_tables:
            ops.append(Operation("delete", "table", table.family, table.name, obj=None))
            lines.append(f"delete table {table.family} {table.name}")
    for key, table in new_tables.items():
        before = old_tables.get(key)
        if before is not None and before.comment != table.comment:
            ops.append(Operation("delete", "table", table.family, table.name))
            lines.append(f"delete table {table.family} {table.name}")
            before = None
        if before is None:
            _create_table(table, ops, lines)
        else:
            _table_delta(before, table, defer_stale_chains, ops, lines)
    return Transaction(tuple(ops), "".join(line + "\n" for line in lines))


def _create_table(table: Table, ops: list[Operation], lines: list[str]) -> None:
    fam, name = table.family, table.name
    ops.append(Operation("add", "table", fam, name, name, attrs.evolve(table, chains=(), sets=())))
    for c in table.chains:
        ops.append(Operation("add", "chain", fam, name, c.name, _chain_decl(c)))
    for s in table.sets:
        ops.append(Operation("add", "map" if s.is_map else "set", fam, name, s.name, _set_decl(s)))
    for c in table.chains:
        ops.extend(Operation("add", "rule", fam, name, c.name, r) for r in c.rules)
    for s in table.sets:
        ops.extend(Operation("add", "element", fam, name, s.name, e) for e in s.elements)
    lines.extend(render_script(Ruleset("nftables", tables=(table,))).splitlines())


def _table_delta(
    old: Table,
    new: Table,
    defer_stale_chains: bool,
    ops: list[Operation],
    lines: list[str],
) -> None:
    fam, tname = old.family, old.name
    prefix = f"{fam} {tname}"
    # Successive compiles share the objects of what did not change, so only the
    # objects not found (by identity) on the other side are looked at by name.
    old_only, new_only = _changed(old.chains, new.chains)
    old_chains = {c.name: c for c in old_only}
    new_chains = {c.name: c for c in new_only}
    old_sets = {s.name: s for s in old.sets}
    new_sets = {s.name: s for s in new.sets}

    # objects that must be made again: declaration changed
    remade_chains: set[str] = set()
    refill: list[str] = []  # existing chains whose rules are written again
    for n, c in new_chains.items():
        o = old_chains.get(n)
        if o is None:
            continue
        if _chain_decl_key(o) != _chain_decl_key(c):
            remade_chains.add(n)
            refill.append(n)
        elif o.rules != c.rules:
            refill.append(n)
    remade_sets = {
        n
        for n, s in new_sets.items()
        if n in old_sets and old_sets[n] is not s and _set_decl_key(old_sets[n]) != _set_decl_key(s)
    }
    gone_chains = [n for n in old_chains if n not in new_chains]
    gone_sets = [n for n in old_sets if n not in new_sets]
    # A chain or set deleted here must not be referred to any more. References to
    # objects gone from `new` can only come from chains and elements that change
    # anyway (`new` refers to nothing it lacks); objects made again are referred
    # to by unchanged chains and elements too, which are written again.
    remade = remade_chains | remade_sets
    every_new_chain = {c.name: c for c in new.chains} if remade else new_chains
    if remade:
        refilled = set(refill)
        for o in old.chains:
            n = o.name
            if (
                n not in refilled
                and n in every_new_chain
                and any(r in remade for r in _references(o))
            ):
                refill.append(n)
                refilled.add(n)
    flush = set(refill) | {n for n in gone_chains if old_chains[n].rules}

    # -- 1. flush -------------------------------------------------------------------------
    flush_order = [c.name for c in old_only if c.name in flush]
    flush_order += [n for n in refill if n not in old_chains]
    for n in flush_order:
        if n in every_new_chain and n not in remade_chains:
            # upstream's ensureChain: add (a no-op) then flush
            c = every_new_chain[n]
            ops.append(Operation("add", "chain", fam, tname, n, _chain_decl(c)))
            lines.append(_chain_add_line(prefix, c))
        ops.append(Operation("flush", "chain", fam, tname, n))
        lines.append(f"flush chain {prefix} {n}")

    # -- 2. element deletions ---------------------------------------------------------------
    adds: dict[str, list[Element]] = {}
    for n, s in new_sets.items():
        was = old_sets.get(n)
        if was is None or n in remade_sets:
            adds[n] = list(s.elements)
            continue
        if was.elements is s.elements:
            continue
        old_els, new_els = _changed(was.elements, s.elements)
        if remade_chains:
            # elements pointing at a chain made again are written again
            old_els += [el for el in was.elements if _value_dropped(el, remade_chains)]
            new_els += [el for el in s.elements if _value_dropped(el, remade_chains)]
        if not (old_els or new_els):
            continue
        before = {tuple(el[0]): el for el in old_els}
        after = {tuple(el[0]): el for el in new_els}
        added: list[Element] = []
        for k, el in before.items():
            now = after.get(k)
            if (
                now is not None
                and _same_element(el, now)
                and not (remade_chains and _value_dropped(el, remade_chains))
            ):
                continue
            ops.append(Operation("delete", "element", fam, tname, n, k))
            lines.append(f"delete element {prefix} {n} {{ {' . '.join(k)} }}")
            if now is not None:
                added.append(now)
        added += [el for k, el in after.items() if k not in before]
        if added:
            adds[n] = added

    # -- 3. deletions of chains and sets ------------------------------------------------------
    if not defer_stale_chains:
        for n in gone_chains:
            ops.append(Operation("delete", "chain", fam, tname, n))
            lines.append(f"delete chain {prefix} {n}")
    for n in remade_chains:
        ops.append(Operation("delete", "chain", fam, tname, n))
        lines.append(f"delete chain {prefix} {n}")
    for n in gone_sets + sorted(remade_sets):
        s = old_sets[n]
        ops.append(Operation("delete", _set_kind(s), fam, tname, n))
        lines.append(f"delete {_set_kind(s)} {prefix} {n}")

    # -- 4.-6. additions: chains and sets, rules, elements ---------------------------------
    add_chains = [c for n, c in new_chains.items() if n not in old_chains or n in remade_chains]
    add_sets = [s for n, s in new_sets.items() if n not in old_sets or n in remade_sets]
    rule_chains = add_chains + [every_new_chain[n] for n in refill if n not in remade_chains]
    fill_sets = [attrs.evolve(new_sets[n], elements=tuple(els)) for n, els in adds.items() if els]
    if not (rule_chains or add_sets or fill_sets):
        return
    # The text of the additions comes from the renderer: a partial table holding
    # the chains to (re)fill and the sets with only the elements to add (every
    # other set declared too, so rules referring to them render); its
    # declaration lines are kept only for what is new.
    declared = {c.name for c in add_chains} | {s.name for s in add_sets}
    fill_names = {s.name for s in fill_sets}
    partial_sets = fill_sets + [_set_decl(s) for s in add_sets if s.name not in fill_names]
    known = {s.name for s in partial_sets}
    partial_sets += [_set_decl(s) for s in new.sets if s.name not in known]
    for c in add_chains:
        # upstream's ensureChain: add, then flush (a no-op on a new chain)
        ops.append(Operation("add", "chain", fam, tname, c.name, _chain_decl(c)))
        ops.append(Operation("flush", "chain", fam, tname, c.name))
    for s in partial_sets:
        if s.name in declared:
            ops.append(Operation("add", _set_kind(s), fam, tname, s.name, _set_decl(s)))
    for c in rule_chains:
        ops.extend(Operation("add", "rule", fam, tname, c.name, r) for r in c.rules)
    for s in fill_sets:
        ops.extend(Operation("add", "element", fam, tname, s.name, e) for e in s.elements)
    partial = attrs.evolve(new, chains=tuple(rule_chains), sets=tuple(partial_sets))
    for line in render_script(Ruleset("nftables", tables=(partial,))).splitlines():
        kind, _, rest = line[4:].partition(" ")
        if kind == "table":
            continue
        if kind in ("chain", "set", "map"):
            name = rest[len(prefix) + 1 :].split(" ", 1)[0]
            if name in declared:
                lines.append(line)
                if kind == "chain":
                    lines.append(f"flush chain {prefix} {name}")
            continue
        lines.append(line)


def _chain_add_line(prefix: str, chain: Chain) -> str:
    if chain.hook is None and chain.comment is None:
        return f"add chain {prefix} {chain.name}"
    fam, tname = prefix.split(" ")
    table = Table(fam, tname, "nft", (_chain_decl(chain),))
    text = render_script(Ruleset("nftables", tables=(table,)))
    return next(line for line in text.splitlines() if line.startswith("add chain "))


def _set_kind(s: NftSet) -> Literal["set", "map"]:
    return "map" if s.is_map else "set"


def _value_dropped(el: Element, dropped: set[str]) -> bool:
    value = el[1]
    return isinstance(value, Jump | Goto) and value.chain in dropped
