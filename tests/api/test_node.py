"""Node: parsing, validation (API-server messages), derived topology, round trips."""

from __future__ import annotations

import copy
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kservice.api._base import ObjectMeta
from kservice.api.node import (
    LABEL_HOSTNAME,
    LABEL_REGION,
    LABEL_ZONE,
    Node,
    NodeAddress,
    NodeCondition,
    validate_node,
)
from kservice.errors import ValidationError

DNS1123_SUBDOMAIN = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com'"
)
BAD_IP = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
BAD_CIDR = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
ONE_PER_FAMILY = "may specify no more than one CIDR for each IP family"


def manifest(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> Any:
    base: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": "node-1",
            "labels": {
                LABEL_HOSTNAME: "node-1",
                LABEL_ZONE: "us-east-1a",
                LABEL_REGION: "us-east-1",
            },
        },
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "192.168.1.10"},
                {"type": "Hostname", "address": "node-1"},
            ],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    if spec is not None:
        base["spec"] = spec
    if status is not None:
        base["status"] = status
    return base


def addresses(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"addresses": [{"type": t, "address": a} for t, a in pairs]}


def errors_of(data: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Node.from_manifest(data)
    assert info.value.kind == "Node"
    return [str(e) for e in info.value.errors]


# --------------------------------------------------------------------------- parsing
def test_parse() -> None:
    node = Node.from_manifest(manifest())
    assert node.name == "node-1"
    assert node.metadata.namespace == ""  # cluster-scoped
    assert node.pod_cidrs == ("10.244.1.0/24",) and node.pod_cidr == "10.244.1.0/24"
    assert node.unschedulable is False
    assert node.addresses == (
        NodeAddress("InternalIP", "192.168.1.10"),
        NodeAddress("Hostname", "node-1"),
    )
    assert node.conditions == (NodeCondition("Ready", "True"),)
    assert node.is_ready
    assert (node.zone, node.region, node.hostname) == ("us-east-1a", "us-east-1", "node-1")
    assert node.labels[LABEL_ZONE] == "us-east-1a"


def test_minimal_node() -> None:
    node = Node.from_manifest({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}})
    assert node == Node(metadata=ObjectMeta(name="n", namespace=""))
    assert node.pod_cidr is None and node.zone is None and node.hostname is None
    assert node.internal_ips == () and node.node_ip() is None and not node.is_ready
    assert node.to_manifest() == {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n"},
        "spec": {},
    }


def test_unknown_fields_are_ignored() -> None:
    data = manifest()
    data["spec"]["taints"] = [{"key": "k", "effect": "NoSchedule"}]
    data["spec"]["providerID"] = "aws:///i-123"
    data["status"]["capacity"] = {"cpu": "4"}
    data["status"]["nodeInfo"] = {"kubeletVersion": "v1.34.0"}
    data["status"]["addresses"][0]["extra"] = 1
    assert Node.from_manifest(data) == Node.from_manifest(manifest())


def test_pod_cidr_alone_fills_pod_cidrs() -> None:
    node = Node.from_manifest(manifest(spec={"podCIDR": "10.244.2.0/24"}))
    assert node.pod_cidrs == ("10.244.2.0/24",)
    dual = Node.from_manifest(manifest(spec={"podCIDRs": ["10.244.2.0/24", "fd00:1::/64"]}))
    assert dual.pod_cidr == "10.244.2.0/24"
    assert dual.to_manifest()["spec"] == {
        "podCIDR": "10.244.2.0/24",
        "podCIDRs": ["10.244.2.0/24", "fd00:1::/64"],
    }


def test_addresses_and_node_ip() -> None:
    node = Node.from_manifest(
        manifest(
            status=addresses(
                ("Hostname", "node-1"),
                ("ExternalIP", "203.0.113.7"),
                ("InternalIP", "fd00::10"),
                ("InternalIP", "192.168.1.10"),
                ("InternalDNS", "node-1.internal"),
                ("ExternalDNS", "node-1.example.com"),
            )
        )
    )
    assert node.internal_ips == ("fd00::10", "192.168.1.10")
    assert node.external_ips == ("203.0.113.7",)
    assert node.addresses_of_type("InternalDNS") == ("node-1.internal",)
    assert node.node_ip() == "fd00::10"  # first InternalIP
    assert node.node_ip("IPv4") == "192.168.1.10"
    assert node.node_ip("IPv6") == "fd00::10"
    external_only = Node.from_manifest(manifest(status=addresses(("ExternalIP", "203.0.113.7"))))
    assert external_only.node_ip() == "203.0.113.7"  # falls back to ExternalIP
    assert external_only.node_ip("IPv6") is None


@pytest.mark.parametrize(
    ("conditions", "ready"),
    [
        ([], False),
        ([{"type": "Ready", "status": "False"}], False),
        ([{"type": "Ready", "status": "Unknown"}], False),
        (
            [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            True,
        ),
    ],
)
def test_readiness(conditions: list[dict[str, str]], ready: bool) -> None:
    node = Node.from_manifest(manifest(status={"conditions": conditions}))
    assert node.is_ready is ready


# ------------------------------------------------------------------------ round trips
ROUND_TRIP_CASES = [
    manifest(),
    manifest(spec={}, status={}),
    manifest(
        spec={"podCIDRs": ["fd00:10:244:1::/64", "10.244.1.0/24"], "unschedulable": True},
        status={
            **addresses(("InternalIP", "fd00::10"), ("InternalIP", "192.168.1.10")),
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "Unknown"},
            ],
        },
    ),
]


@pytest.mark.parametrize("data", ROUND_TRIP_CASES)
def test_round_trip(data: dict[str, Any]) -> None:
    node = Node.from_manifest(data)
    out = node.to_manifest()
    assert list(out)[:2] == ["apiVersion", "kind"]
    assert out["apiVersion"] == "v1" and out["kind"] == "Node"
    assert Node.from_manifest(out) == node
    assert validate_node(node) == []


def test_objects_are_immutable_and_hashable() -> None:
    node = Node.from_manifest(manifest())
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        node.unschedulable = True  # type: ignore[misc]
    assert hash(node) == hash(Node.from_manifest(manifest()))


# ------------------------------------------------------------------------ validation
INVALID: list[tuple[str, Any, list[str]]] = [
    (
        "nodes are cluster-scoped",
        {**manifest(), "metadata": {"name": "node-1", "namespace": "default"}},
        ["metadata.namespace: Forbidden: not allowed on this type"],
    ),
    (
        "a missing name is reported once",
        {**manifest(), "metadata": {}},
        ["metadata.name: Required value: name or generateName is required"],
    ),
    (
        "pod CIDRs are CIDRs",
        manifest(spec={"podCIDRs": ["10.244.1.0/33"]}),
        [f'spec.podCIDRs[0]: Invalid value: "10.244.1.0/33": {BAD_CIDR}'],
    ),
    (
        "at most one pod CIDR per family",
        manifest(spec={"podCIDRs": ["10.244.1.0/24", "10.244.2.0/24"]}),
        [f'spec.podCIDRs: Invalid value: ["10.244.1.0/24","10.244.2.0/24"]: {ONE_PER_FAMILY}'],
    ),
    (
        "no duplicate pod CIDRs",
        manifest(spec={"podCIDRs": ["10.244.1.0/24", "10.244.1.0/24"]}),
        [
            f'spec.podCIDRs: Invalid value: ["10.244.1.0/24","10.244.1.0/24"]: {ONE_PER_FAMILY}',
            'spec.podCIDRs[1]: Duplicate value: "10.244.1.0/24"',
        ],
    ),
    (
        "no more than two pod CIDRs",
        manifest(spec={"podCIDRs": ["10.244.1.0/24", "fd00::/64", "10.9.0.0/16"]}),
        [
            'spec.podCIDRs: Invalid value: ["10.244.1.0/24","fd00::/64","10.9.0.0/16"]: '
            + ONE_PER_FAMILY
        ],
    ),
    (
        "podCIDR must agree with podCIDRs (kservice rejects what the API server would drop)",
        manifest(spec={"podCIDR": "10.244.9.0/24", "podCIDRs": ["10.244.1.0/24"]}),
        ['spec.podCIDR: Invalid value: "10.244.9.0/24": must match spec.podCIDRs[0]'],
    ),
    (
        "address types (a kservice check)",
        manifest(status=addresses(("PublicIP", "203.0.113.7"), ("", "x"))),
        [
            'status.addresses[0].type: Unsupported value: "PublicIP": supported values: '
            '"ExternalDNS", "ExternalIP", "Hostname", "InternalDNS", "InternalIP"',
            "status.addresses[1].type: Required value",
        ],
    ),
    (
        "InternalIP and ExternalIP addresses are IPs (a kservice check)",
        manifest(
            status=addresses(
                ("InternalIP", "node-1"), ("ExternalIP", "203.0.113.256"), ("Hostname", "")
            )
        ),
        [
            f'status.addresses[0].address: Invalid value: "node-1": {BAD_IP}',
            f'status.addresses[1].address: Invalid value: "203.0.113.256": {BAD_IP}',
            "status.addresses[2].address: Required value",
        ],
    ),
    (
        "type errors are field errors",
        manifest(
            spec={"unschedulable": "yes", "podCIDRs": "10.244.1.0/24"},
            status={"addresses": [{"type": 1, "address": None}], "conditions": [[]]},
        ),
        [
            'spec.podCIDRs: Invalid value: "10.244.1.0/24": must be an array, not string',
            'spec.unschedulable: Invalid value: "yes": must be a boolean, not string',
            "status.addresses[0].type: Invalid value: 1: must be a string, not number",
            "status.conditions[0]: Invalid value: []: must be an object, not array",
            "status.addresses[0].type: Required value",
            "status.addresses[0].address: Required value",
        ],
    ),
]


@pytest.mark.parametrize(("name", "data", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid(name: str, data: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(data) == expected


def test_name_is_a_dns1123_subdomain() -> None:
    (error,) = errors_of({**manifest(), "metadata": {"name": "Node_1"}})
    assert error.startswith(f'metadata.name: Invalid value: "Node_1": {DNS1123_SUBDOMAIN}')


def test_every_error_is_collected_at_once() -> None:
    data = {**manifest(spec={"podCIDRs": ["x"]}), "metadata": {"name": "n", "namespace": "a"}}
    with pytest.raises(ValidationError) as info:
        Node.from_manifest(data)
    assert str(info.value) == (
        'Node "n" is invalid: [metadata.namespace: Forbidden: not allowed on this type, '
        f'spec.podCIDRs[0]: Invalid value: "x": {BAD_CIDR}]'
    )


def test_not_an_object() -> None:
    assert errors_of(None) == ["Invalid value: null: must be an object"]


def test_validate_constructed_object() -> None:
    node = Node(metadata=ObjectMeta(name="n", namespace=""))
    assert validate_node(node) == []
    namespaced = Node(metadata=ObjectMeta(name="n"))  # ObjectMeta defaults to "default"
    assert [str(e) for e in validate_node(namespaced)] == [
        "metadata.namespace: Forbidden: not allowed on this type"
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
SPEC_KEYS = ["podCIDR", "podCIDRs", "unschedulable", "taints"]
STATUS_KEYS = ["addresses", "conditions", "capacity"]


def check_only_validation_error(data: Any) -> None:
    try:
        node = Node.from_manifest(data)
    except ValidationError:
        return
    assert validate_node(node) == []
    assert Node.from_manifest(node.to_manifest()) == node


@given(json_value)
def test_arbitrary_input_only_raises_validation_error(data: Any) -> None:
    check_only_validation_error(data)


@given(
    st.sampled_from(ROUND_TRIP_CASES),
    st.sampled_from(["metadata", "spec", "status", "address"]),
    st.sampled_from(["name", "namespace", "labels", "type", "address", *SPEC_KEYS, *STATUS_KEYS]),
    json_value,
)
def test_mutated_manifests_only_raise_validation_error(
    base: dict[str, Any], where: str, key: str, value: Any
) -> None:
    data = copy.deepcopy(base)
    data.setdefault("status", {}).setdefault("addresses", []).append(
        {"type": "InternalIP", "address": "10.0.0.1"}
    )
    target: dict[str, Any] = {
        "metadata": data["metadata"],
        "spec": data["spec"],
        "status": data["status"],
        "address": data["status"]["addresses"][-1],
    }[where]
    target[key] = value
    check_only_validation_error(data)


ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
alnum = st.text(ALNUM, min_size=1, max_size=4)
dns_label = st.builds(
    lambda a, sep, b: a + sep + b if sep else a, alnum, st.sampled_from(["", "-", "--"]), alnum
)
subdomain = st.lists(dns_label, min_size=1, max_size=3).map(".".join)
ipv4 = st.integers(1, 2**24 - 2).map(lambda n: f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
ipv6 = st.integers(1, 2**32 - 1).map(lambda n: f"fd00::{n >> 16:x}:{n & 0xFFFF:x}")
cidr4 = st.tuples(st.integers(0, 255), st.integers(16, 24)).map(lambda t: f"10.{t[0]}.0.0/{t[1]}")
cidr6 = st.integers(0, 0xFFFF).map(lambda n: f"fd00:{n:x}::/64")
pod_cidrs = st.sampled_from([(), ("4",), ("6",), ("4", "6"), ("6", "4")]).flatmap(
    lambda fams: st.tuples(*(cidr4 if f == "4" else cidr6 for f in fams))
)
node_addresses = st.lists(
    st.builds(NodeAddress, st.sampled_from(["InternalIP", "ExternalIP"]), ipv4 | ipv6)
    | st.builds(
        NodeAddress, st.sampled_from(["Hostname", "InternalDNS", "ExternalDNS"]), subdomain
    ),
    max_size=4,
).map(tuple)
node_conditions = st.lists(
    st.builds(
        NodeCondition,
        st.sampled_from(["Ready", "MemoryPressure", "DiskPressure"]),
        st.sampled_from(["True", "False", "Unknown"]),
    ),
    max_size=3,
).map(tuple)
nodes = st.builds(
    Node,
    metadata=st.builds(
        ObjectMeta,
        name=subdomain,
        namespace=st.just(""),
        labels=st.dictionaries(st.sampled_from([LABEL_ZONE, LABEL_HOSTNAME]), dns_label),
    ),
    pod_cidrs=pod_cidrs,
    unschedulable=st.booleans(),
    addresses=node_addresses,
    conditions=node_conditions,
)


@given(nodes)
def test_generated_valid_nodes_round_trip(node: Node) -> None:
    assert validate_node(node) == []
    assert Node.from_manifest(node.to_manifest()) == node
