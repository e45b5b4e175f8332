"""The iptables-mode compiler: exactly the rules kube-proxy programs on one node.

:func:`compile` turns a :class:`~kservice.proxy.nodeview.NodeView` (one node,
one IP family) into the :class:`~kservice.netfilter.ruleset.Ruleset` kube-proxy's
iptables proxier leaves in the kernel after a full sync. It is pure: the same
view (and host) always gives an equal Ruleset.

Facts carried over from kubernetes/kubernetes ``pkg/proxy/iptables/proxier.go``
(``syncProxyRules``, ``writeServiceToEndpointRules``, ``iptablesJumpChains``) and
checked against the expected dumps of ``proxier_test.go``:

What kube-proxy writes with ``iptables-restore`` (``restore_only=True`` gives
exactly this):

* ``filter`` declares ``KUBE-SERVICES``, ``KUBE-EXTERNAL-SERVICES``,
  ``KUBE-FORWARD``, ``KUBE-NODEPORTS``, ``KUBE-PROXY-FIREWALL`` (and
  ``KUBE-FIREWALL`` with IPv4 localhost NodePorts); ``nat`` declares
  ``KUBE-SERVICES``, ``KUBE-NODEPORTS``, ``KUBE-POSTROUTING``, ``KUBE-MARK-MASQ``
  and the per-service chains ``KUBE-SVC-`` (Cluster policy), ``KUBE-SVL-``
  (Local policy), ``KUBE-EXT-`` (external destinations), ``KUBE-FW-``
  (loadBalancerSourceRanges) and ``KUBE-SEP-`` (one per endpoint).
* ``KUBE-POSTROUTING``: ``-m mark ! --mark M/M -j RETURN``, ``-j MARK --xor-mark
  M``, ``"kubernetes service traffic requiring SNAT" -j MASQUERADE`` (with
  ``--random-fully`` when iptables supports it). ``KUBE-MARK-MASQ``: ``-j MARK
  --or-mark M``; ``M`` is ``1 << masqueradeBit``.
* Per service port, in this order: the ClusterIP rule in ``nat KUBE-SERVICES``
  (``"ns/svc:port cluster IP"`` to the internal policy chain), or, without
  usable endpoints, a ``filter KUBE-SERVICES`` rule (``REJECT`` with "has no
  endpoints", ``DROP`` with "has no local endpoints" for
  internalTrafficPolicy Local); an ``"external IP"`` rule per externalIP (to
  ``KUBE-EXT``) and a ``"loadbalancer IP"`` rule per load-balancer VIP (to
  ``KUBE-FW`` when source ranges are set, else ``KUBE-EXT``), with
  ``filter KUBE-EXTERNAL-SERVICES`` REJECT/DROP rules when there are no
  endpoints for external traffic, and a ``KUBE-PROXY-FIREWALL`` DROP per VIP
  behind a firewall; the NodePort rule in ``nat KUBE-NODEPORTS`` (plus a
  ``-d 127.0.0.0/8 ... -m nfacct`` copy when the localhost NodePort counter
  exists) or the ``-m addrtype --dst-type LOCAL`` REJECT/DROP in
  ``KUBE-EXTERNAL-SERVICES``; the healthCheckNodePort ``ACCEPT`` in
  ``filter KUBE-NODEPORTS``.
* The internal policy chain starts with the masquerade rule for off-cluster
  sources (``! -s <clusterCIDR>`` from the local-traffic detector, or
  unconditional with ``masqueradeAll``). ``KUBE-EXT`` masquerades everything
  for externalTrafficPolicy Cluster; for Local it sends pod traffic
  (``"pod traffic for ... external destinations"``) and node-local traffic
  (``-m addrtype --src-type LOCAL``, masqueraded first) to ``KUBE-SVC`` and the
  rest to ``KUBE-SVL``. ``KUBE-FW`` jumps to ``KUBE-EXT`` per source range (and
  per VIP when a range holds the node IP) and ends with a rule that only
  carries the comment "other traffic to ... will be dropped by
  KUBE-PROXY-FIREWALL".
* ``KUBE-SVC``/``KUBE-SVL``: with ClientIP affinity, first one ``-m recent
  --name KUBE-SEP-X --rcheck --seconds T --reap`` rule per endpoint; then one
  rule per endpoint, all but the last with ``-m statistic --mode random
  --probability`` 1/(n-i), printed ``%0.10f`` (:func:`compute_probability`).
  ``KUBE-SEP``: ``-s <endpoint IP> -j KUBE-MARK-MASQ`` (hairpin), then
  ``[-m recent --name KUBE-SEP-X --set] -m proto -p proto -j DNAT``.
* Comments are ``ns/svc:port`` (``ns/svc`` for an unnamed port). With more than
  1000 endpoints in total ("large cluster mode") the SVC-to-SEP and SEP rules
  carry no comment at all.
* The last rule of ``nat KUBE-SERVICES`` jumps to ``KUBE-NODEPORTS``: ``-m
  addrtype --dst-type LOCAL`` (``! -d ::1/128`` for IPv6, ``! -d 127.0.0.0/8``
  without localhost NodePorts) when nodePortAddresses match everything, else
  one ``-d <node IP>`` rule per node address inside them (loopback addresses
  only for IPv4 with localhost NodePorts). kube-proxy reads those addresses
  from the host's interfaces; kservice takes them to be the loopback address
  (``127.0.0.1`` / ``::1``) then the view's node IPs.
* ``filter KUBE-FORWARD``: ``--ctstate INVALID -j DROP`` (unless
  ``nf_conntrack_tcp_be_liberal`` is set), the masquerade-mark ACCEPT and the
  RELATED,ESTABLISHED ACCEPT. ``KUBE-FIREWALL`` (IPv4 with localhost NodePorts):
  the ``"block incoming localnet connections"`` DROP.

What kube-proxy ensures with separate ``iptables`` calls (added unless
``restore_only``), modelled as rules of the built-in chains and empty chains:

* the jumps of ``iptablesJumpChains`` then ``iptablesKubeletJumpChains``, each
  ``EnsureRule(Prepend, ...)`` (so the last one ensured ends up first) into
  chains that were empty: ``filter INPUT`` gets ``KUBE-FIREWALL``,
  ``KUBE-PROXY-FIREWALL``, ``KUBE-NODEPORTS``, ``KUBE-EXTERNAL-SERVICES``;
  ``FORWARD`` gets ``KUBE-PROXY-FIREWALL``, ``KUBE-FORWARD``,
  ``KUBE-SERVICES``, ``KUBE-EXTERNAL-SERVICES``; ``OUTPUT`` gets
  ``KUBE-FIREWALL``, ``KUBE-PROXY-FIREWALL``, ``KUBE-SERVICES``; ``nat
  PREROUTING`` and ``OUTPUT`` jump to ``KUBE-SERVICES`` ("kubernetes service
  portals"), ``nat POSTROUTING`` to ``KUBE-POSTROUTING``. The filter jumps
  carry ``-m conntrack --ctstate NEW`` except the health-check and forwarding
  ones. (On a real node kubelet usually ensured its ``KUBE-FIREWALL`` jumps
  first, so they sit last; kube-proxy never moves an existing rule.)
* ``KUBE-FIREWALL`` always exists in ``filter`` (an ensured chain, empty when
  kube-proxy writes no rule to it); ``KUBE-PROXY-CANARY`` exists, empty, in
  ``mangle``, ``nat`` and ``filter`` (``iptables.Monitor``). kubelet's own
  ``KUBE-KUBELET-CANARY`` is not kube-proxy's and is left out.

Host facts kube-proxy probes at start-up rather than reads from its
configuration are an :class:`IptablesHost`. Chains are ordered as upstream's
tests sort dumps (``KUBE-NODEPORTS``, ``KUBE-SERVICES``, other ``KUBE-`` chains
by name, then built-in chains by name), so :func:`render_restore` of a
``restore_only`` Ruleset prints upstream's expected text. kube-proxy's own
restore input interleaves rules of different chains and spells the mark
``0x00004000`` (``%#08x``); both change nothing the kernel holds.

Not modelled, because a compiler sees one view and no previous state: partial
syncs (kube-proxy rewrites only changed Services' chains between full syncs)
and the ``-X`` lines that delete stale chains left by a previous sync.

Comments longer than iptables' 255-byte limit are cut to 255 bytes, which is
what the kernel keeps (libxtables truncates silently). Valid Kubernetes names
never get there: the longest comment is under 200 characters.
"""

from __future__ import annotations

import ipaddress
import operator
from collections.abc import Iterable, Sequence
from typing import Final, TypeAlias

import attrs

from kservice._gc import gc_paused
from kservice.netfilter.ruleset import (
    DNAT,
    Accept,
    AddrTypeMatch,
    Chain,
    CtStateMatch,
    Drop,
    IfaceMatch,
    Interface,
    IPMatch,
    Jump,
    MarkMatch,
    MarkSet,
    Masquerade,
    Match,
    PortMatch,
    ProtoMatch,
    RawMatch,
    RecentMatch,
    Reject,
    Return,
    Rule,
    Ruleset,
    Statement,
    StatisticMatch,
    Table,
    Verdict,
)
from kservice.proxy.naming import (
    IPTABLES_EXTERNAL_PREFIX,
    IPTABLES_FIREWALL_PREFIX,
    IPTABLES_LOCAL_PREFIX,
    IPTABLES_SEP_PREFIX,
    IPTABLES_SVC_PREFIX,
    hash16,
    hash16_each,
)
from kservice.proxy.nodeview import EndpointInfo, LocalTrafficDetector, NodeView, ServicePortInfo

__all__ = [
    "KUBE_EXTERNAL_SERVICES",
    "KUBE_FIREWALL",
    "KUBE_FORWARD",
    "KUBE_MARK_MASQ",
    "KUBE_NODEPORTS",
    "KUBE_POSTROUTING",
    "KUBE_PROXY_CANARY",
    "KUBE_PROXY_FIREWALL",
    "KUBE_SERVICES",
    "LARGE_CLUSTER_ENDPOINTS_THRESHOLD",
    "MAX_COMMENT_BYTES",
    "NFACCT_CT_STATE_INVALID_DROPPED",
    "NFACCT_LOCALHOST_NODEPORTS_ACCEPTED",
    "IptablesHost",
    "compile",
    "compute_probability",
]

Expr: TypeAlias = Match | Statement

# -- kube-proxy's fixed chains ------------------------------------------------------
KUBE_SERVICES: Final = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES: Final = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS: Final = "KUBE-NODEPORTS"
KUBE_POSTROUTING: Final = "KUBE-POSTROUTING"
KUBE_MARK_MASQ: Final = "KUBE-MARK-MASQ"
KUBE_FORWARD: Final = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL: Final = "KUBE-PROXY-FIREWALL"
KUBE_PROXY_CANARY: Final = "KUBE-PROXY-CANARY"
#: kubelet's anti-martian chain, which kube-proxy duplicates (``kubeletFirewallChain``).
KUBE_FIREWALL: Final = "KUBE-FIREWALL"

#: ``largeClusterEndpointsThreshold``: above this many endpoints, no per-endpoint comments.
LARGE_CLUSTER_ENDPOINTS_THRESHOLD: Final = 1000
#: ``metrics.IPTablesCTStateInvalidDroppedNFAcctCounter``.
NFACCT_CT_STATE_INVALID_DROPPED: Final = "ct_state_invalid_dropped_pkts"
#: ``metrics.LocalhostNodePortAcceptedNFAcctCounter``.
NFACCT_LOCALHOST_NODEPORTS_ACCEPTED: Final = "localhost_nps_accepted_pkts"
#: ``XT_MAX_COMMENT_LEN`` - 1: what the kernel keeps of a comment.
MAX_COMMENT_BYTES: Final = 255


@attrs.frozen
class IptablesHost:
    """What kube-proxy finds out about the host at start-up (not configuration).

    ``random_fully``: iptables supports ``MASQUERADE --random-fully``
    (``HasRandomFully``; every iptables since 1.6.2). ``nfacct``: the nfacct
    counters could be created, so kube-proxy adds ``-m nfacct`` to the INVALID
    drop and to localhost NodePort rules. ``tcp_be_liberal``: the sysctl
    ``net.netfilter.nf_conntrack_tcp_be_liberal`` is non-zero, so no INVALID
    drop rule is written. Upstream's unit tests run with ``random_fully=False``
    (and, since nfacct support, ``nfacct=True``).
    """

    random_fully: bool = True
    nfacct: bool = False
    tcp_be_liberal: bool = False


_DEFAULT_HOST: Final = IptablesHost()

# -- probabilities ------------------------------------------------------------------
# kube-proxy precomputes the first ones too (``precomputeProbabilities``); a
# read-only table also keeps compile() safe to call from several threads.
_PRECOMPUTED: Final = 1000
_PROBABILITIES: Final = ("<bad value>", *(f"{1.0 / n:.10f}" for n in range(1, _PRECOMPUTED + 1)))


def compute_probability(n: int) -> str:
    """``computeProbability``: ``fmt.Sprintf("%0.10f", 1.0/float64(n))``.

    Go and Python both round the exact binary value half-to-even, so the text
    is identical (``0.3333333333``, ``0.0000099999`` for 100001).
    """
    if n < 1:
        raise ValueError(f"probability of 1/{n}")
    if n <= _PRECOMPUTED:
        return _PROBABILITIES[n]
    return f"{1.0 / n:.10f}"


_STATISTIC: dict[int, StatisticMatch] = {}


def _statistic(n: int) -> StatisticMatch:
    """The (shared, immutable) ``-m statistic`` match for 1/n."""
    match = _STATISTIC.get(n)
    if match is None:
        text = compute_probability(n)
        match = StatisticMatch(float(text), text)
        if n <= _PRECOMPUTED:
            _STATISTIC[n] = match  # a race only stores an equal object twice
    return match


# -- chain names --------------------------------------------------------------------
# -- shared immutable pieces --------------------------------------------------------
_JUMP_MARK_MASQ: Final = Jump(KUBE_MARK_MASQ)
_JUMP_NODEPORTS: Final = Jump(KUBE_NODEPORTS)
_SRC_LOCAL: Final = AddrTypeMatch("saddr", "LOCAL")
_DST_LOCAL: Final = AddrTypeMatch("daddr", "LOCAL")
_ACCEPT: Final = Accept()
_DROP: Final = Drop()
_REJECT: Final = Reject()
_LOCALNET: Final = "127.0.0.0/8"
_NEW: Final = CtStateMatch(("NEW",))
_PROTO: dict[str, ProtoMatch] = {}
# The model has no nfacct match: it only counts, so it stays raw text (always matches).
_NFACCT_LOCALHOST: Final = RawMatch(
    f"-m nfacct --nfacct-name {NFACCT_LOCALHOST_NODEPORTS_ACCEPTED}"
)
_NFACCT_INVALID: Final = RawMatch(f"-m nfacct --nfacct-name {NFACCT_CT_STATE_INVALID_DROPPED}")
_NODEPORTS_COMMENT: Final = (
    "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
)


def _proto(name: str) -> ProtoMatch:
    match = _PROTO.get(name)
    if match is None:
        match = _PROTO[name] = ProtoMatch((name,))
    return match


def _comment(text: str) -> str:
    """The comment as the kernel keeps it: at most 255 bytes (never hit by valid names)."""
    if len(text) <= MAX_COMMENT_BYTES and text.isascii():  # fast path: one byte each
        return text
    raw = text.encode("utf-8")
    if len(raw) <= MAX_COMMENT_BYTES:
        return text
    return raw[:MAX_COMMENT_BYTES].decode("utf-8", errors="ignore")


def _detector(det: LocalTrafficDetector) -> tuple[tuple[Match, ...], tuple[Match, ...]] | None:
    """``(IfLocal, IfNotLocal)`` matches of the local-traffic detector; None if no-op."""
    if det.cidr:
        return (IPMatch("saddr", (det.cidr,)),), (IPMatch("saddr", (det.cidr,), negate=True),)
    if det.interface_name:
        name = det.interface_name
        return (IfaceMatch("iif", name),), (IfaceMatch("iif", name, negate=True),)
    if det.interface_prefix:
        name = det.interface_prefix + "+"
        return (IfaceMatch("iif", name),), (IfaceMatch("iif", name, negate=True),)
    return None


# (table, target chain, built-in chain, comment, ``-m conntrack --ctstate NEW``):
# iptablesJumpChains then iptablesKubeletJumpChains, in kube-proxy's order.
_JUMP_CHAINS: Final = (
    (
        "filter",
        KUBE_EXTERNAL_SERVICES,
        "INPUT",
        "kubernetes externally-visible service portals",
        True,
    ),
    (
        "filter",
        KUBE_EXTERNAL_SERVICES,
        "FORWARD",
        "kubernetes externally-visible service portals",
        True,
    ),
    ("filter", KUBE_NODEPORTS, "INPUT", "kubernetes health check service ports", False),
    ("filter", KUBE_SERVICES, "FORWARD", "kubernetes service portals", True),
    ("filter", KUBE_SERVICES, "OUTPUT", "kubernetes service portals", True),
    ("filter", KUBE_FORWARD, "FORWARD", "kubernetes forwarding rules", False),
    ("filter", KUBE_PROXY_FIREWALL, "INPUT", "kubernetes load balancer firewall", True),
    ("filter", KUBE_PROXY_FIREWALL, "OUTPUT", "kubernetes load balancer firewall", True),
    ("filter", KUBE_PROXY_FIREWALL, "FORWARD", "kubernetes load balancer firewall", True),
    ("nat", KUBE_SERVICES, "OUTPUT", "kubernetes service portals", False),
    ("nat", KUBE_SERVICES, "PREROUTING", "kubernetes service portals", False),
    ("nat", KUBE_POSTROUTING, "POSTROUTING", "kubernetes postrouting rules", False),
    ("filter", KUBE_FIREWALL, "INPUT", None, False),
    ("filter", KUBE_FIREWALL, "OUTPUT", None, False),
)


def _ensured_jumps() -> dict[tuple[str, str], list[Rule]]:
    """The built-in chains' rules after each ``EnsureRule(Prepend, ...)`` on empty chains."""
    out: dict[tuple[str, str], list[Rule]] = {}
    for table, target, builtin, comment, new_only in _JUMP_CHAINS:
        rule = Rule((_NEW,) if new_only else (), Jump(target), comment)
        out.setdefault((table, builtin), []).insert(0, rule)
    return out


_ENSURED: Final = _ensured_jumps()


# -- one service port ---------------------------------------------------------------
class _Out:
    """The chains being filled; per-service chains are collected in emission order."""

    __slots__ = (
        "f_external",
        "f_fw",
        "f_nodeports",
        "f_services",
        "large",
        "n_nodeports",
        "n_services",
        "nat_chains",
    )

    def __init__(self, large: bool) -> None:
        self.large = large
        self.f_services: list[Rule] = []
        self.f_external: list[Rule] = []
        self.f_nodeports: list[Rule] = []
        self.f_fw: list[Rule] = []
        self.n_services: list[Rule] = []
        self.n_nodeports: list[Rule] = []
        self.nat_chains: list[Chain] = []


class _Ctx:
    """Per-compile constants the per-service code reads."""

    __slots__ = ("detector", "localhost_nodeports", "masquerade_all", "nfacct", "node_ip")

    def __init__(
        self,
        detector: tuple[tuple[Match, ...], tuple[Match, ...]] | None,
        masquerade_all: bool,
        localhost_nodeports: bool,
        nfacct: bool,
        node_ip: str | None,
    ) -> None:
        self.detector = detector
        self.masquerade_all = masquerade_all
        self.localhost_nodeports = localhost_nodeports
        self.nfacct = nfacct
        self.node_ip = node_ip


def _contains(cidr: str, ip: str | None) -> bool:
    """``IPNet.Contains``: whether ``ip`` (None: no node IP) is inside ``cidr``."""
    if ip is None:
        return False
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _service_port(p: ServicePortInfo, ctx: _Ctx, out: _Out) -> None:
    """``syncProxyRules``' loop body for one service port."""
    name = str(p.name)
    proto = p.protocol.lower()
    chain_hash = hash16(name + proto)
    svc_chain = IPTABLES_SVC_PREFIX + chain_hash
    svl_chain = IPTABLES_LOCAL_PREFIX + chain_hash
    ext_chain = IPTABLES_EXTERNAL_PREFIX + chain_hash
    fw_chain = IPTABLES_FIREWALL_PREFIX + chain_hash
    proto_match = _proto(proto)
    dport = PortMatch("dport", ((p.port, p.port),))

    cluster_eps = p.cluster_endpoints
    local_eps = p.local_endpoints
    has_endpoints = p.has_any_endpoints
    uses_cluster_chain = bool(cluster_eps)  # the view leaves it empty when unused
    uses_local_chain = bool(local_eps)
    internal_local = p.internal_policy_local
    external_local = p.external_policy_local
    accessible = bool(p.node_port or p.load_balancer_vips or p.external_ips)

    internal_chain = svc_chain
    has_internal = has_endpoints
    if internal_local:
        internal_chain = svl_chain
        if not local_eps:
            has_internal = False
    external_policy_chain = svc_chain
    has_external = has_endpoints
    if external_local:
        external_policy_chain = svl_chain
        if not local_eps:
            has_external = False
    uses_ext_chain = has_endpoints and accessible
    uses_fw_chain = has_endpoints and bool(p.load_balancer_vips and p.load_balancer_source_ranges)
    lb_target = Jump(fw_chain if uses_fw_chain else ext_chain)
    jump_ext = Jump(ext_chain)

    internal_filter: Verdict | None = None
    internal_filter_comment = ""
    external_filter: Verdict | None = None
    external_filter_comment = ""
    if not has_endpoints:
        internal_filter = external_filter = _REJECT
        internal_filter_comment = external_filter_comment = _comment(f"{name} has no endpoints")
    else:
        if not has_internal:
            internal_filter = _DROP
            internal_filter_comment = _comment(f"{name} has no local endpoints")
        if not has_external:
            external_filter = _DROP
            external_filter_comment = _comment(f"{name} has no local endpoints")

    # Capture the ClusterIP.
    cluster_dst = IPMatch("daddr", (p.cluster_ip,))
    cluster_comment = _comment(f"{name} cluster IP")
    if has_internal:
        out.n_services.append(
            Rule((proto_match, cluster_dst, dport), Jump(internal_chain), cluster_comment)
        )
    else:
        out.f_services.append(
            Rule((proto_match, cluster_dst, dport), internal_filter, internal_filter_comment)
        )

    # Capture externalIPs.
    if p.external_ips:
        comment = _comment(f"{name} external IP")
        for ip in p.external_ips:
            dst = IPMatch("daddr", (ip,))
            if has_endpoints:
                out.n_services.append(Rule((proto_match, dst, dport), jump_ext, comment))
            if external_filter is not None:
                out.f_external.append(
                    Rule((proto_match, dst, dport), external_filter, external_filter_comment)
                )

    # Capture load-balancer ingress.
    if p.load_balancer_vips:
        comment = _comment(f"{name} loadbalancer IP")
        fw_comment = _comment(f"{name} traffic not accepted by {fw_chain}")
        for ip in p.load_balancer_vips:
            dst = IPMatch("daddr", (ip,))
            if has_endpoints:
                out.n_services.append(Rule((proto_match, dst, dport), lb_target, comment))
            if uses_fw_chain:
                out.f_fw.append(Rule((proto_match, dst, dport), _DROP, fw_comment))
        if external_filter is not None:
            for ip in p.load_balancer_vips:
                out.f_external.append(
                    Rule(
                        (proto_match, IPMatch("daddr", (ip,)), dport),
                        external_filter,
                        external_filter_comment,
                    )
                )

    # Capture nodePorts (never subject to loadBalancerSourceRanges).
    if p.node_port:
        node_dport = PortMatch("dport", ((p.node_port, p.node_port),))
        if has_endpoints:
            np_comment = _comment(name)
            if ctx.localhost_nodeports and ctx.nfacct:
                out.n_nodeports.append(
                    Rule(
                        (
                            proto_match,
                            IPMatch("daddr", (_LOCALNET,)),
                            node_dport,
                            _NFACCT_LOCALHOST,
                        ),
                        jump_ext,
                        np_comment,
                    )
                )
            out.n_nodeports.append(Rule((proto_match, node_dport), jump_ext, np_comment))
        if external_filter is not None:
            out.f_external.append(
                Rule(
                    (_DST_LOCAL, proto_match, node_dport), external_filter, external_filter_comment
                )
            )

    # Capture healthCheckNodePorts (always TCP, whether or not there are endpoints).
    if p.health_check_node_port:
        out.f_nodeports.append(
            Rule(
                (
                    _proto("tcp"),
                    PortMatch("dport", ((p.health_check_node_port, p.health_check_node_port),)),
                ),
                _ACCEPT,
                _comment(f"{name} health check node port"),
            )
        )

    # Internal traffic: masquerade off-cluster sources, first rule of the internal chain.
    internal_rules: list[Rule] = []
    if has_internal:
        if ctx.masquerade_all:
            internal_rules.append(
                Rule((proto_match, cluster_dst, dport), _JUMP_MARK_MASQ, cluster_comment)
            )
        elif ctx.detector is not None:
            internal_rules.append(
                Rule(
                    (proto_match, cluster_dst, dport, *ctx.detector[1]),
                    _JUMP_MARK_MASQ,
                    cluster_comment,
                )
            )

    chains = out.nat_chains
    # External traffic: every external destination goes through KUBE-EXT.
    if uses_ext_chain:
        ext_rules: list[Rule] = []
        if not external_local:
            ext_rules.append(
                Rule(
                    (),
                    _JUMP_MARK_MASQ,
                    _comment(f"masquerade traffic for {name} external destinations"),
                )
            )
        else:
            jump_svc = Jump(svc_chain)
            if ctx.detector is not None:
                ext_rules.append(
                    Rule(
                        ctx.detector[0],
                        jump_svc,
                        _comment(f"pod traffic for {name} external destinations"),
                    )
                )
            ext_rules.append(
                Rule(
                    (_SRC_LOCAL,),
                    _JUMP_MARK_MASQ,
                    _comment(f"masquerade LOCAL traffic for {name} external destinations"),
                )
            )
            ext_rules.append(
                Rule(
                    (_SRC_LOCAL,),
                    jump_svc,
                    _comment(f"route LOCAL traffic for {name} external destinations"),
                )
            )
        if has_external:
            ext_rules.append(Rule((), Jump(external_policy_chain)))
        chains.append(Chain(ext_chain, ext_rules))

    # The loadBalancerSourceRanges firewall.
    if uses_fw_chain:
        comment = _comment(f"{name} loadbalancer IP")
        fw_rules = []
        allow_from_node = False
        for cidr in p.load_balancer_source_ranges:
            fw_rules.append(Rule((IPMatch("saddr", (cidr,)),), jump_ext, comment))
            if not allow_from_node and _contains(cidr, ctx.node_ip):
                allow_from_node = True
        if allow_from_node:
            # A VIP often is a local address too: the node's own requests then come
            # back with the VIP as source instead of going through the LB.
            for ip in p.load_balancer_vips:
                fw_rules.append(Rule((IPMatch("saddr", (ip,)),), jump_ext, comment))
        fw_rules.append(
            Rule(
                (),
                None,
                _comment(f"other traffic to {name} will be dropped by {KUBE_PROXY_FIREWALL}"),
            )
        )
        chains.append(Chain(fw_chain, fw_rules))

    # Endpoint chains: name, jump and text computed once per endpoint.
    large = out.large
    base = name + proto
    sep_comment = None if large else _comment(name)
    affinity = p.session_affinity_timeout if p.session_affinity == "ClientIP" else None
    reachable = p.all_reachable_endpoints
    ep_strs = [f"[{ep.ip}]:{ep.port}" if ":" in ep.ip else f"{ep.ip}:{ep.port}" for ep in reachable]
    eps: list[_Ep] = []
    sep_chains: list[Chain] = []
    dnat_exprs: tuple[Expr, ...] = (proto_match,)
    for ep, ep_str, ep_hash in zip(reachable, ep_strs, hash16_each(base, ep_strs), strict=True):
        ip = ep.ip
        sep = IPTABLES_SEP_PREFIX + ep_hash
        eps.append((ep_str, Jump(sep), sep))
        if affinity is not None:
            dnat_exprs = (RecentMatch(sep, "set"), proto_match)
        sep_chains.append(
            Chain(
                sep,
                (
                    Rule((IPMatch("saddr", (ip,)),), _JUMP_MARK_MASQ, sep_comment),
                    Rule(dnat_exprs, DNAT(ip, ep.port), sep_comment),
                ),
            )
        )

    if uses_cluster_chain:
        rules = internal_rules if internal_chain == svc_chain else []
        _endpoint_rules(rules, name, base, cluster_eps, reachable, eps, affinity, large)
        chains.append(Chain(svc_chain, rules))
    if uses_local_chain:
        rules = internal_rules if internal_chain == svl_chain else []
        _endpoint_rules(rules, name, base, local_eps, reachable, eps, affinity, large)
        chains.append(Chain(svl_chain, rules))
    chains.extend(sep_chains)


#: An endpoint's ``(ip:port, jump to its chain, chain name)``.
_Ep: TypeAlias = tuple[str, Jump, str]


def _endpoint_rules(
    rules: list[Rule],
    name: str,
    base: str,
    endpoints: Sequence[EndpointInfo],
    reachable: Sequence[EndpointInfo],
    reachable_eps: list[_Ep],
    affinity: int | None,
    large: bool,
) -> None:
    """``writeServiceToEndpointRules``: affinity checks, then the random spread.

    ``reachable_eps`` are the :data:`_Ep` of ``reachable`` (the port's
    ``all_reachable_endpoints``), whose objects the view's Cluster and Local
    lists reuse (often the very same tuple); other endpoints are named here.
    """
    if endpoints is reachable:
        eps = reachable_eps
    else:
        known = dict(zip(map(id, reachable), reachable_eps, strict=True))
        eps = []
        for ep in endpoints:
            info = known.get(id(ep))
            if info is None:  # a hand-built view with distinct objects
                ep_str = ep.endpoint_string
                sep = IPTABLES_SEP_PREFIX + hash16(base + ep_str)
                info = (ep_str, Jump(sep), sep)
            eps.append(info)
    if affinity is not None:
        for ep_str, jump, sep in eps:
            rules.append(
                Rule(
                    (RecentMatch(sep, "rcheck", seconds=affinity, reap=True),),
                    jump,
                    None if large else _comment(f"{name} -> {ep_str}"),
                )
            )
    spread = _spread(len(eps))
    if large:
        rules += map(Rule, spread, [jump for _, jump, _ in eps])
    else:
        for exprs, (ep_str, jump, _sep) in zip(spread, eps, strict=True):
            rules.append(Rule(exprs, jump, _comment(f"{name} -> {ep_str}")))


_SPREADS: dict[int, tuple[tuple[StatisticMatch, ...], ...]] = {}


def _spread(n: int) -> tuple[tuple[StatisticMatch, ...], ...]:
    """The matches of the rules that spread traffic over ``n`` endpoints: a
    probability of 1/(n-i) for the i-th, none for the last (shared, immutable)."""
    spread = _SPREADS.get(n)
    if spread is None:
        spread = (*((_statistic(n - i),) for i in range(n - 1)), ())[:n]
        if n <= _PRECOMPUTED:
            _SPREADS[n] = spread  # a race only stores an equal tuple twice
    return spread


# -- the whole node -----------------------------------------------------------------
_BY_NAME: Final = operator.attrgetter("name")


def _ordered(
    fixed: dict[str, Sequence[Rule]],
    service_chains: Iterable[Chain],
    builtins: dict[str, list[Rule]],
) -> tuple[Chain, ...]:
    """Upstream's test order: KUBE-NODEPORTS, KUBE-SERVICES, other KUBE-* by name, built-ins."""
    rest = [
        Chain(n, rules) for n, rules in fixed.items() if n not in (KUBE_NODEPORTS, KUBE_SERVICES)
    ]
    rest.extend(service_chains)
    rest.sort(key=_BY_NAME)
    head = [Chain(n, fixed[n]) for n in (KUBE_NODEPORTS, KUBE_SERVICES) if n in fixed]
    tail = [Chain(n, rules, hook=n.lower()) for n, rules in sorted(builtins.items())]
    return (*head, *rest, *tail)


def compile(
    view: NodeView, host: IptablesHost | None = None, *, restore_only: bool = False
) -> Ruleset:
    """The iptables Ruleset kube-proxy programs for ``view`` (see the module docstring).

    ``host`` describes iptables/kernel capabilities (default: a modern host,
    :class:`IptablesHost`). ``restore_only=True`` returns exactly what kube-proxy
    feeds ``iptables-restore`` (tables ``filter`` and ``nat``); by default the
    Ruleset also holds what kube-proxy ensures separately: the jumps from the
    built-in chains and the empty ``KUBE-FIREWALL`` / ``KUBE-PROXY-CANARY``
    chains. ``Ruleset.interfaces`` records the node's local addresses (``lo``
    and the node IPs on ``eth0``, as in upstream's fake network), which
    ``-m addrtype`` reads.
    """
    with gc_paused():  # see kservice._gc
        return _compile(view, _DEFAULT_HOST if host is None else host, restore_only)


def _compile(view: NodeView, host: IptablesHost, restore_only: bool) -> Ruleset:
    cfg = view.config
    ipv6 = cfg.ip_family == "IPv6"
    npa = view.node_port_addresses
    # NewProxier: localhost NodePorts only for IPv4, and only if nodePortAddresses
    # include 127.0.0.0/8 (an IPv6 proxier is always created with it off).
    localhost_nodeports = cfg.localhost_nodeports and not ipv6 and npa.contains_ipv4_loopback
    mark = cfg.masquerade_value
    service_ports = view.service_ports
    total_endpoints = 0
    for p in service_ports:
        total_endpoints += len(p.all_endpoints)
    out = _Out(large=total_endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD)
    ctx = _Ctx(
        detector=_detector(view.local_detector),
        masquerade_all=cfg.masquerade_all,
        localhost_nodeports=localhost_nodeports,
        nfacct=host.nfacct,
        node_ip=view.node.primary_ip,
    )
    for p in service_ports:
        _service_port(p, ctx, out)

    # The tail call to KUBE-NODEPORTS: the last rule of nat KUBE-SERVICES.
    if npa.match_all:
        dst: tuple[Match, ...] = (_DST_LOCAL,)
        if ipv6:
            dst = (_DST_LOCAL, IPMatch("daddr", ("::1/128",), negate=True))
        elif not localhost_nodeports:
            dst = (_DST_LOCAL, IPMatch("daddr", (_LOCALNET,), negate=True))
        out.n_services.append(Rule(dst, _JUMP_NODEPORTS, _NODEPORTS_COMMENT))
    else:
        loopback = "::1" if ipv6 else "127.0.0.1"
        for ip in npa.node_ips((loopback, *view.node.ips)):
            if (ipv6 or not localhost_nodeports) and ipaddress.ip_address(ip).is_loopback:
                continue  # kube-proxy logs an error and skips it
            out.n_services.append(
                Rule((IPMatch("daddr", (ip,)),), _JUMP_NODEPORTS, _NODEPORTS_COMMENT)
            )

    forward: list[Rule] = []
    if not host.tcp_be_liberal:
        invalid: tuple[Match, ...] = (CtStateMatch(("INVALID",)),)
        if host.nfacct:
            invalid = (*invalid, _NFACCT_INVALID)
        forward.append(Rule(invalid, _DROP))
    forward.append(Rule((MarkMatch(mark, mark),), _ACCEPT, "kubernetes forwarding rules"))
    forward.append(
        Rule(
            (CtStateMatch(("RELATED", "ESTABLISHED")),),
            _ACCEPT,
            "kubernetes forwarding conntrack rule",
        )
    )

    filter_fixed: dict[str, Sequence[Rule]] = {
        KUBE_SERVICES: out.f_services,
        KUBE_EXTERNAL_SERVICES: out.f_external,
        KUBE_FORWARD: forward,
        KUBE_NODEPORTS: out.f_nodeports,
        KUBE_PROXY_FIREWALL: out.f_fw,
    }
    if localhost_nodeports:
        # route_localnet opens 127.0.0.0/8 to the network (issue 90259); this closes it.
        filter_fixed[KUBE_FIREWALL] = (
            Rule(
                (
                    IPMatch("daddr", (_LOCALNET,)),
                    IPMatch("saddr", (_LOCALNET,), negate=True),
                    CtStateMatch(("RELATED", "ESTABLISHED", "DNAT"), negate=True),
                ),
                _DROP,
                "block incoming localnet connections",
            ),
        )
    nat_fixed: dict[str, Sequence[Rule]] = {
        KUBE_SERVICES: out.n_services,
        KUBE_NODEPORTS: out.n_nodeports,
        KUBE_POSTROUTING: (
            Rule((MarkMatch(mark, mark, negate=True),), Return()),
            Rule((MarkSet("xor", mark),)),
            Rule((), Masquerade(host.random_fully), "kubernetes service traffic requiring SNAT"),
        ),
        KUBE_MARK_MASQ: (Rule((MarkSet("or", mark),)),),
    }

    builtins: dict[str, dict[str, list[Rule]]] = {"filter": {}, "nat": {}}
    tables: list[Table] = []
    family = "ip6" if ipv6 else "ip"
    if not restore_only:
        filter_fixed.setdefault(KUBE_FIREWALL, ())
        filter_fixed[KUBE_PROXY_CANARY] = ()
        nat_fixed[KUBE_PROXY_CANARY] = ()
        for (table, chain), rules in _ENSURED.items():
            builtins[table][chain] = rules
    tables.append(
        Table(family, "filter", "iptables", _ordered(filter_fixed, (), builtins["filter"]))
    )
    if not restore_only:
        tables.append(Table(family, "mangle", "iptables", (Chain(KUBE_PROXY_CANARY),)))
    tables.append(
        Table(family, "nat", "iptables", _ordered(nat_fixed, out.nat_chains, builtins["nat"]))
    )
    interfaces = (
        Interface("lo", ("::1",) if ipv6 else ("127.0.0.1",), kind="loopback"),
        Interface("eth0", view.node.ips),
    )
    return Ruleset(
        mode="iptables",
        family="IPv6" if ipv6 else "IPv4",
        tables=tables,
        interfaces=interfaces,
    )
