"""Cluster DNS (CoreDNS kubernetes plugin answers) and the pod resolver."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kservice.api._base import ObjectMeta
from kservice.api.endpointslice import (
    LABEL_SERVICE_NAME,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    ObjectReference,
)
from kservice.api.pod import DNSConfigOption, Pod, PodDNSConfig
from kservice.api.service import Service, ServicePort
from kservice.control.dns import (
    NOERROR,
    NXDOMAIN,
    Answer,
    ClusterDNS,
    DNSError,
    Record,
    ResolverConfig,
    effective_dns_policy,
    format_resolution,
    pod_resolver_config,
    resolv_conf,
    reverse_name,
)
from kservice.errors import KServiceError

Z = "svc.cluster.local."  # suffix of every service name, absolute

# -- the seed-article cluster ---------------------------------------------------------


def svc(name: str, ns: str, **kw: object) -> Service:
    return Service(metadata=ObjectMeta(name=name, namespace=ns), **kw)  # type: ignore[arg-type]


def eps_slice(
    service: str,
    ns: str,
    endpoints: list[Endpoint],
    ports: list[EndpointPort],
    *,
    address_type: str = "IPv4",
    suffix: str = "abcde",
) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(
            name=f"{service}-{suffix}", namespace=ns, labels={LABEL_SERVICE_NAME: service}
        ),
        address_type=address_type,
        endpoints=endpoints,
        ports=ports,
    )


def ep(
    ip: str,
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    hostname: str | None = None,
    pod: str | None = None,
    ns: str = "default",
) -> Endpoint:
    return Endpoint(
        addresses=(ip,),
        conditions=EndpointConditions(ready=ready, serving=serving, terminating=terminating),
        hostname=hostname,
        target_ref=ObjectReference(kind="Pod", namespace=ns, name=pod) if pod else None,
    )


def pod(name: str, ns: str, ip: str | None = None, **kw: object) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace=ns),
        pod_ips=(ip,) if ip else (),
        **kw,  # type: ignore[arg-type]
    )


SERVICES = [
    svc(
        "kubernetes",
        "default",
        cluster_ip="10.96.0.1",
        cluster_ips=("10.96.0.1",),
        ports=(ServicePort(443, name="https", target_port=6443),),
    ),
    svc(
        "backend-api",
        "production",
        cluster_ip="10.96.100.10",
        cluster_ips=("10.96.100.10",),
        ports=(ServicePort(80, name="http", target_port=8080),),
    ),
    svc(
        "demo-app",
        "staging",
        type="NodePort",
        cluster_ip="10.96.100.20",
        cluster_ips=("10.96.100.20",),
        ports=(ServicePort(80, name="http", target_port=8080, node_port=30080),),
    ),
    svc(
        "public-api",
        "production",
        type="LoadBalancer",
        cluster_ip="10.96.100.30",
        cluster_ips=("10.96.100.30", "fd00:10:96::30"),
        ip_families=("IPv4", "IPv6"),
        ports=(
            ServicePort(443, name="https", target_port=8443, node_port=31443),
            ServicePort(80, name="http", target_port=8080, node_port=31080),
        ),
    ),
    svc(
        "billing-db",
        "billing",
        type="ExternalName",
        external_name="billing-db.prod.example.com",
    ),
    svc(
        "redis",
        "data",
        cluster_ip="None",
        cluster_ips=("None",),
        ports=(ServicePort(6379, name="redis"),),
    ),
    svc(
        "web",
        "production",
        cluster_ip="None",
        cluster_ips=("None",),
        ports=(ServicePort(8080, name="http"),),
    ),
    svc(
        "web-all",
        "production",
        cluster_ip="None",
        cluster_ips=("None",),
        publish_not_ready_addresses=True,
        ports=(ServicePort(8080, name="http"),),
    ),
    svc(
        "empty",
        "production",
        cluster_ip="None",
        cluster_ips=("None",),
        ports=(ServicePort(80, name="http"),),
    ),
    svc(
        "v6",
        "production",
        cluster_ip="None",
        cluster_ips=("None",),
        ports=(ServicePort(80, name="http"),),
    ),
    # An ExternalName pointing inside the cluster: CoreDNS chases it itself.
    svc(
        "api-alias",
        "staging",
        type="ExternalName",
        external_name="backend-api.production.svc.cluster.local",
    ),
]

SLICES = [
    eps_slice(
        "backend-api",
        "production",
        [ep("10.244.1.5"), ep("10.244.2.6"), ep("10.244.3.7", ready=False)],
        [EndpointPort(8080, name="http")],
    ),
    eps_slice(
        "redis",
        "data",
        [
            ep(f"10.244.1.{10 + i}", hostname=f"redis-{i}", pod=f"redis-{i}", ns="data")
            for i in range(3)
        ],
        [EndpointPort(6379, name="redis")],
    ),
    eps_slice(
        "web",
        "production",
        [
            ep("10.244.4.5", pod="web-7f9c-abcde"),
            ep("10.244.4.6", ready=None),  # unset ready means ready
            ep("10.244.4.7", ready=False, serving=True, terminating=True),
            ep("10.244.4.8", ready=False),
        ],
        [EndpointPort(8080, name="http")],
    ),
    eps_slice(
        "web-all",
        "production",
        [ep("10.244.5.5"), ep("10.244.5.6", ready=False)],
        [EndpointPort(8080, name="http")],
    ),
    eps_slice("empty", "production", [ep("10.244.6.6", ready=False)], []),
    eps_slice(
        "v6",
        "production",
        [ep("fd00:10:244::5")],
        [EndpointPort(80, name="http")],
        address_type="IPv6",
    ),
]

PODS = [
    pod(f"redis-{i}", "data", f"10.244.1.{10 + i}", hostname=f"redis-{i}", subdomain="redis")
    for i in range(3)
] + [
    pod("backend-api-1", "production", "10.244.1.5"),
    pod("backend-api-2", "production", "10.244.2.6"),
    pod("v6-pod", "production", "fd00:10:244::5"),
]

UPSTREAM = {
    "api.example.com": ["93.184.216.34", "2606:2800:220:1::1"],
    "billing-db.prod.example.com": ["203.0.113.10"],
    "www.example.com": "api.example.com",
    "nodata.example.com": [],
}


def make_dns(**kw: object) -> ClusterDNS:
    kw.setdefault("upstream", UPSTREAM)
    return ClusterDNS(SERVICES, SLICES, PODS, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def dns() -> ClusterDNS:
    return make_dns()


def rr(name: str, type_: str, data: str, ttl: int = 5) -> Record:
    return Record(name, type_, ttl, data)


def data(answer: Answer) -> list[tuple[str, str, str]]:
    return [(r.name, r.type, r.data) for r in answer.records]


# -- A / AAAA ---------------------------------------------------------------------------

A_CASES = [
    # (name, qtype, rcode, [data...])
    ("backend-api.production.svc.cluster.local", "A", NOERROR, ["10.96.100.10"]),
    ("backend-api.production.svc.cluster.local.", "A", NOERROR, ["10.96.100.10"]),
    ("backend-api.production.svc.cluster.local", "AAAA", NOERROR, []),  # NODATA
    ("demo-app.staging.svc.cluster.local", "A", NOERROR, ["10.96.100.20"]),
    ("public-api.production.svc.cluster.local", "A", NOERROR, ["10.96.100.30"]),
    ("public-api.production.svc.cluster.local", "AAAA", NOERROR, ["fd00:10:96::30"]),
    ("kubernetes.default.svc.cluster.local", "A", NOERROR, ["10.96.0.1"]),
    # headless: one record per ready endpoint, in slice order
    (
        "redis.data.svc.cluster.local",
        "A",
        NOERROR,
        ["10.244.1.10", "10.244.1.11", "10.244.1.12"],
    ),
    ("redis.data.svc.cluster.local", "AAAA", NOERROR, []),
    # not-ready endpoints are left out; unset ready counts as ready
    ("web.production.svc.cluster.local", "A", NOERROR, ["10.244.4.5", "10.244.4.6"]),
    # publishNotReadyAddresses publishes every endpoint
    ("web-all.production.svc.cluster.local", "A", NOERROR, ["10.244.5.5", "10.244.5.6"]),
    # a headless Service without published endpoints does not exist in DNS
    ("empty.production.svc.cluster.local", "A", NXDOMAIN, []),
    ("v6.production.svc.cluster.local", "AAAA", NOERROR, ["fd00:10:244::5"]),
    ("v6.production.svc.cluster.local", "A", NOERROR, []),
    # endpoints by hostname (StatefulSet) and by dashed address
    ("redis-0.redis.data.svc.cluster.local", "A", NOERROR, ["10.244.1.10"]),
    ("redis-2.redis.data.svc.cluster.local", "A", NOERROR, ["10.244.1.12"]),
    ("redis-3.redis.data.svc.cluster.local", "A", NXDOMAIN, []),
    ("10-244-4-5.web.production.svc.cluster.local", "A", NOERROR, ["10.244.4.5"]),
    ("10-244-4-8.web.production.svc.cluster.local", "A", NXDOMAIN, []),  # not ready
    ("fd00-10-244--5.v6.production.svc.cluster.local", "AAAA", NOERROR, ["fd00:10:244::5"]),
    # CoreDNS answers endpoint names of ClusterIP Services too
    ("10-244-1-5.backend-api.production.svc.cluster.local", "A", NOERROR, ["10.244.1.5"]),
    # an A query on an SRV-shaped name answers with the matching port's IPs
    ("_http._tcp.backend-api.production.svc.cluster.local", "A", NOERROR, ["10.96.100.10"]),
    ("_grpc._tcp.backend-api.production.svc.cluster.local", "A", NXDOMAIN, []),
]


@pytest.mark.parametrize(("name", "qtype", "rcode", "expected"), A_CASES)
def test_address_answers(
    dns: ClusterDNS, name: str, qtype: str, rcode: str, expected: list[str]
) -> None:
    answer = dns.query(name, qtype)
    assert answer.rcode == rcode
    assert answer.addresses == tuple(expected)
    assert all(r.ttl == 5 and r.type == qtype for r in answer.records)
    assert answer.source == "kubernetes"


def test_owner_name_is_the_question(dns: ClusterDNS) -> None:
    answer = dns.query("backend-api.production.svc.cluster.local", "A")
    assert answer.records == (rr("backend-api.production.svc.cluster.local.", "A", "10.96.100.10"),)
    assert str(answer.records[0]) == (
        "backend-api.production.svc.cluster.local.\t5\tIN\tA\t10.96.100.10"
    )


def test_ttl_option() -> None:
    answer = make_dns(ttl=30).query("backend-api.production.svc.cluster.local")
    assert [r.ttl for r in answer.records] == [30]


def test_include_terminating_publishes_serving_endpoints() -> None:
    answer = make_dns(include_terminating=True).query("web.production.svc.cluster.local")
    # 10.244.4.7 is terminating but still serving; 10.244.4.8 serves nothing.
    assert answer.addresses == ("10.244.4.5", "10.244.4.6", "10.244.4.7")


def test_endpoint_pod_names() -> None:
    dns = make_dns(endpoint_pod_names=True)
    answer = dns.query("web-7f9c-abcde.web.production.svc.cluster.local")
    assert answer.addresses == ("10.244.4.5",)
    # the dashed form still names endpoints without a target pod
    assert dns.query("10-244-4-6.web.production.svc.cluster.local").addresses == ("10.244.4.6",)


def test_ignore_empty_service() -> None:
    lonely = svc(
        "lonely",
        "production",
        cluster_ip="10.96.100.99",
        cluster_ips=("10.96.100.99",),
        ports=(ServicePort(80, name="http"),),
    )
    name = "lonely.production.svc.cluster.local"
    assert ClusterDNS([lonely]).query(name).addresses == ("10.96.100.99",)
    assert ClusterDNS([lonely], ignore_empty_service=True).query(name).rcode == NXDOMAIN


def test_unallocated_cluster_ip_is_nodata() -> None:
    pending = svc("pending", "production", ports=(ServicePort(80),))
    answer = ClusterDNS([pending]).query("pending.production.svc.cluster.local")
    assert answer.rcode == NOERROR and answer.nodata


# -- ExternalName --------------------------------------------------------------------------


def test_external_name_cname(dns: ClusterDNS) -> None:
    answer = dns.query("billing-db.billing.svc.cluster.local", "CNAME")
    assert data(answer) == [
        ("billing-db.billing.svc.cluster.local.", "CNAME", "billing-db.prod.example.com.")
    ]


def test_external_name_a_chases_upstream(dns: ClusterDNS) -> None:
    answer = dns.query("billing-db.billing.svc.cluster.local", "A")
    assert answer.rcode == NOERROR
    assert answer.records == (
        rr("billing-db.billing.svc.cluster.local.", "CNAME", "billing-db.prod.example.com."),
        Record("billing-db.prod.example.com.", "A", 300, "203.0.113.10"),
    )


def test_external_name_without_upstream_is_a_bare_cname() -> None:
    answer = ClusterDNS(SERVICES, SLICES).query("billing-db.billing.svc.cluster.local", "A")
    assert answer.rcode == NOERROR
    assert data(answer) == [
        ("billing-db.billing.svc.cluster.local.", "CNAME", "billing-db.prod.example.com.")
    ]


def test_external_name_into_the_cluster(dns: ClusterDNS) -> None:
    answer = dns.query("api-alias.staging.svc.cluster.local", "A")
    assert data(answer) == [
        (
            "api-alias.staging.svc.cluster.local.",
            "CNAME",
            "backend-api.production.svc.cluster.local.",
        ),
        ("backend-api.production.svc.cluster.local.", "A", "10.96.100.10"),
    ]
    # no AAAA at the end of the chain: CoreDNS drops the CNAME too
    assert dns.query("api-alias.staging.svc.cluster.local", "AAAA").nodata


@pytest.mark.parametrize(
    ("name", "qtype", "rcode", "count"),
    [
        ("billing-db.billing.svc.cluster.local", "SRV", NOERROR, 0),  # SRV skips CNAMEs
        ("billing-db.billing.svc.cluster.local", "TXT", NOERROR, 1),  # the CNAME
        ("x.billing-db.billing.svc.cluster.local", "A", NXDOMAIN, 0),  # no endpoints
        ("backend-api.production.svc.cluster.local", "CNAME", NOERROR, 0),
    ],
)
def test_external_name_edges(
    dns: ClusterDNS, name: str, qtype: str, rcode: str, count: int
) -> None:
    answer = dns.query(name, qtype)
    assert (answer.rcode, len(answer.records)) == (rcode, count)


# -- SRV -----------------------------------------------------------------------------------------


def test_srv_cluster_ip(dns: ClusterDNS) -> None:
    answer = dns.query("_http._tcp.backend-api.production.svc.cluster.local", "SRV")
    (record,) = answer.records
    assert (record.priority, record.weight, record.port, record.target) == (
        0,
        100,
        80,
        "backend-api.production.svc.cluster.local.",
    )
    assert record.data == "0 100 80 backend-api.production.svc.cluster.local."
    assert answer.extra == (rr("backend-api.production.svc.cluster.local.", "A", "10.96.100.10"),)


def test_srv_headless_one_per_endpoint(dns: ClusterDNS) -> None:
    answer = dns.query("_redis._tcp.redis.data.svc.cluster.local", "SRV")
    assert [(r.weight, r.port, r.target) for r in answer.records] == [
        (33, 6379, f"redis-{i}.redis.data.svc.cluster.local.") for i in range(3)
    ]
    assert [(r.name, r.data) for r in answer.extra] == [
        (f"redis-{i}.redis.data.svc.cluster.local.", f"10.244.1.{10 + i}") for i in range(3)
    ]


def test_srv_dashed_targets(dns: ClusterDNS) -> None:
    answer = dns.query("_http._tcp.web.production.svc.cluster.local", "SRV")
    assert [r.data for r in answer.records] == [
        "0 50 8080 10-244-4-5.web.production.svc.cluster.local.",
        "0 50 8080 10-244-4-6.web.production.svc.cluster.local.",
    ]


def test_srv_dual_stack_counts_each_address(dns: ClusterDNS) -> None:
    # Two ClusterIPs make two items for the https port: weight 100/2, one
    # record after de-duplication, both addresses in the extra section.
    answer = dns.query("_https._tcp.public-api.production.svc.cluster.local", "SRV")
    assert [r.data for r in answer.records] == ["0 50 443 public-api.production.svc.cluster.local."]
    assert [r.type for r in answer.extra] == ["A", "AAAA"]


def test_srv_without_port_labels_lists_every_port(dns: ClusterDNS) -> None:
    answer = dns.query("public-api.production.svc.cluster.local", "SRV")
    assert sorted(r.port for r in answer.records if r.port is not None) == [80, 443]
    assert {r.weight for r in answer.records} == {25}


def test_srv_weights_floor_100_over_n() -> None:
    endpoints = [ep(f"10.244.9.{i}") for i in range(1, 8)]
    cluster = ClusterDNS(
        [svc("many", "default", cluster_ip="None", ports=(ServicePort(80, name="http"),))],
        [eps_slice("many", "default", endpoints, [EndpointPort(80, name="http")])],
    )
    answer = cluster.query("_http._tcp.many.default.svc.cluster.local", "SRV")
    assert {r.weight for r in answer.records} == {14}
    assert len(answer.records) == 7


@pytest.mark.parametrize(
    ("name", "rcode", "count"),
    [
        ("_http._udp.backend-api.production.svc.cluster.local", NXDOMAIN, 0),
        ("_nope._tcp.backend-api.production.svc.cluster.local", NXDOMAIN, 0),
        ("_HTTP._TCP.backend-api.production.svc.cluster.local", NOERROR, 1),
        ("http.tcp.backend-api.production.svc.cluster.local", NOERROR, 1),  # underscores optional
        ("_redis._tcp.redis-0.redis.data.svc.cluster.local", NXDOMAIN, 0),  # too long
        ("redis-0.redis.data.svc.cluster.local", NOERROR, 1),
        ("empty.production.svc.cluster.local", NXDOMAIN, 0),
    ],
)
def test_srv_edges(dns: ClusterDNS, name: str, rcode: str, count: int) -> None:
    answer = dns.query(name, "SRV")
    assert (answer.rcode, len(answer.records)) == (rcode, count)


def test_srv_portless_slice_answers_a_but_not_srv() -> None:
    cluster = ClusterDNS(
        [svc("bare", "default", cluster_ip="None", cluster_ips=("None",))],
        [eps_slice("bare", "default", [ep("10.244.7.7")], [])],
    )
    assert cluster.query("bare.default.svc.cluster.local").addresses == ("10.244.7.7",)
    answer = cluster.query("bare.default.svc.cluster.local", "SRV")
    assert answer.rcode == NOERROR and answer.records == ()


# -- pods ----------------------------------------------------------------------------------------

POD_CASES = [
    # (mode, name, qtype, rcode, addresses)
    ("disabled", "10-244-1-5.production.pod.cluster.local", "A", NXDOMAIN, []),
    ("disabled", "production.pod.cluster.local", "A", NXDOMAIN, []),
    ("insecure", "10-244-1-5.production.pod.cluster.local", "A", NOERROR, ["10.244.1.5"]),
    ("insecure", "1-2-3-4.production.pod.cluster.local", "A", NOERROR, ["1.2.3.4"]),
    ("insecure", "1-2-3-4.nowhere.pod.cluster.local", "A", NXDOMAIN, []),
    ("insecure", "1-2-3.production.pod.cluster.local", "A", NXDOMAIN, []),
    ("insecure", "web-1.production.pod.cluster.local", "A", NXDOMAIN, []),
    ("insecure", "production.pod.cluster.local", "A", NOERROR, []),
    (
        "insecure",
        "fd00-10-244--5.production.pod.cluster.local",
        "AAAA",
        NOERROR,
        ["fd00:10:244::5"],
    ),
    ("insecure", "fd00-10-244--5.production.pod.cluster.local", "A", NOERROR, []),
    ("verified", "10-244-1-5.production.pod.cluster.local", "A", NOERROR, ["10.244.1.5"]),
    ("verified", "10-244-1-10.data.pod.cluster.local", "A", NOERROR, ["10.244.1.10"]),
    ("verified", "10-244-1-5.data.pod.cluster.local", "A", NXDOMAIN, []),  # other namespace
    ("verified", "1-2-3-4.production.pod.cluster.local", "A", NXDOMAIN, []),
    (
        "verified",
        "fd00-10-244--5.production.pod.cluster.local",
        "AAAA",
        NOERROR,
        ["fd00:10:244::5"],
    ),
]


@pytest.mark.parametrize(("mode", "name", "qtype", "rcode", "expected"), POD_CASES)
def test_pod_records(mode: str, name: str, qtype: str, rcode: str, expected: list[str]) -> None:
    answer = make_dns(pods_mode=mode).query(name, qtype)
    assert (answer.rcode, answer.addresses) == (rcode, tuple(expected))


def test_verified_mode_skips_terminating_pods() -> None:
    dying = pod("dying", "production", "10.244.8.8")
    dying = attrs.evolve(
        dying, metadata=attrs.evolve(dying.metadata, deletion_timestamp="2024-01-01T00:00:00Z")
    )
    cluster = ClusterDNS(SERVICES, (), [dying], pods_mode="verified")
    assert cluster.query("10-244-8-8.production.pod.cluster.local").rcode == NXDOMAIN


# -- PTR -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "targets"),
    [
        ("10.96.100.10", ["backend-api.production.svc.cluster.local."]),
        ("10.96.100.30", ["public-api.production.svc.cluster.local."]),
        ("fd00:10:96::30", ["public-api.production.svc.cluster.local."]),
        ("10.96.0.1", ["kubernetes.default.svc.cluster.local."]),
        ("10.244.1.11", ["redis-1.redis.data.svc.cluster.local."]),
        ("10.244.4.6", ["10-244-4-6.web.production.svc.cluster.local."]),
        ("fd00:10:244::5", ["fd00-10-244--5.v6.production.svc.cluster.local."]),
        # endpoints of ClusterIP Services have names too
        ("10.244.1.5", ["10-244-1-5.backend-api.production.svc.cluster.local."]),
    ],
)
def test_ptr(dns: ClusterDNS, ip: str, targets: list[str]) -> None:
    answer = dns.query(reverse_name(ip), "PTR")
    assert answer.rcode == NOERROR
    assert [r.data for r in answer.records] == targets
    assert all(r.type == "PTR" and r.ttl == 5 for r in answer.records)


def test_reverse_name_forms() -> None:
    assert reverse_name("10.96.100.10") == "10.100.96.10.in-addr.arpa."
    assert reverse_name("fd00::1") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa."
    )


@pytest.mark.parametrize(
    "name",
    [
        reverse_name("10.244.4.8"),  # not-ready endpoint: unpublished
        reverse_name("192.0.2.1"),
        "10.in-addr.arpa",  # partial reverse names fall through to upstream
        "x.y.z.w.in-addr.arpa",
        "1.ip6.arpa",
    ],
)
def test_ptr_nxdomain(dns: ClusterDNS, name: str) -> None:
    assert dns.query(name, "PTR").rcode == NXDOMAIN


def test_ptr_of_a_forward_name_is_existence_only(dns: ClusterDNS) -> None:
    assert dns.query("backend-api.production.svc.cluster.local", "PTR").nodata
    assert dns.query("nope.production.svc.cluster.local", "PTR").rcode == NXDOMAIN


# -- NXDOMAIN versus NODATA ---------------------------------------------------------------------

EXISTENCE_CASES = [
    ("cluster.local", NOERROR),  # the apex
    ("svc.cluster.local", NOERROR),
    ("pod.cluster.local", NOERROR),
    ("production.svc.cluster.local", NOERROR),  # existing namespace
    ("kube-system.svc.cluster.local", NOERROR),  # built-in namespaces exist
    ("nowhere.svc.cluster.local", NXDOMAIN),
    ("nope.production.svc.cluster.local", NXDOMAIN),
    ("backend-api.staging.svc.cluster.local", NXDOMAIN),
    ("backend-api.nowhere.svc.cluster.local", NXDOMAIN),
    # wildcards are gone from CoreDNS: "*" and "any" are literal names
    ("*.production.svc.cluster.local", NXDOMAIN),
    ("any.production.svc.cluster.local", NXDOMAIN),
    ("backend-api.*.svc.cluster.local", NXDOMAIN),
    ("*.redis.data.svc.cluster.local", NXDOMAIN),
    ("foo.cluster.local", NXDOMAIN),
    ("backend-api.production.cluster.local", NXDOMAIN),
    ("api.example.com.cluster.local", NXDOMAIN),
    ("a.b._http._tcp.backend-api.production.svc.cluster.local", NXDOMAIN),  # too long
]


@pytest.mark.parametrize(("name", "rcode"), EXISTENCE_CASES)
@pytest.mark.parametrize("qtype", ["A", "AAAA", "SRV", "ANY", "TXT"])
def test_existence(dns: ClusterDNS, name: str, rcode: str, qtype: str) -> None:
    answer = dns.query(name, qtype)
    assert answer.rcode == rcode
    assert answer.records == ()


def test_namespaces_option_declares_empty_namespaces() -> None:
    assert ClusterDNS(SERVICES).query("empty-ns.svc.cluster.local").rcode == NXDOMAIN
    declared = ClusterDNS(SERVICES, namespaces=["empty-ns"])
    assert declared.query("empty-ns.svc.cluster.local").nodata


def test_dns_version_txt(dns: ClusterDNS) -> None:
    answer = dns.query("dns-version.cluster.local", "TXT")
    assert answer.records == (Record("dns-version.cluster.local.", "TXT", 28800, "1.1.0"),)
    assert dns.query("dns-version.cluster.local", "A").rcode == NXDOMAIN  # only TXT has it


def test_ns_dns_answers_the_server_address(dns: ClusterDNS) -> None:
    assert dns.query("ns.dns.cluster.local").addresses == ("10.96.0.10",)
    assert dns.query("ns.dns.cluster.local", "AAAA").nodata


def test_custom_domain() -> None:
    cluster = ClusterDNS(SERVICES, domain="Example.Internal.")
    assert cluster.query("backend-api.production.svc.example.internal").addresses == (
        "10.96.100.10",
    )
    assert cluster.query("backend-api.production.svc.cluster.local").rcode == NXDOMAIN


# -- upstream ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "qtype", "rcode", "records"),
    [
        ("api.example.com", "A", NOERROR, [("api.example.com.", "A", "93.184.216.34")]),
        ("API.Example.COM.", "AAAA", NOERROR, [("API.Example.COM.", "AAAA", "2606:2800:220:1::1")]),
        (
            "www.example.com",
            "A",
            NOERROR,
            [
                ("www.example.com.", "CNAME", "api.example.com."),
                ("api.example.com.", "A", "93.184.216.34"),
            ],
        ),
        ("www.example.com", "CNAME", NOERROR, [("www.example.com.", "CNAME", "api.example.com.")]),
        ("nodata.example.com", "A", NOERROR, []),
        ("missing.example.com", "A", NXDOMAIN, []),
        (".", "A", NOERROR, []),
    ],
)
def test_upstream(
    dns: ClusterDNS, name: str, qtype: str, rcode: str, records: list[tuple[str, str, str]]
) -> None:
    answer = dns.query(name, qtype)
    assert answer.source == "upstream"
    assert (answer.rcode, data(answer)) == (rcode, records)


@pytest.mark.parametrize(
    "table",
    [
        {"a.example.com": ["1.2.3.4", "b.example.com"]},
        {"a.example.com": ["b.example.com", "c.example.com"]},
        {"bad..name": ["1.2.3.4"]},
        {"a.example.com": ["not a name!.."]},
    ],
)
def test_bad_upstream_table(table: dict[str, list[str]]) -> None:
    with pytest.raises(DNSError):
        ClusterDNS((), upstream=table)


def test_argument_errors() -> None:
    with pytest.raises(DNSError):
        ClusterDNS((), pods_mode="sometimes")
    with pytest.raises(DNSError):
        ClusterDNS((), ttl=-1)
    with pytest.raises(DNSError):
        ClusterDNS((), domain="..")
    with pytest.raises(DNSError) as info:
        ClusterDNS(()).query("x", "MX")
    assert isinstance(info.value, KServiceError) and isinstance(info.value, ValueError)


# -- case and robustness ------------------------------------------------------------------------

KNOWN_NAMES = [
    ("backend-api.production.svc.cluster.local", "A"),
    ("_http._tcp.backend-api.production.svc.cluster.local", "SRV"),
    ("redis-1.redis.data.svc.cluster.local", "A"),
    ("billing-db.billing.svc.cluster.local", "A"),
    ("public-api.production.svc.cluster.local", "AAAA"),
    (reverse_name("10.96.100.10").upper(), "PTR"),
    ("nope.production.svc.cluster.local", "A"),
    ("production.svc.cluster.local", "A"),
]


@given(
    st.sampled_from(KNOWN_NAMES),
    st.lists(st.booleans(), min_size=80, max_size=80),
)
def test_names_are_case_insensitive(case: tuple[str, str], flips: list[bool]) -> None:
    name, qtype = case
    dns = _DNS
    mixed = "".join(c.upper() if f else c.lower() for c, f in zip(name, flips * 2, strict=False))
    plain, other = dns.query(name.lower(), qtype), dns.query(mixed, qtype)
    assert other.rcode == plain.rcode
    assert [(r.type, r.data, r.ttl) for r in other.records] == [
        (r.type, r.data, r.ttl) for r in plain.records
    ]
    assert [r.name.lower() for r in other.records] == [r.name.lower() for r in plain.records]


_DNS = make_dns(pods_mode="insecure")

label = st.one_of(
    st.text(max_size=70),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_*", min_size=0, max_size=70),
    st.sampled_from(["svc", "pod", "cluster", "local", "production", "redis", "data", "*", ""]),
)


@given(
    st.lists(label, max_size=12),
    st.sampled_from(["", "cluster.local", "svc.cluster.local", "in-addr.arpa", "ip6.arpa"]),
    st.sampled_from(["A", "AAAA", "SRV", "CNAME", "PTR", "TXT", "ANY", "a", "srv"]),
    st.booleans(),
)
def test_query_never_raises(labels: list[str], zone: str, qtype: str, dot: bool) -> None:
    name = ".".join([*labels, zone] if zone else labels) + ("." if dot else "")
    answer = _DNS.query(name, qtype)
    assert answer.rcode in (NOERROR, NXDOMAIN)
    assert answer.qtype == qtype.upper()
    if answer.rcode == NXDOMAIN:
        # NXDOMAIN never carries data of its own (upstream CNAME chains aside)
        assert all(r.type == "CNAME" for r in answer.records)


@given(st.text(max_size=300))
def test_query_never_raises_on_any_text(name: str) -> None:
    assert _DNS.query(name).rcode in (NOERROR, NXDOMAIN)


def test_malformed_names_are_nxdomain(dns: ClusterDNS) -> None:
    for name in ["a..b", "x" * 64 + ".cluster.local", ".".join(["a" * 60] * 5), "..", "."]:
        answer = dns.query(name)
        assert answer.rcode in (NXDOMAIN, NOERROR)
        if name != ".":
            assert (answer.rcode, answer.source) == (NXDOMAIN, "invalid")


# -- the pod's resolv.conf ----------------------------------------------------------------------


def test_resolv_conf_cluster_first() -> None:
    p = pod("web", "production")
    assert resolv_conf(p) == (
        "search production.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n"
    )
    assert resolv_conf(p, cluster_dns="10.0.0.10", domain="corp.internal") == (
        "search production.svc.corp.internal svc.corp.internal corp.internal\n"
        "nameserver 10.0.0.10\n"
        "options ndots:5\n"
    )


HOST = ResolverConfig(
    nameservers=("192.168.0.2", "192.168.0.3"),
    searches=("ec2.internal", "corp.example"),
    options=("timeout:2", "attempts:3"),
)


def test_resolv_conf_cluster_first_keeps_host_searches_not_options() -> None:
    text = resolv_conf(pod("web", "production"), host=HOST)
    assert text.splitlines() == [
        "search production.svc.cluster.local svc.cluster.local cluster.local"
        " ec2.internal corp.example",
        "nameserver 10.96.0.10",
        "options ndots:5",
    ]


def test_resolv_conf_dns_config_merges() -> None:
    p = pod(
        "web",
        "production",
        dns_config=PodDNSConfig(
            nameservers=("1.1.1.1",),
            searches=("corp.example", "svc.cluster.local"),
            options=(DNSConfigOption("ndots", "2"), DNSConfigOption("edns0")),
        ),
    )
    assert resolv_conf(p).splitlines() == [
        "search production.svc.cluster.local svc.cluster.local cluster.local corp.example",
        "nameserver 10.96.0.10",
        "nameserver 1.1.1.1",
        "options ndots:2 edns0",
    ]
    assert pod_resolver_config(p).ndots == 2


def test_resolv_conf_default_and_none() -> None:
    default = pod("web", "production", dns_policy="Default")
    assert resolv_conf(default, host=HOST).splitlines() == [
        "search ec2.internal corp.example",
        "nameserver 192.168.0.2",
        "nameserver 192.168.0.3",
        "options timeout:2 attempts:3",
    ]
    none = pod(
        "web",
        "production",
        dns_policy="None",
        dns_config=PodDNSConfig(
            nameservers=("8.8.8.8",),
            searches=("example.com",),
            options=(DNSConfigOption("ndots", "1"),),
        ),
    )
    assert resolv_conf(none, host=HOST) == (
        "search example.com\nnameserver 8.8.8.8\noptions ndots:1\n"
    )
    assert resolv_conf(pod("bare", "x", dns_policy="None")) == ""


@pytest.mark.parametrize(
    ("policy", "host_network", "cluster_dns", "effective"),
    [
        ("ClusterFirst", False, ("10.96.0.10",), "ClusterFirst"),
        ("ClusterFirst", True, ("10.96.0.10",), "Default"),
        ("ClusterFirstWithHostNet", True, ("10.96.0.10",), "ClusterFirst"),
        ("ClusterFirstWithHostNet", False, ("10.96.0.10",), "ClusterFirst"),
        ("ClusterFirst", False, (), "Default"),  # kubelet without --cluster-dns
        ("Default", False, ("10.96.0.10",), "Default"),
        ("None", True, ("10.96.0.10",), "None"),
    ],
)
def test_effective_policy(
    policy: str, host_network: bool, cluster_dns: tuple[str, ...], effective: str
) -> None:
    p = pod("p", "production", dns_policy=policy, host_network=host_network)
    assert effective_dns_policy(p, cluster_dns) == effective


def test_resolv_conf_limits() -> None:
    p = pod(
        "p",
        "production",
        dns_config=PodDNSConfig(
            nameservers=("1.1.1.1", "8.8.8.8", "9.9.9.9"),
            searches=("x" * 254, *(f"d{i}.example" for i in range(40))),
        ),
    )
    config = pod_resolver_config(p)
    assert config.nameservers == ("10.96.0.10", "1.1.1.1", "8.8.8.8")
    # the kubelet cuts to 32 paths first, then drops those over 253 characters
    assert len(config.searches) == 31
    assert "x" * 254 not in config.searches
    # and keeps the search line within 2048 characters, cutting from the end
    long = pod(
        "p",
        "production",
        dns_config=PodDNSConfig(searches=tuple("y" * 200 + str(i) for i in range(20))),
    )
    searches = pod_resolver_config(long).searches
    assert len(" ".join(searches)) <= 2048 and len(searches) == 3 + 9


def test_resolver_config_parse() -> None:
    text = (
        "# generated\nnameserver 10.0.0.2\nsearch old.example\n"
        "search a.example. b.example\nnameserver 10.0.0.3\noptions ndots:3 rotate\n"
    )
    config = ResolverConfig.parse(text)
    assert config == ResolverConfig(
        ("10.0.0.2", "10.0.0.3"), ("a.example", "b.example"), ("ndots:3", "rotate")
    )
    assert config.ndots == 3
    assert ResolverConfig.parse(config.render()) == config


@pytest.mark.parametrize(
    ("options", "ndots"),
    [
        ((), 1),
        (("ndots:5",), 5),
        (("ndots:0",), 0),
        (("ndots:99",), 15),
        (("ndots:2", "ndots:4"), 4),
    ],
)
def test_ndots(options: tuple[str, ...], ndots: int) -> None:
    assert ResolverConfig(options=options).ndots == ndots


# -- glibc search order ------------------------------------------------------------------------

SEARCH = ResolverConfig(
    ("10.96.0.10",),
    ("production.svc.cluster.local", "svc.cluster.local", "cluster.local"),
    ("ndots:5",),
)
S = ".production.svc.cluster.local."


@pytest.mark.parametrize(
    ("config", "name", "expected"),
    [
        (
            SEARCH,
            "backend-api",
            [
                "backend-api" + S,
                "backend-api.svc.cluster.local.",
                "backend-api.cluster.local.",
                "backend-api.",
            ],
        ),
        (SEARCH, "api.example.com.", ["api.example.com."]),
        (
            SEARCH,
            "a.b.c.d.e",  # 4 dots < 5: search first
            [
                "a.b.c.d.e" + S,
                "a.b.c.d.e.svc.cluster.local.",
                "a.b.c.d.e.cluster.local.",
                "a.b.c.d.e.",
            ],
        ),
        (
            SEARCH,
            "a.b.c.d.e.f",  # 5 dots: as is first
            [
                "a.b.c.d.e.f.",
                "a.b.c.d.e.f" + S,
                "a.b.c.d.e.f.svc.cluster.local.",
                "a.b.c.d.e.f.cluster.local.",
            ],
        ),
        (
            attrs.evolve(SEARCH, options=("ndots:5", "no-tld-query")),
            "backend-api",
            ["backend-api" + S, "backend-api.svc.cluster.local.", "backend-api.cluster.local."],
        ),
        (ResolverConfig(searches=(".",)), "host", ["host."]),  # the kubelet's "search ."
        (ResolverConfig(searches=(".corp", "", "x.")), "host", ["host.corp.", "host.", "host.x."]),
        # glibc queries a root search domain even after the as-is try
        (ResolverConfig(searches=(".",), options=("ndots:1",)), "a.b", ["a.b.", "a.b."]),
        (ResolverConfig(), "host", ["host."]),
    ],
)
def test_candidates(config: ResolverConfig, name: str, expected: list[str]) -> None:
    assert config.candidates(name) == expected


# -- resolutions ---------------------------------------------------------------------------------


def test_external_name_costs_three_wasted_queries(dns: ClusterDNS) -> None:
    res = dns.resolve("api.example.com", namespace="production")
    assert [q.name for q in res.queries] == [
        "api.example.com.production.svc.cluster.local.",
        "api.example.com.svc.cluster.local.",
        "api.example.com.cluster.local.",
        "api.example.com.",
    ]
    assert [q.answer.rcode for q in res.queries] == [NXDOMAIN] * 3 + [NOERROR]
    assert res.wasted == 3
    assert res.answered_index == 3
    assert res.answered_by == "api.example.com."
    assert res.resolved and res.addresses == ("93.184.216.34",)
    assert res.queries[-1].answer.source == "upstream"
    assert all(q.server == "10.96.0.10" for q in res.queries)


def test_short_name_resolves_first(dns: ClusterDNS) -> None:
    res = dns.resolve("backend-api", namespace="production")
    assert len(res.queries) == 1 and res.wasted == 0
    assert res.answered_by == "backend-api.production.svc.cluster.local."
    assert res.addresses == ("10.96.100.10",)


@pytest.mark.parametrize(
    ("name", "namespace", "wasted", "addresses"),
    [
        ("backend-api.production", "staging", 1, ("10.96.100.10",)),
        ("backend-api.production.svc", "staging", 2, ("10.96.100.10",)),
        # 4 dots < ndots 5: the whole search list is tried before the name itself
        ("backend-api.production.svc.cluster.local", "staging", 3, ("10.96.100.10",)),
        ("backend-api.production.svc.cluster.local.", "staging", 0, ("10.96.100.10",)),
        ("demo-app", "staging", 0, ("10.96.100.20",)),
        ("redis-0.redis.data", "production", 1, ("10.244.1.10",)),
        ("billing-db", "billing", 0, ("203.0.113.10",)),
        ("www.example.com", "production", 3, ("93.184.216.34",)),
    ],
)
def test_resolution_costs(
    dns: ClusterDNS, name: str, namespace: str, wasted: int, addresses: tuple[str, ...]
) -> None:
    res = dns.resolve(name, namespace=namespace)
    assert (res.wasted, res.addresses) == (wasted, addresses)
    assert res.resolved


def test_unresolved(dns: ClusterDNS) -> None:
    res = dns.resolve("nothing-here", namespace="production")
    assert not res.resolved and res.answer is None and res.answered_index is None
    assert res.wasted == len(res.queries) == 4
    assert res.rcode == NXDOMAIN


def test_unresolved_after_nodata_reports_noerror(dns: ClusterDNS) -> None:
    res = dns.resolve("backend-api", namespace="production", qtype="AAAA")
    # NODATA in the namespace, NXDOMAIN elsewhere: glibc reports NO_DATA.
    assert not res.resolved and res.rcode == NOERROR
    assert [q.answer.status for q in res.queries] == ["NODATA", NXDOMAIN, NXDOMAIN, NXDOMAIN]


def test_ndots_override_saves_queries(dns: ClusterDNS) -> None:
    p = pod(
        "web",
        "production",
        dns_config=PodDNSConfig(options=(DNSConfigOption("ndots", "1"),)),
    )
    res = dns.resolve("api.example.com", pod=p)
    assert res.wasted == 0 and len(res.queries) == 1
    # a short name still goes through the search list
    assert dns.resolve("backend-api", pod=p).wasted == 0


def test_srv_resolution(dns: ClusterDNS) -> None:
    res = dns.resolve("_redis._tcp.redis.data", namespace="data", qtype="SRV")
    assert res.resolved and res.wasted == 1
    assert len(res.answer.records) == 3  # type: ignore[union-attr]


def test_default_policy_pods_miss_cluster_names(dns: ClusterDNS) -> None:
    p = pod("agent", "production", dns_policy="Default")
    res = dns.resolve("backend-api.production.svc.cluster.local", pod=p, host=HOST)
    assert not res.resolved
    assert all(q.server == "192.168.0.2" for q in res.queries)
    assert dns.resolve("api.example.com", pod=p, host=HOST).resolved


def test_host_network_pods(dns: ClusterDNS) -> None:
    plain = pod("agent", "production", host_network=True)
    assert not dns.resolve("backend-api", pod=plain, host=HOST).resolved
    with_net = pod("agent", "production", host_network=True, dns_policy="ClusterFirstWithHostNet")
    assert dns.resolve("backend-api", pod=with_net, host=HOST).resolved


def test_dangling_cname_stops_the_search() -> None:
    cluster = ClusterDNS(SERVICES, SLICES)  # no upstream table
    res = cluster.resolve("billing-db", namespace="billing")
    assert res.answered_index == 0 and res.wasted == 0
    assert not res.resolved and res.addresses == ()


def test_format_resolution(dns: ClusterDNS) -> None:
    text = format_resolution(dns.resolve("api.example.com", namespace="production"))
    lines = text.splitlines()
    assert lines[0] == "resolving api.example.com (A) from namespace production"
    assert "ndots:5" in lines[1] and "nameserver 10.96.0.10" in lines[1]
    assert "1. api.example.com.production.svc.cluster.local. A -> NXDOMAIN" in lines[2]
    assert lines[5].endswith("A -> NOERROR [upstream]  <- answer")
    assert "api.example.com.\t300\tIN\tA\t93.184.216.34" in text
    assert lines[-1] == "wasted queries: 3 (NXDOMAIN/NODATA before the answer)"
    unresolved = format_resolution(dns.resolve("nothing-here", namespace="production"))
    assert "unresolved: NXDOMAIN" in unresolved
    assert unresolved.splitlines()[-1] == "wasted queries: 4 (every query)"
    srv = format_resolution(dns.resolve("_redis._tcp.redis", namespace="data", qtype="SRV"))
    assert "additional:" in srv and "redis-0.redis.data.svc.cluster.local.\t5\tIN\tA" in srv


def test_cluster_dns_resolv_conf_uses_its_settings() -> None:
    cluster = ClusterDNS(SERVICES, domain="corp.internal", cluster_dns=["10.0.0.10", "10.0.0.11"])
    assert cluster.resolv_conf(pod("p", "production")).splitlines() == [
        "search production.svc.corp.internal svc.corp.internal corp.internal",
        "nameserver 10.0.0.10",
        "nameserver 10.0.0.11",
        "options ndots:5",
    ]
