"""What kube-proxy on one node sees: its service ports and their endpoints.

A :class:`NodeView` is the input of every rule compiler. It holds, for one
node and one IP family (kube-proxy runs one proxier per family), the service
ports kube-proxy would program -- kube-proxy's ``ServicePortMap`` -- each with
its endpoints -- the ``EndpointsMap`` -- already categorised for Cluster and
Local traffic policy and topology (``CategorizeEndpoints``). It is pure data:
the same objects always give an equal view, and nothing in it knows about
iptables, nftables or IPVS.

Facts carried over from kubernetes/kubernetes ``pkg/proxy``:

Services (``servicechangetracker.go`` ``serviceToServiceMap``, ``util``):

* ``ShouldSkipService``: a Service whose ``spec.clusterIP`` is ``None``
  (headless) or empty, or of type ExternalName, is not proxied. So is a
  Service with no ClusterIP of the proxier's family (``GetClusterIPByFamily``:
  the clusterIP at the index of the family in ``spec.ipFamilies``; with no
  ipFamilies, ``spec.clusterIP`` if it is of the family).
* kube-proxy only watches Services and EndpointSlices without the
  ``service.kubernetes.io/service-proxy-name`` label (or, when its
  ``serviceProxyName`` is set, with exactly that value) and without the
  ``service.kubernetes.io/headless`` label.
* Each Service port becomes one ``ServicePortName(ns, name, port.name,
  port.protocol)`` (``newBaseServiceInfo``) keeping: the ClusterIP of the
  family; port, protocol and nodePort; the externalIPs of the family
  (``MapIPsByIPFamily``, unparseable ones dropped); the
  loadBalancerSourceRanges of the family, whitespace-trimmed
  (``MapCIDRsByIPFamily``, unparseable ones dropped); the load-balancer VIPs:
  ``status.loadBalancer.ingress[].ip`` of the family whose ``ipMode`` is
  ``VIP`` or unset (``IsVIPMode``) -- ``Proxy``-mode ingress is left to the
  load balancer; session affinity with its timeout when ClientIP;
  ``ExternalPolicyLocal`` (externally accessible Service with
  externalTrafficPolicy Local), ``InternalPolicyLocal``; and the
  healthCheckNodePort when ``NeedsHealthCheck`` (LoadBalancer with external
  policy Local). Addresses are kept in Go's canonical text (``net.IP.String``,
  ``IPNet.String``).
* ``ExternallyAccessible`` (per port): a nodePort, a load-balancer VIP or an
  externalIP. ``UsesClusterEndpoints``: internal policy Cluster, or
  externally accessible (external traffic from this node short-circuits to
  the Cluster endpoints even with external policy Local).
  ``UsesLocalEndpoints``: internal policy Local, or external policy Local and
  externally accessible.

Endpoints (``endpointschangetracker.go``, ``endpointslicecache.go``, ``endpoint.go``):

* A proxier only reads EndpointSlices whose ``addressType`` is its family
  (FQDN slices are never read). A slice belongs to the Service named by its
  ``kubernetes.io/service-name`` label in its namespace; a slice without the
  label is ignored.
* Endpoints are grouped by ``ServicePortName(ns, service, slicePort.name,
  slicePort.protocol)``: an endpoint's port is found by *name* in the slice's
  ports, and a Service port gets the endpoints of the slice ports with its
  name and protocol. Slice ports with no port number (or 0) are ignored; a
  slice without ports contributes no endpoints.
* Only the first address of an endpoint is used; endpoints without addresses
  are ignored. The IP is canonicalised (``ParseIPSloppy(...).String()``).
* ``ready`` / ``serving`` treat an unset condition as true, ``terminating`` an
  unset one as false. ``isLocal`` is true when the endpoint's ``nodeName``
  equals this node's name (and the name is non-empty). Zone hints are kept
  when present; node hints only with the ``PreferSameTrafficDistribution``
  feature gate.
* Endpoints are merged across the Service's slices and deduplicated by
  endpoint string (``ip:port``): a later copy replaces an earlier one unless
  it is terminating (an IP reused by a new pod wins over the terminating old
  one). Upstream visits slices in map order; kservice visits them by name,
  which is deterministic. Each service port's endpoints are sorted by
  endpoint string.

Endpoint selection (``topology.go`` ``CategorizeEndpoints``): see
:func:`categorize_endpoints`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import attrs

from kservice.api import validation as _v
from kservice.api.endpointslice import LABEL_SERVICE_NAME, EndpointSlice
from kservice.api.node import Node
from kservice.api.service import CLUSTER_IP_NONE, DEFAULT_AFFINITY_TIMEOUT, Service
from kservice.errors import ConfigError, KServiceError
from kservice.proxy.config import ProxyConfig
from kservice.proxy.naming import ServicePortName, join_host_port

if TYPE_CHECKING:
    from kservice.control.cluster import Cluster

__all__ = [
    "LABEL_HEADLESS",
    "LABEL_SERVICE_PROXY_NAME",
    "TOPOLOGY_MODES",
    "EndpointInfo",
    "EndpointSelection",
    "LocalTrafficDetector",
    "NodeInfo",
    "NodePortAddresses",
    "NodeView",
    "NodeViewError",
    "ServicePortInfo",
    "categorize_endpoints",
    "topology_mode_from_hints",
]

#: ``apis.LabelServiceProxyName``: Services (and slices) for another service proxy.
LABEL_SERVICE_PROXY_NAME = "service.kubernetes.io/service-proxy-name"
#: ``v1.IsHeadlessService``: set by the EndpointSlice controller on headless Services' slices.
LABEL_HEADLESS = "service.kubernetes.io/headless"
#: ``""`` (no topology), ``PreferSameZone`` (zone hints), ``PreferSameNode`` (node hints).
TOPOLOGY_MODES = ("", "PreferSameNode", "PreferSameZone")

_EMPTY: tuple[Any, ...] = ()


class NodeViewError(KServiceError, ValueError):
    """The objects given to build a NodeView are inconsistent (e.g. a Service twice)."""


# -- addresses ------------------------------------------------------------------

# A dotted quad without leading zeros is already Go's canonical text; checking
# that with a regex is much cheaper than parsing, and it is the common case.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_V4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}\Z")


def _family(version: int) -> str:
    return "IPv4" if version == 4 else "IPv6"


def _normalize_ip(text: Any) -> tuple[str, str] | None:
    """``(canonical text, family)`` of an IP as ``ParseIPSloppy`` reads it, or None."""
    if isinstance(text, str) and _CANONICAL_V4.match(text):
        return text, "IPv4"
    addr = _v.parse_ip(text)
    if addr is None:
        return None
    return str(addr), _family(addr.version)


def _normalize_cidr(text: Any) -> tuple[str, str] | None:
    """``(canonical network text, family)`` as ``ParseCIDRSloppy`` + ``IPNet.String``."""
    net = _v.parse_cidr(text)
    if net is None:
        return None
    return str(net), _family(net.version)


def _ips_of_family(values: Iterable[str], family: str) -> tuple[str, ...]:
    out = []
    for value in values:
        parsed = _normalize_ip(value)
        if parsed is not None and parsed[1] == family:
            out.append(parsed[0])
    return tuple(out)


# -- the node -------------------------------------------------------------------


def _strs(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class NodeInfo:
    """The node one proxier runs on, as that proxier (one IP family) sees it.

    ``ips`` are the node's addresses of the family, canonical: the InternalIPs
    then the ExternalIPs of the Node object (``GetNodeHostIPs`` order), or the
    addresses given by the caller (kube-proxy's ``--bind-address`` / node IP
    override). ``primary_ip`` -- the first -- is kube-proxy's node IP for the
    family. ``zone`` is the ``topology.kubernetes.io/zone`` label (topology
    hints are matched against it); ``pod_cidrs`` are ``spec.podCIDRs`` of the
    family (the NodeCIDR local-traffic detector uses the first).
    """

    name: str
    ip_family: str = "IPv4"
    ips: tuple[str, ...] = attrs.field(default=(), converter=_strs)
    zone: str | None = None
    pod_cidrs: tuple[str, ...] = attrs.field(default=(), converter=_strs)

    @property
    def primary_ip(self) -> str | None:
        return self.ips[0] if self.ips else None

    @classmethod
    def from_node(
        cls,
        node: Node | None,
        ip_family: str = "IPv4",
        *,
        name: str | None = None,
        node_ips: Iterable[str] | None = None,
    ) -> NodeInfo:
        """The NodeInfo of ``node`` (None: a node kube-proxy cannot find) for one family.

        ``node_ips``, when given, replace the Node object's addresses; those
        not of ``ip_family`` are dropped, and an unparseable one is a
        :class:`~kservice.errors.ConfigError`.
        """
        node_name = name if name is not None else (node.name if node is not None else "")
        if node_ips is not None:
            given = tuple(node_ips)
            bad = [ip for ip in given if _normalize_ip(ip) is None]
            if bad:
                raise ConfigError(
                    f"invalid node IP(s) {', '.join(map(repr, bad))}: not IP addresses"
                )
            ips = _ips_of_family(given, ip_family)
        elif node is not None:
            ips = _ips_of_family((*node.internal_ips, *node.external_ips), ip_family)
        else:
            ips = ()
        zone = None
        pod_cidrs: tuple[str, ...] = ()
        if node is not None:
            zone = node.zone or None
            pod_cidrs = tuple(
                parsed[0]
                for parsed in map(_normalize_cidr, node.pod_cidrs)
                if parsed is not None and parsed[1] == ip_family
            )
        return cls(
            name=node_name,
            ip_family=ip_family,
            ips=tuple(dict.fromkeys(ips)),
            zone=zone,
            pod_cidrs=pod_cidrs,
        )


# -- endpoints ------------------------------------------------------------------


def _sorted_names(value: Iterable[str] | None) -> tuple[str, ...]:
    return tuple(sorted(set(value))) if value else ()


@attrs.frozen
class EndpointInfo:
    """One endpoint of one service port (kube-proxy's ``BaseEndpointInfo``).

    ``ready`` is the slice's ready condition (the EndpointSlice controller
    already folds ``publishNotReadyAddresses`` into it); ``serving`` is ready
    regardless of terminating; ``terminating`` is set for pods being deleted.
    ``is_local``: the endpoint runs on this node. ``zone_hints`` /
    ``node_hints`` (sorted, unique) are ``hints.forZones`` / ``hints.forNodes``.
    """

    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    is_local: bool = False
    zone: str | None = None
    node_name: str | None = None
    zone_hints: tuple[str, ...] = attrs.field(default=(), converter=_sorted_names)
    node_hints: tuple[str, ...] = attrs.field(default=(), converter=_sorted_names)

    @property
    def endpoint_string(self) -> str:
        """``ip:port``, IPv6 in brackets (``net.JoinHostPort``): kube-proxy's ``String()``."""
        return join_host_port(self.ip, self.port)

    def __str__(self) -> str:
        return self.endpoint_string


class EndpointSelection(NamedTuple):
    """The result of :func:`categorize_endpoints`.

    ``cluster`` is empty when the service port does not use Cluster endpoints,
    ``local`` when it does not use Local ones (upstream returns ``nil`` there;
    the ``uses_*`` flags tell the two cases apart). ``all_reachable`` is every
    endpoint reachable from this node. ``has_any`` says whether the service has
    usable endpoints anywhere in the cluster (it may be true while
    ``all_reachable`` is empty). ``topology_mode`` is the mode used for
    ``cluster``.
    """

    cluster: tuple[EndpointInfo, ...]
    local: tuple[EndpointInfo, ...]
    all_reachable: tuple[EndpointInfo, ...]
    has_any: bool
    topology_mode: str


_NO_SELECTION = EndpointSelection((), (), (), False, "")


def topology_mode_from_hints(
    endpoints: Sequence[EndpointInfo],
    node_name: str,
    zone: str | None,
    *,
    prefer_same_node: bool = True,
) -> str:
    """``topologyModeFromHints``: which hints, if any, pick the Cluster endpoints.

    Only *ready* endpoints are looked at; with none, no topology (``""``).
    With the ``PreferSameTrafficDistribution`` gate (``prefer_same_node``), if
    every ready endpoint has a node hint and one is hinted for this node:
    ``PreferSameNode``. Otherwise, if every ready endpoint has a zone hint and
    one is hinted for this node's zone: ``PreferSameZone`` (a node without a
    zone label never matches). Otherwise ``""``: hints are ignored.
    """
    has_ready = False
    all_node_hints = True
    for_node = False
    all_zone_hints = True
    for_zone = False
    zone_name = zone or ""
    for ep in endpoints:
        if not ep.ready:
            continue
        has_ready = True
        if not ep.node_hints:
            all_node_hints = False
        elif node_name in ep.node_hints:
            for_node = True
        if not ep.zone_hints:
            all_zone_hints = False
        elif zone_name in ep.zone_hints:
            for_zone = True
    if not has_ready:
        return ""
    if prefer_same_node and all_node_hints and for_node:
        return "PreferSameNode"
    if all_zone_hints and for_zone:
        return "PreferSameZone"
    return ""


def _available_for_topology(ep: EndpointInfo, mode: str, node_name: str, zone: str) -> bool:
    """``availableForTopology``: no fallback here; it happened when picking the mode."""
    if mode == "":
        return True
    if mode == "PreferSameNode":
        return node_name in ep.node_hints
    if mode == "PreferSameZone":
        return zone in ep.zone_hints
    return False  # pragma: no cover - modes come from topology_mode_from_hints


def categorize_endpoints(
    endpoints: Sequence[EndpointInfo],
    *,
    uses_cluster: bool,
    uses_local: bool,
    node_name: str,
    zone: str | None = None,
    prefer_same_node: bool = True,
) -> EndpointSelection:
    """``CategorizeEndpoints``: the endpoints Cluster and Local policy use on this node.

    Branch by branch, as upstream (``pkg/proxy/topology.go``):

    1. No endpoints: nothing to categorise; everything empty, ``has_any`` false.
    2. If the port uses Cluster endpoints: pick the topology mode
       (:func:`topology_mode_from_hints`), then take the *ready* endpoints
       available for that topology. If there are none, fall back to the
       endpoints that are *serving and terminating* (topology is not applied
       again: a mode is only chosen when some ready endpoint fits it, so an
       empty result means no endpoint is ready anywhere). A non-empty result
       sets ``has_any``.
    3. If the port does not use Local endpoints, ``all_reachable`` is the
       Cluster list and we are done.
    4. Pre-scan: a ready endpoint anywhere, or a serving-terminating one, sets
       ``has_any``; note whether a *local* one of each kind exists.
    5. Local endpoints are the local ready ones if any exist, else the local
       serving-and-terminating ones (the Local fallback is independent of the
       Cluster one). Topology never applies to Local endpoints.
    6. If the port does not use Cluster endpoints, ``all_reachable`` is the
       Local list.
    7. With no topology and no Local fallback, the Cluster list (every ready
       endpoint) already contains every local ready endpoint, so it is
       ``all_reachable``.
    8. Otherwise the lists are merged by endpoint string (upstream's map order
       is random; kservice sorts by endpoint string).
    """
    if not endpoints:
        return _NO_SELECTION
    topology_mode = ""
    cluster: tuple[EndpointInfo, ...] = _EMPTY
    has_any = False
    zone_name = zone or ""
    if uses_cluster:
        topology_mode = topology_mode_from_hints(
            endpoints, node_name, zone, prefer_same_node=prefer_same_node
        )
        if topology_mode:
            cluster = tuple(
                ep
                for ep in endpoints
                if ep.ready and _available_for_topology(ep, topology_mode, node_name, zone_name)
            )
        else:
            cluster = tuple(ep for ep in endpoints if ep.ready)
        if not cluster:
            cluster = tuple(ep for ep in endpoints if ep.serving and ep.terminating)
        if cluster:
            has_any = True
    if not uses_local:
        return EndpointSelection(cluster, _EMPTY, cluster, has_any, topology_mode)

    has_local_ready = False
    has_local_serving_terminating = False
    for ep in endpoints:
        if ep.ready:
            has_any = True
            if ep.is_local:
                has_local_ready = True
        elif ep.serving and ep.terminating:
            has_any = True
            if ep.is_local:
                has_local_serving_terminating = True
    use_serving_terminating = False
    local: tuple[EndpointInfo, ...] = _EMPTY
    if has_local_ready:
        local = tuple(ep for ep in endpoints if ep.is_local and ep.ready)
    elif has_local_serving_terminating:
        use_serving_terminating = True
        local = tuple(ep for ep in endpoints if ep.is_local and ep.serving and ep.terminating)

    if not uses_cluster:
        return EndpointSelection(_EMPTY, local, local, has_any, topology_mode)
    if topology_mode == "" and not use_serving_terminating:
        return EndpointSelection(cluster, local, cluster, has_any, topology_mode)
    merged = {ep.endpoint_string: ep for ep in cluster}
    merged.update((ep.endpoint_string, ep) for ep in local)
    all_reachable = tuple(merged[key] for key in sorted(merged))
    return EndpointSelection(cluster, local, all_reachable, has_any, topology_mode)


# -- service ports ----------------------------------------------------------------


def _tuple(value: Iterable[Any] | None) -> tuple[Any, ...]:
    return tuple(value) if value is not None else ()


def _uses_endpoints(
    internal_local: bool, external_local: bool, accessible: bool
) -> tuple[bool, bool]:
    """``(UsesClusterEndpoints, UsesLocalEndpoints)`` of a service port.

    Cluster endpoints serve internal traffic under policy Cluster, and all
    external traffic that originates on this node (it short-circuits to them
    even under external policy Local). Local endpoints serve internal traffic
    under policy Local and external traffic under policy Local.
    """
    return (
        not internal_local or accessible,
        internal_local or (external_local and accessible),
    )


@attrs.frozen
class ServicePortInfo:
    """One service port as a proxier programs it (``BaseServicePortInfo`` + its endpoints).

    Addresses are those of the proxier's family, in Go's canonical text.
    ``node_port`` and ``health_check_node_port`` are None when absent (0
    upstream). ``session_affinity`` is ``"None"`` or ``"ClientIP"``;
    ``session_affinity_timeout`` is set exactly for ClientIP.
    ``external_policy_local`` / ``internal_policy_local`` are computed from the
    whole Service, as upstream stores them.

    The endpoint fields are the selection result: ``all_endpoints`` is every
    endpoint of the port (kube-proxy's EndpointsMap entry, sorted by endpoint
    string); ``cluster_endpoints``, ``local_endpoints``,
    ``all_reachable_endpoints``, ``has_any_endpoints`` and ``topology_mode``
    come from :func:`categorize_endpoints`.
    """

    name: ServicePortName
    cluster_ip: str
    port: int
    protocol: str = "TCP"
    node_port: int | None = None
    external_ips: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    load_balancer_vips: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    load_balancer_source_ranges: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    session_affinity: str = "None"
    session_affinity_timeout: int | None = None
    external_policy_local: bool = False
    internal_policy_local: bool = False
    health_check_node_port: int | None = None
    traffic_distribution: str | None = None
    all_endpoints: tuple[EndpointInfo, ...] = attrs.field(default=(), converter=_tuple)
    cluster_endpoints: tuple[EndpointInfo, ...] = attrs.field(default=(), converter=_tuple)
    local_endpoints: tuple[EndpointInfo, ...] = attrs.field(default=(), converter=_tuple)
    all_reachable_endpoints: tuple[EndpointInfo, ...] = attrs.field(default=(), converter=_tuple)
    has_any_endpoints: bool = False
    topology_mode: str = ""

    # -- derived flags (never stored twice) ------------------------------------------
    @property
    def name_string(self) -> str:
        """``ns/name:port`` (what chain comments and hashes use)."""
        return str(self.name)

    @property
    def externally_accessible(self) -> bool:
        """``ExternallyAccessible``: a nodePort, a load-balancer VIP or an externalIP."""
        return bool(self.node_port or self.load_balancer_vips or self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        """Internal policy Cluster, or externally accessible (for short-circuiting)."""
        return _uses_endpoints(
            self.internal_policy_local, self.external_policy_local, self.externally_accessible
        )[0]

    @property
    def uses_local_endpoints(self) -> bool:
        """Internal policy Local, or external policy Local on an externally accessible port."""
        return _uses_endpoints(
            self.internal_policy_local, self.external_policy_local, self.externally_accessible
        )[1]

    @property
    def client_ip_affinity(self) -> bool:
        return self.session_affinity == "ClientIP"

    @property
    def sticky_max_age_seconds(self) -> int:
        """``StickyMaxAgeSeconds``: the ClientIP affinity timeout, 0 without affinity."""
        return self.session_affinity_timeout or 0

    @property
    def local_ready_endpoint_ips(self) -> tuple[str, ...]:
        """The distinct IPs of local, ready endpoints (what the health check counts)."""
        return tuple(dict.fromkeys(ep.ip for ep in self.all_endpoints if ep.is_local and ep.ready))


def _cluster_ip_for_family(svc: Service, family: str) -> str | None:
    """``GetClusterIPByFamily``."""
    if not svc.ip_families:
        ip = svc.cluster_ip
        if not ip or ip == CLUSTER_IP_NONE:
            return None
        parsed = _normalize_ip(ip)
        if parsed is None or parsed[1] != family:
            return None
        return ip
    for idx, fam in enumerate(svc.ip_families):
        if fam == family and idx < len(svc.cluster_ips):
            return svc.cluster_ips[idx]
    return None


def _should_skip_service(svc: Service) -> bool:
    """``ShouldSkipService``: headless (``None``) or unset clusterIP, or ExternalName."""
    return not svc.cluster_ip or svc.cluster_ip == CLUSTER_IP_NONE or svc.type == "ExternalName"


def _selected_by_labels(labels: Mapping[str, str], cfg: ProxyConfig) -> bool:
    """kube-proxy's informer label selector (service-proxy-name, headless)."""
    if LABEL_HEADLESS in labels:
        return False
    proxy_name = labels.get(LABEL_SERVICE_PROXY_NAME)
    if cfg.service_proxy_name:
        return proxy_name == cfg.service_proxy_name
    return proxy_name is None


class _ServiceFacts(NamedTuple):
    """What ``newBaseServiceInfo`` keeps of a Service, shared by its ports."""

    cluster_ip: str
    external_ips: tuple[str, ...]
    load_balancer_vips: tuple[str, ...]
    source_ranges: tuple[str, ...]
    session_affinity: str
    timeout: int | None
    external_policy_local: bool
    internal_policy_local: bool
    health_check_node_port: int | None


def _service_facts(svc: Service, family: str) -> _ServiceFacts | None:
    if _should_skip_service(svc):
        return None
    raw_ip = _cluster_ip_for_family(svc, family)
    parsed = _normalize_ip(raw_ip) if raw_ip else None
    if parsed is None:
        return None
    external_ips = _ips_of_family(svc.external_ips, family) if svc.external_ips else ()
    source_ranges: tuple[str, ...] = ()
    if svc.load_balancer_source_ranges:
        source_ranges = tuple(
            net[0]
            for net in (_normalize_cidr(r.strip()) for r in svc.load_balancer_source_ranges)
            if net is not None and net[1] == family
        )
    vips: tuple[str, ...] = ()
    if svc.load_balancer_ingress:
        vips = _ips_of_family(
            (
                ing.ip
                for ing in svc.load_balancer_ingress
                if ing.ip and (ing.ip_mode is None or ing.ip_mode == "VIP")
            ),
            family,
        )
    client_ip = svc.session_affinity == "ClientIP"
    timeout = (svc.session_affinity_timeout or DEFAULT_AFFINITY_TIMEOUT) if client_ip else None
    external_local = svc.external_policy_local
    health = None
    if svc.type == "LoadBalancer" and external_local and svc.health_check_node_port:
        health = svc.health_check_node_port
    return _ServiceFacts(
        cluster_ip=parsed[0],
        external_ips=external_ips,
        load_balancer_vips=vips,
        source_ranges=source_ranges,
        session_affinity="ClientIP" if client_ip else "None",
        timeout=timeout,
        external_policy_local=external_local,
        internal_policy_local=svc.internal_policy_local,
        health_check_node_port=health,
    )


def _endpoints_map(
    namespace: str,
    service_name: str,
    slices: Iterable[EndpointSlice],
    *,
    family: str,
    node_name: str,
    node_hints_enabled: bool,
    cfg: ProxyConfig,
    ip_cache: dict[str, tuple[str, str] | None],
) -> dict[ServicePortName, tuple[EndpointInfo, ...]]:
    """The EndpointsMap entries of one Service (``endpointInfoByServicePort``)."""
    by_port: dict[ServicePortName, dict[str, EndpointInfo]] = {}
    ordered = list(slices)
    if len(ordered) > 1:
        ordered.sort(key=lambda s: s.metadata.name)
    for sl in ordered:
        if sl.address_type != family or not sl.ports or not sl.endpoints:
            continue
        if not _selected_by_labels(sl.metadata.labels, cfg):
            continue
        bases = []
        for ep in sl.endpoints:
            if not ep.addresses:
                continue
            first = ep.addresses[0]
            if first in ip_cache:
                parsed = ip_cache[first]
            else:
                parsed = ip_cache[first] = _normalize_ip(first)
            if parsed is None or parsed[1] != family:
                continue
            cond = ep.conditions
            hints = ep.hints
            zone_hints = hints.for_zones if hints is not None else ()
            node_hints = hints.for_nodes if hints is not None and node_hints_enabled else ()
            bases.append(
                (
                    parsed[0],
                    cond.ready is not False,
                    cond.serving is not False,
                    cond.terminating is True,
                    bool(node_name) and ep.node_name == node_name,
                    ep.zone,
                    ep.node_name,
                    zone_hints,
                    node_hints,
                )
            )
        if not bases:
            continue
        for port in sl.ports:
            if port.name is None or not port.port:
                continue
            spn = ServicePortName(namespace, service_name, port.name, port.protocol)
            target = by_port.setdefault(spn, {})
            number = port.port
            for ip, ready, serving, terminating, local, zone, ep_node, zh, nh in bases:
                key = f"[{ip}]:{number}" if ":" in ip else f"{ip}:{number}"  # JoinHostPort
                if not terminating or key not in target:
                    target[key] = EndpointInfo(
                        ip, number, ready, serving, terminating, local, zone, ep_node, zh, nh
                    )
    return {
        spn: tuple(found[key] for key in sorted(found)) for spn, found in by_port.items() if found
    }


def _service_ports(
    svc: Service,
    slices: Iterable[EndpointSlice],
    *,
    node: NodeInfo,
    cfg: ProxyConfig,
    ip_cache: dict[str, tuple[str, str] | None],
) -> list[ServicePortInfo]:
    """``serviceToServiceMap`` for one Service, each port with its endpoint selection."""
    if not _selected_by_labels(svc.metadata.labels, cfg):
        return []
    family = cfg.ip_family
    facts = _service_facts(svc, family)
    if facts is None:
        return []
    endpoints = _endpoints_map(
        svc.namespace,
        svc.name,
        slices,
        family=family,
        node_name=node.name,
        node_hints_enabled=cfg.prefer_same_traffic_distribution,
        cfg=cfg,
        ip_cache=ip_cache,
    )
    out = []
    external_accessible_service = bool(facts.load_balancer_vips or facts.external_ips)
    for port in svc.ports:
        spn = ServicePortName(svc.namespace, svc.name, port.name, port.protocol)
        all_endpoints = endpoints.get(spn, _EMPTY)
        accessible = external_accessible_service or bool(port.node_port)
        uses_cluster, uses_local = _uses_endpoints(
            facts.internal_policy_local, facts.external_policy_local, accessible
        )
        selection = categorize_endpoints(
            all_endpoints,
            uses_cluster=uses_cluster,
            uses_local=uses_local,
            node_name=node.name,
            zone=node.zone,
            prefer_same_node=cfg.prefer_same_traffic_distribution,
        )
        out.append(
            ServicePortInfo(
                name=spn,
                cluster_ip=facts.cluster_ip,
                port=port.port,
                protocol=port.protocol,
                node_port=port.node_port or None,
                external_ips=facts.external_ips,
                load_balancer_vips=facts.load_balancer_vips,
                load_balancer_source_ranges=facts.source_ranges,
                session_affinity=facts.session_affinity,
                session_affinity_timeout=facts.timeout,
                external_policy_local=facts.external_policy_local,
                internal_policy_local=facts.internal_policy_local,
                health_check_node_port=facts.health_check_node_port,
                traffic_distribution=svc.traffic_distribution,
                all_endpoints=all_endpoints,
                cluster_endpoints=selection.cluster,
                local_endpoints=selection.local,
                all_reachable_endpoints=selection.all_reachable,
                has_any_endpoints=selection.has_any,
                topology_mode=selection.topology_mode,
            )
        )
    return out


# -- node-level facts derived from the configuration --------------------------------


@attrs.frozen
class NodePortAddresses:
    """``--nodeport-addresses`` resolved for one family (``NewNodePortAddresses``).

    ``cidrs`` are the configured CIDRs of the family, canonical; with none of
    the family, the whole space (``0.0.0.0/0`` / ``::/0``) and ``match_all``.
    A zero-length prefix among them also means ``match_all`` (and only it is
    kept). ``contains_ipv4_loopback`` tells whether 127.0.0.0/8 is covered
    (it matters for localhost NodePorts in iptables mode).
    """

    ip_family: str
    cidrs: tuple[str, ...]
    match_all: bool
    contains_ipv4_loopback: bool

    @classmethod
    def for_family(cls, ip_family: str, cidrs: Iterable[str]) -> NodePortAddresses:
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for text in cidrs:
            net = _v.parse_cidr(text)
            if net is not None and _family(net.version) == ip_family:
                nets.append(net)
        if not nets:
            nets = [ipaddress.ip_network("0.0.0.0/0" if ip_family == "IPv4" else "::/0")]
        loopback = ipaddress.IPv4Address("127.0.0.0")
        contains_loopback = False
        kept: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        match_all = False
        for net in nets:
            if isinstance(net, ipaddress.IPv4Network) and (
                net.network_address.is_loopback or loopback in net
            ):
                contains_loopback = True
            if net.prefixlen == 0:
                kept = [net]
                match_all = True
                break
            kept.append(net)
        return cls(
            ip_family=ip_family,
            cidrs=tuple(str(n) for n in kept),
            match_all=match_all,
            contains_ipv4_loopback=contains_loopback,
        )

    def contains(self, ip: str) -> bool:
        """Whether NodePorts are accepted on ``ip`` (an address of the family)."""
        addr = _v.parse_ip(ip)
        if addr is None or _family(addr.version) != self.ip_family:
            return False
        return any(addr in ipaddress.ip_network(c) for c in self.cidrs)

    def node_ips(self, candidates: Iterable[str]) -> tuple[str, ...]:
        """The candidates (the node's IPs) NodePorts listen on (``GetNodeIPs``), deduplicated."""
        return tuple(dict.fromkeys(ip for ip in candidates if self.contains(ip)))


@attrs.frozen
class LocalTrafficDetector:
    """How a proxier tells traffic from local pods apart (``LocalTrafficDetector``).

    ``cidr``: the ClusterCIDR (first cluster CIDR of the family) or NodeCIDR
    (first pod CIDR of the node of the family) detectors; ``interface_name``:
    BridgeInterface; ``interface_prefix``: InterfaceNamePrefix. With none set
    the detector is the no-op one (``implemented`` false): kube-proxy then
    cannot tell pod traffic from other traffic.
    """

    mode: str
    cidr: str | None = None
    interface_name: str | None = None
    interface_prefix: str | None = None

    @property
    def implemented(self) -> bool:
        return bool(self.cidr or self.interface_name or self.interface_prefix)

    @classmethod
    def for_node(cls, cfg: ProxyConfig, node: NodeInfo) -> LocalTrafficDetector:
        """``getLocalDetectors`` for this proxier's family."""
        mode = cfg.detect_local_mode
        if mode == "ClusterCIDR":
            return cls(mode, cidr=cfg.cluster_cidr_for_family())
        if mode == "NodeCIDR":
            return cls(mode, cidr=node.pod_cidrs[0] if node.pod_cidrs else None)
        if mode == "BridgeInterface":
            return cls(mode, interface_name=cfg.bridge_interface or None)
        return cls(mode, interface_prefix=cfg.interface_name_prefix or None)


# -- the view ---------------------------------------------------------------------


def _sorted_ports(value: Iterable[ServicePortInfo]) -> tuple[ServicePortInfo, ...]:
    return tuple(sorted(value, key=lambda p: p.name))


@attrs.frozen
class NodeView:
    """Everything one kube-proxy proxier (one node, one IP family) programs.

    ``service_ports`` holds only the ports kube-proxy would program, sorted by
    :class:`ServicePortName`; iterate the view or look ports up by name.
    Build it with :meth:`from_cluster` or, without a cluster, :meth:`from_objects`.
    """

    node: NodeInfo
    config: ProxyConfig
    service_ports: tuple[ServicePortInfo, ...] = attrs.field(default=(), converter=_sorted_ports)
    _index: dict[ServicePortName, ServicePortInfo] = attrs.field(
        init=False, eq=False, repr=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        index = {p.name: p for p in self.service_ports}
        if len(index) != len(self.service_ports):
            raise NodeViewError("service ports must have distinct names")
        object.__setattr__(self, "_index", index)

    # -- builders ---------------------------------------------------------------
    @classmethod
    def from_objects(
        cls,
        services: Iterable[Service],
        endpoint_slices: Iterable[EndpointSlice] = (),
        nodes: Iterable[Node] = (),
        *,
        node_name: str,
        config: ProxyConfig | None = None,
        node_ips: Iterable[str] | None = None,
    ) -> NodeView:
        """The view of node ``node_name`` from plain API objects (no cluster needed).

        Slices are matched to Services by the ``kubernetes.io/service-name``
        label and namespace. The Node named ``node_name`` (if among ``nodes``)
        gives the node's IPs, zone and pod CIDRs; ``node_ips`` override its
        IPs. A Service or Node given twice is a :class:`NodeViewError`.
        """
        cfg = config if config is not None else ProxyConfig()
        node_obj = None
        seen_nodes: set[str] = set()
        for n in nodes:
            if n.name in seen_nodes:
                raise NodeViewError(f'Node "{n.name}" given twice')
            seen_nodes.add(n.name)
            if n.name == node_name:
                node_obj = n
        node = NodeInfo.from_node(node_obj, cfg.ip_family, name=node_name, node_ips=node_ips)
        slices_by_service: dict[tuple[str, str], list[EndpointSlice]] = {}
        for sl in endpoint_slices:
            owner = sl.metadata.labels.get(LABEL_SERVICE_NAME)
            if owner:
                slices_by_service.setdefault((sl.metadata.namespace, owner), []).append(sl)
        seen: set[tuple[str, str]] = set()
        ports: list[ServicePortInfo] = []
        ip_cache: dict[str, tuple[str, str] | None] = {}
        for svc in services:
            if svc.key in seen:
                raise NodeViewError(f'Service "{svc.namespace}/{svc.name}" given twice')
            seen.add(svc.key)
            ports += _service_ports(
                svc, slices_by_service.get(svc.key, ()), node=node, cfg=cfg, ip_cache=ip_cache
            )
        return cls(node=node, config=cfg, service_ports=ports)

    @classmethod
    def from_cluster(
        cls,
        cluster: Cluster,
        node_name: str,
        config: ProxyConfig | None = None,
        *,
        node_ips: Iterable[str] | None = None,
    ) -> NodeView:
        """The view of node ``node_name`` of a :class:`~kservice.control.cluster.Cluster`.

        Uses the cluster's Services, each with ``cluster.endpoint_slices_for``
        (the controller's slices, or those applied by hand), and the Node
        object named ``node_name`` when the cluster has one.
        """
        cfg = config if config is not None else ProxyConfig()
        node_obj = next((n for n in cluster.nodes if n.name == node_name), None)
        node = NodeInfo.from_node(node_obj, cfg.ip_family, name=node_name, node_ips=node_ips)
        ports: list[ServicePortInfo] = []
        ip_cache: dict[str, tuple[str, str] | None] = {}
        for svc in cluster.services:
            if _should_skip_service(svc) or not _selected_by_labels(svc.metadata.labels, cfg):
                continue
            slices = cluster.endpoint_slices_for(svc.namespace, svc.name)
            ports += _service_ports(svc, slices, node=node, cfg=cfg, ip_cache=ip_cache)
        return cls(node=node, config=cfg, service_ports=ports)

    # -- lookups ----------------------------------------------------------------
    def __iter__(self) -> Iterator[ServicePortInfo]:
        return iter(self.service_ports)

    def __len__(self) -> int:
        return len(self.service_ports)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __getitem__(self, name: ServicePortName) -> ServicePortInfo:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no service port {name}") from None

    def get(self, name: ServicePortName, default: Any = None) -> Any:
        """The port named ``name``, or ``default``."""
        return self._index.get(name, default)

    def ports_of(self, namespace: str, name: str) -> tuple[ServicePortInfo, ...]:
        """The programmed ports of one Service, in name order."""
        return tuple(p for p in self.service_ports if p.name.key == (namespace, name))

    # -- node-level facts (derived from node + config) ---------------------------------
    @property
    def ip_family(self) -> str:
        return self.config.ip_family

    @property
    def node_port_addresses(self) -> NodePortAddresses:
        """``--nodeport-addresses`` for this family; ``primary`` becomes the node's IP.

        ``primary`` resolves to the primary node IP of the family as a /32 or
        /128 (unless it is a loopback address); a node without one matches
        every address, as upstream's resolution yields no CIDR of the family.
        """
        cidrs: Iterable[str] = self.config.node_port_addresses
        if self.config.uses_primary_node_port_addresses:
            ip = self.node.primary_ip
            cidrs = ()
            if ip is not None and not ipaddress.ip_address(ip).is_loopback:
                cidrs = (f"{ip}/{32 if self.ip_family == 'IPv4' else 128}",)
        return NodePortAddresses.for_family(self.ip_family, cidrs)

    @property
    def node_port_ips(self) -> tuple[str, ...]:
        """The node IPs NodePorts are accepted on (the node's IPs within the CIDRs)."""
        return self.node_port_addresses.node_ips(self.node.ips)

    @property
    def local_detector(self) -> LocalTrafficDetector:
        return LocalTrafficDetector.for_node(self.config, self.node)

    def health_check_node_ports(self) -> dict[tuple[str, str], int]:
        """``ServicePortMap.HealthCheckNodePorts``: Service -> healthCheckNodePort."""
        return {
            p.name.key: p.health_check_node_port
            for p in self.service_ports
            if p.health_check_node_port is not None
        }

    def local_ready_endpoints(self) -> dict[tuple[str, str], int]:
        """``EndpointsMap.LocalReadyEndpoints``: Service -> number of local ready endpoint IPs."""
        ips: dict[tuple[str, str], set[str]] = {}
        for p in self.service_ports:
            for ep in p.all_endpoints:
                if ep.ready and ep.is_local:
                    ips.setdefault(p.name.key, set()).add(ep.ip)
        return {key: len(found) for key, found in sorted(ips.items())}
