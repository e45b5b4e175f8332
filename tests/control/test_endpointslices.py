"""Tests of the EndpointSlice controller model (kservice.control.endpointslices)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kservice.api._base import ObjectMeta
from kservice.api.endpointslice import (
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    EndpointPort,
    EndpointSlice,
)
from kservice.api.node import LABEL_ZONE, Node
from kservice.api.pod import Container, ContainerPort, Pod, PodCondition
from kservice.api.service import Service, ServicePort
from kservice.control.endpointslices import (
    CONTROLLER_NAME,
    LABEL_HEADLESS,
    EndpointSliceConfigError,
    address_types_for_service,
    derive_all,
    derive_endpoint_slices,
    endpoint_ports,
    endpoint_slice_labels,
    generate_name_prefix,
    label_selector_matches,
)
from kservice.errors import KServiceError

# -- builders ----------------------------------------------------------------------


def make_service(
    name: str = "web",
    *,
    namespace: str = "default",
    selector: dict[str, str] | None = None,
    ports: list[ServicePort] | None = None,
    cluster_ip: str | None = "10.96.0.10",
    ip_families: tuple[str, ...] = ("IPv4",),
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    **kwargs: Any,
) -> Service:
    return Service(
        metadata=ObjectMeta(
            name=name, namespace=namespace, labels=labels or {}, annotations=annotations or {}
        ),
        selector={"app": name} if selector is None else selector,
        ports=[ServicePort(port=80, name="http", target_port=8080)] if ports is None else ports,
        cluster_ip=cluster_ip,
        cluster_ips=(cluster_ip,) if cluster_ip else (),
        ip_families=ip_families,
        **kwargs,
    )


def make_pod(
    name: str,
    *,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    ips: tuple[str, ...] = ("10.244.0.1",),
    ready: bool = True,
    terminating: bool = False,
    node: str | None = "node-a",
    phase: str | None = "Running",
    ports: list[ContainerPort] | None = None,
    containers: list[Container] | None = None,
    hostname: str | None = None,
    subdomain: str | None = None,
    uid: str | None = None,
) -> Pod:
    if containers is None:
        containers = [Container(name="main", ports=ports or [])]
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            labels={"app": "web"} if labels is None else labels,
            uid=uid,
            deletion_timestamp="2024-01-01T00:00:00Z" if terminating else None,
        ),
        containers=containers,
        node_name=node,
        hostname=hostname,
        subdomain=subdomain,
        phase=phase,
        pod_ips=ips,
        conditions=[PodCondition(type="Ready", status="True" if ready else "False")],
    )


def make_node(name: str = "node-a", zone: str | None = "zone-1") -> Node:
    labels = {LABEL_ZONE: zone} if zone is not None else {}
    return Node(metadata=ObjectMeta(name=name, namespace="", labels=labels))


NODES = [make_node("node-a", "zone-1"), make_node("node-b", "zone-2")]


def endpoints_of(slices: tuple[EndpointSlice, ...]) -> list[tuple[str, str, str]]:
    """(address type, pod name, address) of every endpoint, sorted."""
    out = []
    for s in slices:
        for ep in s.endpoints:
            assert ep.target_ref is not None and ep.target_ref.name is not None
            for address in ep.addresses:
                out.append((s.address_type, ep.target_ref.name, address))
    return sorted(out)


def only_endpoint(slices: tuple[EndpointSlice, ...]) -> Any:
    eps = [ep for s in slices for ep in s.endpoints]
    assert len(eps) == 1, slices
    return eps[0]


def dump(slices: tuple[EndpointSlice, ...]) -> str:
    return json.dumps([s.to_manifest() for s in slices])


# -- label selection -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {"app": "web"}, False),  # no selector selects nothing
        ({}, {}, False),
        ({"app": "web"}, {"app": "web"}, True),
        ({"app": "web"}, {"app": "web", "tier": "fe"}, True),
        ({"app": "web"}, {"app": "db"}, False),
        ({"app": "web"}, {}, False),
        ({"app": "web", "tier": "fe"}, {"app": "web"}, False),
        ({"app": "web", "tier": "fe"}, {"app": "web", "tier": "fe"}, True),
        ({"flag": ""}, {"flag": ""}, True),
        ({"flag": ""}, {}, False),  # an empty value still needs the key
    ],
)
def test_label_selector_matches(
    selector: dict[str, str], labels: dict[str, str], expected: bool
) -> None:
    assert label_selector_matches(selector, labels) is expected


def test_selection_by_labels_and_namespace() -> None:
    pods = [
        make_pod("a", ips=("10.0.0.1",)),
        make_pod("b", ips=("10.0.0.2",), labels={"app": "web", "extra": "x"}),
        make_pod("c", ips=("10.0.0.3",), labels={"app": "db"}),
        make_pod("d", ips=("10.0.0.4",), labels={}),
        make_pod("e", ips=("10.0.0.5",), namespace="other"),
    ]
    slices = derive_endpoint_slices(make_service(), pods, NODES)
    assert endpoints_of(slices) == [("IPv4", "a", "10.0.0.1"), ("IPv4", "b", "10.0.0.2")]
    other = derive_endpoint_slices(make_service(namespace="other"), pods, NODES)
    assert endpoints_of(other) == [("IPv4", "e", "10.0.0.5")]
    assert all(s.namespace == "other" for s in other)


def test_multi_pair_selector() -> None:
    svc = make_service(selector={"app": "web", "tier": "fe"})
    pods = [
        make_pod("a", labels={"app": "web", "tier": "fe"}),
        make_pod("b", labels={"app": "web", "tier": "be"}),
        make_pod("c", labels={"tier": "fe"}),
    ]
    assert [p for _, p, _ in endpoints_of(derive_endpoint_slices(svc, pods, NODES))] == ["a"]
    assert derive_all([svc], pods, NODES)[svc.key] == derive_endpoint_slices(svc, pods, NODES)


@pytest.mark.parametrize(
    "service",
    [
        make_service(selector={}),
        make_service(type="ExternalName", external_name="example.com", cluster_ip=None),
    ],
)
def test_services_the_controller_leaves_alone(service: Service) -> None:
    pods = [make_pod("a")]
    assert derive_endpoint_slices(service, pods, NODES) == ()
    assert derive_all([service], pods, NODES) == {service.key: ()}


def test_service_being_deleted_gets_no_new_slices() -> None:
    svc = make_service()
    deleting = Service(
        metadata=ObjectMeta(name="web", deletion_timestamp="2024-01-01T00:00:00Z"),
        selector=svc.selector,
        ports=svc.ports,
        cluster_ip=svc.cluster_ip,
        ip_families=svc.ip_families,
    )
    assert derive_endpoint_slices(deleting, [make_pod("a")], NODES) == ()


@pytest.mark.parametrize(
    ("kwargs", "published"),
    [
        ({}, True),
        ({"phase": "Pending"}, True),
        ({"phase": None}, True),
        ({"phase": "Unknown"}, True),
        ({"phase": "Succeeded"}, False),  # terminal
        ({"phase": "Failed"}, False),
        ({"ips": ()}, False),  # no IP yet
        ({"terminating": True}, True),  # terminating pods stay, marked terminating
        ({"ready": False}, True),
    ],
)
def test_which_pods_are_published(kwargs: dict[str, Any], published: bool) -> None:
    slices = derive_endpoint_slices(make_service(), [make_pod("a", **kwargs)], NODES)
    assert bool(endpoints_of(slices)) is published
    assert len(slices) == 1  # the placeholder when nothing is published


# -- ports -----------------------------------------------------------------------------


def test_named_port_resolution_matches_name_and_protocol() -> None:
    svc = make_service(
        ports=[
            ServicePort(port=53, name="dns-udp", protocol="UDP", target_port="dns"),
            ServicePort(port=53, name="dns-tcp", protocol="TCP", target_port="dns"),
        ]
    )
    pod = make_pod(
        "a",
        ports=[
            ContainerPort(container_port=5353, name="dns", protocol="TCP"),
            ContainerPort(container_port=5354, name="dns", protocol="UDP"),
        ],
    )
    assert endpoint_ports(svc, pod) == (
        EndpointPort(port=5354, name="dns-udp", protocol="UDP"),
        EndpointPort(port=5353, name="dns-tcp", protocol="TCP"),
    )
    (slice_,) = derive_endpoint_slices(svc, [pod], NODES)
    assert slice_.ports == endpoint_ports(svc, pod)


def test_named_port_with_only_other_protocol_does_not_resolve() -> None:
    svc = make_service(ports=[ServicePort(port=53, name="dns", protocol="UDP", target_port="dns")])
    pod = make_pod("a", ports=[ContainerPort(container_port=53, name="dns", protocol="TCP")])
    assert endpoint_ports(svc, pod) == ()


def test_named_port_first_container_wins() -> None:
    svc = make_service(ports=[ServicePort(port=80, name="http", target_port="web")])
    pod = make_pod(
        "a",
        containers=[
            Container(name="one", ports=[ContainerPort(container_port=8081, name="other")]),
            Container(name="two", ports=[ContainerPort(container_port=8082, name="web")]),
            Container(name="three", ports=[ContainerPort(container_port=8083, name="web")]),
        ],
    )
    assert endpoint_ports(svc, pod) == (EndpointPort(port=8082, name="http", protocol="TCP"),)


def test_numeric_target_port_and_app_protocol_carry_over() -> None:
    svc = make_service(
        ports=[ServicePort(port=443, name="https", target_port=8443, app_protocol="https")]
    )
    (slice_,) = derive_endpoint_slices(svc, [make_pod("a")], NODES)
    assert slice_.ports == (
        EndpointPort(port=8443, name="https", protocol="TCP", app_protocol="https"),
    )


def test_pods_are_grouped_by_their_resolved_ports() -> None:
    svc = make_service(
        ports=[
            ServicePort(port=80, name="http", target_port="http"),
            ServicePort(port=9090, name="metrics", target_port=9090),
        ]
    )
    pods = [
        make_pod("a", ips=("10.0.0.1",), ports=[ContainerPort(container_port=8080, name="http")]),
        make_pod("b", ips=("10.0.0.2",), ports=[ContainerPort(container_port=8080, name="http")]),
        make_pod("c", ips=("10.0.0.3",), ports=[ContainerPort(container_port=8000, name="http")]),
        make_pod("d", ips=("10.0.0.4",)),  # lacks the named port
    ]
    slices = derive_endpoint_slices(svc, pods, NODES)
    by_ports = {
        tuple((p.name, p.port) for p in s.ports): sorted(
            ep.target_ref.name for ep in s.endpoints if ep.target_ref and ep.target_ref.name
        )
        for s in slices
    }
    assert by_ports == {
        (("http", 8080), ("metrics", 9090)): ["a", "b"],
        (("http", 8000), ("metrics", 9090)): ["c"],
        (("metrics", 9090),): ["d"],
    }


def test_pod_resolving_no_port_lands_in_a_portless_slice() -> None:
    svc = make_service(ports=[ServicePort(port=80, name="http", target_port="http")])
    pods = [
        make_pod("a", ips=("10.0.0.1",), ports=[ContainerPort(container_port=8080, name="http")]),
        make_pod("b", ips=("10.0.0.2",)),
    ]
    slices = derive_endpoint_slices(svc, pods, NODES)
    assert len(slices) == 2
    portless = [s for s in slices if not s.ports]
    assert len(portless) == 1
    assert [ep.addresses for ep in portless[0].endpoints] == [("10.0.0.2",)]


def test_headless_service_without_ports() -> None:
    svc = make_service(ports=[], cluster_ip="None")
    (slice_,) = derive_endpoint_slices(svc, [make_pod("a")], NODES)
    assert slice_.ports == ()
    assert len(slice_.endpoints) == 1


# -- packing -------------------------------------------------------------------------


def many_pods(n: int, **kwargs: Any) -> list[Pod]:
    return [
        make_pod(f"pod-{i:05d}", ips=(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",), **kwargs)
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("pods", "limit", "sizes"),
    [
        (100, 100, [100]),
        (101, 100, [100, 1]),
        (250, 100, [100, 100, 50]),
        (7, 1, [1] * 7),
        (7, 3, [3, 3, 1]),
        (1000, 1000, [1000]),
        (1001, 1000, [1000, 1]),
    ],
)
def test_split_at_limit(pods: int, limit: int, sizes: list[int]) -> None:
    slices = derive_endpoint_slices(
        make_service(), many_pods(pods), NODES, max_endpoints_per_slice=limit
    )
    assert sorted((len(s.endpoints) for s in slices), reverse=True) == sizes
    # Filled in pod-name order: the full slices hold the first pods.
    by_first = sorted(slices, key=lambda s: s.endpoints[0].target_ref.name)  # type: ignore[union-attr]
    assert [len(s.endpoints) for s in by_first] == sizes
    assert len({s.name for s in slices}) == len(slices)


def test_default_limit_is_100() -> None:
    slices = derive_endpoint_slices(make_service(), many_pods(201), NODES)
    assert sorted(len(s.endpoints) for s in slices) == [1, 100, 100]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "max-endpoints-per-slice must not be less than 1, but got 0"),
        (-5, "max-endpoints-per-slice must not be less than 1, but got -5"),
        (1001, "max-endpoints-per-slice must not be more than 1000, but got 1001"),
        (True, "max-endpoints-per-slice must be an integer, not bool"),
        (1.5, "max-endpoints-per-slice must be an integer, not float"),
        ("100", "max-endpoints-per-slice must be an integer, not str"),
    ],
)
def test_invalid_limits_are_rejected(value: Any, message: str) -> None:
    for call in (
        lambda: derive_endpoint_slices(make_service(), [], NODES, max_endpoints_per_slice=value),
        lambda: derive_all([make_service()], [], NODES, max_endpoints_per_slice=value),
        # Checked even when the Service would get nothing.
        lambda: derive_endpoint_slices(
            make_service(selector={}), [], NODES, max_endpoints_per_slice=value
        ),
    ):
        with pytest.raises(EndpointSliceConfigError) as info:
            call()
        assert str(info.value) == message
        assert isinstance(info.value, ValueError)
        assert isinstance(info.value, KServiceError)


# -- endpoint fields -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod_ready", "terminating", "publish_not_ready", "expected"),
    [
        # (ready, serving, terminating) as podToEndpoint sets them
        (True, False, False, (True, True, False)),
        (False, False, False, (False, False, False)),
        (True, True, False, (False, True, True)),  # terminating: serving but not ready
        (False, True, False, (False, False, True)),
        (True, False, True, (True, True, False)),
        (False, False, True, (True, False, False)),  # publishNotReady forces ready only
        (True, True, True, (True, True, True)),
        (False, True, True, (True, False, True)),
    ],
)
def test_conditions(
    pod_ready: bool,
    terminating: bool,
    publish_not_ready: bool,
    expected: tuple[bool, bool, bool],
) -> None:
    svc = make_service(publish_not_ready_addresses=publish_not_ready)
    pod = make_pod("a", ready=pod_ready, terminating=terminating)
    c = only_endpoint(derive_endpoint_slices(svc, [pod], NODES)).conditions
    assert (c.ready, c.serving, c.terminating) == expected


def test_pod_without_ready_condition_is_not_serving() -> None:
    pod = Pod(
        metadata=ObjectMeta(name="a", labels={"app": "web"}),
        node_name="node-a",
        pod_ips=("10.0.0.1",),
        conditions=[PodCondition(type="ContainersReady", status="True")],
    )
    c = only_endpoint(derive_endpoint_slices(make_service(), [pod], NODES)).conditions
    assert (c.ready, c.serving, c.terminating) == (False, False, False)


def test_target_ref() -> None:
    pod = make_pod("a", uid="1234-abcd")
    ep = only_endpoint(derive_endpoint_slices(make_service(), [pod], NODES))
    assert ep.target_ref.to_manifest() == {
        "kind": "Pod",
        "namespace": "default",
        "name": "a",
        "uid": "1234-abcd",
    }
    ep = only_endpoint(derive_endpoint_slices(make_service(), [make_pod("a")], NODES))
    assert ep.target_ref.uid is None


def test_node_name_and_zone() -> None:
    nodes = [make_node("node-a", "zone-1"), make_node("node-b", None), make_node("node-c", "")]
    pods = [
        make_pod("a", ips=("10.0.0.1",), node="node-a"),
        make_pod("b", ips=("10.0.0.2",), node="node-b"),
        make_pod("c", ips=("10.0.0.3",), node="node-c"),
    ]
    slices = derive_endpoint_slices(make_service(), pods, nodes)
    got = {ep.target_ref.name: (ep.node_name, ep.zone) for s in slices for ep in s.endpoints}
    assert got == {"a": ("node-a", "zone-1"), "b": ("node-b", None), "c": ("node-c", None)}


@pytest.mark.parametrize("node", ["node-gone", None])
def test_pod_on_unknown_node_is_skipped(node: str | None) -> None:
    pods = [make_pod("a", node=node, ips=("10.0.0.1",)), make_pod("b", ips=("10.0.0.2",))]
    slices = derive_endpoint_slices(make_service(), pods, NODES)
    assert [p for _, p, _ in endpoints_of(slices)] == ["b"]


def test_pod_on_unknown_node_is_published_with_publish_not_ready_addresses() -> None:
    svc = make_service(publish_not_ready_addresses=True)
    ep = only_endpoint(derive_endpoint_slices(svc, [make_pod("a", node="node-gone")], NODES))
    assert (ep.node_name, ep.zone) == ("node-gone", None)
    ep = only_endpoint(derive_endpoint_slices(svc, [make_pod("a", node=None)], []))
    assert (ep.node_name, ep.zone) == (None, None)


@pytest.mark.parametrize(
    ("hostname", "subdomain", "namespace", "cluster_ip", "expected"),
    [
        ("web-0", "web", "default", "None", "web-0"),
        ("web-0", "web", "default", "10.96.0.10", "web-0"),  # not only for headless
        ("web-0", "other", "default", "None", None),
        ("web-0", None, "default", "None", None),
        (None, "web", "default", "None", None),
    ],
)
def test_hostname(
    hostname: str | None,
    subdomain: str | None,
    namespace: str,
    cluster_ip: str,
    expected: str | None,
) -> None:
    svc = make_service(cluster_ip=cluster_ip)
    pod = make_pod("a", hostname=hostname, subdomain=subdomain, namespace=namespace)
    assert only_endpoint(derive_endpoint_slices(svc, [pod], NODES)).hostname == expected


def test_addresses_are_canonical() -> None:
    svc = make_service(ip_families=("IPv4", "IPv6"))
    pod = make_pod("a", ips=("::FFFF:10.0.0.7", "2001:DB8:0:0::1"))
    assert endpoints_of(derive_endpoint_slices(svc, [pod], NODES)) == [
        ("IPv4", "a", "10.0.0.7"),
        ("IPv6", "a", "2001:db8::1"),
    ]
    # ParseIPSloppy reads IPv4 octets with leading zeros as decimal.
    pod = make_pod("a", ips=("010.001.000.009",))
    assert endpoints_of(derive_endpoint_slices(svc, [pod], NODES)) == [("IPv4", "a", "10.1.0.9")]
    # Unparsable addresses are ignored (the API server would have refused the pod).
    pod = make_pod("a", ips=("not-an-ip",))
    assert endpoints_of(derive_endpoint_slices(svc, [pod], NODES)) == []


# -- address types -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cluster_ip", "families", "expected"),
    [
        ("10.96.0.1", ("IPv4",), ("IPv4",)),
        ("fd00::1", ("IPv6",), ("IPv6",)),
        ("10.96.0.1", ("IPv4", "IPv6"), ("IPv4", "IPv6")),
        ("fd00::1", ("IPv6", "IPv4"), ("IPv6", "IPv4")),
        ("None", ("IPv6",), ("IPv6",)),
        # No families (an old API server): the ClusterIP's family ...
        ("10.96.0.1", (), ("IPv4",)),
        ("fd00::1", (), ("IPv6",)),
        # ... and both for headless or unallocated Services.
        ("None", (), ("IPv4", "IPv6")),
        (None, (), ("IPv4", "IPv6")),
    ],
)
def test_address_types_for_service(
    cluster_ip: str | None, families: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    svc = make_service(cluster_ip=cluster_ip, ip_families=families)
    assert address_types_for_service(svc) == expected


def test_dual_stack_pods_give_one_slice_per_address_type() -> None:
    svc = make_service(ip_families=("IPv4", "IPv6"))
    pods = [
        make_pod("a", ips=("10.0.0.1", "fd00::1")),
        make_pod("b", ips=("fd00::2", "10.0.0.2")),
    ]
    slices = derive_endpoint_slices(svc, pods, NODES)
    assert sorted(s.address_type for s in slices) == ["IPv4", "IPv6"]
    for s in slices:
        assert len(s.endpoints) == 2
    assert endpoints_of(slices) == [
        ("IPv4", "a", "10.0.0.1"),
        ("IPv4", "b", "10.0.0.2"),
        ("IPv6", "a", "fd00::1"),
        ("IPv6", "b", "fd00::2"),
    ]


def test_single_stack_service_ignores_the_other_family() -> None:
    svc = make_service(ip_families=("IPv6",), cluster_ip="fd00::a")
    slices = derive_endpoint_slices(svc, [make_pod("a", ips=("10.0.0.1", "fd00::1"))], NODES)
    assert endpoints_of(slices) == [("IPv6", "a", "fd00::1")]


def test_placeholder_per_address_type() -> None:
    svc = make_service(ip_families=("IPv4", "IPv6"))
    slices = derive_endpoint_slices(svc, [], NODES)
    assert sorted(s.address_type for s in slices) == ["IPv4", "IPv6"]
    for s in slices:
        assert s.endpoints == () and s.ports == ()
        assert s.metadata.labels[LABEL_SERVICE_NAME] == "web"
    # An IPv4-only pod fills IPv4; IPv6 keeps its placeholder.
    slices = derive_endpoint_slices(svc, [make_pod("a", ips=("10.0.0.1",))], NODES)
    by_type = {s.address_type: s for s in slices}
    assert len(by_type["IPv4"].endpoints) == 1 and by_type["IPv4"].ports
    assert by_type["IPv6"].endpoints == () and by_type["IPv6"].ports == ()


# -- labels and names ----------------------------------------------------------------


def test_labels() -> None:
    svc = make_service(
        labels={
            "team": "a",
            LABEL_SERVICE_NAME: "spoofed",
            LABEL_MANAGED_BY: "someone",
            LABEL_HEADLESS: "x",
        }
    )
    assert endpoint_slice_labels(svc).to_dict() == {
        LABEL_MANAGED_BY: CONTROLLER_NAME,
        LABEL_SERVICE_NAME: "web",
        "team": "a",
    }
    for s in derive_endpoint_slices(svc, [make_pod("a")], NODES):
        assert s.metadata.labels == endpoint_slice_labels(svc)
        assert s.service_name == "web" and s.managed_by == CONTROLLER_NAME


def test_label_order_does_not_matter() -> None:
    one = make_service(labels={"b": "2", "a": "1", "c": "3"})
    two = make_service(labels={"c": "3", "a": "1", "b": "2"})
    assert dump(derive_endpoint_slices(one, [make_pod("a")], NODES)) == dump(
        derive_endpoint_slices(two, [make_pod("a")], NODES)
    )


@pytest.mark.parametrize(
    ("cluster_ip", "headless"), [("None", True), (None, True), ("10.96.0.1", False)]
)
def test_headless_label(cluster_ip: str | None, headless: bool) -> None:
    svc = make_service(cluster_ip=cluster_ip)
    labels = endpoint_slice_labels(svc)
    assert (labels.get(LABEL_HEADLESS) == "") is headless
    assert (LABEL_HEADLESS in labels) is headless


@pytest.mark.parametrize(
    ("service_name", "prefix"),
    [
        ("web", "web-"),
        ("a" * 57, "a" * 57 + "-"),
        ("a" * 58, "a" * 58),
        ("a" * 63, "a" * 58),
    ],
)
def test_generate_name_prefix(service_name: str, prefix: str) -> None:
    assert generate_name_prefix(service_name) == prefix


NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


@pytest.mark.parametrize("service_name", ["web", "a" * 57, "b" * 58, "c" * 63])
def test_slice_names(service_name: str) -> None:
    svc = make_service(name=service_name, selector={"app": "web"}, ip_families=("IPv4", "IPv6"))
    slices = derive_endpoint_slices(svc, many_pods(30), NODES, max_endpoints_per_slice=7)
    assert len(slices) == 6  # 5 IPv4 slices + the IPv6 placeholder
    prefix = generate_name_prefix(service_name)
    for s in slices:
        assert len(s.name) <= 63 and NAME.match(s.name)
        assert s.name.startswith(prefix)
        suffix = s.name[len(prefix) :]
        assert len(suffix) == 5 and set(suffix) <= set("bcdfghjklmnpqrstvwxz2456789")
    assert len({s.name for s in slices}) == len(slices)
    assert [s.name for s in slices] == sorted(s.name for s in slices)


def test_names_are_pinned() -> None:
    # Golden values: a change here renames every slice of every cluster model.
    (slice_,) = derive_endpoint_slices(make_service(), [make_pod("a")], NODES)
    (placeholder,) = derive_endpoint_slices(make_service(), [], NODES)
    assert (slice_.name, placeholder.name) == ("web-tk9zl", "web-rrkbg")


# -- topology hints --------------------------------------------------------------------


def hint_pods() -> list[Pod]:
    return [
        make_pod("a", ips=("10.0.0.1",), node="node-a"),
        make_pod("b", ips=("10.0.0.2",), node="node-b", ready=False),
        make_pod("c", ips=("10.0.0.3",), node="node-c"),  # node without zone
    ]


def hints_of(svc: Service) -> dict[str, Any]:
    nodes = [*NODES, make_node("node-c", None)]
    slices = derive_endpoint_slices(svc, hint_pods(), nodes)
    return {
        ep.target_ref.name: None if ep.hints is None else ep.hints.to_manifest()
        for s in slices
        for ep in s.endpoints
    }


@pytest.mark.parametrize("distribution", ["PreferClose", "PreferSameZone"])
def test_zone_hints_for_ready_endpoints(distribution: str) -> None:
    svc = make_service(traffic_distribution=distribution)
    assert hints_of(svc) == {"a": {"forZones": [{"name": "zone-1"}]}, "b": None, "c": None}


def test_node_hints_with_prefer_same_node() -> None:
    svc = make_service(traffic_distribution="PreferSameNode")
    assert hints_of(svc) == {
        "a": {"forZones": [{"name": "zone-1"}], "forNodes": [{"name": "node-a"}]},
        "b": None,
        "c": {"forNodes": [{"name": "node-c"}]},
    }


@pytest.mark.parametrize(
    "annotations",
    [
        {},
        {"service.kubernetes.io/topology-mode": "Auto"},
        {"service.kubernetes.io/topology-aware-hints": "auto"},
    ],
)
def test_no_hints_without_distribution_or_with_topology_annotation(
    annotations: dict[str, str],
) -> None:
    td = "PreferClose" if annotations else None
    svc = make_service(traffic_distribution=td, annotations=annotations)
    assert hints_of(svc) == {"a": None, "b": None, "c": None}


# -- determinism -----------------------------------------------------------------------


def mixed_cluster() -> tuple[list[Service], list[Pod]]:
    services = [
        make_service("web", ip_families=("IPv4", "IPv6")),
        make_service(
            "api",
            selector={"app": "api"},
            ports=[ServicePort(port=80, name="http", target_port="http")],
        ),
        make_service("db", selector={"app": "db"}, cluster_ip="None", namespace="data"),
        make_service("manual", selector={}),
    ]
    pods = many_pods(120) + [
        make_pod(
            f"api-{i}",
            labels={"app": "api"},
            ips=(f"10.1.0.{i}",),
            ports=[ContainerPort(container_port=8000 + i % 3, name="http")],
        )
        for i in range(20)
    ]
    pods += [
        make_pod(f"db-{i}", labels={"app": "db"}, namespace="data", ips=(f"10.2.0.{i}",))
        for i in range(5)
    ]
    return services, pods


def test_same_input_same_output() -> None:
    services, pods = mixed_cluster()
    first = derive_all(services, pods, NODES)
    second = derive_all(services, pods, NODES)
    assert first == second
    assert {k: dump(v) for k, v in first.items()} == {k: dump(v) for k, v in second.items()}


def test_permuted_input_same_output() -> None:
    services, pods = mixed_cluster()
    expected = {k: dump(v) for k, v in derive_all(services, pods, NODES).items()}
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(pods)
        rng.shuffle(services)
        got = {k: dump(v) for k, v in derive_all(services, pods, NODES[::-1]).items()}
        assert got == expected


def test_derive_all_agrees_with_derive_endpoint_slices() -> None:
    services, pods = mixed_cluster()
    result = derive_all(services, pods, NODES, max_endpoints_per_slice=50)
    assert set(result) == {s.key for s in services}
    for svc in services:
        assert result[svc.key] == derive_endpoint_slices(
            svc, pods, NODES, max_endpoints_per_slice=50
        )
    assert result[("default", "manual")] == ()


def test_endpoints_sorted_by_pod_name() -> None:
    (slice_,) = derive_endpoint_slices(
        make_service(), [make_pod(n, ips=(f"10.0.0.{i}",)) for i, n in enumerate("dbca")], NODES
    )
    assert [ep.target_ref.name for ep in slice_.endpoints] == ["a", "b", "c", "d"]


# -- properties ----------------------------------------------------------------------

LABEL_CHOICES = st.dictionaries(
    st.sampled_from(["app", "tier", "x"]), st.sampled_from(["web", "db", ""]), max_size=3
)


@st.composite
def pods_strategy(draw: st.DrawFn) -> list[Pod]:
    names = draw(st.lists(st.text("abcde", min_size=1, max_size=4), unique=True, max_size=40))
    pods = []
    for i, name in enumerate(names):
        families = draw(st.sampled_from([(), ("v4",), ("v6",), ("v4", "v6"), ("v6", "v4")]))
        ips = tuple(f"10.0.{i // 256}.{i % 256}" if f == "v4" else f"fd00::{i:x}" for f in families)
        container_ports = draw(
            st.lists(
                st.builds(
                    ContainerPort,
                    container_port=st.integers(1, 5),
                    name=st.sampled_from(["http", "dns", ""]),
                    protocol=st.sampled_from(["TCP", "UDP"]),
                ),
                max_size=3,
            )
        )
        pods.append(
            make_pod(
                name,
                namespace=draw(st.sampled_from(["default", "other"])),
                labels=draw(LABEL_CHOICES),
                ips=ips,
                ready=draw(st.booleans()),
                terminating=draw(st.booleans()),
                node=draw(st.sampled_from(["node-a", "node-b", "node-gone", None])),
                phase=draw(st.sampled_from(["Running", "Pending", "Succeeded", "Failed", None])),
                ports=container_ports,
                hostname=draw(st.sampled_from([None, "h"])),
                subdomain=draw(st.sampled_from([None, "svc"])),
            )
        )
    return pods


services_strategy = st.builds(
    make_service,
    name=st.just("svc"),
    selector=LABEL_CHOICES,
    ports=st.lists(
        st.builds(
            ServicePort,
            port=st.integers(1, 3),
            name=st.sampled_from(["a", "b", "c"]),
            protocol=st.sampled_from(["TCP", "UDP"]),
            target_port=st.one_of(st.integers(1, 5), st.sampled_from(["http", "dns"])),
        ),
        max_size=3,
        unique_by=lambda p: p.name,
    ),
    cluster_ip=st.sampled_from(["10.96.0.1", "None", None]),
    ip_families=st.sampled_from([(), ("IPv4",), ("IPv6",), ("IPv4", "IPv6")]),
    publish_not_ready_addresses=st.booleans(),
)


@given(
    service=services_strategy,
    pods=pods_strategy(),
    limit=st.integers(1, 6),
)
def test_every_publishable_pod_appears_exactly_once(
    service: Service, pods: list[Pod], limit: int
) -> None:
    slices = derive_endpoint_slices(service, pods, NODES, max_endpoints_per_slice=limit)
    if not service.selector:
        assert slices == ()
        return
    known = {n.name for n in NODES}
    expected: Counter[tuple[str, tuple[EndpointPort, ...], str]] = Counter()
    for pod in pods:
        if pod.namespace != service.namespace:
            continue
        if not label_selector_matches(service.selector, pod.labels):
            continue
        if pod.phase in ("Succeeded", "Failed") or not pod.pod_ips:
            continue
        if pod.node_name not in known and not service.publish_not_ready_addresses:
            continue
        for family in address_types_for_service(service):
            if pod.ip_of_family(family) is not None:
                expected[(family, endpoint_ports(service, pod), pod.name)] += 1
    got: Counter[tuple[str, tuple[EndpointPort, ...], str]] = Counter()
    per_type: Counter[str] = Counter()
    for s in slices:
        per_type[s.address_type] += 1
        assert s.namespace == service.namespace
        assert len(s.endpoints) <= limit
        assert s.address_type in address_types_for_service(service)
        for ep in s.endpoints:
            assert len(ep.addresses) == 1
            assert ep.target_ref is not None and ep.target_ref.name is not None
            got[(s.address_type, s.ports, ep.target_ref.name)] += 1
    assert got == expected
    # Every address type has at least one slice (a placeholder if need be).
    assert set(per_type) == set(address_types_for_service(service))
    assert len({s.name for s in slices}) == len(slices)
    # Deterministic, and order-independent.
    shuffled = list(pods)
    random.Random(len(pods)).shuffle(shuffled)
    again = derive_endpoint_slices(service, shuffled, NODES, max_endpoints_per_slice=limit)
    assert dump(again) == dump(slices)
    assert derive_all([service], pods, NODES, max_endpoints_per_slice=limit) == {
        service.key: slices
    }
