"""The Node API object (core/v1), as far as the Service data plane needs it.

Kept: the name and labels (zone and hostname topology), ``spec.podCIDRs``
(which pod addresses are local), ``spec.unschedulable``, and from the status
the addresses (NodePort and external traffic arrive on them) and the
conditions (Ready). Everything else is accepted and ignored. Nodes are
cluster-scoped: a namespace is an error.

:func:`validate_node` applies ``ValidateNode`` for the kept fields with the
API server's messages, plus two checks the API server leaves out but the data
plane depends on: address types must be known and InternalIP / ExternalIP
addresses must be IP addresses.
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
    "ADDRESS_TYPES",
    "LABEL_HOSTNAME",
    "LABEL_REGION",
    "LABEL_ZONE",
    "Node",
    "NodeAddress",
    "NodeCondition",
    "validate_node",
]

ADDRESS_TYPES = ("ExternalDNS", "ExternalIP", "Hostname", "InternalDNS", "InternalIP")
_IP_ADDRESS_TYPES = ("ExternalIP", "InternalIP")

#: Well-known topology labels (``k8s.io/api/core/v1`` well_known_labels.go).
LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"


def _label(meta: ObjectMeta, key: str) -> str | None:
    """The value of label ``key``, if set."""
    value: str | None = meta.labels.get(key)
    return value


@attrs.frozen
class NodeAddress:
    """One ``status.addresses[]`` entry."""

    type: str
    address: str

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> NodeAddress:
        return cls(
            type=r.str(data, "type", f"{path}.type", default=""),
            address=r.str(data, "address", f"{path}.address", default=""),
        )

    def to_manifest(self) -> dict[str, Any]:
        return {"type": self.type, "address": self.address}


NodeCondition = Condition


@attrs.frozen
class Node(Named):
    """A Node (v1), reduced to what Services and kube-proxy need.

    ``pod_cidrs`` holds ``spec.podCIDRs``; ``spec.podCIDR`` is derived as its
    first entry (a manifest with only ``podCIDR`` fills the list; one whose
    ``podCIDR`` differs from ``podCIDRs[0]`` is rejected, where the API
    server's conversion would silently keep ``podCIDR`` alone).
    ``metadata.namespace`` is always ``""``.
    """

    KIND: ClassVar[str] = "Node"
    API_VERSION: ClassVar[str] = "v1"

    metadata: ObjectMeta
    pod_cidrs: tuple[str, ...] = attrs.field(default=(), converter=tuple_of)
    unschedulable: bool = False
    addresses: tuple[NodeAddress, ...] = attrs.field(default=(), converter=tuple_of)
    conditions: tuple[NodeCondition, ...] = attrs.field(default=(), converter=tuple_of)

    # -- identity -----------------------------------------------------------

    @property
    def labels(self) -> FrozenMap:
        return self.metadata.labels

    # -- derived (never stored twice) ------------------------------------------
    @property
    def pod_cidr(self) -> str | None:
        """``spec.podCIDR``: the first of :attr:`pod_cidrs`, if any."""
        return self.pod_cidrs[0] if self.pod_cidrs else None

    @property
    def zone(self) -> str | None:
        """The ``topology.kubernetes.io/zone`` label, as topology-aware routing reads it."""
        return _label(self.metadata, LABEL_ZONE)

    @property
    def region(self) -> str | None:
        return _label(self.metadata, LABEL_REGION)

    @property
    def hostname(self) -> str | None:
        """The ``kubernetes.io/hostname`` label."""
        return _label(self.metadata, LABEL_HOSTNAME)

    def addresses_of_type(self, type_: str) -> tuple[str, ...]:
        """The addresses of one type, in status order."""
        return tuple(a.address for a in self.addresses if a.type == type_)

    @property
    def internal_ips(self) -> tuple[str, ...]:
        return self.addresses_of_type("InternalIP")

    @property
    def external_ips(self) -> tuple[str, ...]:
        return self.addresses_of_type("ExternalIP")

    def node_ip(self, family: str | None = None) -> str | None:
        """The node's primary IP, as kube-proxy picks it.

        The first InternalIP, else the first ExternalIP (``GetNodeHostIPs``),
        optionally restricted to ``family`` ("IPv4" or "IPv6").
        """
        want = {"IPv4": 4, "IPv6": 6}.get(family or "")
        for ip in (*self.internal_ips, *self.external_ips):
            version = v.ip_version(ip)
            if version is not None and (want is None or version == want):
                return ip
        return None

    def condition(self, type_: str) -> str | None:
        """The status ("True", "False", "Unknown") of condition ``type_``, if present."""
        return condition_status(self.conditions, type_)

    @property
    def is_ready(self) -> bool:
        """The Ready condition is "True"."""
        return self.condition("Ready") == "True"

    # -- manifests ---------------------------------------------------------------
    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Node:
        """Parse and validate a Node manifest (unknown fields ignored).

        Raises :class:`~kservice.errors.ValidationError` with every problem.
        """
        if not isinstance(data, dict):
            raise ValidationError(cls.KIND, "", [FieldError.invalid("", data, "must be an object")])
        r = Reader()
        meta = ObjectMeta.read(r, data, namespaced=False)
        spec = r.map(data, "spec", "spec")
        status = r.map(data, "status", "status")

        # spec.podCIDR and spec.podCIDRs: the list wins; a lone podCIDR fills it.
        pod_cidrs = r.str_list(spec, "podCIDRs", "spec.podCIDRs")
        pod_cidr = r.str(spec, "podCIDR", "spec.podCIDR", default="")
        if pod_cidr and not pod_cidrs:
            pod_cidrs = (pod_cidr,)
        elif pod_cidr and pod_cidr != pod_cidrs[0]:
            # The API server's conversion would silently keep podCIDR alone; an
            # inconsistent manifest is far more likely a mistake, so say so.
            r.errors.append(
                FieldError.invalid("spec.podCIDR", pod_cidr, "must match spec.podCIDRs[0]")
            )

        node = cls(
            metadata=meta,
            pod_cidrs=pod_cidrs,
            unschedulable=r.bool(spec, "unschedulable", "spec.unschedulable", default=False),
            addresses=r.objects(status, "addresses", "status.addresses", NodeAddress.read),
            conditions=r.objects(status, "conditions", "status.conditions", NodeCondition.read),
        )
        errors = r.errors + [e for e in validate_node(node) if e not in r.errors]
        if errors:
            raise ValidationError(cls.KIND, meta.name, errors)
        return node

    def to_manifest(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.pod_cidrs:
            spec["podCIDR"] = self.pod_cidrs[0]
            spec["podCIDRs"] = list(self.pod_cidrs)
        if self.unschedulable:
            spec["unschedulable"] = True
        out: dict[str, Any] = {
            "apiVersion": self.API_VERSION,
            "kind": self.KIND,
            "metadata": self.metadata.to_manifest(),
            "spec": spec,
        }
        status: dict[str, Any] = {}
        if self.addresses:
            status["addresses"] = [a.to_manifest() for a in self.addresses]
        if self.conditions:
            status["conditions"] = [c.to_manifest() for c in self.conditions]
        if status:
            out["status"] = status
        return out


# -- validation -------------------------------------------------------------------


def validate_node(node: Node) -> list[FieldError]:
    """``ValidateNode`` for the kept fields, plus address checks (see the module doc)."""
    errs = node.metadata.validate(namespaced=False)
    if node.metadata.namespace:
        errs.append(FieldError.forbidden("metadata.namespace", "not allowed on this type"))
    errs += _validate_pod_cidrs(node.pod_cidrs)
    for i, address in enumerate(node.addresses):
        path = f"status.addresses[{i}]"
        errs += v.one_of(address.type, f"{path}.type", ADDRESS_TYPES, required=True)
        if address.type in _IP_ADDRESS_TYPES:
            errs += v.ip_address(address.address, f"{path}.address")
        elif not address.address:
            errs.append(FieldError.required(f"{path}.address"))
    return errs


def _validate_pod_cidrs(pod_cidrs: tuple[str, ...]) -> list[FieldError]:
    """Valid CIDRs, at most one per family, no duplicates (``ValidateNode``)."""
    path = "spec.podCIDRs"
    errs: list[FieldError] = []
    for i, value in enumerate(pod_cidrs):
        errs += v.cidr(value, f"{path}[{i}]")
    if len(pod_cidrs) > 1:
        families = []
        for value in pod_cidrs:
            net = v.parse_cidr(value)
            families.append(None if net is None else v.ip_version(str(net.network_address)))
        dual_stack = len(pod_cidrs) == 2 and None not in families and families[0] != families[1]
        if not dual_stack:
            errs.append(
                FieldError.invalid(
                    path, list(pod_cidrs), "may specify no more than one CIDR for each IP family"
                )
            )
        seen: set[str] = set()
        for i, value in enumerate(pod_cidrs):
            if value in seen:
                errs.append(FieldError.duplicate(f"{path}[{i}]", value))
            seen.add(value)
    return errs
