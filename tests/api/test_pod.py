"""Pod: parsing, defaulting, validation (API-server messages), round trips."""

from __future__ import annotations

import copy
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kservice.api._base import ObjectMeta
from kservice.api.pod import (
    Container,
    ContainerPort,
    DNSConfigOption,
    Pod,
    PodCondition,
    PodDNSConfig,
    validate_pod,
)
from kservice.errors import ValidationError

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
BAD_IP = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
SUPPORTED_PROTOCOLS = 'supported values: "SCTP", "TCP", "UDP"'


def manifest(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> Any:
    base: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "prod", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ]
        },
    }
    base["spec"].update(spec or {})
    if status is not None:
        base["status"] = status
    return base


def container(*ports: dict[str, Any], name: str = "app") -> dict[str, Any]:
    return {"name": name, "ports": list(ports)}


def errors_of(data: Any) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Pod.from_manifest(data)
    assert info.value.kind == "Pod"
    return [str(e) for e in info.value.errors]


# --------------------------------------------------------------------------- defaults
def test_parse_and_defaults() -> None:
    pod = Pod.from_manifest(manifest())
    assert pod.name == "web-0" and pod.namespace == "prod" and pod.key == ("prod", "web-0")
    assert pod.labels == {"app": "web"}
    assert pod.containers == (
        Container(name="app", ports=(ContainerPort(container_port=8080, name="http"),)),
    )
    assert pod.containers[0].ports[0].protocol == "TCP"
    assert pod.containers[0].ports[0].host_port is None
    assert pod.dns_policy == "ClusterFirst"
    assert pod.enable_service_links is True
    assert pod.host_network is False
    assert pod.dns_config is None
    assert pod.node_name is None and pod.hostname is None and pod.subdomain is None
    assert pod.phase is None and pod.pod_ips == () and pod.pod_ip is None
    assert not pod.is_ready and not pod.is_terminating and not pod.is_terminal


def test_unknown_fields_are_ignored() -> None:
    data = manifest(
        spec={
            "volumes": [{"name": "v", "emptyDir": {}}],
            "restartPolicy": "Always",
            "nodeSelector": {"disk": "ssd"},
        },
        status={"hostIP": "192.168.1.10", "qosClass": "BestEffort", "podIP": "10.0.0.5"},
    )
    data["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1"}}
    data["somethingElse"] = True
    pod = Pod.from_manifest(data)
    assert pod.pod_ips == ("10.0.0.5",)


def test_empty_strings_mean_unset() -> None:
    pod = Pod.from_manifest(
        manifest(
            spec={"nodeName": "", "hostname": "", "subdomain": "", "dnsPolicy": ""},
            status={"phase": "", "podIP": ""},
        )
    )
    assert pod.node_name is None and pod.hostname is None and pod.subdomain is None
    assert pod.dns_policy == "ClusterFirst" and pod.phase is None and pod.pod_ips == ()


def test_host_network_defaults_host_ports() -> None:
    data = manifest(
        spec={
            "hostNetwork": True,
            "containers": [
                container(
                    {"containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 9100, "hostPort": 9100},
                )
            ],
        }
    )
    pod = Pod.from_manifest(data)
    assert [p.host_port for p in pod.containers[0].ports] == [53, 9100]
    assert Pod.from_manifest(pod.to_manifest()) == pod


def test_pod_ip_and_pod_ips() -> None:
    only_ip = Pod.from_manifest(manifest(status={"podIP": "10.0.0.5"}))
    assert only_ip.pod_ips == ("10.0.0.5",) and only_ip.pod_ip == "10.0.0.5"
    dual = Pod.from_manifest(manifest(status={"podIPs": [{"ip": "fd00::5"}, {"ip": "10.0.0.5"}]}))
    assert dual.pod_ip == "fd00::5"
    assert dual.ip_of_family("IPv4") == "10.0.0.5" and dual.ip_of_family("IPv6") == "fd00::5"
    assert only_ip.ip_of_family("IPv6") is None and only_ip.ip_of_family("IPX") is None
    assert dual.to_manifest()["status"] == {
        "podIP": "fd00::5",
        "podIPs": [{"ip": "fd00::5"}, {"ip": "10.0.0.5"}],
    }


READINESS_CASES = [
    ([], False),
    ([{"type": "Ready", "status": "True"}], True),
    ([{"type": "Ready", "status": "False"}], False),
    ([{"type": "Ready", "status": "Unknown"}], False),
    ([{"type": "ContainersReady", "status": "True"}], False),
    ([{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}], True),
]


@pytest.mark.parametrize(("conditions", "ready"), READINESS_CASES)
def test_readiness_is_the_ready_condition(conditions: list[dict[str, str]], ready: bool) -> None:
    pod = Pod.from_manifest(manifest(status={"conditions": conditions}))
    assert pod.is_ready is ready


def test_lifecycle_flags() -> None:
    data = manifest(status={"phase": "Succeeded"})
    data["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pod = Pod.from_manifest(data)
    assert pod.is_terminating and pod.is_terminal
    assert pod.condition("Ready") is None
    assert not Pod.from_manifest(manifest(status={"phase": "Running"})).is_terminal


def test_find_port() -> None:
    pod = Pod.from_manifest(
        manifest(
            spec={
                "containers": [
                    container({"name": "dns", "containerPort": 53, "protocol": "UDP"}, name="a"),
                    container(
                        {"name": "dns", "containerPort": 5353, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090},
                        name="b",
                    ),
                    container({"name": "metrics", "containerPort": 9091}, name="c"),
                ]
            }
        )
    )
    assert pod.find_port("dns", "UDP") == 53
    assert pod.find_port("dns") == 5353
    assert pod.find_port("metrics") == 9090  # the first match wins, as upstream
    assert pod.find_port("http") is None and pod.find_port("metrics", "SCTP") is None


# ------------------------------------------------------------------------ round trips
ROUND_TRIP_CASES = [
    manifest(),
    manifest(
        spec={
            "nodeName": "node-1",
            "hostname": "web-0",
            "subdomain": "web",
            "enableServiceLinks": False,
            "dnsPolicy": "None",
            "dnsConfig": {
                "nameservers": ["1.1.1.1", "2606:4700:4700::1111"],
                "searches": ["prod.svc.cluster.local", "example.com."],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
            },
            "containers": [
                container(
                    {"name": "http", "containerPort": 80, "hostPort": 8080, "hostIP": "10.1.1.1"},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                ),
                container({"containerPort": 9, "protocol": "SCTP"}, name="sidecar"),
            ],
        },
        status={
            "phase": "Running",
            "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"},
            ],
        },
    ),
    manifest(spec={"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}),
    manifest(spec={"dnsPolicy": "Default", "dnsConfig": {}}, status={"phase": "Pending"}),
]


@pytest.mark.parametrize("data", ROUND_TRIP_CASES)
def test_round_trip(data: dict[str, Any]) -> None:
    pod = Pod.from_manifest(data)
    out = pod.to_manifest()
    assert list(out)[:2] == ["apiVersion", "kind"]
    assert out["apiVersion"] == "v1" and out["kind"] == "Pod"
    assert Pod.from_manifest(out) == pod
    assert validate_pod(pod) == []


def test_to_manifest_is_minimal() -> None:
    assert Pod.from_manifest(manifest()).to_manifest() == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "prod", "labels": {"app": "web"}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                }
            ],
            "enableServiceLinks": True,
            "dnsPolicy": "ClusterFirst",
        },
    }


def test_objects_are_immutable_and_hashable() -> None:
    pod = Pod.from_manifest(ROUND_TRIP_CASES[1])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        pod.node_name = "x"  # type: ignore[misc]
    assert hash(pod) == hash(Pod.from_manifest(ROUND_TRIP_CASES[1]))


# ------------------------------------------------------------------------ validation
def dns(**config: Any) -> dict[str, Any]:
    return {"dnsConfig": config}


INVALID: list[tuple[str, Any, list[str]]] = [
    (
        "containers are required",
        manifest(spec={"containers": []}),
        ["spec.containers: Required value"],
    ),
    (
        "no spec at all",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},
        ["spec.containers: Required value"],
    ),
    (
        "container names: required and unique",
        manifest(spec={"containers": [{"name": ""}, {"name": "a"}, {"name": "a"}, {}]}),
        [
            "spec.containers[0].name: Required value",
            'spec.containers[2].name: Duplicate value: "a"',
            "spec.containers[3].name: Required value",
            'spec.containers[3].name: Duplicate value: ""',
        ],
    ),
    (
        "container port names are IANA service names",
        manifest(
            spec={
                "containers": [
                    container(
                        {"name": "http_1", "containerPort": 1},
                        {"name": "8080", "containerPort": 2},
                        {"name": "a--b", "containerPort": 3},
                        {"name": "-ab", "containerPort": 4},
                    )
                ]
            }
        ),
        [
            'spec.containers[0].ports[0].name: Invalid value: "http_1": '
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            'spec.containers[0].ports[1].name: Invalid value: "8080": '
            "must contain at least one letter (a-z)",
            'spec.containers[0].ports[2].name: Invalid value: "a--b": '
            "must not contain consecutive hyphens",
            'spec.containers[0].ports[3].name: Invalid value: "-ab": '
            "must not begin or end with a hyphen",
        ],
    ),
    (
        "port names are unique within a container, not across containers",
        manifest(
            spec={
                "containers": [
                    container({"name": "http", "containerPort": 80}, name="a"),
                    container(
                        {"name": "http", "containerPort": 81},
                        {"name": "http", "containerPort": 82, "protocol": "UDP"},
                        name="b",
                    ),
                ]
            }
        ),
        ['spec.containers[1].ports[1].name: Duplicate value: "http"'],
    ),
    (
        "container port numbers",
        manifest(
            spec={
                "containers": [
                    container(
                        {"name": "a"},
                        {"containerPort": 70000},
                        {"containerPort": -1},
                        {"containerPort": 80, "hostPort": 70000},
                        {"containerPort": 81, "hostPort": 0},  # 0 is unset
                    )
                ]
            }
        ),
        [
            "spec.containers[0].ports[0].containerPort: Required value",
            "spec.containers[0].ports[1].containerPort: Invalid value: 70000: "
            "must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[2].containerPort: Invalid value: -1: "
            "must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[3].hostPort: Invalid value: 70000: "
            "must be between 1 and 65535, inclusive",
        ],
    ),
    (
        "protocol enum",
        manifest(spec={"containers": [container({"containerPort": 1, "protocol": "ICMP"})]}),
        ['spec.containers[0].ports[0].protocol: Unsupported value: "ICMP": ' + SUPPORTED_PROTOCOLS],
    ),
    (
        "host ports may not clash across containers",
        manifest(
            spec={
                "containers": [
                    container({"containerPort": 80, "hostPort": 8080}, name="a"),
                    container(
                        {"containerPort": 81, "hostPort": 8080},
                        {"containerPort": 82, "hostPort": 8080, "protocol": "UDP"},
                        {"containerPort": 83, "hostPort": 8080, "hostIP": "10.0.0.1"},
                        name="b",
                    ),
                ]
            }
        ),
        ['spec.containers[1].ports[0].hostPort: Duplicate value: "/TCP/8080"'],
    ),
    (
        "on the host network hostPort must equal containerPort",
        manifest(
            spec={
                "hostNetwork": True,
                "containers": [container({"containerPort": 80, "hostPort": 81})],
            }
        ),
        [
            "spec.containers[0].ports[0].hostPort: Invalid value: 81: "
            "must match `containerPort` when `hostNetwork` is true"
        ],
    ),
    (
        "dnsPolicy enum",
        manifest(spec={"dnsPolicy": "Bogus"}),
        [
            'spec.dnsPolicy: Unsupported value: "Bogus": supported values: '
            '"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"'
        ],
    ),
    (
        "dnsPolicy None needs dnsConfig",
        manifest(spec={"dnsPolicy": "None"}),
        ["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"],
    ),
    (
        "dnsPolicy None needs a nameserver (and nothing else is checked)",
        manifest(spec={"dnsPolicy": "None", **dns(searches=["BAD"])}),
        [
            "spec.dnsConfig.nameservers: Required value: "
            "must provide at least one DNS nameserver when `dnsPolicy` is None"
        ],
    ),
    (
        "at most 3 nameservers, each an IP address",
        manifest(spec=dns(nameservers=["1.1.1.1", "dns.google", "8.8.8.8", "9.9.9.9"])),
        [
            'spec.dnsConfig.nameservers: Invalid value: ["1.1.1.1","dns.google","8.8.8.8",'
            '"9.9.9.9"]: must not have more than 3 nameservers',
            f'spec.dnsConfig.nameservers[1]: Invalid value: "dns.google": {BAD_IP}',
        ],
    ),
    (
        "at most 32 search paths",
        manifest(spec=dns(searches=[f"s{i}.example" for i in range(33)])),
        [
            "spec.dnsConfig.searches: Invalid value: ["
            + ",".join(f'"s{i}.example"' for i in range(33))
            + "]: must not have more than 32 search paths"
        ],
    ),
    (
        "options need a name",
        manifest(spec=dns(options=[{"name": "ndots", "value": "1"}, {"value": "2"}])),
        ["spec.dnsConfig.options[1]: Required value: must not be empty"],
    ),
    (
        "pod IPs are IP addresses",
        manifest(status={"podIPs": [{"ip": "10.0.0.256"}]}),
        [f'status.podIPs[0]: Invalid value: "10.0.0.256": {BAD_IP}'],
    ),
    (
        "at most one pod IP per family",
        manifest(status={"podIPs": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}),
        [
            'status.podIPs: Invalid value: [{"ip":"10.0.0.1"},{"ip":"10.0.0.2"}]: '
            "may specify no more than one IP for each IP family"
        ],
    ),
    (
        "no duplicate pod IPs, and no more than two",
        manifest(status={"podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}, {"ip": "10.0.0.1"}]}),
        [
            'status.podIPs: Invalid value: [{"ip":"10.0.0.1"},{"ip":"fd00::1"},'
            '{"ip":"10.0.0.1"}]: may specify no more than one IP for each IP family',
            'status.podIPs[2]: Duplicate value: {"ip":"10.0.0.1"}',
        ],
    ),
    (
        "podIP must agree with podIPs (kservice rejects what the API server would drop)",
        manifest(status={"podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.1"}]}),
        ['status.podIP: Invalid value: "10.0.0.9": must match status.podIPs[0]'],
    ),
    (
        "type errors are field errors",
        manifest(
            spec={"hostNetwork": "yes", "enableServiceLinks": 1, "nodeName": ["n"]},
            status={"podIPs": ["10.0.0.1"], "conditions": {"type": "Ready"}},
        ),
        [
            'spec.hostNetwork: Invalid value: "yes": must be a boolean, not string',
            'status.podIPs[0]: Invalid value: "10.0.0.1": must be an object, not string',
            'spec.nodeName: Invalid value: ["n"]: must be a string, not array',
            "spec.enableServiceLinks: Invalid value: 1: must be a boolean, not number",
            'status.conditions: Invalid value: {"type":"Ready"}: must be an array, not object',
        ],
    ),
    (
        "a missing name is reported once",
        {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "a"}]}},
        ["metadata.name: Required value: name or generateName is required"],
    ),
]


@pytest.mark.parametrize(("name", "data", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid(name: str, data: dict[str, Any], expected: list[str]) -> None:
    assert errors_of(data) == expected


INVALID_PREFIX: list[tuple[str, Any, str]] = [
    (
        "name is a DNS-1123 subdomain",
        {**manifest(), "metadata": {"name": "Web_0"}},
        f'metadata.name: Invalid value: "Web_0": {DNS1123_SUBDOMAIN}',
    ),
    (
        "container names are DNS-1123 labels",
        manifest(spec={"containers": [{"name": "App"}]}),
        f'spec.containers[0].name: Invalid value: "App": {DNS1123_LABEL}',
    ),
    (
        "container port names are at most 15 long",
        manifest(spec={"containers": [container({"name": "a" * 16, "containerPort": 1})]}),
        f'spec.containers[0].ports[0].name: Invalid value: "{"a" * 16}": must be no more than 15',
    ),
    (
        "nodeName is a node name",
        manifest(spec={"nodeName": "Node_1"}),
        f'spec.nodeName: Invalid value: "Node_1": {DNS1123_SUBDOMAIN}',
    ),
    (
        "hostname is a DNS-1123 label",
        manifest(spec={"hostname": "web.0"}),
        'spec.hostname: Invalid value: "web.0": must not contain dots',
    ),
    (
        "subdomain is a DNS-1123 label",
        manifest(spec={"subdomain": "Web"}),
        f'spec.subdomain: Invalid value: "Web": {DNS1123_LABEL}',
    ),
    (
        "search domains are DNS-1123 subdomains",
        manifest(spec=dns(searches=["ok.example.", "Bad_Domain"])),
        f'spec.dnsConfig.searches[1]: Invalid value: "Bad_Domain": {DNS1123_SUBDOMAIN}',
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "prefix"), INVALID_PREFIX, ids=[c[0] for c in INVALID_PREFIX]
)
def test_invalid_regex_messages(name: str, data: dict[str, Any], prefix: str) -> None:
    (error,) = errors_of(data)
    assert error.startswith(prefix)


def test_search_list_length_limit() -> None:
    long_domain = ".".join(["a" * 63] * 3 + ["b" * 61])  # 253 characters, valid
    searches = [long_domain] * 9  # 9 * 253 + 8 spaces = 2285 > 2048
    (error,) = errors_of(manifest(spec=dns(searches=searches)))
    assert error.startswith('spec.dnsConfig.searches: Invalid value: ["aaa')
    assert error.endswith(
        ": must not have more than 2048 characters (including spaces) in the search list"
    )
    Pod.from_manifest(manifest(spec=dns(searches=[long_domain] * 8)))  # 2031: fine


def test_every_error_is_collected_at_once() -> None:
    data = manifest(
        spec={"dnsPolicy": "Bogus", "containers": [container({"containerPort": 0})]},
        status={"podIPs": [{"ip": "x"}]},
    )
    with pytest.raises(ValidationError) as info:
        Pod.from_manifest(data)
    assert str(info.value) == (
        'Pod "web-0" is invalid: ['
        "spec.containers[0].ports[0].containerPort: Required value, "
        'spec.dnsPolicy: Unsupported value: "Bogus": supported values: '
        '"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None", '
        f'status.podIPs[0]: Invalid value: "x": {BAD_IP}]'
    )


def test_not_an_object() -> None:
    assert errors_of("pod") == ['Invalid value: "pod": must be an object']


def test_validate_constructed_object() -> None:
    pod = Pod(metadata=ObjectMeta(name="p"), containers=[Container("c")])
    assert validate_pod(pod) == []
    assert [str(e) for e in validate_pod(attrs.evolve(pod, containers=()))] == [
        "spec.containers: Required value"
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
    "containers", "nodeName", "hostname", "subdomain", "hostNetwork", "enableServiceLinks",
    "dnsPolicy", "dnsConfig", "volumes",
]  # fmt: skip
STATUS_KEYS = ["phase", "podIP", "podIPs", "conditions", "hostIP"]
CONTAINER_KEYS = ["name", "ports", "image"]
PORT_KEYS = ["name", "containerPort", "protocol", "hostPort", "hostIP"]


def check_only_validation_error(data: Any) -> None:
    try:
        pod = Pod.from_manifest(data)
    except ValidationError:
        return
    assert validate_pod(pod) == []
    assert Pod.from_manifest(pod.to_manifest()) == pod


@given(json_value)
def test_arbitrary_input_only_raises_validation_error(data: Any) -> None:
    check_only_validation_error(data)


@given(
    st.sampled_from(ROUND_TRIP_CASES),
    st.sampled_from(["spec", "status", "container", "port", "dnsConfig"]),
    st.sampled_from(SPEC_KEYS + STATUS_KEYS + CONTAINER_KEYS + PORT_KEYS + ["nameservers"]),
    json_value,
)
def test_mutated_manifests_only_raise_validation_error(
    base: dict[str, Any], where: str, key: str, value: Any
) -> None:
    data = copy.deepcopy(base)
    data["spec"]["containers"].append(container({"containerPort": 7}, name="extra"))
    target: dict[str, Any] = {
        "spec": data["spec"],
        "status": data.setdefault("status", {}),
        "container": data["spec"]["containers"][-1],
        "port": data["spec"]["containers"][-1]["ports"][0],
        "dnsConfig": data["spec"].setdefault("dnsConfig", {}),
    }[where]
    target[key] = value
    check_only_validation_error(data)


ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
alnum = st.text(ALNUM, min_size=1, max_size=4)
dns_label = st.builds(
    lambda a, sep, b: a + sep + b if sep else a, alnum, st.sampled_from(["", "-", "--"]), alnum
)
subdomain = st.lists(dns_label, min_size=1, max_size=3).map(".".join)
port_name = st.text("abcxyz", min_size=1, max_size=6) | st.builds(
    lambda a, b: f"{a}-{b}", st.text("abc", min_size=1, max_size=3), alnum
)
ipv4 = st.integers(1, 2**24 - 2).map(lambda n: f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
ipv6 = st.integers(1, 2**32 - 1).map(lambda n: f"fd00::{n >> 16:x}:{n & 0xFFFF:x}")
pod_ips = st.sampled_from([(), ("4",), ("6",), ("4", "6"), ("6", "4")]).flatmap(
    lambda fams: st.tuples(*(ipv4 if f == "4" else ipv6 for f in fams))
)
dns_configs = st.builds(
    PodDNSConfig,
    nameservers=st.lists(ipv4 | ipv6, min_size=1, max_size=3).map(tuple),
    searches=st.lists(subdomain | subdomain.map(lambda s: s + "."), max_size=3).map(tuple),
    options=st.lists(
        st.builds(DNSConfigOption, st.sampled_from(["ndots", "edns0"]), st.none() | alnum),
        max_size=2,
    ).map(tuple),
)
conditions = st.lists(
    st.builds(
        PodCondition,
        st.sampled_from(["Ready", "ContainersReady", "PodScheduled"]),
        st.sampled_from(["True", "False", "Unknown"]),
    ),
    max_size=3,
).map(tuple)


@st.composite
def pods(draw: st.DrawFn) -> Pod:
    host_network = draw(st.booleans())
    names = draw(st.lists(dns_label, min_size=1, max_size=3, unique=True))
    # Host ports are unique per (protocol, port) across the Pod, as validation demands.
    numbers = draw(
        st.lists(
            st.tuples(st.integers(1, 65535), st.sampled_from(["TCP", "UDP", "SCTP"])),
            max_size=6,
            unique=True,
        )
    )
    containers = []
    for i, name in enumerate(names):
        mine = numbers[i :: len(names)]
        port_names = draw(st.lists(st.just("") | port_name, min_size=len(mine), max_size=len(mine)))
        seen: set[str] = set()
        ports = []
        for (number, protocol), pname in zip(mine, port_names, strict=True):
            pname = "" if pname in seen else pname
            seen.add(pname)
            host = number if host_network or draw(st.booleans()) else None
            ports.append(ContainerPort(number, pname, protocol, host))
        containers.append(Container(name, tuple(ports)))
    dns_policy = draw(
        st.sampled_from(["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"])
    )
    dns_config = draw(dns_configs if dns_policy == "None" else st.none() | dns_configs)
    deleted = draw(st.none() | st.just("2026-01-01T00:00:00Z"))
    return Pod(
        metadata=ObjectMeta(
            name=draw(subdomain), namespace=draw(dns_label), deletion_timestamp=deleted
        ),
        containers=tuple(containers),
        node_name=draw(st.none() | subdomain),
        hostname=draw(st.none() | dns_label),
        subdomain=draw(st.none() | dns_label),
        host_network=host_network,
        enable_service_links=draw(st.booleans()),
        dns_policy=dns_policy,
        dns_config=dns_config,
        phase=draw(st.none() | st.sampled_from(["Pending", "Running", "Succeeded", "Failed"])),
        pod_ips=draw(pod_ips),
        conditions=draw(conditions),
    )


@given(pods())
def test_generated_valid_pods_round_trip(pod: Pod) -> None:
    assert validate_pod(pod) == []
    assert Pod.from_manifest(pod.to_manifest()) == pod
