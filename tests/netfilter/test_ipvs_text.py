"""``ipvsadm-save -n`` and ``ipset save`` text (kservice.netfilter.ipvs_text).

Exact renderings, parser errors, ``parse(render(x)) == x`` for generated and
compiled rulesets and, marked ``kernel``, loading the compiled ipsets and
iptables rules into a private network namespace (``ipvsadm`` itself needs the
``ip_vs`` module, which is checked for and skipped with its reason).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kservice.kernel.netns import kernel_unavailable
from kservice.netfilter.iptables_text import render_restore, render_save
from kservice.netfilter.ipvs_text import (
    IPVSTextError,
    parse_ipset_save,
    parse_ipvsadm_save,
    render_ipset_save,
    render_ipvsadm_save,
)
from kservice.netfilter.ruleset import IPSet, RawMatch, RealServer, Ruleset, VirtualServer
from kservice.proxy import NodeView, ProxyConfig, ServicePortName
from kservice.proxy.ipvs import IPSET_INFO, compile
from kservice.proxy.nodeview import EndpointInfo, NodeInfo, ServicePortInfo


def rs(*vs: VirtualServer) -> Ruleset:
    return Ruleset(mode="ipvs", virtual_servers=vs)


# ------------------------------------------------------------------------- ipvsadm
def test_render_ipvsadm_save() -> None:
    r = rs(
        VirtualServer(
            "10.96.0.1",
            "tcp",
            443,
            "rr",
            None,
            (RealServer("192.168.1.10", 6443), RealServer("192.168.1.11", 6443, 2)),
        ),
        VirtualServer("10.96.0.10", "udp", 53, "wrr", 10800, (RealServer("10.244.0.5", 53),)),
        VirtualServer("fd00::a", "sctp", 9, "sh", None, (RealServer("fd00::5", 90, 1, "route"),)),
        VirtualServer(
            "10.96.0.11", "tcp", 80, "rr", None, (RealServer("10.0.0.1", 80, 0, "tunnel"),)
        ),
    )
    assert render_ipvsadm_save(r) == (
        "-A -t 10.96.0.1:443 -s rr\n"
        "-a -t 10.96.0.1:443 -r 192.168.1.10:6443 -m -w 1\n"
        "-a -t 10.96.0.1:443 -r 192.168.1.11:6443 -m -w 2\n"
        "-A -u 10.96.0.10:53 -s wrr -p 10800\n"
        "-a -u 10.96.0.10:53 -r 10.244.0.5:53 -m -w 1\n"
        "-A --sctp-service [fd00::a]:9 -s sh\n"
        "-a --sctp-service [fd00::a]:9 -r [fd00::5]:90 -g -w 1\n"
        "-A -t 10.96.0.11:80 -s rr\n"
        "-a -t 10.96.0.11:80 -r 10.0.0.1:80 -i -w 0\n"
    )
    assert parse_ipvsadm_save(render_ipvsadm_save(r)) == r.virtual_servers
    assert render_ipvsadm_save(rs()) == ""


def test_parse_ipvsadm_save_long_options_and_defaults() -> None:
    text = (
        "# saved\n\n"
        "-A --tcp-service 10.0.0.1:80 --scheduler lc --persistent 60\n"
        "-a --tcp-service 10.0.0.1:80 --real-server 10.1.0.1:8080 --masquerading --weight 3\n"
        "-A -u [FD00::1]:53\n"
        "-a -u [fd00::1]:53 -r [fd00::2]:53\n"
    )
    assert parse_ipvsadm_save(text) == (
        VirtualServer("10.0.0.1", "tcp", 80, "lc", 60, (RealServer("10.1.0.1", 8080, 3, "masq"),)),
        VirtualServer("fd00::1", "udp", 53, "wlc", None, (RealServer("fd00::2", 53, 1, "route"),)),
    )


@pytest.mark.parametrize(
    "text",
    [
        "-X -t 1.2.3.4:80\n",
        "-A -f 1.2.3.4:80 -s rr\n",
        "-A -t 1.2.3.4 -s rr\n",
        "-A -t 1.2.3.4:99999 -s rr\n",
        "-A -t nothere:80 -s rr\n",
        "-A -t 1.2.3.4:80 -s rr -b mh-port\n",
        "-A -t 1.2.3.4:80 -s mh -b sh-port\n",
        "-A -t 1.2.3.4:80 -s mh -b mh-port,nosuch\n",
        "-A -t 1.2.3.4:80 -s rr -o\n",
        "-A -t 1.2.3.4:80 -s rr\n-A -t 1.2.3.4:80 -s rr\n",
        "-a -t 1.2.3.4:80 -r 1.1.1.1:80 -m -w 1\n",
        "-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -m -w 1\n",
        "-A -t 1.2.3.4:80 -s rr\n-a -t 1.2.3.4:80 -r 1.1.1.1:80 -x 5\n",
        "-A -t 1.2.3.4:80 -s rr -p x\n",
    ],
)
def test_parse_ipvsadm_save_errors(text: str) -> None:
    with pytest.raises(IPVSTextError, match="line"):
        parse_ipvsadm_save(text)


def test_render_ipvsadm_save_scheduler_flags() -> None:
    # ipvsadm-save: -s, then -p, then -b and the names, fallback before port
    r = rs(
        VirtualServer("10.96.0.1", "tcp", 443, "mh", 10800, flags=("mh-port",)),
        VirtualServer("10.96.0.2", "udp", 53, "mh", None, flags=("mh-fallback", "mh-port")),
        VirtualServer("10.96.0.3", "tcp", 80, "sh", None, flags=("sh-fallback", "sh-port")),
        VirtualServer("10.96.0.4", "tcp", 80, "rr", None, flags=("flag-1", "flag-3")),
    )
    assert render_ipvsadm_save(r) == (
        "-A -t 10.96.0.1:443 -s mh -p 10800 -b mh-port\n"
        "-A -u 10.96.0.2:53 -s mh -b mh-fallback,mh-port\n"
        "-A -t 10.96.0.3:80 -s sh -b sh-fallback,sh-port\n"
        "-A -t 10.96.0.4:80 -s rr -b flag-1,flag-3\n"
    )
    assert parse_ipvsadm_save(render_ipvsadm_save(r)) == r.virtual_servers


def test_parse_ipvsadm_save_flags_as_the_kernel_keeps_them() -> None:
    # ipvsadm takes the names in any order (and the generic flag-N): the kernel
    # keeps bits, and ipvsadm-save prints its own names back in its order
    text = (
        "-A -t 10.0.0.1:80 -b mh-port,mh-fallback -s mh\n"
        "-A -t 10.0.0.2:80 -s mh --sched-flags flag-2,mh-port\n"
        "-A -t 10.0.0.3:80 -s sh -b flag-1\n"
    )
    assert [vs.flags for vs in parse_ipvsadm_save(text)] == [
        ("mh-fallback", "mh-port"),
        ("mh-port",),
        ("sh-fallback",),
    ]


@pytest.mark.parametrize(
    "flags",
    [("mh-port", "mh-fallback"), ("mh-port", "mh-port"), ("flag-2",), ("sh-port",), ("x",)],
)
def test_render_ipvsadm_rejects_flags_that_would_not_read_back(flags: tuple[str, ...]) -> None:
    with pytest.raises(IPVSTextError, match="flag"):
        render_ipvsadm_save(rs(VirtualServer("1.2.3.4", "tcp", 80, "mh", flags=flags)))


def test_render_ipvsadm_rejects_unknown_protocol() -> None:
    bad = VirtualServer("1.2.3.4", "icmp", 1)  # type: ignore[arg-type]
    with pytest.raises(IPVSTextError):
        render_ipvsadm_save(rs(bad))


# --------------------------------------------------------------------------- ipset
def test_render_ipset_save() -> None:
    r = Ruleset(
        mode="ipvs",
        ipsets=(
            IPSet("KUBE-CLUSTER-IP", "hash:ip,port", "inet", ("10.96.0.1,tcp:443",), "x"),
            IPSet("KUBE-NODE-PORT-TCP", "bitmap:port", "inet", ("30080", "31000")),
            IPSet("KUBE-6-IPVS-IPS", "hash:ip", "inet6", ("fd00::1",)),
        ),
    )
    assert render_ipset_save(r) == (
        "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536\n"
        "add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n"
        "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\n"
        "add KUBE-NODE-PORT-TCP 30080\n"
        "add KUBE-NODE-PORT-TCP 31000\n"
        "create KUBE-6-IPVS-IPS hash:ip family inet6 hashsize 1024 maxelem 65536\n"
        "add KUBE-6-IPVS-IPS fd00::1\n"
    )
    back = parse_ipset_save(render_ipset_save(r))
    # the comments come from kube-proxy's table, not from the text
    assert [s.comment for s in back] == [
        "Kubernetes service cluster ip + port for masquerade purpose",
        "Kubernetes nodeport TCP port for masquerade purpose",
        "Addresses on the ipvs interface",
    ]
    assert parse_ipset_save(render_ipset_save(r), comments={"KUBE-CLUSTER-IP": "x"}) == r.ipsets


def test_parse_ipset_save_of_a_modern_kernel() -> None:
    # what ipset 7.17 prints for kube-proxy's sets: the kernel's bucketsize and
    # hash seed, and the hashsize the table has grown to
    text = (
        "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 2048 maxelem 65536 "
        "bucketsize 12 initval 0x06abf6a3\n"
        "add KUBE-CLUSTER-IP 172.30.0.41,tcp:80\n"
        "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\n"
    )
    sets = parse_ipset_save(text, comments={})
    assert sets == (
        IPSet(
            "KUBE-CLUSTER-IP",
            "hash:ip,port",
            "inet",
            ("172.30.0.41,tcp:80",),
            hashsize=2048,
            bucketsize=12,
            initval=0x06ABF6A3,
        ),
        IPSet("KUBE-NODE-PORT-TCP", "bitmap:port", "inet", ()),
    )
    assert render_ipset_save(Ruleset(mode="ipvs", ipsets=sets)) == text


def test_compiled_ipsets_print_kube_proxys_create_arguments() -> None:
    r = compile(_view())
    creates = [line for line in render_ipset_save(r).splitlines() if line.startswith("create")]
    assert (
        creates[1] == "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536"
    )
    assert "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535" in creates
    assert all(s.bucketsize is None and s.initval is None for s in r.ipsets)


@pytest.mark.parametrize(
    "text",
    [
        "flush X\n",
        "add X 1.2.3.4\n",
        "create X hash:ip\ncreate X hash:ip\n",
        "create X hash:ip family inet7\n",
        "create X hash:ip counters\n",
        "create X hash:ip initval zz\n",
        "create X hash:ip initval 0x100000000\n",
        "create X hash:ip hashsize 0\n",
        "create X hash:ip maxelem -1\n",
        "create X bitmap:port range 1-100\n",
        "create X bitmap:port family inet\n",
        "create X bitmap:port range 0-65535 hashsize 1024\n",
        'create X hash:ip comment\nadd X 1.2.3.4 comment "hello"\n',
        'create X hash:ip\nadd X "1.2.3.4\n',
    ],
)
def test_parse_ipset_save_errors(text: str) -> None:
    with pytest.raises(IPVSTextError, match="line"):
        parse_ipset_save(text)


@pytest.mark.parametrize(
    "bad",
    [
        IPSet("A B", "hash:ip"),
        IPSet("X" * 32, "hash:ip"),
        IPSet("X", "hash:ip", "ip"),
        IPSet("X", "hash:ip", "inet", ("1.2.3.4 comment",)),
        IPSet("X", "bitmap:port", bucketsize=12),
        IPSet("X", "bitmap:port", hashsize=2048),
        IPSet("X", "hash:ip", initval=1 << 32),
        IPSet("X", "hash:ip", hashsize=0),
    ],
)
def test_render_ipset_save_rejects(bad: IPSet) -> None:
    with pytest.raises(IPVSTextError):
        render_ipset_save(Ruleset(mode="ipvs", ipsets=(bad,)))


# ---------------------------------------------------------------------- properties
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)
real_servers = st.builds(
    RealServer,
    st.one_of(ipv4, ipv6),
    ports,
    st.integers(0, 65535),
    st.sampled_from(["masq", "route", "tunnel"]),
)
FLAG_NAMES = {
    "sh": ("sh-fallback", "sh-port", "flag-3"),
    "mh": ("mh-fallback", "mh-port", "flag-3"),
}


@st.composite
def virtual_servers(draw: st.DrawFn) -> VirtualServer:
    scheduler = draw(st.sampled_from(["rr", "wrr", "lc", "wlc", "sh", "dh", "mh", "sed", "nq"]))
    names = FLAG_NAMES.get(scheduler, ("flag-1", "flag-2", "flag-3"))
    flags = tuple(name for name in names if draw(st.booleans()))  # in ipvsadm's order
    return VirtualServer(
        draw(st.one_of(ipv4, ipv6)),
        draw(st.sampled_from(["tcp", "udp", "sctp"])),
        draw(ports),
        scheduler,
        draw(st.none() | st.integers(1, 86400)),
        tuple(draw(st.lists(real_servers, max_size=4))),
        flags,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(virtual_servers(), max_size=6, unique_by=lambda v: (v.address, v.protocol, v.port)))
def test_ipvsadm_round_trip(vss: list[VirtualServer]) -> None:
    r = rs(*vss)
    assert parse_ipvsadm_save(render_ipvsadm_save(r)) == r.virtual_servers


@st.composite
def ipsets(draw: st.DrawFn) -> IPSet:
    name, set_type, comment = draw(st.sampled_from(IPSET_INFO))
    v6 = draw(st.booleans()) and set_type != "bitmap:port"
    ip = ipv6 if v6 else ipv4
    proto = st.sampled_from(["tcp", "udp", "sctp"])
    if set_type == "bitmap:port":
        element = ports.map(str)
    elif set_type == "hash:ip":
        element = ip
    elif set_type == "hash:ip,port":
        element = st.builds(lambda a, p, n: f"{a},{p}:{n}", ip, proto, ports)
    else:
        element = st.builds(lambda a, p, n, b: f"{a},{p}:{n},{b}", ip, proto, ports, ip)
    elements = draw(st.lists(element, max_size=5, unique=True))
    family = "inet6" if v6 else "inet"
    if set_type == "bitmap:port":
        return IPSet(name, set_type, family, tuple(elements), comment)
    kernel = draw(st.booleans())  # as ipset 7.11+ prints a kernel's set, or kube-proxy's
    return IPSet(
        name,
        set_type,
        family,
        tuple(elements),
        comment,
        hashsize=draw(st.sampled_from([64, 1024, 2048, 1 << 20])),
        maxelem=draw(st.sampled_from([65536, 1, 1 << 31])),
        bucketsize=draw(st.integers(2, 12)) if kernel else None,
        initval=draw(st.integers(0, 0xFFFFFFFF)) if kernel else None,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(ipsets(), max_size=6, unique_by=lambda s: s.name))
def test_ipset_round_trip(sets: list[IPSet]) -> None:
    r = Ruleset(mode="ipvs", ipsets=tuple(sets))
    assert parse_ipset_save(render_ipset_save(r)) == r.ipsets


def _view(family: str = "IPv4") -> NodeView:
    v6 = family == "IPv6"
    eps = (
        EndpointInfo("fd00:10:180::1" if v6 else "10.180.0.1", 80, is_local=True),
        EndpointInfo("fd00:10:180::2" if v6 else "10.180.1.1", 80),
    )
    p = ServicePortInfo(
        name=ServicePortName("ns1", "svc1", "p80"),
        cluster_ip="fd00:172:30::41" if v6 else "172.30.0.41",
        port=80,
        node_port=3001,
        external_ips=("fd00:1::4",) if v6 else ("1.2.3.4",),
        load_balancer_vips=("fd00:5::8",) if v6 else ("5.6.7.8",),
        load_balancer_source_ranges=("fd00:203::/64",) if v6 else ("203.0.113.0/25",),
        health_check_node_port=30000,
        external_policy_local=True,
        session_affinity="ClientIP",
        session_affinity_timeout=10800,
        all_endpoints=eps,
        cluster_endpoints=eps,
        local_endpoints=eps[:1],
        has_any_endpoints=True,
    )
    q = ServicePortInfo(
        name=ServicePortName("ns2", "svc2", "", "SCTP"),
        cluster_ip="fd00:172:30::42" if v6 else "172.30.0.42",
        port=9,
        protocol="SCTP",
        node_port=3002,
    )
    cfg = ProxyConfig(mode="ipvs", ip_family=family)
    ips = ("fd00:c0a8::2",) if v6 else ("192.168.0.2",)
    return NodeView(node=NodeInfo("n", ip_family=family, ips=ips), config=cfg, service_ports=(p, q))


@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
def test_compiled_round_trip(family: str) -> None:
    r = compile(_view(family))
    assert parse_ipvsadm_save(render_ipvsadm_save(r)) == r.virtual_servers
    assert parse_ipset_save(render_ipset_save(r)) == r.ipsets


def test_compiled_mh_scheduler_renders_mh_port() -> None:
    r = compile(_view(), scheduler="mh")
    heads = [line for line in render_ipvsadm_save(r).splitlines() if line.startswith("-A ")]
    assert heads[0] == "-A -t 172.30.0.41:80 -s mh -p 10800 -b mh-port"
    assert heads[-1] == "-A --sctp-service 192.168.0.2:3002 -s mh -b mh-port"
    assert all(line.endswith(" -b mh-port") for line in heads)
    assert parse_ipvsadm_save(render_ipvsadm_save(r)) == r.virtual_servers


# -------------------------------------------------------------------------- kernel
def _kernel_unavailable() -> str | None:
    return kernel_unavailable(("ip", "ipset", "iptables-restore", "ip6tables-restore"))


@contextlib.contextmanager
def private_netns() -> Iterator[str]:
    """A fresh ``kst-<random>`` namespace, always deleted; nothing runs in the root one."""
    name = f"kst-{secrets.token_hex(4)}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def in_netns(ns: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True
    )


@pytest.fixture
def netns() -> Iterator[str]:
    reason = _kernel_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with private_netns() as name:
        yield name


@pytest.mark.kernel
@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
def test_kernel_accepts_compiled_ipsets_and_rules(netns: str, family: str) -> None:
    r = compile(_view(family))
    loaded = in_netns(netns, "ipset", "restore", stdin=render_ipset_save(r))
    assert loaded.returncode == 0, loaded.stderr
    saved = in_netns(netns, "ipset", "save")
    assert saved.returncode == 0, saved.stderr
    back = parse_ipset_save(saved.stdout)
    # the kernel lists elements in hash order and drops nothing else we keep
    assert [(s.name, s.type, s.family, s.comment) for s in back] == [
        (s.name, s.type, s.family, s.comment) for s in r.ipsets
    ]
    assert [sorted(s.elements) for s in back] == [sorted(s.elements) for s in r.ipsets]
    # the real tool's text reads and prints back byte for byte: its header has the
    # kernel's bucketsize and hash seed, which a compiled set does not know
    assert render_ipset_save(Ruleset(mode="ipvs", ipsets=back)) == saved.stdout
    hashed = [s for s in back if not s.type.startswith("bitmap:")]
    assert hashed and all(s.bucketsize == 12 and s.initval is not None for s in hashed)
    assert {(s.hashsize, s.maxelem) for s in hashed} == {(1024, 65536)}
    tool = "ip6tables-restore" if family == "IPv6" else "iptables-restore"
    tested = in_netns(netns, tool, "--test", stdin=render_restore(r))
    assert tested.returncode == 0, tested.stderr


@pytest.mark.kernel
def test_kernel_grows_hashsize_and_the_text_keeps_it(netns: str) -> None:
    # more entries than 1024 buckets of 12 can hold: the kernel must grow the table
    # (at 5,000 it may or may not, depending on the random hash seed)
    elements = [f"10.96.{i // 250}.{i % 250 + 1},tcp:80" for i in range(13_000)]
    r = Ruleset(mode="ipvs", ipsets=(IPSet("KUBE-CLUSTER-IP", "hash:ip,port", "inet", elements),))
    loaded = in_netns(netns, "ipset", "restore", stdin=render_ipset_save(r))
    assert loaded.returncode == 0, loaded.stderr
    saved = in_netns(netns, "ipset", "save")
    assert saved.returncode == 0, saved.stderr
    (back,) = parse_ipset_save(saved.stdout)
    assert back.hashsize > 1024  # the kernel doubled the table, and says so
    assert sorted(back.elements) == sorted(elements)
    assert render_ipset_save(Ruleset(mode="ipvs", ipsets=(back,))) == saved.stdout


def _without_ipvs_match(r: Ruleset) -> Ruleset:
    """``r`` less its ``-m ipvs`` rules (a kernel without IPVS has no xt_ipvs)."""
    tables = tuple(
        attrs.evolve(
            t,
            chains=tuple(
                attrs.evolve(
                    c,
                    rules=tuple(
                        rule
                        for rule in c.rules
                        if not any(
                            isinstance(e, RawMatch) and e.text.startswith("-m ipvs ")
                            for e in rule.exprs
                        )
                    ),
                )
                for c in t.chains
            ),
        )
        for t in r.tables
    )
    return attrs.evolve(r, tables=tables)


@pytest.mark.kernel
@pytest.mark.parametrize("family", ["IPv4", "IPv6"])
def test_kernel_saves_compiled_rules_as_render_save(netns: str, family: str) -> None:
    """Loaded for real, the IPVS-mode rules come back from iptables-save exactly as
    render_save prints them: the bare ``-p tcp`` stays bare, ahead of the comment."""
    r = compile(_view(family))
    if not os.path.exists("/proc/net/ip_vs"):
        r = _without_ipvs_match(r)
    loaded = in_netns(netns, "ipset", "restore", stdin=render_ipset_save(r))
    assert loaded.returncode == 0, loaded.stderr
    prefix = "ip6tables" if family == "IPv6" else "iptables"
    restored = in_netns(netns, f"{prefix}-nft-restore", stdin=render_restore(r))
    assert restored.returncode == 0, restored.stderr
    saved = in_netns(netns, f"{prefix}-nft-save")
    assert saved.returncode == 0, saved.stderr
    lines = [line for line in saved.stdout.splitlines() if not line.startswith("#")]
    assert "".join(line + "\n" for line in lines) == render_save(r)
    assert any(line.startswith("-A KUBE-NODE-PORT -p tcp -m comment ") for line in lines)


@pytest.mark.kernel
def test_kernel_ipvsadm() -> None:
    if not os.path.isdir("/proc/sys/net/ipv4/vs") and not os.path.exists("/proc/net/ip_vs"):
        pytest.skip("the ip_vs kernel module is not loaded (ipvsadm cannot program IPVS here)")
    pytest.skip("ipvsadm restore is not exercised: loading ip_vs would touch the host kernel")
