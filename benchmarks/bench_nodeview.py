"""Benchmarks of building a NodeView (kservice.proxy.nodeview).

Sizes follow upstream's proxy benchmarks: 1,000 and 10,000 Services with 10
endpoints each, over 100 nodes in 3 zones, seen from one node. The cluster is
built once per size (outside the timed part); only ``NodeView.from_cluster``
is timed: reading every Service and its EndpointSlices, filtering by family,
merging endpoints and categorising them for traffic policy and topology.
Every tenth Service is a NodePort Service with externalTrafficPolicy Local, so
Local endpoint selection is exercised too.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from kservice.api._base import ObjectMeta
from kservice.api.node import LABEL_ZONE, Node, NodeAddress
from kservice.api.pod import Container, ContainerPort, Pod, PodCondition
from kservice.api.service import Service, ServicePort
from kservice.control.cluster import Cluster, ClusterConfig
from kservice.proxy import NodeView, ProxyConfig

ENDPOINTS_PER_SERVICE = 10
SERVICES_PER_NAMESPACE = 10
NODE_COUNT = 100
READY = (PodCondition(type="Ready", status="True"),)
CONTAINERS = (Container(name="app", ports=[ContainerPort(container_port=8080, name="http")]),)

_clusters: dict[int, Cluster] = {}


def _ip(n: int, second: int) -> str:
    return f"10.{second + (n >> 16 & 255)}.{n >> 8 & 255}.{n & 255}"


def _build(services: int) -> Cluster:
    """Nodes, then Pods, then Services: each Service derives its slices once."""
    cluster = Cluster(
        ClusterConfig(service_cidrs=("10.96.0.0/12",), node_port_range="30000-62767", seed=1)
    )
    for i in range(NODE_COUNT):
        cluster.apply(
            Node(
                metadata=ObjectMeta(
                    name=f"node-{i}", namespace="", labels={LABEL_ZONE: f"zone-{i % 3}"}
                ),
                addresses=(NodeAddress(type="InternalIP", address=_ip(i, 0)),),
            )
        )
    for i in range(services):
        namespace = f"ns-{i // SERVICES_PER_NAMESPACE}"
        for j in range(ENDPOINTS_PER_SERVICE):
            n = i * ENDPOINTS_PER_SERVICE + j
            cluster.apply(
                Pod(
                    metadata=ObjectMeta(
                        name=f"svc-{i}-{j}", namespace=namespace, labels={"app": f"svc-{i}"}
                    ),
                    containers=CONTAINERS,
                    node_name=f"node-{n % NODE_COUNT}",
                    phase="Running",
                    pod_ips=(_ip(n, 128),),
                    conditions=READY,
                )
            )
    for i in range(services):
        local = i % 10 == 0
        cluster.apply(
            Service(
                metadata=ObjectMeta(name=f"svc-{i}", namespace=f"ns-{i // SERVICES_PER_NAMESPACE}"),
                type="NodePort" if local else "ClusterIP",
                selector={"app": f"svc-{i}"},
                ports=[ServicePort(port=80, name="http", target_port="http")],
                external_traffic_policy="Local" if local else None,
            )
        )
    return cluster


def _cluster(services: int) -> Cluster:
    if services not in _clusters:
        _clusters[services] = _build(services)
    return _clusters[services]


@pytest.mark.parametrize("services", [1_000, 10_000])
def test_nodeview_from_cluster(benchmark: BenchmarkFixture, services: int) -> None:
    cluster = _cluster(services)
    config = ProxyConfig(cluster_cidrs="10.128.0.0/9")
    rounds = 3 if services >= 10_000 else 10
    # pytest-benchmark is untyped; name the call's type once.
    pedantic: Callable[..., NodeView] = benchmark.pedantic
    view = pedantic(
        NodeView.from_cluster, args=(cluster, "node-0", config), rounds=rounds, warmup_rounds=1
    )
    assert len(view) == services
    assert sum(len(p.all_endpoints) for p in view) == services * ENDPOINTS_PER_SERVICE
    # node-0 runs pod 0 of every tenth Service: exactly the Local-policy ones.
    assert sum(len(p.local_endpoints) for p in view) == services // 10
