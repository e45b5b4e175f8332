"""Service and ServicePort: parsing, defaulting, validation (exact API-server messages)."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kservice.api.service import Service, ServicePort, apply_defaults, validate_service
from kservice.errors import KServiceError, ValidationError


def manifest(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "prod"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    base["spec"].update(spec)
    return base


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Service.from_manifest(data)
    assert info.value.kind == "Service"
    return [str(e) for e in info.value.errors]


# --------------------------------------------------------------------------- defaults
def test_defaults_clusterip_service() -> None:
    svc = Service.from_manifest(manifest())
    assert svc.type == "ClusterIP"
    assert svc.session_affinity == "None"
    assert svc.session_affinity_timeout is None
    assert svc.internal_traffic_policy == "Cluster"
    assert svc.external_traffic_policy is None  # not externally accessible
    assert svc.ip_family_policy == "SingleStack"
    assert svc.allocate_load_balancer_node_ports is None
    (port,) = svc.ports
    assert port == ServicePort(port=80, protocol="TCP", target_port=80)
    assert svc.namespace == "prod" and svc.name == "web" and svc.key == ("prod", "web")


def test_defaults_loadbalancer_and_affinity() -> None:
    svc = Service.from_manifest(
        manifest(type="LoadBalancer", sessionAffinity="ClientIP", ports=[{"port": 443}])
    )
    assert svc.external_traffic_policy == "Cluster"
    assert svc.allocate_load_balancer_node_ports is True
    assert svc.session_affinity_timeout == 10800
    assert svc.externally_accessible and svc.uses_node_ports and not svc.needs_health_check


def test_defaults_namespace_and_target_port_named() -> None:
    data = manifest(ports=[{"port": 80, "targetPort": "http", "name": "web"}])
    del data["metadata"]["namespace"]
    svc = Service.from_manifest(data)
    assert svc.namespace == "default"
    assert svc.ports[0].target_port == "http"


def test_cluster_ip_and_cluster_ips_are_synced() -> None:
    a = Service.from_manifest(manifest(clusterIP="10.96.0.10"))
    assert a.cluster_ips == ("10.96.0.10",) and a.ip_families == ("IPv4",)
    b = Service.from_manifest(
        manifest(clusterIPs=["fd00::10", "10.96.0.10"], ipFamilyPolicy="PreferDualStack")
    )
    assert b.cluster_ip == "fd00::10" and b.ip_families == ("IPv6", "IPv4")


def test_headless_without_selector_defaults_to_require_dual_stack() -> None:
    data = manifest(clusterIP="None")
    del data["spec"]["selector"]
    svc = Service.from_manifest(data)
    assert svc.is_headless and svc.ip_family_policy == "RequireDualStack"


def test_external_name_has_no_ip_fields() -> None:
    data = manifest(type="ExternalName", externalName="db.example.com.")
    data["spec"].pop("ports")
    svc = Service.from_manifest(data)
    assert svc.ip_family_policy is None and svc.internal_traffic_policy is None
    assert svc.external_name == "db.example.com."


def test_apply_defaults_is_idempotent() -> None:
    svc = Service.from_manifest(manifest(type="NodePort"))
    assert apply_defaults(svc) == svc


# ------------------------------------------------------------------------ round trip
ROUND_TRIP_CASES = [
    manifest(),
    manifest(type="NodePort", ports=[{"port": 80, "nodePort": 30080, "name": "http"}]),
    manifest(
        type="LoadBalancer",
        externalTrafficPolicy="Local",
        healthCheckNodePort=32000,
        loadBalancerSourceRanges=["10.0.0.0/8"],
        loadBalancerClass="example.com/lb",
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
    ),
    manifest(clusterIP="None", publishNotReadyAddresses=True),
    manifest(externalIPs=["198.51.100.7"], trafficDistribution="PreferClose"),
]


@pytest.mark.parametrize("data", ROUND_TRIP_CASES)
def test_round_trip(data: dict[str, Any]) -> None:
    svc = Service.from_manifest(data)
    again = Service.from_manifest(svc.to_manifest())
    assert again == svc
    assert hash(again) == hash(svc)


def test_status_ingress_round_trip_and_ip_mode_default() -> None:
    data = manifest(type="LoadBalancer")
    data["status"] = {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"hostname": "lb.x"}]}}
    svc = Service.from_manifest(data)
    assert svc.load_balancer_ingress[0].ip_mode == "VIP"
    assert svc.load_balancer_ingress[1].ip_mode is None
    assert Service.from_manifest(svc.to_manifest()) == svc


# ------------------------------------------------------------------------ validation
INVALID = [
    (
        "port zero",
        manifest(ports=[{"port": 0}]),
        # As upstream: targetPort defaults to the (invalid) port, so it is reported too.
        [
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        ],
    ),
    (
        "port too big",
        manifest(ports=[{"port": 65536, "targetPort": 8080}]),
        ["spec.ports[0].port: Invalid value: 65536: must be between 1 and 65535, inclusive"],
    ),
    (
        "names required with several ports",
        manifest(ports=[{"port": 80}, {"port": 443, "name": "https"}]),
        ["spec.ports[0].name: Required value"],
    ),
    (
        "duplicate port names",
        manifest(ports=[{"port": 80, "name": "a"}, {"port": 81, "name": "a"}]),
        ['spec.ports[1].name: Duplicate value: "a"'],
    ),
    (
        "duplicate port and protocol",
        manifest(ports=[{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]),
        ['spec.ports[1]: Duplicate value: {"port":80,"protocol":"TCP"}'],
    ),
    (
        "bad protocol",
        manifest(ports=[{"port": 80, "protocol": "ICMP"}]),
        [
            'spec.ports[0].protocol: Unsupported value: "ICMP": supported values: '
            '"SCTP", "TCP", "UDP"'
        ],
    ),
    (
        "bad type",
        manifest(type="Magic"),
        [
            'spec.type: Unsupported value: "Magic": supported values: "ClusterIP", '
            '"ExternalName", "LoadBalancer", "NodePort"'
        ],
    ),
    (
        "no ports",
        manifest(ports=[]),
        ["spec.ports: Required value"],
    ),
    (
        "nodePort on ClusterIP",
        manifest(ports=[{"port": 80, "nodePort": 30080}]),
        ["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"],
    ),
    (
        "headless NodePort",
        manifest(type="NodePort", clusterIP="None"),
        [
            'spec.clusterIPs[0]: Invalid value: "None": '
            "may not be set to 'None' for NodePort services"
        ],
    ),
    (
        "affinity timeout too large",
        manifest(
            sessionAffinity="ClientIP",
            sessionAffinityConfig={"clientIP": {"timeoutSeconds": 86401}},
        ),
        [
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: "
            "must be greater than 0 and less than 86400"
        ],
    ),
    (
        "affinity timeout zero",
        manifest(
            sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 0}}
        ),
        [
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: "
            "must be greater than 0 and less than 86400"
        ],
    ),
    (
        "affinity config with None",
        manifest(sessionAffinityConfig={"clientIP": {"timeoutSeconds": 10}}),
        ["spec.sessionAffinityConfig: Forbidden: must not be set when session affinity is None"],
    ),
    (
        "etp on a ClusterIP service",
        manifest(externalTrafficPolicy="Local"),
        [
            'spec.externalTrafficPolicy: Invalid value: "Local": may only be set for '
            "externally-accessible services"
        ],
    ),
    (
        "bad etp",
        manifest(type="NodePort", externalTrafficPolicy="Nearest"),
        [
            'spec.externalTrafficPolicy: Unsupported value: "Nearest": supported values: '
            '"Cluster", "Local"'
        ],
    ),
    (
        "hcnp without Local",
        manifest(type="LoadBalancer", healthCheckNodePort=32000),
        [
            "spec.healthCheckNodePort: Invalid value: 32000: may only be set when `type` is "
            "'LoadBalancer' and `externalTrafficPolicy` is 'Local'"
        ],
    ),
    (
        "source ranges on NodePort",
        manifest(type="NodePort", loadBalancerSourceRanges=["10.0.0.0/8"]),
        [
            "spec.LoadBalancerSourceRanges: Forbidden: "
            "may only be used when `type` is 'LoadBalancer'"
        ],
    ),
    (
        "lb class on ClusterIP",
        manifest(loadBalancerClass="example.com/lb"),
        ["spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'"],
    ),
    (
        "allocateLoadBalancerNodePorts on NodePort",
        manifest(type="NodePort", allocateLoadBalancerNodePorts=False),
        [
            "spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is "
            "'LoadBalancer'"
        ],
    ),
    (
        "cluster IPs mismatch",
        manifest(clusterIP="10.96.0.1", clusterIPs=["10.96.0.2"]),
        ['spec.clusterIPs: Invalid value: ["10.96.0.2"]: first value must match `clusterIP`'],
    ),
    (
        "two IPs of one family",
        manifest(clusterIPs=["10.96.0.1", "10.96.0.2"], ipFamilyPolicy="RequireDualStack"),
        [
            'spec.clusterIPs: Invalid value: ["10.96.0.1","10.96.0.2"]: may specify no more '
            "than one IP for each IP family"
        ],
    ),
    (
        "None not alone",
        manifest(clusterIPs=["None", "10.96.0.2"], ipFamilyPolicy="RequireDualStack"),
        [
            'spec.clusterIPs: Invalid value: ["None","10.96.0.2"]: \'None\' must be the first '
            "and only value"
        ],
    ),
    (
        "family mismatch",
        manifest(clusterIP="10.96.0.1", ipFamilies=["IPv6"]),
        [
            'spec.clusterIPs[0]: Invalid value: "10.96.0.1": expected an IPv6 value as '
            "indicated by `ipFamilies[0]`"
        ],
    ),
    (
        "bad family and policy",
        manifest(ipFamilies=["IPv5"], ipFamilyPolicy="Sometimes"),
        [
            'spec.ipFamilies[0]: Unsupported value: "IPv5": supported values: "IPv4", "IPv6"',
            'spec.ipFamilyPolicy: Unsupported value: "Sometimes": supported values: '
            '"PreferDualStack", "RequireDualStack", "SingleStack"',
        ],
    ),
    (
        "external name missing",
        {**manifest(type="ExternalName"), "spec": {"type": "ExternalName"}},
        ["spec.externalName: Required value"],
    ),
    (
        "external name with cluster IP",
        {
            **manifest(),
            "spec": {
                "type": "ExternalName",
                "externalName": "x.example.com",
                "clusterIP": "10.0.0.1",
            },
        },
        ["spec.clusterIPs: Forbidden: may not be set for ExternalName services"],
    ),
    (
        "internal traffic policy",
        manifest(internalTrafficPolicy="Nearby"),
        [
            'spec.internalTrafficPolicy: Unsupported value: "Nearby": supported values: '
            '"Cluster", "Local"'
        ],
    ),
    (
        "duplicate nodePort same protocol",
        manifest(
            type="NodePort",
            ports=[
                {"port": 80, "name": "a", "nodePort": 30080},
                {"port": 81, "name": "b", "nodePort": 30080},
            ],
        ),
        ["spec.ports[1].nodePort: Duplicate value: 30080"],
    ),
    (
        "type errors are field errors",
        manifest(ports=[{"port": "eighty", "targetPort": 80}]),
        [
            'spec.ports[0].port: Invalid value: "eighty": must be an integer, not string',
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ],
    ),
    (
        "unknown spec field",
        manifest(selecter={"app": "x"}),
        ['spec: Forbidden: unknown field "selecter": field not declared in schema'],
    ),
]


@pytest.mark.parametrize(("name", "data", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid(name: str, data: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(data) == expected


def test_same_node_port_for_tcp_and_udp_is_allowed() -> None:
    svc = Service.from_manifest(
        manifest(
            type="NodePort",
            ports=[
                {"port": 53, "name": "dns-tcp", "protocol": "TCP", "nodePort": 30053},
                {"port": 53, "name": "dns-udp", "protocol": "UDP", "nodePort": 30053},
            ],
        )
    )
    assert [p.node_port for p in svc.ports] == [30053, 30053]


def test_error_message_names_object_and_collects_everything() -> None:
    data = manifest(ports=[{"port": 0}, {"port": 70000}])
    data["metadata"]["name"] = "Web_1"
    with pytest.raises(ValidationError) as info:
        Service.from_manifest(data)
    text = str(info.value)
    assert text.startswith('Service "Web_1" is invalid: [metadata.name: Invalid value: "Web_1": ')
    assert "spec.ports[0].name: Required value" in text
    assert "spec.ports[1].port: Invalid value: 70000" in text
    assert isinstance(info.value, ValueError) and isinstance(info.value, KServiceError)


def test_single_error_message_format() -> None:
    with pytest.raises(ValidationError) as info:
        Service.from_manifest(manifest(ports=[{"port": 0, "targetPort": 8080}]))
    assert str(info.value) == (
        'Service "web" is invalid: spec.ports[0].port: Invalid value: 0: '
        "must be between 1 and 65535, inclusive"
    )


def test_validate_service_on_constructed_object() -> None:
    svc = Service.from_manifest(manifest())
    assert validate_service(svc) == []
    bad = attrs.evolve(svc, session_affinity="Sticky")
    assert [str(e) for e in validate_service(bad)] == [
        'spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None"'
    ]


# ------------------------------------------------------------------------ properties
json_leaf = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=12)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
SPEC_KEYS = [
    "type", "selector", "ports", "clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy",
    "externalIPs", "sessionAffinity", "sessionAffinityConfig", "externalTrafficPolicy",
    "internalTrafficPolicy", "healthCheckNodePort", "loadBalancerIP",
    "loadBalancerSourceRanges", "loadBalancerClass", "allocateLoadBalancerNodePorts",
    "externalName", "publishNotReadyAddresses", "trafficDistribution",
]  # fmt: skip


@given(json_value)
def test_arbitrary_input_only_raises_validation_error(data: Any) -> None:
    with contextlib.suppress(ValidationError):
        Service.from_manifest(data)


@given(st.sampled_from(ROUND_TRIP_CASES), st.sampled_from(SPEC_KEYS), json_value)
def test_mutated_manifests_only_raise_validation_error(
    base: dict[str, Any], key: str, value: Any
) -> None:
    data = copy.deepcopy(base)
    data["spec"][key] = value
    try:
        svc = Service.from_manifest(data)
    except ValidationError:
        return
    # Whatever was accepted round-trips.
    assert Service.from_manifest(svc.to_manifest()) == svc


@given(
    st.lists(
        st.tuples(st.integers(1, 65535), st.sampled_from(["TCP", "UDP", "SCTP"])),
        min_size=1,
        max_size=5,
        unique=True,
    ),
    st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]),
    st.sampled_from(["None", "ClientIP"]),
)
def test_generated_valid_services_round_trip(
    ports: list[tuple[int, str]], svc_type: str, affinity: str
) -> None:
    data = manifest(
        type=svc_type,
        sessionAffinity=affinity,
        ports=[
            {"port": p, "protocol": proto, "name": f"p{i}"} for i, (p, proto) in enumerate(ports)
        ],
    )
    svc = Service.from_manifest(data)
    assert Service.from_manifest(svc.to_manifest()) == svc
