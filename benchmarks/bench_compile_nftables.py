"""Benchmarks of the nftables-mode compiler (kservice.proxy.nftables).

Sizes follow upstream's proxy benchmarks: 100, 1,000, 5,000 and 10,000
ClusterIP Services with 10 endpoints each (every tenth a NodePort Service
whose first endpoint is local), and one Service with 250 endpoints. The views
are built directly from ServicePortInfo objects (outside the timed part), so
only the compiler and the renderer are measured.

* ``compile`` is a cold compile (the fragment cache cleared before each round).
* ``compile_render`` is a cold compile plus ``render_script`` (the ``nft -f``
  text kube-proxy writes); the peak memory of one such run (tracemalloc) is
  stored in the benchmark's ``extra_info``.
* ``recompile_one_changed`` compiles the 10,000-Service view again after one
  Service lost an endpoint (the unchanged Services' fragments are reused).
* ``delta_one_changed`` is :func:`~kservice.proxy.nftables.delta` between those
  two rulesets; the transaction's size (operations, bytes) goes to ``extra_info``.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from kservice.netfilter.nft_text import render_script
from kservice.netfilter.ruleset import Ruleset
from kservice.proxy import (
    EndpointInfo,
    NodeInfo,
    NodeView,
    ProxyConfig,
    ServicePortInfo,
    ServicePortName,
)
from kservice.proxy.nftables import Transaction, clear_cache, compile, delta

ENDPOINTS = 10
CONFIG = ProxyConfig(
    mode="nftables", cluster_cidrs="10.0.0.0/8", node_port_addresses=("192.168.0.2/32",)
)
NODE = NodeInfo("node-0", ips=("192.168.0.2",))
SERVICE_CIDRS = ("172.16.0.0/12",)

_views: dict[tuple[int, int], NodeView] = {}


def _ip(prefix: int, n: int) -> str:
    return f"{prefix}.{16 + (n >> 16 & 15)}.{n >> 8 & 255}.{n & 255}"


def _port(i: int, endpoints: int) -> ServicePortInfo:
    eps = tuple(
        sorted(
            (
                EndpointInfo(_ip(10, i * endpoints + j), 8080, is_local=j == 0 and i % 10 == 0)
                for j in range(endpoints)
            ),
            key=lambda e: e.endpoint_string,
        )
    )
    nodeport = i % 10 == 0
    return ServicePortInfo(
        name=ServicePortName(f"ns-{i // 10}", f"svc-{i}", "http", "TCP"),
        cluster_ip=_ip(172, i),
        port=80,
        node_port=30000 + i if nodeport else None,
        all_endpoints=eps,
        cluster_endpoints=eps,
        all_reachable_endpoints=eps,
        has_any_endpoints=True,
    )


def _view(services: int, endpoints: int = ENDPOINTS) -> NodeView:
    key = (services, endpoints)
    if key not in _views:
        _views[key] = NodeView(NODE, CONFIG, [_port(i, endpoints) for i in range(services)])
    return _views[key]


def _cold_compile(view: NodeView) -> Ruleset:
    return compile(view, service_cidrs=SERVICE_CIDRS)


def _compile_render(view: NodeView) -> str:
    return render_script(compile(view, service_cidrs=SERVICE_CIDRS))


def _peak_mib(fn: Callable[[], Any]) -> float:
    clear_cache()
    tracemalloc.start()
    try:
        fn()
        return round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    finally:
        tracemalloc.stop()
        clear_cache()


SIZES = [(100, ENDPOINTS), (1_000, ENDPOINTS), (5_000, ENDPOINTS), (10_000, ENDPOINTS), (1, 250)]
IDS = ["100x10", "1000x10", "5000x10", "10000x10", "1x250"]


def _rounds(services: int) -> int:
    return 3 if services >= 5_000 else 10


@pytest.mark.parametrize(("services", "endpoints"), SIZES, ids=IDS)
def test_compile(benchmark: BenchmarkFixture, services: int, endpoints: int) -> None:
    view = _view(services, endpoints)
    pedantic: Callable[..., Ruleset] = benchmark.pedantic
    ruleset = pedantic(
        _cold_compile, args=(view,), setup=clear_cache, rounds=_rounds(services), warmup_rounds=0
    )
    chains = len(ruleset.tables[0].chains)
    benchmark.extra_info["chains"] = chains
    assert chains > services * endpoints


@pytest.mark.parametrize(("services", "endpoints"), SIZES, ids=IDS)
def test_compile_render(benchmark: BenchmarkFixture, services: int, endpoints: int) -> None:
    view = _view(services, endpoints)
    benchmark.extra_info["peak_mib"] = _peak_mib(lambda: _compile_render(view))
    pedantic: Callable[..., str] = benchmark.pedantic
    text = pedantic(
        _compile_render, args=(view,), setup=clear_cache, rounds=_rounds(services), warmup_rounds=0
    )
    benchmark.extra_info["lines"] = text.count("\n")
    benchmark.extra_info["bytes"] = len(text)


def _one_changed(view: NodeView) -> NodeView:
    """The view with one Service (in the middle) down one endpoint."""
    ports = list(view.service_ports)
    i = len(ports) // 2
    eps = ports[i].cluster_endpoints[:-1]
    ports[i] = attrs.evolve(
        ports[i], all_endpoints=eps, cluster_endpoints=eps, all_reachable_endpoints=eps
    )
    return NodeView(view.node, view.config, ports)


def test_recompile_one_changed(benchmark: BenchmarkFixture) -> None:
    view = _view(10_000)
    changed = _one_changed(view)

    def setup() -> None:
        clear_cache()
        _cold_compile(view)

    pedantic: Callable[..., Ruleset] = benchmark.pedantic
    pedantic(_cold_compile, args=(changed,), setup=setup, rounds=3, warmup_rounds=0)


def test_delta_one_changed(benchmark: BenchmarkFixture) -> None:
    clear_cache()
    old = _cold_compile(_view(10_000))
    new = _cold_compile(_one_changed(_view(10_000)))
    pedantic: Callable[..., Transaction] = benchmark.pedantic
    tx = pedantic(delta, args=(old, new), rounds=20, warmup_rounds=1)
    benchmark.extra_info["operations"] = len(tx)
    benchmark.extra_info["bytes"] = len(tx.text)
    # the service chain refilled, the stale endpoint chain flushed and deleted
    assert len(tx) == 6
    clear_cache()
