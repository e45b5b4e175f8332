"""The EndpointSlice API object (discovery.k8s.io/v1).

An EndpointSlice lists the backends of (part of) a Service: endpoints with
their addresses, readiness conditions and topology, and the ports every
endpoint in the slice exposes. Parsing applies the API server's defaulting
(``SetDefaults_EndpointPort``: port name ``""``, protocol ``TCP``);
:func:`validate_endpointslice` applies ``ValidateEndpointSlice``
(``pkg/apis/discovery/validation``) with the API server's own messages.
Unknown fields anywhere in the slice are reported, as with strict field
validation. ``addressType`` immutability is an update rule, and so the
registry's business.

Endpoint conditions keep ``None`` (unset) apart from ``False``, because the
API gives them different meanings: consumers treat an unset ``ready`` or
``serving`` as true and an unset ``terminating`` as false. The derived flags
:attr:`EndpointConditions.is_ready` and friends apply that rule, exactly as
kube-proxy does when it reads slices.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from kservice.api import validation as v
from kservice.api._base import Named, ObjectMeta, Reader, tuple_of
from kservice.errors import FieldError, ValidationError

__all__ = [
    "ADDRESS_TYPES",
    "LABEL_MANAGED_BY",
    "LABEL_SERVICE_NAME",
    "MAX_ADDRESSES",
    "MAX_ENDPOINTS",
    "MAX_NODE_HINTS",
    "MAX_PORTS",
    "MAX_ZONE_HINTS",
    "Endpoint",
    "EndpointConditions",
    "EndpointHints",
    "EndpointPort",
    "EndpointSlice",
    "ObjectReference",
    "validate_endpointslice",
]

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
PROTOCOLS = ("SCTP", "TCP", "UDP")

#: Label naming the Service a slice belongs to (``discovery.LabelServiceName``).
LABEL_SERVICE_NAME = "kubernetes.io/service-name"
#: Label naming the controller or user managing a slice (``discovery.LabelManagedBy``).
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"

# The API server's limits (pkg/apis/discovery/validation). The port limit was
# raised from 100 to 20,000 in Kubernetes 1.21 (kubernetes#99795, backported to
# 1.18-1.20) so that Services with many ports fit in one slice.
MAX_ENDPOINTS = 1000
MAX_ADDRESSES = 100
MAX_PORTS = 20000
MAX_ZONE_HINTS = 8
MAX_NODE_HINTS = 8

_SLICE_KEYS = frozenset({"apiVersion", "kind", "metadata", "addressType", "endpoints", "ports"})
_ENDPOINT_KEYS = frozenset(
    {
        "addresses",
        "conditions",
        "hostname",
        "targetRef",
        "nodeName",
        "zone",
        "hints",
        # Read-only in v1: the API server silently drops writes to it.
        "deprecatedTopology",
    }
)
_CONDITION_KEYS = frozenset({"ready", "serving", "terminating"})
_HINTS_KEYS = frozenset({"forZones", "forNodes"})
_FOR_KEYS = frozenset({"name"})
_REF_KEYS = frozenset(
    {"kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath"}
)
_PORT_KEYS = frozenset({"name", "protocol", "port", "appProtocol"})


def _label(meta: ObjectMeta, key: str) -> str | None:
    """The value of label ``key``, if set."""
    value: str | None = meta.labels.get(key)
    return value


@attrs.frozen
class EndpointConditions:
    """The state of one endpoint; each flag is ``True``, ``False`` or unset (``None``).

    Unset is not false: consumers treat an unset ``ready`` or ``serving`` as
    true and an unset ``terminating`` as false (the v1 API documentation, and
    kube-proxy's EndpointSlice cache). Use the ``is_*`` properties for that
    reading; the raw fields round-trip the manifest exactly.
    """

    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None

    @property
    def is_ready(self) -> bool:
        """Ready, treating unset as ready."""
        return self.ready is not False

    @property
    def is_serving(self) -> bool:
        """Serving, treating unset as serving."""
        return self.serving is not False

    @property
    def is_terminating(self) -> bool:
        """Terminating, treating unset as not terminating."""
        return self.terminating is True

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> EndpointConditions:
        r.unknown(data, path, _CONDITION_KEYS)
        return cls(
            ready=r.bool(data, "ready", f"{path}.ready"),
            serving=r.bool(data, "serving", f"{path}.serving"),
            terminating=r.bool(data, "terminating", f"{path}.terminating"),
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ready is not None:
            out["ready"] = self.ready
        if self.serving is not None:
            out["serving"] = self.serving
        if self.terminating is not None:
            out["terminating"] = self.terminating
        return out


@attrs.frozen
class EndpointHints:
    """Topology hints: the zones and nodes that should consume an endpoint.

    Kept as plain names; the manifest form wraps each in ``{"name": ...}``.
    ``for_nodes`` is the newer hint (Kubernetes 1.33, ``PreferSameNode``).
    """

    for_zones: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)
    for_nodes: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> EndpointHints:
        r.unknown(data, path, _HINTS_KEYS)
        return cls(
            for_zones=r.objects(data, "forZones", f"{path}.forZones", _read_for_name),
            for_nodes=r.objects(data, "forNodes", f"{path}.forNodes", _read_for_name),
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.for_zones:
            out["forZones"] = [{"name": z} for z in self.for_zones]
        if self.for_nodes:
            out["forNodes"] = [{"name": n} for n in self.for_nodes]
        return out


def _read_for_name(r: Reader, data: dict[str, Any], path: str) -> str:
    r.unknown(data, path, _FOR_KEYS)
    name: str = r.str(data, "name", f"{path}.name", default="")
    return name


@attrs.frozen
class ObjectReference:
    """What an endpoint stands for, usually its Pod (``targetRef``).

    Only the identifying fields are kept; ``apiVersion``, ``resourceVersion``
    and ``fieldPath`` are accepted and dropped.
    """

    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> ObjectReference:
        r.unknown(data, path, _REF_KEYS)
        return cls(
            kind=r.str(data, "kind", f"{path}.kind"),
            namespace=r.str(data, "namespace", f"{path}.namespace"),
            name=r.str(data, "name", f"{path}.name"),
            uid=r.str(data, "uid", f"{path}.uid"),
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.kind is not None:
            out["kind"] = self.kind
        if self.namespace is not None:
            out["namespace"] = self.namespace
        if self.name is not None:
            out["name"] = self.name
        if self.uid is not None:
            out["uid"] = self.uid
        return out


@attrs.frozen
class Endpoint:
    """One backend: its addresses (all of the slice's address type) and metadata.

    ``hostname``, ``node_name`` and ``zone`` are ``None`` when unset; an empty
    string is kept as given (and fails validation where the API server's does).
    """

    addresses: tuple[str, ...] = attrs.field(converter=tuple_of)
    conditions: EndpointConditions = attrs.field(factory=EndpointConditions)
    hostname: str | None = None
    node_name: str | None = None
    zone: str | None = None
    hints: EndpointHints | None = None
    target_ref: ObjectReference | None = None

    @property
    def is_ready(self) -> bool:
        return self.conditions.is_ready

    @property
    def is_serving(self) -> bool:
        return self.conditions.is_serving

    @property
    def is_terminating(self) -> bool:
        return self.conditions.is_terminating

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> Endpoint:
        r.unknown(data, path, _ENDPOINT_KEYS)
        addresses = r.str_list(data, "addresses", f"{path}.addresses")
        conditions = EndpointConditions.read(
            r, r.map(data, "conditions", f"{path}.conditions"), f"{path}.conditions"
        )
        hostname = r.str(data, "hostname", f"{path}.hostname")
        target_ref = None
        if isinstance(data.get("targetRef"), dict):
            target_ref = ObjectReference.read(r, data["targetRef"], f"{path}.targetRef")
        else:
            r.map(data, "targetRef", f"{path}.targetRef")  # reports a non-object value
        node_name = r.str(data, "nodeName", f"{path}.nodeName")
        zone = r.str(data, "zone", f"{path}.zone")
        hints = None
        if isinstance(data.get("hints"), dict):
            hints = EndpointHints.read(r, data["hints"], f"{path}.hints")
        else:
            r.map(data, "hints", f"{path}.hints")
        return cls(
            addresses=addresses,
            conditions=conditions,
            hostname=hostname,
            node_name=node_name,
            zone=zone,
            hints=hints,
            target_ref=target_ref,
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"addresses": list(self.addresses)}
        conditions = self.conditions.to_manifest()
        if conditions:
            out["conditions"] = conditions
        if self.hostname is not None:
            out["hostname"] = self.hostname
        if self.target_ref is not None:
            out["targetRef"] = self.target_ref.to_manifest()
        if self.node_name is not None:
            out["nodeName"] = self.node_name
        if self.zone is not None:
            out["zone"] = self.zone
        if self.hints is not None:
            out["hints"] = self.hints.to_manifest()
        return out


@attrs.frozen
class EndpointPort:
    """A port every endpoint of the slice exposes.

    ``port`` is ``None`` when unset, which means "all ports" to consumers;
    ``name`` is ``""`` for the single unnamed port of a Service.
    """

    port: int | None = None
    name: str = ""
    protocol: str = "TCP"
    app_protocol: str | None = None

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> EndpointPort:
        r.unknown(data, path, _PORT_KEYS)
        return cls(
            port=r.int(data, "port", f"{path}.port"),
            name=r.str(data, "name", f"{path}.name", default=""),
            protocol=r.str(data, "protocol", f"{path}.protocol", default="TCP"),
            app_protocol=r.str(data, "appProtocol", f"{path}.appProtocol"),
        )

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        out["protocol"] = self.protocol
        if self.port is not None:
            out["port"] = self.port
        if self.app_protocol is not None:
            out["appProtocol"] = self.app_protocol
        return out


@attrs.frozen
class EndpointSlice(Named):
    """An EndpointSlice (discovery.k8s.io/v1), defaulted as the API server stores it."""

    KIND: ClassVar[str] = "EndpointSlice"
    API_VERSION: ClassVar[str] = "discovery.k8s.io/v1"

    metadata: ObjectMeta
    address_type: str  # "IPv4" | "IPv6" | "FQDN"
    endpoints: tuple[Endpoint, ...] = attrs.field(default=(), converter=tuple_of)
    ports: tuple[EndpointPort, ...] = attrs.field(default=(), converter=tuple_of)

    # -- identity -----------------------------------------------------------

    # -- derived --------------------------------------------------------------
    @property
    def service_name(self) -> str | None:
        """The owning Service's name, from the ``kubernetes.io/service-name`` label."""
        return _label(self.metadata, LABEL_SERVICE_NAME)

    @property
    def managed_by(self) -> str | None:
        """Who manages the slice, from the ``endpointslice.kubernetes.io/managed-by`` label."""
        return _label(self.metadata, LABEL_MANAGED_BY)

    # -- manifests ---------------------------------------------------------------
    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> EndpointSlice:
        """Parse, default and validate an EndpointSlice manifest.

        Raises :class:`~kservice.errors.ValidationError` with every problem.
        """
        if not isinstance(data, dict):
            raise ValidationError(cls.KIND, "", [FieldError.invalid("", data, "must be an object")])
        r = Reader()
        r.unknown(data, "", _SLICE_KEYS)
        meta = ObjectMeta.read(r, data)
        obj = cls(
            metadata=meta,
            address_type=r.str(data, "addressType", "addressType", default=""),
            endpoints=r.objects(data, "endpoints", "endpoints", Endpoint.read),
            ports=r.objects(data, "ports", "ports", EndpointPort.read),
        )
        errors = r.errors + [e for e in validate_endpointslice(obj) if e not in r.errors]
        if errors:
            raise ValidationError(cls.KIND, meta.name, errors)
        return obj

    def to_manifest(self) -> dict[str, Any]:
        return {
            "apiVersion": self.API_VERSION,
            "kind": self.KIND,
            "metadata": self.metadata.to_manifest(),
            "addressType": self.address_type,
            "endpoints": [e.to_manifest() for e in self.endpoints],
            "ports": [p.to_manifest() for p in self.ports],
        }


# -- validation -------------------------------------------------------------------


def validate_endpointslice(obj: EndpointSlice) -> list[FieldError]:
    """``ValidateEndpointSlice``: every problem with an EndpointSlice, in upstream order.

    Beyond the API server, a set ``ports[].port`` must be 1-65535 (upstream
    accepts any int32 there, which no data plane can program).
    """
    errs = obj.metadata.validate()
    errs += v.one_of(obj.address_type, "addressType", ADDRESS_TYPES, required=True)
    errs += _validate_endpoints(obj.endpoints, obj.address_type)
    errs += _validate_ports(obj.ports)
    return errs


def _validate_endpoints(endpoints: tuple[Endpoint, ...], address_type: str) -> list[FieldError]:
    if len(endpoints) > MAX_ENDPOINTS:
        # Upstream stops here: a slice this large is not looked at further.
        return [FieldError.too_many("endpoints", len(endpoints), MAX_ENDPOINTS)]
    errs: list[FieldError] = []
    for i, ep in enumerate(endpoints):
        path = f"endpoints[{i}]"
        addr_path = f"{path}.addresses"
        if not ep.addresses:
            errs.append(FieldError.required(addr_path, "must contain at least 1 address"))
        elif len(ep.addresses) > MAX_ADDRESSES:
            errs.append(FieldError.too_many(addr_path, len(ep.addresses), MAX_ADDRESSES))
        for j, address in enumerate(ep.addresses):
            a_path = f"{addr_path}[{j}]"
            # Unknown address types were reported above; their addresses are not checked.
            # Both IP checks run, so an unparsable address is reported twice, as upstream.
            if address_type == "IPv4":
                errs += v.ip_address_family(address, a_path, "IPv4")
                errs += v.endpoint_ip(address, a_path)
            elif address_type == "IPv6":
                errs += v.ip_address_family(address, a_path, "IPv6")
                errs += v.endpoint_ip(address, a_path)
            elif address_type == "FQDN":
                errs += v.fqdn(address, a_path)
        if ep.node_name is not None:
            errs += v.dns1123_subdomain(ep.node_name, f"{path}.nodeName")
        if ep.hostname is not None:
            errs += v.dns1123_label(ep.hostname, f"{path}.hostname")
        if ep.hints is not None:
            errs += _validate_hints(ep.hints, f"{path}.hints")
    return errs


def _validate_hints(hints: EndpointHints, path: str) -> list[FieldError]:
    zones_path = f"{path}.forZones"
    if len(hints.for_zones) > MAX_ZONE_HINTS:
        return [FieldError.too_many(zones_path, len(hints.for_zones), MAX_ZONE_HINTS)]
    errs: list[FieldError] = []
    seen: set[str] = set()
    for i, zone in enumerate(hints.for_zones):
        name_path = f"{zones_path}[{i}].name"
        if zone in seen:
            errs.append(FieldError.duplicate(name_path, zone))
        seen.add(zone)
        errs += v.label_value(zone, name_path)
    nodes_path = f"{path}.forNodes"
    if len(hints.for_nodes) > MAX_NODE_HINTS:
        errs.append(FieldError.too_many(nodes_path, len(hints.for_nodes), MAX_NODE_HINTS))
        return errs
    seen = set()
    for i, node in enumerate(hints.for_nodes):
        name_path = f"{nodes_path}[{i}].name"
        if node in seen:
            errs.append(FieldError.duplicate(name_path, node))
        seen.add(node)
        errs += v.dns1123_subdomain(node, name_path)
    return errs


def _validate_ports(ports: tuple[EndpointPort, ...]) -> list[FieldError]:
    if len(ports) > MAX_PORTS:
        return [FieldError.too_many("ports", len(ports), MAX_PORTS)]
    errs: list[FieldError] = []
    names: set[str] = set()
    for i, port in enumerate(ports):
        path = f"ports[{i}]"
        if port.name:
            errs += v.dns1123_label(port.name, f"{path}.name")
        # Names are unique, the empty name included: two unnamed ports clash.
        if port.name in names:
            errs.append(FieldError.duplicate(f"{path}.name", port.name))
        names.add(port.name)
        # Unset defaults to TCP; an explicit "" is Unsupported, as upstream.
        errs += v.one_of(port.protocol, f"{path}.protocol", PROTOCOLS)
        if port.app_protocol is not None:
            errs += v.qualified_name(port.app_protocol, f"{path}.appProtocol")
        if port.port is not None:
            errs += v.port_number(port.port, f"{path}.port")
    return errs
