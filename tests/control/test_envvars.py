"""Service environment variables, as the kubelet injects them."""

from __future__ import annotations

import pytest

from kservice.api._base import ObjectMeta
from kservice.api.pod import Pod
from kservice.api.service import Service, ServicePort
from kservice.control.envvars import (
    env_var_name,
    link_variables,
    service_env,
    service_variables,
)


def svc(
    name: str,
    ns: str = "default",
    ip: str | None = None,
    ports: tuple[ServicePort, ...] = (),
    **kw: object,
) -> Service:
    return Service(
        metadata=ObjectMeta(name=name, namespace=ns),
        cluster_ip=ip,
        cluster_ips=kw.pop("cluster_ips", (ip,) if ip else ()),
        ports=ports,
        **kw,  # type: ignore[arg-type]
    )


def pod(ns: str = "production", **kw: object) -> Pod:
    return Pod(metadata=ObjectMeta(name="client", namespace=ns), **kw)  # type: ignore[arg-type]


KUBERNETES = svc("kubernetes", "default", "10.96.0.1", (ServicePort(443, name="https"),))
BACKEND = svc("backend-api", "production", "10.96.100.10", (ServicePort(80, name="http"),))
PUBLIC = svc(
    "public-api",
    "production",
    "10.96.100.30",
    (ServicePort(443, name="https", node_port=31443), ServicePort(80, name="http")),
    type="LoadBalancer",
    cluster_ips=("10.96.100.30", "fd00:10:96::30"),
)
DEMO = svc("demo-app", "staging", "10.96.100.20", (ServicePort(80, name="http"),), type="NodePort")
REDIS = svc("redis", "data", "None", (ServicePort(6379, name="redis"),))
BILLING = svc(
    "billing-db", "billing", type="ExternalName", external_name="billing-db.prod.example.com"
)
CLUSTER = [KUBERNETES, BACKEND, PUBLIC, DEMO, REDIS, BILLING]

KUBERNETES_VARS = [
    ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
    ("KUBERNETES_SERVICE_PORT", "443"),
    ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
    ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
    ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
    ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
    ("KUBERNETES_PORT_443_TCP_PORT", "443"),
    ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
]
BACKEND_VARS = [
    ("BACKEND_API_SERVICE_HOST", "10.96.100.10"),
    ("BACKEND_API_SERVICE_PORT", "80"),
    ("BACKEND_API_SERVICE_PORT_HTTP", "80"),
    ("BACKEND_API_PORT", "tcp://10.96.100.10:80"),
    ("BACKEND_API_PORT_80_TCP", "tcp://10.96.100.10:80"),
    ("BACKEND_API_PORT_80_TCP_PROTO", "tcp"),
    ("BACKEND_API_PORT_80_TCP_PORT", "80"),
    ("BACKEND_API_PORT_80_TCP_ADDR", "10.96.100.10"),
]
# Dual-stack: only the primary ClusterIP is used.
PUBLIC_VARS = [
    ("PUBLIC_API_SERVICE_HOST", "10.96.100.30"),
    ("PUBLIC_API_SERVICE_PORT", "443"),
    ("PUBLIC_API_SERVICE_PORT_HTTPS", "443"),
    ("PUBLIC_API_SERVICE_PORT_HTTP", "80"),
    ("PUBLIC_API_PORT", "tcp://10.96.100.30:443"),
    ("PUBLIC_API_PORT_443_TCP", "tcp://10.96.100.30:443"),
    ("PUBLIC_API_PORT_443_TCP_PROTO", "tcp"),
    ("PUBLIC_API_PORT_443_TCP_PORT", "443"),
    ("PUBLIC_API_PORT_443_TCP_ADDR", "10.96.100.30"),
    ("PUBLIC_API_PORT_80_TCP", "tcp://10.96.100.30:80"),
    ("PUBLIC_API_PORT_80_TCP_PROTO", "tcp"),
    ("PUBLIC_API_PORT_80_TCP_PORT", "80"),
    ("PUBLIC_API_PORT_80_TCP_ADDR", "10.96.100.30"),
]


def test_production_pod_sees_its_namespace_and_the_master_service() -> None:
    env = service_env(pod("production"), CLUSTER)
    # Services sorted by name, each in FromServices order.
    assert list(env.items()) == BACKEND_VARS + KUBERNETES_VARS + PUBLIC_VARS


def test_staging_pod() -> None:
    env = service_env(pod("staging"), CLUSTER)
    assert list(env) == [
        "DEMO_APP_SERVICE_HOST",
        "DEMO_APP_SERVICE_PORT",
        "DEMO_APP_SERVICE_PORT_HTTP",
        "DEMO_APP_PORT",
        "DEMO_APP_PORT_80_TCP",
        "DEMO_APP_PORT_80_TCP_PROTO",
        "DEMO_APP_PORT_80_TCP_PORT",
        "DEMO_APP_PORT_80_TCP_ADDR",
        *(name for name, _ in KUBERNETES_VARS),
    ]


@pytest.mark.parametrize("namespace", ["data", "billing"])
def test_headless_and_external_name_get_nothing(namespace: str) -> None:
    assert list(service_env(pod(namespace), CLUSTER).items()) == KUBERNETES_VARS


def test_enable_service_links_false_keeps_the_master_service() -> None:
    env = service_env(pod("production", enable_service_links=False), CLUSTER)
    assert list(env.items()) == KUBERNETES_VARS


def test_pod_in_default_sees_default_services_and_kubernetes_once() -> None:
    other = svc("other", "default", "10.96.0.50", (ServicePort(8080),))
    env = service_env(pod("default"), [KUBERNETES, other])
    assert list(env)[: len(KUBERNETES_VARS)] == [n for n, _ in KUBERNETES_VARS]
    assert env["OTHER_SERVICE_HOST"] == "10.96.0.50"
    assert "OTHER_SERVICE_PORT_" not in "".join(env)  # unnamed port: no per-name variable
    env = service_env(pod("default", enable_service_links=False), [KUBERNETES, other])
    assert list(env.items()) == KUBERNETES_VARS


def test_only_the_kubernetes_service_of_default_is_a_master_service() -> None:
    elsewhere = svc("kubernetes", "kube-system", "10.96.0.99", (ServicePort(443),))
    dns = svc("kube-dns", "default", "10.96.0.10", (ServicePort(53, protocol="UDP"),))
    env = service_env(pod("production"), [elsewhere, dns])
    assert env == {}


@pytest.mark.parametrize("order", [1, -1])
def test_namespace_service_wins_over_master_service(order: int) -> None:
    local = svc("kubernetes", "production", "10.96.100.1", (ServicePort(8443, name="https"),))
    env = service_env(pod("production"), [KUBERNETES, local][::order])
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.100.1"
    assert env["KUBERNETES_PORT"] == "tcp://10.96.100.1:8443"
    assert "KUBERNETES_PORT_443_TCP" not in env


def test_links_disabled_master_service_is_not_shadowed() -> None:
    local = svc("kubernetes", "production", "10.96.100.1", (ServicePort(8443, name="https"),))
    env = service_env(pod("production", enable_service_links=False), [local, KUBERNETES])
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"


def test_unallocated_services_are_skipped() -> None:
    pending = svc("pending", "production", None, (ServicePort(80),))
    assert service_env(pod("production"), [pending]) == {}


def test_ipv6_addresses_are_bracketed_in_urls_only() -> None:
    v6 = svc("v6-api", "production", "fd00:10:96::42", (ServicePort(8080, name="web"),))
    env = service_env(pod("production"), [v6])
    assert env == {
        "V6_API_SERVICE_HOST": "fd00:10:96::42",
        "V6_API_SERVICE_PORT": "8080",
        "V6_API_SERVICE_PORT_WEB": "8080",
        "V6_API_PORT": "tcp://[fd00:10:96::42]:8080",
        "V6_API_PORT_8080_TCP": "tcp://[fd00:10:96::42]:8080",
        "V6_API_PORT_8080_TCP_PROTO": "tcp",
        "V6_API_PORT_8080_TCP_PORT": "8080",
        "V6_API_PORT_8080_TCP_ADDR": "fd00:10:96::42",
    }


def test_ipv6_primary_of_dual_stack() -> None:
    v6first = svc(
        "dual",
        "production",
        "fd00::7",
        (ServicePort(80),),
        cluster_ips=("fd00::7", "10.96.100.7"),
    )
    env = service_env(pod("production"), [v6first])
    assert env["DUAL_SERVICE_HOST"] == "fd00::7"
    assert env["DUAL_PORT"] == "tcp://[fd00::7]:80"


def test_upstream_from_services_table() -> None:
    """The expectations of kubelet's envvars_test.go TestFromServices."""
    services = [
        svc("foo-bar", ip="1.2.3.4", ports=(ServicePort(8080, protocol="TCP"),)),
        svc(
            "abc-123",
            ip="5.6.7.8",
            ports=(
                ServicePort(8081, name="u-d-p", protocol="UDP"),
                ServicePort(8081, name="t-c-p", protocol="TCP"),
            ),
        ),
        svc(
            "q-u-u-x",
            ip="9.8.7.6",
            ports=(ServicePort(8082, protocol="TCP"), ServicePort(8083, name="8083")),
        ),
        svc("svrc-clusterip-none", ip="None", ports=(ServicePort(8082),)),
        svc("svrc-clusterip-empty", ip="", ports=(ServicePort(8082),)),
        svc(
            "super-ipv6",
            ip="2001:DB8::",
            ports=(
                ServicePort(8084, name="u-d-p", protocol="UDP"),
                ServicePort(8084, name="t-c-p", protocol="TCP"),
            ),
        ),
        svc("sctp-1", ip="1.2.3.4", ports=(ServicePort(777, protocol="SCTP"),)),
    ]
    expected = [
        ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
        ("FOO_BAR_SERVICE_PORT", "8080"),
        ("FOO_BAR_PORT", "tcp://1.2.3.4:8080"),
        ("FOO_BAR_PORT_8080_TCP", "tcp://1.2.3.4:8080"),
        ("FOO_BAR_PORT_8080_TCP_PROTO", "tcp"),
        ("FOO_BAR_PORT_8080_TCP_PORT", "8080"),
        ("FOO_BAR_PORT_8080_TCP_ADDR", "1.2.3.4"),
        ("ABC_123_SERVICE_HOST", "5.6.7.8"),
        ("ABC_123_SERVICE_PORT", "8081"),
        ("ABC_123_SERVICE_PORT_U_D_P", "8081"),
        ("ABC_123_SERVICE_PORT_T_C_P", "8081"),
        ("ABC_123_PORT", "udp://5.6.7.8:8081"),
        ("ABC_123_PORT_8081_UDP", "udp://5.6.7.8:8081"),
        ("ABC_123_PORT_8081_UDP_PROTO", "udp"),
        ("ABC_123_PORT_8081_UDP_PORT", "8081"),
        ("ABC_123_PORT_8081_UDP_ADDR", "5.6.7.8"),
        ("ABC_123_PORT_8081_TCP", "tcp://5.6.7.8:8081"),
        ("ABC_123_PORT_8081_TCP_PROTO", "tcp"),
        ("ABC_123_PORT_8081_TCP_PORT", "8081"),
        ("ABC_123_PORT_8081_TCP_ADDR", "5.6.7.8"),
        ("Q_U_U_X_SERVICE_HOST", "9.8.7.6"),
        ("Q_U_U_X_SERVICE_PORT", "8082"),
        ("Q_U_U_X_SERVICE_PORT_8083", "8083"),
        ("Q_U_U_X_PORT", "tcp://9.8.7.6:8082"),
        ("Q_U_U_X_PORT_8082_TCP", "tcp://9.8.7.6:8082"),
        ("Q_U_U_X_PORT_8082_TCP_PROTO", "tcp"),
        ("Q_U_U_X_PORT_8082_TCP_PORT", "8082"),
        ("Q_U_U_X_PORT_8082_TCP_ADDR", "9.8.7.6"),
        ("Q_U_U_X_PORT_8083_TCP", "tcp://9.8.7.6:8083"),
        ("Q_U_U_X_PORT_8083_TCP_PROTO", "tcp"),
        ("Q_U_U_X_PORT_8083_TCP_PORT", "8083"),
        ("Q_U_U_X_PORT_8083_TCP_ADDR", "9.8.7.6"),
        ("SUPER_IPV6_SERVICE_HOST", "2001:DB8::"),
        ("SUPER_IPV6_SERVICE_PORT", "8084"),
        ("SUPER_IPV6_SERVICE_PORT_U_D_P", "8084"),
        ("SUPER_IPV6_SERVICE_PORT_T_C_P", "8084"),
        ("SUPER_IPV6_PORT", "udp://[2001:DB8::]:8084"),
        ("SUPER_IPV6_PORT_8084_UDP", "udp://[2001:DB8::]:8084"),
        ("SUPER_IPV6_PORT_8084_UDP_PROTO", "udp"),
        ("SUPER_IPV6_PORT_8084_UDP_PORT", "8084"),
        ("SUPER_IPV6_PORT_8084_UDP_ADDR", "2001:DB8::"),
        ("SUPER_IPV6_PORT_8084_TCP", "tcp://[2001:DB8::]:8084"),
        ("SUPER_IPV6_PORT_8084_TCP_PROTO", "tcp"),
        ("SUPER_IPV6_PORT_8084_TCP_PORT", "8084"),
        ("SUPER_IPV6_PORT_8084_TCP_ADDR", "2001:DB8::"),
        ("SCTP_1_SERVICE_HOST", "1.2.3.4"),
        ("SCTP_1_SERVICE_PORT", "777"),
        ("SCTP_1_PORT", "sctp://1.2.3.4:777"),
        ("SCTP_1_PORT_777_SCTP", "sctp://1.2.3.4:777"),
        ("SCTP_1_PORT_777_SCTP_PROTO", "sctp"),
        ("SCTP_1_PORT_777_SCTP_PORT", "777"),
        ("SCTP_1_PORT_777_SCTP_ADDR", "1.2.3.4"),
    ]
    assert service_variables(services) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("backend-api", "BACKEND_API"), ("redis", "REDIS"), ("a-b-c", "A_B_C"), ("8083", "8083")],
)
def test_env_var_name(name: str, expected: str) -> None:
    assert env_var_name(name) == expected


def test_link_variables_default_protocol() -> None:
    service = svc("x", ip="10.0.0.1", ports=(ServicePort(53, protocol=""),))
    assert link_variables(service)[0] == ("X_PORT", "tcp://10.0.0.1:53")


def test_colliding_names_later_service_wins() -> None:
    # "a" has A_PORT_80_TCP_PORT=80; "a-port-80-tcp" has A_PORT_80_TCP_PORT=tcp://...
    a = svc("a", "production", "10.0.0.1", (ServicePort(80),))
    b = svc("a-port-80-tcp", "production", "10.0.0.2", (ServicePort(80),))
    env = service_env(pod("production"), [b, a])
    assert env["A_PORT_80_TCP_PORT"] == "tcp://10.0.0.2:80"
