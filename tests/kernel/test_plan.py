"""What the kernel checks plan, decided without the kernel (no root needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kservice import Cluster, load
from kservice.engine import Verdict
from kservice.kernel.probe import Observation
from kservice.kernel.topology import TopologyPlan
from kservice.kernel.verify import (
    Outcome,
    compile_node,
    expected_outcome,
    observed_outcome,
    plan_probes,
)
from kservice.proxy.config import ProxyConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def planned() -> tuple[TopologyPlan, list[object]]:
    cluster = Cluster.from_objects(load(EXAMPLES), seed=0)
    views, rulesets = compile_node(
        cluster, "node-a", "nftables", config=ProxyConfig(cluster_cidrs=("10.244.0.0/16",))
    )
    plan = TopologyPlan.build(cluster, "node-a", views, rulesets, protocols=("tcp", "udp"))
    return plan, plan_probes(plan, views)


def test_the_plan_puts_every_endpoint_somewhere(planned: tuple[TopologyPlan, list[object]]) -> None:
    plan, _ = planned
    assert plan.node_addresses == ("192.168.1.10",)
    # node-a's pods get namespaces; the client pod is free in node-a's pod CIDR
    assert plan.client_pod.addresses == ("10.244.1.254",)
    assert [(p.name, p.addresses) for p in plan.pods if not p.client] == [
        ("data/redis-0", ("10.244.1.40",)),
        ("production/backend-api-7c9d6b5f4-2xk8p", ("10.244.1.11",)),
        ("production/public-api-5f6c8d9b7-hx2lq", ("10.244.1.21",)),
    ]
    assert plan.host_of("tcp", "10.244.1.11", 8080) == "pod1"
    # the selectorless endpoint and other nodes' pods live in "remote"
    assert "10.0.5.20" in plan.remote_addresses
    assert plan.host_of("tcp", "10.0.5.20", 5432) == "remote"
    # an allowed and a denied source for public-api's loadBalancerSourceRanges
    purposes = {c.purpose for c in plan.external}
    assert {"client", "allowed", "denied"} <= purposes
    for c in plan.external:
        assert not c.address.startswith(("10.244.", "10.96."))


def test_probes_cover_every_way_in(planned: tuple[TopologyPlan, list[object]]) -> None:
    _, probes = planned
    seen = {(p.service, p.what, p.source) for p in probes}  # type: ignore[attr-defined]
    assert ("production/backend-api:http/tcp", "cluster-ip", "pod") in seen
    assert ("production/backend-api:http/tcp", "cluster-ip", "node") in seen
    assert ("production/backend-api:http/tcp", "hairpin", "endpoint pod") in seen
    assert ("staging/demo-app:http/tcp", "node-port", "external") in seen
    lb = {s for svc, what, s in seen if what == "load-balancer"}
    assert {"denied source", "pod"} <= lb
    assert any(s.startswith("allowed source (198.51.100.0/24)") for s in lb)


def test_verdicts_and_observations_meet_in_outcomes(
    planned: tuple[TopologyPlan, list[object]],
) -> None:
    plan, probes = planned
    pod = next(p for p in probes if p.source == "pod")  # type: ignore[attr-defined]
    node = next(p for p in probes if p.source == "node")  # type: ignore[attr-defined]
    dnat = Verdict("dnat", "10.0.5.20", 5432, True)
    assert expected_outcome(plan, pod, dnat) == Outcome("answer", "10.0.5.20:5432", True)
    # from the node the masquerade address is the source it had: not visible
    assert expected_outcome(plan, node, dnat) == Outcome("answer", "10.0.5.20:5432", None)
    assert expected_outcome(plan, pod, Verdict("reject")) == Outcome("refused")
    assert expected_outcome(plan, pod, Verdict("drop")) == Outcome("drop")
    # passed unchanged to an address nobody holds: ICMP unreachable from "remote"
    assert expected_outcome(plan, pod, Verdict("accept")).kind == "unreachable"
    seen = Observation("answer", "10.0.5.20", 5432, "192.168.1.10", 4000)
    assert observed_outcome(plan, pod, seen) == Outcome("answer", "10.0.5.20:5432", True)
    kept = Observation("answer", "10.0.5.20", 5432, pod.src, 4000)  # type: ignore[attr-defined]
    assert observed_outcome(plan, pod, kept) == Outcome("answer", "10.0.5.20:5432", False)
    assert observed_outcome(plan, pod, Observation("timeout")) == Outcome("drop")
    assert observed_outcome(plan, node, Observation("eperm")) == Outcome("drop")
    assert observed_outcome(plan, pod, Observation("refused")) == Outcome("refused")
    assert observed_outcome(plan, pod, Observation("silent")).kind == "error"
