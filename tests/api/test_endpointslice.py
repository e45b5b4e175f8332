"""EndpointSlice: parsing, defaulting, validation (API-server messages), round trips."""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kservice.api._base import ObjectMeta
from kservice.api.endpointslice import (
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    Endpoint,
    EndpointConditions,
    EndpointHints,
    EndpointPort,
    EndpointSlice,
    ObjectReference,
    validate_endpointslice,
)
from kservice.errors import KServiceError, ValidationError

# Beginnings of the API server's regex-based messages (the regex tails are the
# validation module's business and tested there).
DNS1123_LABEL = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name'"
)
DNS1123_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com'"
)
LABEL_VALUE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue'"
)


def unknown(path: str, key: str) -> str:
    return f'{path}: Forbidden: unknown field "{key}": field not declared in schema'


def manifest(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc",
            "namespace": "prod",
            "labels": {
                LABEL_SERVICE_NAME: "web",
                LABEL_MANAGED_BY: "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
    base.update(fields)
    return base


def endpoint(**fields: Any) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": ["10.0.0.1"]}
    ep.update(fields)
    return ep


def errors_of(data: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        EndpointSlice.from_manifest(data)
    assert info.value.kind == "EndpointSlice"
    return [str(e) for e in info.value.errors]


# --------------------------------------------------------------------------- defaults
def test_parse_and_defaults() -> None:
    es = EndpointSlice.from_manifest(
        manifest(endpoints=[{"addresses": ["10.0.0.1"]}], ports=[{"port": 80}, {"name": "all"}])
    )
    assert es.name == "web-abc" and es.namespace == "prod" and es.key == ("prod", "web-abc")
    assert es.address_type == "IPv4"
    assert es.service_name == "web"
    assert es.managed_by == "endpointslice-controller.k8s.io"
    (ep,) = es.endpoints
    assert ep == Endpoint(addresses=("10.0.0.1",))
    assert ep.conditions == EndpointConditions(ready=None, serving=None, terminating=None)
    # SetDefaults_EndpointPort: name "" and protocol TCP; an absent port stays unset.
    assert es.ports == (
        EndpointPort(port=80, name="", protocol="TCP"),
        EndpointPort(port=None, name="all", protocol="TCP"),
    )


def test_namespace_defaults_and_labels_are_optional() -> None:
    data = manifest()
    data["metadata"] = {"name": "web-abc"}
    es = EndpointSlice.from_manifest(data)
    assert es.namespace == "default"
    assert es.service_name is None and es.managed_by is None


def test_full_endpoint_is_kept() -> None:
    es = EndpointSlice.from_manifest(
        manifest(
            endpoints=[
                {
                    "addresses": ["10.0.0.7"],
                    "conditions": {"ready": False, "serving": True, "terminating": True},
                    "hostname": "web-0",
                    "nodeName": "node-1.example",
                    "zone": "us-east-1a",
                    "hints": {
                        "forZones": [{"name": "us-east-1a"}],
                        "forNodes": [{"name": "node-1.example"}],
                    },
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": "prod",
                        "name": "web-0",
                        "uid": "1234",
                        "resourceVersion": "99",  # accepted, not kept
                    },
                    "deprecatedTopology": {"kubernetes.io/hostname": "x"},  # ignored
                }
            ]
        )
    )
    (ep,) = es.endpoints
    assert ep == Endpoint(
        addresses=("10.0.0.7",),
        conditions=EndpointConditions(ready=False, serving=True, terminating=True),
        hostname="web-0",
        node_name="node-1.example",
        zone="us-east-1a",
        hints=EndpointHints(for_zones=("us-east-1a",), for_nodes=("node-1.example",)),
        target_ref=ObjectReference(kind="Pod", namespace="prod", name="web-0", uid="1234"),
    )


# unset ready/serving count as true, unset terminating as false (v1 API docs, kube-proxy)
CONDITION_CASES = [
    # (ready, serving, terminating) -> (is_ready, is_serving, is_terminating)
    ((None, None, None), (True, True, False)),
    ((True, True, False), (True, True, False)),
    ((False, None, None), (False, True, False)),
    ((False, True, True), (False, True, True)),
    ((False, False, True), (False, False, True)),
    ((None, False, None), (True, False, False)),
]


@pytest.mark.parametrize(("raw", "derived"), CONDITION_CASES)
def test_condition_semantics(
    raw: tuple[bool | None, bool | None, bool | None], derived: tuple[bool, bool, bool]
) -> None:
    cond = EndpointConditions(*raw)
    assert (cond.is_ready, cond.is_serving, cond.is_terminating) == derived
    ep = Endpoint(addresses=("10.0.0.1",), conditions=cond)
    assert (ep.is_ready, ep.is_serving, ep.is_terminating) == derived


def test_none_and_false_conditions_stay_distinct() -> None:
    unset = EndpointSlice.from_manifest(manifest(endpoints=[{"addresses": ["10.0.0.1"]}]))
    false = EndpointSlice.from_manifest(
        manifest(endpoints=[{"addresses": ["10.0.0.1"], "conditions": {"ready": False}}])
    )
    assert unset.endpoints[0].conditions.ready is None
    assert false.endpoints[0].conditions.ready is False
    assert unset != false
    assert "conditions" not in unset.to_manifest()["endpoints"][0]
    assert false.to_manifest()["endpoints"][0]["conditions"] == {"ready": False}


# ------------------------------------------------------------------------ round trips
ROUND_TRIP_CASES = [
    manifest(),
    manifest(endpoints=[], ports=[]),
    manifest(ports=[{"name": "", "protocol": "UDP"}]),
    manifest(
        addressType="IPv6",
        endpoints=[
            {"addresses": ["fd00::1", "fd00::2"], "conditions": {"serving": False}},
            {"addresses": ["2001:db8::5"], "hostname": "b", "zone": "z"},
        ],
        ports=[
            {"name": "https", "port": 443, "protocol": "TCP", "appProtocol": "https"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "sctp", "port": 9, "protocol": "SCTP", "appProtocol": "kubernetes.io/h2c"},
        ],
    ),
    manifest(
        addressType="FQDN",
        endpoints=[{"addresses": ["db.example.com"], "hints": {}, "targetRef": {}}],
    ),
    manifest(
        endpoints=[
            {
                "addresses": ["10.1.2.3"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": "n1",
                "hints": {"forZones": [{"name": "a"}, {"name": "b"}]},
                "targetRef": {"kind": "Pod", "name": "p"},
            }
        ]
    ),
]


@pytest.mark.parametrize("data", ROUND_TRIP_CASES)
def test_round_trip(data: dict[str, Any]) -> None:
    es = EndpointSlice.from_manifest(data)
    out = es.to_manifest()
    assert list(out)[:2] == ["apiVersion", "kind"]
    assert out["apiVersion"] == "discovery.k8s.io/v1" and out["kind"] == "EndpointSlice"
    assert EndpointSlice.from_manifest(out) == es
    assert validate_endpointslice(es) == []


def test_to_manifest_omits_unset_fields() -> None:
    es = EndpointSlice.from_manifest(
        manifest(endpoints=[{"addresses": ["10.0.0.1"]}], ports=[{"protocol": "UDP"}])
    )
    assert es.to_manifest() == {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc",
            "namespace": "prod",
            "labels": {
                LABEL_SERVICE_NAME: "web",
                LABEL_MANAGED_BY: "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"]}],
        "ports": [{"protocol": "UDP"}],
    }


def test_objects_are_immutable_and_hashable() -> None:
    es = EndpointSlice.from_manifest(ROUND_TRIP_CASES[-1])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        es.address_type = "IPv6"  # type: ignore[misc]
    assert isinstance(es.endpoints, tuple) and isinstance(es.endpoints[0].addresses, tuple)
    assert hash(es) == hash(EndpointSlice.from_manifest(ROUND_TRIP_CASES[-1]))


# ------------------------------------------------------------------------ validation
def many(n: int, make: Any) -> list[Any]:
    return [make(i) for i in range(n)]


INVALID: list[tuple[str, Any, list[str]]] = [
    (
        "address type required",
        {k: v for k, v in manifest().items() if k != "addressType"},
        ["addressType: Required value"],
    ),
    (
        "address type enum (the deprecated IP type is gone)",
        manifest(addressType="IP"),
        ['addressType: Unsupported value: "IP": supported values: "FQDN", "IPv4", "IPv6"'],
    ),
    (
        "an unparsable IPv4 address fails both IP checks, as upstream",
        manifest(endpoints=[endpoint(addresses=["10.0.0.300"])]),
        [
            'endpoints[0].addresses[0]: Invalid value: "10.0.0.300": must be a valid IPv4 address',
            'endpoints[0].addresses[0]: Invalid value: "10.0.0.300": must be a valid IP address',
        ],
    ),
    (
        "IPv6 address in an IPv4 slice",
        manifest(endpoints=[endpoint(addresses=["10.0.0.1", "fd00::1"])]),
        ['endpoints[0].addresses[1]: Invalid value: "fd00::1": must be a valid IPv4 address'],
    ),
    (
        "IPv4 address in an IPv6 slice",
        manifest(addressType="IPv6", endpoints=[endpoint(addresses=["10.0.0.1"])]),
        ['endpoints[0].addresses[0]: Invalid value: "10.0.0.1": must be a valid IPv6 address'],
    ),
    (
        "special addresses",
        manifest(
            endpoints=[endpoint(addresses=["0.0.0.0", "127.0.0.1", "169.254.1.1", "224.0.0.5"])]
        ),
        [
            'endpoints[0].addresses[0]: Invalid value: "0.0.0.0": may not be unspecified (0.0.0.0)',
            'endpoints[0].addresses[1]: Invalid value: "127.0.0.1": '
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
            'endpoints[0].addresses[2]: Invalid value: "169.254.1.1": '
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
            'endpoints[0].addresses[3]: Invalid value: "224.0.0.5": '
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ],
    ),
    (
        "special IPv6 addresses",
        manifest(addressType="IPv6", endpoints=[endpoint(addresses=["::1", "fe80::1"])]),
        [
            'endpoints[0].addresses[0]: Invalid value: "::1": '
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
            'endpoints[0].addresses[1]: Invalid value: "fe80::1": '
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ],
    ),
    (
        "FQDN addresses",
        manifest(addressType="FQDN", endpoints=[endpoint(addresses=["localhost"])]),
        [
            'endpoints[0].addresses[0]: Invalid value: "localhost": '
            "should be a domain with at least two segments separated by dots"
        ],
    ),
    (
        "an endpoint needs an address",
        manifest(endpoints=[endpoint(addresses=[])]),
        ["endpoints[0].addresses: Required value: must contain at least 1 address"],
    ),
    (
        "at most 100 addresses",
        manifest(endpoints=[endpoint(addresses=many(101, lambda i: f"10.0.1.{i + 1}"))]),
        ["endpoints[0].addresses: Too many: 101: must have at most 100 items"],
    ),
    (
        "at most 1000 endpoints, and then nothing else is checked",
        manifest(endpoints=many(1001, lambda i: endpoint(addresses=["bad"]))),
        ["endpoints: Too many: 1001: must have at most 1000 items"],
    ),
    (
        "hostname may not contain dots",
        manifest(endpoints=[endpoint(hostname="web.0")]),
        ['endpoints[0].hostname: Invalid value: "web.0": must not contain dots'],
    ),
    (
        "duplicate zone and node hints",
        manifest(
            endpoints=[
                endpoint(
                    hints={
                        "forZones": [{"name": "a"}, {"name": "a"}],
                        "forNodes": [{"name": "n1"}, {"name": "n1"}],
                    }
                )
            ]
        ),
        [
            'endpoints[0].hints.forZones[1].name: Duplicate value: "a"',
            'endpoints[0].hints.forNodes[1].name: Duplicate value: "n1"',
        ],
    ),
    (
        "at most 8 zone hints (node hints then unchecked, as upstream)",
        manifest(
            endpoints=[
                endpoint(
                    hints={
                        "forZones": many(9, lambda i: {"name": f"z{i}"}),
                        "forNodes": [{"name": "BAD"}],
                    }
                )
            ]
        ),
        ["endpoints[0].hints.forZones: Too many: 9: must have at most 8 items"],
    ),
    (
        "at most 8 node hints",
        manifest(endpoints=[endpoint(hints={"forNodes": many(9, lambda i: {"name": f"n{i}"})})]),
        ["endpoints[0].hints.forNodes: Too many: 9: must have at most 8 items"],
    ),
    (
        "port names are unique, the empty name too",
        manifest(ports=[{"port": 80}, {"port": 81}, {"name": "a", "port": 1}, {"name": "a"}]),
        ['ports[1].name: Duplicate value: ""', 'ports[3].name: Duplicate value: "a"'],
    ),
    (
        "protocol enum; an explicit empty protocol is not defaulted",
        manifest(ports=[{"name": "a", "protocol": "ICMP"}, {"name": "b", "protocol": ""}]),
        [
            'ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP"',
            'ports[1].protocol: Unsupported value: "": supported values: "SCTP", "TCP", "UDP"',
        ],
    ),
    (
        "port numbers (a kservice check)",
        manifest(ports=[{"name": "a", "port": 0}, {"name": "b", "port": 65536}]),
        [
            "ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "ports[1].port: Invalid value: 65536: must be between 1 and 65535, inclusive",
        ],
    ),
    (
        "at most 20000 ports",
        manifest(ports=many(20001, lambda i: {"name": f"p{i}", "port": 1 + i % 65535})),
        ["ports: Too many: 20001: must have at most 20000 items"],
    ),
    (
        "unknown fields are reported everywhere in the slice",
        manifest(
            spec={},
            endpoints=[
                endpoint(
                    ip="10.0.0.1",
                    conditions={"healthy": True},
                    hints={"forRegions": [], "forZones": [{"name": "a", "weight": 1}]},
                    targetRef={"kind": "Pod", "node": "n"},
                )
            ],
            ports=[{"name": "a", "targetPort": 80}],
        ),
        [
            unknown("<root>", "spec"),
            unknown("endpoints[0]", "ip"),
            unknown("endpoints[0].conditions", "healthy"),
            unknown("endpoints[0].targetRef", "node"),
            unknown("endpoints[0].hints", "forRegions"),
            unknown("endpoints[0].hints.forZones[0]", "weight"),
            unknown("ports[0]", "targetPort"),
        ],
    ),
    (
        "type errors are field errors",
        manifest(
            endpoints=[
                {"addresses": "10.0.0.1", "conditions": {"ready": "yes"}, "hostname": 7},
                "10.0.0.2",
            ],
            ports=[{"name": "a", "port": "80"}],
        ),
        [
            'endpoints[0].addresses: Invalid value: "10.0.0.1": must be an array, not string',
            'endpoints[0].conditions.ready: Invalid value: "yes": must be a boolean, not string',
            "endpoints[0].hostname: Invalid value: 7: must be a string, not number",
            'endpoints[1]: Invalid value: "10.0.0.2": must be an object, not string',
            'ports[0].port: Invalid value: "80": must be an integer, not string',
            "endpoints[0].addresses: Required value: must contain at least 1 address",
        ],
    ),
    (
        "a missing name is reported once",
        manifest(metadata={"namespace": "prod"}),
        ["metadata.name: Required value: name or generateName is required"],
    ),
]


@pytest.mark.parametrize(("name", "data", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid(name: str, data: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(data) == expected


# Regex-based messages: checked up to the regex tail.
INVALID_PREFIX: list[tuple[str, Any, str]] = [
    (
        "name is a DNS-1123 subdomain",
        manifest(metadata={"name": "Web_abc"}),
        f'metadata.name: Invalid value: "Web_abc": {DNS1123_SUBDOMAIN}',
    ),
    (
        "hostname is a DNS-1123 label",
        manifest(endpoints=[endpoint(hostname="Web_0")]),
        f'endpoints[0].hostname: Invalid value: "Web_0": {DNS1123_LABEL}',
    ),
    (
        "nodeName is a valid node name",
        manifest(endpoints=[endpoint(nodeName="Node_1")]),
        f'endpoints[0].nodeName: Invalid value: "Node_1": {DNS1123_SUBDOMAIN}',
    ),
    (
        "an empty nodeName is invalid",
        manifest(endpoints=[endpoint(nodeName="")]),
        f'endpoints[0].nodeName: Invalid value: "": {DNS1123_SUBDOMAIN}',
    ),
    (
        "zone hints are label values",
        manifest(endpoints=[endpoint(hints={"forZones": [{"name": "-a"}]})]),
        f'endpoints[0].hints.forZones[0].name: Invalid value: "-a": {LABEL_VALUE}',
    ),
    (
        "node hints are node names",
        manifest(endpoints=[endpoint(hints={"forNodes": [{"name": "N1"}]})]),
        f'endpoints[0].hints.forNodes[0].name: Invalid value: "N1": {DNS1123_SUBDOMAIN}',
    ),
    (
        "port names are DNS-1123 labels (not IANA service names)",
        manifest(ports=[{"name": "HTTP", "port": 80}]),
        f'ports[0].name: Invalid value: "HTTP": {DNS1123_LABEL}',
    ),
    (
        "appProtocol is a qualified name",
        manifest(ports=[{"name": "a", "appProtocol": "-h2c"}]),
        'ports[0].appProtocol: Invalid value: "-h2c": name part must consist of alphanumeric',
    ),
    (
        "labels are validated",
        manifest(metadata={"name": "web-abc", "labels": {"app": "-x"}}),
        f'metadata.labels: Invalid value: "-x": {LABEL_VALUE}',
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "prefix"), INVALID_PREFIX, ids=[c[0] for c in INVALID_PREFIX]
)
def test_invalid_regex_messages(name: str, data: dict[str, Any], prefix: str) -> None:
    (error,) = errors_of(data)
    assert error.startswith(prefix)


def test_long_port_names_are_fine() -> None:
    # EndpointSlice port names follow Service port names (DNS-1123 labels, up to
    # 63 characters), not container port names (IANA_SVC_NAME, up to 15).
    es = EndpointSlice.from_manifest(manifest(ports=[{"name": "a-very-long-port-name-for-grpc"}]))
    assert es.ports[0].name == "a-very-long-port-name-for-grpc"


def test_single_error_message_format() -> None:
    with pytest.raises(ValidationError) as info:
        EndpointSlice.from_manifest(manifest(endpoints=[endpoint(addresses=["fd00::1"])]))
    assert str(info.value) == (
        'EndpointSlice "web-abc" is invalid: endpoints[0].addresses[0]: '
        'Invalid value: "fd00::1": must be a valid IPv4 address'
    )
    assert isinstance(info.value, ValueError) and isinstance(info.value, KServiceError)


def test_every_error_is_collected_at_once() -> None:
    data = manifest(
        addressType="IPv4",
        endpoints=[endpoint(addresses=[]), endpoint(addresses=["::1"], hostname="a.b")],
        ports=[{"name": "x", "protocol": "ICMP"}, {"name": "x"}],
    )
    with pytest.raises(ValidationError) as info:
        EndpointSlice.from_manifest(data)
    assert str(info.value) == (
        'EndpointSlice "web-abc" is invalid: ['
        "endpoints[0].addresses: Required value: must contain at least 1 address, "
        'endpoints[1].addresses[0]: Invalid value: "::1": must be a valid IPv4 address, '
        'endpoints[1].addresses[0]: Invalid value: "::1": '
        "may not be in the loopback range (127.0.0.0/8, ::1/128), "
        'endpoints[1].hostname: Invalid value: "a.b": must not contain dots, '
        'ports[0].protocol: Unsupported value: "ICMP": supported values: "SCTP", "TCP", "UDP", '
        'ports[1].name: Duplicate value: "x"]'
    )


def test_not_an_object() -> None:
    assert errors_of(["x"]) == ['Invalid value: ["x"]: must be an object']


def test_validate_constructed_object() -> None:
    es = EndpointSlice(
        metadata=ObjectMeta(name="web-abc"),
        address_type="IPv4",
        endpoints=[Endpoint(addresses=["10.0.0.1"])],
        ports=[EndpointPort(port=80)],
    )
    assert validate_endpointslice(es) == []
    bad = attrs.evolve(es, address_type="IPv5")
    assert [str(e) for e in validate_endpointslice(bad)] == [
        'addressType: Unsupported value: "IPv5": supported values: "FQDN", "IPv4", "IPv6"'
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
TOP_KEYS = ["metadata", "addressType", "endpoints", "ports", "kind", "extra"]
ENDPOINT_KEYS = [
    "addresses", "conditions", "hostname", "nodeName", "zone", "hints", "targetRef",
    "deprecatedTopology", "extra",
]  # fmt: skip
PORT_KEYS = ["name", "protocol", "port", "appProtocol", "extra"]


def check_only_validation_error(data: Any) -> None:
    try:
        es = EndpointSlice.from_manifest(data)
    except ValidationError:
        return
    # Whatever was accepted is valid and round-trips.
    assert validate_endpointslice(es) == []
    assert EndpointSlice.from_manifest(es.to_manifest()) == es


@given(json_value)
def test_arbitrary_input_only_raises_validation_error(data: Any) -> None:
    check_only_validation_error(data)


@given(st.dictionaries(st.sampled_from(TOP_KEYS), json_value, max_size=6))
def test_arbitrary_top_level_fields_only_raise_validation_error(data: dict[str, Any]) -> None:
    check_only_validation_error(data)


@given(
    st.sampled_from(ROUND_TRIP_CASES),
    st.sampled_from(["top", "endpoint", "conditions", "hints", "port"]),
    st.sampled_from(TOP_KEYS + ENDPOINT_KEYS + PORT_KEYS + ["ready", "forZones", "forNodes"]),
    json_value,
)
def test_mutated_manifests_only_raise_validation_error(
    base: dict[str, Any], where: str, key: str, value: Any
) -> None:
    data = copy.deepcopy(base)
    data.setdefault("endpoints", []).append({"addresses": ["10.9.9.9"], "hints": {}})
    data.setdefault("ports", []).append({"name": "zz"})
    target: dict[str, Any] = {
        "top": data,
        "endpoint": data["endpoints"][-1],
        "conditions": data["endpoints"][-1].setdefault("conditions", {}),
        "hints": data["endpoints"][-1]["hints"],
        "port": data["ports"][-1],
    }[where]
    target[key] = value
    check_only_validation_error(data)


# Simple composed strategies: st.from_regex is correct but slow.
ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
alnum = st.text(ALNUM, min_size=1, max_size=4)
dns_label = st.builds(
    lambda a, sep, b: a + sep + b if sep else a, alnum, st.sampled_from(["", "-", "--"]), alnum
)
subdomain = st.lists(dns_label, min_size=1, max_size=3).map(".".join)
label_value = st.just("") | st.builds(
    lambda a, sep, b: a + sep + b if sep else a,
    st.text(ALNUM + "ABCXYZ", min_size=1, max_size=4),
    st.sampled_from(["", "-", "_", "."]),
    st.text(ALNUM + "ABCXYZ", min_size=1, max_size=4),
)
ipv4 = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(1, 254)).map(
    lambda t: f"10.{t[0]}.{t[1]}.{t[2]}"
)
ipv6 = st.integers(1, 2**64 - 1).map(lambda n: str(ipaddress.IPv6Address((0xFD00 << 112) | n)))
fqdn = st.tuples(dns_label, subdomain).map(lambda t: f"{t[0]}.{t[1]}")
maybe_bool = st.none() | st.booleans()
maybe_str = st.none() | st.text(max_size=8)


hints = st.none() | st.builds(
    EndpointHints,
    for_zones=st.lists(label_value, max_size=3, unique=True).map(tuple),
    for_nodes=st.lists(subdomain, max_size=3, unique=True).map(tuple),
)
target_refs = st.none() | st.builds(ObjectReference, maybe_str, maybe_str, maybe_str, maybe_str)
ENDPOINTS = {
    address_type: st.lists(
        st.builds(
            Endpoint,
            addresses=st.lists(address, min_size=1, max_size=3).map(tuple),
            conditions=st.builds(EndpointConditions, maybe_bool, maybe_bool, maybe_bool),
            hostname=st.none() | dns_label,
            node_name=st.none() | subdomain,
            zone=maybe_str,
            hints=hints,
            target_ref=target_refs,
        ),
        max_size=4,
    ).map(tuple)
    for address_type, address in (("IPv4", ipv4), ("IPv6", ipv6), ("FQDN", fqdn))
}
port_names = st.lists(st.just("") | dns_label, max_size=4, unique=True)
port_numbers = st.none() | st.integers(1, 65535)
protocols = st.sampled_from(["TCP", "UDP", "SCTP"])
app_protocols = st.none() | st.sampled_from(["http", "kubernetes.io/h2c"])


@st.composite
def endpoint_slices(draw: st.DrawFn) -> EndpointSlice:
    address_type = draw(st.sampled_from(sorted(ENDPOINTS)))
    ports = tuple(
        EndpointPort(draw(port_numbers), name, draw(protocols), draw(app_protocols))
        for name in draw(port_names)
    )
    meta = ObjectMeta(
        name=draw(subdomain),
        namespace=draw(dns_label),
        labels={LABEL_SERVICE_NAME: draw(dns_label)},
    )
    return EndpointSlice(meta, address_type, draw(ENDPOINTS[address_type]), ports)


@given(endpoint_slices())
def test_generated_valid_slices_round_trip(es: EndpointSlice) -> None:
    assert validate_endpointslice(es) == []
    assert EndpointSlice.from_manifest(es.to_manifest()) == es
