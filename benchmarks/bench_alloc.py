"""Allocator throughput: the cost of one allocation must not grow with occupancy.

Run with ``PYTHONPATH=src python -m pytest benchmarks/bench_alloc.py --benchmark-only``.
"""

from __future__ import annotations

from typing import Any

import pytest

from kservice.control.ipalloc import ClusterIPAllocator
from kservice.control.portalloc import NodePortAllocator

OCCUPANCY = [0.10, 0.50, 0.99]


def _filled_ips(cidr: str, occupancy: float) -> ClusterIPAllocator:
    alloc = ClusterIPAllocator(cidr, seed=1)
    for _ in range(int(alloc.size * occupancy)):
        alloc.allocate_next()
    return alloc


def _filled_ports(occupancy: float) -> NodePortAllocator:
    alloc = NodePortAllocator(seed=1)
    for _ in range(int(alloc.size * occupancy)):
        alloc.allocate_next()
    return alloc


@pytest.mark.parametrize("occupancy", OCCUPANCY, ids=lambda o: f"{o:.0%}")
def test_clusterip_next_release_round_trip_slash16(benchmark: Any, occupancy: float) -> None:
    alloc = _filled_ips("10.0.0.0/16", occupancy)

    def round_trip() -> None:
        alloc.release(alloc.allocate_next())

    benchmark(round_trip)
    assert alloc.used == int(alloc.size * occupancy)


@pytest.mark.parametrize("occupancy", OCCUPANCY, ids=lambda o: f"{o:.0%}")
def test_clusterip_next_burst_of_100_slash16(benchmark: Any, occupancy: float) -> None:
    alloc = _filled_ips("10.0.0.0/16", occupancy)

    def burst() -> None:
        taken = [alloc.allocate_next() for _ in range(100)]
        for ip in taken:
            alloc.release(ip)

    benchmark(burst)


@pytest.mark.parametrize("occupancy", OCCUPANCY, ids=lambda o: f"{o:.0%}")
def test_clusterip_static_allocate_release_slash16(benchmark: Any, occupancy: float) -> None:
    alloc = _filled_ips("10.0.0.0/16", occupancy)
    alloc.release("10.0.0.10")

    def round_trip() -> None:
        alloc.release(alloc.allocate("10.0.0.10"))

    benchmark(round_trip)


@pytest.mark.parametrize("occupancy", OCCUPANCY, ids=lambda o: f"{o:.0%}")
def test_nodeport_next_release_round_trip(benchmark: Any, occupancy: float) -> None:
    alloc = _filled_ports(occupancy)

    def round_trip() -> None:
        alloc.release(alloc.allocate_next())

    benchmark(round_trip)
    assert alloc.used == int(alloc.size * occupancy)


@pytest.mark.parametrize("occupancy", OCCUPANCY, ids=lambda o: f"{o:.0%}")
def test_nodeport_next_burst_of_20(benchmark: Any, occupancy: float) -> None:
    alloc = _filled_ports(occupancy)

    def burst() -> None:
        taken = [alloc.allocate_next() for _ in range(20)]
        for port in taken:
            alloc.release(port)

    benchmark(burst)


def _fill(alloc: ClusterIPAllocator | NodePortAllocator) -> None:
    for _ in range(alloc.size):
        alloc.allocate_next()


def test_clusterip_fill_slash16_from_empty(benchmark: Any) -> None:
    result = benchmark.pedantic(
        _fill, setup=lambda: ((ClusterIPAllocator("10.0.0.0/16", seed=1),), {}), rounds=5
    )
    assert result is None


def test_clusterip_fill_ipv6_slash112_from_empty(benchmark: Any) -> None:
    benchmark.pedantic(
        _fill, setup=lambda: ((ClusterIPAllocator("fd00::/112", seed=1),), {}), rounds=5
    )


def test_nodeport_fill_default_range_from_empty(benchmark: Any) -> None:
    benchmark.pedantic(_fill, setup=lambda: ((NodePortAllocator(seed=1),), {}), rounds=20)


def test_clusterip_snapshot_restore_full_slash16(benchmark: Any) -> None:
    alloc = _filled_ips("10.0.0.0/16", 0.5)

    def round_trip() -> None:
        ClusterIPAllocator.from_snapshot(*alloc.snapshot())

    benchmark(round_trip)
