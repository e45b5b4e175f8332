"""The IPVS compiler (kservice.proxy.ipvs) against kube-proxy's IPVS proxier.

The expectations follow kubernetes/kubernetes ``pkg/proxy/ipvs/proxier.go``
(``syncProxyRules``, ``syncEndpoint``, ``writeIptablesRules``): which virtual
servers and real servers exist, which ipset entries, which addresses are bound
to ``kube-ipvs0`` and the iptables rules written around the sets. Views are
built directly from ServicePortInfo objects (endpoint selection already done),
as upstream's tests build the service and endpoints maps.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

import kservice
from kservice.api.endpointslice import EndpointSlice
from kservice.api.node import Node
from kservice.api.service import Service
from kservice.netfilter.iptables_text import parse, render_restore
from kservice.netfilter.ruleset import (
    Accept,
    AddrTypeMatch,
    Drop,
    IPMatch,
    Jump,
    Masquerade,
    ProtoMatch,
    RawMatch,
    RealServer,
    Reject,
    Return,
    Rule,
    Ruleset,
    SetMatch,
    VirtualServer,
)
from kservice.proxy import NodeView, ProxyConfig, ServicePortName
from kservice.proxy.iptables import IptablesHost
from kservice.proxy.ipvs import IPSET_INFO, compile, ipset_comments, ipset_name
from kservice.proxy.nodeview import EndpointInfo, NodeInfo, ServicePortInfo

NODE_IP = "192.168.0.2"
NODE_IP6 = "fd00:c0a8::2"
EP1 = EndpointInfo("10.180.0.1", 80, is_local=True)
EP2 = EndpointInfo("10.180.1.1", 80)
EPS = (EP2, EP1)  # not sorted: the compiler sorts real servers by endpoint string


def port(
    name: str = "svc1",
    *,
    cluster_ip: str = "172.30.0.41",
    number: int = 80,
    protocol: str = "TCP",
    endpoints: tuple[EndpointInfo, ...] = EPS,
    local: tuple[EndpointInfo, ...] | None = None,
    **kw: object,
) -> ServicePortInfo:
    local_eps = tuple(e for e in endpoints if e.is_local) if local is None else local
    return ServicePortInfo(
        name=ServicePortName("ns1", name, "p80", protocol),
        cluster_ip=cluster_ip,
        port=number,
        protocol=protocol,
        all_endpoints=endpoints,
        cluster_endpoints=endpoints,
        local_endpoints=local_eps,
        has_any_endpoints=bool(endpoints),
        **kw,  # type: ignore[arg-type]
    )


def view(
    *ports: ServicePortInfo,
    ips: tuple[str, ...] = (NODE_IP,),
    family: str = "IPv4",
    **cfg: object,
) -> NodeView:
    config = ProxyConfig(mode="ipvs", ip_family=family, **cfg)  # type: ignore[arg-type]
    return NodeView(
        node=NodeInfo("test-node", ip_family=family, ips=ips), config=config, service_ports=ports
    )


def servers(r: Ruleset) -> dict[tuple[str, str, int], VirtualServer]:
    return {(vs.address, vs.protocol, vs.port): vs for vs in r.virtual_servers}


def sets(r: Ruleset) -> dict[str, tuple[str, ...]]:
    return {s.name: s.elements for s in r.ipsets}


def rules(r: Ruleset, table: str, chain: str) -> tuple[Rule, ...]:
    return r.table(table).chain(chain).rules


RS = (RealServer("10.180.0.1", 80), RealServer("10.180.1.1", 80))
RS_LOCAL = (RealServer("10.180.0.1", 80),)
COMMENTS = {name: comment for name, _t, comment in IPSET_INFO}


# ------------------------------------------------------------------ virtual servers
def test_cluster_ip_virtual_server_and_bindings() -> None:
    r = compile(view(port()))
    assert r.mode == "ipvs"
    assert r.virtual_servers == (VirtualServer("172.30.0.41", "tcp", 80, "rr", None, RS),)
    assert sets(r)["KUBE-CLUSTER-IP"] == ("172.30.0.41,tcp:80",)
    assert sets(r)["KUBE-IPVS-IPS"] == ("172.30.0.41",)
    assert sets(r)["KUBE-LOOP-BACK"] == ("10.180.0.1,tcp:80,10.180.0.1",)
    ipvs0 = r.interfaces[-1]
    assert (ipvs0.name, ipvs0.kind, ipvs0.addresses) == ("kube-ipvs0", "dummy", ("172.30.0.41",))
    assert "172.30.0.41" in r.local_addresses


def test_every_ipset_is_created_in_kube_proxy_order_with_comments() -> None:
    r = compile(view())
    assert [(s.name, s.type, s.comment) for s in r.ipsets] == [(n, t, c) for n, t, c in IPSET_INFO]
    assert all(s.elements == () for s in r.ipsets)
    assert {s.family for s in r.ipsets} == {"inet"}


@pytest.mark.parametrize(
    ("cfg_scheduler", "arg", "want"),
    [("", None, "rr"), ("wrr", None, "wrr"), ("lc", "sh", "sh"), ("", "mh", "mh")],
)
def test_scheduler(cfg_scheduler: str, arg: str | None, want: str) -> None:
    r = compile(view(port(), ipvs_scheduler=cfg_scheduler), scheduler=arg)
    assert {vs.scheduler for vs in r.virtual_servers} == {want}


def test_client_ip_affinity_is_persistence() -> None:
    p = port(
        session_affinity="ClientIP",
        session_affinity_timeout=10800,
        node_port=3001,
        external_ips=("1.2.3.4",),
    )
    r = compile(view(p))
    assert {vs.persistence for vs in r.virtual_servers} == {10800}
    assert len(r.virtual_servers) == 3


def test_udp_and_sctp_protocols() -> None:
    r = compile(
        view(port("u", protocol="UDP"), port("s", cluster_ip="172.30.0.42", protocol="SCTP"))
    )
    assert set(servers(r)) == {("172.30.0.41", "udp", 80), ("172.30.0.42", "sctp", 80)}
    assert sets(r)["KUBE-CLUSTER-IP"] == ("172.30.0.41,udp:80", "172.30.0.42,sctp:80")


def test_no_endpoints_gives_an_empty_virtual_server() -> None:
    r = compile(view(port(endpoints=())))
    assert r.virtual_servers == (VirtualServer("172.30.0.41", "tcp", 80),)
    assert sets(r)["KUBE-LOOP-BACK"] == ()


# ------------------------------------------------------------------------ NodePorts
def test_node_port_tcp() -> None:
    r = compile(view(port(node_port=3001), ips=(NODE_IP, "10.0.0.5")))
    assert servers(r)[(NODE_IP, "tcp", 3001)].real_servers == RS
    assert servers(r)[("10.0.0.5", "tcp", 3001)].real_servers == RS
    assert sets(r)["KUBE-NODE-PORT-TCP"] == ("3001",)
    assert sets(r)["KUBE-NODE-PORT-LOCAL-TCP"] == ()
    # node IPs are never bound to kube-ipvs0
    assert sets(r)["KUBE-IPVS-IPS"] == ("172.30.0.41",)
    np = rules(r, "nat", "KUBE-NODE-PORT")
    assert np == (
        Rule(
            (ProtoMatch(("tcp",), module=False), SetMatch("KUBE-NODE-PORT-TCP", ("dport",))),
            Jump("KUBE-MARK-MASQ"),
            COMMENTS["KUBE-NODE-PORT-TCP"],
        ),
    )


def test_node_ports_sorted_numerically() -> None:
    r = compile(
        view(port("a", node_port=30000), port("b", cluster_ip="172.30.0.42", node_port=3001))
    )
    assert sets(r)["KUBE-NODE-PORT-TCP"] == ("3001", "30000")


def test_node_port_udp_local() -> None:
    p = port(protocol="UDP", node_port=3001, external_policy_local=True)
    r = compile(view(p))
    assert sets(r)["KUBE-NODE-PORT-UDP"] == ("3001",)
    assert sets(r)["KUBE-NODE-PORT-LOCAL-UDP"] == ("3001",)
    assert servers(r)[(NODE_IP, "udp", 3001)].real_servers == RS_LOCAL
    # the ClusterIP still uses the Cluster endpoints (external policy only)
    assert servers(r)[("172.30.0.41", "udp", 80)].real_servers == RS
    np = rules(r, "nat", "KUBE-NODE-PORT")
    assert [rule.verdict for rule in np] == [Return(), Jump("KUBE-MARK-MASQ")]


def test_node_port_sctp_uses_node_ips() -> None:
    r = compile(view(port(protocol="SCTP", node_port=3001), ips=(NODE_IP, "10.0.0.5")))
    assert sets(r)["KUBE-NODE-PORT-SCTP-HASH"] == ("10.0.0.5,sctp:3001", f"{NODE_IP},sctp:3001")
    np = rules(r, "nat", "KUBE-NODE-PORT")
    assert np[0].exprs == (
        ProtoMatch(("sctp",), module=False),
        SetMatch("KUBE-NODE-PORT-SCTP-HASH", ("daddr", "dport")),
    )


def test_node_port_addresses_limit_the_virtual_servers() -> None:
    v = view(
        port(node_port=3001),
        ips=(NODE_IP, "10.0.0.5"),
        node_port_addresses=("10.0.0.0/8",),
    )
    assert {k for k in servers(compile(v)) if k[2] == 3001} == {("10.0.0.5", "tcp", 3001)}


def test_node_port_without_node_ips_is_skipped() -> None:
    r = compile(view(port(node_port=3001), ips=()))
    assert sets(r)["KUBE-NODE-PORT-TCP"] == ()
    assert len(r.virtual_servers) == 1


def test_health_check_node_port() -> None:
    r = compile(view(port(health_check_node_port=30000, external_policy_local=True)))
    assert sets(r)["KUBE-HEALTH-CHECK-NODE-PORT"] == ("30000",)
    assert rules(r, "filter", "KUBE-NODE-PORT") == (
        Rule(
            (SetMatch("KUBE-HEALTH-CHECK-NODE-PORT", ("dport",)),),
            Accept(),
            "Kubernetes health check node port",
        ),
    )


# ------------------------------------------------------------ traffic policies
def test_internal_policy_local() -> None:
    r = compile(view(port(internal_policy_local=True)))
    assert r.virtual_servers[0].real_servers == RS_LOCAL


def test_local_policy_falls_back_to_cluster_endpoints() -> None:
    # PR 97081: with no local endpoints the Cluster endpoints are used
    r = compile(view(port(internal_policy_local=True, local=())))
    assert r.virtual_servers[0].real_servers == RS


def test_external_ips() -> None:
    r = compile(view(port(external_ips=("1.2.3.4",))))
    assert servers(r)[("1.2.3.4", "tcp", 80)].real_servers == RS
    assert sets(r)["KUBE-EXTERNAL-IP"] == ("1.2.3.4,tcp:80",)
    assert sets(r)["KUBE-IPVS-IPS"] == ("1.2.3.4", "172.30.0.41")
    svc = rules(r, "nat", "KUBE-SERVICES")
    ext = [rule for rule in svc if rule.comment == COMMENTS["KUBE-EXTERNAL-IP"]]
    m = SetMatch("KUBE-EXTERNAL-IP", ("daddr", "dport"))
    assert ext == [
        Rule((m,), Jump("KUBE-MARK-MASQ"), COMMENTS["KUBE-EXTERNAL-IP"]),
        Rule(
            (
                m,
                RawMatch("-m physdev ! --physdev-is-in"),
                AddrTypeMatch("saddr", "LOCAL", negate=True),
            ),
            Accept(),
            COMMENTS["KUBE-EXTERNAL-IP"],
        ),
        Rule((m, AddrTypeMatch("daddr", "LOCAL")), Accept(), COMMENTS["KUBE-EXTERNAL-IP"]),
    ]


def test_external_ips_local_policy() -> None:
    r = compile(view(port(external_ips=("1.2.3.4",), external_policy_local=True)))
    assert sets(r)["KUBE-EXTERNAL-IP"] == ()
    assert sets(r)["KUBE-EXTERNAL-IP-LOCAL"] == ("1.2.3.4,tcp:80",)
    assert servers(r)[("1.2.3.4", "tcp", 80)].real_servers == RS_LOCAL
    svc = rules(r, "nat", "KUBE-SERVICES")
    local = [rule for rule in svc if rule.comment == COMMENTS["KUBE-EXTERNAL-IP-LOCAL"]]
    assert [rule.verdict for rule in local] == [Accept(), Accept()]


def test_external_ip_on_the_node_is_not_bound() -> None:
    r = compile(view(port(external_ips=(NODE_IP,))))
    assert (NODE_IP, "tcp", 80) in servers(r)
    assert NODE_IP not in r.interfaces[-1].addresses
    assert sets(r)["KUBE-IPVS-IPS"] == ("172.30.0.41",)


def test_load_balancer() -> None:
    r = compile(view(port(load_balancer_vips=("5.6.7.8",), external_policy_local=True)))
    assert sets(r)["KUBE-LOAD-BALANCER"] == ("5.6.7.8,tcp:80",)
    assert sets(r)["KUBE-LOAD-BALANCER-LOCAL"] == ("5.6.7.8,tcp:80",)
    assert servers(r)[("5.6.7.8", "tcp", 80)].real_servers == RS_LOCAL
    assert rules(r, "nat", "KUBE-LOAD-BALANCER") == (
        Rule(
            (SetMatch("KUBE-LOAD-BALANCER-LOCAL", ("daddr", "dport")),),
            Return(),
            COMMENTS["KUBE-LOAD-BALANCER-LOCAL"],
        ),
        Rule((), Jump("KUBE-MARK-MASQ")),
    )
    svc = rules(r, "nat", "KUBE-SERVICES")
    assert svc[1] == Rule(
        (SetMatch("KUBE-LOAD-BALANCER", ("daddr", "dport")),),
        Jump("KUBE-LOAD-BALANCER"),
        "Kubernetes service lb portal",
    )
    assert svc[-1] == Rule((SetMatch("KUBE-LOAD-BALANCER", ("daddr", "dport")),), Accept())


@pytest.mark.parametrize("allow_node", [True, False])
def test_load_balancer_source_ranges(allow_node: bool) -> None:
    ranges = ("203.0.113.0/25", "192.168.0.0/24") if allow_node else ("203.0.113.0/25",)
    r = compile(view(port(load_balancer_vips=("5.6.7.8",), load_balancer_source_ranges=ranges)))
    s = sets(r)
    assert s["KUBE-LOAD-BALANCER-FW"] == ("5.6.7.8,tcp:80",)
    assert s["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == tuple(
        sorted(f"5.6.7.8,tcp:80,{c}" for c in ranges)
    )
    fw = rules(r, "filter", "KUBE-SOURCE-RANGES-FIREWALL")
    out = rules(r, "filter", "KUBE-IPVS-OUT-FILTER")
    if allow_node:
        assert s["KUBE-LOAD-BALANCER-SOURCE-IP"] == ("5.6.7.8,tcp:80,5.6.7.8",)
        assert [rule.verdict for rule in fw] == [Return(), Return(), Drop()]
        assert out == ()
    else:
        assert s["KUBE-LOAD-BALANCER-SOURCE-IP"] == ()
        assert [rule.verdict for rule in fw] == [Return(), Drop()]
        assert out == (
            Rule(
                (
                    IPMatch("saddr", ("5.6.7.8",)),
                    RawMatch("-m ipvs --vaddr 5.6.7.8 --vproto tcp --vport 80"),
                ),
                Drop(),
            ),
        )
    assert rules(r, "filter", "KUBE-PROXY-FIREWALL") == (
        Rule(
            (SetMatch("KUBE-LOAD-BALANCER-FW", ("daddr", "dport")),),
            Jump("KUBE-SOURCE-RANGES-FIREWALL"),
            COMMENTS["KUBE-LOAD-BALANCER-FW"],
        ),
    )


# ------------------------------------------------------------------------ iptables
CIP_DD = SetMatch("KUBE-CLUSTER-IP", ("daddr", "dport"))


@pytest.mark.parametrize(
    ("cfg", "exprs"),
    [
        ({"masquerade_all": True}, (CIP_DD,)),
        ({"cluster_cidrs": "10.0.0.0/8"}, (CIP_DD, IPMatch("saddr", ("10.0.0.0/8",), True))),
        ({}, (SetMatch("KUBE-CLUSTER-IP", ("saddr", "dport")),)),
    ],
)
def test_cluster_ip_masquerade_rule(cfg: dict[str, Any], exprs: tuple[Any, ...]) -> None:
    r = compile(view(port(), **cfg))
    svc = rules(r, "nat", "KUBE-SERVICES")
    assert svc[0] == Rule((IPMatch("saddr", ("127.0.0.0/8",)),), Return())
    assert svc[1] == Rule(exprs, Jump("KUBE-MARK-MASQ"), COMMENTS["KUBE-CLUSTER-IP"])
    assert svc[2] == Rule((AddrTypeMatch("daddr", "LOCAL"),), Jump("KUBE-NODE-PORT"))
    assert svc[3] == Rule((CIP_DD,), Accept())


def test_fixed_chains() -> None:
    r = compile(view(port()), host=IptablesHost(random_fully=False))
    post = rules(r, "nat", "KUBE-POSTROUTING")
    assert post[0] == Rule(
        (SetMatch("KUBE-LOOP-BACK", ("daddr", "dport", "saddr")),),
        Masquerade(),
        COMMENTS["KUBE-LOOP-BACK"],
    )
    assert post[-1] == Rule((), Masquerade(False), "kubernetes service traffic requiring SNAT")
    ipvs_filter = rules(r, "filter", "KUBE-IPVS-FILTER")
    assert [rule.exprs[-1].set_name for rule in ipvs_filter] == [  # type: ignore[union-attr]
        "KUBE-LOAD-BALANCER",
        "KUBE-CLUSTER-IP",
        "KUBE-EXTERNAL-IP",
        "KUBE-EXTERNAL-IP-LOCAL",
        "KUBE-HEALTH-CHECK-NODE-PORT",
        "KUBE-IPVS-IPS",
    ]
    assert ipvs_filter[-1].verdict == Reject()
    inp = rules(r, "filter", "INPUT")
    assert [rule.verdict for rule in inp] == [
        Jump("KUBE-IPVS-FILTER"),
        Jump("KUBE-PROXY-FIREWALL"),
        Jump("KUBE-NODE-PORT"),
    ]
    only = compile(view(port()), restore_only=True)
    assert [c.name for c in only.table("nat").chains] == [
        "KUBE-SERVICES",
        "KUBE-POSTROUTING",
        "KUBE-NODE-PORT",
        "KUBE-LOAD-BALANCER",
        "KUBE-MARK-MASQ",
    ]


def test_ipv6() -> None:
    ep = EndpointInfo("fd00:10:180::1", 80, is_local=True)
    p = port(cluster_ip="fd00:172:30::41", endpoints=(ep,), node_port=3001)
    r = compile(view(p, ips=(NODE_IP6,), family="IPv6"))
    assert r.family == "IPv6"
    assert r.virtual_servers[0] == VirtualServer(
        "fd00:172:30::41", "tcp", 80, "rr", None, (RealServer("fd00:10:180::1", 80),)
    )
    s = {x.name: x for x in r.ipsets}
    assert s["KUBE-6-CLUSTER-IP"].elements == ("fd00:172:30::41,tcp:80",)
    assert s["KUBE-6-CLUSTER-IP"].family == "inet6"
    assert s["KUBE-6-NODE-PORT-TCP"].elements == ("3001",)
    assert all(len(x.name) <= 31 for x in r.ipsets)
    assert r.table("nat", "ip6").chain("KUBE-SERVICES").rules[0] == Rule(
        (IPMatch("saddr", ("::1/128",)),), Return()
    )


def test_ipset_names() -> None:
    assert ipset_name("KUBE-CLUSTER-IP") == "KUBE-CLUSTER-IP"
    assert ipset_name("KUBE-CLUSTER-IP", "IPv6") == "KUBE-6-CLUSTER-IP"
    # "KUBE-6-LOAD-BALANCER-SOURCE-CIDR" is 32 characters: cut to 31
    assert ipset_name("KUBE-LOAD-BALANCER-SOURCE-CIDR", "IPv6") == "KUBE-6-LOAD-BALANCER-SOURCE-CID"
    assert (
        ipset_comments()["KUBE-6-LOAD-BALANCER-SOURCE-CID"]
        == COMMENTS["KUBE-LOAD-BALANCER-SOURCE-CIDR"]
    )


# ---------------------------------------------------------------------- properties
def _many() -> list[ServicePortInfo]:
    out = []
    for i in range(12):
        out.append(
            port(
                f"svc{i}",
                cluster_ip=f"172.30.0.{i + 1}",
                protocol=("TCP", "UDP", "SCTP")[i % 3],
                node_port=30000 + i if i % 2 else None,
                external_ips=(f"1.2.3.{i}",) if i % 4 == 0 else (),
                load_balancer_vips=(f"5.6.7.{i}",) if i % 3 == 0 else (),
                load_balancer_source_ranges=("203.0.113.0/25",) if i % 6 == 0 else (),
                external_policy_local=i % 5 == 0,
                session_affinity="ClientIP" if i % 7 == 0 else "None",
                session_affinity_timeout=60 if i % 7 == 0 else None,
                health_check_node_port=32000 + i if i % 5 == 0 else None,
            )
        )
    return out


def test_deterministic_and_order_independent() -> None:
    ports = _many()
    first = compile(view(*ports))
    assert compile(view(*ports)) == first
    shuffled = list(ports)
    random.Random(7).shuffle(shuffled)
    assert compile(view(*shuffled)) == first
    assert hash(first) == hash(compile(view(*shuffled)))


@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
def test_iptables_text_round_trip(family: str) -> None:
    if family == "IPv4":
        r = compile(view(*_many(), cluster_cidrs="10.0.0.0/8"))
        fam = "ip"
    else:
        ep = EndpointInfo("fd00:10:180::1", 80, is_local=True)
        p = port(cluster_ip="fd00:172:30::41", endpoints=(ep,), node_port=3001)
        r = compile(view(p, ips=(NODE_IP6,), family="IPv6"))
        fam = "ip6"
    text = render_restore(r)
    types = {s.name: s.type for s in r.ipsets}
    back = parse(text, family=fam, mode="ipvs", set_types=types)  # type: ignore[arg-type]
    assert render_restore(back.ruleset) == text
    assert back.ruleset.tables == r.tables


# ------------------------------------------- ported from upstream proxier_test.go
# Upstream's checkIptables compares (JumpChain, MatchSet, SourceAddress) per rule.
def _projection(r: Ruleset, table: str, chain: str) -> list[tuple[str, str, str]]:
    out = []
    for rule in rules(r, table, chain):
        v = rule.verdict
        jump = v.chain if isinstance(v, Jump) else type(v).__name__.upper()
        match_set = next((e.set_name for e in rule.exprs if isinstance(e, SetMatch)), "")
        source = next(
            (e.cidrs[0] for e in rule.exprs if isinstance(e, IPMatch) and not e.negate), ""
        )
        out.append((jump, match_set, source))
    return out


UPSTREAM_NODE_IP = "100.101.102.103"  # the fake proxier's node IP


def test_upstream_load_balancer_source_ranges() -> None:
    ep = EndpointInfo("10.180.0.1", 80)
    p = port(
        cluster_ip="10.20.30.41",
        endpoints=(ep,),
        load_balancer_vips=("1.2.3.4",),
        load_balancer_source_ranges=("10.0.0.0/8",),
    )
    r = compile(view(p, ips=(UPSTREAM_NODE_IP,)))
    assert len(r.virtual_servers) == 2
    assert servers(r)[("1.2.3.4", "tcp", 80)].real_servers == (RealServer("10.180.0.1", 80),)
    s = {k: v for k, v in sets(r).items() if v}
    assert s == {
        "KUBE-CLUSTER-IP": ("10.20.30.41,tcp:80",),
        "KUBE-LOAD-BALANCER": ("1.2.3.4,tcp:80",),
        "KUBE-LOAD-BALANCER-FW": ("1.2.3.4,tcp:80",),
        "KUBE-LOAD-BALANCER-SOURCE-CIDR": ("1.2.3.4,tcp:80,10.0.0.0/8",),
        "KUBE-IPVS-IPS": ("1.2.3.4", "10.20.30.41"),
    }
    assert _projection(r, "nat", "KUBE-SERVICES") == [
        ("RETURN", "", "127.0.0.0/8"),
        ("KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER", ""),
        ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP", ""),
        ("KUBE-NODE-PORT", "", ""),
        ("ACCEPT", "KUBE-CLUSTER-IP", ""),
        ("ACCEPT", "KUBE-LOAD-BALANCER", ""),
    ]
    assert _projection(r, "filter", "KUBE-PROXY-FIREWALL") == [
        ("KUBE-SOURCE-RANGES-FIREWALL", "KUBE-LOAD-BALANCER-FW", "")
    ]
    assert _projection(r, "filter", "KUBE-SOURCE-RANGES-FIREWALL") == [
        ("RETURN", "KUBE-LOAD-BALANCER-SOURCE-CIDR", ""),
        ("DROP", "", ""),
    ]


def test_upstream_accept_ipvs_traffic() -> None:
    ports = [
        port("svc1", cluster_ip="10.20.30.40", node_port=80, external_ips=("5.6.7.8",)),
        port("svc2", cluster_ip="10.20.30.41", node_port=80, load_balancer_vips=("1.2.3.4",)),
        port("svc3", cluster_ip="10.20.30.42", node_port=80),
    ]
    r = compile(view(*ports, ips=(UPSTREAM_NODE_IP,)))
    assert _projection(r, "nat", "KUBE-SERVICES") == [
        ("RETURN", "", "127.0.0.0/8"),
        ("KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER", ""),
        ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP", ""),
        ("KUBE-MARK-MASQ", "KUBE-EXTERNAL-IP", ""),
        ("ACCEPT", "KUBE-EXTERNAL-IP", ""),
        ("ACCEPT", "KUBE-EXTERNAL-IP", ""),
        ("KUBE-NODE-PORT", "", ""),
        ("ACCEPT", "KUBE-CLUSTER-IP", ""),
        ("ACCEPT", "KUBE-LOAD-BALANCER", ""),
    ]


def test_upstream_only_local_load_balancing() -> None:
    local = EndpointInfo("10.180.0.1", 80, is_local=True)
    remote = EndpointInfo("10.180.1.1", 80)
    p = port(
        cluster_ip="10.20.30.41",
        endpoints=(local, remote),
        node_port=3001,
        load_balancer_vips=("1.2.3.4",),
        external_policy_local=True,
    )
    r = compile(view(p, ips=(UPSTREAM_NODE_IP,)))
    assert servers(r)[("1.2.3.4", "tcp", 80)].real_servers == (RealServer("10.180.0.1", 80),)
    assert sets(r)["KUBE-LOAD-BALANCER"] == ("1.2.3.4,tcp:80",)
    assert sets(r)["KUBE-LOAD-BALANCER-LOCAL"] == ("1.2.3.4,tcp:80",)
    assert _projection(r, "nat", "KUBE-SERVICES") == [
        ("RETURN", "", "127.0.0.0/8"),
        ("KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER", ""),
        ("KUBE-MARK-MASQ", "KUBE-CLUSTER-IP", ""),
        ("KUBE-NODE-PORT", "", ""),
        ("ACCEPT", "KUBE-CLUSTER-IP", ""),
        ("ACCEPT", "KUBE-LOAD-BALANCER", ""),
    ]
    assert _projection(r, "nat", "KUBE-LOAD-BALANCER") == [
        ("RETURN", "KUBE-LOAD-BALANCER-LOCAL", ""),
        ("KUBE-MARK-MASQ", "", ""),
    ]


# ------------------------------------------- every upstream iptables scenario, in IPVS mode
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "iptables"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").is_file())


def golden_view(name: str) -> NodeView:
    cfg = yaml.safe_load((GOLDEN / name / "config.yaml").read_text(encoding="utf-8"))
    objects = kservice.load(GOLDEN / name / "input.yaml")
    config = ProxyConfig(**{**cfg.get("proxy", {}), "mode": "ipvs"})
    return NodeView.from_objects(
        [o for o in objects if isinstance(o, Service)],
        [o for o in objects if isinstance(o, EndpointSlice)],
        [o for o in objects if isinstance(o, Node)],
        node_name=cfg.get("node", "test-node"),
        config=config,
    )


@pytest.mark.parametrize("name", CASES)
def test_golden_scenarios_compile_consistently(name: str) -> None:
    v = golden_view(name)
    r = compile(v)
    assert compile(golden_view(name)) == r
    by_name = {s.name: s for s in r.ipsets}
    bound = set(r.interfaces[-1].addresses)
    node_ips = set(v.node.ips)
    for p in v.service_ports:
        proto = p.protocol.lower()
        assert (
            f"{p.cluster_ip},{proto}:{p.port}"
            in by_name[ipset_name("KUBE-CLUSTER-IP", v.ip_family)].elements
        )
    for vs in r.virtual_servers:
        # every service address is on kube-ipvs0 or is a node address
        assert vs.address in bound or vs.address in node_ips
        assert list(vs.real_servers) == sorted(
            vs.real_servers, key=lambda s: EndpointInfo(s.address, s.port).endpoint_string
        )
    assert set(by_name[ipset_name("KUBE-IPVS-IPS", v.ip_family)].elements) == bound
    # every set an iptables rule reads exists, with as many dimensions as the match reads
    for _t, _c, _i, rule in r.iter_rules():
        for e in rule.exprs:
            if isinstance(e, SetMatch):
                dims = by_name[e.set_name].type.partition(":")[2].split(",")
                assert len(e.keys) <= len(dims)
    fam = "ip6" if v.ip_family == "IPv6" else "ip"
    types = {s.name: s.type for s in r.ipsets}
    text = render_restore(r)
    back = parse(text, family=fam, mode="ipvs", set_types=types)  # type: ignore[arg-type]
    assert back.ruleset.tables == r.tables


# ------------------------------------------- kube-proxy's own text, byte for byte
def _restore_view() -> NodeView:
    ep = EndpointInfo("10.180.0.1", 80, is_local=True)
    p = port(
        cluster_ip="172.30.0.41",
        endpoints=(ep,),
        node_port=3001,
        load_balancer_vips=("5.6.7.8",),
        load_balancer_source_ranges=("203.0.113.0/25",),
        health_check_node_port=30000,
        external_policy_local=True,
    )
    q = port("svc2", cluster_ip="172.30.0.42", protocol="SCTP", endpoints=(), node_port=3002)
    return view(p, q, cluster_cidrs="10.0.0.0/8")


def test_restore_text_is_write_iptables_rules_text() -> None:
    """Every line as ``writeIptablesRules`` writes it: ``-p PROTO`` with no
    ``-m PROTO`` ahead of the set comment (``getComment`` quotes it), the rest
    comment first; tables nat then filter as kube-proxy feeds iptables-restore.
    (kube-proxy writes its rules in sync order across chains; the model keeps
    them chain by chain, in the same order within each chain.)"""
    r = compile(_restore_view(), restore_only=True)
    c = {name: f'"{comment}"' for name, comment in COMMENTS.items()}
    assert render_restore(r) == "\n".join(
        [
            "*nat",
            ":KUBE-SERVICES - [0:0]",
            ":KUBE-POSTROUTING - [0:0]",
            ":KUBE-NODE-PORT - [0:0]",
            ":KUBE-LOAD-BALANCER - [0:0]",
            ":KUBE-MARK-MASQ - [0:0]",
            "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN",
            f"-A KUBE-SERVICES -m comment --comment {c['KUBE-LOAD-BALANCER']} "
            "-m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER",
            f"-A KUBE-SERVICES -m comment --comment {c['KUBE-CLUSTER-IP']} "
            "-m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ",
            "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
            "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
            "-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT",
            f"-A KUBE-POSTROUTING -m comment --comment {c['KUBE-LOOP-BACK']} "
            "-m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
            '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring '
            'SNAT" -j MASQUERADE --random-fully',
            f"-A KUBE-NODE-PORT -p tcp -m comment --comment {c['KUBE-NODE-PORT-LOCAL-TCP']} "
            "-m set --match-set KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN",
            f"-A KUBE-NODE-PORT -p tcp -m comment --comment {c['KUBE-NODE-PORT-TCP']} "
            "-m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ",
            f"-A KUBE-NODE-PORT -p sctp -m comment --comment {c['KUBE-NODE-PORT-SCTP-HASH']} "
            "-m set --match-set KUBE-NODE-PORT-SCTP-HASH dst,dst -j KUBE-MARK-MASQ",
            f"-A KUBE-LOAD-BALANCER -m comment --comment {c['KUBE-LOAD-BALANCER-LOCAL']} "
            "-m set --match-set KUBE-LOAD-BALANCER-LOCAL dst,dst -j RETURN",
            "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ",
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
            "COMMIT",
            "*filter",
            ":KUBE-FORWARD - [0:0]",
            ":KUBE-NODE-PORT - [0:0]",
            ":KUBE-PROXY-FIREWALL - [0:0]",
            ":KUBE-SOURCE-RANGES-FIREWALL - [0:0]",
            ":KUBE-IPVS-FILTER - [0:0]",
            ":KUBE-IPVS-OUT-FILTER - [0:0]",
            '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" '
            "-m mark --mark 0x4000/0x4000 -j ACCEPT",
            '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" '
            "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A KUBE-NODE-PORT -m comment --comment {c['KUBE-HEALTH-CHECK-NODE-PORT']} "
            "-m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j ACCEPT",
            f"-A KUBE-PROXY-FIREWALL -m comment --comment {c['KUBE-LOAD-BALANCER-FW']} "
            "-m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL",
            "-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment "
            f"{c['KUBE-LOAD-BALANCER-SOURCE-CIDR']} "
            "-m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN",
            "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
            "-A KUBE-IPVS-FILTER -m set --match-set KUBE-LOAD-BALANCER dst,dst -j RETURN",
            "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN",
            "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP dst,dst -j RETURN",
            "-A KUBE-IPVS-FILTER -m set --match-set KUBE-EXTERNAL-IP-LOCAL dst,dst -j RETURN",
            "-A KUBE-IPVS-FILTER -m set --match-set KUBE-HEALTH-CHECK-NODE-PORT dst -j RETURN",
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW "
            "-m set --match-set KUBE-IPVS-IPS dst -j REJECT",
            "-A KUBE-IPVS-OUT-FILTER -s 5.6.7.8 "
            "-m ipvs --vaddr 5.6.7.8 --vproto tcp --vport 80 -j DROP",
            "COMMIT",
            "",
        ]
    )


def test_node_port_rules_read_back_without_warnings() -> None:
    r = compile(_restore_view())
    text = render_restore(r)
    types = {s.name: s.type for s in r.ipsets}
    back = parse(text, mode="ipvs", set_types=types)
    assert back.ruleset.tables == r.tables
    assert [w.message for w in back.warnings if "-p" in w.message] == []


@pytest.mark.parametrize("impl", ["python", "cython"])
def test_engine_matches_the_bare_protocol_as_the_kernel(impl: str) -> None:
    """``-p tcp`` without ``-m tcp`` is the same protocol match: a TCP NodePort
    packet from outside is marked for masquerade by it, a UDP one to the same port
    is not (no UDP service there). The engine says so for the compiled ruleset
    and for the one read back from kube-proxy's text alike."""
    from kservice.engine import Engine, EngineError, Packet

    r = compile(view(port(node_port=3001), ips=(NODE_IP,)))
    types = {s.name: s.type for s in r.ipsets}
    back = parse(render_restore(r), mode="ipvs", set_types=types).ruleset
    read = Ruleset(
        mode="ipvs",
        tables=back.tables,
        ipsets=r.ipsets,
        virtual_servers=r.virtual_servers,
        interfaces=r.interfaces,
    )
    for rs in (r, read):
        try:
            e = Engine(rs, seed=1, implementation=impl)
        except EngineError as exc:  # pragma: no cover - no compiled twin built here
            pytest.skip(str(exc))
        tcp = e.lookup(Packet(dst=NODE_IP, dport=3001, src="203.0.113.5", origin="external"))
        assert tcp.kind == "dnat" and tcp.masquerade
        udp = Packet(dst=NODE_IP, dport=3001, proto="udp", src="203.0.113.5", origin="external")
        assert not e.lookup(udp).masquerade


@pytest.mark.parametrize(
    ("scheduler", "flags"), [("mh", ("mh-port",)), ("sh", ()), ("rr", ()), ("", ())]
)
def test_mh_scheduler_sets_mh_port_on_every_virtual_server(
    scheduler: str, flags: tuple[str, ...]
) -> None:
    p = port(node_port=3001, external_ips=("1.2.3.4",), load_balancer_vips=("5.6.7.8",))
    r = compile(view(p, ipvs_scheduler=scheduler))
    assert len(r.virtual_servers) == 4
    assert {vs.flags for vs in r.virtual_servers} == {flags}
