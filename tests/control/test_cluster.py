"""The cluster registry: allocation on create/update/delete, all-or-nothing writes,
derived EndpointSlices, save/load, thread safety, and a Hypothesis state machine."""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kservice.api.endpointslice import EndpointSlice
from kservice.api.node import Node
from kservice.api.pod import Pod
from kservice.api.service import Service
from kservice.control.cluster import ApplyError, Cluster, ConfigError, StateError
from kservice.errors import NotFoundError, ValidationError


def svc(name: str = "web", ns: str = "prod", **spec: Any) -> Service:
    body: dict[str, Any] = {"selector": {"app": name}, "ports": [{"port": 80, "name": "http"}]}
    body.update(spec)
    return Service.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": body,
        }
    )


def pod(name: str, ip: str, *, ns: str = "prod", app: str = "web", node: str = "node-a",
        ready: bool = True, port_name: str = "http", port: int = 8080) -> Pod:  # fmt: skip
    return Pod.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
            "spec": {
                "nodeName": node,
                "containers": [
                    {"name": "main", "ports": [{"name": port_name, "containerPort": port}]}
                ],
            },
            "status": {
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }
    )


def node(name: str, ip: str, zone: str) -> Node:
    return Node.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
        }
    )


def small_cluster(**kw: Any) -> Cluster:
    kw.setdefault("seed", 7)
    return Cluster(**kw)


# ------------------------------------------------------------------------- ClusterIPs
def test_create_allocates_cluster_ip_from_dynamic_band() -> None:
    c = small_cluster(service_cidrs=("10.96.0.0/24",))
    stored = c.apply(svc())
    assert isinstance(stored, Service)
    ip = ipaddress.ip_address(stored.cluster_ip)
    assert ip in ipaddress.ip_network("10.96.0.0/24")
    assert int(ip) - int(ipaddress.ip_address("10.96.0.0")) > 16  # above the static band
    assert stored.cluster_ips == (stored.cluster_ip,)
    assert stored.ip_families == ("IPv4",)
    assert c.ip_allocators.primary.has(stored.cluster_ip)
    assert c.get("Service", "prod", "web") == stored


def test_requested_cluster_ip_and_conflict_change_nothing() -> None:
    c = small_cluster()
    c.apply(svc("a", clusterIP="10.96.0.10"))
    before = c.to_state()
    with pytest.raises(ValidationError) as info:
        c.apply(svc("b", clusterIP="10.96.0.10"))
    assert str(info.value) == (
        'Service "b" is invalid: spec.clusterIPs[0]: Invalid value: "10.96.0.10": '
        "failed to allocate IP 10.96.0.10: provided IP is already allocated"
    )
    assert c.to_state() == before


def test_out_of_range_cluster_ip() -> None:
    c = small_cluster(service_cidrs=("10.96.0.0/16",))
    with pytest.raises(ValidationError) as info:
        c.apply(svc(clusterIP="10.200.0.1"))
    assert "is not in the valid range. The range of valid IPs is 10.96.0.0/16" in str(info.value)
    assert c.ip_allocators.primary.used == 0


def test_range_full_is_an_error_and_changes_nothing() -> None:
    c = small_cluster(service_cidrs=("10.96.0.0/30",))  # 2 usable addresses
    c.apply(svc("a"))
    c.apply(svc("b"))
    with pytest.raises(ValidationError) as info:
        c.apply(svc("c"))
    assert "failed to allocate a serviceIP: range is full" in str(info.value)
    assert len(c.services) == 2


def test_headless_and_external_name_get_no_ip() -> None:
    c = small_cluster()
    headless = c.apply(svc("redis", clusterIP="None"))
    assert isinstance(headless, Service)
    assert headless.cluster_ips == ("None",) and headless.ip_families == ("IPv4",)
    ext = Service.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db", "namespace": "billing"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"},
        }
    )
    stored = c.apply(ext)
    assert isinstance(stored, Service) and stored.cluster_ip is None
    assert c.ip_allocators.primary.used == 0


def test_dual_stack_allocation_and_single_stack_cluster_refusal() -> None:
    dual = small_cluster(service_cidrs=("10.96.0.0/16", "fd00:10:96::/112"))
    stored = dual.apply(svc(ipFamilyPolicy="RequireDualStack"))
    assert isinstance(stored, Service)
    assert stored.ip_families == ("IPv4", "IPv6")
    assert ipaddress.ip_address(stored.cluster_ips[1]).version == 6
    single = small_cluster()
    with pytest.raises(ValidationError) as info:
        single.apply(svc(ipFamilyPolicy="RequireDualStack"))
    assert 'spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not ' in str(
        info.value
    )
    prefer = single.apply(svc(ipFamilyPolicy="PreferDualStack"))
    assert isinstance(prefer, Service) and prefer.ip_families == ("IPv4",)


def test_cluster_ip_is_immutable_but_kept_when_omitted() -> None:
    c = small_cluster()
    first = c.apply(svc())
    assert isinstance(first, Service)
    again = c.apply(svc())  # the same manifest, clusterIP left out
    assert isinstance(again, Service) and again.cluster_ip == first.cluster_ip
    with pytest.raises(ValidationError) as info:
        c.apply(svc(clusterIP="10.96.0.77"))
    assert "may not change once set" in str(info.value)
    assert c.ip_allocators.primary.used == 1


def test_change_to_external_name_releases_ip() -> None:
    c = small_cluster()
    first = c.apply(svc(type="NodePort"))
    assert isinstance(first, Service)
    ext = Service.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {"type": "ExternalName", "externalName": "web.example.com"},
        }
    )
    c.apply(ext)
    assert c.ip_allocators.primary.used == 0
    assert c.node_port_allocator.used == 0
    assert c.check_consistency() == []


# --------------------------------------------------------------------------- nodePorts
def test_node_ports_allocated_and_shared_between_tcp_and_udp() -> None:
    c = small_cluster()
    stored = c.apply(
        svc(
            "dns",
            type="NodePort",
            ports=[
                {"port": 53, "name": "dns-tcp", "protocol": "TCP"},
                {"port": 53, "name": "dns-udp", "protocol": "UDP"},
                {"port": 9153, "name": "metrics"},
            ],
        )
    )
    assert isinstance(stored, Service)
    tcp, udp, metrics = (p.node_port for p in stored.ports)
    assert tcp == udp and tcp != metrics
    assert tcp is not None and 30086 <= tcp <= 32767  # dynamic band first
    assert c.node_port_allocator.used == 2


def test_requested_node_port_conflict_message() -> None:
    c = small_cluster()
    c.apply(svc("a", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    with pytest.raises(ValidationError) as info:
        c.apply(svc("b", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert str(info.value) == (
        'Service "b" is invalid: spec.ports[0].nodePort: Invalid value: 30080: '
        "provided port is already allocated"
    )
    with pytest.raises(ValidationError) as info:
        c.apply(svc("c", type="NodePort", ports=[{"port": 80, "nodePort": 8080}]))
    assert "provided port is not in the valid range. The range of valid ports is 30000-32767" in (
        str(info.value)
    )
    assert c.node_port_allocator.used == 1


def test_node_port_to_cluster_ip_releases_ports() -> None:
    c = small_cluster()
    c.apply(svc(type="NodePort"))
    assert c.node_port_allocator.used == 1
    stored = c.apply(svc())
    assert isinstance(stored, Service) and stored.ports[0].node_port is None
    assert c.node_port_allocator.used == 0


def test_node_port_kept_on_reapply_and_new_port_added() -> None:
    c = small_cluster()
    first = c.apply(svc(type="NodePort"))
    assert isinstance(first, Service)
    second = c.apply(
        svc(type="NodePort", ports=[{"port": 80, "name": "http"}, {"port": 443, "name": "https"}])
    )
    assert isinstance(second, Service)
    assert second.ports[0].node_port == first.ports[0].node_port
    assert second.ports[1].node_port not in (None, first.ports[0].node_port)
    assert c.node_port_allocator.used == 2


def test_load_balancer_health_check_node_port_lifecycle() -> None:
    c = small_cluster()
    local = c.apply(svc(type="LoadBalancer", externalTrafficPolicy="Local"))
    assert isinstance(local, Service) and local.health_check_node_port is not None
    assert c.node_port_allocator.used == 2
    cluster = c.apply(svc(type="LoadBalancer"))
    assert isinstance(cluster, Service) and cluster.health_check_node_port is None
    assert c.node_port_allocator.used == 1
    no_ports = c.apply(svc("x", type="LoadBalancer", allocateLoadBalancerNodePorts=False))
    assert isinstance(no_ports, Service) and no_ports.ports[0].node_port is None
    assert c.node_port_allocator.used == 1


def test_health_check_node_port_is_immutable() -> None:
    c = small_cluster()
    c.apply(svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=31000))
    with pytest.raises(ValidationError) as info:
        c.apply(svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=31001))
    assert "spec.healthCheckNodePort: Forbidden: field is immutable" in str(info.value)


def test_failed_update_keeps_old_values() -> None:
    c = small_cluster()
    c.apply(svc("a", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    c.apply(svc("b", type="NodePort", ports=[{"port": 80, "nodePort": 30090}]))
    before = c.to_state()
    # b asks for a's port while giving up its own: must fail and keep 30090 allocated.
    with pytest.raises(ValidationError):
        c.apply(svc("b", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    assert c.to_state() == before
    assert c.node_port_allocator.has(30090)


def test_delete_releases_everything() -> None:
    c = small_cluster()
    c.apply(svc(type="LoadBalancer", externalTrafficPolicy="Local"))
    deleted = c.delete("Service", "prod", "web")
    assert isinstance(deleted, Service)
    assert c.ip_allocators.primary.used == 0 and c.node_port_allocator.used == 0
    with pytest.raises(NotFoundError, match='Service "web" not found in namespace "prod"'):
        c.get("Service", "prod", "web")
    with pytest.raises(NotFoundError, match="unknown kind"):
        c.list("Deployment")


# ----------------------------------------------------------------------- all or nothing
def test_apply_all_is_all_or_nothing() -> None:
    c = small_cluster()
    c.apply(svc("keep"))
    before = c.to_state()
    with pytest.raises(ApplyError) as info:
        c.apply_all([svc("a"), svc("b", clusterIP="10.96.0.5"), svc("c", clusterIP="10.96.0.5")])
    assert 'Service "c" is invalid' in str(info.value)
    assert c.to_state() == before
    assert c.check_consistency() == []


def test_invalid_object_is_rejected_before_anything() -> None:
    c = small_cluster()
    good = svc()
    bad = attrs.evolve(good, session_affinity="Sticky")
    with pytest.raises(ValidationError, match=r"spec\.sessionAffinity: Unsupported value"):
        c.apply(bad)
    assert len(c) == 0


def test_bad_config() -> None:
    with pytest.raises(ConfigError):
        Cluster(max_endpoints_per_slice=0)


# ----------------------------------------------------------------- EndpointSlices
def test_slices_follow_pods_and_nodes() -> None:
    c = small_cluster()
    c.apply(node("node-a", "192.168.1.10", "zone-a"))
    c.apply(svc(ports=[{"port": 80, "name": "http", "targetPort": "http"}]))
    assert [len(s.endpoints) for s in c.endpoint_slices_for("prod", "web")] == [0]
    c.apply(pod("web-1", "10.244.1.5"))
    c.apply(pod("web-2", "10.244.1.6", ready=False))
    c.apply(pod("other", "10.244.1.7", app="other"))
    (eps,) = c.endpoint_slices_for("prod", "web")
    by_ip = {e.addresses[0]: e for e in eps.endpoints}
    assert set(by_ip) == {"10.244.1.5", "10.244.1.6"}
    assert by_ip["10.244.1.5"].conditions.ready is True
    assert by_ip["10.244.1.6"].conditions.ready is False
    assert by_ip["10.244.1.5"].zone == "zone-a"
    assert [p.port for p in eps.ports] == [8080]
    c.delete("Pod", "prod", "web-1")
    (eps,) = c.endpoint_slices_for("prod", "web")
    assert [e.addresses[0] for e in eps.endpoints] == ["10.244.1.6"]
    c.apply(node("node-a", "192.168.1.10", "zone-z"))
    (eps,) = c.endpoint_slices_for("prod", "web")
    assert eps.endpoints[0].zone == "zone-z"
    assert eps in c.list("EndpointSlice", "prod")


def test_user_slices_for_selectorless_service() -> None:
    c = small_cluster()
    legacy = Service.from_manifest(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "legacy", "namespace": "prod"},
            "spec": {"ports": [{"port": 5432}]},
        }
    )
    c.apply(legacy)
    eps = EndpointSlice.from_manifest(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "legacy-1",
                "namespace": "prod",
                "labels": {"kubernetes.io/service-name": "legacy"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.5.20"]}],
            "ports": [{"port": 5432}],
        }
    )
    c.apply(eps)
    assert [s.metadata.name for s in c.endpoint_slices_for("prod", "legacy")] == ["legacy-1"]
    c.delete("EndpointSlice", "prod", "legacy-1")
    assert c.endpoint_slices_for("prod", "legacy") == []


def test_creation_order_is_kept_across_updates() -> None:
    c = small_cluster()
    c.apply(svc("a"))
    c.apply(svc("b"))
    c.apply(svc("a"))
    assert c.creation_index("Service", "prod", "a") < c.creation_index("Service", "prod", "b")


# ------------------------------------------------------------------------ save / load
def test_save_and_load_give_identical_cluster(tmp_path: Path) -> None:
    c = small_cluster(service_cidrs=("10.96.0.0/16", "fd00::/112"))
    c.apply(node("node-a", "192.168.1.10", "zone-a"))
    c.apply(
        svc(type="LoadBalancer", externalTrafficPolicy="Local", ipFamilyPolicy="PreferDualStack")
    )
    c.apply(svc("redis", ns="data", clusterIP="None"))
    c.apply(pod("web-1", "10.244.1.5"))
    path = tmp_path / "cluster.json"
    c.save(path)
    loaded = Cluster.load(path)
    assert loaded == c
    assert loaded.to_state() == c.to_state()
    assert loaded.endpoint_slices == c.endpoint_slices
    # The restored allocators keep working without double allocation.
    stored = loaded.apply(svc("next"))
    assert isinstance(stored, Service)
    assert stored.cluster_ip not in {s.cluster_ip for s in c.services}


def test_load_rejects_inconsistent_or_broken_state(tmp_path: Path) -> None:
    c = small_cluster()
    c.apply(svc())
    state = c.to_state()
    state["allocators"]["clusterIPs"][0]["data"] = ""
    with pytest.raises(StateError, match="inconsistent"):
        Cluster.from_state(state)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(StateError, match="not JSON"):
        Cluster.load(bad)
    with pytest.raises(StateError, match="cannot read"):
        Cluster.load(tmp_path / "missing.json")


# ----------------------------------------------------------------------- concurrency
def test_concurrent_applies_never_double_allocate() -> None:
    c = small_cluster(service_cidrs=("10.96.0.0/24",), node_port_range="30000-30300")
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        for i in range(40):
            try:
                c.apply(svc(f"s{k}-{i}", type="NodePort"))
            except ValidationError as exc:  # the /24 fills up: expected
                assert "range is full" in str(exc)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ips = [s.cluster_ip for s in c.services]
    ports = [s.ports[0].node_port for s in c.services]
    assert len(ips) == len(set(ips)) == 254
    assert len(ports) == len(set(ports))
    assert c.check_consistency() == []


# ------------------------------------------------------------------ state machine
NAMES = ["a", "b", "c", "d"]
TYPES = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName", "Headless"]


class RegistryMachine(RuleBasedStateMachine):
    """Random creates, updates and deletes, some invalid or conflicting."""

    def __init__(self) -> None:
        super().__init__()
        self.cluster = Cluster(
            service_cidrs=("10.96.0.0/28",), node_port_range="30000-30019", seed=1
        )

    def _make(
        self, name: str, kind: str, ip: int | None, nps: list[int | None], local: bool
    ) -> Service:
        spec: dict[str, Any] = {"ports": []}
        if kind == "ExternalName":
            spec = {"type": "ExternalName", "externalName": f"{name}.example.com"}
        else:
            for i, np_ in enumerate(nps):
                port: dict[str, Any] = {"port": 80 + i, "name": f"p{i}"}
                if np_ is not None:
                    port["nodePort"] = np_
                spec["ports"].append(port)
            if kind == "Headless":
                spec["clusterIP"] = "None"
            else:
                spec["type"] = kind
                if ip is not None:
                    spec["clusterIP"] = f"10.96.0.{ip}"
            if kind == "LoadBalancer" and local:
                spec["externalTrafficPolicy"] = "Local"
        return Service.from_manifest(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}
        )

    @rule(
        name=st.sampled_from(NAMES),
        kind=st.sampled_from(TYPES),
        ip=st.none() | st.integers(0, 20),
        nps=st.lists(st.none() | st.integers(29995, 30025), min_size=1, max_size=3),
        local=st.booleans(),
    )
    def apply(
        self, name: str, kind: str, ip: int | None, nps: list[int | None], local: bool
    ) -> None:
        try:
            obj = self._make(name, kind, ip, nps, local)
        except ValidationError:
            return
        before = self.cluster.to_state()
        try:
            self.cluster.apply(obj)
        except ValidationError:
            assert self.cluster.to_state() == before, "a failed apply changed the cluster"

    @rule(name=st.sampled_from(NAMES))
    def delete(self, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            self.cluster.delete("Service", "default", name)

    @invariant()
    def allocators_match_registry(self) -> None:
        assert self.cluster.check_consistency() == []

    @invariant()
    def no_value_held_twice(self) -> None:
        ips: list[str] = []
        ports: list[int] = []
        for s in self.cluster.services:
            ips += [ip for ip in s.cluster_ips if ip != "None"]
            ports += sorted({p.node_port for p in s.ports if p.node_port is not None})
            if s.health_check_node_port is not None:
                ports.append(s.health_check_node_port)
        assert len(ips) == len(set(ips))
        assert len(ports) == len(set(ports))


RegistryMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, deadline=None
)
test_registry_state_machine = RegistryMachine.TestCase


# ------------------------------------------------------------------ DNS and env vars
def test_env_for_only_sees_services_created_before_the_pod() -> None:
    c = small_cluster()
    c.apply(node("node-a", "192.168.1.10", "zone-a"))
    early = c.apply(svc("backend-api", clusterIP="10.96.0.20"))
    web = pod("web-1", "10.244.1.5")
    c.apply(web)
    c.apply(svc("late", clusterIP="10.96.0.21"))
    env = c.env_for(web)
    assert isinstance(early, Service)
    assert env["BACKEND_API_SERVICE_HOST"] == "10.96.0.20"
    assert env["BACKEND_API_SERVICE_PORT"] == "80"
    assert env["BACKEND_API_PORT"] == "tcp://10.96.0.20:80"
    assert not any(k.startswith("LATE_") for k in env)
    # A pod not registered yet sees every Service.
    assert "LATE_SERVICE_HOST" in c.env_for(pod("web-9", "10.244.1.9"))


def test_dns_answers_from_cluster_state() -> None:
    c = small_cluster()
    c.apply(node("node-a", "192.168.1.10", "zone-a"))
    c.apply(svc("backend-api", ns="production", clusterIP="10.96.0.20"))
    answer = c.dns().query("backend-api.production.svc.cluster.local", "A")
    assert answer.addresses == ("10.96.0.20",)
    res = c.dns().resolve("backend-api", namespace="production")
    assert res.resolved and res.wasted == 0
    res = c.dns(upstream={"api.example.com": ["203.0.113.5"]}).resolve(
        "api.example.com", namespace="production"
    )
    assert res.resolved and res.wasted == 3
