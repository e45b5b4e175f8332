"""The cluster registry: the API server's side of Services, Pods, Nodes and EndpointSlices.

:class:`Cluster` stores objects the way the API server does: it validates and
defaults them, allocates ClusterIPs, nodePorts and healthCheckNodePorts, keeps
the EndpointSlices of selector Services derived from Pods and Nodes (the
EndpointSlice controller), and answers DNS and environment-variable questions.

Every write is all-or-nothing. A write first computes the new object and every
allocation inside allocator *operations*; only when everything has succeeded
are the objects stored and the operations committed (which is also when the
values the old object held are released). Any failure rolls the operations
back, so the registry and every allocator are exactly as before. One lock
serialises writes, so concurrent ``apply`` calls from several threads are safe.

Facts carried over from the API server's Service REST storage
(``pkg/registry/core/service/storage/{storage,alloc}.go``):

* On update, values the user leaves out are kept (``patchAllocatedValues``):
  clusterIP(s), the nodePort of a port with the same port number and
  protocol, and the healthCheckNodePort. ClusterIPs may not change once set;
  a secondary family may be added or (with ipFamilyPolicy SingleStack)
  released.
* Changing the type to ExternalName releases the ClusterIPs; leaving
  NodePort/LoadBalancer releases the nodePorts; a Service that stops needing a
  health check releases its healthCheckNodePort.
* Ports with the same port number share one nodePort (53/TCP and 53/UDP).
"""

from __future__ import annotations

import base64
import builtins
import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import attrs

from kservice.api.endpointslice import EndpointSlice, validate_endpointslice
from kservice.api.node import Node, validate_node
from kservice.api.pod import Pod, validate_pod
from kservice.api.service import (
    CLUSTER_IP_NONE,
    Service,
    apply_defaults,
    ip_family_of,
    validate_service,
)
from kservice.control.dns import ClusterDNS
from kservice.control.endpointslices import (
    CONTROLLER_NAME,
    derive_endpoint_slices,
    label_selector_matches,
)
from kservice.control.envvars import service_env
from kservice.control.ipalloc import ClusterIPAllocators, IPAllocationOperation
from kservice.control.portalloc import NodePortAllocator, PortAllocationOperation
from kservice.errors import (
    AllocationError,
    ConfigError,
    FieldError,
    KServiceError,
    NotFoundError,
    ValidationError,
)

__all__ = [
    "KINDS",
    "ApiObject",
    "ApplyError",
    "Cluster",
    "ClusterConfig",
    "ConfigError",
    "StateError",
]

ApiObject: TypeAlias = Service | EndpointSlice | Pod | Node
KINDS: dict[str, type[Any]] = {
    "EndpointSlice": EndpointSlice,
    "Node": Node,
    "Pod": Pod,
    "Service": Service,
}
_STATE_KIND = "ClusterState"
_STATE_API = "kservice.dev/v1"
_MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
_SERVICE_NAME_LABEL = "kubernetes.io/service-name"

Key: TypeAlias = tuple[str, str]  # (namespace, name); namespace "" for Nodes


def _validate_config_cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(value)


@attrs.frozen
class ClusterConfig:
    """What the API server is started with (the flags that matter here)."""

    #: ``--service-cluster-ip-range``: one CIDR, or two of different families.
    service_cidrs: tuple[str, ...] = attrs.field(
        default=("10.96.0.0/12",), converter=_validate_config_cidrs
    )
    #: ``--service-node-port-range``.
    node_port_range: str = "30000-32767"
    #: The cluster DNS domain.
    domain: str = "cluster.local"
    #: The EndpointSlice controller's ``--max-endpoints-per-slice`` (1-1000).
    max_endpoints_per_slice: int = 100
    #: Seed for the allocators' random choices (reproducible runs).
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "serviceCIDRs": list(self.service_cidrs),
            "nodePortRange": self.node_port_range,
            "domain": self.domain,
            "maxEndpointsPerSlice": self.max_endpoints_per_slice,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClusterConfig:
        return cls(
            service_cidrs=tuple(data.get("serviceCIDRs", ("10.96.0.0/12",))),
            node_port_range=str(data.get("nodePortRange", "30000-32767")),
            domain=str(data.get("domain", "cluster.local")),
            max_endpoints_per_slice=int(data.get("maxEndpointsPerSlice", 100)),
            seed=data.get("seed"),
        )


class _Txn:
    """The allocator operations of one write, committed or rolled back together."""

    def __init__(self, ips: ClusterIPAllocators, ports: NodePortAllocator) -> None:
        self.ip_ops: dict[str, IPAllocationOperation] = {a.family: a.operation() for a in ips}
        self.port_op: PortAllocationOperation = ports.operation()

    def commit(self) -> None:
        for op in self.ip_ops.values():
            op.commit()
        self.port_op.commit()

    def rollback(self) -> None:
        for op in self.ip_ops.values():
            op.rollback()
        self.port_op.rollback()


class Cluster:
    """A registry of Services, Pods, Nodes and EndpointSlices with the API server's rules.

    ``apply`` creates or updates, ``delete`` removes, ``get`` and ``list`` read.
    Objects come back as stored: defaulted, with their allocated values.
    """

    def __init__(self, config: ClusterConfig | None = None, **kwargs: Any) -> None:
        if config is None:
            config = ClusterConfig(**kwargs)
        elif kwargs:
            config = attrs.evolve(config, **kwargs)
        if not 1 <= config.max_endpoints_per_slice <= 1000:
            raise ConfigError(
                f"max_endpoints_per_slice must be between 1 and 1000, "
                f"not {config.max_endpoints_per_slice}"
            )
        self.config = config
        self.ip_allocators = ClusterIPAllocators.from_cidrs(config.service_cidrs, seed=config.seed)
        self.node_port_allocator = NodePortAllocator(config.node_port_range, seed=config.seed)
        self._lock = threading.RLock()
        self._services: dict[Key, Service] = {}
        self._pods: dict[Key, Pod] = {}
        self._nodes: dict[str, Node] = {}
        self._user_slices: dict[Key, EndpointSlice] = {}
        # (namespace, service name) -> hand-applied slices; rebuilt after writes.
        self._slice_index: dict[Key, builtins.list[EndpointSlice]] | None = None
        self._derived: dict[Key, tuple[EndpointSlice, ...]] = {}  # by Service key
        self._pods_by_ns: dict[str, dict[str, Pod]] = {}
        self._order: dict[tuple[str, str, str], int] = {}  # (kind, ns, name) -> creation seq
        self._seq = 0
        self._version = 0

    # ------------------------------------------------------------------ reads
    def get(self, kind: str, namespace: str, name: str) -> ApiObject:
        """The stored object, or :class:`~kservice.errors.NotFoundError`."""
        kind = _check_kind(kind)
        with self._lock:
            obj = self._find(kind, namespace, name)
        if obj is None:
            where = f' in namespace "{namespace}"' if namespace and kind != "Node" else ""
            raise NotFoundError(f'{kind} "{name}" not found{where}')
        return obj

    def list(self, kind: str, namespace: str | None = None) -> builtins.list[Any]:
        """Stored objects of ``kind`` (in ``namespace`` if given), sorted by namespace/name."""
        kind = _check_kind(kind)
        with self._lock:
            if kind == "Service":
                items: Iterable[Any] = self._services.values()
            elif kind == "Pod":
                items = self._pods.values()
            elif kind == "Node":
                items = self._nodes.values()
            else:
                items = [*self._user_slices.values(), *_flatten(self._derived.values())]
            out = [o for o in items if namespace is None or o.metadata.namespace == namespace]
        return sorted(out, key=lambda o: (o.metadata.namespace, o.metadata.name))

    @property
    def services(self) -> builtins.list[Service]:
        return self.list("Service")

    @property
    def pods(self) -> builtins.list[Pod]:
        return self.list("Pod")

    @property
    def nodes(self) -> builtins.list[Node]:
        return self.list("Node")

    @property
    def endpoint_slices(self) -> builtins.list[EndpointSlice]:
        return self.list("EndpointSlice")

    def endpoint_slices_for(self, namespace: str, name: str) -> builtins.list[EndpointSlice]:
        """The EndpointSlices of one Service: derived ones, or those applied by hand."""
        with self._lock:
            derived = self._derived.get((namespace, name))
            if derived is not None:
                return list(derived)
            if self._slice_index is None:
                index: dict[Key, builtins.list[EndpointSlice]] = {}
                for s in sorted(self._user_slices.values(), key=lambda s: s.metadata.name):
                    svc_name = s.metadata.labels.get(_SERVICE_NAME_LABEL)
                    if svc_name is not None:
                        index.setdefault((s.metadata.namespace, svc_name), []).append(s)
                self._slice_index = index
            return list(self._slice_index.get((namespace, name), ()))

    def dns(self, **options: Any) -> ClusterDNS:
        """Cluster DNS over the current state, as CoreDNS would answer it.

        ``options`` are :class:`~kservice.control.dns.ClusterDNS` keyword
        arguments (``upstream``, ``pods_mode``, ...); the domain is the cluster's.
        """
        with self._lock:
            return ClusterDNS(
                self.services, self.endpoint_slices, self.pods, domain=self.config.domain, **options
            )

    def env_for(self, pod: Pod) -> dict[str, str]:
        """The service environment variables the kubelet gives ``pod``.

        Only Services created before the pod count (all of them for a pod that
        is not in the registry yet, as for a pod about to be created).
        """
        with self._lock:
            pod_seq = self._order.get(("Pod", pod.metadata.namespace, pod.metadata.name))
            services = [
                svc
                for svc in self._services.values()
                if pod_seq is None or self._order[("Service", *svc.key)] < pod_seq
            ]
        return service_env(pod, services)

    def creation_index(self, kind: str, namespace: str, name: str) -> int:
        """The order in which the object was created (0 first); updates keep it."""
        key = (_check_kind(kind), namespace, name)
        with self._lock:
            if key not in self._order:
                raise NotFoundError(f'{kind} "{name}" not found')
            return self._order[key]

    def __len__(self) -> int:
        with self._lock:
            return (
                len(self._services)
                + len(self._pods)
                + len(self._nodes)
                + len(self._user_slices)
                + sum(len(s) for s in self._derived.values())
            )

    # ----------------------------------------------------------------- writes
    def apply(self, obj: ApiObject) -> ApiObject:
        """Create or update ``obj``; returns the object as stored.

        Raises :class:`~kservice.errors.ValidationError` (nothing changed) when
        the object is invalid or an allocation fails.
        """
        with self._lock:
            if isinstance(obj, Service):
                return self._apply_service(obj)
            if isinstance(obj, Pod):
                return self._apply_pod(obj)
            if isinstance(obj, Node):
                return self._apply_node(obj)
            if isinstance(obj, EndpointSlice):
                return self._apply_slice(obj)
        raise TypeError(f"cannot apply {type(obj).__name__}: not a kservice API object")

    def apply_all(self, objects: Iterable[ApiObject]) -> builtins.list[ApiObject]:
        """Apply several objects, all or nothing: on any error the cluster is as before.

        Nodes first, then Services, then Pods and EndpointSlices, so that
        derived state is computed once the things it refers to exist. Every
        error is collected and raised together as :class:`ApplyError`.
        """
        rank = {"Node": 0, "Service": 1, "Pod": 2, "EndpointSlice": 3}
        ordered = sorted(objects, key=lambda o: rank.get(getattr(o, "KIND", ""), 9))
        with self._lock:
            saved = self._checkpoint()
            out: builtins.list[ApiObject] = []
            errors: builtins.list[KServiceError] = []
            for obj in ordered:
                try:
                    out.append(self.apply(obj))
                except (ValidationError, NotFoundError) as exc:
                    errors.append(exc)
            if errors:
                self._restore_checkpoint(saved)
                raise ApplyError(errors)
            return out

    def delete(self, kind: str, namespace: str, name: str) -> ApiObject:
        """Delete an object (releasing what it held); returns what was deleted."""
        kind = _check_kind(kind)
        with self._lock:
            obj = self.get(kind, namespace, name)
            if isinstance(obj, Service):
                key = obj.key
                ips = [ip for ip in obj.cluster_ips if ip != CLUSTER_IP_NONE]
                for ip in ips:
                    alloc = self.ip_allocators.get(ip_family_of(ip) or "IPv4")  # type: ignore[arg-type]
                    if alloc is not None:
                        alloc.release(ip)
                for port in _held_node_ports(obj):
                    self.node_port_allocator.release(port)
                del self._services[key]
                self._derived.pop(key, None)
            elif isinstance(obj, Pod):
                del self._pods[(namespace, name)]
                self._pods_by_ns.get(namespace, {}).pop(name, None)
                self._resync_for_pod(obj, None)
            elif isinstance(obj, Node):
                del self._nodes[name]
                self._resync_for_node(name)
            else:
                if (namespace, name) not in self._user_slices:
                    raise ValidationError(
                        "EndpointSlice",
                        name,
                        [
                            FieldError.forbidden(
                                "metadata.name",
                                "managed by the EndpointSlice controller; it is derived "
                                "from the Service's Pods and cannot be deleted by hand",
                            )
                        ],
                    )
                del self._user_slices[(namespace, name)]
                self._slice_index = None
            self._order.pop((kind, namespace if kind != "Node" else "", name), None)
            return obj

    # ------------------------------------------------------------ Services
    def _apply_service(self, svc: Service) -> Service:
        svc = apply_defaults(svc)
        old = self._services.get(svc.key)
        errors: builtins.list[FieldError] = []
        if old is not None:
            svc = _patch_allocated_values(svc, old)
            errors += _validate_update(svc, old)
        errors += validate_service(svc)
        if errors:
            raise ValidationError("Service", svc.name, errors)
        txn = _Txn(self.ip_allocators, self.node_port_allocator)
        try:
            new = self._allocate(svc, old, txn)
            derived = self._derive(new)
        except BaseException:
            txn.rollback()
            raise
        self._version += 1
        new = attrs.evolve(
            new, metadata=attrs.evolve(new.metadata, resource_version=str(self._version))
        )
        self._services[new.key] = new
        self._set_derived(new.key, derived)
        self._remember("Service", new.namespace, new.name)
        txn.commit()
        return new

    def _allocate(self, svc: Service, old: Service | None, txn: _Txn) -> Service:
        """The Service with its ClusterIPs, nodePorts and healthCheckNodePort."""
        svc, errs = self._allocate_cluster_ips(svc, old, txn)
        if not errs:
            svc, errs = self._allocate_node_ports(svc, old, txn)
        if errs:
            raise ValidationError("Service", svc.name, errs)
        # The stored object must itself be valid, allocated values included.
        errs = validate_service(svc)
        if errs:  # pragma: no cover - allocation only produces valid values
            raise ValidationError("Service", svc.name, errs)
        return svc

    def _families_for(self, svc: Service) -> tuple[tuple[str, ...], builtins.list[FieldError]]:
        """The ipFamilies the API server settles on (``initIPFamilyFields``)."""
        cluster = self.ip_allocators.families
        policy = svc.ip_family_policy
        families = list(svc.ip_families)
        errs: builtins.list[FieldError] = []
        for i, fam in enumerate(families):
            if fam not in cluster and not svc.is_headless:
                errs.append(
                    FieldError.invalid(
                        f"spec.ipFamilies[{i}]", fam, "not configured on this cluster"
                    )
                )
        if policy == "RequireDualStack" and len(cluster) < 2 and not svc.is_headless:
            errs.append(
                FieldError.invalid(
                    "spec.ipFamilyPolicy",
                    policy,
                    "this cluster is not configured for dual-stack services",
                )
            )
        if errs:
            return (), errs
        if not families:
            families = [cluster[0]]
        if policy in ("PreferDualStack", "RequireDualStack") and len(families) == 1:
            other = "IPv6" if families[0] == "IPv4" else "IPv4"
            if other in cluster:
                families.append(other)
        return tuple(families), []

    def _allocate_cluster_ips(
        self, svc: Service, old: Service | None, txn: _Txn
    ) -> tuple[Service, builtins.list[FieldError]]:
        if svc.type == "ExternalName":
            # ExternalName Services hold no ClusterIP; an old one is released.
            if old is not None:
                for ip in old.cluster_ips:
                    if ip != CLUSTER_IP_NONE:
                        txn.ip_ops[ip_family_of(ip) or ""].release_deferred(ip)
            return (
                attrs.evolve(
                    svc,
                    cluster_ip=None,
                    cluster_ips=(),
                    ip_families=(),
                    ip_family_policy=None,
                ),
                [],
            )
        families, errs = self._families_for(svc)
        if errs:
            return svc, errs
        if svc.is_headless:
            return attrs.evolve(svc, ip_families=families), []
        held = set() if old is None or old.type == "ExternalName" else set(old.cluster_ips)
        ips: builtins.list[str] = []
        for i, fam in enumerate(families):
            op = txn.ip_ops.get(fam)
            if op is None:  # pragma: no cover - excluded by _families_for
                continue
            requested = svc.cluster_ips[i] if i < len(svc.cluster_ips) else None
            try:
                if requested is not None and requested in held:
                    ips.append(requested)
                elif requested is not None:
                    ips.append(op.allocate(requested))
                else:
                    ips.append(op.allocate_next())
            except AllocationError as exc:
                path = f"spec.clusterIPs[{i}]"
                if requested is None:
                    errs.append(FieldError.internal(path, f"failed to allocate a serviceIP: {exc}"))
                else:
                    errs.append(
                        FieldError.invalid(
                            path, requested, f"failed to allocate IP {requested}: {exc}"
                        )
                    )
        # A released secondary family (downgrade to SingleStack).
        for ip in held - set(ips):
            if ip != CLUSTER_IP_NONE:
                txn.ip_ops[ip_family_of(ip) or ""].release_deferred(ip)
        if errs:
            return svc, errs
        return (
            attrs.evolve(svc, cluster_ip=ips[0], cluster_ips=tuple(ips), ip_families=families),
            [],
        )

    def _allocate_node_ports(
        self, svc: Service, old: Service | None, txn: _Txn
    ) -> tuple[Service, builtins.list[FieldError]]:
        """nodePorts and the healthCheckNodePort (``storage/alloc.go``).

        A nodePort the old object held for a port is kept without allocating it
        again; the healthCheckNodePort likewise only as the health check. One
        value never serves both a port and the health check.
        """
        op = txn.port_op
        old_ports = {p.node_port for p in old.ports if p.node_port is not None} if old else set()
        old_hc = old.health_check_node_port if old is not None else None
        taken: set[int] = set()  # nodePorts of the new object's ports
        errs: builtins.list[FieldError] = []

        def allocate(port: int | None, path: str) -> int | None:
            try:
                return op.allocate(port) if port is not None else op.allocate_next()
            except AllocationError as exc:
                if port is None:
                    errs.append(FieldError.internal(path, f"failed to allocate a nodePort: {exc}"))
                else:
                    errs.append(FieldError.invalid(path, port, str(exc)))
                return None

        def take(port: int | None, path: str) -> int | None:
            if port is not None and (port in taken or port in old_ports):
                got: int | None = port
            else:
                got = allocate(port, path)
            if got is not None:
                taken.add(got)
            return got

        ports = list(svc.ports)
        if svc.uses_node_ports or any(p.node_port is not None for p in ports):
            by_number: dict[int, int] = {}  # port number -> nodePort shared by its protocols
            # Requested nodePorts first, so that a shared port number reuses them.
            for i, p in enumerate(ports):
                if p.node_port is not None:
                    got = take(p.node_port, f"spec.ports[{i}].nodePort")
                    if got is not None:
                        by_number.setdefault(p.port, got)
            if svc.uses_node_ports:
                for i, p in enumerate(ports):
                    if p.node_port is None:
                        shared = by_number.get(p.port)
                        got = (
                            shared
                            if shared is not None
                            else take(None, f"spec.ports[{i}].nodePort")
                        )
                        if got is not None:
                            by_number.setdefault(p.port, got)
                            ports[i] = attrs.evolve(p, node_port=got)
        hc: int | None = None
        if svc.needs_health_check:
            want = svc.health_check_node_port
            if want is not None and want == old_hc and want not in taken:
                hc = want
            else:
                hc = allocate(want, "spec.healthCheckNodePort")
        held_now = taken | ({hc} if hc is not None else set())
        for port in (old_ports | ({old_hc} if old_hc is not None else set())) - held_now:
            op.release_deferred(port)
        return attrs.evolve(svc, ports=tuple(ports), health_check_node_port=hc), errs

    # -------------------------------------------------------- other kinds
    def _apply_pod(self, pod: Pod) -> Pod:
        errors = validate_pod(pod)
        if errors:
            raise ValidationError("Pod", pod.metadata.name, errors)
        key = (pod.metadata.namespace, pod.metadata.name)
        old = self._pods.get(key)
        self._version += 1
        pod = attrs.evolve(
            pod, metadata=attrs.evolve(pod.metadata, resource_version=str(self._version))
        )
        self._pods[key] = pod
        self._pods_by_ns.setdefault(key[0], {})[key[1]] = pod
        self._remember("Pod", *key)
        self._resync_for_pod(old, pod)
        return pod

    def _apply_node(self, node: Node) -> Node:
        errors = validate_node(node)
        if errors:
            raise ValidationError("Node", node.metadata.name, errors)
        self._version += 1
        node = attrs.evolve(
            node, metadata=attrs.evolve(node.metadata, resource_version=str(self._version))
        )
        self._nodes[node.metadata.name] = node
        self._remember("Node", "", node.metadata.name)
        self._resync_for_node(node.metadata.name)
        return node

    def _apply_slice(self, eps: EndpointSlice) -> EndpointSlice:
        errors = validate_endpointslice(eps)
        key = (eps.metadata.namespace, eps.metadata.name)
        if eps.metadata.labels.get(_MANAGED_BY_LABEL) == CONTROLLER_NAME:
            errors.append(
                FieldError.forbidden(
                    f"metadata.labels[{_MANAGED_BY_LABEL}]",
                    "EndpointSlices managed by the EndpointSlice controller are derived "
                    "from Pods; they cannot be applied by hand",
                )
            )
        old = self._user_slices.get(key)
        if old is not None and old.address_type != eps.address_type:
            errors.append(FieldError.invalid("addressType", eps.address_type, "field is immutable"))
        if errors:
            raise ValidationError("EndpointSlice", eps.metadata.name, errors)
        self._version += 1
        eps = attrs.evolve(
            eps, metadata=attrs.evolve(eps.metadata, resource_version=str(self._version))
        )
        self._user_slices[key] = eps
        self._slice_index = None
        self._remember("EndpointSlice", *key)
        return eps

    # ------------------------------------------------ EndpointSlice controller
    def _derive(self, svc: Service) -> tuple[EndpointSlice, ...] | None:
        if not svc.has_selector or svc.type == "ExternalName":
            return None
        pods = self._pods_by_ns.get(svc.namespace, {}).values()
        return derive_endpoint_slices(
            svc,
            pods,
            self._nodes.values(),
            max_endpoints_per_slice=self.config.max_endpoints_per_slice,
        )

    def _set_derived(self, key: Key, slices: tuple[EndpointSlice, ...] | None) -> None:
        if slices is None:
            self._derived.pop(key, None)
        else:
            self._derived[key] = slices

    def _resync_for_pod(self, old: Pod | None, new: Pod | None) -> None:
        pod = new or old
        if pod is None:
            return
        ns = pod.metadata.namespace
        labels = [p.metadata.labels for p in (old, new) if p is not None]
        for svc in self._services.values():
            if svc.namespace != ns or not svc.has_selector:
                continue
            if any(label_selector_matches(svc.selector, lab) for lab in labels):
                self._set_derived(svc.key, self._derive(svc))

    def _resync_for_node(self, node_name: str) -> None:
        touched = {key[0] for key, pod in self._pods.items() if pod.node_name == node_name}
        for svc in self._services.values():
            if svc.namespace in touched and svc.has_selector:
                self._set_derived(svc.key, self._derive(svc))

    # ---------------------------------------------------------- bookkeeping
    def _find(self, kind: str, namespace: str, name: str) -> ApiObject | None:
        if kind == "Service":
            return self._services.get((namespace, name))
        if kind == "Pod":
            return self._pods.get((namespace, name))
        if kind == "Node":
            return self._nodes.get(name)
        found = self._user_slices.get((namespace, name))
        if found is not None:
            return found
        for slices in self._derived.values():
            for s in slices:
                if s.metadata.namespace == namespace and s.metadata.name == name:
                    return s
        return None

    def _remember(self, kind: str, namespace: str, name: str) -> None:
        key = (kind, namespace, name)
        if key not in self._order:
            self._order[key] = self._seq
            self._seq += 1

    def _checkpoint(self) -> tuple[Any, ...]:
        return (
            dict(self._services),
            dict(self._pods),
            dict(self._nodes),
            dict(self._user_slices),
            dict(self._derived),
            {ns: dict(p) for ns, p in self._pods_by_ns.items()},
            dict(self._order),
            self._seq,
            self._version,
            [a.snapshot() for a in self.ip_allocators],
            self.node_port_allocator.snapshot(),
        )

    def _restore_checkpoint(self, saved: tuple[Any, ...]) -> None:
        (
            self._services,
            self._pods,
            self._nodes,
            self._user_slices,
            self._derived,
            self._pods_by_ns,
            self._order,
            self._seq,
            self._version,
            ip_snaps,
            port_snap,
        ) = saved
        self._slice_index = None
        for alloc, (rng, data) in zip(self.ip_allocators, ip_snaps, strict=True):
            alloc.restore(rng, data)
        self.node_port_allocator.restore(*port_snap)

    # ------------------------------------------------------------ save / load
    def to_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this cluster exactly (JSON-serialisable)."""
        with self._lock:
            objects = sorted(
                (
                    (seq, kind, ns, name)
                    for (kind, ns, name), seq in self._order.items()
                    if self._find(kind, ns, name) is not None
                ),
            )
            return {
                "apiVersion": _STATE_API,
                "kind": _STATE_KIND,
                "config": self.config.to_dict(),
                "version": self._version,
                "sequence": self._seq,
                "objects": [
                    {"order": seq, "manifest": self._find(kind, ns, name).to_manifest()}  # type: ignore[union-attr]
                    for seq, kind, ns, name in objects
                ],
                "allocators": {
                    "clusterIPs": [_snap_dict(*a.snapshot()) for a in self.ip_allocators],
                    "nodePorts": _snap_dict(*self.node_port_allocator.snapshot()),
                },
            }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Cluster:
        """Rebuild a cluster saved by :meth:`to_state`; checks it is consistent."""
        if not isinstance(state, Mapping) or state.get("kind") != _STATE_KIND:
            raise StateError(f"not a saved kservice cluster (kind must be {_STATE_KIND})")
        try:
            cluster = cls(ClusterConfig.from_dict(state.get("config", {})))
            for item in state["objects"]:
                manifest = item["manifest"]
                kind = _check_kind(str(manifest.get("kind", "")))
                obj = KINDS[kind].from_manifest(manifest)
                cluster._store_raw(obj, int(item["order"]))
            cluster._seq = int(state["sequence"])
            cluster._version = int(state["version"])
            allocs = state["allocators"]
            for alloc, snap in zip(cluster.ip_allocators, allocs["clusterIPs"], strict=True):
                alloc.restore(snap["range"], base64.b64decode(snap["data"]))
            cluster.node_port_allocator.restore(
                allocs["nodePorts"]["range"], base64.b64decode(allocs["nodePorts"]["data"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, KServiceError):
                raise StateError(f"saved cluster state is invalid: {exc}") from exc
            raise StateError(f"saved cluster state is malformed: {exc!r}") from exc
        for svc in cluster._services.values():
            cluster._set_derived(svc.key, cluster._derive(svc))
        problems = cluster.check_consistency()
        if problems:
            raise StateError("saved cluster state is inconsistent: " + "; ".join(problems))
        return cluster

    def _store_raw(self, obj: ApiObject, order: int) -> None:
        ns, name = obj.metadata.namespace, obj.metadata.name
        if isinstance(obj, Service):
            self._services[(ns, name)] = obj
        elif isinstance(obj, Pod):
            self._pods[(ns, name)] = obj
            self._pods_by_ns.setdefault(ns, {})[name] = obj
        elif isinstance(obj, Node):
            self._nodes[name] = obj
            ns = ""
        else:
            self._user_slices[(ns, name)] = obj
            self._slice_index = None
        self._order[(obj.KIND, ns, name)] = order

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole cluster (objects + allocator state) as JSON."""
        text = json.dumps(self.to_state(), indent=1, sort_keys=False)
        tmp = Path(f"{os.fspath(path)}.tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Cluster:
        """Read a cluster written by :meth:`save`."""
        try:
            state = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise StateError(f"cannot read {os.fspath(path)}: {exc.strerror}") from exc
        except json.JSONDecodeError as exc:
            raise StateError(f"{os.fspath(path)}: not JSON: {exc}") from exc
        return cls.from_state(state)

    def check_consistency(self) -> builtins.list[str]:
        """Problems where allocator state and stored Services disagree (empty: none)."""
        with self._lock:
            problems: builtins.list[str] = []
            want_ips: dict[str, set[str]] = {a.family: set() for a in self.ip_allocators}
            want_ports: set[int] = set()
            for svc in self._services.values():
                for ip in svc.cluster_ips:
                    if ip == CLUSTER_IP_NONE:
                        continue
                    fam = ip_family_of(ip) or ""
                    if ip in want_ips.get(fam, set()):
                        problems.append(f"ClusterIP {ip} held by two Services")
                    want_ips.setdefault(fam, set()).add(ip)
                for port in _held_node_ports(svc):
                    want_ports.add(port)
            for alloc in self.ip_allocators:
                have = set(alloc)
                want = want_ips.get(alloc.family, set())
                if have != want:
                    problems.append(
                        f"{alloc.family} allocator holds {sorted(have - want)} unused "
                        f"and misses {sorted(want - have)}"
                    )
            have_ports = set(self.node_port_allocator)
            if have_ports != want_ports:
                problems.append(
                    f"nodePort allocator holds {sorted(have_ports - want_ports)} unused "
                    f"and misses {sorted(want_ports - have_ports)}"
                )
            return problems

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cluster):
            return NotImplemented
        return self.to_state() == other.to_state()

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def from_objects(
        cls, objects: Iterable[ApiObject], config: ClusterConfig | None = None, **kwargs: Any
    ) -> Cluster:
        """A cluster holding ``objects`` (applied all or nothing)."""
        cluster = cls(config, **kwargs)
        cluster.apply_all(objects)
        return cluster

    def __iter__(self) -> Iterator[ApiObject]:
        for kind in ("Node", "Service", "Pod", "EndpointSlice"):
            yield from self.list(kind)


class StateError(KServiceError, ValueError):
    """A saved cluster state cannot be loaded."""


class ApplyError(KServiceError, ValueError):
    """Several objects could not be applied; nothing was changed.

    ``errors`` holds each object's own error (usually a ValidationError).
    """

    def __init__(self, errors: Iterable[KServiceError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise NotFoundError(
            f'unknown kind "{kind}": supported kinds are {", ".join(sorted(KINDS))}'
        )
    return kind


def _flatten(groups: Iterable[tuple[EndpointSlice, ...]]) -> Iterator[EndpointSlice]:
    for group in groups:
        yield from group


def _held_node_ports(svc: Service | None) -> list[int]:
    if svc is None:
        return []
    held = {p.node_port for p in svc.ports if p.node_port is not None}
    if svc.health_check_node_port is not None:
        held.add(svc.health_check_node_port)
    return sorted(held)


def _snap_dict(rng: str, data: bytes) -> dict[str, str]:
    return {"range": rng, "data": base64.b64encode(data).decode("ascii")}


def _patch_allocated_values(new: Service, old: Service) -> Service:
    """Keep values the user left out on update (``patchAllocatedValues``)."""
    changes: dict[str, Any] = {}
    keeps_ips = "ExternalName" not in (new.type, old.type)
    if keeps_ips and not new.cluster_ips and old.cluster_ips:
        keep = old.cluster_ips
        # A downgrade to SingleStack releases the secondary clusterIP.
        if new.ip_family_policy == "SingleStack" and len(new.ip_families) < 2:
            keep = keep[:1]
        changes["cluster_ip"] = keep[0]
        changes["cluster_ips"] = keep
        if not new.ip_families and not old.is_headless:
            changes["ip_families"] = old.ip_families[: len(keep)]
    if old.uses_node_ports and not new.uses_node_ports and new.type != "LoadBalancer":
        # dropTypeDependentFields: leaving NodePort/LoadBalancer drops the
        # nodePorts the user did not change.
        old_values = {p.node_port for p in old.ports}
        changes["ports"] = tuple(
            attrs.evolve(p, node_port=None) if p.node_port in old_values else p for p in new.ports
        )
    if (
        not new.needs_health_check
        and old.needs_health_check
        and new.health_check_node_port == old.health_check_node_port
    ):
        changes["health_check_node_port"] = None
    if new.uses_node_ports and old.uses_node_ports:
        old_ports = {(p.port, p.protocol): p.node_port for p in old.ports}
        ports = []
        for p in new.ports:
            if p.node_port is None and old_ports.get((p.port, p.protocol)) is not None:
                p = attrs.evolve(p, node_port=old_ports[(p.port, p.protocol)])
            ports.append(p)
        changes["ports"] = tuple(ports)
    if new.needs_health_check and old.needs_health_check and new.health_check_node_port is None:
        changes["health_check_node_port"] = old.health_check_node_port
    if changes:
        new = attrs.evolve(new, **changes)
        # A patched Service may need its families re-inferred (clusterIPs now given).
        new = apply_defaults(new)
    return new


def _validate_update(new: Service, old: Service) -> list[FieldError]:
    """``ValidateServiceUpdate``'s immutability rules."""
    errs: list[FieldError] = []
    both_have_ips = "ExternalName" not in (new.type, old.type)
    if both_have_ips and not (old.is_headless and new.is_headless):
        o, n = old.cluster_ips, new.cluster_ips
        if len(o) == len(n):
            for i, ip in enumerate(o):
                if ip != n[i]:
                    errs.append(
                        FieldError.invalid(
                            f"spec.clusterIPs[{i}]", list(n), "may not change once set"
                        )
                    )
        elif n and o and n[0] != o[0]:
            errs.append(
                FieldError.invalid("spec.clusterIPs[0]", list(n), "may not change once set")
            )
        elif len(o) > len(n) and len(n) == 1 and new.ip_family_policy != "SingleStack":
            errs.append(
                FieldError.invalid(
                    "spec.ipFamilyPolicy",
                    new.ip_family_policy,
                    "must be set to 'SingleStack' when releasing the secondary clusterIP",
                )
            )
    if (
        old.needs_health_check
        and new.needs_health_check
        and new.health_check_node_port != old.health_check_node_port
    ):
        errs.append(FieldError.forbidden("spec.healthCheckNodePort", "field is immutable"))
    if (
        old.type == "LoadBalancer"
        and new.type == "LoadBalancer"
        and old.load_balancer_class != new.load_balancer_class
    ):
        errs.append(
            FieldError.invalid(
                "spec.loadBalancerClass", new.load_balancer_class, "may not change once set"
            )
        )
    return errs
