"""Engine.follow: the engine takes the path an observed outcome says was taken."""

from __future__ import annotations

import pytest
from util import Clock, ruleset, service

from kservice.engine import Engine, Packet, Verdict

EPS3 = ["10.244.1.5", "10.244.2.6", "10.244.2.7"]
POD = "10.244.1.9"


def sticky(mode: str) -> Engine:
    r = ruleset(
        service(
            "web",
            EPS3,
            cluster_ip="10.96.0.50",
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}},
        ),
        mode,
    )
    return Engine(r, seed=3, clock=Clock())


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
@pytest.mark.parametrize("target", EPS3)
def test_follow_pins_affinity_to_the_observed_endpoint(mode: str, target: str) -> None:
    e = sticky(mode)
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD)
    wanted = next(v for v in e.distribution(pkt) if v.address == target)
    assert e.follow(pkt, wanted)
    # affinity now holds the client there, as the kernel's would
    assert e.distribution(pkt) == {wanted: 1.0}
    assert e.lookup(pkt) == wanted


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_follow_refuses_what_the_rules_cannot_do_and_changes_nothing(mode: str) -> None:
    e = sticky(mode)
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD)
    before = e.distribution(pkt)
    assert not e.follow(pkt, Verdict("dnat", "10.244.9.9", 8080))
    assert not e.follow(pkt, Verdict("reject"))
    assert e.distribution(pkt) == before
    first = e.lookup(pkt)
    other = next(v for v in before if v != first)
    # pinned to ``first``: another endpoint is impossible now
    assert not e.follow(pkt, other)
    assert e.distribution(pkt) == {first: 1.0}


def test_follow_restores_tracked_connections_of_missed_draws() -> None:
    e = sticky("nftables")
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD, sport=40000)
    target = sorted(e.distribution(pkt), key=str)[-1]
    assert e.follow(pkt, target)
    # exactly one tracked connection: the one that went to ``target``
    assert len(e.state.conntrack) == 1
    assert e.lookup(pkt) == target


def test_follow_works_on_both_twins(impl: str) -> None:
    r = ruleset(
        service("web", EPS3, cluster_ip="10.96.0.50", sessionAffinity="ClientIP"), "nftables"
    )
    e = Engine(r, seed=9, clock=Clock(), implementation=impl)
    pkt = Packet(dst="10.96.0.50", dport=80, src=POD)
    for target in sorted(e.distribution(pkt), key=str):
        fresh = Engine(r, seed=9, clock=Clock(), implementation=impl)
        assert fresh.follow(pkt, target)
        assert fresh.distribution(pkt) == {target: 1.0}
