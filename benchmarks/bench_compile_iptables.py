"""Benchmarks of the iptables compiler (kservice.proxy.iptables) and its rendering.

Sizes follow upstream's proxy benchmarks: 100, 1,000, 5,000 and 10,000
Services with 10 endpoints each, and one Service with 250 endpoints. The
NodeView is built once per size, outside the timed part. Every tenth Service
is a NodePort Service with externalTrafficPolicy Local and one endpoint on this
node, so the KUBE-EXT / KUBE-SVL paths are in the mix; the others are plain
ClusterIP Services. Above 1,000 endpoints kube-proxy drops the per-endpoint
comments ("large cluster mode"), as upstream does.

Timed: ``compile`` alone, and ``compile`` + ``render_restore`` of the
``iptables-restore`` input (target: 10,000 x 10 under 2 s). The peak memory of
one compile+render (tracemalloc) goes into ``extra_info["peak_mib"]``.

Run: ``PYTHONPATH=src python -m pytest benchmarks/bench_compile_iptables.py``
(``--benchmark-disable`` runs each once as a plain test).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from kservice.api._base import ObjectMeta
from kservice.api.endpointslice import Endpoint, EndpointPort, EndpointSlice
from kservice.api.node import Node, NodeAddress
from kservice.api.service import Service, ServicePort
from kservice.netfilter.iptables_text import render_restore
from kservice.proxy import NodeView, ProxyConfig
from kservice.proxy.iptables import compile

NODE = "node-0"
NODES = 100
_views: dict[tuple[int, int], NodeView] = {}


def _build(services: int, endpoints: int) -> NodeView:
    node = Node(
        metadata=ObjectMeta(name=NODE, namespace=""),
        addresses=(NodeAddress(type="InternalIP", address="192.168.0.2"),),
    )
    svcs = []
    slices = []
    for i in range(services):
        local = i % 10 == 0
        ns, name = f"ns-{i // 10}", f"svc-{i}"
        svcs.append(
            Service(
                metadata=ObjectMeta(name=name, namespace=ns),
                type="NodePort" if local else "ClusterIP",
                cluster_ip=f"172.{16 + (i >> 16)}.{i >> 8 & 255}.{i & 255}",
                ports=[ServicePort(port=80, name="http", node_port=30000 + i if local else None)],
                external_traffic_policy="Local" if local else None,
            )
        )
        eps = []
        for j in range(endpoints):
            n = i * endpoints + j
            eps.append(
                Endpoint(
                    addresses=(f"10.{128 + (n >> 16)}.{n >> 8 & 255}.{n & 255}",),
                    node_name=f"node-{n % NODES}",
                )
            )
        slices.append(
            EndpointSlice(
                metadata=ObjectMeta(
                    name=f"{name}-1", namespace=ns, labels={"kubernetes.io/service-name": name}
                ),
                address_type="IPv4",
                endpoints=eps,
                ports=[EndpointPort(port=8080, name="http")],
            )
        )
    config = ProxyConfig(cluster_cidrs="10.128.0.0/9")
    return NodeView.from_objects(svcs, slices, [node], node_name=NODE, config=config)


def _view(services: int, endpoints: int) -> NodeView:
    key = (services, endpoints)
    if key not in _views:
        _views[key] = _build(services, endpoints)
    return _views[key]


def _compile_and_render(view: NodeView) -> str:
    return render_restore(compile(view, restore_only=True))


SIZES = [
    pytest.param(100, 10, id="100x10"),
    pytest.param(1_000, 10, id="1000x10"),
    pytest.param(5_000, 10, id="5000x10"),
    pytest.param(10_000, 10, id="10000x10"),
    pytest.param(1, 250, id="1x250"),
]


def _rounds(services: int) -> int:
    return 3 if services >= 5_000 else 10


@pytest.mark.parametrize(("services", "endpoints"), SIZES)
def test_compile(benchmark: BenchmarkFixture, services: int, endpoints: int) -> None:
    view = _view(services, endpoints)
    pedantic: Callable[..., object] = benchmark.pedantic
    ruleset = pedantic(compile, args=(view,), rounds=_rounds(services), warmup_rounds=1)
    assert ruleset == compile(view)


@pytest.mark.parametrize(("services", "endpoints"), SIZES)
def test_compile_and_render(benchmark: BenchmarkFixture, services: int, endpoints: int) -> None:
    view = _view(services, endpoints)
    tracemalloc.start()
    try:
        text = _compile_and_render(view)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    benchmark.extra_info["peak_mib"] = round(peak / 2**20, 1)
    benchmark.extra_info["lines"] = text.count("\n")
    pedantic: Callable[..., str] = benchmark.pedantic
    again = pedantic(_compile_and_render, args=(view,), rounds=_rounds(services), warmup_rounds=1)
    assert again == text
    # One SVC and one SEP chain per endpoint at least; large cluster mode above 1,000.
    assert text.count(":KUBE-SEP-") == services * endpoints
    assert ("-m comment --comment ns-0/svc-0:http -s" in text) == (services * endpoints <= 1000)
