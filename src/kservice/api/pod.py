"""The Pod API object (core/v1), as far as the Service data plane needs it.

Kept: identity, labels and the deletion timestamp (selection, terminating
endpoints); where the Pod runs and under which names (``nodeName``,
``hostname``, ``subdomain``, ``hostNetwork``); the DNS settings the cluster
DNS and resolv.conf generation need (``dnsPolicy``, ``dnsConfig``,
``enableServiceLinks``); the containers' names and ports (named
``targetPort`` lookup); and the status a controller reads (``phase``, pod
IPs, conditions). Everything else a real Pod manifest holds (images, volumes,
probes, resources, ...) is accepted and ignored, so ``kubectl get pod -o
yaml`` output loads as is.

Parsing applies the API server's defaulting (``SetDefaults_PodSpec``,
``SetDefaults_ContainerPort``, host-network port defaulting);
:func:`validate_pod` applies the parts of ``ValidatePodCreate`` and
``ValidatePodStatusUpdate`` that cover the kept fields, with the API
server's messages.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from kservice.api import validation as v
from kservice.api._base import (
    Condition,
    FrozenMap,
    Named,
    ObjectMeta,
    Reader,
    condition_status,
    tuple_of,
)
from kservice.errors import FieldError, ValidationError

__all__ = [
    "DNS_POLICIES",
    "MAX_DNS_NAMESERVERS",
    "MAX_DNS_SEARCH_LIST_CHARS",
    "MAX_DNS_SEARCH_PATHS",
    "Container",
    "ContainerPort",
    "DNSConfigOption",
    "Pod",
    "PodCondition",
    "PodDNSConfig",
    "validate_pod",
]

DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
PROTOCOLS = ("SCTP", "TCP", "UDP")

# Limits from Linux libc name resolution (core.MaxDNSNameservers and friends).
MAX_DNS_NAMESERVERS = 3
MAX_DNS_SEARCH_PATHS = 32
MAX_DNS_SEARCH_LIST_CHARS = 2048  # including the spaces between paths


@attrs.frozen
class ContainerPort:
    """One ``spec.containers[].ports[]`` entry.

    ``host_port`` and ``host_ip`` are ``None`` when unset; on a host-network
    Pod the API server defaults ``hostPort`` to ``containerPort``.
    """

    container_port: int
    name: str = ""
    protocol: str = "TCP"
    host_port: int | None = None
    host_ip: str | None = None

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> ContainerPort:
        return cls(
            container_port=r.int(data, "containerPort", f"{path}.containerPort", default=0),
            name=r.str(data, "name", f"{path}.name", default=""),
            # v1 protocol is a plain string: empty means unset, defaulted to TCP.
            protocol=r.str(data, "protocol", f"{path}.protocol", default="") or "TCP",
            host_port=r.int(data, "hostPort", f"{path}.hostPort") or None,
            host_ip=r.str(data, "hostIP", f"{path}.hostIP") or None,
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        out["containerPort"] = self.container_port
        out["protocol"] = self.protocol
        if self.host_port is not None:
            out["hostPort"] = self.host_port
        if self.host_ip is not None:
            out["hostIP"] = self.host_ip
        return out


@attrs.frozen
class Container:
    """A container, reduced to its name and ports."""

    name: str
    ports: tuple[ContainerPort, ...] = attrs.field(default=(), converter=tuple_of)

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> Container:
        return cls(
            name=r.str(data, "name", f"{path}.name", default=""),
            ports=r.objects(data, "ports", f"{path}.ports", ContainerPort.read),
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.ports:
            out["ports"] = [p.to_manifest() for p in self.ports]
        return out


@attrs.frozen
class DNSConfigOption:
    """A resolver option (``ndots``, ``edns0``, ...); ``value`` is optional."""

    name: str
    value: str | None = None

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> DNSConfigOption:
        return cls(
            name=r.str(data, "name", f"{path}.name", default=""),
            value=r.str(data, "value", f"{path}.value"),
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.value is not None:
            out["value"] = self.value
        return out


@attrs.frozen
class PodDNSConfig:
    """``spec.dnsConfig``: merged into the resolver settings ``dnsPolicy`` produces."""

    nameservers: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)
    searches: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)
    options: tuple[DNSConfigOption, ...] = attrs.field(default=(), converter=tuple_of)

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> PodDNSConfig:
        return cls(
            nameservers=r.str_list(data, "nameservers", f"{path}.nameservers"),
            searches=r.str_list(data, "searches", f"{path}.searches"),
            options=r.objects(data, "options", f"{path}.options", DNSConfigOption.read),
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.nameservers:
            out["nameservers"] = list(self.nameservers)
        if self.searches:
            out["searches"] = list(self.searches)
        if self.options:
            out["options"] = [o.to_manifest() for o in self.options]
        return out


PodCondition = Condition


def _read_pod_ip(r: Reader, data: dict[str, Any], path: str) -> str:
    ip: str = r.str(data, "ip", f"{path}.ip", default="")
    return ip


@attrs.frozen
class Pod(Named):
    """A Pod (v1), reduced to what Services, endpoints and DNS need.

    ``pod_ips`` holds ``status.podIPs``; ``status.podIP`` is derived as its
    first entry (a manifest with only ``podIP`` fills the list; one whose
    ``podIP`` differs from ``podIPs[0]`` is rejected, where the API server's
    conversion would silently keep ``podIP`` alone). ``node_name``,
    ``hostname``, ``subdomain`` and ``phase`` are ``None`` when unset. A Pod is
    terminating once ``metadata.deletionTimestamp`` is set.
    """

    KIND: ClassVar[str] = "Pod"
    API_VERSION: ClassVar[str] = "v1"

    metadata: ObjectMeta
    containers: tuple[Container, ...] = attrs.field(default=(), converter=tuple_of)
    node_name: str | None = None
    hostname: str | None = None
    subdomain: str | None = None
    host_network: bool = False
    enable_service_links: bool = True
    dns_policy: str = "ClusterFirst"
    dns_config: PodDNSConfig | None = None
    phase: str | None = None
    pod_ips: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)
    conditions: tuple[PodCondition, ...] = attrs.field(default=(), converter=tuple_of)

    # -- identity -----------------------------------------------------------

    @property
    def labels(self) -> FrozenMap:
        return self.metadata.labels

    # -- derived (never stored twice) ------------------------------------------
    @property
    def pod_ip(self) -> str | None:
        """``status.podIP``: the first of :attr:`pod_ips`, if any."""
        return self.pod_ips[0] if self.pod_ips else None

    def ip_of_family(self, family: str) -> str | None:
        """The Pod's address of family ``"IPv4"`` or ``"IPv6"``, if it has one."""
        want = 4 if family == "IPv4" else 6 if family == "IPv6" else None
        for ip in self.pod_ips:
            if v.ip_version(ip) == want:
                return ip
        return None

    def condition(self, type_: str) -> str | None:
        """The status ("True", "False", "Unknown") of condition ``type_``, if present."""
        return condition_status(self.conditions, type_)

    @property
    def is_ready(self) -> bool:
        """The Ready condition is "True" (``podutil.IsPodReady``)."""
        return self.condition("Ready") == "True"

    @property
    def is_terminating(self) -> bool:
        """Deletion has been requested (``metadata.deletionTimestamp`` is set)."""
        return self.metadata.deletion_timestamp is not None

    @property
    def is_terminal(self) -> bool:
        """Phase Succeeded or Failed: its containers will not run again."""
        return self.phase in ("Succeeded", "Failed")

    def find_port(self, name: str, protocol: str = "TCP") -> int | None:
        """The container port named ``name`` for ``protocol`` (``podutil.FindPort``).

        Resolves a Service's named ``targetPort``; the first match in
        container order wins, as upstream.
        """
        for container in self.containers:
            for port in container.ports:
                if port.name == name and port.protocol == protocol:
                    return port.container_port
        return None

    # -- manifests ---------------------------------------------------------------
    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Pod:
        """Parse, default and validate a Pod manifest (unknown fields ignored).

        Raises :class:`~kservice.errors.ValidationError` with every problem.
        """
        if not isinstance(data, dict):
            raise ValidationError(cls.KIND, "", [FieldError.invalid("", data, "must be an object")])
        r = Reader()
        meta = ObjectMeta.read(r, data)
        spec = r.map(data, "spec", "spec")
        status = r.map(data, "status", "status")

        host_network: bool = r.bool(spec, "hostNetwork", "spec.hostNetwork", default=False)
        containers = r.objects(spec, "containers", "spec.containers", Container.read)
        if host_network:
            containers = tuple(_default_host_ports(c) for c in containers)
        dns_config = None
        if isinstance(spec.get("dnsConfig"), dict):
            dns_config = PodDNSConfig.read(r, spec["dnsConfig"], "spec.dnsConfig")
        else:
            r.map(spec, "dnsConfig", "spec.dnsConfig")  # reports a non-object value

        # status.podIP and status.podIPs: the list wins; a lone podIP fills it.
        pod_ips = r.objects(status, "podIPs", "status.podIPs", _read_pod_ip)
        pod_ip = r.str(status, "podIP", "status.podIP", default="")
        if pod_ip and not pod_ips:
            pod_ips = (pod_ip,)
        elif pod_ip and pod_ip != pod_ips[0]:
            # The API server's conversion would silently keep podIP alone; an
            # inconsistent manifest is far more likely a mistake, so say so.
            r.errors.append(
                FieldError.invalid("status.podIP", pod_ip, "must match status.podIPs[0]")
            )

        pod = cls(
            metadata=meta,
            containers=containers,
            node_name=r.str(spec, "nodeName", "spec.nodeName") or None,
            hostname=r.str(spec, "hostname", "spec.hostname") or None,
            subdomain=r.str(spec, "subdomain", "spec.subdomain") or None,
            host_network=host_network,
            enable_service_links=r.bool(
                spec, "enableServiceLinks", "spec.enableServiceLinks", default=True
            ),
            dns_policy=r.str(spec, "dnsPolicy", "spec.dnsPolicy", default="") or "ClusterFirst",
            dns_config=dns_config,
            phase=r.str(status, "phase", "status.phase") or None,
            pod_ips=pod_ips,
            conditions=r.objects(status, "conditions", "status.conditions", PodCondition.read),
        )
        errors = r.errors + [e for e in validate_pod(pod) if e not in r.errors]
        if errors:
            raise ValidationError(cls.KIND, meta.name, errors)
        return pod

    def to_manifest(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"containers": [c.to_manifest() for c in self.containers]}
        if self.node_name is not None:
            spec["nodeName"] = self.node_name
        if self.hostname is not None:
            spec["hostname"] = self.hostname
        if self.subdomain is not None:
            spec["subdomain"] = self.subdomain
        if self.host_network:
            spec["hostNetwork"] = True
        spec["enableServiceLinks"] = self.enable_service_links
        spec["dnsPolicy"] = self.dns_policy
        if self.dns_config is not None:
            spec["dnsConfig"] = self.dns_config.to_manifest()
        out: dict[str, Any] = {
            "apiVersion": self.API_VERSION,
            "kind": self.KIND,
            "metadata": self.metadata.to_manifest(),
            "spec": spec,
        }
        status: dict[str, Any] = {}
        if self.phase is not None:
            status["phase"] = self.phase
        if self.conditions:
            status["conditions"] = [c.to_manifest() for c in self.conditions]
        if self.pod_ips:
            status["podIP"] = self.pod_ips[0]
            status["podIPs"] = [{"ip": ip} for ip in self.pod_ips]
        if status:
            out["status"] = status
        return out


def _default_host_ports(container: Container) -> Container:
    """Host-network defaulting: an unset ``hostPort`` takes ``containerPort``."""
    if all(p.host_port is not None for p in container.ports):
        return container
    ports = tuple(
        p if p.host_port is not None else attrs.evolve(p, host_port=p.container_port or None)
        for p in container.ports
    )
    return attrs.evolve(container, ports=ports)


# -- validation -------------------------------------------------------------------


def validate_pod(pod: Pod) -> list[FieldError]:
    """Every problem with a (defaulted) Pod, as the API server reports it.

    ``ValidatePodCreate`` for the kept spec fields, in upstream order, then
    ``ValidatePodStatusUpdate``'s pod-IP rules for the status.
    """
    errs = pod.metadata.validate()
    errs += _validate_containers(pod.containers)
    if pod.host_network:
        errs += _validate_host_network_ports(pod.containers)
    errs += v.one_of(pod.dns_policy, "spec.dnsPolicy", DNS_POLICIES, required=True)
    errs += _validate_dns_config(pod.dns_config, pod.dns_policy)
    if pod.node_name:
        errs += v.dns1123_subdomain(pod.node_name, "spec.nodeName")
    if pod.hostname:
        errs += v.dns1123_label(pod.hostname, "spec.hostname")
    if pod.subdomain:
        errs += v.dns1123_label(pod.subdomain, "spec.subdomain")
    errs += _validate_pod_ips(pod.pod_ips)
    return errs


def _validate_containers(containers: tuple[Container, ...]) -> list[FieldError]:
    path = "spec.containers"
    if not containers:
        return [FieldError.required(path)]
    errs: list[FieldError] = []
    names: set[str] = set()
    for i, container in enumerate(containers):
        c_path = f"{path}[{i}]"
        if container.name:
            errs += v.dns1123_label(container.name, f"{c_path}.name")
        else:
            errs.append(FieldError.required(f"{c_path}.name"))
        errs += _validate_container_ports(container.ports, f"{c_path}.ports")
        if container.name in names:
            errs.append(FieldError.duplicate(f"{c_path}.name", container.name))
        names.add(container.name)
    # Host ports may not clash across all containers (AccumulateUniqueHostPorts).
    seen: set[str] = set()
    for i, container in enumerate(containers):
        for j, port in enumerate(container.ports):
            if port.host_port is None:
                continue
            key = f"{port.host_ip or ''}/{port.protocol}/{port.host_port}"
            if key in seen:
                errs.append(FieldError.duplicate(f"{path}[{i}].ports[{j}].hostPort", key))
            seen.add(key)
    return errs


def _validate_container_ports(ports: tuple[ContainerPort, ...], path: str) -> list[FieldError]:
    """``validateContainerPorts``: names IANA_SVC_NAME and unique per container."""
    errs: list[FieldError] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        p_path = f"{path}[{i}]"
        if port.name:
            name_errs = v.port_name(port.name, f"{p_path}.name")
            if name_errs:
                errs += name_errs
            elif port.name in names:
                errs.append(FieldError.duplicate(f"{p_path}.name", port.name))
            else:
                names.add(port.name)
        if port.container_port == 0:
            errs.append(FieldError.required(f"{p_path}.containerPort"))
        else:
            errs += v.port_number(port.container_port, f"{p_path}.containerPort")
        if port.host_port is not None:
            errs += v.port_number(port.host_port, f"{p_path}.hostPort")
        errs += v.one_of(port.protocol, f"{p_path}.protocol", PROTOCOLS, required=True)
    return errs


def _validate_host_network_ports(containers: tuple[Container, ...]) -> list[FieldError]:
    """``validatePodHostNetworkDeps``: on the host network, hostPort == containerPort."""
    errs: list[FieldError] = []
    for i, container in enumerate(containers):
        for j, port in enumerate(container.ports):
            if (port.host_port or 0) != port.container_port:
                errs.append(
                    FieldError.invalid(
                        f"spec.containers[{i}].ports[{j}].hostPort",
                        port.host_port or 0,
                        "must match `containerPort` when `hostNetwork` is true",
                    )
                )
    return errs


def _validate_dns_config(config: PodDNSConfig | None, policy: str) -> list[FieldError]:
    """``validatePodDNSConfig``, with ``RelaxedDNSSearchValidation`` off (see below)."""
    path = "spec.dnsConfig"
    if policy == "None":
        if config is None:
            return [FieldError.required(path, "must provide `dnsConfig` when `dnsPolicy` is None")]
        if not config.nameservers:
            return [
                FieldError.required(
                    f"{path}.nameservers",
                    "must provide at least one DNS nameserver when `dnsPolicy` is None",
                )
            ]
    if config is None:
        return []
    errs: list[FieldError] = []
    if len(config.nameservers) > MAX_DNS_NAMESERVERS:
        errs.append(
            FieldError.invalid(
                f"{path}.nameservers",
                list(config.nameservers),
                f"must not have more than {MAX_DNS_NAMESERVERS} nameservers",
            )
        )
    for i, ns in enumerate(config.nameservers):
        errs += v.ip_address(ns, f"{path}.nameservers[{i}]")
    if len(config.searches) > MAX_DNS_SEARCH_PATHS:
        errs.append(
            FieldError.invalid(
                f"{path}.searches",
                list(config.searches),
                f"must not have more than {MAX_DNS_SEARCH_PATHS} search paths",
            )
        )
    if len(" ".join(config.searches)) > MAX_DNS_SEARCH_LIST_CHARS:
        errs.append(
            FieldError.invalid(
                f"{path}.searches",
                list(config.searches),
                f"must not have more than {MAX_DNS_SEARCH_LIST_CHARS} characters "
                "(including spaces) in the search list",
            )
        )
    for i, search in enumerate(config.searches):
        # One trailing dot (an absolute name) is allowed. The relaxed rules of the
        # RelaxedDNSSearchValidation gate (underscores, a lone ".") are not modelled.
        errs += v.dns1123_subdomain(search.removesuffix("."), f"{path}.searches[{i}]")
    for i, option in enumerate(config.options):
        if not option.name:
            errs.append(FieldError.required(f"{path}.options[{i}]", "must not be empty"))
    return errs


def _validate_pod_ips(pod_ips: tuple[str, ...]) -> list[FieldError]:
    """``validatePodIPs``: valid, at most one per family, no duplicates."""
    path = "status.podIPs"
    errs: list[FieldError] = []
    for i, ip in enumerate(pod_ips):
        errs += v.ip_address(ip, f"{path}[{i}]")
    if len(pod_ips) > 1:
        families = [v.ip_version(ip) for ip in pod_ips]
        dual_stack = len(pod_ips) == 2 and None not in families and families[0] != families[1]
        if not dual_stack:
            errs.append(
                FieldError.invalid(
                    path,
                    [{"ip": ip} for ip in pod_ips],
                    "may specify no more than one IP for each IP family",
                )
            )
        seen: set[str] = set()
        for i, ip in enumerate(pod_ips):
            if ip in seen:
                errs.append(FieldError.duplicate(f"{path}[{i}]", {"ip": ip}))
            seen.add(ip)
    return errs
