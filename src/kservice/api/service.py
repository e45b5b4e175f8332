"""The Service and ServicePort API objects (core/v1).

Parsing applies the API server's defaulting (``SetDefaults_Service`` and the
create strategy's ClusterIP/ClusterIPs normalisation); :func:`validate_service`
applies ``ValidateService`` with the API server's own messages. Allocation-time
defaults that need cluster knowledge (which IP family is primary, the ClusterIP
and nodePort values themselves) are the registry's job (``kservice.control``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from kservice.api import validation as v
from kservice.api._base import FrozenMap, Named, ObjectMeta, Reader, frozen_map, tuple_of
from kservice.errors import FieldError, ValidationError

__all__ = [
    "CLUSTER_IP_NONE",
    "DEFAULT_AFFINITY_TIMEOUT",
    "MAX_AFFINITY_TIMEOUT",
    "LoadBalancerIngress",
    "Service",
    "ServicePort",
    "validate_service",
]

CLUSTER_IP_NONE = "None"
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds: 3 hours, the API server's default
MAX_AFFINITY_TIMEOUT = 86400  # seconds: one day, core.MaxClientIPServiceAffinitySeconds

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
PROTOCOLS = ("SCTP", "TCP", "UDP")
AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
IP_MODES = ("Proxy", "VIP")
TRAFFIC_DISTRIBUTIONS = ("PreferClose", "PreferSameNode", "PreferSameZone")

_SERVICE_KEYS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_SPEC_KEYS = frozenset(
    {
        "allocateLoadBalancerNodePorts",
        "clusterIP",
        "clusterIPs",
        "externalIPs",
        "externalName",
        "externalTrafficPolicy",
        "healthCheckNodePort",
        "internalTrafficPolicy",
        "ipFamilies",
        "ipFamilyPolicy",
        "loadBalancerClass",
        "loadBalancerIP",
        "loadBalancerSourceRanges",
        "ports",
        "publishNotReadyAddresses",
        "selector",
        "sessionAffinity",
        "sessionAffinityConfig",
        "trafficDistribution",
        "type",
    }
)
_PORT_KEYS = frozenset({"name", "protocol", "appProtocol", "port", "targetPort", "nodePort"})


def ip_family_of(ip: str) -> str | None:
    """``"IPv4"``/``"IPv6"`` for an address the API server parses, else None.

    Parsing is the API server's legacy (sloppy) one, so ``010.0.0.1`` is IPv4
    and an IPv4-mapped IPv6 address counts as IPv4, as Go's ``net.IP`` has it.
    """
    version = v.ip_version(ip)
    return None if version is None else f"IPv{version}"


@attrs.frozen
class ServicePort:
    """One port of a Service. ``target_port`` is a number or a container-port name."""

    port: int
    name: str = ""
    protocol: str = "TCP"
    target_port: int | str = attrs.field()
    node_port: int | None = None
    app_protocol: str | None = None

    @target_port.default
    def _target_default(self) -> int | str:
        return self.port

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> ServicePort:
        r.unknown(data, path, _PORT_KEYS)
        port = r.int(data, "port", f"{path}.port", default=0)
        target = r.int_or_str(data, "targetPort", f"{path}.targetPort")
        # Defaulting: an unset (or zero / empty) targetPort takes the port's value.
        if target in (None, 0, ""):
            target = port
        node_port = r.int(data, "nodePort", f"{path}.nodePort")
        return cls(
            port=port,
            name=r.str(data, "name", f"{path}.name", default=""),
            protocol=r.str(data, "protocol", f"{path}.protocol", default="TCP") or "TCP",
            target_port=target,
            node_port=node_port or None,
            app_protocol=r.str(data, "appProtocol", f"{path}.appProtocol"),
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        out["protocol"] = self.protocol
        if self.app_protocol is not None:
            out["appProtocol"] = self.app_protocol
        out["port"] = self.port
        out["targetPort"] = self.target_port
        if self.node_port is not None:
            out["nodePort"] = self.node_port
        return out


@attrs.frozen
class LoadBalancerIngress:
    """One entry of ``status.loadBalancer.ingress``."""

    ip: str | None = None
    hostname: str | None = None
    ip_mode: str | None = None

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> LoadBalancerIngress:
        ip = r.str(data, "ip", f"{path}.ip")
        ip_mode = r.str(data, "ipMode", f"{path}.ipMode")
        if ip and ip_mode is None:
            ip_mode = "VIP"  # defaulted by the API server when an IP is set
        return cls(ip=ip, hostname=r.str(data, "hostname", f"{path}.hostname"), ip_mode=ip_mode)

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ip is not None:
            out["ip"] = self.ip
        if self.hostname is not None:
            out["hostname"] = self.hostname
        if self.ip_mode is not None:
            out["ipMode"] = self.ip_mode
        return out


@attrs.frozen
class Service(Named):
    """A Kubernetes Service (v1), defaulted as the API server stores it.

    ``cluster_ip`` is ``None`` until allocated, ``"None"`` for headless
    Services; ``cluster_ips`` always starts with ``cluster_ip`` when set.
    ``session_affinity_timeout`` is set exactly when affinity is ClientIP.
    ``selector`` is empty for Services whose endpoints are managed by hand.
    """

    KIND: ClassVar[str] = "Service"
    API_VERSION: ClassVar[str] = "v1"

    metadata: ObjectMeta
    type: str = "ClusterIP"
    selector: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map)
    ports: tuple[ServicePort, ...] = attrs.field(default=(), converter=tuple_of)
    cluster_ip: str | None = None
    cluster_ips: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)
    ip_families: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)
    ip_family_policy: str | None = None
    external_ips: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)
    session_affinity: str = "None"
    session_affinity_timeout: int | None = None
    external_traffic_policy: str | None = None
    internal_traffic_policy: str | None = None
    health_check_node_port: int | None = None
    load_balancer_ip: str | None = None
    load_balancer_source_ranges: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)
    load_balancer_class: str | None = None
    allocate_load_balancer_node_ports: bool | None = None
    external_name: str | None = None
    publish_not_ready_addresses: bool = False
    traffic_distribution: str | None = None
    load_balancer_ingress: tuple[LoadBalancerIngress, ...] = attrs.field(
        default=(), converter=tuple_of
    )

    # -- identity -----------------------------------------------------------

    # -- derived flags (never stored twice) ------------------------------------
    @property
    def is_headless(self) -> bool:
        return self.cluster_ip == CLUSTER_IP_NONE

    @property
    def has_selector(self) -> bool:
        return bool(self.selector)

    @property
    def externally_accessible(self) -> bool:
        """NodePort, LoadBalancer, or a ClusterIP Service with externalIPs."""
        return self.type in ("NodePort", "LoadBalancer") or (
            self.type == "ClusterIP" and bool(self.external_ips)
        )

    @property
    def needs_health_check(self) -> bool:
        """LoadBalancer with externalTrafficPolicy Local: gets a healthCheckNodePort."""
        return self.type == "LoadBalancer" and self.external_traffic_policy == "Local"

    @property
    def uses_node_ports(self) -> bool:
        """Whether nodePorts are allocated for this Service's ports."""
        return self.type == "NodePort" or (
            self.type == "LoadBalancer" and self.allocate_load_balancer_node_ports is not False
        )

    @property
    def external_policy_local(self) -> bool:
        return self.externally_accessible and self.external_traffic_policy == "Local"

    @property
    def internal_policy_local(self) -> bool:
        return self.internal_traffic_policy == "Local"

    # -- manifests ---------------------------------------------------------------
    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Service:
        """Parse, default and validate a Service manifest.

        Raises :class:`~kservice.errors.ValidationError` with every problem.
        """
        r = Reader()
        if not isinstance(data, dict):
            raise ValidationError(cls.KIND, "", [FieldError.invalid("", data, "must be an object")])
        r.unknown(data, "", _SERVICE_KEYS)
        meta = ObjectMeta.read(r, data)
        spec = r.map(data, "spec", "spec")
        r.unknown(spec, "spec", _SPEC_KEYS)
        status = r.map(data, "status", "status")
        lb = r.map(status, "loadBalancer", "status.loadBalancer")

        svc_type = r.str(spec, "type", "spec.type", default="") or "ClusterIP"
        cluster_ip = r.str(spec, "clusterIP", "spec.clusterIP") or None
        cluster_ips = r.str_list(spec, "clusterIPs", "spec.clusterIPs")
        # Create strategy: keep clusterIP and clusterIPs in sync when one is given.
        if cluster_ip is not None and not cluster_ips:
            cluster_ips = (cluster_ip,)
        elif cluster_ip is None and cluster_ips:
            cluster_ip = cluster_ips[0] or None
        selector = r.str_map(spec, "selector", "spec.selector")
        ip_families = r.str_list(spec, "ipFamilies", "spec.ipFamilies")
        policy = r.str(spec, "ipFamilyPolicy", "spec.ipFamilyPolicy")
        external_ips = r.str_list(spec, "externalIPs", "spec.externalIPs")

        affinity = r.str(spec, "sessionAffinity", "spec.sessionAffinity", default="") or "None"
        aff_cfg = r.map(spec, "sessionAffinityConfig", "spec.sessionAffinityConfig")
        client_ip = r.map(aff_cfg, "clientIP", "spec.sessionAffinityConfig.clientIP")
        timeout = r.int(
            client_ip, "timeoutSeconds", "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
        )
        if affinity == "ClientIP" and timeout is None:
            timeout = DEFAULT_AFFINITY_TIMEOUT

        svc = cls(
            metadata=meta,
            type=svc_type,
            selector=selector,
            ports=r.objects(spec, "ports", "spec.ports", ServicePort.read),
            cluster_ip=cluster_ip,
            cluster_ips=cluster_ips,
            ip_families=ip_families,
            ip_family_policy=policy,
            external_ips=external_ips,
            session_affinity=affinity,
            session_affinity_timeout=timeout,
            external_traffic_policy=r.str(
                spec, "externalTrafficPolicy", "spec.externalTrafficPolicy"
            )
            or None,
            internal_traffic_policy=r.str(
                spec, "internalTrafficPolicy", "spec.internalTrafficPolicy"
            ),
            health_check_node_port=r.int(spec, "healthCheckNodePort", "spec.healthCheckNodePort")
            or None,
            load_balancer_ip=r.str(spec, "loadBalancerIP", "spec.loadBalancerIP") or None,
            load_balancer_source_ranges=r.str_list(
                spec, "loadBalancerSourceRanges", "spec.loadBalancerSourceRanges"
            ),
            load_balancer_class=r.str(spec, "loadBalancerClass", "spec.loadBalancerClass"),
            allocate_load_balancer_node_ports=r.bool(
                spec, "allocateLoadBalancerNodePorts", "spec.allocateLoadBalancerNodePorts"
            ),
            external_name=r.str(spec, "externalName", "spec.externalName") or None,
            publish_not_ready_addresses=r.bool(
                spec, "publishNotReadyAddresses", "spec.publishNotReadyAddresses", default=False
            ),
            traffic_distribution=r.str(spec, "trafficDistribution", "spec.trafficDistribution"),
            load_balancer_ingress=r.objects(
                lb, "ingress", "status.loadBalancer.ingress", LoadBalancerIngress.read
            ),
        )
        svc = apply_defaults(svc)
        errors = r.errors + validate_service(svc)
        if errors:
            raise ValidationError(cls.KIND, meta.name, errors)
        return svc

    def to_manifest(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": self.type}
        if self.selector:
            spec["selector"] = self.selector.to_dict()
        if self.ports:
            spec["ports"] = [p.to_manifest() for p in self.ports]
        if self.cluster_ip is not None:
            spec["clusterIP"] = self.cluster_ip
        if self.cluster_ips:
            spec["clusterIPs"] = list(self.cluster_ips)
        if self.ip_families:
            spec["ipFamilies"] = list(self.ip_families)
        if self.ip_family_policy is not None:
            spec["ipFamilyPolicy"] = self.ip_family_policy
        if self.external_ips:
            spec["externalIPs"] = list(self.external_ips)
        spec["sessionAffinity"] = self.session_affinity
        if self.session_affinity_timeout is not None:
            spec["sessionAffinityConfig"] = {
                "clientIP": {"timeoutSeconds": self.session_affinity_timeout}
            }
        if self.external_traffic_policy is not None:
            spec["externalTrafficPolicy"] = self.external_traffic_policy
        if self.internal_traffic_policy is not None:
            spec["internalTrafficPolicy"] = self.internal_traffic_policy
        if self.health_check_node_port is not None:
            spec["healthCheckNodePort"] = self.health_check_node_port
        if self.load_balancer_ip is not None:
            spec["loadBalancerIP"] = self.load_balancer_ip
        if self.load_balancer_source_ranges:
            spec["loadBalancerSourceRanges"] = list(self.load_balancer_source_ranges)
        if self.load_balancer_class is not None:
            spec["loadBalancerClass"] = self.load_balancer_class
        if self.allocate_load_balancer_node_ports is not None:
            spec["allocateLoadBalancerNodePorts"] = self.allocate_load_balancer_node_ports
        if self.external_name is not None:
            spec["externalName"] = self.external_name
        if self.publish_not_ready_addresses:
            spec["publishNotReadyAddresses"] = True
        if self.traffic_distribution is not None:
            spec["trafficDistribution"] = self.traffic_distribution
        out: dict[str, Any] = {
            "apiVersion": self.API_VERSION,
            "kind": self.KIND,
            "metadata": self.metadata.to_manifest(),
            "spec": spec,
        }
        if self.load_balancer_ingress:
            out["status"] = {
                "loadBalancer": {"ingress": [i.to_manifest() for i in self.load_balancer_ingress]}
            }
        return out


def apply_defaults(svc: Service) -> Service:
    """The API server's defaulting, as far as it needs no cluster knowledge.

    ``SetDefaults_Service``: externalTrafficPolicy Cluster for externally
    accessible Services, internalTrafficPolicy Cluster unless ExternalName,
    allocateLoadBalancerNodePorts true for LoadBalancer. The registry's
    IP-family inference: ipFamilies from given clusterIPs; ipFamilyPolicy
    RequireDualStack when two families or IPs are given or for a headless
    Service without selector, SingleStack otherwise (never for ExternalName).
    Idempotent: defaulting a defaulted Service changes nothing.
    """
    changes: dict[str, Any] = {}
    if svc.externally_accessible and svc.external_traffic_policy is None:
        changes["external_traffic_policy"] = "Cluster"
    if svc.type != "ExternalName" and svc.internal_traffic_policy is None:
        changes["internal_traffic_policy"] = "Cluster"
    if svc.type == "LoadBalancer" and svc.allocate_load_balancer_node_ports is None:
        changes["allocate_load_balancer_node_ports"] = True
    if svc.type != "ExternalName":
        families = svc.ip_families
        if not families and svc.cluster_ips and not svc.is_headless:
            inferred = tuple(ip_family_of(ip) for ip in svc.cluster_ips)
            if all(inferred) and len(set(inferred)) == len(inferred):
                families = tuple(f for f in inferred if f)
                changes["ip_families"] = families
        if svc.ip_family_policy is None:
            dual = len(families) > 1 or len(svc.cluster_ips) > 1
            selectorless_headless = svc.is_headless and not svc.selector
            changes["ip_family_policy"] = (
                "RequireDualStack" if dual or selectorless_headless else "SingleStack"
            )
    return attrs.evolve(svc, **changes) if changes else svc


def validate_service(svc: Service) -> list[FieldError]:
    """``ValidateService``: every problem with a (defaulted) Service, in the
    API server's order and words."""
    errs: list[FieldError] = []
    errs += svc.metadata.validate(dns1035=True)
    headless = svc.is_headless
    if not svc.ports and not headless and svc.type != "ExternalName":
        errs.append(FieldError.required("spec.ports"))
    if svc.type in ("LoadBalancer", "NodePort") and headless:
        errs.append(
            FieldError.invalid(
                "spec.clusterIPs[0]",
                svc.cluster_ips[0] if svc.cluster_ips else CLUSTER_IP_NONE,
                f"may not be set to 'None' for {svc.type} services",
            )
        )
    elif svc.type == "ExternalName":
        if svc.cluster_ips:
            errs.append(
                FieldError.forbidden("spec.clusterIPs", "may not be set for ExternalName services")
            )
        if svc.ip_families:
            errs.append(
                FieldError.forbidden("spec.ipFamilies", "may not be set for ExternalName services")
            )
        if svc.ip_family_policy is not None:
            errs.append(
                FieldError.forbidden(
                    "spec.ipFamilyPolicy", "may not be set for ExternalName services"
                )
            )
        cname = (svc.external_name or "").removesuffix(".")
        if cname:
            errs += v.dns1123_subdomain(cname, "spec.externalName")
        else:
            errs.append(FieldError.required("spec.externalName"))

    names: set[str] = set()
    for i, port in enumerate(svc.ports):
        errs += _validate_port(port, f"spec.ports[{i}]", len(svc.ports) > 1, names)

    if svc.selector:
        errs += v.validate_labels(svc.selector, "spec.selector")

    if svc.session_affinity not in AFFINITIES:
        errs.append(
            FieldError.not_supported("spec.sessionAffinity", svc.session_affinity, AFFINITIES)
        )
    path = "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
    if svc.session_affinity == "ClientIP":
        timeout = svc.session_affinity_timeout
        if timeout is None:
            errs.append(FieldError.required(path, "when session affinity type is ClientIP"))
        elif not 0 < timeout <= MAX_AFFINITY_TIMEOUT:
            errs.append(
                FieldError.invalid(
                    path, timeout, f"must be greater than 0 and less than {MAX_AFFINITY_TIMEOUT}"
                )
            )
    elif svc.session_affinity == "None" and svc.session_affinity_timeout is not None:
        errs.append(
            FieldError.forbidden(
                "spec.sessionAffinityConfig", "must not be set when session affinity is None"
            )
        )

    errs += _validate_cluster_ips(svc)

    for i, ip in enumerate(svc.external_ips):
        path = f"spec.externalIPs[{i}]"
        ip_errs = v.ip_address(ip, path)
        errs += ip_errs or v.endpoint_ip(ip, path)

    if svc.type not in SERVICE_TYPES:
        errs.append(FieldError.not_supported("spec.type", svc.type, SERVICE_TYPES))
    if svc.type == "ClusterIP":
        for i, port in enumerate(svc.ports):
            if port.node_port is not None:
                errs.append(
                    FieldError.forbidden(
                        f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'"
                    )
                )
    seen_node_ports: set[tuple[str, int]] = set()
    seen_ports: set[tuple[str, int]] = set()
    for i, port in enumerate(svc.ports):
        if port.node_port is not None:
            key = (port.protocol, port.node_port)
            if key in seen_node_ports:
                errs.append(FieldError.duplicate(f"spec.ports[{i}].nodePort", port.node_port))
            seen_node_ports.add(key)
    for i, port in enumerate(svc.ports):
        key = (port.protocol, port.port)
        if key in seen_ports:
            errs.append(
                FieldError.duplicate(
                    f"spec.ports[{i}]", {"port": port.port, "protocol": port.protocol}
                )
            )
        seen_ports.add(key)

    if svc.load_balancer_source_ranges:
        # The API server's field path here really is capitalised.
        if svc.type != "LoadBalancer":
            errs.append(
                FieldError.forbidden(
                    "spec.LoadBalancerSourceRanges",
                    "may only be used when `type` is 'LoadBalancer'",
                )
            )
        for i, cidr in enumerate(svc.load_balancer_source_ranges):
            # Historical leniency: values may be space-padded.
            errs += v.cidr(cidr.strip(), f"spec.LoadBalancerSourceRanges[{i}]")
    if svc.allocate_load_balancer_node_ports is not None and svc.type != "LoadBalancer":
        errs.append(
            FieldError.forbidden(
                "spec.allocateLoadBalancerNodePorts",
                "may only be used when `type` is 'LoadBalancer'",
            )
        )
    if svc.type == "LoadBalancer" and svc.allocate_load_balancer_node_ports is None:
        errs.append(FieldError.required("spec.allocateLoadBalancerNodePorts"))
    if svc.load_balancer_class is not None:
        if svc.type == "LoadBalancer":
            errs += v.qualified_name(svc.load_balancer_class, "spec.loadBalancerClass")
        else:
            errs.append(
                FieldError.forbidden(
                    "spec.loadBalancerClass", "may only be used when `type` is 'LoadBalancer'"
                )
            )
    if svc.load_balancer_ip is not None:
        errs += v.ip_address(svc.load_balancer_ip, "spec.loadBalancerIP")

    errs += _validate_traffic_policies(svc)

    for i, ing in enumerate(svc.load_balancer_ingress):
        path = f"status.loadBalancer.ingress[{i}]"
        if ing.ip is not None:
            errs += v.ip_address(ing.ip, f"{path}.ip")
        if ing.ip_mode is not None:
            if ing.ip is None:
                errs.append(
                    FieldError.forbidden(f"{path}.ipMode", "may not be specified when `ip` is not")
                )
            elif ing.ip_mode not in IP_MODES:
                errs.append(FieldError.not_supported(f"{path}.ipMode", ing.ip_mode, IP_MODES))
        if ing.hostname is not None:
            errs += v.dns1123_subdomain(ing.hostname, f"{path}.hostname")
            if ip_family_of(ing.hostname) is not None:
                errs.append(
                    FieldError.invalid(
                        f"{path}.hostname", ing.hostname, "must be a DNS name, not an IP address"
                    )
                )
    return errs


def _validate_port(
    port: ServicePort, path: str, require_name: bool, names: set[str]
) -> list[FieldError]:
    errs: list[FieldError] = []
    if require_name and not port.name:
        errs.append(FieldError.required(f"{path}.name"))
    elif port.name:
        errs += v.dns1123_label(port.name, f"{path}.name")
        if port.name in names:
            errs.append(FieldError.duplicate(f"{path}.name", port.name))
        names.add(port.name)
    errs += v.port_number(port.port, f"{path}.port")
    if port.protocol not in PROTOCOLS:
        errs.append(FieldError.not_supported(f"{path}.protocol", port.protocol, PROTOCOLS))
    errs += v.int_or_string_port(port.target_port, f"{path}.targetPort")
    if port.app_protocol is not None:
        errs += v.qualified_name(port.app_protocol, f"{path}.appProtocol")
    if port.node_port is not None:
        errs += v.port_number(port.node_port, f"{path}.nodePort")
    return errs


def _validate_cluster_ips(svc: Service) -> list[FieldError]:
    """``ValidateServiceClusterIPsRelatedFields`` (nothing for ExternalName)."""
    if svc.type == "ExternalName":
        return []
    errs: list[FieldError] = []
    ips = list(svc.cluster_ips)
    if svc.cluster_ip is not None:
        if not ips:
            errs.append(FieldError.required("spec.clusterIPs"))
        elif ips[0] != svc.cluster_ip:
            errs.append(
                FieldError.invalid("spec.clusterIPs", ips, "first value must match `clusterIP`")
            )
    elif ips:
        errs.append(
            FieldError.invalid(
                "spec.clusterIPs", ips, "must be empty when `clusterIP` is not specified"
            )
        )
    seen: set[str] = set()
    for i, fam in enumerate(svc.ip_families):
        if fam not in IP_FAMILIES:
            errs.append(FieldError.not_supported(f"spec.ipFamilies[{i}]", fam, IP_FAMILIES))
        if fam in seen:
            errs.append(FieldError.duplicate(f"spec.ipFamilies[{i}]", fam))
        seen.add(fam)
    if svc.ip_family_policy is not None and svc.ip_family_policy not in IP_FAMILY_POLICIES:
        errs.append(
            FieldError.not_supported(
                "spec.ipFamilyPolicy", svc.ip_family_policy, IP_FAMILY_POLICIES
            )
        )
    bad_ips = False
    for i, ip in enumerate(ips):
        if i == 0 and ip == CLUSTER_IP_NONE:
            if len(ips) > 1:
                bad_ips = True
                errs.append(
                    FieldError.invalid(
                        "spec.clusterIPs", ips, "'None' must be the first and only value"
                    )
                )
            continue
        ip_errs = v.ip_address(ip, f"spec.clusterIPs[{i}]")
        bad_ips = bad_ips or bool(ip_errs)
        errs += ip_errs
    if len(ips) > 2:
        errs.append(FieldError.invalid("spec.clusterIPs", ips, "may only hold up to 2 values"))
    if bad_ips:
        return errs
    if len(ips) > 1 and len({ip_family_of(ip) for ip in ips}) != len(ips):
        errs.append(
            FieldError.invalid(
                "spec.clusterIPs", ips, "may specify no more than one IP for each IP family"
            )
        )
    if not svc.is_headless and ips and svc.ip_families:
        for i, (ip, fam) in enumerate(zip(ips, svc.ip_families, strict=False)):
            actual = ip_family_of(ip)
            if fam in IP_FAMILIES and actual != fam:
                errs.append(
                    FieldError.invalid(
                        f"spec.clusterIPs[{i}]",
                        ip,
                        f"expected an {fam} value as indicated by `ipFamilies[{i}]`",
                    )
                )
    # Cross-field rules the registry enforces when it infers families.
    dual = len(ips) > 1 or len(svc.ip_families) > 1
    if dual and svc.ip_family_policy == "SingleStack":
        what = "cluster IPs" if len(ips) > 1 else "'ipFamilies'"
        field = "spec.clusterIPs" if len(ips) > 1 else "spec.ipFamilies"
        errs.append(
            FieldError.invalid(
                field,
                ips if len(ips) > 1 else list(svc.ip_families),
                f"when multiple {what} are specified, ipFamilyPolicy must be "
                "'RequireDualStack' or 'PreferDualStack'",
            )
        )
    return errs


def _validate_traffic_policies(svc: Service) -> list[FieldError]:
    errs: list[FieldError] = []
    etp = svc.external_traffic_policy
    if not svc.externally_accessible:
        if etp is not None:
            errs.append(
                FieldError.invalid(
                    "spec.externalTrafficPolicy",
                    etp,
                    "may only be set for externally-accessible services",
                )
            )
    elif etp is None:
        errs.append(FieldError.required("spec.externalTrafficPolicy"))
    elif etp not in TRAFFIC_POLICIES:
        errs.append(FieldError.not_supported("spec.externalTrafficPolicy", etp, TRAFFIC_POLICIES))
    hc = svc.health_check_node_port
    if not svc.needs_health_check:
        if hc is not None:
            errs.append(
                FieldError.invalid(
                    "spec.healthCheckNodePort",
                    hc,
                    "may only be set when `type` is 'LoadBalancer' and "
                    "`externalTrafficPolicy` is 'Local'",
                )
            )
    elif hc is not None:
        # Required once allocated; the registry allocates it when unset.
        errs += v.port_number(hc, "spec.healthCheckNodePort")
    itp = svc.internal_traffic_policy
    if itp is None and svc.type in ("ClusterIP", "LoadBalancer", "NodePort"):
        errs.append(FieldError.required("spec.internalTrafficPolicy"))
    elif itp is not None and itp not in TRAFFIC_POLICIES:
        errs.append(FieldError.not_supported("spec.internalTrafficPolicy", itp, TRAFFIC_POLICIES))
    td = svc.traffic_distribution
    if td is not None and td not in TRAFFIC_DISTRIBUTIONS:
        errs.append(FieldError.not_supported("spec.trafficDistribution", td, TRAFFIC_DISTRIBUTIONS))
    return errs
