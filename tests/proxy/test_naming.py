"""kube-proxy's names: ServicePortName printing and the iptables / nftables chain names.

The vectors are literal chain names from upstream's tests
(pkg/proxy/iptables/proxier_test.go, pkg/proxy/nftables/proxier_test.go) and,
where upstream tests have none (UDP, an unnamed port), from iptables-save dumps
of real clusters.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kservice.proxy import (
    ServicePortName,
    hash_and_truncate,
    iptables_cluster_chain,
    iptables_endpoint_chain,
    iptables_external_chain,
    iptables_firewall_chain,
    iptables_local_chain,
    join_host_port,
    nftables_affinity_set,
    nftables_cluster_chain,
    nftables_endpoint_chain,
    nftables_endpoint_chain_name_base,
    nftables_external_chain,
    nftables_firewall_chain,
    nftables_local_chain,
    nftables_service_chain_name_base,
    port_proto_hash,
    service_port_chain_name,
    service_port_endpoint_chain_name,
)
from kservice.proxy.naming import NFTABLES_CHAIN_NAME_BASE_MAX, hash8, hash16


def spn(text: str, protocol: str = "TCP") -> ServicePortName:
    ns, rest = text.split("/")
    name, _, port = rest.partition(":")
    return ServicePortName(ns, name, port, protocol)


# -- ServicePortName ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (ServicePortName("ns1", "svc1", "p80", "TCP"), "ns1/svc1:p80"),
        (ServicePortName("ns1", "svc1", "p80", "UDP"), "ns1/svc1:p80"),
        (ServicePortName("default", "kubernetes", "https"), "default/kubernetes:https"),
        (ServicePortName("default", "nginx", ""), "default/nginx"),
        (ServicePortName("default", "nginx"), "default/nginx"),
    ],
)
def test_service_port_name_prints_like_kube_proxy(name: ServicePortName, text: str) -> None:
    assert str(name) == text


def test_service_port_name_is_an_immutable_ordered_key() -> None:
    a = ServicePortName("ns1", "svc1", "p80", "TCP")
    b = ServicePortName("ns1", "svc1", "p80", "UDP")
    c = ServicePortName("ns1", "svc2", "", "TCP")
    d = ServicePortName("ns0", "zzz", "p1", "TCP")
    assert sorted([c, b, a, d]) == [d, a, b, c]
    assert a != b and hash(a) == hash(ServicePortName("ns1", "svc1", "p80", "TCP"))
    assert {a: 1}[ServicePortName("ns1", "svc1", "p80")] == 1
    assert a.port_name == "p80" and a.namespaced_name == "ns1/svc1" and a.key == ("ns1", "svc1")
    with pytest.raises(AttributeError):
        a.port = "p81"  # type: ignore[misc]
    assert not hasattr(a, "__dict__")


# -- iptables -------------------------------------------------------------------------

# (service port, protocol, hash) from upstream's golden iptables-save dumps.
SERVICE_HASHES = [
    ("ns1/svc1:p80", "TCP", "XPGD46QRK7WJZT7O"),
    ("ns2/svc2:p80", "TCP", "GNZBNJ2PO5MGZ6GT"),
    ("ns3/svc3:p80", "TCP", "X27LE4BHSL4DOUIK"),
    ("ns4/svc4:p80", "TCP", "4SW47YFZTEDKD3PK"),
    ("ns5/svc5:p80", "TCP", "NUKIZ6OKUXPJNT4C"),
    # From real clusters' iptables-save: a UDP port and an unnamed port.
    ("kube-system/kube-dns:dns", "UDP", "TCOU7JCQXEZGVUNU"),
    ("default/nginx", "TCP", "2CMXP7HKUVJN7L6M"),
]


@pytest.mark.parametrize(("name", "protocol", "digest"), SERVICE_HASHES)
def test_iptables_service_chains(name: str, protocol: str, digest: str) -> None:
    key = spn(name, protocol)
    assert port_proto_hash(key) == digest
    assert iptables_cluster_chain(key) == f"KUBE-SVC-{digest}"
    assert iptables_local_chain(key) == f"KUBE-SVL-{digest}"
    assert iptables_external_chain(key) == f"KUBE-EXT-{digest}"
    assert iptables_firewall_chain(key) == f"KUBE-FW-{digest}"
    # The upstream-shaped helper takes the printed name and the protocol.
    assert service_port_chain_name("KUBE-SVC-", name, protocol.lower()) == f"KUBE-SVC-{digest}"


@pytest.mark.parametrize(
    ("name", "protocol", "endpoint", "chain"),
    [
        ("ns1/svc1:p80", "TCP", "10.180.0.1:80", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
        ("ns1/svc1:p80", "TCP", "10.180.2.1:80", "KUBE-SEP-ZX7GRIZKSNUQ3LAJ"),
        ("ns2/svc2:p80", "TCP", "10.180.0.2:80", "KUBE-SEP-RS4RBKLTHTF2IUXJ"),
        ("ns3/svc3:p80", "TCP", "10.180.0.3:80", "KUBE-SEP-OYPFS5VJICHGATKP"),
        ("ns4/svc4:p80", "TCP", "10.180.0.4:80", "KUBE-SEP-UKSFD7AGPMPPLUHC"),
        ("ns4/svc4:p80", "TCP", "10.180.0.5:80", "KUBE-SEP-C6EBXVWJJZMIWKLZ"),
        # The same endpoint behind another service port hashes differently.
        ("ns5/svc5:p80", "TCP", "10.180.0.3:80", "KUBE-SEP-I77PXRDZVX7PMWMN"),
        # IPv6 endpoints are bracketed before hashing.
        ("ns1/svc1:p80", "TCP", "[ff06::c1]:80", "KUBE-SEP-LIGRYQQLSZN4UWQ5"),
        ("ns1/svc1:p80", "TCP", "[ff06::c2]:80", "KUBE-SEP-XJJ5QXWGJG344QDZ"),
        ("kube-system/kube-dns:dns", "UDP", "10.244.0.10:53", "KUBE-SEP-R7EMXN5TTQQVP4UW"),
        ("kube-system/kube-dns:dns", "UDP", "10.244.0.5:53", "KUBE-SEP-LPGSDLJ3FDW46N4W"),
    ],
)
def test_iptables_endpoint_chains(name: str, protocol: str, endpoint: str, chain: str) -> None:
    assert iptables_endpoint_chain(spn(name, protocol), endpoint) == chain
    assert service_port_endpoint_chain_name(name, endpoint, protocol) == chain


def test_protocol_is_lower_cased_before_hashing() -> None:
    key = spn("ns1/svc1:p80")
    assert port_proto_hash("ns1/svc1:p80", "tcp") == port_proto_hash("ns1/svc1:p80", "TCP")
    assert port_proto_hash(key, "UDP") != port_proto_hash(key)
    with pytest.raises(TypeError, match="protocol is required"):
        port_proto_hash("ns1/svc1:p80")


# -- nftables -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "chain"),
    [
        ("ns1/svc1:p80", "service-ULMVA6XW-ns1/svc1/tcp/p80"),
        ("ns2/svc2:p80", "service-42NFTM6N-ns2/svc2/tcp/p80"),
        ("ns3/svc3:p80", "service-4AT6LBPK-ns3/svc3/tcp/p80"),
        ("ns4/svc4:p80", "service-LAUZTJTB-ns4/svc4/tcp/p80"),
    ],
)
def test_nftables_service_chains(name: str, chain: str) -> None:
    key = spn(name)
    base = chain.removeprefix("service-")
    assert nftables_service_chain_name_base(key) == base
    assert nftables_cluster_chain(key) == chain
    assert nftables_local_chain(key) == "local-" + base
    assert nftables_external_chain(key) == "external-" + base
    assert nftables_firewall_chain(key) == "firewall-" + base


def test_nftables_external_chain_vector() -> None:
    assert nftables_external_chain(spn("ns2/svc2:p80")) == "external-42NFTM6N-ns2/svc2/tcp/p80"


@pytest.mark.parametrize(
    ("name", "endpoint", "chain"),
    [
        ("ns1/svc1:p80", "10.180.0.1:80", "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"),
        ("ns2/svc2:p80", "10.180.0.2:80", "endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80"),
        ("ns3/svc3:p80", "10.180.0.3:80", "endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80"),
        ("ns4/svc4:p80", "10.180.0.4:80", "endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80"),
        # IPv6: colons become dots.
        (
            "ns1/svc1:p80",
            "[fd00:10:180::1]:80",
            "endpoint-ZVRFLKHO-ns1/svc1/tcp/p80__fd00.10.180..1/80",
        ),
        (
            "ns1/svc1:p80",
            "[fd00:10:180::2:1]:80",
            "endpoint-2CRNCTTE-ns1/svc1/tcp/p80__fd00.10.180..2.1/80",
        ),
    ],
)
def test_nftables_endpoint_chains(name: str, endpoint: str, chain: str) -> None:
    key = spn(name)
    assert nftables_endpoint_chain(key, endpoint) == chain
    base = chain.removeprefix("endpoint-")
    assert nftables_endpoint_chain_name_base(key, endpoint) == base
    assert nftables_affinity_set(key, endpoint) == "affinity-" + base


def test_nftables_names_of_an_unnamed_udp_port() -> None:
    key = ServicePortName("kube-system", "kube-dns", "", "UDP")
    assert nftables_service_chain_name_base(key).endswith("-kube-system/kube-dns/udp/")
    assert nftables_endpoint_chain_name_base(key, "10.0.0.1:53").endswith(
        "-kube-system/kube-dns/udp/__10.0.0.1/53"
    )


def test_hash_and_truncate_cuts_long_names_to_240_characters() -> None:
    exact = "x" * (NFTABLES_CHAIN_NAME_BASE_MAX - 9)  # 8 hash characters and a hyphen
    assert len(hash_and_truncate(exact)) == NFTABLES_CHAIN_NAME_BASE_MAX
    assert not hash_and_truncate(exact).endswith("...")
    long = "y" * (NFTABLES_CHAIN_NAME_BASE_MAX - 8)
    cut = hash_and_truncate(long)
    assert len(cut) == NFTABLES_CHAIN_NAME_BASE_MAX and cut.endswith("y...")
    # The hash is of the whole name, so names differing after the cut stay distinct.
    assert hash_and_truncate(long + "a") != hash_and_truncate(long + "b")
    assert hash_and_truncate(long + "a")[9:] == hash_and_truncate(long + "b")[9:]


def test_longest_possible_endpoint_base_is_truncated() -> None:
    # Upstream's bound: 63-character namespace, Service and port names (a valid
    # port name has at most 15, so real names never reach the cut).
    key = ServicePortName("n" * 63, "s" * 63, "p" * 63, "SCTP")
    endpoint = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
    base = nftables_endpoint_chain_name_base(key, endpoint)
    assert len(base) == NFTABLES_CHAIN_NAME_BASE_MAX and base.endswith("...")


@pytest.mark.parametrize("endpoint", ["10.0.0.1", "[fd00::1]80", "fd00::1:80", "[fd00::1"])
def test_malformed_endpoint_strings_are_rejected(endpoint: str) -> None:
    with pytest.raises(ValueError, match="invalid endpoint"):
        nftables_endpoint_chain_name_base(spn("ns/svc:p"), endpoint)


@pytest.mark.parametrize(
    ("ip", "port", "text"),
    [("10.0.0.1", 80, "10.0.0.1:80"), ("fd00::1", 443, "[fd00::1]:443"), ("::", "0", "[::]:0")],
)
def test_join_host_port(ip: str, port: int | str, text: str) -> None:
    assert join_host_port(ip, port) == text


# -- properties -----------------------------------------------------------------------

_dns_label = st.from_regex(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
_port_name = st.one_of(
    st.just(""), st.from_regex(r"[a-z]([-a-z0-9]{0,13}[a-z0-9])?", fullmatch=True)
)
_protocol = st.sampled_from(["TCP", "UDP", "SCTP"])
_names = st.builds(ServicePortName, _dns_label, _dns_label, _port_name, _protocol)
_endpoints = st.one_of(
    st.ip_addresses(v=4).map(lambda ip: f"{ip}:{8080}"),
    st.tuples(st.ip_addresses(v=6), st.integers(1, 65535)).map(lambda t: f"[{t[0]}]:{t[1]}"),
)


@given(_names, _endpoints)
def test_iptables_chain_names_fit_iptables(key: ServicePortName, endpoint: str) -> None:
    for chain in (
        iptables_cluster_chain(key),
        iptables_local_chain(key),
        iptables_external_chain(key),
        iptables_firewall_chain(key),
        iptables_endpoint_chain(key, endpoint),
    ):
        assert len(chain) <= 28
        assert re.fullmatch(r"KUBE-(SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}", chain)


@given(_names, _endpoints)
def test_nftables_chain_names_fit_nftables(key: ServicePortName, endpoint: str) -> None:
    for chain in (nftables_cluster_chain(key), nftables_endpoint_chain(key, endpoint)):
        assert len(chain) <= 256
        assert re.fullmatch(r"[A-Za-z_.][A-Za-z0-9_./-]*", chain)
    assert "/" in nftables_endpoint_chain(key, endpoint)  # upstream's isServiceChainName


@given(st.text())
def test_fast_hashes_equal_base32_of_the_whole_digest(text: str) -> None:
    """hash8/hash16 encode only the digest bytes they need; same text as b32encode."""
    full = base64.b32encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    assert hash8(text) == full[:8]
    assert hash16(text) == full[:16]
