"""Properties over Hypothesis-generated clusters and packets.

* The twins agree: same traces, verdicts, distributions and PRNG state for the
  same seed, on every mode's ruleset (yarl's test_quoting_hypothesis habit).
* The modes agree on where a new connection from a pod can go (the support of
  ``distribution``) and on masquerading, for ClusterIP, NodePort, external and
  load-balancer destinations, where kube-proxy's semantics agree (iptables and
  nftables). IPVS is compared on ClusterIP traffic from pods, where only its
  scheduling differs (rr instead of random; the support is the same).
* Where the modes differ by design, the difference is pinned: a ClusterIP on a
  port it does not serve is rejected in nftables and IPVS mode and passed on
  (to be routed nowhere) in iptables mode; with internalTrafficPolicy Local
  and no local endpoint, IPVS mode falls back to every endpoint (upstream
  PR 97081) where the others drop.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import GeneratedCluster, clusters
from util import Clock

from kservice.api.service import Service
from kservice.engine import Engine, Packet
from kservice.netfilter.ruleset import Ruleset
from kservice.proxy import ProxyConfig, ipvs, nftables
from kservice.proxy import iptables as ipt
from kservice.proxy.nodeview import NodeView

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOURCES = {
    "IPv4": ("10.244.1.7", "10.244.2.9", "203.0.113.7", "192.168.0.1"),
    "IPv6": ("fd00:244:0:1::7", "fd00:244:0:2::9", "2001:db8::7", "fd00:1::1"),
}


def compile_mode(generated: GeneratedCluster, mode: str, family: str) -> Ruleset:
    options = dict(generated.proxy_options)
    if mode == "ipvs":
        options.pop("localhost_nodeports", None)
    config = ProxyConfig(
        mode=mode, ip_family=family, cluster_cidrs=generated.cluster_cidrs, **options
    )
    view = NodeView.from_cluster(generated.cluster, generated.node_names[0], config)
    if mode == "iptables":
        return ipt.compile(view)
    if mode == "nftables":
        return nftables.compile(view, service_cidrs=generated.cluster.config.service_cidrs)
    return ipvs.compile(view)


def destinations(generated: GeneratedCluster, family: str) -> list[tuple[str, int, str, str]]:
    """(address, port, protocol, kind) of every Service port, plus near misses."""
    out = []
    node_ips = [
        a
        for n in generated.cluster.nodes
        if n.name == generated.node_names[0]
        for a in n.internal_ips
        if (":" in a) == (family == "IPv6")
    ]
    for svc in generated.cluster.list("Service"):
        assert isinstance(svc, Service)
        cluster_kind = "cluster-local" if svc.internal_traffic_policy == "Local" else "cluster"
        for port in svc.ports:
            proto = port.protocol.lower()
            for ip in svc.cluster_ips:
                if ip != "None" and (":" in ip) == (family == "IPv6"):
                    out.append((ip, port.port, proto, cluster_kind))
                    out.append((ip, port.port % 65535 + 1, proto, "cluster-miss"))
            for ip in [*svc.external_ips, *(i.ip for i in svc.load_balancer_ingress if i.ip)]:
                if (":" in ip) == (family == "IPv6"):
                    out.append((ip, port.port, proto, "external"))
            if port.node_port:
                for ip in node_ips:
                    out.append((ip, port.node_port, proto, "nodeport"))
    return out


def support(engine: Engine, packet: Packet) -> tuple[frozenset[Any], bool]:
    dist = engine.distribution(packet)
    return frozenset((v.kind, v.address, v.port) for v in dist), any(v.masquerade for v in dist)


def stopped(outcomes: frozenset[Any]) -> frozenset[Any]:
    """DROP and REJECT as one: where the modes stop a packet they may differ in
    how (an LB with source ranges and no endpoints: nftables' firewall drops,
    iptables mode writes no firewall then and rejects, as upstream does)."""
    return frozenset(("stopped", None, None) if o[0] in ("drop", "reject") else o for o in outcomes)


@SETTINGS
@given(generated=clusters(), data=st.data())
def test_twins_agree(generated: GeneratedCluster, data: st.DataObject) -> None:
    pytest.importorskip("kservice._fastpath")
    for family in generated.families:
        for mode in ("iptables", "nftables", "ipvs"):
            ruleset = compile_mode(generated, mode, family)
            seed = data.draw(st.integers(0, 2**64 - 1), label="seed")
            clock = Clock()
            a = Engine(ruleset, seed=seed, clock=clock, implementation="cython")
            b = Engine(ruleset, seed=seed, clock=clock, implementation="python")
            # the compiled rule loop (engine/_rules.pyx) builds the pure one's Program
            assert a.program == b.program
            dsts = destinations(generated, family) or [
                ("10.96.0.1" if family == "IPv4" else "fd00:96::1", 80, "tcp", "none")
            ]
            for _ in range(data.draw(st.integers(1, 12), label="packets")):
                dst, port, proto, _kind = data.draw(st.sampled_from(dsts), label="dst")
                packet = Packet(
                    dst=dst,
                    dport=port,
                    proto=proto,
                    src=data.draw(st.sampled_from(SOURCES[family]), label="src"),
                    origin=data.draw(st.sampled_from(("pod", "external")), label="origin"),
                    sport=data.draw(st.sampled_from((None, 33000, 33001)), label="sport"),
                )
                clock.now += data.draw(st.sampled_from((0.0, 1.0, 20000.0)), label="dt")
                assert a.trace(packet) == b.trace(packet)
                assert a.distribution(packet) == b.distribution(packet)
                # lookups go through the compiled twin's flow cache
                assert [a.lookup(packet) for _ in range(3)] == [b.lookup(packet) for _ in range(3)]
            assert a._machine.get_rng_state() == b._machine.get_rng_state()


def _undescribed(ruleset: Ruleset) -> Ruleset:
    """``ruleset`` without an address-less eth0. A node with no address in
    the family has nothing for MASQUERADE to take: iptables and nftables mode
    drop masqueraded packets, IPVS mode masquerades to a kube-ipvs0 address
    (test_engine checks both); the modes' routing is compared without it."""
    ifaces = tuple(i for i in ruleset.interfaces if i.name != "eth0" or i.addresses)
    return attrs.evolve(ruleset, interfaces=ifaces)


@SETTINGS
@given(generated=clusters())
def test_modes_agree_on_where_packets_can_go(generated: GeneratedCluster) -> None:
    for family in generated.families:
        engines = {
            mode: Engine(_undescribed(compile_mode(generated, mode, family)), seed=1)
            for mode in ("iptables", "nftables", "ipvs")
        }
        src = SOURCES[family][0]  # a pod on this node, not an endpoint
        for dst, port, proto, kind in destinations(generated, family):
            if kind == "nodeport":
                packet = Packet(dst=dst, dport=port, proto=proto, src=SOURCES[family][2])
            else:
                packet = Packet(dst=dst, dport=port, proto=proto, src=src)
            got = {mode: support(e, packet) for mode, e in engines.items()}
            served = {d[:3] for d in destinations(generated, family) if d[3] != "cluster-miss"}
            if kind == "cluster-miss" and (dst, port, proto) in served:
                continue  # another port of the Service: checked as itself
            if kind == "cluster-miss":
                # A ClusterIP on a port it does not serve: nftables and IPVS mode
                # reject it (cluster-ips-check, KUBE-IPVS-FILTER); iptables mode
                # has no rule for it and lets it through, to be routed nowhere.
                assert got["iptables"][0] == {("accept", None, None)}
                assert got["nftables"][0] == {("reject", None, None)}
                assert got["ipvs"][0] == {("reject", None, None)}
                continue
            assert stopped(got["iptables"][0]) == stopped(got["nftables"][0]), (dst, port, kind)
            assert got["iptables"][1] == got["nftables"][1], (dst, port, proto, kind)
            if kind.startswith("cluster"):
                dnat = {x for x in got["iptables"][0] if x[0] == "dnat"}
                ipvs_dnat = {x for x in got["ipvs"][0] if x[0] == "dnat"}
                if kind == "cluster-local" and not dnat:
                    # internalTrafficPolicy Local without a local endpoint: iptables
                    # and nftables drop, IPVS falls back to the cluster's (PR 97081).
                    assert got["iptables"][0] <= {("drop", None, None), ("reject", None, None)}
                else:
                    assert ipvs_dnat == dnat, (dst, port, proto)
