"""The kernel as oracle: the engine's predictions against real connections.

Every test builds its node in private network namespaces (``kst-*``, made and
removed by :mod:`kservice.kernel`), loads the compiled rules with the real
tools and probes them; nothing touches the root namespace. They need root and
skip with the reason where namespaces cannot be made.

``KSERVICE_AGREEMENT_EXAMPLES`` sets the number of Hypothesis-generated
clusters checked (default 12, each in iptables and nftables mode; ``pytest
--long`` raises it to 200).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from strategies import GeneratedCluster, clusters

from kservice import Cluster, ClusterConfig, load, load_text
from kservice.cli import main
from kservice.engine import Engine
from kservice.kernel import netns
from kservice.kernel.netns import PREFIX, ip_vs_available, kernel_unavailable
from kservice.kernel.topology import Topology, TopologyPlan
from kservice.kernel.verify import (
    Outcome,
    Report,
    _Runner,
    compile_node,
    plan_probes,
    verify,
    verify_delta,
)
from kservice.netfilter.ruleset import StatisticMatch
from kservice.proxy.config import ProxyConfig

pytestmark = pytest.mark.kernel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_CIDRS = ("10.244.0.0/16",)
MAX_EXAMPLES = int(os.environ.get("KSERVICE_AGREEMENT_EXAMPLES", "12"))
MODES = ("iptables", "nftables")


@pytest.fixture(autouse=True)
def _kernel() -> None:
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith(PREFIX)}


def _failure(report: Report, manifests: Any = None) -> str:
    text = report.render(verbose=True)
    if manifests is not None:
        text += "\n--- cluster manifests:\n" + yaml.safe_dump_all(manifests, sort_keys=False)
    return text


# -- a cluster with one of everything ---------------------------------------------------------


def _pod(name: str, node: str, ips: list[str], app: str = "web") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "dns", "containerPort": 5353, "protocol": "UDP"},
                    ],
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": ip} for ip in ips],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def _service(name: str, spec: dict[str, Any], status: dict[str, Any] | None = None) -> Any:
    out: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }
    if status:
        out["status"] = status
    return out


def feature_manifests() -> list[dict[str, Any]]:
    """Two dual-stack nodes; Services with every behaviour the probes can tell apart."""
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name},
            "spec": {"podCIDRs": [f"10.244.{i}.0/24", f"fd00:244:{i}::/64"]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": f"192.168.0.1{i}"},
                    {"type": "InternalIP", "address": f"fd00:1::1{i}"},
                ]
            },
        }
        for i, name in ((1, "node-a"), (2, "node-b"))
    ]
    pods = [
        _pod("web-0", "node-a", ["10.244.1.10", "fd00:244:1::10"]),
        _pod("web-1", "node-b", ["10.244.2.11", "fd00:244:2::11"]),
        _pod("web-2", "node-b", ["10.244.2.12", "fd00:244:2::12"]),
    ]
    http = {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    services = [
        _service(
            "web",
            {
                "selector": {"app": "web"},
                "ipFamilyPolicy": "RequireDualStack",
                "ports": [
                    http,
                    {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
                ],
            },
        ),
        _service(
            "sticky",
            {
                "type": "NodePort",
                "selector": {"app": "web"},
                "ipFamilyPolicy": "PreferDualStack",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 2}},
                "ports": [http],
            },
        ),
        _service(
            "local",
            {
                "type": "LoadBalancer",
                "selector": {"app": "web"},
                "externalTrafficPolicy": "Local",
                "loadBalancerSourceRanges": ["198.51.100.0/24"],
                "ports": [{"name": "https", "port": 443, "targetPort": 8080}],
            },
            {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}},
        ),
        _service("empty", {"selector": {"app": "none"}, "ports": [http]}),
        _service(
            "ext",
            {
                "selector": {"app": "web"},
                "internalTrafficPolicy": "Local",
                "externalIPs": ["203.0.113.20"],
                "ports": [http],
            },
        ),
    ]
    return [*nodes, *pods, *services]


FEATURE_CIDRS = ("10.244.0.0/16", "fd00:244::/32")


def feature_cluster() -> Cluster:
    cluster = Cluster(ClusterConfig(service_cidrs=("10.96.0.0/16", "fd00:96::/108"), seed=1))
    cluster.apply_all(load_text(yaml.safe_dump_all(feature_manifests())))
    return cluster


@pytest.mark.parametrize("mode", MODES)
def test_every_behaviour_agrees_on_a_dual_stack_node(mode: str) -> None:
    report = verify(
        feature_cluster(), "node-a", mode, config=ProxyConfig(cluster_cidrs=FEATURE_CIDRS)
    )
    assert report.ok, _failure(report, feature_manifests())
    used = set(report.plan["namespaces"])
    assert {n.rsplit("-", 1)[1] for n in used} == {"node", "external", "remote", "pod0", "pod1"}
    assert not used & _namespaces(), "verify left namespaces behind"
    assert report.families == ("IPv4", "IPv6")
    seen = {o for r in report.probes for o in r.observed}
    kinds = {o.kind for o in seen}
    # the run saw every kind of outcome it can tell apart
    assert {"answer", "refused", "drop"} <= kinds
    assert Outcome("answer", "10.244.1.10:8080", True) in seen  # hairpin: masqueraded
    assert Outcome("answer", "[fd00:244:2::11]:8080", False) in seen  # pod source kept
    random = [r for r in report.probes if r.p_value is not None]
    assert random and all(r.connections >= 200 for r in random)
    # ClientIP affinity: sticky in both families, and clients move after the 2 s timeout
    sticky = [a for a in report.affinity if a.service.startswith("default/sticky")]
    assert len(sticky) == 2
    assert all(a.sticky and a.expiry_checked and a.moved > 0 for a in sticky), sticky
    # eTP Local: the LB IP from an allowed source reaches only node-a's endpoint
    lb = [r for r in report.probes if r.probe.what == "load-balancer"]
    allowed = [r for r in lb if r.probe.source.startswith("allowed")]
    assert allowed and all(set(r.observed) == {Outcome("answer", "10.244.1.10:8080", False)}
                           for r in allowed)  # fmt: skip
    denied = [r for r in lb if r.probe.source.startswith("denied")]
    assert denied and all(set(o.kind for o in r.observed) == {"drop"} for r in denied)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("node", ["node-a", "node-b", "node-c"])
def test_the_examples_agree(mode: str, node: str) -> None:
    cluster = Cluster.from_objects(load(EXAMPLES), seed=0)
    report = verify(cluster, node, mode, config=ProxyConfig(cluster_cidrs=EXAMPLE_CIDRS))
    assert report.ok, _failure(report)
    assert report.probes and report.agreement_rate == 1.0


@pytest.mark.parametrize("mode", MODES)
def test_masquerade_with_no_ipv4_node_address_is_dropped(mode: str) -> None:
    """Found by test_generated_clusters_agree: a dual-stack node whose only
    address is IPv6 has nothing for an IPv4 MASQUERADE to take, so the
    kernel drops a hairpin connection; the engine must say so too."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-a"},
        "spec": {"podCIDRs": ["fd00:244:0:1::/64", "10.244.1.0/24"]},
        "status": {"addresses": [{"type": "InternalIP", "address": "fd00:1::1"}]},
    }
    manifests = [
        node,
        _pod("web-0", "node-a", ["10.244.1.2"]),
        _service("a", {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80,
                                                               "targetPort": 8080}]}),
    ]  # fmt: skip
    cluster = Cluster(ClusterConfig(service_cidrs=("10.96.0.0/16", "fd00:96::/108"), seed=1))
    cluster.apply_all(load_text(yaml.safe_dump_all(manifests)))
    config = ProxyConfig(cluster_cidrs=("10.244.0.0/16", "fd00:244::/48"))
    report = verify(cluster, "node-a", mode, families=("IPv4",), config=config)
    assert report.ok, _failure(report, manifests)
    hairpin = [r for r in report.probes if r.probe.what == "hairpin"]
    assert hairpin and all({o.kind for o in r.observed} == {"drop"} for r in hairpin)
    other = [r for r in report.probes if r.probe.what == "cluster-ip"]  # not masqueraded
    assert other and all({o.kind for o in r.observed} == {"answer"} for r in other)


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(generated=clusters())
def test_generated_clusters_agree(generated: GeneratedCluster) -> None:
    config = ProxyConfig(cluster_cidrs=generated.cluster_cidrs, **generated.proxy_options)
    for mode in MODES:
        report = verify(
            generated.cluster,
            generated.node_names[0],
            mode,
            families=generated.families,
            config=config,
        )
        assert report.ok, _failure(report, generated.manifests)


def test_ipvs_mode_checks_what_it_can_and_says_why() -> None:
    cluster = Cluster.from_objects(load(EXAMPLES), seed=0)
    report = verify(cluster, "node-a", "ipvs", config=ProxyConfig(cluster_cidrs=EXAMPLE_CIDRS))
    tools = [s.tool for s in report.load]
    assert "ipset restore" in tools and "ipvsadm-save text" in tools
    assert report.accepted, _failure(report)
    if ip_vs_available():  # pragma: no cover - not on these machines
        assert report.ok, _failure(report)
    else:
        assert not report.probes
        assert any("ip_vs kernel module is not available" in n for n in report.notes)
        assert "ip_vs" in report.render()


# -- the verifier catches what it should -------------------------------------------------------


def _runner_for(kernel_rules: str, engine_rules: str) -> tuple[Any, ...]:
    """Kernel loaded with one config's rules, engine built from another's."""
    cluster = feature_cluster()
    (views, kernel), (_, engine) = (
        compile_node(
            cluster,
            "node-a",
            "iptables",
            families=("IPv4",),
            config=ProxyConfig(cluster_cidrs=FEATURE_CIDRS, masquerade_all=rules == "masq"),
        )
        for rules in (kernel_rules, engine_rules)
    )
    return cluster, views, kernel[0], engine[0]


def _ninety(match: StatisticMatch) -> StatisticMatch:
    return attrs.evolve(match, probability=0.9, text="0.9000000000")


def _skew(ruleset: Any) -> Any:
    """Every ``statistic --probability`` made 0.9: a wrong spread."""
    tables = []
    for table in ruleset.tables:
        chains = []
        for chain in table.chains:
            rules = [
                attrs.evolve(
                    rule,
                    exprs=tuple(
                        attrs.evolve(e, probability=0.9, text="0.9000000000")
                        if isinstance(e, StatisticMatch)
                        else e
                        for e in rule.exprs
                    ),
                )
                for rule in chain.rules
            ]
            chains.append(attrs.evolve(chain, rules=tuple(rules)))
        tables.append(attrs.evolve(table, chains=tuple(chains)))
    return attrs.evolve(ruleset, tables=tuple(tables))


@pytest.mark.parametrize("wrong", ["masquerade", "spread"])
def test_a_wrong_engine_is_caught(wrong: str) -> None:
    cluster, views, kernel, engine_rules = _runner_for("masq" if wrong == "masquerade" else "", "")
    if wrong == "spread":
        engine_rules = _skew(engine_rules)
    plan = TopologyPlan.build(cluster, "node-a", views, [kernel], affinity_clients=0)
    with Topology.create(plan) as topo:
        used = set(topo.names.values())
        assert all(step.ok for step in topo.load(kernel))
        runner = _Runner(
            topo,
            {"IPv4": Engine(engine_rules, seed=0)},
            connections=200,
            deterministic_connections=3,
            timeout=0.4,
            alpha=0.001,
        )
        probes = [
            p
            for p in plan_probes(plan, views)
            if p.service == "default/web:http/tcp" and p.what == "cluster-ip" and p.source == "pod"
        ]
        assert len(probes) == 1
        result = runner.run(probes[0])
    assert not used & _namespaces()
    assert not result.agrees
    if wrong == "spread":
        assert result.resampled and result.p_value is not None and result.p_value <= 0.001
        assert "chi-square" in result.reason
    else:
        assert "impossible" in result.reason and "masqueraded" in result.reason


def test_namespaces_are_removed_when_a_run_fails_midway() -> None:
    used: set[str] = set()

    def boom(text: str) -> None:
        if "probe 2/" in text:
            used.update(ns.name for group in netns._LIVE for ns in group)
            raise RuntimeError("interrupted")

    cluster = Cluster.from_objects(load(EXAMPLES), seed=0)
    with pytest.raises(RuntimeError, match="interrupted"):
        verify(cluster, "node-a", "nftables", config=ProxyConfig(cluster_cidrs=EXAMPLE_CIDRS),
               progress=boom)  # fmt: skip
    assert used and not used & _namespaces()


# -- incremental updates -----------------------------------------------------------------------


def _changed(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A new state: one Service gone, one port renumbered, one pod gone, one Service new."""
    out = []
    for m in manifests:
        name = m["metadata"]["name"]
        if name in ("empty", "web-2"):
            continue
        if m["kind"] == "Service" and name == "ext":
            m = yaml.safe_load(yaml.safe_dump(m))
            m["spec"]["ports"][0]["port"] = 8000
        out.append(m)
    out.append(
        _service(
            "fresh",
            {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 81, "targetPort": 8080}],
            },
        )
    )
    return out


def test_a_partial_sync_applied_in_the_kernel_gives_the_new_ruleset() -> None:
    old = feature_cluster()
    new = Cluster.from_state(old.to_state())
    for kind, name in (("Service", "empty"), ("Pod", "web-2"), ("Service", "ext")):
        new.delete(kind, "default", name)
    objects = load_text(yaml.safe_dump_all(_changed(feature_manifests())))
    new.apply_all([o for o in objects if o.KIND in ("Service", "Pod")])
    checks = verify_delta(old, new, "node-a", config=ProxyConfig(cluster_cidrs=FEATURE_CIDRS))
    assert len(checks) == 1
    check = checks[0]
    assert check.agrees, (
        check.reason
        + "\n"
        + "\n".join(f"{p.probe}: {p.reason}" for p in check.probes if not p.agrees)
    )
    assert check.operations > 0 and check.applied and check.same_ruleset
    assert check.connection_kept is True
    assert check.probes and all(p.agrees for p in check.probes)
    assert {p.probe.port for p in check.probes if p.probe.service.startswith("default/fresh")}


# -- the command line ---------------------------------------------------------------------------


def test_cli_verify_reports_agreement(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["verify", str(EXAMPLES), "--node", "node-b", "--mode", "nftables",
                 "--cluster-cidr", "10.244.0.0/16", "--connections", "200"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "100.0% agreement" in out and "0 disagree" in out


def test_cli_verify_json_and_delta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = tmp_path / "new"
    new.mkdir()
    for f in EXAMPLES.glob("*.yaml"):
        if f.name != "legacy-db.yaml":
            (new / f.name).write_text(f.read_text().replace("port: 80\n", "port: 81\n"))
    code = main(["verify", str(EXAMPLES), "--node", "node-a", "--mode", "nftables",
                 "--cluster-cidr", "10.244.0.0/16", "--delta", str(new), "--json"])  # fmt: skip
    out = capsys.readouterr().out
    import json

    data = json.loads(out)
    assert code == 0, out
    assert data["ok"] and data["accepted"] and data["agreement_rate"] == 1.0
    assert data["delta"][0]["same_ruleset"] and data["delta"][0]["connection_kept"]


def test_cli_verify_without_the_kernel(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import kservice.kernel.netns as netns

    monkeypatch.setattr(netns, "kernel_unavailable", lambda: "kernel checks need root (test)")
    code = main(["verify", str(EXAMPLES), "--node", "node-a"])
    assert code == 3
    assert "cannot run here: kernel checks need root (test)" in capsys.readouterr().err


def test_cli_verify_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", str(EXAMPLES), "--node", "node-a", "--connections", "0"]) == 2
    assert main(["verify", str(EXAMPLES), "--node", "node-a", "--delta", "x"]) == 2
    assert "only nftables mode" in capsys.readouterr().err
    assert main(["verify", str(EXAMPLES), "--node", "nope"]) == 1
    assert 'Node "nope" not found' in capsys.readouterr().err


def test_rule_sanity_of_the_skew_helper() -> None:
    """The skewed ruleset really differs (else the spread test above proves nothing)."""
    _, _, kernel, _ = _runner_for("", "")
    skewed = _skew(kernel)
    probabilities = {
        e.probability
        for _t, _c, _i, rule in skewed.iter_rules()
        for e in rule.exprs
        if isinstance(e, StatisticMatch)
    }
    assert probabilities == {0.9}
