"""Registry write rate: applying Services (validation, defaulting, allocation) and Pods.

Run with ``PYTHONPATH=src python -m pytest benchmarks/bench_cluster.py --benchmark-only``.
The figure to compare is the per-Service cost at 100 vs 10,000 Services: applying into a
nearly empty and into a full registry should cost about the same.
"""

from __future__ import annotations

from typing import Any

import pytest

from kservice.api.service import Service
from kservice.control.cluster import Cluster


def _services(n: int, *, node_port_every: int = 10) -> list[Service]:
    out = []
    for i in range(n):
        spec: dict[str, Any] = {
            "selector": {"app": f"app-{i}"},
            "ports": [{"port": 80, "name": "http", "targetPort": 8080}],
        }
        if i % node_port_every == 0:
            spec["type"] = "NodePort"
        out.append(
            Service.from_manifest(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": f"svc-{i}", "namespace": f"ns-{i % 50}"},
                    "spec": spec,
                }
            )
        )
    return out


@pytest.mark.parametrize("n", [100, 1_000, 10_000])
def test_apply_services(benchmark: Any, n: int) -> None:
    """Create ``n`` Services in an empty cluster (one round = every apply)."""
    services = _services(n)

    def run() -> Cluster:
        cluster = Cluster(seed=1)
        for svc in services:
            cluster.apply(svc)
        return cluster

    cluster = benchmark.pedantic(run, rounds=3 if n >= 10_000 else 5, iterations=1)
    assert len(cluster.services) == n
    benchmark.extra_info["services_per_second"] = n / benchmark.stats.stats.min


@pytest.mark.parametrize("n", [100, 10_000])
def test_update_one_service_in_a_full_registry(benchmark: Any, n: int) -> None:
    """Re-apply one Service into a registry of ``n``: must not grow with ``n``."""
    services = _services(n)
    cluster = Cluster(seed=1)
    for svc in services:
        cluster.apply(svc)
    target = services[n // 2]
    benchmark(cluster.apply, target)
    assert cluster.check_consistency() == []


def test_from_manifests_example_cluster(benchmark: Any) -> None:
    """Everything in examples/: load, apply, derive EndpointSlices."""
    from pathlib import Path

    import kservice

    examples = Path(__file__).resolve().parents[1] / "examples"
    objects = kservice.load(examples)
    cluster = benchmark(Cluster.from_objects, objects)
    assert len(cluster.services) == 6
