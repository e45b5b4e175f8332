"""The IPVS-mode compiler: the virtual servers, ipsets and iptables rules of kube-proxy.

:func:`compile` turns a :class:`~kservice.proxy.nodeview.NodeView` into the
:class:`~kservice.netfilter.ruleset.Ruleset` kube-proxy's IPVS proxier leaves in
the kernel after a full sync (``mode="ipvs"``). It is pure and deterministic.

Facts carried over from kubernetes/kubernetes ``pkg/proxy/ipvs/proxier.go``
(``syncProxyRules``, ``syncEndpoint``, ``writeIptablesRules``,
``acceptIPVSTraffic``, ``createAndLinkKubeChain``) and ``pkg/proxy/ipvs/ipset.go``:

IPVS (``Ruleset.virtual_servers``), per service port in view order:

* a virtual server for the ClusterIP:port, one per externalIP, one per
  load-balancer VIP and, with a nodePort, one per node IP NodePorts listen on
  (loopback addresses excluded); all with the configured scheduler (``rr`` by
  default) and, with ClientIP affinity, the persistent flag with the affinity
  timeout (``-p``). With the ``mh`` scheduler every virtual server gets the
  source-hash flag ``FlagSourceHash`` (``IP_VS_SVC_F_SCHED2``), which
  ``ipvsadm`` names ``mh-port`` (``-b mh-port``); ``mh-fallback`` is never set.
* real servers (weight 1, masquerading) per ``syncEndpoint``: the ClusterIP
  uses the Local endpoints for internalTrafficPolicy Local, the external
  addresses (externalIPs, VIPs, NodePorts) for externalTrafficPolicy Local; when
  there are no Local endpoints the Cluster endpoints are used instead (PR
  97081); otherwise the Cluster endpoints. Real servers are sorted by endpoint
  string.
* ClusterIPs are bound to the dummy interface ``kube-ipvs0``; externalIPs and
  VIPs too unless they are one of the node's own addresses; node IPs never.
  The bound addresses also fill ``KUBE-IPVS-IPS``.

ipsets (``Ruleset.ipsets``, always all of ``ipsetInfo``, in its order; IPv6
names get ``KUBE-6-``): entries ``IP,proto:port`` (hash:ip,port),
``IP,proto:port,IP2`` (hash:ip,port,ip), ``IP,proto:port,CIDR``
(hash:ip,port,net), ``PORT`` (bitmap:port) and ``IP`` (hash:ip), sorted.
``KUBE-LOOP-BACK`` holds local endpoints (``ep,proto:port,ep``); NodePorts go
into ``KUBE-NODE-PORT-{TCP,UDP}`` (ports) or ``KUBE-NODE-PORT-SCTP-HASH``
(node IP, port), plus the ``-LOCAL-`` sets for externalTrafficPolicy Local; the
source-range firewall uses ``KUBE-LOAD-BALANCER-FW`` / ``-SOURCE-CIDR`` and,
when a range holds the node's IP, ``-SOURCE-IP`` (otherwise node access to the
VIP is dropped in ``KUBE-IPVS-OUT-FILTER``).

iptables (tables ``nat`` then ``filter``, the order of kube-proxy's
``iptables-restore`` input): exactly ``writeIptablesRules``'s rules in its
order, chain by chain; a set-matching rule only when its set is non-empty (except the
health-check and ``KUBE-IPVS-FILTER`` rules, always written). The NodePort
rules match their protocol with a bare ``-p tcp`` ahead of the comment and no
``-m tcp`` (``ProtoMatch.module=False``), so
:func:`~kservice.netfilter.iptables_text.render_restore` writes kube-proxy's
lines byte for byte. With ``restore_only=False`` (default) the built-in chains
also carry the jumps ``createAndLinkKubeChain`` ensures (each prepended, so the
last ensured is first).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final, TypeAlias

from kservice.netfilter.ruleset import (
    Accept,
    AddrTypeMatch,
    Chain,
    CtStateMatch,
    Drop,
    IfaceMatch,
    Interface,
    IPMatch,
    IPSet,
    Jump,
    MarkMatch,
    MarkSet,
    Masquerade,
    Match,
    ProtoMatch,
    RawMatch,
    RealServer,
    Reject,
    Return,
    Rule,
    Ruleset,
    SetMatch,
    Statement,
    Table,
    Verdict,
    VirtualServer,
)
from kservice.proxy.iptables import IptablesHost
from kservice.proxy.nodeview import EndpointInfo, LocalTrafficDetector, NodeView, ServicePortInfo

__all__ = [
    "DUMMY_DEVICE",
    "IPSET_INFO",
    "KUBE_FORWARD",
    "KUBE_IPVS_FILTER",
    "KUBE_IPVS_OUT_FILTER",
    "KUBE_LOAD_BALANCER",
    "KUBE_MARK_MASQ",
    "KUBE_NODE_PORT",
    "KUBE_POSTROUTING",
    "KUBE_PROXY_FIREWALL",
    "KUBE_SERVICES",
    "KUBE_SOURCE_RANGES_FIREWALL",
    "compile",
    "ipset_comments",
    "ipset_name",
]

Expr: TypeAlias = Match | Statement

#: ``defaultDummyDevice``: the interface kube-proxy binds service addresses to.
DUMMY_DEVICE: Final = "kube-ipvs0"

# -- chains -------------------------------------------------------------------------
KUBE_SERVICES: Final = "KUBE-SERVICES"
KUBE_POSTROUTING: Final = "KUBE-POSTROUTING"
KUBE_NODE_PORT: Final = "KUBE-NODE-PORT"
KUBE_LOAD_BALANCER: Final = "KUBE-LOAD-BALANCER"
KUBE_MARK_MASQ: Final = "KUBE-MARK-MASQ"
KUBE_FORWARD: Final = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL: Final = "KUBE-PROXY-FIREWALL"
KUBE_SOURCE_RANGES_FIREWALL: Final = "KUBE-SOURCE-RANGES-FIREWALL"
KUBE_IPVS_FILTER: Final = "KUBE-IPVS-FILTER"
KUBE_IPVS_OUT_FILTER: Final = "KUBE-IPVS-OUT-FILTER"

#: ``iptablesChains``: the chains kube-proxy declares, per table, in its order.
_NAT_CHAINS: Final = (
    KUBE_SERVICES,
    KUBE_POSTROUTING,
    KUBE_NODE_PORT,
    KUBE_LOAD_BALANCER,
    KUBE_MARK_MASQ,
)
_FILTER_CHAINS: Final = (
    KUBE_FORWARD,
    KUBE_NODE_PORT,
    KUBE_PROXY_FIREWALL,
    KUBE_SOURCE_RANGES_FIREWALL,
    KUBE_IPVS_FILTER,
    KUBE_IPVS_OUT_FILTER,
)

#: ``iptablesJumpChain``: (table, built-in chain, target, comment), each ensured by prepending.
_JUMP_CHAINS: Final = (
    ("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    ("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    ("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    ("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    ("filter", "INPUT", KUBE_NODE_PORT, "kubernetes health check rules"),
    ("filter", "INPUT", KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    ("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kube-proxy firewall rules"),
    ("filter", "INPUT", KUBE_IPVS_FILTER, "kubernetes ipvs access filter"),
    ("filter", "OUTPUT", KUBE_IPVS_OUT_FILTER, "kubernetes ipvs access filter"),
)

# -- ipsets -------------------------------------------------------------------------
LOOP_BACK: Final = "KUBE-LOOP-BACK"
CLUSTER_IP: Final = "KUBE-CLUSTER-IP"
EXTERNAL_IP: Final = "KUBE-EXTERNAL-IP"
EXTERNAL_IP_LOCAL: Final = "KUBE-EXTERNAL-IP-LOCAL"
LOAD_BALANCER: Final = "KUBE-LOAD-BALANCER"
LOAD_BALANCER_FW: Final = "KUBE-LOAD-BALANCER-FW"
LOAD_BALANCER_LOCAL: Final = "KUBE-LOAD-BALANCER-LOCAL"
LOAD_BALANCER_SOURCE_IP: Final = "KUBE-LOAD-BALANCER-SOURCE-IP"
LOAD_BALANCER_SOURCE_CIDR: Final = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
NODE_PORT_TCP: Final = "KUBE-NODE-PORT-TCP"
NODE_PORT_LOCAL_TCP: Final = "KUBE-NODE-PORT-LOCAL-TCP"
NODE_PORT_UDP: Final = "KUBE-NODE-PORT-UDP"
NODE_PORT_LOCAL_UDP: Final = "KUBE-NODE-PORT-LOCAL-UDP"
NODE_PORT_SCTP: Final = "KUBE-NODE-PORT-SCTP-HASH"
NODE_PORT_LOCAL_SCTP: Final = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
HEALTH_CHECK_NODE_PORT: Final = "KUBE-HEALTH-CHECK-NODE-PORT"
IPVS_IPS: Final = "KUBE-IPVS-IPS"

#: ``ipsetInfo``: (name, type, comment) of every set kube-proxy creates, in its order.
IPSET_INFO: Final = (
    (
        LOOP_BACK,
        "hash:ip,port,ip",
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    (CLUSTER_IP, "hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose"),
    (
        EXTERNAL_IP,
        "hash:ip,port",
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    (
        EXTERNAL_IP_LOCAL,
        "hash:ip,port",
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    (LOAD_BALANCER, "hash:ip,port", "Kubernetes service lb portal"),
    (
        LOAD_BALANCER_FW,
        "hash:ip,port",
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    (
        LOAD_BALANCER_LOCAL,
        "hash:ip,port",
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    (
        LOAD_BALANCER_SOURCE_IP,
        "hash:ip,port,ip",
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    (
        LOAD_BALANCER_SOURCE_CIDR,
        "hash:ip,port,net",
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    (NODE_PORT_TCP, "bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose"),
    (
        NODE_PORT_LOCAL_TCP,
        "bitmap:port",
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    (NODE_PORT_UDP, "bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose"),
    (
        NODE_PORT_LOCAL_UDP,
        "bitmap:port",
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    (
        NODE_PORT_SCTP,
        "hash:ip,port",
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    (
        NODE_PORT_LOCAL_SCTP,
        "hash:ip,port",
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    (HEALTH_CHECK_NODE_PORT, "bitmap:port", "Kubernetes health check node port"),
    (IPVS_IPS, "hash:ip", "Addresses on the ipvs interface"),
)

#: ``ipsetWithIptablesChain``: (set, table, from chain, verdict, match flags, protocol).
_SET_CHAIN_RULES: Final = (
    (LOOP_BACK, "nat", KUBE_POSTROUTING, "MASQUERADE", ("daddr", "dport", "saddr"), None),
    (LOAD_BALANCER, "nat", KUBE_SERVICES, KUBE_LOAD_BALANCER, ("daddr", "dport"), None),
    (LOAD_BALANCER_LOCAL, "nat", KUBE_LOAD_BALANCER, "RETURN", ("daddr", "dport"), None),
    (NODE_PORT_LOCAL_TCP, "nat", KUBE_NODE_PORT, "RETURN", ("dport",), "tcp"),
    (NODE_PORT_TCP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, ("dport",), "tcp"),
    (NODE_PORT_LOCAL_UDP, "nat", KUBE_NODE_PORT, "RETURN", ("dport",), "udp"),
    (NODE_PORT_UDP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, ("dport",), "udp"),
    (NODE_PORT_LOCAL_SCTP, "nat", KUBE_NODE_PORT, "RETURN", ("daddr", "dport"), "sctp"),
    (NODE_PORT_SCTP, "nat", KUBE_NODE_PORT, KUBE_MARK_MASQ, ("daddr", "dport"), "sctp"),
    (
        LOAD_BALANCER_FW,
        "filter",
        KUBE_PROXY_FIREWALL,
        KUBE_SOURCE_RANGES_FIREWALL,
        ("daddr", "dport"),
        None,
    ),
    (
        LOAD_BALANCER_SOURCE_CIDR,
        "filter",
        KUBE_SOURCE_RANGES_FIREWALL,
        "RETURN",
        ("daddr", "dport", "saddr"),
        None,
    ),
    (
        LOAD_BALANCER_SOURCE_IP,
        "filter",
        KUBE_SOURCE_RANGES_FIREWALL,
        "RETURN",
        ("daddr", "dport", "saddr"),
        None,
    ),
)

_IPSET_NAME_MAX: Final = 31
#: The flags kube-proxy sets with the ``mh`` scheduler: ``FlagSourceHash``
#: (``IP_VS_SVC_F_SCHED2``), printed ``-b mh-port`` by ipvsadm.
_MH_FLAGS: Final = ("mh-port",)
_HASHED: Final = ("hash:ip,port", "hash:ip,port,ip", "hash:ip,port,net", "hash:ip")


def ipset_name(name: str, ip_family: str = "IPv4") -> str:
    """``NewIPSet``'s name: IPv6 sets get ``KUBE-6-`` and are cut to 31 characters."""
    if ip_family == "IPv6" and name.startswith("KUBE-"):
        name = name.replace("KUBE-", "KUBE-6-", 1)[:_IPSET_NAME_MAX]
    return name


def ipset_comments() -> dict[str, str]:
    """Every kube-proxy ipset name (both families) -> its comment (``ipset save`` has none)."""
    out: dict[str, str] = {}
    for name, _type, comment in IPSET_INFO:
        out[name] = comment
        out[ipset_name(name, "IPv6")] = comment
    return out


# -- helpers ------------------------------------------------------------------------
def _verdict(target: str) -> Verdict:
    if target == "RETURN":
        return Return()
    if target == "MASQUERADE":
        return Masquerade()
    return Jump(target)


def _not_local(det: LocalTrafficDetector) -> tuple[Match, ...] | None:
    """``IfNotLocal`` of the local-traffic detector; None for the no-op detector."""
    if det.cidr:
        return (IPMatch("saddr", (det.cidr,), negate=True),)
    if det.interface_name:
        return (IfaceMatch("iif", det.interface_name, negate=True),)
    if det.interface_prefix:
        return (IfaceMatch("iif", det.interface_prefix + "+", negate=True),)
    return None


def _real_servers(endpoints: Iterable[EndpointInfo]) -> tuple[RealServer, ...]:
    """``syncEndpoint``: one masquerading weight-1 destination per endpoint string, sorted."""
    by_string = {ep.endpoint_string: ep for ep in endpoints}
    return tuple(
        RealServer(by_string[key].ip, by_string[key].port, 1, "masq") for key in sorted(by_string)
    )


def _endpoints(p: ServicePortInfo, only_local: bool) -> tuple[EndpointInfo, ...]:
    if only_local and p.local_endpoints:
        return p.local_endpoints
    return p.cluster_endpoints


def _contains(cidr: str, ip: str | None) -> bool:
    if ip is None:
        return False
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


class _State:
    """What the sync loop accumulates."""

    def __init__(self) -> None:
        self.entries: dict[str, set[str]] = {name: set() for name, _t, _c in IPSET_INFO}
        self.servers: dict[tuple[str, str, int], VirtualServer] = {}
        self.bound: dict[str, None] = {}
        self.no_node_access: list[tuple[str, str, int]] = []


def _service_port(
    p: ServicePortInfo,
    st: _State,
    scheduler: str,
    node_ips: tuple[str, ...],
    node_addresses: frozenset[str],
    primary_ip: str | None,
) -> None:
    proto = p.protocol.lower()
    persistence = p.session_affinity_timeout if p.client_ip_affinity else None
    flags = _MH_FLAGS if scheduler == "mh" else ()

    def server(address: str, port: int, only_local: bool, bind: str) -> None:
        vs = VirtualServer(
            address=address,
            protocol=proto,  # type: ignore[arg-type]
            port=port,
            scheduler=scheduler,
            persistence=persistence,
            real_servers=_real_servers(_endpoints(p, only_local)),
            flags=flags,
        )
        key = (address, proto, port)
        st.servers.pop(key, None)  # a later sync of the same service replaces it
        st.servers[key] = vs
        # ClusterIPs are always bound; externalIPs and VIPs only when no other
        # interface has them ("must not add the address to the dummy device if
        # it exist on another interface"); node IPs never.
        if bind == "always" or (bind == "unless-node" and address not in node_addresses):
            st.bound[address] = None

    for ep in p.all_endpoints:
        if ep.is_local:
            st.entries[LOOP_BACK].add(f"{ep.ip},{proto}:{ep.port},{ep.ip}")

    st.entries[CLUSTER_IP].add(f"{p.cluster_ip},{proto}:{p.port}")
    server(p.cluster_ip, p.port, p.internal_policy_local, "always")

    for ip in p.external_ips:
        entry = f"{ip},{proto}:{p.port}"
        st.entries[EXTERNAL_IP_LOCAL if p.external_policy_local else EXTERNAL_IP].add(entry)
        server(ip, p.port, p.external_policy_local, "unless-node")

    for vip in p.load_balancer_vips:
        entry = f"{vip},{proto}:{p.port}"
        st.entries[LOAD_BALANCER].add(entry)
        if p.external_policy_local:
            st.entries[LOAD_BALANCER_LOCAL].add(entry)
        if p.load_balancer_source_ranges:
            st.entries[LOAD_BALANCER_FW].add(entry)
            allow_from_node = False
            for cidr in p.load_balancer_source_ranges:
                st.entries[LOAD_BALANCER_SOURCE_CIDR].add(f"{entry},{cidr}")
                if _contains(cidr, primary_ip):
                    allow_from_node = True
            if allow_from_node:
                st.entries[LOAD_BALANCER_SOURCE_IP].add(f"{entry},{vip}")
            else:
                st.no_node_access.append((vip, proto, p.port))
        server(vip, p.port, p.external_policy_local, "unless-node")

    if p.node_port and node_ips:
        node_port = p.node_port
        if proto == "sctp":
            np_set, np_local = NODE_PORT_SCTP, NODE_PORT_LOCAL_SCTP
            entries = [f"{ip},{proto}:{node_port}" for ip in node_ips]
        else:
            np_set = NODE_PORT_TCP if proto == "tcp" else NODE_PORT_UDP
            np_local = NODE_PORT_LOCAL_TCP if proto == "tcp" else NODE_PORT_LOCAL_UDP
            entries = [str(node_port)]
        st.entries[np_set].update(entries)
        if p.external_policy_local:
            st.entries[np_local].update(entries)
        for ip in node_ips:
            server(ip, node_port, p.external_policy_local, "never")

    if p.health_check_node_port:
        st.entries[HEALTH_CHECK_NODE_PORT].add(str(p.health_check_node_port))


def _sorted_elements(set_type: str, elements: set[str]) -> tuple[str, ...]:
    if set_type == "bitmap:port":
        return tuple(sorted(elements, key=int))
    return tuple(sorted(elements))


# -- the whole node -----------------------------------------------------------------
def compile(
    view: NodeView,
    *,
    scheduler: str | None = None,
    host: IptablesHost | None = None,
    restore_only: bool = False,
) -> Ruleset:
    """The IPVS-mode Ruleset kube-proxy programs for ``view`` (see the module docstring).

    ``scheduler`` overrides the configuration's ``ipvs_scheduler`` (blank: rr).
    ``host`` only decides ``MASQUERADE --random-fully`` (default: supported).
    ``restore_only=True`` leaves out the jumps from the built-in chains that
    kube-proxy ensures outside ``iptables-restore``.
    """
    cfg = view.config
    ipv6 = cfg.ip_family == "IPv6"
    sched = scheduler or cfg.ipvs_scheduler or "rr"
    random_fully = (host or IptablesHost()).random_fully
    node_ips = tuple(ip for ip in view.node_port_ips if not ipaddress.ip_address(ip).is_loopback)
    node_addresses = frozenset(view.node.ips)

    st = _State()
    for p in view.service_ports:
        _service_port(p, st, sched, node_ips, node_addresses, view.node.primary_ip)
    st.entries[IPVS_IPS] = set(st.bound)

    comments = {name: comment for name, _t, comment in IPSET_INFO}
    family = "inet6" if ipv6 else "inet"

    def name(base: str) -> str:
        return ipset_name(base, cfg.ip_family)

    def smatch(base: str, keys: tuple[str, ...]) -> SetMatch:
        return SetMatch(name(base), keys)

    def full(base: str) -> bool:
        return bool(st.entries[base])

    nat: dict[str, list[Rule]] = {c: [] for c in _NAT_CHAINS}
    filt: dict[str, list[Rule]] = {c: [] for c in _FILTER_CHAINS}
    tables = {"nat": nat, "filter": filt}
    dd = ("daddr", "dport")

    lo_net = "::1/128" if ipv6 else "127.0.0.0/8"
    nat[KUBE_SERVICES].append(Rule((IPMatch("saddr", (lo_net,)),), Return()))

    for base, table, chain, target, keys, proto in _SET_CHAIN_RULES:
        if not full(base):
            continue
        exprs: tuple[Expr, ...] = (smatch(base, keys),)
        if proto is not None:
            # "-p tcp", no "-m tcp": written ahead of the comment, as kube-proxy does
            exprs = (ProtoMatch((proto,), module=False), *exprs)
        tables[table][chain].append(Rule(exprs, _verdict(target), comments[base]))

    if full(CLUSTER_IP):
        comment = comments[CLUSTER_IP]
        not_local = _not_local(view.local_detector)
        if cfg.masquerade_all:
            rule = Rule((smatch(CLUSTER_IP, dd),), Jump(KUBE_MARK_MASQ), comment)
        elif not_local is not None:
            rule = Rule((smatch(CLUSTER_IP, dd), *not_local), Jump(KUBE_MARK_MASQ), comment)
        else:
            rule = Rule((smatch(CLUSTER_IP, ("saddr", "dport")),), Jump(KUBE_MARK_MASQ), comment)
        nat[KUBE_SERVICES].append(rule)

    def external_ip_rules(base: str) -> None:
        m = smatch(base, dd)
        comment = comments[base]
        nat[KUBE_SERVICES].append(
            Rule(
                (
                    m,
                    RawMatch("-m physdev ! --physdev-is-in"),
                    AddrTypeMatch("saddr", "LOCAL", negate=True),
                ),
                Accept(),
                comment,
            )
        )
        nat[KUBE_SERVICES].append(Rule((m, AddrTypeMatch("daddr", "LOCAL")), Accept(), comment))

    if full(EXTERNAL_IP):
        nat[KUBE_SERVICES].append(
            Rule((smatch(EXTERNAL_IP, dd),), Jump(KUBE_MARK_MASQ), comments[EXTERNAL_IP])
        )
        external_ip_rules(EXTERNAL_IP)
    if full(EXTERNAL_IP_LOCAL):
        external_ip_rules(EXTERNAL_IP_LOCAL)

    nat[KUBE_SERVICES].append(Rule((AddrTypeMatch("daddr", "LOCAL"),), Jump(KUBE_NODE_PORT)))
    nat[KUBE_LOAD_BALANCER].append(Rule((), Jump(KUBE_MARK_MASQ)))
    filt[KUBE_SOURCE_RANGES_FIREWALL].append(Rule((), Drop()))
    for vip, proto_name, port in st.no_node_access:
        filt[KUBE_IPVS_OUT_FILTER].append(
            Rule(
                (
                    IPMatch("saddr", (vip,)),
                    RawMatch(f"-m ipvs --vaddr {vip} --vproto {proto_name} --vport {port}"),
                ),
                Drop(),
            )
        )
    for base in (CLUSTER_IP, LOAD_BALANCER):  # acceptIPVSTraffic
        if full(base):
            nat[KUBE_SERVICES].append(Rule((smatch(base, dd),), Accept()))

    mark = cfg.masquerade_value
    filt[KUBE_FORWARD].append(
        Rule((MarkMatch(mark, mark),), Accept(), "kubernetes forwarding rules")
    )
    filt[KUBE_FORWARD].append(
        Rule(
            (CtStateMatch(("RELATED", "ESTABLISHED")),),
            Accept(),
            "kubernetes forwarding conntrack rule",
        )
    )
    filt[KUBE_NODE_PORT].append(
        Rule(
            (smatch(HEALTH_CHECK_NODE_PORT, ("dport",)),),
            Accept(),
            comments[HEALTH_CHECK_NODE_PORT],
        )
    )
    for base, keys in (
        (LOAD_BALANCER, dd),
        (CLUSTER_IP, dd),
        (EXTERNAL_IP, dd),
        (EXTERNAL_IP_LOCAL, dd),
        (HEALTH_CHECK_NODE_PORT, ("dport",)),
    ):
        filt[KUBE_IPVS_FILTER].append(Rule((smatch(base, keys),), Return()))
    filt[KUBE_IPVS_FILTER].append(
        Rule((CtStateMatch(("NEW",)), smatch(IPVS_IPS, ("daddr",))), Reject())
    )

    nat[KUBE_POSTROUTING].append(Rule((MarkMatch(mark, mark, negate=True),), Return()))
    nat[KUBE_POSTROUTING].append(Rule((MarkSet("xor", mark),)))
    nat[KUBE_POSTROUTING].append(
        Rule((), Masquerade(random_fully), "kubernetes service traffic requiring SNAT")
    )
    nat[KUBE_MARK_MASQ].append(Rule((MarkSet("or", mark),)))

    builtins: dict[str, dict[str, list[Rule]]] = {"nat": {}, "filter": {}}
    if not restore_only:
        for table, builtin, target, comment in _JUMP_CHAINS:
            builtins[table].setdefault(builtin, []).insert(0, Rule((), Jump(target), comment))

    ip_family = "ip6" if ipv6 else "ip"
    out_tables = []
    for table_name in ("nat", "filter"):  # kube-proxy restores natChains/natRules first
        chains = [Chain(c, rules) for c, rules in tables[table_name].items()]
        chains += [
            Chain(c, rules, hook=c.lower()) for c, rules in sorted(builtins[table_name].items())
        ]
        out_tables.append(Table(ip_family, table_name, "iptables", chains))

    ipsets = tuple(
        IPSet(
            name=name(base),
            type=set_type,
            family=family if set_type in _HASHED else "inet",
            elements=_sorted_elements(set_type, st.entries[base]),
            comment=comment,
        )
        for base, set_type, comment in IPSET_INFO
    )
    interfaces = (
        Interface("lo", ("::1",) if ipv6 else ("127.0.0.1",), kind="loopback"),
        Interface("eth0", view.node.ips),
        Interface(DUMMY_DEVICE, tuple(sorted(st.bound, key=ipaddress.ip_address)), kind="dummy"),
    )
    return Ruleset(
        mode="ipvs",
        family="IPv6" if ipv6 else "IPv4",
        tables=out_tables,
        ipsets=ipsets,
        virtual_servers=tuple(st.servers.values()),
        interfaces=interfaces,
    )
