"""The nftables-mode compiler (kservice.proxy.nftables) against kube-proxy.

Golden cases live in ``tests/golden/nftables/<case>/``: ``input.yaml`` (the
Services and hand-written EndpointSlices upstream's tests build, selectorless
so the inputs are exactly upstream's) plus the shared ``node.yaml`` (the node
of upstream's ``NewFakeProxier``), and ``expected.nft``, the ``nft -f``
transaction kube-proxy writes. The node/proxy configuration of each case is in
:data:`CASES` below. Where upstream (kubernetes ``pkg/proxy/nftables/
proxier_test.go``) has a whole-ruleset expectation, ``expected.nft`` is that
text verbatim; where upstream only has packet-flow tests for the input, the
expected text was derived from ``proxier.go`` and is checked here by porting
those packet-flow tables and running them through a small tracer over the
compiled ruleset (the ``nftablesTracer`` of upstream's ``helpers_test.go``,
evaluated on the model instead of regexps).

Comparison is upstream's (``sortNFTablesTransaction``): blank and ``#`` lines
dropped; sorted by object type, then object name; rules keep their order. The
one textual difference the model has no place for is normalised away: kube-proxy
writes one-element anonymous sets with braces (``ip daddr { 172.30.0.0/16 }``),
the model (and ``nft list``) without.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowtrace
import kservice
from kservice.api.endpointslice import EndpointSlice
from kservice.api.node import Node
from kservice.api.service import Service
from kservice.netfilter.nft_text import (
    ElementKey,
    ParseIssue,
    element_options,
    parse_script,
    render_list,
    render_script,
)
from kservice.netfilter.ruleset import (
    AddrTypeMatch,
    Chain,
    Goto,
    IfaceMatch,
    IPMatch,
    Jump,
    NftSet,
    NumgenVmap,
    Rule,
    Ruleset,
    SetMatch,
    SetUpdate,
    Table,
    VmapLookup,
)
from kservice.proxy import NodeView, ProxyConfig
from kservice.proxy.naming import NFTABLES_CHAIN_NAME_BASE_MAX
from kservice.proxy.nftables import (
    BASE_CHAINS,
    COMMENT_MAX_BYTES,
    Operation,
    Transaction,
    compile,
    delta,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "nftables"
NODE = "test-node"

# upstream's proxier_test.go conventions
TEST_NODE_IPS = ("192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2")
EXTERNAL_CLIENT = "203.0.113.2"
EXTERNAL_CLIENT_BLOCKED = "203.0.113.130"


# ------------------------------------------------------------------------------ set-up
def fake_proxier_config(family: str = "IPv4", **overrides: Any) -> ProxyConfig:
    """The configuration of upstream's ``NewFakeProxier``: pods in 10.0.0.0/8
    (fd00:10::/64) detected by CIDR, NodePorts on 192.168.0.2/32 and
    2001:db8::1/128, masquerade bit 14."""
    kwargs: dict[str, Any] = {
        "mode": "nftables",
        "ip_family": family,
        "cluster_cidrs": "10.0.0.0/8" if family == "IPv4" else "fd00:10::/64",
        "node_port_addresses": ("192.168.0.2/32", "2001:db8::1/128"),
    }
    kwargs.update(overrides)
    return ProxyConfig(**kwargs)


#: upstream's serviceCIDRs (the ServiceCIDR objects of the fake proxier)
SERVICE_CIDRS = {"IPv4": ("172.30.0.0/16",), "IPv6": ("fd00:10:96::/112",)}


@attrs.frozen
class Case:
    """One golden case: its directory, family and proxier configuration."""

    name: str
    upstream: str
    family: str = "IPv4"
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def config(self) -> ProxyConfig:
        return fake_proxier_config(self.family, **dict(self.overrides))

    @property
    def dir(self) -> Path:
        return GOLDEN / self.name


CASES = [
    Case("overall", "TestOverallNFTablesRules"),
    Case("bad-ips", "TestBadIPs"),
    Case("no-endpoints", "TestNoEndpointsReject"),
    Case("cluster-ip-general", "TestClusterIPGeneral"),
    Case("load-balancer", "TestLoadBalancer"),
    Case("nodeports-ipv4", "TestNodePorts"),
    Case(
        "nodeports-ipv4-multi",
        "TestNodePorts",
        overrides=(("node_port_addresses", ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64")),),
    ),
    Case("nodeports-ipv6", "TestNodePorts", family="IPv6"),
    Case(
        "nodeports-ipv6-all",
        "TestNodePorts",
        family="IPv6",
        overrides=(("node_port_addresses", ()),),
    ),
    Case("etp-local", "TestExternalTrafficPolicyLocal"),
    Case("etp-cluster", "TestExternalTrafficPolicyCluster"),
    Case("internal-external-masquerade", "TestInternalExternalMasquerade"),
    Case("affinity", "(kservice)"),
]
CASE_BY_NAME = {c.name: c for c in CASES}


def input_dir(case: Case) -> Path:
    """Variants of one upstream input share its directory's input.yaml."""
    for d in (case.dir, GOLDEN / case.name.rsplit("-", 1)[0]):
        if (d / "input.yaml").exists():
            return d
    raise FileNotFoundError(case.dir / "input.yaml")


def load_objects(path: Path) -> list[Any]:
    return list(kservice.load(path))


def view_of(objects: Iterable[Any], config: ProxyConfig) -> NodeView:
    objects = list(objects)
    return NodeView.from_objects(
        [o for o in objects if isinstance(o, Service)],
        [o for o in objects if isinstance(o, EndpointSlice)],
        [o for o in objects if isinstance(o, Node)],
        node_name=NODE,
        config=config,
    )


def case_objects(case: Case) -> list[Any]:
    return load_objects(GOLDEN / "node.yaml") + load_objects(input_dir(case) / "input.yaml")


def compile_case(case: Case, config: ProxyConfig | None = None) -> Ruleset:
    cfg = config or case.config
    return compile(view_of(case_objects(case), cfg), service_cidrs=SERVICE_CIDRS[cfg.ip_family])


# ------------------------------------------------------------------------- comparing
_OBJECT_ORDER = {"table": 10, "chain": 9, "rule": 8, "set": 7, "map": 6, "element": 5}
_ANON_SET = re.compile(r"(ip6? [sd]addr (?:!= )?)\{ ([^{}:]+) \}")


def _anon_set(m: re.Match[str]) -> str:
    items = [item.strip() for item in m.group(2).split(",")]
    return m.group(1) + (items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }")


def upstream_sorted(text: str) -> list[str]:
    """``sortNFTablesTransaction``: blank and ``#`` lines dropped; by object type,
    then object name; rules keep their order; other lines of an object by text."""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]

    def key(item: tuple[int, str]) -> tuple[int, str, int, str]:
        index, line = item
        words = line.split(" ")
        kind = words[1]
        name = words[4] if len(words) > 4 else ""
        return (
            -_OBJECT_ORDER.get(kind, 0),
            name,
            index if kind == "rule" else 0,
            "" if kind == "rule" else line,
        )

    return [line for _, line in sorted(enumerate(lines), key=key)]


def normalized(text: str) -> list[str]:
    """Upstream's comparison, with anonymous address sets written one way: knftables
    joins tokens with spaces (``{ a , b }``, a single element in braces), the
    renderer as nft prints them (``{ a, b }``, a single element bare)."""
    return upstream_sorted(_ANON_SET.sub(_anon_set, text))


def same_ruleset(a: Ruleset, b: Ruleset) -> bool:
    """Equal up to the order that does not matter (chains, sets, elements)."""
    return normalized(render_script(a)) == normalized(render_script(b))


def references_defined(ruleset: Ruleset) -> list[str]:
    """Every jump/goto (rules, numgen maps, map elements) targets a chain of the
    table and every @set/@map reference a set of it; the problems found."""
    problems: list[str] = []
    for table in ruleset.tables:
        chains = {c.name for c in table.chains}
        sets = {s.name: s for s in table.sets}

        def chain_ref(where: str, target: str, chains: set[str] = chains) -> None:
            if target not in chains:
                problems.append(f"{where}: no chain {target}")

        def set_ref(where: str, name: str, want_map: bool, sets: dict[str, NftSet] = sets) -> None:
            if name not in sets:
                problems.append(f"{where}: no set {name}")
            elif sets[name].is_map != want_map:
                problems.append(f"{where}: {name} is not a {'map' if want_map else 'set'}")

        for chain in table.chains:
            for i, rule in enumerate(chain.rules):
                where = f"{chain.name}[{i}]"
                for e in rule.exprs:
                    if isinstance(e, SetMatch | SetUpdate):
                        set_ref(where, e.set_name, False)
                v = rule.verdict
                if isinstance(v, Jump | Goto):
                    chain_ref(where, v.chain)
                elif isinstance(v, VmapLookup):
                    set_ref(where, v.map_name, True)
                elif isinstance(v, NumgenVmap):
                    for _, target in v.mapping:
                        chain_ref(where, target.chain)
        for s in table.sets:
            for key, value in s.elements:
                if isinstance(value, Jump | Goto):
                    chain_ref(f"@{s.name} {key}", value.chain)
    return problems


# ---------------------------------------------------------------------------- tracer
@attrs.frozen
class Flow:
    """One row of an upstream ``packetFlowTest`` table."""

    name: str
    source: str
    dest: str
    port: int
    output: str
    masq: bool = False
    protocol: str = "tcp"


# --------------------------------------------------------------------------- golden
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_golden_whole_ruleset(case: Case) -> None:
    """The rendered ``nft -f`` transaction is upstream's (or the derived) one."""
    ruleset = compile_case(case)
    expected = (case.dir / "expected.nft").read_text()
    assert normalized(render_script(ruleset)) == normalized(expected)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_golden_parses_to_the_compiled_model(case: Case) -> None:
    """``expected.nft`` read back by the nft parser is the compiled model (up to
    the order of chains, sets and elements), with nothing left unparsed."""
    issues: list[ParseIssue] = []
    parsed = parse_script((case.dir / "expected.nft").read_text(), issues=issues)
    assert issues == []
    assert same_ruleset(parsed, compile_case(case))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_every_reference_is_defined(case: Case) -> None:
    ruleset = compile_case(case)
    assert references_defined(ruleset) == []
    render_list(ruleset)  # the listing form can be written too


def test_overall_is_upstream_verbatim_and_complete() -> None:
    """Spot checks of TestOverallNFTablesRules' facts on the model itself."""
    table = compile_case(CASE_BY_NAME["overall"]).tables[0]
    assert (table.family, table.name, table.comment) == ("ip", "kube-proxy", "rules for kube-proxy")
    bases = {c.name: (c.type, c.hook, c.priority) for c in table.chains if c.is_base}
    assert bases == {name: (t, h, p) for name, t, h, p in BASE_CHAINS}
    no_ep = table.set("no-endpoint-services")
    comments = {tuple(k): element_options(k)[0] for k, _ in no_ep.elements}
    assert comments[("172.30.0.46", "tcp", "80")] == "ns6/svc6:p80"
    assert dict((tuple(k), v) for k, v in no_ep.elements)[("172.30.0.46", "tcp", "80")] == Goto(
        "reject-chain"
    )
    aff = table.set("affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80")
    assert (aff.flags, aff.timeout, aff.key_type) == (("dynamic", "timeout"), 10800, "ipv4_addr")


def test_interfaces_record_the_node_addresses() -> None:
    ruleset = compile_case(CASE_BY_NAME["overall"])
    assert set(ruleset.local_addresses) == {
        "127.0.0.1",
        "192.168.0.2",
        "192.168.1.2",
        "192.168.99.11",
    }
    v6 = compile_case(CASE_BY_NAME["nodeports-ipv6"])
    assert set(v6.local_addresses) == {"::1", "2001:db8::1", "2001:db8:1::2"}
    assert v6.family == "IPv6" and v6.tables[0].family == "ip6"


# ------------------------------------------------------------------ packet flows
NO_ENDPOINT_FLOWS = [
    Flow("pod to cluster IP with no endpoints", "10.0.0.2", "172.30.0.41", 80, "REJECT"),
    Flow(
        "external to external IP with no endpoints", EXTERNAL_CLIENT, "192.168.99.11", 80, "REJECT"
    ),
    Flow("pod to NodePort with no endpoints", "10.0.0.2", "192.168.0.2", 3001, "REJECT"),
    Flow("external to NodePort with no endpoints", EXTERNAL_CLIENT, "192.168.0.2", 3001, "REJECT"),
    Flow("pod to LoadBalancer IP with no endpoints", "10.0.0.2", "1.2.3.4", 80, "REJECT"),
    Flow("external to LoadBalancer IP with no endpoints", EXTERNAL_CLIENT, "1.2.3.4", 80, "REJECT"),
]

CLUSTER_IP_FLOWS = [
    Flow("simple clusterIP", "10.180.0.2", "172.30.0.41", 80, "10.180.0.1:80"),
    Flow("hairpin to cluster IP", "10.180.0.1", "172.30.0.41", 80, "10.180.0.1:80", True),
    Flow(
        "clusterIP with multiple endpoints",
        "10.180.0.2",
        "172.30.0.42",
        80,
        "10.180.0.1:80, 10.180.2.1:80",
    ),
    Flow(
        "clusterIP with TargetPort",
        "10.180.0.2",
        "172.30.0.42",
        443,
        "10.180.0.1:8443, 10.180.2.1:8443",
    ),
    Flow("same port (TCP)", "10.180.0.2", "172.30.0.42", 53, "10.180.0.1:5353, 10.180.2.1:5353"),
    Flow(
        "same port (UDP)",
        "10.180.0.2",
        "172.30.0.42",
        53,
        "10.180.0.1:53, 10.180.2.1:53",
        protocol="udp",
    ),
    Flow(
        "same port (SCTP)",
        "10.180.0.2",
        "172.30.0.42",
        53,
        "10.180.0.1:53, 10.180.2.1:53",
        protocol="sctp",
    ),
    Flow(
        "TCP-only port does not match UDP traffic",
        "10.180.0.2",
        "172.30.0.42",
        80,
        "REJECT",
        protocol="udp",
    ),
    Flow("svc1 does not accept svc2's ports", "10.180.0.2", "172.30.0.41", 443, "REJECT"),
    Flow("packet to unallocated cluster ip", "10.180.0.2", "172.30.0.50", 80, "DROP"),
]

_EP = "10.180.0.1:80"
LOAD_BALANCER_FLOWS = [
    Flow("pod to cluster IP", "10.0.0.2", "172.30.0.41", 80, _EP),
    Flow("external to nodePort", EXTERNAL_CLIENT, "192.168.0.2", 3001, _EP, True),
    Flow(
        "nodePort bypasses LoadBalancerSourceRanges",
        EXTERNAL_CLIENT_BLOCKED,
        "192.168.0.2",
        3001,
        _EP,
        True,
    ),
    Flow("accepted external to LB1", EXTERNAL_CLIENT, "1.2.3.4", 80, _EP, True),
    Flow("accepted external to LB2", EXTERNAL_CLIENT, "5.6.7.8", 80, _EP, True),
    Flow("blocked external to LB1", EXTERNAL_CLIENT_BLOCKED, "1.2.3.4", 80, "DROP"),
    Flow("blocked external to LB2", EXTERNAL_CLIENT_BLOCKED, "5.6.7.8", 80, "DROP"),
    Flow("pod to LB1 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "1.2.3.4", 80, "DROP"),
    Flow("pod to LB2 (blocked by LoadBalancerSourceRanges)", "10.0.0.2", "5.6.7.8", 80, "DROP"),
    Flow(
        "node to LB1 (allowed by LoadBalancerSourceRanges)", "192.168.0.2", "1.2.3.4", 80, _EP, True
    ),
    Flow(
        "node to LB2 (allowed by LoadBalancerSourceRanges)", "192.168.0.2", "5.6.7.8", 80, _EP, True
    ),
    Flow(
        "same node to LB1, SNATted to LB1 (implicitly allowed)", "1.2.3.4", "1.2.3.4", 80, _EP, True
    ),
    Flow(
        "same node to LB2, SNATted to LB2 (implicitly allowed)", "5.6.7.8", "5.6.7.8", 80, _EP, True
    ),
]

_BOTH = "10.180.0.1:80, 10.180.2.1:80"
_LOCAL = "10.180.2.1:80"
ETP_LOCAL_FLOWS = [
    Flow(
        "pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, _BOTH
    ),
    Flow(
        "pod to external IP hits both endpoints, unmasqueraded",
        "10.0.0.2",
        "192.168.99.11",
        80,
        _BOTH,
    ),
    Flow(
        "external to external IP hits only local endpoint, unmasqueraded",
        EXTERNAL_CLIENT,
        "192.168.99.11",
        80,
        _LOCAL,
    ),
    Flow("pod to LB IP hits only both endpoints, unmasqueraded", "10.0.0.2", "1.2.3.4", 80, _BOTH),
    Flow(
        "external to LB IP hits only local endpoint, unmasqueraded",
        EXTERNAL_CLIENT,
        "1.2.3.4",
        80,
        _LOCAL,
    ),
    Flow(
        "pod to NodePort hits both endpoints, unmasqueraded", "10.0.0.2", "192.168.0.2", 3001, _BOTH
    ),
    Flow(
        "external to NodePort hits only local endpoint, unmasqueraded",
        EXTERNAL_CLIENT,
        "192.168.0.2",
        3001,
        _LOCAL,
    ),
]

ETP_CLUSTER_FLOWS = [
    Flow(
        "pod to cluster IP hits both endpoints, unmasqueraded", "10.0.0.2", "172.30.0.41", 80, _BOTH
    ),
    Flow(
        "pod to external IP hits both endpoints, masqueraded",
        "10.0.0.2",
        "192.168.99.11",
        80,
        _BOTH,
        True,
    ),
    Flow(
        "external to external IP hits both endpoints, masqueraded",
        EXTERNAL_CLIENT,
        "192.168.99.11",
        80,
        _BOTH,
        True,
    ),
    Flow("pod to LB IP hits both endpoints, masqueraded", "10.0.0.2", "1.2.3.4", 80, _BOTH, True),
    Flow(
        "external to LB IP hits both endpoints, masqueraded",
        EXTERNAL_CLIENT,
        "1.2.3.4",
        80,
        _BOTH,
        True,
    ),
    Flow(
        "pod to NodePort hits both endpoints, masqueraded",
        "10.0.0.2",
        "192.168.0.2",
        3001,
        _BOTH,
        True,
    ),
    Flow(
        "external to NodePort hits both endpoints, masqueraded",
        EXTERNAL_CLIENT,
        "192.168.0.2",
        3001,
        _BOTH,
        True,
    ),
]


def _nodeport_flows(v6: bool, alt_allowed: bool) -> list[Flow]:
    pod, client = ("fd00:10::2", "2600:5200::1") if v6 else ("10.0.0.2", EXTERNAL_CLIENT)
    node, alt = ("2001:db8::1", "2001:db8:1::2") if v6 else ("192.168.0.2", "192.168.1.2")
    svc = "fd00:172:30::41" if v6 else "172.30.0.41"
    out = "[fd00:10:180::1]:80, [fd00:10:180::2:1]:80" if v6 else _BOTH
    flows = [
        Flow("pod to cluster IP", pod, svc, 80, out),
        Flow("external to nodePort", client, node, 3001, out, True),
        Flow("node to nodePort", node, node, 3001, out, True),
    ]
    if alt_allowed:
        flows.append(Flow("external to nodePort on secondary IP", client, alt, 3001, out, True))
    else:
        flows.append(Flow("secondary nodeIP ignores NodePorts", client, alt, 3001, ""))
    return flows


# TestInternalExternalMasquerade: base flows, then each set-up's overrides
_S1, _S2, _S3 = (
    "10.180.0.1:80, 10.180.1.1:80",
    "10.180.0.2:80, 10.180.1.2:80",
    "10.180.0.3:80, 10.180.1.3:80",
)
_N, _X = "192.168.0.2", EXTERNAL_CLIENT
IEM_FLOWS = [
    Flow("pod to ClusterIP", "10.0.0.2", "172.30.0.41", 80, _S1),
    Flow("pod to NodePort", "10.0.0.2", _N, 3001, _S1, True),
    Flow("pod to LB", "10.0.0.2", "1.2.3.4", 80, _S1, True),
    Flow("node to ClusterIP", _N, "172.30.0.41", 80, _S1, True),
    Flow("node to NodePort", _N, _N, 3001, _S1, True),
    Flow("node to LB", _N, "1.2.3.4", 80, _S1, True),
    Flow("external to ClusterIP", _X, "172.30.0.41", 80, _S1, True),
    Flow("external to NodePort", _X, _N, 3001, _S1, True),
    Flow("external to LB", _X, "1.2.3.4", 80, _S1, True),
    Flow("pod to ClusterIP with eTP:Local", "10.0.0.2", "172.30.0.42", 80, _S2),
    Flow("pod to NodePort with eTP:Local", "10.0.0.2", _N, 3002, _S2),
    Flow("pod to LB with eTP:Local", "10.0.0.2", "5.6.7.8", 80, _S2),
    Flow("node to ClusterIP with eTP:Local", _N, "172.30.0.42", 80, _S2, True),
    Flow("node to NodePort with eTP:Local", _N, _N, 3001, _S1, True),
    Flow("node to LB with eTP:Local", _N, "5.6.7.8", 80, _S2, True),
    Flow("external to ClusterIP with eTP:Local", _X, "172.30.0.42", 80, _S2, True),
    Flow("external to NodePort with eTP:Local", _X, _N, 3002, "10.180.0.2:80"),
    Flow("external to LB with eTP:Local", _X, "5.6.7.8", 80, "10.180.0.2:80"),
    Flow("pod to ClusterIP with iTP:Local", "10.0.0.2", "172.30.0.43", 80, "10.180.0.3:80"),
    Flow("pod to NodePort with iTP:Local", "10.0.0.2", _N, 3003, _S3, True),
    Flow("pod to LB with iTP:Local", "10.0.0.2", "9.10.11.12", 80, _S3, True),
    Flow("node to ClusterIP with iTP:Local", _N, "172.30.0.43", 80, "10.180.0.3:80", True),
    Flow("node to NodePort with iTP:Local", _N, _N, 3003, _S3, True),
    Flow("node to LB with iTP:Local", _N, "9.10.11.12", 80, _S3, True),
    Flow("external to ClusterIP with iTP:Local", _X, "172.30.0.43", 80, "10.180.0.3:80", True),
    Flow("external to NodePort with iTP:Local", _X, _N, 3003, _S3, True),
    Flow("external to LB with iTP:Local", _X, "9.10.11.12", 80, _S3, True),
]
_NO_DETECTOR = {
    "node to ClusterIP": (None, False),
    "node to ClusterIP with eTP:Local": (None, False),
    "node to ClusterIP with iTP:Local": (None, False),
    "external to ClusterIP": (None, False),
    "external to ClusterIP with eTP:Local": (None, False),
    "external to ClusterIP with iTP:Local": (None, False),
    "pod to NodePort with eTP:Local": ("10.180.0.2:80", None),
    "pod to LB with eTP:Local": ("10.180.0.2:80", None),
}
_MASQ_ALL = {
    "pod to ClusterIP": (None, True),
    "pod to ClusterIP with eTP:Local": (None, True),
    "pod to ClusterIP with iTP:Local": (None, True),
}
IEM_SETUPS: dict[str, tuple[dict[str, Any], dict[str, tuple[str | None, bool | None]]]] = {
    "base": ({}, {}),
    "no LocalTrafficDetector": ({"cluster_cidrs": ()}, _NO_DETECTOR),
    "masqueradeAll": ({"masquerade_all": True}, _MASQ_ALL),
    "masqueradeAll, no LocalTrafficDetector": (
        {"masquerade_all": True, "cluster_cidrs": ()},
        {**_MASQ_ALL, **{k: v for k, v in _NO_DETECTOR.items() if v[0] is not None}},
    ),
}


def _with_overrides(
    flows: list[Flow], overrides: dict[str, tuple[str | None, bool | None]]
) -> list[Flow]:
    out = []
    for flow in flows:
        output, masq = overrides.get(flow.name, (None, None))
        out.append(
            attrs.evolve(
                flow,
                output=flow.output if output is None else output,
                masq=flow.masq if masq is None else masq,
            )
        )
    return out


FLOW_TABLES: list[tuple[str, str, dict[str, Any], list[Flow]]] = [
    ("no-endpoints", "", {}, NO_ENDPOINT_FLOWS),
    ("cluster-ip-general", "", {}, CLUSTER_IP_FLOWS),
    ("load-balancer", "", {}, LOAD_BALANCER_FLOWS),
    ("nodeports-ipv4", "ipv4", {}, _nodeport_flows(False, False)),
    (
        "nodeports-ipv4",
        "ipv4, multiple nodeport-addresses",
        {"node_port_addresses": ("192.168.0.0/24", "192.168.1.0/24", "2001:db8::/64")},
        _nodeport_flows(False, True),
    ),
    ("nodeports-ipv6", "ipv6", {}, _nodeport_flows(True, False)),
    (
        "nodeports-ipv6",
        "ipv6, multiple nodeport-addresses",
        {
            "node_port_addresses": (
                "192.168.0.0/24",
                "192.168.1.0/24",
                "2001:db8::/64",
                "2001:db8:1::2/128",
            )
        },
        _nodeport_flows(True, True),
    ),
    (
        "nodeports-ipv6",
        "ipv6, every address (kservice)",
        {"node_port_addresses": ()},
        _nodeport_flows(True, True),
    ),
    ("etp-local", "", {}, ETP_LOCAL_FLOWS),
    ("etp-cluster", "", {}, ETP_CLUSTER_FLOWS),
    *[
        ("internal-external-masquerade", name, cfg, _with_overrides(IEM_FLOWS, overrides))
        for name, (cfg, overrides) in IEM_SETUPS.items()
    ],
]


@pytest.mark.parametrize(
    ("case_name", "setup", "overrides", "flows"),
    FLOW_TABLES,
    ids=[f"{c}-{s}" if s else c for c, s, _, _ in FLOW_TABLES],
)
def test_packet_flows(
    case_name: str, setup: str, overrides: dict[str, Any], flows: list[Flow]
) -> None:
    """Upstream's packet-flow tables, traced through the compiled ruleset."""
    case = CASE_BY_NAME[case_name]
    config = fake_proxier_config(case.family, **{**dict(case.overrides), **overrides})
    ruleset = compile_case(case, config)
    assert references_defined(ruleset) == []
    got = {
        flow.name: flowtrace.flow(ruleset, flow.source, flow.dest, flow.port, flow.protocol)
        for flow in flows
    }
    want = {flow.name: (flowtrace.normalized(flow.output), flow.masq) for flow in flows}
    assert got == want


def test_affinity_chains_check_the_sets_before_picking() -> None:
    table = compile_case(CASE_BY_NAME["affinity"]).tables[0]
    svc = table.chain("service-ULMVA6XW-ns1/svc1/tcp/p80")
    local = table.chain("local-ULMVA6XW-ns1/svc1/tcp/p80")
    assert [type(r.verdict) for r in svc.rules] == [Jump, Goto, Goto, NumgenVmap]
    assert [type(r.verdict) for r in local.rules] == [Goto, NumgenVmap]
    sets = {s.name: s for s in table.sets if s.name.startswith("affinity-")}
    assert {s.timeout for s in sets.values()} == {60}
    for chain in table.chains:
        if chain.name.startswith("endpoint-"):
            (update,) = [e for r in chain.rules for e in r.exprs if isinstance(e, SetUpdate)]
            assert update.set_name == "affinity-" + chain.name[len("endpoint-") :]


# ---------------------------------------------------------------------- configuration
def test_masquerade_bit_and_no_service_cidrs() -> None:
    case = CASE_BY_NAME["overall"]
    view = view_of(case_objects(case), fake_proxier_config(masquerade_bit=5))
    text = render_script(compile(view))
    assert "add rule ip kube-proxy mark-for-masquerade mark set mark or 0x20\n" in text
    assert "add rule ip kube-proxy masquerading mark and 0x20 == 0 return\n" in text
    assert "Drop traffic to unallocated ClusterIPs" not in text
    # CIDRs of the other family are ignored, several of ours are all dropped
    ruleset = compile(view, service_cidrs=["fd00:10:96::/112", "172.30.0.0/16", "172.50.0.0/16"])
    check = ruleset.tables[0].chain("cluster-ips-check")
    assert check.rules[1].exprs == (IPMatch("daddr", ("172.30.0.0/16", "172.50.0.0/16")),)


@pytest.mark.parametrize(
    ("overrides", "local", "not_local"),
    [
        (
            {"detect_local_mode": "BridgeInterface", "bridge_interface": "cbr0"},
            IfaceMatch("iif", "cbr0"),
            IfaceMatch("iif", "cbr0", True),
        ),
        (
            {"detect_local_mode": "InterfaceNamePrefix", "interface_name_prefix": "veth"},
            IfaceMatch("iif", "veth*"),
            IfaceMatch("iif", "veth*", True),
        ),
    ],
)
def test_interface_local_detectors(overrides: dict[str, Any], local: Any, not_local: Any) -> None:
    case = CASE_BY_NAME["etp-local"]
    table = compile_case(case, fake_proxier_config(**overrides)).tables[0]
    svc = table.chain("service-ULMVA6XW-ns1/svc1/tcp/p80")
    assert svc.rules[0].exprs == (IPMatch("daddr", ("172.30.0.41",)), not_local)
    ext = table.chain("external-ULMVA6XW-ns1/svc1/tcp/p80")
    assert ext.rules[0] == Rule((local,), Goto(svc.name), "short-circuit pod traffic")
    render_script(Ruleset("nftables", tables=(table,)))


def test_nodeport_addresses_matching_everything() -> None:
    """No nodeport-ips set: NodePorts on every local address but localhost."""
    table = compile_case(
        CASE_BY_NAME["nodeports-ipv4"], fake_proxier_config(node_port_addresses=())
    ).tables[0]
    assert "nodeport-ips" not in {s.name for s in table.sets}
    assert table.chain("services").rules[1].exprs == (
        AddrTypeMatch("daddr"),
        IPMatch("daddr", ("127.0.0.0/8",), negate=True),
    )
    assert table.chain("nodeport-endpoints-check").rules[0].exprs == (
        IPMatch("daddr", ("127.0.0.0/8",), negate=True),
    )


def test_loopback_nodeport_addresses_are_left_out() -> None:
    objs = load_objects(GOLDEN / "nodeports-ipv4" / "input.yaml")
    view = NodeView.from_objects(
        [o for o in objs if isinstance(o, Service)],
        [o for o in objs if isinstance(o, EndpointSlice)],
        node_name=NODE,
        config=fake_proxier_config(node_port_addresses=("127.0.0.0/8", "192.168.0.0/16")),
        node_ips=["127.0.0.1", "192.168.0.2"],
    )
    table = compile(view).tables[0]
    assert table.set("nodeport-ips").elements == ((("192.168.0.2",), None),)


# ------------------------------------------------------------------------ determinism
def test_compile_is_pure_and_ignores_input_order() -> None:
    case = CASE_BY_NAME["overall"]
    objects = case_objects(case)
    first = compile(view_of(objects, case.config), service_cidrs=SERVICE_CIDRS["IPv4"])
    again = compile(view_of(objects, case.config), service_cidrs=SERVICE_CIDRS["IPv4"])
    assert first == again
    assert render_script(first) == render_script(again)
    rng = random.Random(7)
    for _ in range(5):
        shuffled = objects[:]
        rng.shuffle(shuffled)
        got = compile(view_of(shuffled, case.config), service_cidrs=SERVICE_CIDRS["IPv4"])
        assert got == first
        assert render_script(got) == render_script(first)


# ---------------------------------------------------------------------- hostile names
LONG_NS = "very-long-namespace-name-abcdefghijklmnopqrstuvwxyz0123456789xx"
LONG_SVC = "very-long-service-name-why-would-you-even-do-this-i-mean-really"
LONG_PORT = "port-443-providing-the-hypertext-transmission-protocol-with-tls"


def _long_name_view() -> NodeView:
    text = f"""
apiVersion: v1
kind: Service
metadata: {{name: {LONG_SVC}, namespace: {LONG_NS}}}
spec:
  type: LoadBalancer
  clusterIP: "fd00:172:30::99"
  ipFamilies: [IPv6]
  ports:
    - {{name: {LONG_PORT}, port: 443, protocol: SCTP, nodePort: 3443}}
  sessionAffinity: ClientIP
  externalTrafficPolicy: Local
  healthCheckNodePort: 30000
  loadBalancerSourceRanges: ["2001:db8::/64"]
status:
  loadBalancer:
    ingress: [{{ip: "2001:db8:ffff::1"}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: s-1
  namespace: {LONG_NS}
  labels: {{kubernetes.io/service-name: {LONG_SVC}}}
addressType: IPv6
endpoints:
  - addresses: ["1234:5678:9abc:def0::abc:1234"]
  - addresses: ["1234:5678:9abc:def0:1:abcd:1234:5678"]
  - addresses: ["1234:5678:9abc:def0:1:abcd:1234:8765"]
ports:
  - {{name: {LONG_PORT}, port: 443, protocol: SCTP}}
"""
    objs = kservice.load_text(text)
    return view_of(objs + load_objects(GOLDEN / "node.yaml"), fake_proxier_config("IPv6"))


def test_hostile_but_valid_names() -> None:
    """63-character namespace, Service and port names with long IPv6 endpoints:
    names are hashed and cut as kube-proxy does (``hashAndTruncate``), every name
    fits nft's limit, comments are cut to 128 bytes, and the script renders and
    parses back."""
    ruleset = compile(_long_name_view())
    table = ruleset.tables[0]
    names = [c.name for c in table.chains] + [s.name for s in table.sets]
    assert len(names) == len(set(names))
    assert all(len(n.encode()) <= 255 for n in names)
    svc_base = f"{LONG_NS}/{LONG_SVC}/sctp/{LONG_PORT}"
    assert f"service-KR6NACJP-{svc_base}" in names  # upstream's "max length" case
    endpoint_chains = [n for n in names if n.startswith("endpoint-")]
    assert len(endpoint_chains) == 3
    truncated = [n for n in endpoint_chains if n.endswith("...")]
    assert len(truncated) == 2  # they differ only past the cut: the hash tells them apart
    assert len({n[:18] for n in truncated}) == 2
    assert all(len(n) == len("endpoint-") + NFTABLES_CHAIN_NAME_BASE_MAX for n in truncated)
    comments = [element_options(k)[0] for s in table.sets for k, _ in s.elements]
    comments = [c for c in comments if c is not None]
    full = f"{LONG_NS}/{LONG_SVC}:{LONG_PORT}"
    assert comments and all(c == full[:COMMENT_MAX_BYTES] for c in comments)
    text = render_script(ruleset)
    issues: list[ParseIssue] = []
    assert same_ruleset(parse_script(text, issues=issues), ruleset)
    assert issues == []
    assert references_defined(ruleset) == []


def test_comment_is_quoted_and_kept() -> None:
    text = render_script(compile_case(CASE_BY_NAME["no-endpoints"]))
    assert (
        'add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns1/svc1:p80" : '
        "goto reject-chain }\n" in text
    )
    parsed = parse_script(text).tables[0].set("no-endpoint-nodeports")
    assert [element_options(k)[0] for k, _ in parsed.elements] == ["ns1/svc1:p80"]


# ------------------------------------------------------------------------------ delta
def apply(ruleset: Ruleset, tx: Transaction) -> Ruleset:
    """Run a transaction's operations on a ruleset, as nft would (strictly: adding
    what exists is a no-op, deleting or flushing what is missing fails)."""
    tables: dict[tuple[str, str], dict[str, Any]] = {}
    for t in ruleset.tables:
        tables[(t.family, t.name)] = {
            "decl": attrs.evolve(t, chains=(), sets=()),
            "chains": {c.name: [attrs.evolve(c, rules=()), list(c.rules)] for c in t.chains},
            "sets": {s.name: [attrs.evolve(s, elements=()), dict(_elements(s))] for s in t.sets},
        }
    for op in tx.operations:
        key = (op.family, op.table)
        if op.kind == "table":
            if op.verb == "add":
                assert isinstance(op.obj, Table)
                tables.setdefault(key, {"decl": op.obj, "chains": {}, "sets": {}})
            else:
                assert op.verb == "delete" and key in tables
                del tables[key]
            continue
        t = tables[key]
        if op.kind == "chain":
            if op.verb == "add":
                assert isinstance(op.obj, Chain)
                if op.name in t["chains"]:
                    assert t["chains"][op.name][0] == op.obj, f"chain {op.name} redeclared"
                else:
                    t["chains"][op.name] = [op.obj, []]
            elif op.verb == "flush":
                t["chains"][op.name][1] = []
            else:
                del t["chains"][op.name]
        elif op.kind in ("set", "map"):
            if op.verb == "add":
                assert isinstance(op.obj, NftSet)
                if op.name in t["sets"]:
                    assert t["sets"][op.name][0] == op.obj, f"set {op.name} redeclared"
                else:
                    t["sets"][op.name] = [op.obj, {}]
            elif op.verb == "flush":
                t["sets"][op.name][1] = {}
            else:
                del t["sets"][op.name]
        elif op.kind == "rule":
            assert op.verb == "add" and isinstance(op.obj, Rule)
            t["chains"][op.name][1].append(op.obj)
        else:
            elements = t["sets"][op.name][1]
            if op.verb == "add":
                assert isinstance(op.obj, tuple)
                k, value = op.obj
                assert tuple(k) not in elements, f"element {k} of @{op.name} exists"
                elements[tuple(k)] = (k, value)
            else:
                assert op.verb == "delete" and op.obj is not None
                del elements[tuple(op.obj)]
    out = []
    for t in tables.values():
        chains = tuple(attrs.evolve(d, rules=tuple(rules)) for d, rules in t["chains"].values())
        sets = tuple(attrs.evolve(d, elements=tuple(els.values())) for d, els in t["sets"].values())
        out.append(attrs.evolve(t["decl"], chains=chains, sets=sets))
    return attrs.evolve(ruleset, tables=tuple(out))


def _elements(s: NftSet) -> Iterable[tuple[tuple[str, ...], Any]]:
    for k, v in s.elements:
        yield tuple(k), (k, v)


def check_delta(old: Ruleset, new: Ruleset, **kwargs: Any) -> Transaction:
    """delta(old, new) applied to old gives new, both by the operation list and by
    running its text through the nft script parser; its text has one line per
    operation."""
    tx = delta(old, new, **kwargs)
    assert len(tx.text.splitlines()) == len(tx)
    if not kwargs.get("defer_stale_chains"):
        assert same_ruleset(apply(old, tx), new)
        issues: list[ParseIssue] = []
        assert same_ruleset(parse_script(tx.text, base=old, issues=issues), new)
        assert issues == []
    return tx


def _svc_yaml(
    ns: str, name: str, ip: str, port_name: str, port: int, endpoints: Sequence[str]
) -> str:
    text = f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  clusterIP: {ip}
  ports: [{{name: {port_name}, port: {port}, protocol: TCP}}]
"""
    if endpoints is not None:
        eps = ", ".join(f"{{addresses: [{e}]}}" for e in endpoints)
        text += f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: {ns}, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
endpoints: [{eps}]
ports: [{{name: {port_name}, port: {port}, protocol: TCP}}]
"""
    return text


def _state(services: dict[str, tuple[str, str, int, Sequence[str]]]) -> Ruleset:
    text = "".join(
        _svc_yaml(f"ns{n}", f"svc{n}", ip, port_name, port, eps)
        for n, (ip, port_name, port, eps) in services.items()
    )
    view = view_of(
        kservice.load_text(text) + load_objects(GOLDEN / "node.yaml"), fake_proxier_config()
    )
    return compile(view, service_cidrs=SERVICE_CIDRS["IPv4"])


def _chain_names(r: Ruleset) -> set[str]:
    return {c.name for c in r.tables[0].chains}


def test_partial_sync_steps_of_upstream_sync_proxy_rules_repeated() -> None:
    """Upstream's TestSyncProxyRulesRepeated, step by step: after each delta the
    table is the compiled one (plus, with ``defer_stale_chains``, the emptied
    stale chains upstream keeps for a second), with upstream's operation counts
    (``nft.LastTransaction.NumOperations()``) where kservice's granularity is the
    same (see the one step where it is finer)."""
    svcs: dict[str, tuple[str, str, int, Sequence[str]]] = {
        "1": ("172.30.0.41", "p80", 80, ["10.0.1.1"]),
        "2": ("172.30.0.42", "p8080", 8080, ["10.0.2.1"]),
    }
    state = _state(svcs)
    # upstream's expected dump of the initial state, verbatim
    assert normalized(render_script(state)) == normalized(
        (GOLDEN / "base.nft").read_text() + (GOLDEN / "sync-repeated" / "initial.nft").read_text()
    )

    def step(new_svcs: dict[str, Any], ops: int, stale: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        nonlocal state
        new = _state(new_svcs)
        tx = check_delta(state, new, defer_stale_chains=True)
        assert len(tx) == ops, tx.text
        state = apply(state, tx)
        assert _chain_names(state) - _chain_names(new) == stale
        for name in stale:
            assert state.tables[0].chain(name).rules == ()
        assert same_ruleset(
            attrs.evolve(
                state,
                tables=(
                    attrs.evolve(
                        state.tables[0],
                        chains=tuple(c for c in state.tables[0].chains if c.name not in stale),
                    ),
                ),
            ),
            new,
        )

    def age(ops: int) -> None:
        """The stale chains are deleted (upstream: in a transaction of their own)."""
        nonlocal state
        new = _state(svcs)
        tx = check_delta(state, new)
        assert len(tx) == ops and all(op.verb == "delete" for op in tx.operations)
        state = apply(state, tx)

    # add a service with its endpoints: 2 elements + add/flush/2 rules x 2 chains
    svcs["3"] = ("172.30.0.43", "p80", 80, ["10.0.3.1"])
    step(svcs, 10)
    # delete a service: 2 elements deleted, its 2 chains flushed (not deleted yet)
    del svcs["2"]
    step(
        svcs,
        4,
        {
            "service-MHHHYRWA-ns2/svc2/tcp/p8080",
            "endpoint-7RVP4LUQ-ns2/svc2/tcp/p8080__10.0.2.1/8080",
        },
    )
    age(2)
    # a service without endpoints: cluster-ips and no-endpoint-services
    svcs["4"] = ("172.30.0.44", "p80", 80, [])
    step(svcs, 2)
    # its endpoints arrive: one element swapped, 2 chains made
    svcs["4"] = ("172.30.0.44", "p80", 80, ["10.0.4.1"])
    step(svcs, 10)
    # an endpoint of svc3 changes: its service chain refilled, a new endpoint chain,
    # the old one flushed
    svcs["3"] = ("172.30.0.43", "p80", 80, ["10.0.3.2"])
    step(svcs, 9, {"endpoint-2OCDJSZQ-ns3/svc3/tcp/p80__10.0.3.1/80"})
    age(1)
    # an endpoint is added: upstream rewrites every chain of the changed Service
    # (12 operations: 3 chains); kservice only the service chain and the new
    # endpoint chain (8), the unchanged endpoint chain is left alone
    svcs["3"] = ("172.30.0.43", "p80", 80, ["10.0.3.2", "10.0.3.3"])
    step(svcs, 8)
    # the endpoints go: element swapped, 3 chains flushed
    svcs["3"] = ("172.30.0.43", "p80", 80, [])
    three = {
        "service-4AT6LBPK-ns3/svc3/tcp/p80",
        "endpoint-SWWHDC7X-ns3/svc3/tcp/p80__10.0.3.2/80",
        "endpoint-TQ2QKHCZ-ns3/svc3/tcp/p80__10.0.3.3/80",
    }
    step(svcs, 5, three)
    # and come back at once: element swapped, 3 chains refilled
    svcs["3"] = ("172.30.0.43", "p80", 80, ["10.0.3.2", "10.0.3.3"])
    step(svcs, 14)
    # nothing changed: an empty transaction
    step(svcs, 0)
    assert delta(state, state).text == ""


def test_delta_deletes_stale_chains_at_once_by_default() -> None:
    old = _state(
        {
            "1": ("172.30.0.41", "p80", 80, ["10.0.1.1"]),
            "2": ("172.30.0.42", "p80", 80, ["10.0.2.1"]),
        }
    )
    new = _state({"1": ("172.30.0.41", "p80", 80, ["10.0.1.1"])})
    tx = check_delta(old, new)
    lines = tx.text.splitlines()
    assert lines == [
        "flush chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80",
        "flush chain ip kube-proxy endpoint-RUN55B7R-ns2/svc2/tcp/p80__10.0.2.1/80",
        "delete element ip kube-proxy cluster-ips { 172.30.0.42 }",
        "delete element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 }",
        "delete chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80",
        "delete chain ip kube-proxy endpoint-RUN55B7R-ns2/svc2/tcp/p80__10.0.2.1/80",
    ]
    assert [op.verb for op in tx.operations] == [
        "flush",
        "flush",
        "delete",
        "delete",
        "delete",
        "delete",
    ]


def test_delta_remakes_changed_declarations() -> None:
    """A set whose declaration changes (the affinity timeout) is deleted and made
    again, after the rules that refer to it are flushed; a changed element
    comment is rewritten."""
    case = CASE_BY_NAME["affinity"]
    old = compile_case(case)
    objs = [
        attrs.evolve(o, session_affinity_timeout=120) if isinstance(o, Service) else o
        for o in case_objects(case)
    ]
    new = compile(view_of(objs, case.config), service_cidrs=SERVICE_CIDRS["IPv4"])
    tx = check_delta(old, new)
    text = tx.text
    assert "delete set ip kube-proxy affinity-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80\n" in text
    assert "timeout 120s" in text
    assert text.index("flush chain") < text.index("delete set") < text.index("add set")
    # element comment only
    t = old.tables[0]
    no_ep = NftSet(
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service",
        "verdict",
        elements=[(ElementKey(("1.2.3.4", "tcp", "80"), comment="a/b:c"), "drop")],
    )
    a = attrs.evolve(old, tables=(attrs.evolve(t, sets=(*t.sets[:0], no_ep)),))
    no_ep2 = attrs.evolve(
        no_ep, elements=[(ElementKey(("1.2.3.4", "tcp", "80"), comment="d/e:f"), "drop")]
    )
    b = attrs.evolve(old, tables=(attrs.evolve(t, sets=(no_ep2,)),))
    tx = delta(a, b)
    assert tx.text.splitlines() == [
        "delete element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 }",
        "add element ip kube-proxy no-endpoint-services "
        '{ 1.2.3.4 . tcp . 80 comment "d/e:f" : drop }',
    ]


def test_delta_from_and_to_nothing() -> None:
    new = compile_case(CASE_BY_NAME["overall"])
    empty = Ruleset("nftables")
    tx = check_delta(empty, new)
    assert normalized(tx.text) == normalized(render_script(new))
    gone = check_delta(new, empty)
    assert gone.text == "delete table ip kube-proxy\n"


def test_operation_objects() -> None:
    old = _state({})
    new = _state({"1": ("172.30.0.41", "p80", 80, ["10.0.1.1"])})
    tx = delta(old, new)
    kinds = [(op.verb, op.kind) for op in tx.operations]
    assert kinds == [
        ("add", "chain"),
        ("flush", "chain"),
        ("add", "chain"),
        ("flush", "chain"),
        ("add", "rule"),
        ("add", "rule"),
        ("add", "rule"),
        ("add", "rule"),
        ("add", "element"),
        ("add", "element"),
    ]
    assert all(isinstance(op, Operation) and op.table == "kube-proxy" for op in tx.operations)
    assert str(tx) == tx.text and not tx.is_empty


# ------------------------------------------------------- delta: Hypothesis states
_PROTOCOLS = ("TCP", "UDP", "SCTP")


@st.composite
def service_specs(draw: st.DrawFn, index: int) -> dict[str, Any]:
    kind = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
    nports = draw(st.integers(1, 2))
    ports = []
    for p in range(nports):
        port: dict[str, Any] = {
            "name": f"p{p}",
            "port": (80, 443)[p] + draw(st.sampled_from([0, 1])),
            "protocol": draw(st.sampled_from(_PROTOCOLS)),
        }
        if kind != "ClusterIP":
            port["nodePort"] = 3000 + index * 10 + p
        ports.append(port)
    spec: dict[str, Any] = {"type": kind, "clusterIP": f"172.30.0.{index + 1}", "ports": ports}
    if draw(st.booleans()):
        spec["externalIPs"] = [f"192.168.99.{index + 1}"]
    external = kind != "ClusterIP" or "externalIPs" in spec
    if external and draw(st.booleans()):
        spec["externalTrafficPolicy"] = "Local"
        if kind == "LoadBalancer":
            spec["healthCheckNodePort"] = 31000 + index
    if draw(st.booleans()):
        spec["internalTrafficPolicy"] = "Local"
    if draw(st.booleans()):
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {
            "clientIP": {"timeoutSeconds": draw(st.sampled_from([10, 10800]))}
        }
    status: dict[str, Any] = {}
    if kind == "LoadBalancer" and draw(st.booleans()):
        status = {"loadBalancer": {"ingress": [{"ip": f"1.2.3.{index + 1}"}]}}
        if draw(st.booleans()):
            spec["loadBalancerSourceRanges"] = draw(
                st.sampled_from([["203.0.113.0/25"], ["192.168.0.0/24", "203.0.113.0/25"]])
            )
    endpoints = draw(
        st.lists(
            st.tuples(
                st.integers(1, 4),
                st.booleans(),
                st.sampled_from(["ready", "terminating", "gone"]),
            ),
            max_size=3,
            unique_by=lambda e: e[0],
        )
    )
    return {"spec": spec, "status": status, "endpoints": endpoints}


def _objects(states: dict[int, dict[str, Any]]) -> list[Any]:
    import yaml

    docs = []
    for index, s in sorted(states.items()):
        ns, name = f"ns{index}", f"svc{index}"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": s["spec"],
                "status": s["status"],
            }
        )
        eps = []
        for host, local, cond in s["endpoints"]:
            ep: dict[str, Any] = {"addresses": [f"10.{index}.0.{host}"]}
            if local:
                ep["nodeName"] = NODE
            if cond == "terminating":
                ep["conditions"] = {"ready": False, "serving": True, "terminating": True}
            elif cond == "gone":
                ep["conditions"] = {"ready": False, "serving": False, "terminating": True}
            eps.append(ep)
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-1",
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "endpoints": eps,
                "ports": [
                    {"name": p["name"], "port": 8000 + p["port"], "protocol": p["protocol"]}
                    for p in s["spec"]["ports"]
                ],
            }
        )
    return kservice.load_text(yaml.safe_dump_all(docs)) + load_objects(GOLDEN / "node.yaml")


@st.composite
def state_pairs(draw: st.DrawFn) -> tuple[dict[int, Any], dict[int, Any], str, int]:
    indexes = draw(st.sets(st.integers(0, 5), max_size=4))
    old = {i: draw(service_specs(i)) for i in sorted(indexes)}
    new = dict(old)
    change = draw(st.sampled_from(["add", "remove", "change", "endpoints"]))
    if change == "add" or not old:
        free = sorted(set(range(6)) - set(old))
        target = draw(st.sampled_from(free))
        new[target] = draw(service_specs(target))
        change = "add"
    else:
        target = draw(st.sampled_from(sorted(old)))
        if change == "remove":
            del new[target]
        elif change == "change":
            new[target] = draw(service_specs(target))
        else:
            fresh = draw(service_specs(target))
            new[target] = {**old[target], "endpoints": fresh["endpoints"]}
    return old, new, change, target


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=state_pairs(), match_all=st.booleans(), masq_all=st.booleans())
def test_delta_applies_to_exactly_the_new_ruleset(
    pair: tuple[dict[int, Any], dict[int, Any], str, int], match_all: bool, masq_all: bool
) -> None:
    old_state, new_state, _change, target = pair
    overrides: dict[str, Any] = {"masquerade_all": masq_all}
    if match_all:
        overrides["node_port_addresses"] = ()
    cfg = fake_proxier_config(**overrides)
    old = compile(view_of(_objects(old_state), cfg), service_cidrs=SERVICE_CIDRS["IPv4"])
    new = compile(view_of(_objects(new_state), cfg), service_cidrs=SERVICE_CIDRS["IPv4"])
    assert references_defined(old) == [] and references_defined(new) == []
    tx = check_delta(old, new)
    # only the changed Service's chains and sets are touched
    own = f"-ns{target}/svc{target}/"
    for op in tx.operations:
        if op.kind in ("chain", "rule", "set", "map"):
            assert own in op.name, op
    assert delta(new, new).is_empty
    # deferring stale chains leaves exactly those chains, emptied
    deferred = apply(old, delta(old, new, defer_stale_chains=True))
    stale = _chain_names(old) - _chain_names(new)
    assert _chain_names(deferred) == _chain_names(new) | stale
    assert all(deferred.tables[0].chain(n).rules == () for n in stale)


# ------------------------------------------------------------------ naming and caching
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_chain_names_are_the_naming_modules(case: Case) -> None:
    from kservice.proxy.naming import (
        nftables_affinity_set,
        nftables_cluster_chain,
        nftables_endpoint_chain,
    )

    view = view_of(case_objects(case), case.config)
    table = compile(view).tables[0]
    chains = {c.name for c in table.chains}
    sets = {s.name for s in table.sets}
    for port in view:
        for ep in port.all_reachable_endpoints:
            assert nftables_endpoint_chain(port.name, ep.endpoint_string) in chains
            if port.client_ip_affinity:
                assert nftables_affinity_set(port.name, ep.endpoint_string) in sets
        if port.cluster_endpoints:
            assert nftables_cluster_chain(port.name) in chains


def test_cache_changes_no_result() -> None:
    from kservice.proxy.nftables import clear_cache

    case = CASE_BY_NAME["overall"]
    warm = compile_case(case)
    clear_cache()
    cold = compile_case(case)
    assert cold == warm and cold is not warm
    assert delta(warm, cold).is_empty  # equal but not shared: compared by value
    assert compile_case(case).tables[0].chains[0] is cold.tables[0].chains[0]
