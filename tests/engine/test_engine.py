"""The packet engine's API and semantics, on both twins."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from array import array
from fractions import Fraction

import pytest
from util import NODE_IP, Clock, ruleset, service

import kservice.engine as engine_module
import kservice.engine.compile as compile_module
from kservice.engine import Engine, EngineError, Packet, Verdict
from kservice.engine._explore import numgen_probability
from kservice.kernel.stats import chi_square_p
from kservice.netfilter.ruleset import Chain, RawMatch, Rule, Ruleset, Table

EPS3 = ["10.244.1.5", "10.244.2.6", "10.244.2.7"]
POD = "10.244.1.9"


def web(mode: str, **spec: object) -> Ruleset:
    return ruleset(service("web", EPS3, cluster_ip="10.96.0.50", **spec), mode)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the compiled twin
def test_compiled_engine_is_live_in_ci() -> None:
    """yarl's test_quoting_c_loaded: CI must never fall back to the pure twin."""
    if os.environ.get("KSERVICE_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("KSERVICE_NO_EXTENSIONS is set: the pure twin is expected")
    if not os.environ.get("CI"):
        pytest.skip("checked in CI (CI=true), where the extension is always built")
    assert engine_module.IMPLEMENTATION == "cython"
    import kservice._fastpath as compiled

    assert compiled.__file__ is not None and compiled.__file__.endswith(".so")


def test_compiled_rule_loop_is_live_in_ci() -> None:
    if os.environ.get("KSERVICE_NO_EXTENSIONS", "") not in ("", "0"):
        pytest.skip("KSERVICE_NO_EXTENSIONS is set: the pure rule loop is expected")
    if not os.environ.get("CI"):
        pytest.skip("checked in CI (CI=true), where the extension is always built")
    assert compile_module._compiled_emitter() is not None


@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_rule_loop_twins_build_the_same_program(mode: str, family: str) -> None:
    if compile_module._compiled_emitter() is None:
        pytest.skip("the compiled rule loop is off (not built, or KSERVICE_NO_EXTENSIONS set)")
    v6 = family == "IPv6"
    objs = [
        *service(
            "web",
            ["fd00:244::5", "fd00:244::6"] if v6 else EPS3,
            cluster_ip="fd00:96::50" if v6 else "10.96.0.50",
            sessionAffinity="ClientIP",
        ),
        *service(
            "lb",
            ["fd00:244::7"] if v6 else ["10.244.2.7"],
            cluster_ip="fd00:96::51" if v6 else "10.96.0.51",
            type="LoadBalancer",
            externalTrafficPolicy="Local",
        ),
        *service("none", [], cluster_ip="fd00:96::52" if v6 else "10.96.0.52"),
    ]
    r = ruleset(objs, mode, family)  # type: ignore[arg-type]
    compiled = compile_module.build(r, compiled=True)
    assert compiled == compile_module.build(r, compiled=False)
    assert len(compiled.code) > 100


@pytest.mark.parametrize("compiled", [True, False])
def test_rule_loop_twins_raise_the_same_errors(compiled: bool) -> None:
    from kservice.netfilter.ruleset import DNAT, IPMatch, Jump

    def table(*rules: Rule) -> Ruleset:
        chains = (Chain("PREROUTING", rules, hook="prerouting"),)
        return Ruleset("iptables", tables=(Table("ip", "nat", "iptables", chains=chains),))

    cases = [
        (table(Rule((), Jump("NOWHERE"))), "chain PREROUTING rule 0: jump to chain 'NOWHERE'"),
        (
            table(Rule((), None), Rule((IPMatch("daddr", ("10.0.0.300",)),), None)),
            "chain PREROUTING rule 1: '10.0.0.300' is not an address or CIDR",
        ),
        (table(Rule((), DNAT("10.0.0.x", 80))), "rule 0: '10.0.0.x' is not an IP address"),
    ]
    for r, message in cases:
        with pytest.raises(EngineError, match=re.escape(message)):
            compile_module.build(r, compiled=compiled)


@pytest.mark.parametrize(
    "text",
    [
        "10.1.2.3",
        "0.0.0.0/0",
        "255.255.255.255/32",
        "10.1.2.3/",
        "10.1.2.3/032",
        "10.1.2.0/24",
        "10.1.2.3/33",
        "10.1.2.3/2/4",
        "010.1.2.3",
        "10.1.2.256",
        "10.1.2",
        "10.1.2.3.",
        "10..2.3",
        "1.2.3.\u0664",
        "1.2.3.4/\u0664",
        "\udcff.1.2.3",
        "fd00::1",
    ],
)
def test_rule_loop_twins_parse_addresses_alike(text: str) -> None:
    """The compiled loop's own dotted-quad parser takes exactly what inet_pton
    takes and leaves the rest to the pure parsers: same Program or same error."""
    if compile_module._compiled_emitter() is None:
        pytest.skip("the compiled rule loop is off (not built, or KSERVICE_NO_EXTENSIONS set)")
    from kservice.netfilter.ruleset import DNAT, IPMatch

    chains = (
        Chain(
            "PREROUTING",
            (
                Rule((IPMatch("saddr", (text,)),), None),
                Rule((), DNAT(text.partition("/")[0], 80)),
            ),
            hook="prerouting",
        ),
    )
    r = Ruleset("iptables", tables=(Table("ip", "nat", "iptables", chains=chains),))
    outcomes = []
    for compiled in (True, False):
        try:
            outcomes.append(compile_module.build(r, compiled=compiled))
        except EngineError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


def test_implementation_is_reported(impl: str) -> None:
    e = Engine(web("nftables"), seed=1, implementation=impl)
    assert e.implementation == impl
    with pytest.raises(EngineError, match="not 'python' or 'cython'"):
        Engine(web("nftables"), implementation="rust")


# ------------------------------------------------------------------------ decisions
@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_cluster_ip_reaches_each_endpoint(impl: str, mode: str) -> None:
    e = Engine(web(mode), seed=3, implementation=impl)
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD)
    dist = e.distribution(pkt)
    assert {v.endpoint for v in dist} == {f"{ip}:8080" for ip in EPS3}
    assert all(v.kind == "dnat" and not v.masquerade for v in dist)
    assert sum(dist.values()) == pytest.approx(1.0)
    assert e.lookup(pkt) in dist


def test_iptables_probabilities_give_each_endpoint_a_third(impl: str) -> None:
    """kube-proxy writes 0.3333333333, 0.5000000000 and nothing: a third each
    (up to the kernel's 2^-31 rounding of the printed probability)."""
    e = Engine(web("iptables"), seed=3, implementation=impl)
    exact = e.exact_distribution(Packet(dst="10.96.0.50", dport=80, src=POD))
    assert sum(exact.values()) == 1
    first = Fraction(round(0.3333333333 * 2**31), 2**31)
    by_ep = {v.address: p for v, p in exact.items()}
    assert by_ep["10.244.1.5"] == first
    assert by_ep["10.244.2.6"] == (1 - first) / 2
    for p in by_ep.values():
        assert abs(p - Fraction(1, 3)) < Fraction(1, 10**9)


def test_numgen_probabilities_are_the_kernels() -> None:
    """(u32 * 3) >> 32 gives value 0 one more draw than 1 and 2."""
    assert [numgen_probability(k, 3) * 2**32 for k in range(3)] == [
        1431655766,
        1431655765,
        1431655765,
    ]


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_sampled_frequencies_match_the_distribution(impl: str, mode: str) -> None:
    e = Engine(web(mode), seed=2024, implementation=impl)
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD)
    dist = e.distribution(pkt)
    counts = e.sample(pkt, 3000)
    outcomes = list(dist)
    p = chi_square_p([counts[v] for v in outcomes], [dist[v] for v in outcomes])
    assert p > 0.001, (counts, dist)


def test_twins_draw_the_same_numbers() -> None:
    pytest.importorskip("kservice._fastpath")
    r = web("nftables")
    a = Engine(r, seed=99, implementation="cython")
    b = Engine(r, seed=99, implementation="python")
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD)
    assert [a.lookup(pkt) for _ in range(200)] == [b.lookup(pkt) for _ in range(200)]
    assert a._machine.get_rng_state() == b._machine.get_rng_state()


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_no_endpoints_is_rejected(impl: str, mode: str) -> None:
    r = ruleset(service("empty", [], cluster_ip="10.96.0.60"), mode)
    e = Engine(r, seed=1, implementation=impl)
    v = e.lookup(Packet(dst="10.96.0.60", dport=80, src=POD))
    assert v == Verdict("reject")
    assert str(v) == "REJECT"


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_hairpin_is_masqueraded(impl: str, mode: str) -> None:
    r = ruleset(service("one", ["10.244.1.5"], cluster_ip="10.96.0.70"), mode)
    e = Engine(r, seed=1, implementation=impl)
    hairpin = e.lookup(Packet(dst="10.96.0.70", dport=80, src="10.244.1.5"))
    assert hairpin == Verdict("dnat", "10.244.1.5", 8080, True)
    other = e.lookup(Packet(dst="10.96.0.70", dport=80, src=POD))
    assert other == Verdict("dnat", "10.244.1.5", 8080, False)


def _node_addresses(r: Ruleset, *addresses: str, described: bool = True) -> Ruleset:
    """``r`` with eth0's addresses replaced, or with no eth0 at all."""
    import attrs

    from kservice.netfilter.ruleset import Interface

    ifaces = tuple(
        Interface(i.name, addresses) if i.name == "eth0" else i
        for i in r.interfaces
        if described or i.name != "eth0"
    )
    return attrs.evolve(r, interfaces=ifaces)


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_masquerade_without_an_ipv4_node_address_drops(impl: str, mode: str) -> None:
    """The kernel's MASQUERADE takes a global address of any interface;
    with none in the family (a dual-stack node whose only address is IPv6)
    it drops the packet. In IPVS mode kube-ipvs0's VIPs are such addresses."""
    local = {"10.244.1.5"}  # on this node, as IPVS mode's KUBE-LOOP-BACK needs
    r = ruleset(service("one", ["10.244.1.5"], cluster_ip="10.96.0.70", local=local), mode)
    hairpin = Packet(dst="10.96.0.70", dport=80, src="10.244.1.5", sport=40000)
    masqueraded = Verdict("dnat", "10.244.1.5", 8080, True)
    e = Engine(_node_addresses(r, "fd00:1::1"), seed=1, implementation=impl)
    if mode == "ipvs":
        assert e.lookup(hairpin) == masqueraded
        return
    t = e.trace(hairpin)
    assert t.verdict == Verdict("drop")
    assert t.steps[-1].event == "nat"
    assert "no IPv4 address to masquerade to" in t.steps[-1].text
    assert "masquerade" in t.matched[-1].text.lower()
    assert e.lookup(hairpin) == Verdict("drop")  # connection tracking kept nothing
    batch = e.lookup_batch(["10.96.0.70"] * 3, [80] * 3, src="10.244.1.5")
    assert batch.verdicts() == [Verdict("drop")] * 3
    other = e.lookup(Packet(dst="10.96.0.70", dport=80, src=POD))
    assert other == Verdict("dnat", "10.244.1.5", 8080, False)  # no masquerade, no drop
    # an eth0 with no address is a node with none in this family; no eth0
    # at all (a dump read without node IPs) says nothing about the node
    bare = Engine(_node_addresses(r), seed=1, implementation=impl)
    assert bare.lookup(hairpin) == Verdict("drop")
    unknown = Engine(_node_addresses(r, described=False), seed=1, implementation=impl)
    assert unknown.lookup(hairpin) == masqueraded


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_node_port_from_outside_is_masqueraded(impl: str, mode: str) -> None:
    spec = {"type": "NodePort"}
    objs = service("np", ["10.244.2.6"], cluster_ip="10.96.0.80", **spec)
    objs[0]["spec"]["ports"][0]["nodePort"] = 30080
    e = Engine(ruleset(objs, mode), seed=1, implementation=impl)
    v = e.lookup(Packet(dst=NODE_IP, dport=30080, src="203.0.113.5", origin="external"))
    assert v == Verdict("dnat", "10.244.2.6", 8080, True)
    closed = e.lookup(Packet(dst=NODE_IP, dport=30081, src="203.0.113.5", origin="external"))
    assert closed.kind == "accept"  # not a Service port: left to the node


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_external_traffic_policy_local_keeps_local_endpoints(impl: str, mode: str) -> None:
    objs = service(
        "lb",
        ["10.244.1.5", "10.244.2.6"],
        cluster_ip="10.96.0.90",
        local={"10.244.1.5"},
        type="LoadBalancer",
        externalTrafficPolicy="Local",
    )
    objs[0]["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.10"}]}}
    e = Engine(ruleset(objs, mode), seed=1, implementation=impl)
    external = e.distribution(Packet(dst="198.51.100.10", dport=80, src="203.0.113.5"))
    assert list(external) == [Verdict("dnat", "10.244.1.5", 8080, False)]
    cluster_ip = e.distribution(Packet(dst="10.96.0.90", dport=80, src=POD))
    assert len(cluster_ip) == 2


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_load_balancer_source_ranges(impl: str, mode: str) -> None:
    objs = service(
        "fw",
        ["10.244.2.6"],
        cluster_ip="10.96.0.91",
        type="LoadBalancer",
        loadBalancerSourceRanges=["203.0.113.0/24"],
    )
    objs[0]["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.11"}]}}
    e = Engine(ruleset(objs, mode), seed=1, implementation=impl)
    allowed = e.lookup(Packet(dst="198.51.100.11", dport=80, src="203.0.113.5"))
    denied = e.lookup(Packet(dst="198.51.100.11", dport=80, src="192.0.2.5"))
    assert allowed.kind == "dnat" and allowed.address == "10.244.2.6"
    assert denied == Verdict("drop")


# ------------------------------------------------------------------------ state
@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_session_affinity_holds_within_the_timeout_and_expires(impl: str, mode: str) -> None:
    clock = Clock()
    r = web(
        mode, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}}
    )
    e = Engine(r, seed=5, clock=clock, implementation=impl)
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD)
    first = e.lookup(pkt)
    for _ in range(30):
        clock.now += 1
        assert e.lookup(pkt) == first
    # the same client is pinned: the exact distribution says so too
    assert e.distribution(pkt) == {first: 1.0}
    clock.now += 31
    assert len(e.distribution(pkt)) == 3
    seen = set()
    for _ in range(60):
        clock.now += 31  # let every entry expire before the next connection
        seen.add(e.lookup(pkt))
    assert len(seen) == 3
    trace = e.trace(pkt)
    assert trace.verdict in seen


def test_affinity_is_reported_in_the_trace(impl: str) -> None:
    clock = Clock()
    r = web("nftables", sessionAffinity="ClientIP")
    e = Engine(r, seed=5, clock=clock, implementation=impl)
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD)
    assert e.trace(pkt).affinity == ()
    again = e.trace(pkt)
    assert len(again.affinity) == 1 and again.affinity[0].startswith("affinity-")


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_tracked_connections_keep_their_nat(impl: str, mode: str) -> None:
    e = Engine(web(mode), seed=11, implementation=impl)
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD, sport=40000)
    first = e.lookup(pkt)
    assert all(e.lookup(pkt) == first for _ in range(50))
    trace = e.trace(pkt)
    assert any(s.event == "conntrack" for s in trace.steps)
    # established packets skip the nat chains
    assert not any(
        s.event == "hook" and s.chain in ("nat-prerouting", "PREROUTING") for s in trace.steps
    )
    e.flush_conntrack()
    others = {e.lookup(pkt) for _ in range(60) if not e.flush_conntrack()}
    assert len(others) == 3


def test_ipvs_round_robin_and_weights(impl: str) -> None:
    e = Engine(web("ipvs"), seed=1, implementation=impl)
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD)
    picks = [e.lookup(pkt).address for _ in range(6)]
    assert picks[:3] == EPS3 and picks[3:] == EPS3


# ------------------------------------------------------------------------ traces
def test_trace_lists_every_rule_and_counts_them(impl: str) -> None:
    e = Engine(web("nftables"), seed=1, implementation=impl)
    t = e.trace(Packet(dst="10.96.0.50", dport=80, src=POD))
    rules = [s for s in t.steps if s.event == "rule"]
    assert t.rules_evaluated == len(rules)
    assert rules[0].text == "ct state new jump firewall-check"
    assert any("numgen random mod 3 vmap" in s.text for s in t.matched)
    assert any(s.event == "route" and "FORWARD" in s.text for s in t.steps)
    json.dumps(t.to_dict())
    ipt = Engine(web("iptables"), seed=1, implementation=impl).trace(
        Packet(dst="10.96.0.50", dport=80, src=POD)
    )
    assert ipt.rules_evaluated > t.rules_evaluated or ipt.rules_evaluated > 0
    assert ipt.matched[0].text.startswith("-A PREROUTING ")


# ------------------------------------------------------------------------ batches
@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
def test_lookup_batch_equals_lookups(impl: str, family: str) -> None:
    if family == "IPv4":
        objs = service("web", EPS3, cluster_ip="10.96.0.50")
        dsts, src = ["10.96.0.50", "10.96.0.51", "10.96.0.50"], POD
    else:
        objs = service("web", ["fd00:244::5", "fd00:244::6"], cluster_ip="fd00:96::50")
        dsts, src = ["fd00:96::50", "fd00:96::51", "fd00:96::50"], "fd00:244::9"
    r = ruleset(objs, "nftables", family)
    a = Engine(r, seed=8, implementation=impl)
    b = Engine(r, seed=8, implementation=impl)
    dports = array("H", [80, 80, 81])
    batch = a.lookup_batch(dsts, dports, src=src)
    single = [b.lookup(Packet(dst=d, dport=p, src=src)) for d, p in zip(dsts, dports, strict=True)]
    assert batch.verdicts() == single
    assert len(batch) == 3 and batch.rules[0] > 0


def test_lookup_batch_reads_buffers_in_place(impl: str) -> None:
    e = Engine(web("nftables"), seed=8, implementation=impl)
    n = 1000
    dst = array("I", [0x0A600032] * n)  # 10.96.0.50
    res = e.lookup_batch(dst, array("H", [80] * n), src=array("I", [0x0AF40109] * n))
    assert set(res.kind) == {1} and set(res.port) == {8080}
    assert {res.verdict(i).address for i in range(n)} == set(EPS3)


@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
def test_lookup_batch_out_reuses_the_arrays(impl: str, family: str) -> None:
    if family == "IPv4":
        r, dsts, src = web("nftables"), ["10.96.0.50", "10.96.0.51"] * 50, POD
    else:
        objs = service("web", ["fd00:244::5", "fd00:244::6"], cluster_ip="fd00:96::50")
        r, dsts, src = ruleset(objs, "nftables", family), ["fd00:96::50"] * 100, "fd00:244::9"
    a = Engine(r, seed=3, implementation=impl)
    b = Engine(r, seed=3, implementation=impl)
    dports = array("H", [80]) * 100
    out = a.lookup_batch(dsts, dports, src=src)
    fresh = b.lookup_batch(dsts, dports, src=src)
    assert out == fresh
    arrays = [out.kind, out.address, out.port, out.masquerade, out.rules]
    again = a.lookup_batch(dsts, dports, src=src, out=out)
    assert again is out and [again.kind, again.address, again.port] == arrays[:3]
    assert again == b.lookup_batch(dsts, dports, src=src)  # overwritten, not appended to


def test_lookup_batch_out_is_checked(impl: str) -> None:
    e = Engine(web("nftables"), seed=8, implementation=impl)
    out = e.lookup_batch(["10.96.0.50"] * 3, [80] * 3, src=POD)
    with pytest.raises(EngineError, match=r"out: kind must be array\('B'\) of 2 items for 2"):
        e.lookup_batch(["10.96.0.50"] * 2, [80] * 2, src=POD, out=out)
    with pytest.raises(EngineError, match="out: a BatchResult of an earlier batch, not list"):
        e.lookup_batch(["10.96.0.50"], [80], src=POD, out=[])  # type: ignore[arg-type]
    six = ruleset(service("web", ["fd00:244::5"], cluster_ip="fd00:96::50"), "nftables", "IPv6")
    with pytest.raises(EngineError, match="out: holds IPv4 results, the ruleset is IPv6"):
        Engine(six, implementation=impl).lookup_batch(
            ["fd00:96::50"] * 3, [80] * 3, src="fd00:244::9", out=out
        )
    before = list(out.kind)
    out.rules.append(0)
    with pytest.raises(EngineError, match="out: rules must be array"):
        e.lookup_batch(["10.96.0.50"] * 3, [80] * 3, src=POD, out=out)
    assert list(out.kind) == before  # checked before anything is written


def test_lookup_batch_checks_its_input(impl: str) -> None:
    e = Engine(web("nftables"), seed=8, implementation=impl)
    with pytest.raises(EngineError, match="2 items for 1 packets"):
        e.lookup_batch(["10.96.0.50"], [80, 81], src=POD)
    with pytest.raises(EngineError, match="src: required"):
        e.lookup_batch(["10.96.0.50"], [80])
    with pytest.raises(EngineError, match="proto"):
        e.lookup_batch(["10.96.0.50"], [80], src=POD, proto="icmp")
    with pytest.raises(EngineError, match="dport"):
        e.lookup_batch(["10.96.0.50"], [70000], src=POD)
    with pytest.raises(EngineError, match="not an IPv4 address"):
        e.lookup_batch(["fd00::1"], [80], src=POD)


# ------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dst": "10.0.0.300", "dport": 80, "src": POD}, "dst: '10.0.0.300' is not an IP"),
        ({"dst": "10.0.0.1", "dport": 0, "src": POD}, "dport: 0 must be between 1 and 65535"),
        ({"dst": "10.0.0.1", "dport": 80, "src": POD, "proto": "icmp"}, "not one of tcp"),
        ({"dst": "10.0.0.1", "dport": 80, "src": POD, "origin": "mars"}, "origin"),
        ({"dst": "10.0.0.1", "dport": 80}, "src: required for a packet from 'pod'"),
        ({"dst": "10.0.0.1", "dport": 80, "src": "fd00::1"}, "different IP families"),
    ],
)
def test_bad_packets_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        Packet(**kwargs)  # type: ignore[arg-type]


def test_family_mismatch(impl: str) -> None:
    e = Engine(web("nftables"), implementation=impl)
    with pytest.raises(EngineError, match="IPv6 packet for an IPv4 ruleset"):
        e.lookup(Packet(dst="fd00::1", dport=80, src="fd00::2"))


def test_unknown_matches_are_refused_with_their_place() -> None:
    table = Table(
        "ip",
        "filter",
        "iptables",
        chains=(Chain("INPUT", (Rule((RawMatch("-m quota --quota 5"),), None),), hook="input"),),
    )
    with pytest.raises(EngineError) as info:
        Engine(Ruleset("iptables", tables=(table,)))
    assert "table ip filter chain INPUT rule 0" in str(info.value)
    assert "-m quota --quota 5" in str(info.value)


def test_jump_loops_are_caught(impl: str) -> None:
    from kservice.netfilter.ruleset import Jump

    table = Table(
        "ip",
        "nat",
        "iptables",
        chains=(
            Chain("PREROUTING", (Rule((), Jump("A")),), hook="prerouting"),
            Chain("A", (Rule((), Jump("A")),)),
        ),
    )
    e = Engine(Ruleset("iptables", tables=(table,)), implementation=impl)
    with pytest.raises(EngineError, match="loop"):
        e.lookup(Packet(dst="10.0.0.1", dport=80, src=POD))


# ------------------------------------------------------------------------ flow cache
@pytest.mark.parametrize("affinity", [False, True])
@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_flow_cache_changes_nothing(mode: str, affinity: bool) -> None:
    """Cached paths draw the same numbers and give the same verdicts as the rules."""
    pytest.importorskip("kservice._fastpath")
    extra = {"sessionAffinity": "ClientIP"} if affinity else {}
    objs = [
        *service("web", EPS3, cluster_ip="10.96.0.50", **extra),  # type: ignore[arg-type]
        *service("one", ["10.244.2.8"], cluster_ip="10.96.0.51"),
        *service("none", [], cluster_ip="10.96.0.52"),
    ]
    r = ruleset(objs, mode)
    clock = Clock()
    engines = [
        Engine(r, seed=77, clock=clock, implementation="cython"),
        Engine(r, seed=77, clock=clock, implementation="cython", flow_cache=False),
        Engine(r, seed=77, clock=clock, implementation="python"),
    ]
    packets = [
        Packet(dst=d, dport=p, src=s)
        for d in ("10.96.0.50", "10.96.0.51", "10.96.0.52")
        for p in (80, 81)
        for s in (POD, "10.244.2.8")
    ]
    seq = [packets[(i * 7) % len(packets)] for i in range(600)]
    results = []
    for e in engines:
        out = []
        for i, p in enumerate(seq):
            clock.now = 1000.0 + i
            out.append(e.lookup(p))
        results.append(out)
    assert results[0] == results[1] == results[2]
    states = {e._machine.get_rng_state() for e in engines}
    assert len(states) == 1
    flows, nodes, size = engines[0]._machine.flow_cache_info()
    assert flows == len(packets) and nodes > 0 and size > 0
    dst = [p.dst for p in seq]
    dport = array("H", [p.dport for p in seq])
    batches = [e.lookup_batch(dst, dport, src=POD) for e in engines]
    assert batches[0] == batches[1] == batches[2]


def test_flow_cache_grows_into_huge_page_tables() -> None:
    """40,000 flows: the flow slots and tree nodes outgrow 2 MiB, where the
    compiled twin maps its tables itself (huge pages), and are regrown and
    freed several times; the verdicts and PRNG stay the pure twin's."""
    pytest.importorskip("kservice._fastpath")
    r = ruleset(service("web", EPS3, cluster_ip="10.96.0.50"), "nftables")
    engines = [Engine(r, seed=5, implementation=impl) for impl in ("cython", "python")]
    n = 40_000
    src = array("I", (0x0AF40000 + i for i in range(n)))  # 10.244.0.0 upwards: one flow each
    dst = array("I", [0x0A600032]) * n  # 10.96.0.50
    dport = array("H", [80]) * n
    first = [e.lookup_batch(dst, dport, src=src) for e in engines]
    assert first[0] == first[1]
    assert set(first[0].kind) == {1}
    flows, nodes, size = engines[0]._machine.flow_cache_info()
    assert flows == n and nodes > n and size >= 2 << 20
    again = [e.lookup_batch(dst, dport, src=src) for e in engines]  # every packet a cache hit
    assert again[0] == again[1]
    assert len({e._machine.get_rng_state() for e in engines}) == 1
    engines[0]._machine.clear_flow_cache()
    assert engines[0]._machine.flow_cache_info()[0] == 0


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_leaves_kept_in_ipv4_slots_are_the_trees(mode: str) -> None:
    """A batch packet one draw deep reads the copies of the root's first
    eleven leaves kept in its IPv4 flow slot: Services of 11 and 12
    endpoints (the twelfth leaf is read from the tree), hairpin sources
    (masqueraded leaves), no endpoints (no draw), and in iptables mode
    leaves past 255 rules (not kept) give the pure twin's results."""
    pytest.importorskip("kservice._fastpath")
    eps = [f"10.244.{i // 200 + 1}.{i % 200 + 10}" for i in range(12)]
    objs = [
        *service("eleven", eps[:11], cluster_ip="10.96.0.11"),
        *service("twelve", eps, cluster_ip="10.96.0.12"),
        *service("none", [], cluster_ip="10.96.0.13"),
    ]
    fillers = 300 if mode == "iptables" else 0
    for i in range(fillers):
        ip = f"10.96.{i // 200 + 1}.{i % 200 + 1}"
        objs += service(f"filler-{i:03}", ["10.244.9.9"], cluster_ip=ip)
    objs += service("zlast", eps[:3], cluster_ip="10.96.0.14")
    r = ruleset(objs, mode)
    engines = [Engine(r, seed=11, implementation=impl) for impl in ("cython", "python")]
    flows = [
        (d, s)
        for d in ("10.96.0.11", "10.96.0.12", "10.96.0.13", "10.96.0.14")
        for s in (POD, eps[0], eps[11])
    ]
    seq = [flows[(i * 5) % len(flows)] for i in range(3000)]
    dst = array("I", (int(ipaddress.ip_address(d)) for d, _ in seq))
    src = array("I", (int(ipaddress.ip_address(s)) for _, s in seq))
    dport = array("H", [80]) * len(seq)
    for _ in range(3):  # the first batch fills the cache, the others hit it
        batches = [e.lookup_batch(dst, dport, src=src) for e in engines]
        assert batches[0] == batches[1]
        assert len({e._machine.get_rng_state() for e in engines}) == 1
    got = batches[0]
    reached = {a for a, k in zip(got.address, got.kind, strict=True) if k == 1}
    assert {str(ipaddress.ip_address(a)) for a in reached} == set(eps)
    assert set(got.kind) == {1, 2}  # DNAT, and REJECT for "none"
    assert set(got.masquerade) == {0, 1}
    if mode == "iptables":
        assert max(got.rules) > 255
