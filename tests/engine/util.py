"""Small clusters for engine tests, written as manifests."""

from __future__ import annotations

from typing import Any

import yaml

from kservice import Cluster, ClusterConfig, load_text
from kservice.netfilter.ruleset import Ruleset
from kservice.proxy import ProxyConfig, ipvs, nftables
from kservice.proxy import iptables as ipt
from kservice.proxy.nodeview import NodeView

NODE = "node-a"
NODE_IP = "192.168.0.10"
MODES = ("iptables", "nftables", "ipvs")


def service(
    name: str,
    endpoints: list[str],
    *,
    cluster_ip: str,
    port: int = 80,
    target: int = 8080,
    protocol: str = "TCP",
    local: set[str] | None = None,
    **spec: Any,
) -> list[dict[str, Any]]:
    """A Service and its EndpointSlice (endpoints on ``node-a`` when in ``local``)."""
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [{"name": "p", "port": port, "targetPort": target, "protocol": protocol}],
            **spec,
        },
    }
    eps = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-abc",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv6" if ":" in cluster_ip else "IPv4",
        "ports": [{"name": "p", "port": target, "protocol": protocol}],
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": True},
                "nodeName": NODE if ip in (local or set()) else "node-b",
            }
            for ip in endpoints
        ],
    }
    return [svc, eps]


def nodes() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": n, "labels": {"topology.kubernetes.io/zone": z}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }
        for n, z, ip in ((NODE, "z1", NODE_IP), ("node-b", "z2", "192.168.0.11"))
    ]


def ruleset(
    objects: list[dict[str, Any]], mode: str, family: str = "IPv4", **config: Any
) -> Ruleset:
    """Compile ``objects`` (plus two nodes) for ``node-a`` in ``mode``."""
    cidr = "10.96.0.0/12" if family == "IPv4" else "fd00:96::/108"
    cluster = Cluster(ClusterConfig(service_cidrs=(cidr,)))
    text = yaml.safe_dump_all([*nodes(), *objects])
    cluster.apply_all(load_text(text))
    pod_cidr = "10.244.0.0/16" if family == "IPv4" else "fd00:244::/64"
    cfg = ProxyConfig(mode=mode, ip_family=family, cluster_cidrs=(pod_cidr,), **config)
    view = NodeView.from_cluster(cluster, NODE, cfg)
    if mode == "iptables":
        return ipt.compile(view)
    if mode == "nftables":
        return nftables.compile(view, service_cidrs=(cidr,))
    return ipvs.compile(view)


class Clock:
    """An engine clock tests move by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
