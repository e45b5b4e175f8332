"""NodeView: what kube-proxy on one node programs.

Endpoint selection cases follow upstream's pkg/proxy/topology_test.go
(TestCategorizeEndpoints, including the PreferSameNode cases); the rest cover
the Service and EndpointSlice facts kube-proxy keeps (family filtering, ipMode,
skipped Services, slice merging) and the ways a view is built.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kservice.api._base import ObjectMeta
from kservice.api.endpointslice import (
    Endpoint,
    EndpointConditions,
    EndpointHints,
    EndpointPort,
    EndpointSlice,
)
from kservice.api.node import Node
from kservice.api.pod import Pod
from kservice.api.service import Service
from kservice.control.cluster import Cluster, ClusterConfig
from kservice.errors import ConfigError, KServiceError
from kservice.proxy import (
    EndpointInfo,
    LocalTrafficDetector,
    NodeInfo,
    NodePortAddresses,
    NodeView,
    NodeViewError,
    ProxyConfig,
    ServicePortInfo,
    ServicePortName,
    categorize_endpoints,
    topology_mode_from_hints,
)

# -- builders -------------------------------------------------------------------------


def service(name: str = "svc1", ns: str = "ns1", **spec: Any) -> Service:
    body: dict[str, Any] = {"ports": [{"name": "p80", "port": 80}], "clusterIP": "172.30.0.41"}
    status = spec.pop("status", None)
    labels = spec.pop("labels", None)
    body.update(spec)
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if labels:
        meta["labels"] = labels
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": body,
    }
    if status is not None:
        manifest["status"] = status
    return Service.from_manifest(manifest)


def ep(
    *addresses: str,
    node: str | None = None,
    ready: bool | None = None,
    serving: bool | None = None,
    terminating: bool | None = None,
    zone: str | None = None,
    zones: Iterable[str] = (),
    nodes: Iterable[str] = (),
) -> Endpoint:
    hints = (
        EndpointHints(for_zones=tuple(zones), for_nodes=tuple(nodes)) if zones or nodes else None
    )
    return Endpoint(
        addresses=addresses,
        conditions=EndpointConditions(ready=ready, serving=serving, terminating=terminating),
        node_name=node,
        zone=zone,
        hints=hints,
    )


def eslice(
    name: str,
    endpoints: Iterable[Endpoint],
    ports: Iterable[tuple[str, int | None] | tuple[str, int | None, str]] = (("p80", 80),),
    *,
    service_name: str | None = "svc1",
    ns: str = "ns1",
    address_type: str = "IPv4",
    labels: dict[str, str] | None = None,
) -> EndpointSlice:
    all_labels = dict(labels or {})
    if service_name is not None:
        all_labels["kubernetes.io/service-name"] = service_name
    return EndpointSlice(
        metadata=ObjectMeta(name=name, namespace=ns, labels=all_labels),
        address_type=address_type,
        endpoints=tuple(endpoints),
        ports=tuple(
            EndpointPort(port=p[1], name=p[0], protocol=(p[2] if len(p) > 2 else "TCP"))
            for p in ports
        ),
    )


def node(
    name: str = "node-a", *ips: str, zone: str | None = "zone-a", pod_cidrs: Iterable[str] = ()
) -> Node:
    labels = {"topology.kubernetes.io/zone": zone} if zone else {}
    return Node.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"podCIDRs": list(pod_cidrs)} if pod_cidrs else {},
            "status": {"addresses": [{"type": "InternalIP", "address": ip} for ip in ips]},
        }
    )


def view(
    services: Iterable[Service],
    slices: Iterable[EndpointSlice] = (),
    nodes: Iterable[Node] = (),
    *,
    node_name: str = "node-a",
    **config: Any,
) -> NodeView:
    return NodeView.from_objects(
        services, slices, nodes, node_name=node_name, config=ProxyConfig(**config)
    )


SPN = ServicePortName("ns1", "svc1", "p80", "TCP")


# -- CategorizeEndpoints (upstream's table) ----------------------------------------------


def bep(
    endpoint: str,
    *,
    ready: bool = False,
    serving: bool = False,
    terminating: bool = False,
    local: bool = False,
    zones: Iterable[str] = (),
    nodes: Iterable[str] = (),
) -> EndpointInfo:
    """An endpoint as upstream's tests build ``BaseEndpointInfo`` (unset flags are false)."""
    ip, port = endpoint.rsplit(":", 1)
    return EndpointInfo(
        ip=ip,
        port=int(port),
        ready=ready,
        serving=serving,
        terminating=terminating,
        is_local=local,
        zone_hints=tuple(zones),
        node_hints=tuple(nodes),
    )


def port_info(
    *, itp_local: bool = False, etp_local: bool = False, node_port: int | None = None
) -> ServicePortInfo:
    return ServicePortInfo(
        name=SPN,
        cluster_ip="10.96.0.1",
        port=80,
        node_port=node_port,
        internal_policy_local=itp_local,
        external_policy_local=etp_local,
    )


def zoned(*specs: tuple[str, str, bool, bool]) -> list[EndpointInfo]:
    return [bep(e, zones=(z,), ready=r, local=loc) for e, z, r, loc in specs]


TOPO4 = zoned(
    ("10.1.2.3:80", "zone-a", True, False),
    ("10.1.2.4:80", "zone-b", True, False),
    ("10.1.2.5:80", "zone-c", True, False),
    ("10.1.2.6:80", "zone-a", True, False),
)
TOPO4_LOCAL = zoned(
    ("10.1.2.3:80", "zone-a", True, True),
    ("10.1.2.4:80", "zone-b", True, True),
    ("10.1.2.5:80", "zone-c", True, False),
    ("10.1.2.6:80", "zone-a", True, False),
)
NODE_HINTED = [
    bep("10.1.2.3:80", ready=True, zones=["zone-a"], nodes=["node-1"]),
    bep("10.1.2.4:80", ready=True, zones=["zone-b"], nodes=["node-2"]),
    bep("10.1.2.5:80", ready=True, zones=["zone-c"], nodes=["node-3"]),
    bep("10.1.2.6:80", ready=True, zones=["zone-a"], nodes=["node-4"]),
]

A = "10.0.0.0:80"
B = "10.0.0.1:80"
C = "10.0.0.2:80"


def case(
    name: str,
    info: ServicePortInfo,
    endpoints: list[EndpointInfo],
    cluster: set[str] | None,
    local: set[str] | None = None,
    all_eps: set[str] | None = None,
    *,
    node_name: str = "",
    zone: str | None = None,
    gate: bool = True,
    only_remote: bool = False,
) -> Any:
    """One row of upstream's table; None means "the port does not use this kind"."""
    args = (info, node_name, zone, gate, endpoints, cluster, local, all_eps, only_remote)
    return pytest.param(*args, id=name)


ETP_LOCAL = port_info(etp_local=True, node_port=8080)
ITP_LOCAL_NP = port_info(itp_local=True, node_port=8080)
BOTH_LOCAL = port_info(itp_local=True, etp_local=True, node_port=8080)
ITP_LOCAL = port_info(itp_local=True)
ZONE_3_6 = {"10.1.2.3:80", "10.1.2.6:80"}
ALL4 = {"10.1.2.3:80", "10.1.2.4:80", "10.1.2.5:80", "10.1.2.6:80"}
LOCAL_3_4 = {"10.1.2.3:80", "10.1.2.4:80"}
MERGED_3_4_6 = {"10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"}
READY_A_LOCAL = [bep(A, ready=True, local=True), bep(B, ready=True)]
BOTH_TERMINATING = [
    bep(A, serving=True, terminating=True),
    bep(B, serving=True, terminating=True),
]

CATEGORIZE_CASES = [
    case("topology: all hinted, endpoints for the node's zone", port_info(), TOPO4, ZONE_3_6,
         zone="zone-a"),
    case("eTP Local: topology ignored for Local endpoints", ETP_LOCAL, TOPO4_LOCAL, ZONE_3_6,
         LOCAL_3_4, MERGED_3_4_6, zone="zone-a"),
    case("iTP Local: topology ignored for Local endpoints", ITP_LOCAL_NP, TOPO4_LOCAL, ZONE_3_6,
         LOCAL_3_4, MERGED_3_4_6, zone="zone-a"),
    case("empty node labels", port_info(), TOPO4[:1], {"10.1.2.3:80"}),
    case("empty zone label", port_info(), TOPO4[:1], {"10.1.2.3:80"}, zone=""),
    case("node in different zone, no endpoint filtering", port_info(), [TOPO4[0], TOPO4[2]],
         {"10.1.2.3:80", "10.1.2.5:80"}, zone="zone-b"),
    case("unready endpoint", port_info(), [*TOPO4[:3], bep("10.1.2.6:80", zones=["zone-a"])],
         {"10.1.2.3:80"}, zone="zone-a"),
    case("only unready endpoints in same zone (should not filter)", port_info(),
         [bep("10.1.2.3:80", zones=["zone-a"]), TOPO4[1], TOPO4[2],
          bep("10.1.2.6:80", zones=["zone-a"])],
         {"10.1.2.4:80", "10.1.2.5:80"}, zone="zone-a"),
    case("missing hints, no filtering applied", port_info(),
         [TOPO4[0], TOPO4[1], bep("10.1.2.5:80", ready=True), TOPO4[3]], ALL4, zone="zone-a"),
    case("multiple hints per endpoint", port_info(),
         [bep("10.1.2.3:80", ready=True, zones=["zone-a", "zone-b", "zone-c"]),
          bep("10.1.2.4:80", ready=True, zones=["zone-b", "zone-c"]),
          bep("10.1.2.5:80", ready=True, zones=["zone-b", "zone-d"]),
          bep("10.1.2.6:80", ready=True, zones=["zone-c"])],
         {"10.1.2.3:80", "10.1.2.4:80", "10.1.2.6:80"}, zone="zone-c"),
    case("PreferSameNode falls back to same-zone when the gate is off", port_info(), NODE_HINTED,
         ZONE_3_6, node_name="node-1", zone="zone-a", gate=False),
    case("PreferSameNode available", port_info(), NODE_HINTED, {"10.1.2.3:80"},
         node_name="node-1", zone="zone-a"),
    case("PreferSameNode ignored if some endpoints unhinted", port_info(),
         [NODE_HINTED[0], bep("10.1.2.4:80", ready=True), *NODE_HINTED[2:]], ALL4,
         node_name="node-1", zone="zone-a"),
    case("PreferSameNode falls back to PreferSameZone if no endpoint for the node", port_info(),
         NODE_HINTED, ZONE_3_6, node_name="node-0", zone="zone-a"),
    case("conflicting topology and localness require merging allEndpoints", ETP_LOCAL,
         zoned((A, "zone-a", True, True), (B, "zone-b", True, True),
               (C, "zone-a", True, False), ("10.0.0.3:80", "zone-b", True, False)),
         {A, C}, {A, B}, {A, B, C}, zone="zone-a"),
    # Current upstream returns early (nil everywhere) for an empty endpoint list.
    case("iTP Local, with empty endpoints", ITP_LOCAL, [], None, set()),
    case("iTP Local, but all endpoints are remote", ITP_LOCAL,
         [bep(A, ready=True), bep(B, ready=True)], None, set(), only_remote=True),
    case("iTP Local, all endpoints are local", ITP_LOCAL,
         [bep(A, ready=True, local=True), bep(B, ready=True, local=True)], None, {A, B}),
    case("iTP Local, some endpoints are local", ITP_LOCAL, READY_A_LOCAL, None, {A}),
    case("Cluster traffic policy, endpoints not Ready", port_info(), [bep(A), bep(B)], set()),
    case("Cluster traffic policy, some endpoints are Ready", port_info(),
         [bep(A), bep(B, ready=True)], {B}),
    case("Cluster traffic policy, all endpoints are terminating", port_info(),
         [bep(A, serving=True, terminating=True, local=True),
          bep(B, serving=True, terminating=True)], {A, B}),
    case("iTP Local, eTP Cluster, some endpoints local", ITP_LOCAL_NP, READY_A_LOCAL,
         {A, B}, {A}, {A, B}),
    case("iTP Cluster, eTP Local, some endpoints local", ETP_LOCAL, READY_A_LOCAL,
         {A, B}, {A}, {A, B}),
    case("iTP Local, eTP Local, some endpoints local", BOTH_LOCAL, READY_A_LOCAL,
         {A, B}, {A}, {A, B}),
    case("iTP Local, eTP Local, all endpoints remote", BOTH_LOCAL,
         [bep(A, ready=True), bep(B, ready=True)], {A, B}, set(), {A, B}),
    case("iTP Local, eTP Local, all endpoints remote and terminating", BOTH_LOCAL,
         BOTH_TERMINATING, {A, B}, set(), {A, B}, only_remote=True),
    case("iTP Cluster, eTP Local, with terminating endpoints", ETP_LOCAL,
         [bep(A, ready=True), bep(B, local=True),
          bep(C, serving=True, terminating=True, local=True),
          bep("10.0.0.3:80", serving=True, terminating=True)],
         {A}, {C}, {A, C}),
    case("externalTrafficPolicy ignored if not externally accessible",
         port_info(etp_local=True), [bep(A, ready=True), bep(B, ready=True, local=True)], {A, B}),
    case("no cluster endpoints for iTP Local internal-only service", ITP_LOCAL,
         [bep(A, ready=True), bep(B, ready=True, local=True)], None, {B}),
]  # fmt: skip


@pytest.mark.parametrize(
    (
        "info",
        "node_name",
        "zone",
        "gate",
        "endpoints",
        "cluster",
        "local",
        "all_eps",
        "only_remote",
    ),
    CATEGORIZE_CASES,
)
def test_categorize_endpoints(
    info: ServicePortInfo,
    node_name: str,
    zone: str | None,
    gate: bool,
    endpoints: list[EndpointInfo],
    cluster: set[str] | None,
    local: set[str] | None,
    all_eps: set[str] | None,
    only_remote: bool,
) -> None:
    endpoints = sorted(endpoints, key=str)
    got = categorize_endpoints(
        endpoints,
        uses_cluster=info.uses_cluster_endpoints,
        uses_local=info.uses_local_endpoints,
        node_name=node_name,
        zone=zone,
        prefer_same_node=gate,
    )
    # None in the table means "the service port does not use this kind".
    assert info.uses_cluster_endpoints == (cluster is not None) or not endpoints
    assert info.uses_local_endpoints == (local is not None) or not endpoints
    assert {str(e) for e in got.cluster} == (cluster or set())
    assert {str(e) for e in got.local} == (local or set())
    if all_eps is None:
        all_eps = cluster if local is None else local
    assert {str(e) for e in got.all_reachable} == (all_eps or set())
    assert got.has_any == (bool(all_eps) or only_remote)
    # Results keep (or, when merged, take) endpoint-string order.
    for part in got.cluster, got.local, got.all_reachable:
        assert [str(e) for e in part] == sorted(str(e) for e in part)


@pytest.mark.parametrize(
    ("endpoints", "node_name", "zone", "gate", "mode"),
    [
        (NODE_HINTED, "node-1", "zone-a", True, "PreferSameNode"),
        (NODE_HINTED, "node-1", "zone-a", False, "PreferSameZone"),
        (NODE_HINTED, "node-9", "zone-z", True, ""),
        (TOPO4, "", None, True, ""),
        ([bep("10.0.0.1:80", zones=["zone-a"])], "", "zone-a", True, ""),  # no ready endpoint
        ([], "node-1", "zone-a", True, ""),
    ],
)
def test_topology_mode_from_hints(
    endpoints: list[EndpointInfo], node_name: str, zone: str | None, gate: bool, mode: str
) -> None:
    assert topology_mode_from_hints(endpoints, node_name, zone, prefer_same_node=gate) == mode


def test_selection_records_topology_mode() -> None:
    sel = categorize_endpoints(NODE_HINTED, uses_cluster=True, uses_local=False, node_name="node-1")
    assert sel.topology_mode == "PreferSameNode" and [str(e) for e in sel.cluster] == [
        "10.1.2.3:80"
    ]


# -- selection invariants (Hypothesis) ------------------------------------------------------

_endpoint_sets = st.lists(
    st.builds(
        EndpointInfo,
        ip=st.sampled_from([f"10.0.0.{i}" for i in range(8)]),
        port=st.just(80),
        ready=st.booleans(),
        serving=st.booleans(),
        terminating=st.booleans(),
        is_local=st.booleans(),
        zone_hints=st.lists(st.sampled_from(["zone-a", "zone-b"]), max_size=2),
        node_hints=st.lists(st.sampled_from(["node-a", "node-b"]), max_size=2),
    ),
    max_size=8,
    unique_by=lambda e: e.ip,
).map(lambda eps: sorted(eps, key=str))


@given(
    _endpoint_sets,
    st.booleans(),
    st.booleans(),
    st.sampled_from([None, "zone-a", "zone-b"]),
    st.booleans(),
)
def test_selection_invariants(
    endpoints: list[EndpointInfo], itp_local: bool, accessible: bool, zone: str | None, gate: bool
) -> None:
    info = port_info(itp_local=itp_local, etp_local=True, node_port=30080 if accessible else None)
    sel = categorize_endpoints(
        endpoints,
        uses_cluster=info.uses_cluster_endpoints,
        uses_local=info.uses_local_endpoints,
        node_name="node-a",
        zone=zone,
        prefer_same_node=gate,
    )
    every = set(endpoints)
    cluster, local, reachable = set(sel.cluster), set(sel.local), set(sel.all_reachable)
    # Everything selected is one of the endpoints; all_reachable is exactly the union.
    assert cluster <= every and local <= every
    assert reachable == cluster | local
    assert cluster <= reachable and local <= reachable
    if not info.uses_cluster_endpoints:
        assert not cluster
    if not info.uses_local_endpoints:
        assert not local
    # Local endpoints are local.
    assert all(e.is_local for e in local)
    # Fallback to serving-terminating endpoints only when nothing (resp. nothing local) is ready.
    any_ready = any(e.ready for e in endpoints)
    any_local_ready = any(e.ready and e.is_local for e in endpoints)
    assert all(e.ready for e in cluster) or not any_ready
    assert all(e.ready for e in local) or not any_local_ready
    assert all(e.ready or (e.serving and e.terminating) for e in cluster | local)
    # Without topology and with ready local endpoints, local <= cluster (upstream's shortcut).
    if info.uses_cluster_endpoints and sel.topology_mode == "" and all(e.ready for e in local):
        assert local <= cluster
    # has_any: some endpoint is usable somewhere in the cluster.
    usable = any(e.ready or (e.serving and e.terminating) for e in endpoints)
    assert sel.has_any == (usable and (info.uses_local_endpoints or bool(cluster)))
    # Deterministic and order-stable.
    assert sel == categorize_endpoints(
        endpoints,
        uses_cluster=info.uses_cluster_endpoints,
        uses_local=info.uses_local_endpoints,
        node_name="node-a",
        zone=zone,
        prefer_same_node=gate,
    )
    assert list(sel.all_reachable) == sorted(sel.all_reachable, key=str)


# -- Services: what kube-proxy keeps --------------------------------------------------------


def test_service_port_info_fields() -> None:
    svc = service(
        type="LoadBalancer",
        ports=[
            {"name": "p80", "port": 80, "nodePort": 30080},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ],
        externalTrafficPolicy="Local",
        healthCheckNodePort=30000,
        sessionAffinity="ClientIP",
        trafficDistribution="PreferClose",
        status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}},
    )
    v = view([svc])
    assert [str(p.name) for p in v] == ["ns1/svc1:dns", "ns1/svc1:p80"]
    p80 = v[SPN]
    assert (p80.cluster_ip, p80.port, p80.protocol, p80.node_port) == (
        "172.30.0.41",
        80,
        "TCP",
        30080,
    )
    assert p80.load_balancer_vips == ("1.2.3.4",)
    assert (p80.session_affinity, p80.session_affinity_timeout) == ("ClientIP", 10800)
    assert p80.client_ip_affinity and p80.sticky_max_age_seconds == 10800
    assert p80.health_check_node_port == 30000 and p80.traffic_distribution == "PreferClose"
    assert p80.external_policy_local and not p80.internal_policy_local
    assert p80.externally_accessible and p80.uses_cluster_endpoints and p80.uses_local_endpoints
    assert p80.name_string == "ns1/svc1:p80"
    dns = v[ServicePortName("ns1", "svc1", "dns", "UDP")]
    assert dns.protocol == "UDP" and dns.node_port is None
    assert v.health_check_node_ports() == {("ns1", "svc1"): 30000}


def test_no_affinity_and_cluster_policies() -> None:
    p = view([service()])[SPN]
    assert p.session_affinity == "None" and p.session_affinity_timeout is None
    assert p.sticky_max_age_seconds == 0 and not p.client_ip_affinity
    assert p.health_check_node_port is None and not p.externally_accessible
    assert p.uses_cluster_endpoints and not p.uses_local_endpoints


def test_external_ips_and_source_ranges_are_filtered_by_family() -> None:
    svc = service(
        type="LoadBalancer",
        externalIPs=["192.168.99.11", "2001:db8::11", "192.168.99.12"],
        loadBalancerSourceRanges=[" 203.0.113.0/25 ", "2001:db8:1::/64", "10.1.2.3/8"],
        status={
            "loadBalancer": {
                "ingress": [
                    {"ip": "1.2.3.4"},  # ipMode defaulted to VIP
                    {"ip": "1.2.3.5", "ipMode": "Proxy"},  # left to the load balancer
                    {"ip": "2001:db8::99", "ipMode": "VIP"},
                    {"hostname": "lb.example.com"},
                ]
            }
        },
    )
    v4 = view([svc])[SPN]
    assert v4.external_ips == ("192.168.99.11", "192.168.99.12")
    assert v4.load_balancer_vips == ("1.2.3.4",)
    # Trimmed, and in Go's IPNet.String form (host bits cleared).
    assert v4.load_balancer_source_ranges == ("203.0.113.0/25", "10.0.0.0/8")


def test_load_balancer_ingress_with_unset_ip_mode_is_a_vip() -> None:
    # Objects built by hand may leave ipMode unset: IsVIPMode treats nil as VIP.
    svc = attrs.evolve(
        service(type="LoadBalancer"),
        load_balancer_ingress=(
            attrs.evolve(
                service(
                    type="LoadBalancer", status={"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}}
                ).load_balancer_ingress[0],
                ip_mode=None,
            ),
        ),
    )
    assert view([svc])[SPN].load_balancer_vips == ("5.6.7.8",)


def test_dual_stack_service_with_an_ipv6_proxier() -> None:
    svc = service(
        clusterIP="172.30.0.41",
        clusterIPs=["172.30.0.41", "fd00:30::41"],
        ipFamilies=["IPv4", "IPv6"],
        ipFamilyPolicy="RequireDualStack",
        type="LoadBalancer",
        ports=[{"name": "p80", "port": 80, "nodePort": 30080}],
        externalIPs=["192.168.99.11", "2001:db8::0011"],
        loadBalancerSourceRanges=["10.0.0.0/8", "2001:DB8::/32"],
    )
    v4s = eslice("s4", [ep("10.180.0.1", node="node-a")])
    v6s = eslice("s6", [ep("fd00:10:180::1", node="node-a")], address_type="IPv6")
    v6 = view([svc], [v4s, v6s], ip_family="IPv6")
    p = v6[SPN]
    assert p.cluster_ip == "fd00:30::41"
    assert p.external_ips == ("2001:db8::11",)  # canonical text
    assert p.load_balancer_source_ranges == ("2001:db8::/32",)
    assert [e.endpoint_string for e in p.all_endpoints] == ["[fd00:10:180::1]:80"]
    v4 = view([svc], [v4s, v6s])[SPN]
    assert v4.cluster_ip == "172.30.0.41"
    assert [e.endpoint_string for e in v4.all_endpoints] == ["10.180.0.1:80"]


def test_single_stack_service_is_invisible_to_the_other_family() -> None:
    assert len(view([service()], ip_family="IPv6")) == 0
    v6 = service(clusterIP="fd00::41")
    assert len(view([v6])) == 0
    assert view([v6], ip_family="IPv6")[SPN].cluster_ip == "fd00::41"


def test_cluster_ip_by_family_without_ip_families() -> None:
    # GetClusterIPByFamily "allowing skew": no ipFamilies, use clusterIP if it is of the family.
    raw = attrs.evolve(service(), ip_families=())
    assert view([raw])[SPN].cluster_ip == "172.30.0.41"
    assert len(view([raw], ip_family="IPv6")) == 0


@pytest.mark.parametrize(
    "svc",
    [
        service(type="ExternalName", externalName="example.com", clusterIP=None, ports=[]),
        service(clusterIP="None", selector={"app": "x"}),
        attrs.evolve(service(), cluster_ip=None, cluster_ips=()),
        service(labels={"service.kubernetes.io/service-proxy-name": "other-proxy"}),
        service(labels={"service.kubernetes.io/headless": ""}),
    ],
    ids=["ExternalName", "headless", "no-cluster-ip", "other-proxy", "headless-label"],
)
def test_skipped_services(svc: Service) -> None:
    assert list(view([svc], [eslice("s", [ep("10.180.0.1")])])) == []


def test_external_name_service_with_a_cluster_ip_is_skipped() -> None:
    svc = attrs.evolve(service(), type="ExternalName", external_name="example.com")
    assert len(view([svc])) == 0


def test_service_proxy_name_selects_labelled_services() -> None:
    mine = service("mine", labels={"service.kubernetes.io/service-proxy-name": "kservice"})
    other = service("other")
    mine_slice = eslice(
        "m", [ep("10.180.0.1")], service_name="mine",
        labels={"service.kubernetes.io/service-proxy-name": "kservice"},
    )  # fmt: skip
    v = view([mine, other], [mine_slice], service_proxy_name="kservice")
    assert [p.name.name for p in v] == ["mine"]
    assert [str(e) for e in v.ports_of("ns1", "mine")[0].all_endpoints] == ["10.180.0.1:80"]


# -- EndpointSlices: how endpoints are read ------------------------------------------------------


def test_endpoint_fields_from_the_slice() -> None:
    slices = [
        eslice(
            "s1",
            [
                ep("10.180.0.1", node="node-a", zone="zone-a", zones=["zone-a"], nodes=["node-a"]),
                ep("10.180.0.2", node="node-b", ready=False, serving=True, terminating=True),
                ep("10.180.0.3", ready=False, serving=False),
            ],
        )
    ]
    eps = view([service()], slices)[SPN].all_endpoints
    assert [str(e) for e in eps] == ["10.180.0.1:80", "10.180.0.2:80", "10.180.0.3:80"]
    a, b, c = eps
    assert (a.ready, a.serving, a.terminating, a.is_local) == (True, True, False, True)
    assert (a.zone, a.node_name, a.zone_hints, a.node_hints) == (
        "zone-a",
        "node-a",
        ("zone-a",),
        ("node-a",),
    )
    assert (b.ready, b.serving, b.terminating, b.is_local) == (False, True, True, False)
    assert (c.ready, c.serving, c.terminating, c.is_local, c.node_name) == (
        False,
        False,
        False,
        False,
        None,
    )
    # Node hints are only read with the PreferSameTrafficDistribution gate.
    off = view([service()], slices, prefer_same_traffic_distribution=False)[SPN]
    assert off.all_endpoints[0].node_hints == () and off.all_endpoints[0].zone_hints == ("zone-a",)


def test_is_local_needs_a_node_name() -> None:
    eps = view([service()], [eslice("s", [ep("10.180.0.1", node="")])], node_name="")[
        SPN
    ].all_endpoints
    assert not eps[0].is_local


def test_endpoint_port_is_looked_up_by_name() -> None:
    svc = service(
        ports=[
            {"name": "http", "port": 80},
            {"name": "https", "port": 443},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ]
    )
    slices = [
        eslice(
            "s1", [ep("10.180.0.1")], ports=[("https", 8443), ("http", 8080), ("dns", 5353, "TCP")]
        ),
        eslice("s2", [ep("10.180.0.2")], ports=[("http", 9090)]),
    ]
    v = view([svc], slices)
    http = v[ServicePortName("ns1", "svc1", "http")]
    https = v[ServicePortName("ns1", "svc1", "https")]
    dns = v[ServicePortName("ns1", "svc1", "dns", "UDP")]
    assert [str(e) for e in http.all_endpoints] == ["10.180.0.1:8080", "10.180.0.2:9090"]
    assert [str(e) for e in https.all_endpoints] == ["10.180.0.1:8443"]
    assert dns.all_endpoints == ()  # the slice's dns port is TCP: another ServicePortName
    assert not dns.has_any_endpoints


def test_unnamed_port() -> None:
    svc = service(ports=[{"port": 80}])
    v = view([svc], [eslice("s", [ep("10.180.0.1")], ports=[("", 8080)])])
    (p,) = v
    assert str(p.name) == "ns1/svc1" and [str(e) for e in p.all_endpoints] == ["10.180.0.1:8080"]


def test_endpoints_are_merged_across_slices_and_deduplicated() -> None:
    slices = [
        # The same IP in two slices: the non-terminating copy wins, whatever the order.
        eslice("b", [ep("10.180.0.1", node="node-a", ready=False, serving=True, terminating=True)]),
        eslice("a", [ep("10.180.0.1", node="node-b"), ep("10.180.0.2")]),
        eslice("c", [ep("10.180.0.3"), ep("10.180.0.10")]),
    ]
    eps = view([service()], slices)[SPN].all_endpoints
    # Sorted by endpoint string, as Go compares strings (":" sorts after "0").
    assert [str(e) for e in eps] == [
        "10.180.0.10:80",
        "10.180.0.1:80",
        "10.180.0.2:80",
        "10.180.0.3:80",
    ]
    assert eps[1].ready and eps[1].node_name == "node-b"
    reordered = view([service()], list(reversed(slices)))[SPN].all_endpoints
    assert reordered == eps


def test_ignored_slices_ports_and_endpoints() -> None:
    slices = [
        eslice("no-ports", [ep("10.180.0.1")], ports=[]),  # endpoints without ports
        eslice("nil-port", [ep("10.180.0.2")], ports=[("p80", None)]),  # port number unset
        eslice("zero-port", [ep("10.180.0.3")], ports=[("p80", 0)]),
        eslice("fqdn", [ep("example.com")], address_type="FQDN"),
        eslice("v6", [ep("fd00::4")], address_type="IPv6"),
        eslice("unlabelled", [ep("10.180.0.5")], service_name=None),
        eslice("other-ns", [ep("10.180.0.6")], ns="ns2"),
        eslice("headless", [ep("10.180.0.7")], labels={"service.kubernetes.io/headless": ""}),
        eslice("no-address", [Endpoint(addresses=())]),
        eslice("bad-address", [ep("not-an-ip"), ep("fd00::8")]),  # wrong family, unparseable
        eslice("good", [ep("10.180.0.9", "10.180.0.99")]),  # only the first address counts
    ]
    p = view([service()], slices)[SPN]
    assert [str(e) for e in p.all_endpoints] == ["10.180.0.9:80"]


def test_endpoint_ips_are_canonicalised() -> None:
    slices = [
        eslice("s4", [ep("010.180.000.001")]),
        eslice("s6", [ep("FD00:0010:0180:0000:0000:0000:0000:0001")], address_type="IPv6"),
    ]
    svc = service(
        clusterIPs=["172.30.0.41", "fd00:30::41"],
        ipFamilies=["IPv4", "IPv6"],
        ipFamilyPolicy="RequireDualStack",
    )
    assert [str(e) for e in view([svc], slices)[SPN].all_endpoints] == ["10.180.0.1:80"]
    v6 = view([svc], slices, ip_family="IPv6")[SPN]
    assert [str(e) for e in v6.all_endpoints] == ["[fd00:10:180::1]:80"]


def test_traffic_policy_local_on_a_node() -> None:
    svc = service(
        type="NodePort",
        ports=[{"name": "p80", "port": 80, "nodePort": 30080}],
        externalTrafficPolicy="Local",
    )
    slices = [eslice("s", [ep("10.180.0.1", node="node-a"), ep("10.180.0.2", node="node-b")])]
    a = view([svc], slices)[SPN]
    assert [str(e) for e in a.local_endpoints] == ["10.180.0.1:80"]
    assert [str(e) for e in a.cluster_endpoints] == ["10.180.0.1:80", "10.180.0.2:80"]
    assert a.local_ready_endpoint_ips == ("10.180.0.1",)
    c = view([svc], slices, node_name="node-c")[SPN]
    assert c.local_endpoints == () and c.has_any_endpoints
    assert view([svc], slices).local_ready_endpoints() == {("ns1", "svc1"): 1}


def test_topology_hints_pick_the_zone() -> None:
    slices = [
        eslice(
            "s",
            [
                ep("10.180.0.1", node="node-a", zone="zone-a", zones=["zone-a"]),
                ep("10.180.0.2", node="node-b", zone="zone-b", zones=["zone-b"]),
            ],
        )
    ]
    nodes = [node("node-a", "192.168.0.1", zone="zone-a")]
    p = view([service()], slices, nodes)[SPN]
    assert p.topology_mode == "PreferSameZone"
    assert [str(e) for e in p.cluster_endpoints] == ["10.180.0.1:80"]
    # A node without a zone label ignores zone hints.
    p = view([service()], slices, [node("node-a", "192.168.0.1", zone=None)])[SPN]
    assert p.topology_mode == "" and len(p.cluster_endpoints) == 2


# -- the view ------------------------------------------------------------------------------------


def test_lookup_and_iteration() -> None:
    svcs = [
        service("b"),
        service("a", ports=[{"name": "z", "port": 1}, {"name": "y", "port": 2}]),
        service("c", ns="ns0"),
    ]
    v = view(svcs)
    names = [str(p.name) for p in v]
    assert names == ["ns0/c:p80", "ns1/a:y", "ns1/a:z", "ns1/b:p80"]
    assert len(v) == 4 and ServicePortName("ns1", "a", "y") in v and "ns1/a:y" not in v
    assert v.get(ServicePortName("ns1", "nope", "p80")) is None
    with pytest.raises(KeyError, match="no service port ns1/nope:p80"):
        v[ServicePortName("ns1", "nope", "p80")]
    assert [p.name.port for p in v.ports_of("ns1", "a")] == ["y", "z"]
    assert v.ip_family == "IPv4"


def test_view_is_deterministic_and_hashable() -> None:
    svcs = [service(f"svc{i}", clusterIP=f"172.30.0.{i}") for i in range(1, 6)]
    slices = [
        eslice(f"s{i}-{j}", [ep(f"10.180.{i}.{j}")], service_name=f"svc{i}")
        for i in range(1, 6)
        for j in range(3)
    ]
    first = view(svcs, slices)
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(svcs)
        rng.shuffle(slices)
        again = view(svcs, slices)
        assert again == first and hash(again) == hash(first)
        assert again.service_ports == first.service_ports


def test_duplicate_objects_are_rejected() -> None:
    with pytest.raises(NodeViewError, match='Service "ns1/svc1" given twice'):
        view([service(), service()])
    with pytest.raises(NodeViewError, match='Node "node-a" given twice'):
        view([service()], nodes=[node(), node()])
    assert issubclass(NodeViewError, KServiceError) and issubclass(NodeViewError, ValueError)
    p = view([service()])[SPN]
    with pytest.raises(NodeViewError, match="distinct names"):
        NodeView(node=NodeInfo("n"), config=ProxyConfig(), service_ports=[p, p])


def test_node_info_from_the_node_object() -> None:
    n = Node.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
            "spec": {"podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64"]},
            "status": {
                "addresses": [
                    {"type": "ExternalIP", "address": "203.0.113.5"},
                    {"type": "Hostname", "address": "node-a"},
                    {"type": "InternalIP", "address": "192.168.0.5"},
                    {"type": "InternalIP", "address": "fd00::5"},
                    {"type": "InternalIP", "address": "192.168.0.5"},
                ]
            },
        }
    )
    v4 = NodeInfo.from_node(n, "IPv4")
    assert v4 == NodeInfo(
        "node-a", "IPv4", ("192.168.0.5", "203.0.113.5"), "zone-a", ("10.244.1.0/24",)
    )
    assert v4.primary_ip == "192.168.0.5"
    v6 = NodeInfo.from_node(n, "IPv6")
    assert (v6.ips, v6.pod_cidrs) == (("fd00::5",), ("fd00:244:1::/64",))
    given_ips = NodeInfo.from_node(n, "IPv4", node_ips=["10.0.0.9", "fd00::9"])
    assert given_ips.ips == ("10.0.0.9",) and given_ips.zone == "zone-a"
    assert NodeInfo.from_node(None, "IPv4", name="ghost") == NodeInfo("ghost")
    assert NodeInfo("x").primary_ip is None
    with pytest.raises(ConfigError, match="invalid node IP"):
        NodeInfo.from_node(n, "IPv4", node_ips=["nope"])


def test_view_node_from_objects_and_node_ips() -> None:
    nodes = [
        node("node-b", "192.168.0.2"),
        node("node-a", "192.168.0.1", pod_cidrs=["10.244.0.0/24"]),
    ]
    v = view([service()], nodes=nodes)
    assert v.node == NodeInfo("node-a", "IPv4", ("192.168.0.1",), "zone-a", ("10.244.0.0/24",))
    v = NodeView.from_objects([service()], [], nodes, node_name="node-a", node_ips=["10.1.1.1"])
    assert v.node.ips == ("10.1.1.1",)
    assert view([service()], nodes=nodes, node_name="missing").node == NodeInfo("missing")


# -- node ports and local traffic ----------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "cidrs", "expected", "match_all", "loopback"),
    [
        ("IPv4", [], ("0.0.0.0/0",), True, True),
        ("IPv6", [], ("::/0",), True, False),
        ("IPv4", ["10.0.0.0/8", "2001:db8::/64"], ("10.0.0.0/8",), False, False),
        ("IPv6", ["10.0.0.0/8", "2001:db8::/64"], ("2001:db8::/64",), False, False),
        ("IPv4", ["2001:db8::/64"], ("0.0.0.0/0",), True, True),
        (
            "IPv4",
            ["127.0.0.1/32", "1.2.3.0/24"],
            ("127.0.0.1/32", "1.2.3.0/24"),
            False,
            True,
        ),
        ("IPv4", ["10.0.0.0/8", "0.0.0.0/0", "1.2.3.0/24"], ("0.0.0.0/0",), True, True),
        ("IPv4", ["10.1.2.3/8"], ("10.0.0.0/8",), False, False),
    ],
)
def test_node_port_addresses(
    family: str, cidrs: list[str], expected: tuple[str, ...], match_all: bool, loopback: bool
) -> None:
    npa = NodePortAddresses.for_family(family, cidrs)
    assert (npa.cidrs, npa.match_all, npa.contains_ipv4_loopback) == (expected, match_all, loopback)


def test_node_port_ips() -> None:
    n = node("node-a", "192.168.0.1", "10.0.0.1", "fd00::1")
    assert view([], nodes=[n]).node_port_ips == ("192.168.0.1", "10.0.0.1")
    assert view([], nodes=[n], node_port_addresses=["10.0.0.0/8"]).node_port_ips == ("10.0.0.1",)
    primary = view([], nodes=[n], node_port_addresses="primary")
    assert primary.node_port_addresses.cidrs == ("192.168.0.1/32",)
    assert primary.node_port_ips == ("192.168.0.1",)
    v6 = view([], nodes=[n], node_port_addresses=["primary"], ip_family="IPv6")
    assert v6.node_port_addresses.cidrs == ("fd00::1/128",) and v6.node_port_ips == ("fd00::1",)
    # "primary" on a node without an IP of the family matches everything, as upstream.
    bare = view([], node_port_addresses=["primary"])
    assert bare.node_port_addresses.match_all
    assert not NodePortAddresses.for_family("IPv4", ["10.0.0.0/8"]).contains("fd00::1")
    assert not NodePortAddresses.for_family("IPv4", ["10.0.0.0/8"]).contains("junk")


def test_local_traffic_detectors() -> None:
    n = node("node-a", "192.168.0.1", pod_cidrs=["10.244.3.0/24", "fd00:244:3::/64"])
    cc = view([], nodes=[n], cluster_cidrs="10.244.0.0/16,fd00:244::/48").local_detector
    assert cc == LocalTrafficDetector("ClusterCIDR", cidr="10.244.0.0/16") and cc.implemented
    cc6 = view([], nodes=[n], cluster_cidrs="10.244.0.0/16,fd00:244::/48", ip_family="IPv6")
    assert cc6.local_detector.cidr == "fd00:244::/48"
    assert not view([], nodes=[n]).local_detector.implemented  # no cluster CIDR: no-op
    nc = view([], nodes=[n], detect_local_mode="NodeCIDR", ip_family="IPv6").local_detector
    assert nc == LocalTrafficDetector("NodeCIDR", cidr="fd00:244:3::/64")
    br = view([], detect_local_mode="BridgeInterface", bridge_interface="cbr0").local_detector
    assert br.interface_name == "cbr0" and br.implemented
    pre = view(
        [], detect_local_mode="InterfaceNamePrefix", interface_name_prefix="veth"
    ).local_detector
    assert pre.interface_prefix == "veth" and pre.implemented


# -- ProxyConfig ---------------------------------------------------------------------------------


def test_proxy_config_defaults() -> None:
    cfg = ProxyConfig()
    assert (cfg.mode, cfg.ip_family, cfg.detect_local_mode) == ("iptables", "IPv4", "ClusterCIDR")
    assert (cfg.masquerade_all, cfg.masquerade_bit, cfg.masquerade_value) == (False, 14, 0x4000)
    assert cfg.masquerade_mark == "0x00004000"  # Go's %#08x
    assert (cfg.ipvs_scheduler, cfg.node_port_addresses, cfg.cluster_cidrs) == ("rr", (), ())
    assert cfg.localhost_nodeports and cfg.localhost_nodeports_enabled
    assert not ProxyConfig(mode="nftables").localhost_nodeports_enabled
    assert not ProxyConfig(ip_family="IPv6").localhost_nodeports_enabled
    assert ProxyConfig(mode="", ipvs_scheduler="", detect_local_mode="") == cfg
    assert ProxyConfig(cluster_cidrs=" 10.0.0.0/8, fd00::/48").cluster_cidrs == (
        "10.0.0.0/8",
        "fd00::/48",
    )
    assert ProxyConfig(cluster_cidrs="10.1.2.3/8").cluster_cidr_for_family() == "10.0.0.0/8"
    assert (
        ProxyConfig(cluster_cidrs="10.1.2.3/8", ip_family="IPv6").cluster_cidr_for_family() is None
    )
    assert ProxyConfig(masquerade_bit=0).masquerade_mark == "0x00000001"
    assert ProxyConfig().to_dict()["masqueradeBit"] == 14


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"masquerade_bit": 32},
            "IPTables.MasqueradeBit: Invalid value: 32: must be within the range [0, 31]",
        ),
        ({"masquerade_bit": -1}, "must be within the range [0, 31]"),
        ({"masquerade_bit": "14"}, 'Invalid value: "14": must be an integer'),
        (
            {"mode": "userspace"},
            'Mode: Invalid value: "userspace": must be iptables,ipvs,nftables or blank',
        ),
        (
            {"ip_family": "IPv5"},
            'IPFamily: Unsupported value: "IPv5": supported values: "IPv4", "IPv6"',
        ),
        (
            {"mode": "ipvs", "ipvs_scheduler": "fifo"},
            'IPVS.Scheduler: Invalid value: "fifo": must be in [dh lblc',
        ),
        ({"cluster_cidrs": "10.0.0.0/33"}, "must be a valid CIDR block"),
        ({"cluster_cidrs": "10.0.0.0/8,10.1.0.0/16"}, "must be a valid DualStack CIDR"),
        (
            {"cluster_cidrs": "10.0.0.0/8,fd00::/8,10.1.0.0/16"},
            "only one CIDR allowed or a valid DualStack CIDR",
        ),
        ({"detect_local_mode": "Magic"}, 'DetectLocalMode: Unsupported value: "Magic"'),
        (
            {"detect_local_mode": "BridgeInterface"},
            'DetectLocal.BridgeInterface: Invalid value: "": must not be empty',
        ),
        ({"detect_local_mode": "InterfaceNamePrefix"}, "InterfaceNamePrefix: Invalid value"),
        (
            {"node_port_addresses": ["foo"]},
            'NodePortAddresses[0]: Invalid value: "foo": must be a valid CIDR',
        ),
        (
            {"node_port_addresses": ["10.0.0.0/8", "primary"]},
            'NodePortAddresses[1]: Invalid value: "primary": can\'t use both',
        ),
        (
            {"node_port_addresses": ["primary", "10.0.0.0/8"]},
            'NodePortAddresses[0]: Invalid value: "primary": can\'t use both',
        ),
    ],
)
def test_proxy_config_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ProxyConfig(**kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, KServiceError)


def test_proxy_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        ProxyConfig(masquerade_bit=99, mode="x", node_port_addresses=["bad"])
    text = str(info.value)
    assert "MasqueradeBit" in text and "Mode" in text and "NodePortAddresses[0]" in text


# -- building from a Cluster ---------------------------------------------------------------


def pod(name: str, ips: list[str], node_name: str, *, app: str = "web", ready: bool = True) -> Pod:
    return Pod.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "prod", "labels": {"app": app}},
            "spec": {
                "nodeName": node_name,
                "containers": [
                    {"name": "main", "ports": [{"name": "http", "containerPort": 8080}]}
                ],
            },
            "status": {
                "podIP": ips[0],
                "podIPs": [{"ip": ip} for ip in ips],
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
    )


def web_service(**spec: Any) -> Service:
    body: dict[str, Any] = {
        "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
    }
    body.update(spec)
    return Service.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": body,
        }
    )


def test_from_cluster_matches_from_objects() -> None:
    cluster = Cluster.from_objects(
        [
            node("node-a", "192.168.0.1"),
            node("node-b", "192.168.0.2", zone="zone-b"),
            web_service(type="NodePort", externalTrafficPolicy="Local"),
            pod("web-1", ["10.244.1.5"], "node-a"),
            pod("web-2", ["10.244.2.5"], "node-b"),
            pod("web-3", ["10.244.2.6"], "node-b", ready=False),
        ],
        ClusterConfig(seed=1),
    )
    cfg = ProxyConfig(cluster_cidrs="10.244.0.0/16")
    v = NodeView.from_cluster(cluster, "node-a", cfg)
    (p,) = v
    assert str(p.name) == "prod/web:http" and p.node_port is not None
    assert [str(e) for e in p.all_endpoints] == [
        "10.244.1.5:8080",
        "10.244.2.5:8080",
        "10.244.2.6:8080",
    ]
    assert [str(e) for e in p.local_endpoints] == ["10.244.1.5:8080"]
    assert [str(e) for e in p.cluster_endpoints] == ["10.244.1.5:8080", "10.244.2.5:8080"]
    assert v.node == NodeInfo("node-a", "IPv4", ("192.168.0.1",), "zone-a")
    same = NodeView.from_objects(
        cluster.services, cluster.endpoint_slices, cluster.nodes, node_name="node-a", config=cfg
    )
    assert same == v
    assert NodeView.from_cluster(cluster, "node-a", cfg) == v  # deterministic
    assert (
        NodeView.from_cluster(cluster, "node-b", cfg)[p.name].local_endpoints[0].ip == "10.244.2.5"
    )
    assert NodeView.from_cluster(cluster, "node-a").config == ProxyConfig()


def test_from_cluster_dual_stack_with_an_ipv6_proxier() -> None:
    cluster = Cluster.from_objects(
        [
            node("node-a", "192.168.0.1", "fd00::1"),
            web_service(ipFamilyPolicy="RequireDualStack"),
            web_service_named("v4only"),
            pod("web-1", ["10.244.1.5", "fd00:244:1::5"], "node-a"),
        ],
        ClusterConfig(service_cidrs=("10.96.0.0/16", "fd00:96::/112"), seed=1),
    )
    v6 = NodeView.from_cluster(cluster, "node-a", ProxyConfig(ip_family="IPv6"))
    assert [str(p.name) for p in v6] == ["prod/web:http"]
    (p,) = v6
    assert ":" in p.cluster_ip and p.cluster_ip.startswith("fd00:96::")
    assert [str(e) for e in p.all_endpoints] == ["[fd00:244:1::5]:8080"]
    assert p.all_endpoints[0].is_local
    assert v6.node.ips == ("fd00::1",)
    v4 = NodeView.from_cluster(cluster, "node-a", ProxyConfig(ip_family="IPv4"))
    assert [str(p.name) for p in v4] == ["prod/v4only:http", "prod/web:http"]
    assert [str(e) for e in v4[p.name].all_endpoints] == ["10.244.1.5:8080"]


def web_service_named(name: str) -> Service:
    return Service.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "prod"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        }
    )


def test_from_cluster_skips_headless_and_external_name() -> None:
    cluster = Cluster.from_objects(
        [
            web_service(clusterIP="None"),
            Service.from_manifest(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "ext", "namespace": "prod"},
                    "spec": {"type": "ExternalName", "externalName": "example.com"},
                }
            ),
            pod("web-1", ["10.244.1.5"], "node-a"),
        ]
    )
    assert len(NodeView.from_cluster(cluster, "node-a")) == 0
