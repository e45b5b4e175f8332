"""Benchmarks of the EndpointSlice controller model (kservice.control.endpointslices).

Sizes follow upstream's proxy benchmarks: 100 to 10,000 Services with 10
endpoints each, spread over 10 namespaces and 100 nodes in 3 zones, and one
Service with 250 endpoints (three slices) resolving a named target port.
"""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from kservice.api._base import ObjectMeta
from kservice.api.node import LABEL_ZONE, Node
from kservice.api.pod import Container, ContainerPort, Pod, PodCondition
from kservice.api.service import Service, ServicePort
from kservice.control.endpointslices import derive_all, derive_endpoint_slices

PODS_PER_SERVICE = 10
NAMESPACES = 10
NODE_COUNT = 100
READY = (PodCondition(type="Ready", status="True"),)


def _nodes() -> list[Node]:
    return [
        Node(
            metadata=ObjectMeta(
                name=f"node-{i}", namespace="", labels={LABEL_ZONE: f"zone-{i % 3}"}
            )
        )
        for i in range(NODE_COUNT)
    ]


def _ip(n: int) -> str:
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def _cluster(
    services: int, pods_per_service: int, target_port: int | str = 8080
) -> tuple[list[Service], list[Pod]]:
    svcs = []
    pods = []
    containers = (Container(name="app", ports=[ContainerPort(container_port=8080, name="http")]),)
    for i in range(services):
        name = f"svc-{i}"
        namespace = f"ns-{i % NAMESPACES}"
        svcs.append(
            Service(
                metadata=ObjectMeta(name=name, namespace=namespace, labels={"team": "bench"}),
                selector={"app": name},
                ports=[ServicePort(port=80, name="http", target_port=target_port)],
                cluster_ip=_ip(i + (96 << 16)),
                ip_families=("IPv4",),
            )
        )
        for j in range(pods_per_service):
            n = i * pods_per_service + j
            pods.append(
                Pod(
                    metadata=ObjectMeta(
                        name=f"{name}-{j}", namespace=namespace, labels={"app": name, "tier": "x"}
                    ),
                    containers=containers,
                    node_name=f"node-{n % NODE_COUNT}",
                    phase="Running",
                    pod_ips=(_ip(n + (244 << 16)),),
                    conditions=READY,
                )
            )
    return svcs, pods


@pytest.mark.parametrize("services", [100, 1_000, 5_000, 10_000])
def test_derive_all(benchmark: BenchmarkFixture, services: int) -> None:
    svcs, pods = _cluster(services, PODS_PER_SERVICE)
    nodes = _nodes()
    rounds = 3 if services >= 5_000 else 10
    result = benchmark.pedantic(derive_all, args=(svcs, pods, nodes), rounds=rounds)
    assert len(result) == services
    assert sum(len(s.endpoints) for slices in result.values() for s in slices) == len(pods)


def test_derive_one_service_250_endpoints(benchmark: BenchmarkFixture) -> None:
    (svc,), pods = _cluster(1, 250, target_port="http")
    nodes = _nodes()
    slices = benchmark(derive_endpoint_slices, svc, pods, nodes)
    assert sorted(len(s.endpoints) for s in slices) == [50, 100, 100]
