"""Benchmarks of the cluster DNS model (kservice.control.dns).

Sizes follow upstream's proxy benchmarks: 100 to 10,000 Services with 10
endpoints each over 10 namespaces (half ClusterIP, half headless), and one
headless Service with 250 endpoints answering A and SRV.
"""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from kservice.api._base import ObjectMeta
from kservice.api.endpointslice import LABEL_SERVICE_NAME, Endpoint, EndpointPort, EndpointSlice
from kservice.api.service import Service, ServicePort
from kservice.control.dns import ClusterDNS

ENDPOINTS = 10
NAMESPACES = 10


def _ip(prefix: int, n: int) -> str:
    return f"{prefix}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def _cluster(
    services: int, endpoints: int = ENDPOINTS
) -> tuple[list[Service], list[EndpointSlice]]:
    svcs: list[Service] = []
    slices: list[EndpointSlice] = []
    for i in range(services):
        ns = f"ns-{i % NAMESPACES}"
        headless = i % 2 == 1
        ip = "None" if headless else _ip(10, i)
        svcs.append(
            Service(
                metadata=ObjectMeta(name=f"svc-{i}", namespace=ns),
                cluster_ip=ip,
                cluster_ips=(ip,),
                ports=(ServicePort(80, name="http"),),
            )
        )
        slices.append(
            EndpointSlice(
                metadata=ObjectMeta(
                    name=f"svc-{i}-x", namespace=ns, labels={LABEL_SERVICE_NAME: f"svc-{i}"}
                ),
                address_type="IPv4",
                endpoints=tuple(
                    Endpoint(addresses=(_ip(11, i * endpoints + e),)) for e in range(endpoints)
                ),
                ports=(EndpointPort(8080, name="http"),),
            )
        )
    return svcs, slices


@pytest.mark.parametrize("size", [100, 1000, 5000, 10000])
def test_build(benchmark: BenchmarkFixture, size: int) -> None:
    services, slices = _cluster(size)
    dns = benchmark(ClusterDNS, services, slices)
    assert dns.query("svc-0.ns-0.svc.cluster.local").addresses == ("10.0.0.0",)


@pytest.mark.parametrize("size", [100, 10000])
def test_query_headless(benchmark: BenchmarkFixture, size: int) -> None:
    dns = ClusterDNS(*_cluster(size))
    answer = benchmark(dns.query, "svc-1.ns-1.svc.cluster.local", "A")
    assert len(answer.records) == ENDPOINTS


def test_srv_250_endpoints(benchmark: BenchmarkFixture) -> None:
    services, slices = _cluster(2, endpoints=250)
    dns = ClusterDNS(services, slices)
    answer = benchmark(dns.query, "_http._tcp.svc-1.ns-1.svc.cluster.local", "SRV")
    assert len(answer.records) == 250 and {r.weight for r in answer.records} == {1}


def test_resolve_external_name(benchmark: BenchmarkFixture) -> None:
    dns = ClusterDNS(*_cluster(1000), upstream={"api.example.com": ["93.184.216.34"]})
    res = benchmark(dns.resolve, "api.example.com", namespace="ns-0")
    assert res.wasted == 3
