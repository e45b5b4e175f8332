"""Hypothesis strategies for random valid clusters (kernel acceptance tests).

:func:`clusters` draws a :class:`GeneratedCluster`: 1-3 Nodes, 0-8 Services of
every type (ClusterIP, NodePort, LoadBalancer, ExternalName, headless, and
selectorless ones with hand-written EndpointSlices) with 0-5 Pods per selector
in every readiness state, single-stack IPv4, IPv6 or dual-stack. Addresses are
handed out from fixed, non-overlapping ranges so that every drawn cluster is
valid; the manifests are kept so a failure can show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
from hypothesis import strategies as st

from kservice.api.endpointslice import EndpointSlice
from kservice.api.node import Node
from kservice.api.pod import Pod
from kservice.api.service import Service
from kservice.control.cluster import Cluster

#: Service CIDRs and pod CIDRs (kube-proxy --cluster-cidr) per stack.
SERVICE_CIDRS = {"IPv4": "10.96.0.0/16", "IPv6": "fd00:96::/108"}
POD_CIDRS = {"IPv4": "10.244.0.0/16", "IPv6": "fd00:244::/56"}
STACKS: dict[str, tuple[str, ...]] = {
    "IPv4": ("IPv4",),
    "IPv6": ("IPv6",),
    "dual": ("IPv4", "IPv6"),
    "dual6": ("IPv6", "IPv4"),
}
PROTOCOLS = ("TCP", "UDP", "SCTP")
#: ExternalIPs, LoadBalancer IPs and source ranges may be of either family:
#: each proxier must leave out those of the other one.
ANY_FAMILY = ("IPv4", "IPv6")
SOURCE_RANGES_ANNOTATION = "service.beta.kubernetes.io/load-balancer-source-ranges"
ZONES = ("zone-a", "zone-b", "zone-c")
#: Container ports every Pod declares, for named targetPorts.
CONTAINER_PORTS = {"http": 8080, "metrics-9": 9090, "x1": 7000}

#: A 63-character namespace: element comments then pass nft's 128-byte limit.
LONG_NAMESPACE = "n" + "0123456789-" * 5 + "abcdefg"

_LOWER = "abcdefghijklmnopqrstuvwxyz"
_DIGITS = "0123456789"


@attrs.frozen
class GeneratedCluster:
    """A drawn cluster: its manifests, the Cluster and the proxier families."""

    manifests: tuple[dict[str, Any], ...]
    cluster: Cluster
    families: tuple[str, ...]
    node_names: tuple[str, ...]
    #: Extra ProxyConfig fields (masquerading, NodePort addresses, local detection).
    proxy_options: dict[str, Any] = attrs.field(factory=dict)

    @property
    def cluster_cidrs(self) -> tuple[str, ...]:
        return tuple(POD_CIDRS[f] for f in self.families)


def _label(draw: st.DrawFn, max_size: int, *, first: str) -> str:
    """A DNS label of at most ``max_size`` characters starting with ``first``."""
    alnum = _LOWER + _DIGITS
    middle = draw(st.text(alnum + "-", max_size=max(0, max_size - 2)))
    if max_size == 1 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(first))
    return draw(st.sampled_from(first)) + middle + draw(st.sampled_from(alnum))


@st.composite
def object_names(draw: st.DrawFn) -> str:
    """A DNS-1035 label (a Service name): up to 63 characters, dashes and digits."""
    size = draw(st.sampled_from((1, 5, 15, 40, 63)))
    return _label(draw, size, first=_LOWER)


@st.composite
def port_names(draw: st.DrawFn) -> str:
    """A Service port name: a DNS-1123 label of at most 15 characters (may be all digits)."""
    size = draw(st.integers(1, 15))
    return _label(draw, size, first=_LOWER + _DIGITS)


def _v4(prefix: str, n: int) -> str:
    return f"{prefix}.{n // 250}.{n % 250 + 1}"


def _v6(prefix: str, n: int) -> str:
    return f"{prefix}::{n + 1:x}"


def _addr(family: str, kind: str, n: int) -> str:
    v4 = {"node": "192.168", "ext": "203.0", "lb": "198.51"}
    v6 = {"node": "fd00:1", "ext": "2001:db8:e", "lb": "2001:db8:1b"}
    return _v4(v4[kind], n) if family == "IPv4" else _v6(v6[kind], n)


def _pod_ip(family: str, node: int, n: int) -> str:
    if family == "IPv4":
        return f"10.244.{node + 1}.{n + 2}"
    return f"fd00:244:0:{node + 1}::{n + 2:x}"


@st.composite
def service_ports(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 4))
    names = draw(st.lists(port_names(), min_size=count, max_size=count, unique=True))
    ports: list[dict[str, Any]] = []
    used: set[tuple[int, str]] = set()
    for i, name in enumerate(names):
        protocol = draw(st.sampled_from(PROTOCOLS))
        port = draw(st.sampled_from((80, 443, 53, 1, 65535, 8080, 30000 + i)))
        if (port, protocol) in used:
            continue
        used.add((port, protocol))
        target: int | str = draw(
            st.one_of(st.integers(1, 65535), st.sampled_from(sorted(CONTAINER_PORTS)))
        )
        entry: dict[str, Any] = {"protocol": protocol, "port": port, "targetPort": target}
        if count > 1 or draw(st.booleans()):
            entry["name"] = name
        ports.append(entry)
    return ports


@st.composite
def clusters(draw: st.DrawFn) -> GeneratedCluster:
    """A random valid cluster (see the module docstring)."""
    stack = draw(st.sampled_from(("IPv4", "IPv4", "IPv6", "dual", "dual6")))
    families = STACKS[stack]
    dual = len(families) == 2
    manifests: list[dict[str, Any]] = []

    n_nodes = draw(st.integers(1, 3))
    node_names = [f"node-{i}" for i in range(n_nodes)]
    for i, name in enumerate(node_names):
        # In a dual-stack cluster a node may still have addresses of one family only.
        node_families = families[: draw(st.integers(1, len(families)))] if dual else families
        addresses = [{"type": "InternalIP", "address": _addr(f, "node", i)} for f in node_families]
        pod_cidrs = [
            f"10.244.{i + 1}.0/24" if f == "IPv4" else f"fd00:244:0:{i + 1}::/64" for f in families
        ]
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "topology.kubernetes.io/zone": ZONES[i],
                    },
                },
                "spec": {"podCIDR": pod_cidrs[0], "podCIDRs": pod_cidrs},
                "status": {"addresses": [*addresses, {"type": "Hostname", "address": name}]},
            }
        )

    n_services = draw(st.integers(0, 8))
    svc_names = draw(
        st.lists(object_names(), min_size=n_services, max_size=n_services, unique=True)
    )
    pod_count = 0
    ext_count = 0
    for s, svc_name in enumerate(svc_names):
        namespace = draw(st.sampled_from(("default", "prod-1", LONG_NAMESPACE)))
        kind = draw(
            st.sampled_from(
                ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "headless", "manual")
            )
        )
        svc_type = (
            kind
            if kind in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
            else ("ClusterIP")
        )
        spec: dict[str, Any] = {"type": svc_type}
        annotations: dict[str, str] = {}
        status: dict[str, Any] = {}
        if kind == "ExternalName":
            spec["externalName"] = draw(st.sampled_from(("db.example.com", "x.y", "a-1.b-2.c")))
            if draw(st.booleans()):
                spec["ports"] = draw(service_ports())
        else:
            spec["ports"] = draw(service_ports())
        if kind == "headless":
            spec["clusterIP"] = "None"
        if kind != "ExternalName":
            if dual:
                policy = draw(
                    st.sampled_from(("SingleStack", "PreferDualStack", "RequireDualStack"))
                )
                spec["ipFamilyPolicy"] = policy
                order = list(families) if draw(st.booleans()) else list(reversed(families))
                spec["ipFamilies"] = order[:1] if policy == "SingleStack" else order
                svc_families: Sequence[str] = spec["ipFamilies"]
            else:
                svc_families = families
            if draw(st.booleans()):
                spec["internalTrafficPolicy"] = draw(st.sampled_from(("Local", "Cluster")))
            if svc_type in ("NodePort", "LoadBalancer") and draw(st.booleans()):
                spec["externalTrafficPolicy"] = draw(st.sampled_from(("Local", "Cluster")))
            if kind != "headless" and draw(st.booleans()):
                spec["sessionAffinity"] = "ClientIP"
                if draw(st.booleans()):
                    timeout = draw(st.sampled_from((1, 10, 10800, 86400)))
                    spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": timeout}}
            if kind != "headless" and draw(st.booleans()):
                n_ext = draw(st.integers(1, 2))
                spec["externalIPs"] = [
                    _addr(draw(st.sampled_from(ANY_FAMILY)), "ext", ext_count + k)
                    for k in range(n_ext)
                ]
                ext_count += n_ext
            if kind != "headless" and draw(st.booleans()):
                spec["trafficDistribution"] = draw(
                    st.sampled_from(("PreferClose", "PreferSameNode"))
                )
            if draw(st.booleans()):
                spec["publishNotReadyAddresses"] = True
            if svc_type == "LoadBalancer":
                if draw(st.booleans()):
                    spec["allocateLoadBalancerNodePorts"] = False
                if draw(st.booleans()):
                    ranges = draw(
                        st.lists(
                            st.sampled_from([c for f in ANY_FAMILY for c in _SOURCE_RANGES[f]]),
                            min_size=1,
                            max_size=3,
                            unique=True,
                        )
                    )
                    if draw(st.booleans()):
                        spec["loadBalancerSourceRanges"] = ranges
                    else:  # the annotation form, read when the field is empty
                        annotations[SOURCE_RANGES_ANNOTATION] = ", ".join(ranges)
                n_lb = draw(st.integers(0, 2))
                if n_lb:
                    status["loadBalancer"] = {
                        "ingress": [
                            {
                                "ip": _addr(draw(st.sampled_from(ANY_FAMILY)), "lb", s * 4 + k),
                                **draw(
                                    st.sampled_from(({}, {"ipMode": "Proxy"}, {"ipMode": "VIP"}))
                                ),
                            }
                            for k in range(n_lb)
                        ]
                    }
            if kind == "manual":
                manifests += draw(
                    _manual_slices(svc_name, namespace, spec["ports"], svc_families, node_names)
                )
            else:
                label = {"app": f"s{s}"}
                spec["selector"] = label
                n_pods = draw(st.integers(0, 5))
                for p in range(n_pods):
                    node = draw(st.integers(0, n_nodes - 1))
                    manifests.append(
                        _pod(
                            draw,
                            f"s{s}-pod-{p}",
                            namespace,
                            label,
                            node,
                            pod_count,
                            families,
                            node_names,
                        )
                    )
                    pod_count += 1
        svc: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": svc_name, "namespace": namespace},
            "spec": spec,
        }
        if annotations:
            svc["metadata"]["annotations"] = annotations
        if status:
            svc["status"] = status
        manifests.append(svc)

    objects = [_build(m) for m in manifests]
    cluster = Cluster.from_objects(
        objects,
        service_cidrs=tuple(SERVICE_CIDRS[f] for f in families),
        seed=draw(st.integers(0, 2**16)),
    )
    options = draw(proxy_options()) if draw(st.booleans()) else {}
    return GeneratedCluster(tuple(manifests), cluster, families, tuple(node_names), options)


@st.composite
def proxy_options(draw: st.DrawFn) -> dict[str, Any]:
    """ProxyConfig fields beyond mode, family and cluster CIDRs."""
    options: dict[str, Any] = {
        "masquerade_all": draw(st.booleans()),
        "masquerade_bit": draw(st.sampled_from((0, 14, 31))),
        "localhost_nodeports": draw(st.booleans()),
        "node_port_addresses": draw(
            st.sampled_from(
                ((), ("primary",), ("192.168.0.0/24",), ("192.168.0.0/16", "fd00:1::/64"))
            )
        ),
    }
    mode = draw(
        st.sampled_from(("ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"))
    )
    options["detect_local_mode"] = mode
    if mode == "BridgeInterface":
        options["bridge_interface"] = draw(st.sampled_from(("cbr0", "br-0123456789ab")))
    elif mode == "InterfaceNamePrefix":
        options["interface_name_prefix"] = draw(st.sampled_from(("veth", "cali", "lxc-1")))
    return options


#: LoadBalancer source ranges, some with host bits set (accepted, and masked).
_SOURCE_RANGES = {
    "IPv4": ("10.0.0.0/8", "192.168.0.0/16", "203.0.113.7/32", "0.0.0.0/0", "10.1.2.3/8"),
    "IPv6": ("2001:db8::/32", "fd00::/8", "::/0", "2001:db8::1/32", "fd00::1/128"),
}


def _pod(
    draw: st.DrawFn,
    name: str,
    namespace: str,
    labels: dict[str, str],
    node: int,
    n: int,
    families: Sequence[str],
    node_names: Sequence[str],
) -> dict[str, Any]:
    state = draw(st.sampled_from(("ready", "not-ready", "terminating", "terminating-ready")))
    ready = state in ("ready", "terminating-ready")
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if state.startswith("terminating"):
        metadata["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "nodeName": node_names[node],
            "containers": [
                {
                    "name": "c",
                    "ports": [
                        {"name": k, "containerPort": v, "protocol": p}
                        for (k, v), p in zip(
                            sorted(CONTAINER_PORTS.items()), PROTOCOLS, strict=True
                        )
                    ],
                }
            ],
        },
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": _pod_ip(f, node, n)} for f in families],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@st.composite
def _manual_slices(
    draw: st.DrawFn,
    svc_name: str,
    namespace: str,
    ports: list[dict[str, Any]],
    families: Sequence[str],
    node_names: Sequence[str],
) -> list[dict[str, Any]]:
    slices: list[dict[str, Any]] = []
    for i, family in enumerate(families):
        endpoints = []
        for e in range(draw(st.integers(0, 4))):
            node = draw(st.integers(0, len(node_names) - 1))
            ready, serving, terminating = draw(
                st.sampled_from(
                    (
                        (True, True, False),
                        (False, False, False),
                        (False, True, True),
                        (False, False, True),
                    )
                )
            )
            ep: dict[str, Any] = {
                "addresses": [_pod_ip(family, node, 200 + e)],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            }
            if draw(st.booleans()):
                ep["nodeName"] = node_names[node]
                ep["zone"] = ZONES[node]
            endpoints.append(ep)
        slices.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{svc_name[:50]}-m{i}",
                    "namespace": namespace,
                    "labels": {"kubernetes.io/service-name": svc_name},
                },
                "addressType": family,
                "endpoints": endpoints,
                "ports": [
                    {
                        "name": p.get("name", ""),
                        "port": p["targetPort"] if isinstance(p["targetPort"], int) else 8080,
                        "protocol": p["protocol"],
                    }
                    for p in ports
                ],
            }
        )
    return slices


def _build(manifest: dict[str, Any]) -> Any:
    kinds: dict[str, Any] = {
        "Node": Node,
        "Service": Service,
        "Pod": Pod,
        "EndpointSlice": EndpointSlice,
    }
    return kinds[manifest["kind"]].from_manifest(manifest)
