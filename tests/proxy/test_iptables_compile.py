"""The iptables compiler (kservice.proxy.iptables) against upstream kube-proxy.

Three kinds of checks, all carried over from kubernetes/kubernetes
``pkg/proxy/iptables/proxier_test.go``:

* Golden dumps (``tests/golden/iptables/<case>/``): ``input.yaml`` holds the
  Services, EndpointSlices and Node the upstream test builds (selectorless
  Services with hand-written slices, as the test feeds them), ``config.yaml``
  the proxier settings and where the case comes from, ``expected.txt`` the
  upstream expected ``iptables-restore`` dump (changes, if any, are listed under
  ``differences``). The rendered ``restore_only`` Ruleset must equal it after
  upstream's own normalisation (``sortIPTablesRules``: chain and Service order
  do not matter) -- and, as kservice orders chains the same way, byte for byte.
  Every jump must target a chain that is created and filled
  (``checkIPTablesRuleJumps``).
* Packet flows (``runPacketFlowTests``): a small tracer over the Ruleset model
  runs upstream's ``(source, destination, port) -> (endpoints, masquerade)``
  tables, starting from ``nat PREROUTING`` (the ensured jump) then the filter
  chains upstream's tracer visits.
* Properties: determinism, shuffled input order, hostile but valid names,
  large-cluster mode, the host switches, probabilities.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import flowtrace
import kservice
from kservice.api.endpointslice import EndpointSlice
from kservice.api.node import Node
from kservice.api.service import Service
from kservice.control.cluster import Cluster, ClusterConfig
from kservice.netfilter.iptables_text import MAX_COMMENT_BYTES, parse, render_restore
from kservice.netfilter.ruleset import (
    DNAT,
    Goto,
    Jump,
    MarkSet,
    ProtoMatch,
    RecentMatch,
    Rule,
    Ruleset,
    StatisticMatch,
    Table,
)
from kservice.proxy import NodeView, ProxyConfig, ServicePortInfo, ServicePortName
from kservice.proxy.iptables import (
    KUBE_FIREWALL,
    KUBE_FORWARD,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_PROXY_CANARY,
    KUBE_SERVICES,
    LARGE_CLUSTER_ENDPOINTS_THRESHOLD,
    IptablesHost,
    compile,
    compute_probability,
)
from kservice.proxy.naming import (
    iptables_endpoint_chain,
    join_host_port,
)
from kservice.proxy.nodeview import EndpointInfo

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "iptables"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "config.yaml").is_file())
DUMP_CASES = [c for c in CASES if (GOLDEN / c / "expected.txt").is_file()]

# Upstream's test conventions (NewFakeProxier).
NODE = "test-node"
NODE_IP = "192.168.0.2"
NODE_IP_ALT = "192.168.1.2"
EXTERNAL_CLIENT = "203.0.113.2"
EXTERNAL_CLIENT_BLOCKED = "203.0.113.130"
#: upstream's fake iptables: no --random-fully, nfacct counters present
UPSTREAM_HOST = IptablesHost(random_fully=False, nfacct=True)


# ------------------------------------------------------------------------ building views
def _split(objects: Iterable[Any]) -> tuple[list[Service], list[EndpointSlice], list[Node]]:
    objs = list(objects)
    return (
        [o for o in objs if isinstance(o, Service)],
        [o for o in objs if isinstance(o, EndpointSlice)],
        [o for o in objs if isinstance(o, Node)],
    )


def view_of(objects: Iterable[Any], config: ProxyConfig | None = None) -> NodeView:
    """The view of test-node, straight from the objects (as upstream's fake proxier)."""
    services, slices, nodes = _split(objects)
    return NodeView.from_objects(services, slices, nodes, node_name=NODE, config=config)


def case_config(name: str) -> dict[str, Any]:
    data = yaml.safe_load((GOLDEN / name / "config.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def case_objects(name: str) -> list[Any]:
    return kservice.load(GOLDEN / name / "input.yaml")


def case_proxy_config(cfg: dict[str, Any], **overrides: Any) -> ProxyConfig:
    return ProxyConfig(**{**cfg.get("proxy", {}), **overrides})


def case_view(name: str, **overrides: Any) -> NodeView:
    cfg = case_config(name)
    return view_of(case_objects(name), case_proxy_config(cfg, **overrides))


def case_host(cfg: dict[str, Any]) -> IptablesHost:
    return IptablesHost(**cfg.get("host", {}))


# --------------------------------------------------------- upstream's dump normalisation
_COMMENT = re.compile(r'--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))')


def _tables(text: str) -> dict[str, tuple[list[str], dict[str, list[str]], list[str]]]:
    """``table -> (declared chains, rules by chain, other lines)`` of a restore dump."""
    tables: dict[str, tuple[list[str], dict[str, list[str]], list[str]]] = {}
    current: tuple[list[str], dict[str, list[str]], list[str]] | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            current = tables[line[1:]] = ([], {}, [])
        elif line == "COMMIT":
            current = None
        else:
            assert current is not None, f"line outside a table: {line!r}"
            if line.startswith(":"):
                current[0].append(line[1:].split(" ")[0])
            elif line.startswith("-A "):
                current[1].setdefault(line.split(" ")[1], []).append(line)
            else:
                current[2].append(line)
    return tables


def _service_of(rule: str) -> str | None:
    m = _COMMENT.search(rule)
    if m is None:
        return None
    name = m.group(1) if m.group(1) is not None else m.group(2)
    return re.split("[ :]", name, maxsplit=1)[0]


def sort_rules(text: str) -> str:
    """Upstream's ``sortIPTablesRules``: tables by name; KUBE-NODEPORTS, KUBE-SERVICES,
    other KUBE-* chains by name, then the rest by name; KUBE-NODEPORTS and
    KUBE-SERVICES rules ordered by the Service named in their comment (stable),
    keeping "must be the last rule" last."""

    def chain_key(name: str) -> tuple[int, str]:
        if name == KUBE_NODEPORTS:
            return (0, name)
        if name == KUBE_SERVICES:
            return (1, name)
        return (2 if name.startswith("KUBE-") else 3, name)

    def by_service(rules: list[str]) -> list[str]:
        last = [r for r in rules if "must be the last rule" in r]
        rest = [r for r in rules if "must be the last rule" not in r]
        return sorted(rest, key=lambda r: _service_of(r) or "") + last

    out: list[str] = []
    for table, (declared, rules, other) in sorted(_tables(text).items()):
        out.append(f"*{table}")
        chains = sorted(set(declared) | set(rules), key=chain_key)
        out += [f":{c} - [0:0]" for c in chains if c in declared]
        for c in chains:
            chain_rules = rules.get(c, [])
            out += by_service(chain_rules) if c in (KUBE_NODEPORTS, KUBE_SERVICES) else chain_rules
        out += other
        out.append("COMMIT")
    return "".join(line + "\n" for line in out)


_BUILTIN_TARGETS = {"ACCEPT", "REJECT", "DROP", "MARK", "RETURN", "DNAT", "SNAT", "MASQUERADE"}
_ALWAYS_CREATED = {
    KUBE_SERVICES,
    "KUBE-EXTERNAL-SERVICES",
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_FORWARD,
    "KUBE-MARK-MASQ",
    "KUBE-PROXY-FIREWALL",
    KUBE_FIREWALL,
}


def check_rule_jumps(text: str) -> None:
    """Upstream's ``checkIPTablesRuleJumps`` on a restore dump."""
    for table, (declared, rules, _other) in _tables(text).items():
        created = set(declared)
        filled = set(rules)
        jumped = {
            m.group(1)
            for lines in rules.values()
            for r in lines
            for m in [re.search(r" -j (\S+)", r)]
            if m
        } - _BUILTIN_TARGETS
        missing = (jumped - created) | (filled - created)
        assert not missing, f"chains used but not created in {table}: {sorted(missing)}"
        empty = jumped - filled - {KUBE_NODEPORTS}
        assert not empty, f"chains jumped to but without rules in {table}: {sorted(empty)}"
        extra = created - jumped - _ALWAYS_CREATED
        assert not extra, f"chains created but not used in {table}: {sorted(extra)}"


def check_model_jumps(ruleset: Ruleset) -> None:
    """Every Jump/Goto of the Ruleset names a chain of its own table."""
    for table in ruleset.tables:
        names = {c.name for c in table.chains}
        for chain in table.chains:
            for rule in chain.rules:
                if isinstance(rule.verdict, Jump | Goto):
                    assert rule.verdict.chain in names, (table.name, chain.name, rule)


# ---------------------------------------------------------------------- golden dumps
@pytest.mark.parametrize("name", DUMP_CASES)
def test_golden_dump(name: str) -> None:
    cfg = case_config(name)
    view = view_of(case_objects(name), case_proxy_config(cfg))
    ruleset = compile(view, case_host(cfg), restore_only=True)
    rendered = render_restore(ruleset)
    expected = (GOLDEN / name / "expected.txt").read_text(encoding="utf-8")
    # Upstream's comparison: both sides normalised, whole dumps.
    assert sort_rules(rendered) == sort_rules(expected)
    # kservice orders chains as upstream's normalisation does: byte for byte too.
    assert rendered == expected
    check_rule_jumps(expected)
    check_rule_jumps(rendered)


@pytest.mark.parametrize("name", CASES)
def test_golden_config_is_documented(name: str) -> None:
    cfg = case_config(name)
    assert set(cfg) <= {"source", "node", "proxy", "host", "cluster", "view", "differences"}
    assert "proxier_test.go" in cfg["source"]
    assert cfg["node"] == NODE
    assert cfg["view"] in ("cluster", "objects")


@pytest.mark.parametrize("name", [c for c in CASES if case_config(c)["view"] == "cluster"])
def test_golden_input_through_the_api_server(name: str) -> None:
    """The same view through a Cluster (allocators, validation, stored objects)."""
    cfg = case_config(name)
    cluster = Cluster.from_objects(case_objects(name), ClusterConfig.from_dict(cfg["cluster"]))
    via_cluster = NodeView.from_cluster(cluster, NODE, case_proxy_config(cfg))
    direct = view_of(case_objects(name), case_proxy_config(cfg))
    host = case_host(cfg)
    assert compile(via_cluster, host) == compile(direct, host)


@pytest.mark.parametrize("name", CASES)
def test_full_ruleset_renders_and_parses_back(name: str) -> None:
    """With the ensured jumps: every jump lands in the table, the text reads back equal."""
    cfg = case_config(name)
    view = case_view(name)
    for host in (case_host(cfg), IptablesHost()):
        full = compile(view, host)
        check_model_jumps(full)
        text = render_restore(full)
        family = "ip6" if full.family == "IPv6" else "ip"
        back = parse(text, family=family).ruleset
        assert back.tables == full.tables
        restore = compile(view, host, restore_only=True)
        assert parse(render_restore(restore), family=family).ruleset.tables == restore.tables
        # The restore input is a part of the full ruleset, rule for rule.
        for table in restore.tables:
            whole = full.table(table.name)
            for chain in table.chains:
                assert whole.chain(chain.name) == chain


# ------------------------------------------------------------------------ the tracer
def trace(ruleset: Ruleset, src: str, dst: str, port: int, proto: str = "tcp") -> tuple[str, bool]:
    """Upstream's ``tracePacket``, answered by the packet engine (tests/flowtrace.py)."""
    return flowtrace.flow(ruleset, src, dst, port, proto)


Flow = tuple[str, str, str, int, str, bool]  # name, source, destination, port, output, masq


def run_flows(ruleset: Ruleset, flows: Sequence[Flow], proto: dict[str, str] | None = None) -> None:
    failures = []
    for name, src, dst, port, output, masq in flows:
        got = trace(ruleset, src, dst, port, (proto or {}).get(name, "tcp"))
        want = (flowtrace.normalized(output), masq)
        if got != want:
            failures.append(f"{name}: {src} -> {dst}:{port}: got {got}, want {want}")
    assert not failures, "\n".join(failures)


# ----------------------------------------------------------------- hand-built inputs
def svc(ns: str, name: str, **spec: Any) -> Service:
    status = spec.pop("status", None)
    manifest: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }
    if status is not None:
        manifest["status"] = status
    return Service.from_manifest(manifest)


def eps(
    ns: str,
    service: str,
    endpoints: Sequence[dict[str, Any]],
    ports: Sequence[dict[str, Any]],
    *,
    family: str = "IPv4",
    index: int = 1,
) -> EndpointSlice:
    return EndpointSlice.from_manifest(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-{index}",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": family,
            "endpoints": list(endpoints),
            "ports": list(ports),
        }
    )


def ep(ip: str, node: str | None = None, **conditions: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [ip]}
    if node is not None:
        out["nodeName"] = node
    if conditions:
        out["conditions"] = conditions
    return out


def port(name: str, number: int, protocol: str = "TCP", **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": number, "protocol": protocol, **extra}


NODES = [n for n in case_objects("overall") if isinstance(n, Node)]


def compile_objects(
    objects: Iterable[Any], config: ProxyConfig | None = None, host: IptablesHost = UPSTREAM_HOST
) -> Ruleset:
    return compile(view_of([*NODES, *objects], config), host)


CIDR = ProxyConfig(cluster_cidrs="10.0.0.0/8")


# ---------------------------------------------------------------- flows: golden inputs
def test_flows_overall() -> None:
    """TestTracePacket's flows, on TestOverallIPTablesRules' input."""
    ruleset = compile(case_view("overall"), UPSTREAM_HOST)
    run_flows(
        ruleset,
        [
            ("no match", "10.0.0.2", "10.0.0.3", 80, "", False),
            ("single endpoint", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80", False),
            (
                "multiple endpoints",
                "10.0.0.2",
                "172.30.0.44",
                80,
                "10.180.0.4:80, 10.180.0.5:80",
                False,
            ),
            ("LOCAL, KUBE-MARK-MASQ", NODE_IP, "192.168.99.22", 80, "10.180.0.2:80", True),
            ("DROP", EXTERNAL_CLIENT, "192.168.99.22", 80, "DROP", False),
            ("ACCEPT (NodePortHealthCheck)", NODE_IP, NODE_IP, 30000, "ACCEPT", False),
            ("REJECT", "10.0.0.2", "172.30.0.46", 80, "REJECT", False),
        ],
    )


def test_flows_load_balancer() -> None:
    """TestLoadBalancer: loadBalancerSourceRanges, NodePorts bypass them, node allowed."""
    ruleset = compile(case_view("load_balancer"), UPSTREAM_HOST)
    epn = "10.180.0.1:80"
    run_flows(
        ruleset,
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, epn, False),
            ("external to nodePort", EXTERNAL_CLIENT, NODE_IP, 3001, epn, True),
            ("nodePort bypasses LBSR", EXTERNAL_CLIENT_BLOCKED, NODE_IP, 3001, epn, True),
            ("accepted external to LB1", EXTERNAL_CLIENT, "1.2.3.4", 80, epn, True),
            ("accepted external to LB2", EXTERNAL_CLIENT, "5.6.7.8", 80, epn, True),
            ("blocked external to LB1", EXTERNAL_CLIENT_BLOCKED, "1.2.3.4", 80, "DROP", False),
            ("blocked external to LB2", EXTERNAL_CLIENT_BLOCKED, "5.6.7.8", 80, "DROP", False),
            ("pod to LB1 (blocked)", "10.0.0.2", "1.2.3.4", 80, "DROP", False),
            ("pod to LB2 (blocked)", "10.0.0.2", "5.6.7.8", 80, "DROP", False),
            ("node to LB1 (allowed)", NODE_IP, "1.2.3.4", 80, epn, True),
            ("node to LB2 (allowed)", NODE_IP, "5.6.7.8", 80, epn, True),
            ("same node to LB1, SNATted to LB1", "1.2.3.4", "1.2.3.4", 80, epn, True),
            ("same node to LB2, SNATted to LB2", "5.6.7.8", "5.6.7.8", 80, epn, True),
        ],
    )


def test_flows_node_port_and_health_check() -> None:
    """TestNodePort and TestHealthCheckNodePort."""
    epn = "10.180.0.1:80"
    run_flows(
        compile(case_view("node_port"), UPSTREAM_HOST),
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, epn, False),
            ("external to nodePort", EXTERNAL_CLIENT, NODE_IP, 3001, epn, True),
            ("node to nodePort", NODE_IP, NODE_IP, 3001, epn, True),
            ("localhost to nodePort gets masqueraded", "127.0.0.1", "127.0.0.1", 3001, epn, True),
        ],
    )
    run_flows(
        compile(case_view("health_check_node_port"), UPSTREAM_HOST),
        [("firewall accepts HealthCheckNodePort", "1.2.3.4", NODE_IP, 30000, "ACCEPT", False)],
    )


def test_flows_external_traffic_policy_local() -> None:
    """TestExternalTrafficPolicyLocal (the current, longer flow table)."""
    ruleset = compile(case_view("external_traffic_policy_local"), UPSTREAM_HOST)
    both, local = "10.180.0.1:80, 10.180.2.1:80", "10.180.2.1:80"
    run_flows(
        ruleset,
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both, False),
            ("pod to external IP", "10.0.0.2", "192.168.99.11", 80, both, False),
            ("external to external IP", EXTERNAL_CLIENT, "192.168.99.11", 80, local, False),
            ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, both, False),
            ("external to LB IP", EXTERNAL_CLIENT, "1.2.3.4", 80, local, False),
            ("pod to NodePort", "10.0.0.2", NODE_IP, 3001, both, False),
            ("external to NodePort", EXTERNAL_CLIENT, NODE_IP, 3001, local, False),
        ],
    )


def test_flows_external_ips() -> None:
    """TestNonLocalExternalIPs."""
    both = "10.180.0.1:80, 10.180.2.1:80"
    run_flows(
        compile(case_view("external_ips"), UPSTREAM_HOST),
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both, False),
            ("external to external IP", EXTERNAL_CLIENT, "192.168.99.11", 80, both, True),
        ],
    )


@pytest.mark.parametrize("name", ["only_local_nodeports", "only_local_nodeports_no_cluster_cidr"])
def test_flows_only_local_node_ports(name: str) -> None:
    """onlyLocalNodePorts: without a local-traffic detector, pod-to-NodePort is external."""
    ruleset = compile(case_view(name), UPSTREAM_HOST)
    both, local = "10.180.0.1:80, 10.180.2.1:80", "10.180.2.1:80"
    detector = name == "only_local_nodeports"
    run_flows(
        ruleset,
        [
            ("pod to cluster IP hit both endpoints", "10.0.0.2", "172.30.0.41", 80, both, False),
            ("external to NodePort hits only local", EXTERNAL_CLIENT, NODE_IP, 3001, local, False),
            ("pod to localhost NodePort", "10.0.0.2", "127.0.0.1", 3001, "", False),
            ("pod to NodePort", "10.0.0.2", NODE_IP, 3001, both if detector else local, False),
        ],
    )


@pytest.mark.parametrize(
    ("name", "output"),
    [
        ("internal_traffic_policy_cluster", "10.0.1.1:80, 10.0.1.2:80, 10.0.1.3:80"),
        ("internal_traffic_policy_local", "10.0.1.1:80"),
        ("internal_traffic_policy_local_no_local_endpoints", "DROP"),
    ],
)
def test_flows_internal_traffic_policy(name: str, output: str) -> None:
    run_flows(
        compile(case_view(name), UPSTREAM_HOST),
        [("pod to ClusterIP", "10.0.0.2", "172.30.1.1", 80, output, False)],
    )


@pytest.mark.parametrize(
    ("name", "to_cluster_ip", "to_lb", "lb_masq"),
    [
        (
            "terminating_local_ready",
            "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
            "10.0.1.1:80, 10.0.1.2:80",
            False,
        ),
        ("terminating_local_only_terminating", "10.0.1.5:80", "10.0.1.2:80, 10.0.1.3:80", False),
        ("terminating_local_remote", "10.0.1.5:80", "DROP", False),
        ("terminating_local_no_usable_endpoints", "REJECT", "REJECT", False),
        (
            "terminating_cluster_ready",
            "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
            "10.0.1.1:80, 10.0.1.2:80, 10.0.1.5:80",
            True,
        ),
        (
            "terminating_cluster_only_terminating",
            "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
            "10.0.1.2:80, 10.0.1.3:80, 10.0.1.5:80",
            True,
        ),
        ("terminating_cluster_remote", "10.0.1.5:80", "10.0.1.5:80", True),
    ],
)
def test_flows_terminating_endpoints(
    name: str, to_cluster_ip: str, to_lb: str, lb_masq: bool
) -> None:
    """TestTerminatingEndpointsTrafficPolicy{Local,Cluster}, then the slice deleted."""
    ruleset = compile(case_view(name), UPSTREAM_HOST)
    run_flows(
        ruleset,
        [
            ("pod to clusterIP", "10.0.0.2", "172.30.1.1", 80, to_cluster_ip, False),
            ("external to LB", EXTERNAL_CLIENT, "1.2.3.4", 80, to_lb, lb_masq),
        ],
    )
    services = [o for o in case_objects(name) if not isinstance(o, EndpointSlice)]
    deleted = compile(view_of(services, CIDR), UPSTREAM_HOST)
    run_flows(
        deleted,
        [
            (
                "pod to clusterIP after endpoints deleted",
                "10.0.0.2",
                "172.30.1.1",
                80,
                "REJECT",
                False,
            ),
            (
                "external to LB after endpoints deleted",
                EXTERNAL_CLIENT,
                "1.2.3.4",
                80,
                "REJECT",
                False,
            ),
        ],
    )


# ------------------------------------------------------------ flows: hand-built inputs
def test_flows_no_endpoints_reject() -> None:
    """TestNoEndpointsReject: ClusterIP, externalIP, NodePort and LB IP all REJECT."""
    ruleset = compile_objects(
        [
            svc(
                "ns1",
                "svc1",
                type="LoadBalancer",
                clusterIP="172.30.0.41",
                externalIPs=["192.168.99.11"],
                ports=[port("p80", 80, nodePort=3001)],
                status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}},
            )
        ],
        CIDR,
    )
    run_flows(
        ruleset,
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, "REJECT", False),
            ("external to external IP", EXTERNAL_CLIENT, "192.168.99.11", 80, "REJECT", False),
            ("pod to NodePort", "10.0.0.2", NODE_IP, 3001, "REJECT", False),
            ("external to NodePort", EXTERNAL_CLIENT, NODE_IP, 3001, "REJECT", False),
            ("pod to LoadBalancer IP", "10.0.0.2", "1.2.3.4", 80, "REJECT", False),
            ("external to LoadBalancer IP", EXTERNAL_CLIENT, "1.2.3.4", 80, "REJECT", False),
        ],
    )


def test_flows_cluster_ip_general() -> None:
    """TestClusterIPGeneral: named ports, targetPort, TCP/UDP/SCTP on one port number."""
    ruleset = compile_objects(
        [
            svc("ns1", "svc1", clusterIP="172.30.0.41", ports=[port("http", 80)]),
            svc(
                "ns2",
                "svc2",
                clusterIP="172.30.0.42",
                ports=[
                    port("http", 80),
                    port("https", 443, targetPort=8443),
                    port("dns-udp", 53, "UDP"),
                    port("dns-tcp", 53, targetPort=5353),
                    port("dns-sctp", 53, "SCTP"),
                ],
            ),
            eps("ns1", "svc1", [ep("10.180.0.1", NODE)], [port("http", 80)]),
            eps(
                "ns2",
                "svc2",
                [ep("10.180.0.1", NODE), ep("10.180.2.1", "node2")],
                [
                    port("http", 80),
                    port("https", 8443),
                    port("dns-udp", 53, "UDP"),
                    port("dns-tcp", 5353),
                    port("dns-sctp", 53, "SCTP"),
                ],
            ),
        ],
        CIDR,
    )
    run_flows(
        ruleset,
        [
            ("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80", False),
            ("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
            (
                "multiple endpoints",
                "10.180.0.2",
                "172.30.0.42",
                80,
                "10.180.0.1:80, 10.180.2.1:80",
                False,
            ),
            (
                "TargetPort",
                "10.180.0.2",
                "172.30.0.42",
                443,
                "10.180.0.1:8443, 10.180.2.1:8443",
                False,
            ),
            (
                "TCP on 53",
                "10.180.0.2",
                "172.30.0.42",
                53,
                "10.180.0.1:5353, 10.180.2.1:5353",
                False,
            ),
            ("UDP on 53", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False),
            ("SCTP on 53", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:53, 10.180.2.1:53", False),
            ("TCP-only port, UDP traffic", "10.180.0.2", "172.30.0.42", 80, "", False),
            ("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, "", False),
        ],
        proto={"UDP on 53": "udp", "SCTP on 53": "sctp", "TCP-only port, UDP traffic": "udp"},
    )


def test_flows_external_traffic_policy_cluster() -> None:
    """TestExternalTrafficPolicyCluster: all external traffic is masqueraded."""
    ruleset = compile_objects(
        [
            svc(
                "ns1",
                "svc1",
                type="LoadBalancer",
                clusterIP="172.30.0.41",
                externalIPs=["192.168.99.11"],
                ports=[port("p80", 80, nodePort=3001, targetPort=80)],
                externalTrafficPolicy="Cluster",
                status={"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}},
            ),
            eps("ns1", "svc1", [ep("10.180.0.1"), ep("10.180.2.1", NODE)], [port("p80", 80)]),
        ],
        CIDR,
    )
    both = "10.180.0.1:80, 10.180.2.1:80"
    run_flows(
        ruleset,
        [
            ("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, both, False),
            ("pod to external IP", "10.0.0.2", "192.168.99.11", 80, both, True),
            ("external to external IP", EXTERNAL_CLIENT, "192.168.99.11", 80, both, True),
            ("pod to LB IP", "10.0.0.2", "1.2.3.4", 80, both, True),
            ("external to LB IP", EXTERNAL_CLIENT, "1.2.3.4", 80, both, True),
            ("pod to NodePort", "10.0.0.2", NODE_IP, 3001, both, True),
            ("external to NodePort", EXTERNAL_CLIENT, NODE_IP, 3001, both, True),
        ],
    )


def test_flows_internal_traffic_policy_local_multiple() -> None:
    """TestInternalTrafficPolicy: two local endpoints, and no endpoints at all."""
    service = svc(
        "ns1",
        "svc1",
        clusterIP="172.30.1.1",
        ports=[port("", 80)],
        internalTrafficPolicy="Local",
    )
    slice_ = eps(
        "ns1",
        "svc1",
        [
            ep("10.0.1.1", NODE, ready=True),
            ep("10.0.1.2", NODE, ready=True),
            ep("10.0.1.3", "node2", ready=True),
        ],
        [port("", 80)],
    )
    run_flows(
        compile_objects([service, slice_], CIDR),
        [("pod to ClusterIP", "10.0.0.2", "172.30.1.1", 80, "10.0.1.1:80, 10.0.1.2:80", False)],
    )
    run_flows(
        compile_objects([service], CIDR),
        [("endpoints deleted", "10.0.0.2", "172.30.1.1", 80, "REJECT", False)],
    )


_IEM_FLOWS: list[Flow] = [
    ("pod to ClusterIP", "10.0.0.2", "172.30.0.41", 80, "10.180.0.1:80, 10.180.1.1:80", False),
    ("pod to NodePort", "10.0.0.2", NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    ("pod to LB", "10.0.0.2", "1.2.3.4", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    ("node to ClusterIP", NODE_IP, "172.30.0.41", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    ("node to NodePort", NODE_IP, NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    ("localhost to NodePort", "127.0.0.1", "127.0.0.1", 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    ("node to LB", NODE_IP, "1.2.3.4", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    (
        "external to ClusterIP",
        EXTERNAL_CLIENT,
        "172.30.0.41",
        80,
        "10.180.0.1:80, 10.180.1.1:80",
        True,
    ),
    ("external to NodePort", EXTERNAL_CLIENT, NODE_IP, 3001, "10.180.0.1:80, 10.180.1.1:80", True),
    ("external to LB", EXTERNAL_CLIENT, "1.2.3.4", 80, "10.180.0.1:80, 10.180.1.1:80", True),
    (
        "pod to ClusterIP with eTP:Local",
        "10.0.0.2",
        "172.30.0.42",
        80,
        "10.180.0.2:80, 10.180.1.2:80",
        False,
    ),
    (
        "pod to NodePort with eTP:Local",
        "10.0.0.2",
        NODE_IP,
        3002,
        "10.180.0.2:80, 10.180.1.2:80",
        False,
    ),
    ("pod to LB with eTP:Local", "10.0.0.2", "5.6.7.8", 80, "10.180.0.2:80, 10.180.1.2:80", False),
    (
        "node to ClusterIP with eTP:Local",
        NODE_IP,
        "172.30.0.42",
        80,
        "10.180.0.2:80, 10.180.1.2:80",
        True,
    ),
    (
        "node to NodePort with eTP:Local",
        NODE_IP,
        NODE_IP,
        3001,
        "10.180.0.1:80, 10.180.1.1:80",
        True,
    ),
    (
        "localhost to NodePort with eTP:Local",
        "127.0.0.1",
        "127.0.0.1",
        3002,
        "10.180.0.2:80, 10.180.1.2:80",
        True,
    ),
    ("node to LB with eTP:Local", NODE_IP, "5.6.7.8", 80, "10.180.0.2:80, 10.180.1.2:80", True),
    (
        "external to ClusterIP with eTP:Local",
        EXTERNAL_CLIENT,
        "172.30.0.42",
        80,
        "10.180.0.2:80, 10.180.1.2:80",
        True,
    ),
    ("external to NodePort with eTP:Local", EXTERNAL_CLIENT, NODE_IP, 3002, "10.180.0.2:80", False),
    ("external to LB with eTP:Local", EXTERNAL_CLIENT, "5.6.7.8", 80, "10.180.0.2:80", False),
    ("pod to ClusterIP with iTP:Local", "10.0.0.2", "172.30.0.43", 80, "10.180.0.3:80", False),
    (
        "pod to NodePort with iTP:Local",
        "10.0.0.2",
        NODE_IP,
        3003,
        "10.180.0.3:80, 10.180.1.3:80",
        True,
    ),
    (
        "pod to LB with iTP:Local",
        "10.0.0.2",
        "9.10.11.12",
        80,
        "10.180.0.3:80, 10.180.1.3:80",
        True,
    ),
    ("node to ClusterIP with iTP:Local", NODE_IP, "172.30.0.43", 80, "10.180.0.3:80", True),
    (
        "node to NodePort with iTP:Local",
        NODE_IP,
        NODE_IP,
        3003,
        "10.180.0.3:80, 10.180.1.3:80",
        True,
    ),
    (
        "localhost to NodePort with iTP:Local",
        "127.0.0.1",
        "127.0.0.1",
        3003,
        "10.180.0.3:80, 10.180.1.3:80",
        True,
    ),
    ("node to LB with iTP:Local", NODE_IP, "9.10.11.12", 80, "10.180.0.3:80, 10.180.1.3:80", True),
    (
        "external to ClusterIP with iTP:Local",
        EXTERNAL_CLIENT,
        "172.30.0.43",
        80,
        "10.180.0.3:80",
        True,
    ),
    (
        "external to NodePort with iTP:Local",
        EXTERNAL_CLIENT,
        NODE_IP,
        3003,
        "10.180.0.3:80, 10.180.1.3:80",
        True,
    ),
    (
        "external to LB with iTP:Local",
        EXTERNAL_CLIENT,
        "9.10.11.12",
        80,
        "10.180.0.3:80, 10.180.1.3:80",
        True,
    ),
]


@pytest.mark.parametrize(
    ("masquerade_all", "detector", "overrides"),
    [
        pytest.param(False, True, {}, id="base"),
        pytest.param(
            False,
            False,
            {
                "node to ClusterIP": (None, False),
                "node to ClusterIP with eTP:Local": (None, False),
                "node to ClusterIP with iTP:Local": (None, False),
                "external to ClusterIP": (None, False),
                "external to ClusterIP with eTP:Local": (None, False),
                "external to ClusterIP with iTP:Local": (None, False),
                "pod to NodePort with eTP:Local": ("10.180.0.2:80", None),
                "pod to LB with eTP:Local": ("10.180.0.2:80", None),
            },
            id="no LocalTrafficDetector",
        ),
        pytest.param(
            True,
            True,
            {
                "pod to ClusterIP": (None, True),
                "pod to ClusterIP with eTP:Local": (None, True),
                "pod to ClusterIP with iTP:Local": (None, True),
            },
            id="masqueradeAll",
        ),
        pytest.param(
            True,
            False,
            {
                "pod to ClusterIP": (None, True),
                "pod to ClusterIP with eTP:Local": (None, True),
                "pod to ClusterIP with iTP:Local": (None, True),
                "pod to NodePort with eTP:Local": ("10.180.0.2:80", None),
                "pod to LB with eTP:Local": ("10.180.0.2:80", None),
            },
            id="masqueradeAll, no LocalTrafficDetector",
        ),
    ],
)
def test_flows_internal_external_masquerade(
    masquerade_all: bool, detector: bool, overrides: dict[str, tuple[str | None, bool | None]]
) -> None:
    """TestInternalExternalMasquerade: who gets masqueraded, and who short-circuits."""
    objects = []
    for i, (lb, policy) in enumerate(
        [
            ("1.2.3.4", {}),
            ("5.6.7.8", {"externalTrafficPolicy": "Local"}),
            ("9.10.11.12", {"internalTrafficPolicy": "Local"}),
        ],
        start=1,
    ):
        extra = dict(policy)
        if policy.get("externalTrafficPolicy") == "Local":
            extra["healthCheckNodePort"] = 30000 + i
        objects.append(
            svc(
                f"ns{i}",
                f"svc{i}",
                type="LoadBalancer",
                clusterIP=f"172.30.0.4{i}",
                ports=[port("p80", 80, nodePort=3000 + i)],
                status={"loadBalancer": {"ingress": [{"ip": lb}]}},
                **extra,
            )
        )
        objects.append(
            eps(
                f"ns{i}",
                f"svc{i}",
                [ep(f"10.180.0.{i}", NODE), ep(f"10.180.1.{i}", "remote")],
                [port("p80", 80)],
            )
        )
    config = ProxyConfig(
        cluster_cidrs="10.0.0.0/8" if detector else (), masquerade_all=masquerade_all
    )
    ruleset = compile_objects(objects, config)
    flows = []
    for name, src, dst, dport, output, masq in _IEM_FLOWS:
        new_output, new_masq = overrides.get(name, (None, None))
        flows.append(
            (
                name,
                src,
                dst,
                dport,
                output if new_output is None else new_output,
                masq if new_masq is None else new_masq,
            )
        )
    assert set(overrides) <= {f[0] for f in _IEM_FLOWS}
    run_flows(ruleset, flows)


@pytest.mark.parametrize(
    ("family", "localhost", "npa", "allow_alt", "expect_firewall"),
    [
        ("IPv4", True, (), True, True),
        ("IPv4", False, (), True, False),
        ("IPv4", False, ("192.168.0.0/24", "127.0.0.1/32"), False, False),
        ("IPv4", False, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), True, False),
        ("IPv6", True, (), True, False),
        ("IPv6", False, (), True, False),
        ("IPv6", False, ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64"), False, False),
    ],
)
def test_flows_node_ports(
    family: str, localhost: bool, npa: tuple[str, ...], allow_alt: bool, expect_firewall: bool
) -> None:
    """TestNodePorts: --nodeport-addresses and --iptables-localhost-nodeports."""
    v4 = family == "IPv4"
    svc_ip, ep1, ep2 = (
        ("172.30.0.41", "10.180.0.1", "10.180.2.1")
        if v4
        else ("fd00:172:30::41", "fd00:10:180::1", "fd00:10:180::2:1")
    )
    pod, client, node, alt, lo = (
        ("10.0.0.2", EXTERNAL_CLIENT, NODE_IP, NODE_IP_ALT, "127.0.0.1")
        if v4
        else ("fd00:10::2", "2600:5200::1", "2001:db8::1", "2001:db8:1::2", "::1")
    )
    config = ProxyConfig(
        ip_family=family,
        cluster_cidrs="10.0.0.0/8" if v4 else "fd00:10::/64",
        localhost_nodeports=localhost,
        node_port_addresses=npa,
    )
    ruleset = compile_objects(
        [
            svc(
                "ns1",
                "svc1",
                type="NodePort",
                clusterIP=svc_ip,
                ports=[port("p80", 80, nodePort=3001)],
            ),
            eps("ns1", "svc1", [ep(ep1), ep(ep2, NODE)], [port("p80", 80)], family=family),
        ],
        config,
    )
    output = f"{join_host_port(ep1, 80)}, {join_host_port(ep2, 80)}"
    flows: list[Flow] = [
        ("pod to cluster IP", pod, svc_ip, 80, output, False),
        ("external to nodePort", client, node, 3001, output, True),
        ("node to nodePort", node, node, 3001, output, True),
        (
            "localhost to nodePort",
            lo,
            lo,
            3001,
            output if v4 and localhost else "",
            v4 and localhost,
        ),
        (
            "external to nodePort on secondary IP",
            client,
            alt,
            3001,
            output if allow_alt else "",
            allow_alt,
        ),
    ]
    run_flows(ruleset, flows)
    firewall = ruleset.table("filter").chain(KUBE_FIREWALL).rules
    assert bool(firewall) == expect_firewall


# ------------------------------------------------------------------- focused checks
def _chain_text(ruleset: Ruleset, table: str, chain: str) -> list[str]:
    text = render_restore(ruleset)
    return _tables(text)[table][1].get(chain, [])


@pytest.mark.parametrize("random_fully", [False, True])
def test_masquerade_rule(random_fully: bool) -> None:
    """TestMasqueradeRule."""
    ruleset = compile(view_of(NODES), IptablesHost(random_fully=random_fully), restore_only=True)
    suffix = " --random-fully" if random_fully else ""
    assert _chain_text(ruleset, "nat", KUBE_POSTROUTING) == [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        f"-j MASQUERADE{suffix}",
    ]


@pytest.mark.parametrize(
    ("host", "drop"),
    [
        (IptablesHost(), "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"),
        (
            IptablesHost(nfacct=True),
            "-A KUBE-FORWARD -m conntrack --ctstate INVALID -m nfacct --nfacct-name "
            "ct_state_invalid_dropped_pkts -j DROP",
        ),
        (IptablesHost(tcp_be_liberal=True), None),
    ],
)
def test_drop_invalid_rule(host: IptablesHost, drop: str | None) -> None:
    """TestDropInvalidRule."""
    rules = _chain_text(compile(view_of(NODES), host), "filter", KUBE_FORWARD)
    assert rules == [
        *([drop] if drop else []),
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
        "-m mark --mark 0x4000/0x4000 -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack '
        "--ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]


def test_masquerade_bit() -> None:
    ruleset = compile(view_of(NODES, ProxyConfig(masquerade_bit=5)), restore_only=True)
    assert _chain_text(ruleset, "nat", "KUBE-MARK-MASQ") == [
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x20"
    ]
    assert (
        "-m mark ! --mark 0x20/0x20 -j RETURN" in _chain_text(ruleset, "nat", KUBE_POSTROUTING)[0]
    )


def test_compute_probability() -> None:
    """TestComputeProbability: ``%0.10f`` of 1/n, strictly decreasing in n."""
    expected = {
        1: "1.0000000000",
        2: "0.5000000000",
        10: "0.1000000000",
        100: "0.0100000000",
        1000: "0.0010000000",
        10000: "0.0001000000",
        100000: "0.0000100000",
        100001: "0.0000099999",
    }
    for n, text in expected.items():
        assert compute_probability(n) == text
    previous = 0.0
    for n in range(100000, 1, -1):
        current = float(compute_probability(n))
        assert current > previous, n
        previous = current
    with pytest.raises(ValueError):
        compute_probability(0)


def test_ipv6_localhost_nodeports_never_apply() -> None:
    """Test{Enable,Disable}LocalhostNodePortsIPv6 expect the same dump."""
    on = compile(case_view("ipv6_nodeport_local", localhost_nodeports=True))
    off = compile(case_view("ipv6_nodeport_local", localhost_nodeports=False))
    assert on == off


def _large_cluster_objects(n: int) -> list[Any]:
    objects: list[Any] = []
    for i, (ns, name, portname, number, prefix) in enumerate(
        [
            ("ns1", "svc1", "p80", 80, "10.0"),
            ("ns2", "svc2", "p8080", 8080, "10.1"),
            ("ns3", "svc3", "p8081", 8081, ""),
        ],
        start=1,
    ):
        objects.append(
            svc(
                ns,
                name,
                type="ClusterIP",
                clusterIP=f"172.30.0.4{i}",
                ports=[port(portname, number)],
            )
        )
        if prefix:
            endpoints = [ep(f"{prefix}.{j % 256}.{j // 256}") for j in range(n)]
            objects.append(eps(ns, name, endpoints, [port(portname, number)]))
    return objects


def _count(text: str, match: str) -> tuple[str, int, int]:
    """upstream's countEndpointsAndComments."""
    matched, endpoints, comments = "", 0, 0
    for line in text.splitlines():
        if line.startswith("-A KUBE-SEP-") and "-j DNAT" in line:
            endpoints += 1
            comments += "--comment" in line
            if match in line:
                matched = line
    return matched, endpoints, comments


def test_large_cluster_mode() -> None:
    """TestSyncProxyRulesLargeClusterMode (full syncs only): above 1000 endpoints in
    total, SEP and SVC-to-SEP rules lose their comments."""
    config = ProxyConfig(cluster_cidrs="10.0.0.0/8", masquerade_all=True)
    half = LARGE_CLUSTER_ENDPOINTS_THRESHOLD // 2 - 1
    objects = _large_cluster_objects(half)
    text = render_restore(compile_objects(objects, config))
    first, endpoints, comments = _count(text, "10.0.0.0:80")
    assert first == (
        "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT "
        "--to-destination 10.0.0.0:80"
    )
    assert endpoints == comments == 2 * half

    objects.append(
        eps(
            "ns3",
            "svc3",
            [ep("203.0.113.4"), ep("203.0.113.8"), ep("203.0.113.12")],
            [port("p8081", 8081)],
        )
    )
    text = render_restore(compile_objects(objects, config))
    first, endpoints, comments = _count(text, "10.0.0.0:80")
    assert (
        first == "-A KUBE-SEP-DKGQUZGBKLTPAR56 -m tcp -p tcp -j DNAT --to-destination 10.0.0.0:80"
    )
    assert (endpoints, comments) == (2 * half + 3, 0)
    assert _count(text, "203.0.113.4")[0] == (
        "-A KUBE-SEP-RUVVH7YV3PHQBDOS -m tcp -p tcp -j DNAT --to-destination 203.0.113.4:8081"
    )
    assert "-j KUBE-SEP-DKGQUZGBKLTPAR56" in text and '"ns1/svc1:p80 -> ' not in text
    # Other comments stay.
    assert '"ns1/svc1:p80 cluster IP"' in text

    objects += [
        svc("ns4", "svc4", type="ClusterIP", clusterIP="172.30.0.44", ports=[port("p8082", 8082)]),
        eps("ns4", "svc4", [ep("10.4.0.1")], [port("p8082", 8082)]),
    ]
    text = render_restore(compile_objects(objects, config))
    assert _count(text, "10.4.0.1")[0] == (
        "-A KUBE-SEP-SU5STNODRYEWJAUF -m tcp -p tcp -j DNAT --to-destination 10.4.0.1:8082"
    )


def test_ensured_jumps() -> None:
    """The jumps kube-proxy ensures, each prepended in iptablesJumpChains order."""
    full = compile(case_view("overall"))
    text = render_restore(full)
    builtin = {
        (table, chain): rules
        for table, (_d, by_chain, _o) in _tables(text).items()
        for chain, rules in by_chain.items()
        if not chain.startswith("KUBE-")
    }
    new = "-m conntrack --ctstate NEW"
    lbfw = f'-m comment --comment "kubernetes load balancer firewall" {new} -j KUBE-PROXY-FIREWALL'
    assert builtin == {
        ("filter", "INPUT"): [
            "-A INPUT -j KUBE-FIREWALL",
            f"-A INPUT {lbfw}",
            '-A INPUT -m comment --comment "kubernetes health check service ports" '
            "-j KUBE-NODEPORTS",
            '-A INPUT -m comment --comment "kubernetes externally-visible service portals" '
            f"{new} -j KUBE-EXTERNAL-SERVICES",
        ],
        ("filter", "FORWARD"): [
            f"-A FORWARD {lbfw}",
            '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
            f'-A FORWARD -m comment --comment "kubernetes service portals" {new} -j KUBE-SERVICES',
            '-A FORWARD -m comment --comment "kubernetes externally-visible service portals" '
            f"{new} -j KUBE-EXTERNAL-SERVICES",
        ],
        ("filter", "OUTPUT"): [
            "-A OUTPUT -j KUBE-FIREWALL",
            f"-A OUTPUT {lbfw}",
            f'-A OUTPUT -m comment --comment "kubernetes service portals" {new} -j KUBE-SERVICES',
        ],
        ("nat", "PREROUTING"): [
            '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
        ],
        ("nat", "OUTPUT"): [
            '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
        ],
        ("nat", "POSTROUTING"): [
            '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'
        ],
    }
    for table in ("filter", "nat", "mangle"):
        assert full.table(table).chain(KUBE_PROXY_CANARY).rules == ()
    # IPv6 and no localhost NodePorts: KUBE-FIREWALL is ensured but empty.
    v6 = compile(case_view("ipv6_nodeport_local"))
    assert v6.table("filter").chain(KUBE_FIREWALL).rules == ()
    check_model_jumps(v6)
    assert {i.name: i.addresses for i in full.interfaces} == {
        "lo": ("127.0.0.1",),
        "eth0": ("192.168.0.2", "192.168.1.2", "192.168.99.11"),
    }
    assert {i.name: i.addresses for i in v6.interfaces} == {
        "lo": ("::1",),
        "eth0": ("2001:db8::1", "2001:db8:1::2"),
    }


def test_interface_detectors() -> None:
    """BridgeInterface and InterfaceNamePrefix detectors (``-i br0`` / ``-i veth+``)."""
    objects = case_objects("overall")
    for mode, kwargs, name in [
        ("BridgeInterface", {"bridge_interface": "cbr0"}, "cbr0"),
        ("InterfaceNamePrefix", {"interface_name_prefix": "veth"}, "veth+"),
    ]:
        ruleset = compile(
            view_of(objects, ProxyConfig(detect_local_mode=mode, **kwargs)), restore_only=True
        )
        nat = _tables(render_restore(ruleset))["nat"][1]
        assert nat["KUBE-SVC-XPGD46QRK7WJZT7O"][0].endswith(
            f"--dport 80 ! -i {name} -j KUBE-MARK-MASQ"
        )
        assert nat["KUBE-EXT-GNZBNJ2PO5MGZ6GT"][0] == (
            "-A KUBE-EXT-GNZBNJ2PO5MGZ6GT -m comment --comment "
            '"pod traffic for ns2/svc2:p80 external destinations" '
            f"-i {name} -j KUBE-SVC-GNZBNJ2PO5MGZ6GT"
        )


def test_primary_node_port_addresses() -> None:
    """nodePortAddresses: [primary] is the node's primary IP only."""
    view = case_view("node_port", node_port_addresses=("primary",))
    nat = _tables(render_restore(compile(view, restore_only=True)))["nat"][1]
    assert nat[KUBE_SERVICES][-1].endswith("-d 192.168.0.2 -j KUBE-NODEPORTS")


# ------------------------------------------------------------------ determinism
def test_deterministic() -> None:
    view = case_view("overall")
    assert compile(view) == compile(view)
    assert render_restore(compile(view)) == render_restore(compile(view))
    assert compile(view) is not compile(view)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", ["overall", "terminating_local_ready", "load_balancer"])
def test_input_order_does_not_matter(name: str, seed: int) -> None:
    config = case_proxy_config(case_config(name))
    objects = case_objects(name)
    reference = compile(view_of(objects, config))
    shuffled = list(objects)
    random.Random(seed).shuffle(shuffled)
    assert compile(view_of(shuffled, config)) == reference
    # Endpoints within a slice in another order too.
    reordered = []
    for o in shuffled:
        if isinstance(o, EndpointSlice) and len(o.endpoints) > 1:
            endpoints = list(o.endpoints)
            random.Random(seed).shuffle(endpoints)
            o = attrs.evolve(o, endpoints=tuple(endpoints))
        reordered.append(o)
    assert compile(view_of(reordered, config)) == reference


def test_cluster_apply_order_does_not_matter() -> None:
    cfg = case_config("load_balancer")
    objects = case_objects("load_balancer")
    results = set()
    for seed in range(3):
        shuffled = list(objects)
        random.Random(seed).shuffle(shuffled)
        cluster = Cluster.from_objects(shuffled, ClusterConfig.from_dict(cfg["cluster"]))
        results.add(compile(NodeView.from_cluster(cluster, NODE, case_proxy_config(cfg))))
    assert len(results) == 1


# ------------------------------------------------------------ hostile but valid names
_LABEL = st.from_regex(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
_PORT_NAME = st.from_regex(r"[a-z]([-a-z0-9]{0,13}[a-z0-9])?", fullmatch=True).filter(
    lambda s: "--" not in s
)


def _longest_view(namespace: str, name: str, port_name: str) -> NodeView:
    service = svc(
        namespace,
        name,
        type="LoadBalancer",
        clusterIP="172.30.0.41",
        externalIPs=["192.168.99.22"],
        externalTrafficPolicy="Local",
        healthCheckNodePort=30000,
        ports=[port(port_name, 80, nodePort=3001), port("u", 81, "UDP", nodePort=3002)],
        loadBalancerSourceRanges=["203.0.113.0/25", "192.168.0.0/16"],
        sessionAffinity="ClientIP",
        status={"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}]}},
    )
    slice_ = eps(
        namespace,
        name,
        [ep("10.180.0.1", NODE), ep("10.180.0.2")],
        [port(port_name, 8080), port("u", 8081, "UDP")],
    )
    return view_of([*NODES, service, slice_], CIDR)


def _comments(ruleset: Ruleset) -> list[str]:
    return [r.comment for _t, _c, _i, r in ruleset.iter_rules() if r.comment is not None]


def test_longest_valid_names_fit_the_comment_limit() -> None:
    """63-character namespace and name, 15-character port name: every comment fits."""
    view = _longest_view("n" * 63, "s" * 63, "p" * 15)
    for host in (IptablesHost(), UPSTREAM_HOST):
        ruleset = compile(view, host)
        comments = _comments(ruleset)
        assert max(len(c.encode()) for c in comments) < 200
        text = render_restore(ruleset)
        assert parse(text).ruleset.tables == ruleset.tables
        check_rule_jumps(render_restore(compile(view, host, restore_only=True)))


@settings(max_examples=30, deadline=None)
@given(namespace=_LABEL, name=_LABEL, port_name=_PORT_NAME)
def test_valid_names_never_break_the_text(namespace: str, name: str, port_name: str) -> None:
    assume(port_name != "u")  # the view's second port is named "u"
    ruleset = compile(_longest_view(namespace, name, port_name))
    text = render_restore(ruleset)
    assert parse(text).ruleset.tables == ruleset.tables
    fixed = {c for c in _comments(compile(view_of(NODES))) if c}
    assert all(f"{namespace}/{name}" in c for c in _comments(ruleset) if c not in fixed)


def test_over_long_comments_are_cut_as_the_kernel_cuts_them() -> None:
    """A hand-built view beyond Kubernetes' limits: comments keep 255 bytes, and
    text with quotes, backslashes and non-ASCII characters stays in place."""
    spn = ServicePortName("ns" + "é" * 150, 'svc "x" \\ y', "p80")
    info = ServicePortInfo(
        name=spn,
        cluster_ip="172.30.0.41",
        port=80,
        node_port=3001,
        all_endpoints=(EndpointInfo("10.180.0.1", 80),),
        cluster_endpoints=(EndpointInfo("10.180.0.1", 80),),
        all_reachable_endpoints=(EndpointInfo("10.180.0.1", 80),),
        has_any_endpoints=True,
    )
    view = NodeView(node=view_of(NODES).node, config=CIDR, service_ports=[info])
    ruleset = compile(view)
    comments = _comments(ruleset)
    assert max(len(c.encode()) for c in comments) == MAX_COMMENT_BYTES
    assert all(len(c.encode()) <= MAX_COMMENT_BYTES for c in comments)
    assert any(c.startswith("ns" + "é" * 10) for c in comments)
    back = parse(render_restore(ruleset)).ruleset
    assert back.tables == ruleset.tables


# ------------------------------------------------------------------- chain names
def test_chain_names_are_namings() -> None:
    """Every per-service chain the compiler names is the one naming.py computes."""
    view = case_view("overall")
    ruleset = compile(view, restore_only=True)
    names = {c.name for c in ruleset.table("nat").chains}
    for p in view:
        for ep in p.all_reachable_endpoints:
            assert iptables_endpoint_chain(p.name, ep.endpoint_string) in names


# -------------------------------------------------------------------- model shape
def test_rule_shapes_match_the_renderer_conventions() -> None:
    """Spot checks of the model objects (what the engine reads)."""
    ruleset = compile(case_view("terminating_local_ready"), restore_only=True)
    nat: Table = ruleset.table("nat")
    svc_rules = nat.chain("KUBE-SVC-AQI2S6QIMU7PVVRP").rules
    assert svc_rules[1].exprs == (
        RecentMatch("KUBE-SEP-3JOIVZTXZZRGORX4", "rcheck", seconds=10800, reap=True),
    )
    assert svc_rules[4].exprs == (StatisticMatch(0.3333333333, "0.3333333333"),)
    sep = nat.chain("KUBE-SEP-3JOIVZTXZZRGORX4").rules
    assert sep[1].exprs == (RecentMatch("KUBE-SEP-3JOIVZTXZZRGORX4", "set"), ProtoMatch(("tcp",)))
    assert sep[1].verdict == DNAT("10.0.1.1", 80)
    assert nat.chain("KUBE-MARK-MASQ").rules == (Rule((MarkSet("or", 0x4000),)),)
    assert ruleset.mode == "iptables" and ruleset.family == "IPv4"
    assert [t.name for t in ruleset.tables] == ["filter", "nat"]
    assert all(t.dialect == "iptables" and t.family == "ip" for t in ruleset.tables)
