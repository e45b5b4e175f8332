"""The EndpointSlice controller, as pure functions: Services + Pods + Nodes -> slices.

:func:`derive_endpoint_slices` returns the EndpointSlices the controller would
publish for one Service when it starts from nothing; :func:`derive_all` does
it for every Service at once, with an index over the pods. Same input, same
output, byte for byte: the random parts of upstream (generated names, map
iteration order) are replaced by stable hashes and sorted orders.

Facts carried over from the controller (``pkg/controller/endpointslice/
endpointslice_controller.go``, ``staging/src/k8s.io/endpointslice/
reconciler.go``, ``utils.go``, ``util/controller_utils.go``,
``util/endpointset.go``, ``trafficdist/trafficdist.go``,
``cmd/kube-controller-manager/app/options/endpointslicecontroller.go`` and
``apiserver/pkg/storage/names/generate.go``):

* **Which Services.** ExternalName Services and Services without a selector
  get no slices from the controller (their slices are written by hand). A
  Service being deleted (``deletionTimestamp`` set) gets no new slices.
  Upstream tells a nil selector (nothing) from an empty one (everything);
  the stored object cannot keep that apart, so an empty selector here means
  no selector.
* **Which Pods** (``ShouldPodBeInEndpoints`` with ``includeTerminating``):
  pods of the Service's namespace whose labels match every selector pair,
  except pods in phase Succeeded or Failed and pods without an IP.
  Terminating pods *are* included.
* **Address types** (``getAddressTypesForService``): one per entry of
  ``spec.ipFamilies``; without families, the family of ``spec.clusterIP``
  for a Service with a ClusterIP, and both IPv4 and IPv6 for a headless
  (or not yet allocated) one. Each pod gives one endpoint per address type
  whose addresses are its ``status.podIPs`` of that family (parsed sloppily
  and printed canonically, an IPv4-mapped IPv6 address counting as IPv4); a
  pod without an IP of the family is left out of that family's slices.
* **Node** (``reconcileByAddressType``): a pod whose node is unknown (or
  who has no ``nodeName``) is skipped, and the Service is retried later;
  with ``publishNotReadyAddresses`` it is published anyway, without zone.
* **Endpoint** (``podToEndpoint``): ``serving`` is the pod's Ready
  condition, ``terminating`` is ``deletionTimestamp != nil``, and ``ready``
  is ``publishNotReadyAddresses || (serving && !terminating)`` (so
  ``publishNotReadyAddresses`` forces ``ready`` only, never ``serving``).
  ``nodeName`` from the pod when set; ``zone`` from the node's
  ``topology.kubernetes.io/zone`` label when non-empty; ``hostname`` when
  ``ShouldSetHostname``: the pod has a hostname, its subdomain equals the
  Service's name and both live in the same namespace (headless or not);
  ``targetRef`` is the pod (kind, namespace, name, uid).
* **Ports** (``getEndpointPorts``, ``FindPort``): one EndpointPort per
  Service port (name, protocol, appProtocol), its number being the numeric
  ``targetPort``, or for a named one the first container port in container
  order with that name *and* the Service port's protocol. A Service port
  that does not resolve is left out of that pod's mapping, so pods are
  grouped by their resolved mapping and each group gets its own slices; a
  pod that resolves none of the ports lands in a group with no ports.
* **Packing** (``reconcileByPortMapping``, from an empty state): each
  (address type, port mapping) group is cut into slices of at most
  ``maxEndpointsPerSlice`` endpoints (default 100; kube-controller-manager
  accepts 1 to 1000), filled in order. When an address type ends up with
  no slice at all, one placeholder slice with no endpoints and no ports is
  published for it.
* **Labels** (``setEndpointSliceLabels``): the Service's labels except the
  reserved ``kubernetes.io/service-name``,
  ``endpointslice.kubernetes.io/managed-by`` and
  ``service.kubernetes.io/headless``; then ``service-name`` = the Service,
  ``managed-by`` = ``endpointslice-controller.k8s.io``, and
  ``service.kubernetes.io/headless: ""`` when the ClusterIP is not set
  (``None`` or unallocated: ``isServiceIPSet``).
* **Names** (``getEndpointSlicePrefix``, ``SimpleNameGenerator``):
  ``generateName`` is ``<service>-`` (just the name if that were not a
  valid DNS-subdomain prefix), cut to 58 characters, plus 5 characters from
  the alphabet ``bcdfghjklmnpqrstvwxz2456789`` (no vowels), 63 at most.
* **Hints** (``trafficdist``): with ``trafficDistribution`` PreferClose
  (or PreferSameZone), every *ready* endpoint with a zone gets a hint for
  its own zone; PreferSameNode adds a hint for its own node. Not when the
  topology annotation (``service.kubernetes.io/topology-mode`` or the
  deprecated ``topology-aware-hints``) is ``Auto``/``auto``: that hands
  hints to the topology cache.

Our choices where upstream is random or stateful: the 5-character suffix is
derived from SHA-256 of (namespace, Service, address type, port mapping,
slice index), rehashed on the rare clash inside one Service; endpoints are
ordered by pod name and slices by name; ports keep the Service's port
order (upstream sorts them by a hash of Go's printed form); unparsable pod
IPs are ignored (upstream would publish ``<nil>``; the API server refuses
such pods anyway); pods are taken to be unique by name, as the API server
keeps them (upstream's endpoint set would fold duplicates). Left out: the
topology-annotation hints (they need node CPU capacity), ownerReferences,
the ``endpoints.kubernetes.io/last-change-trigger-time`` annotation (a
clock reading), restartable init containers in ``FindPort`` (the Pod model
has no init containers), and the reconciliation against existing slices.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from kservice.api._base import FrozenMap, ObjectMeta
from kservice.api.endpointslice import (
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    Endpoint,
    EndpointConditions,
    EndpointHints,
    EndpointPort,
    EndpointSlice,
    ObjectReference,
)
from kservice.api.node import LABEL_ZONE, Node
from kservice.api.pod import Pod
from kservice.api.service import CLUSTER_IP_NONE, Service
from kservice.errors import ConfigError

__all__ = [
    "ANNOTATION_TOPOLOGY_AWARE_HINTS",
    "ANNOTATION_TOPOLOGY_MODE",
    "CONTROLLER_NAME",
    "DEFAULT_MAX_ENDPOINTS_PER_SLICE",
    "LABEL_HEADLESS",
    "MAX_MAX_ENDPOINTS_PER_SLICE",
    "MIN_MAX_ENDPOINTS_PER_SLICE",
    "EndpointSliceConfigError",
    "address_types_for_service",
    "derive_all",
    "derive_endpoint_slices",
    "endpoint_ports",
    "endpoint_slice_labels",
    "generate_name_prefix",
    "label_selector_matches",
]

#: The ``managed-by`` value of the controller's slices (``controllerQualifiedName``).
CONTROLLER_NAME: Final = "endpointslice-controller.k8s.io"
#: Label set on the slices of a Service without ClusterIP (``v1.IsHeadlessService``).
LABEL_HEADLESS: Final = "service.kubernetes.io/headless"
#: Service annotations that hand hints to the topology cache (``hintsEnabled``).
ANNOTATION_TOPOLOGY_MODE: Final = "service.kubernetes.io/topology-mode"
ANNOTATION_TOPOLOGY_AWARE_HINTS: Final = "service.kubernetes.io/topology-aware-hints"

#: kube-controller-manager ``--max-endpoints-per-slice``: default and accepted range.
DEFAULT_MAX_ENDPOINTS_PER_SLICE: Final = 100
MIN_MAX_ENDPOINTS_PER_SLICE: Final = 1
MAX_MAX_ENDPOINTS_PER_SLICE: Final = 1000

_RESERVED_LABELS = frozenset({LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS})
_TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_ZONE_DISTRIBUTIONS = frozenset({"PreferClose", "PreferSameZone", "PreferSameNode"})
_FAMILIES = ("IPv4", "IPv6")

# apimachinery names.SimpleNameGenerator and util/rand: 63-character names,
# 5 random characters from an alphabet without vowels (no accidental words).
_MAX_NAME_LENGTH = 63
_SUFFIX_LENGTH = 5
_MAX_PREFIX_LENGTH = _MAX_NAME_LENGTH - _SUFFIX_LENGTH
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

_DNS1123_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z"
)
_DNS1123_SUBDOMAIN_MAX = 253

# An IPv4 address already in canonical form (no leading zeros): the common
# case, recognised without the ipaddress module, which is slow.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")


class EndpointSliceConfigError(ConfigError):
    """An invalid controller setting, e.g. ``max_endpoints_per_slice`` out of range."""


# -- small upstream helpers -------------------------------------------------------


def _check_max_endpoints(value: object) -> int:
    """kube-controller-manager's check of ``--max-endpoints-per-slice``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise EndpointSliceConfigError(
            f"max-endpoints-per-slice must be an integer, not {type(value).__name__}"
        )
    if value < MIN_MAX_ENDPOINTS_PER_SLICE:
        raise EndpointSliceConfigError(
            f"max-endpoints-per-slice must not be less than {MIN_MAX_ENDPOINTS_PER_SLICE}, "
            f"but got {value}"
        )
    if value > MAX_MAX_ENDPOINTS_PER_SLICE:
        raise EndpointSliceConfigError(
            f"max-endpoints-per-slice must not be more than {MAX_MAX_ENDPOINTS_PER_SLICE}, "
            f"but got {value}"
        )
    return value


def _items(mapping: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    # FrozenMap's inherited items() goes through __iter__ and __getitem__ in
    # Python; its dict copy is several times faster on the hot paths.
    if isinstance(mapping, FrozenMap):
        return mapping.to_dict().items()
    return mapping.items()


def label_selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a Service selector selects an object with ``labels``.

    Service selectors are equality-based: every ``key: value`` pair must be
    present in ``labels`` (a pair with an empty value needs the key present
    with an empty value). An empty selector selects nothing: the controller
    leaves Services without selector alone.
    """
    if not selector:
        return False
    for key, value in _items(selector):
        got = labels.get(key)
        if got is None or got != value:
            return False
    return True


def _family_of_cluster_ip(ip: str) -> str:
    # utilnet.IsIPv6String: anything that does not parse as IPv6 counts as IPv4.
    parsed = _parse_ip(ip)
    return parsed[0] if parsed is not None else "IPv4"


def address_types_for_service(service: Service) -> tuple[str, ...]:
    """The EndpointSlice address types of a Service (``getAddressTypesForService``).

    ``spec.ipFamilies`` in their order (unknown values ignored); without
    families, the family of the ClusterIP, or both families for a headless
    or unallocated Service.
    """
    types = tuple(dict.fromkeys(f for f in service.ip_families if f in _FAMILIES))
    if types:
        return types
    if service.cluster_ip and service.cluster_ip != CLUSTER_IP_NONE:
        return (_family_of_cluster_ip(service.cluster_ip),)
    return _FAMILIES


def _is_service_ip_set(service: Service) -> bool:
    return bool(service.cluster_ip) and service.cluster_ip != CLUSTER_IP_NONE


def endpoint_slice_labels(service: Service) -> FrozenMap:
    """The labels of the Service's slices (``setEndpointSliceLabels``), keys sorted."""
    labels = {k: v for k, v in service.metadata.labels.items() if k not in _RESERVED_LABELS}
    if not _is_service_ip_set(service):
        labels[LABEL_HEADLESS] = ""
    labels[LABEL_SERVICE_NAME] = service.name
    labels[LABEL_MANAGED_BY] = CONTROLLER_NAME
    return FrozenMap({k: labels[k] for k in sorted(labels)})


def _mask_trailing_dash(name: str) -> str:
    # Reproduced as upstream writes it (it drops two characters, not one);
    # all that matters is that a trailing dash no longer ends the string.
    if len(name) > 1 and name.endswith("-"):
        return name[:-2] + "a"
    return name


def generate_name_prefix(service_name: str) -> str:
    """The ``generateName`` of the Service's slices, cut as the API server cuts it.

    ``<service>-`` when that is a valid DNS-subdomain prefix, else the bare
    name (``getEndpointSlicePrefix``); then at most 58 characters, leaving
    room for the 5-character suffix (``SimpleNameGenerator``).
    """
    prefix = f"{service_name}-"
    masked = _mask_trailing_dash(prefix)
    if len(prefix) > _DNS1123_SUBDOMAIN_MAX or not _DNS1123_SUBDOMAIN.match(masked):
        prefix = service_name
    return prefix[:_MAX_PREFIX_LENGTH]


def _suffix(material: str) -> str:
    digest = int.from_bytes(hashlib.sha256(material.encode()).digest()[:8], "big")
    chars = []
    base = len(_SUFFIX_ALPHABET)
    for _ in range(_SUFFIX_LENGTH):
        digest, index = divmod(digest, base)
        chars.append(_SUFFIX_ALPHABET[index])
    return "".join(chars)


def _parse_ip(text: str) -> tuple[str, str] | None:
    """``(family, canonical text)`` of an IP, as ``ParseIPSloppy`` + ``String`` give it."""
    if _CANONICAL_IPV4.match(text):
        return ("IPv4", text)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        # ParseIPSloppy also accepts IPv4 octets with leading zeros, read as decimal.
        parts = text.split(".")
        if len(parts) != 4 or not all(p.isdigit() and p.isascii() for p in parts):
            return None
        octets = [int(p) for p in parts]
        if any(o > 255 for o in octets):
            return None
        return ("IPv4", ".".join(map(str, octets)))
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped
        if mapped is not None:  # Go's net.IP: To4() != nil, so it is IPv4
            return ("IPv4", str(mapped))
        return ("IPv6", str(addr))
    return ("IPv4", str(addr))


def endpoint_ports(service: Service, pod: Pod) -> tuple[EndpointPort, ...]:
    """The Service's ports as resolved for one pod (``getEndpointPorts`` + ``FindPort``).

    A numeric ``targetPort`` is taken as is; a named one is looked up in the
    pod's container ports by name *and* protocol, and a port that does not
    resolve is left out.
    """
    out = []
    for sp in service.ports:
        target = sp.target_port
        if isinstance(target, str):
            number = pod.find_port(target, sp.protocol)
            if number is None:
                continue
        else:
            number = target
        out.append(
            EndpointPort(
                port=number, name=sp.name, protocol=sp.protocol, app_protocol=sp.app_protocol
            )
        )
    return tuple(out)


def _hints_by_distribution(service: Service) -> tuple[bool, bool]:
    """(zone hints, node hints) the Service's ``trafficDistribution`` asks for."""
    annotations = service.metadata.annotations
    mode = annotations.get(ANNOTATION_TOPOLOGY_AWARE_HINTS)
    if mode is None:
        mode = annotations.get(ANNOTATION_TOPOLOGY_MODE)
    if mode in ("Auto", "auto"):
        return (False, False)  # the topology cache's business, not modelled
    td = service.traffic_distribution
    if td not in _ZONE_DISTRIBUTIONS:
        return (False, False)
    return (True, td == "PreferSameNode")


def _wants_slices(service: Service) -> bool:
    return (
        service.type != "ExternalName"
        and service.has_selector
        and service.metadata.deletion_timestamp is None
    )


# -- per-pod facts, computed once per pod -------------------------------------------


class _PodFacts:
    """What a pod contributes to every Service that selects it (private, never mutated).

    A plain slotted class, built once per pod: cheaper than a frozen attrs
    class on the hot path of :func:`derive_all`.
    """

    __slots__ = ("addresses", "node_known", "pod", "serving", "sort_key", "target_ref", "zone")

    def __init__(self, pod: Pod, node_zones: Mapping[str, str | None]) -> None:
        addresses: dict[str, tuple[str, ...]] = {}
        for ip in pod.pod_ips:
            parsed = _parse_ip(ip)
            if parsed is not None:
                family, text = parsed
                addresses[family] = (*addresses.get(family, ()), text)
        meta = pod.metadata
        node_name = pod.node_name
        self.pod = pod
        self.addresses = addresses  # family -> canonical addresses
        self.serving = pod.is_ready
        self.node_known = node_name is not None and node_name in node_zones
        self.zone = node_zones.get(node_name) if node_name is not None else None
        self.target_ref = ObjectReference(
            kind="Pod", namespace=meta.namespace, name=meta.name, uid=meta.uid or None
        )
        self.sort_key = (meta.name, meta.uid or "", pod.pod_ips)


def _pod_facts(pod: Pod, node_zones: Mapping[str, str | None]) -> _PodFacts | None:
    """None for pods the controller never publishes (terminal, or without an IP)."""
    if pod.phase in _TERMINAL_PHASES or not pod.pod_ips:
        return None
    return _PodFacts(pod, node_zones)


_CONDITIONS: dict[tuple[bool, bool, bool], EndpointConditions] = {
    (r, s, t): EndpointConditions(ready=r, serving=s, terminating=t)
    for r in (False, True)
    for s in (False, True)
    for t in (False, True)
}


def _node_zones(nodes: Iterable[Node]) -> dict[str, str | None]:
    """Node name -> its zone label (None when missing or empty)."""
    return {node.metadata.name: node.metadata.labels.get(LABEL_ZONE) or None for node in nodes}


def _endpoint(
    facts: _PodFacts,
    service: Service,
    address_type: str,
    *,
    hint_zones: bool,
    hint_nodes: bool,
) -> Endpoint | None:
    if not facts.node_known and not service.publish_not_ready_addresses:
        return None
    addresses = facts.addresses.get(address_type)
    if not addresses:
        return None
    pod = facts.pod
    terminating = pod.metadata.deletion_timestamp is not None
    ready = service.publish_not_ready_addresses or (facts.serving and not terminating)
    hostname = None
    if pod.hostname and pod.subdomain == service.name and pod.namespace == service.namespace:
        hostname = pod.hostname
    hints = None
    if ready and (hint_zones or hint_nodes):
        for_zones = (facts.zone,) if hint_zones and facts.zone else ()
        for_nodes = (pod.node_name,) if hint_nodes and pod.node_name else ()
        if for_zones or for_nodes:
            hints = EndpointHints(for_zones=for_zones, for_nodes=for_nodes)
    return Endpoint(
        addresses=addresses,
        conditions=_CONDITIONS[(ready, facts.serving, terminating)],
        hostname=hostname,
        node_name=pod.node_name or None,
        zone=facts.zone,
        hints=hints,
        target_ref=facts.target_ref,
    )


def _port_key_text(ports: tuple[EndpointPort, ...]) -> str:
    return "|".join(
        f"{p.name}/{p.protocol}/{p.port}/{'' if p.app_protocol is None else p.app_protocol}"
        for p in ports
    )


def _slices_for(
    service: Service, selected: Sequence[_PodFacts], max_endpoints: int
) -> tuple[EndpointSlice, ...]:
    """The slices of one (managed) Service from the facts of its selected pods."""
    ordered = sorted(selected, key=lambda f: f.sort_key)
    hint_zones, hint_nodes = _hints_by_distribution(service)

    # Named target ports make the mapping a per-pod affair; numeric ones do not.
    if any(isinstance(sp.target_port, str) for sp in service.ports):
        mappings = [endpoint_ports(service, f.pod) for f in ordered]
    else:
        shared = endpoint_ports(service, ordered[0].pod) if ordered else ()
        mappings = [shared] * len(ordered)

    namespace, name = service.namespace, service.name
    prefix = generate_name_prefix(name)
    labels = endpoint_slice_labels(service)
    used: set[str] = set()

    def make(
        address_type: str, ports: tuple[EndpointPort, ...], index: int, eps: Sequence[Endpoint]
    ) -> EndpointSlice:
        material = f"{namespace}\0{name}\0{address_type}\0{_port_key_text(ports)}\0{index}"
        slice_name = prefix + _suffix(material)
        attempt = 0
        while slice_name in used:  # a clash inside one Service: rehash, deterministically
            attempt += 1
            slice_name = prefix + _suffix(f"{material}\0{attempt}")
        used.add(slice_name)
        return EndpointSlice(
            metadata=ObjectMeta(name=slice_name, namespace=namespace, labels=labels),
            address_type=address_type,
            endpoints=eps,
            ports=ports,
        )

    out: list[EndpointSlice] = []
    for address_type in address_types_for_service(service):
        groups: dict[tuple[EndpointPort, ...], list[Endpoint]] = {}
        for facts, ports in zip(ordered, mappings, strict=True):
            ep = _endpoint(
                facts, service, address_type, hint_zones=hint_zones, hint_nodes=hint_nodes
            )
            if ep is not None:
                groups.setdefault(ports, []).append(ep)
        made = 0
        for ports in sorted(groups, key=_port_key_text):
            eps = groups[ports]
            for index, start in enumerate(range(0, len(eps), max_endpoints)):
                out.append(make(address_type, ports, index, eps[start : start + max_endpoints]))
                made += 1
        if not made:  # the placeholder: no endpoints, no ports
            out.append(make(address_type, (), 0, ()))
    out.sort(key=lambda s: s.metadata.name)
    return tuple(out)


# -- the public entry points ----------------------------------------------------------


def derive_endpoint_slices(
    service: Service,
    pods: Iterable[Pod],
    nodes: Iterable[Node],
    *,
    max_endpoints_per_slice: int = DEFAULT_MAX_ENDPOINTS_PER_SLICE,
) -> tuple[EndpointSlice, ...]:
    """The EndpointSlices the controller would publish for ``service``, sorted by name.

    ``pods`` may hold any pods (other namespaces, unselected ones); ``nodes``
    supplies node existence and zones. Empty for ExternalName Services,
    Services without selector and Services being deleted. Pods are expected
    to be unique by name, as the API server keeps them.

    Raises :class:`EndpointSliceConfigError` (a :class:`ValueError`) when
    ``max_endpoints_per_slice`` is not an integer from 1 to 1000.
    """
    max_endpoints = _check_max_endpoints(max_endpoints_per_slice)
    if not _wants_slices(service):
        return ()
    node_zones = _node_zones(nodes)
    selected = []
    for pod in pods:
        if pod.metadata.namespace != service.namespace:
            continue
        if not label_selector_matches(service.selector, pod.metadata.labels):
            continue
        facts = _pod_facts(pod, node_zones)
        if facts is not None:
            selected.append(facts)
    return _slices_for(service, selected, max_endpoints)


class _PodIndex:
    """Pods by namespace and by ``(label key, label value)``, with lazily computed facts."""

    def __init__(self, pods: Iterable[Pod], node_zones: Mapping[str, str | None]) -> None:
        self._node_zones = node_zones
        self._pods: list[Pod] = []
        self._facts: list[_PodFacts | None] = []
        self._done: list[bool] = []
        # namespace -> (key, value) -> pod numbers, ascending
        self._by_label: dict[str, dict[tuple[str, str], list[int]]] = {}
        for number, pod in enumerate(pods):
            self._pods.append(pod)
            self._facts.append(None)
            self._done.append(False)
            by_label = self._by_label.setdefault(pod.metadata.namespace, {})
            for item in _items(pod.metadata.labels):
                by_label.setdefault(item, []).append(number)

    def facts(self, number: int) -> _PodFacts | None:
        if not self._done[number]:
            self._facts[number] = _pod_facts(self._pods[number], self._node_zones)
            self._done[number] = True
        return self._facts[number]

    def select(self, namespace: str, selector: Mapping[str, str]) -> list[_PodFacts]:
        """Facts of the publishable pods ``selector`` selects in ``namespace``."""
        by_label = self._by_label.get(namespace)
        if not by_label or not selector:
            return []
        postings = []
        for item in _items(selector):
            numbers = by_label.get(item)
            if not numbers:
                return []
            postings.append(numbers)
        # Walk the shortest posting list and check the other pairs on the pod.
        postings.sort(key=len)
        candidates = postings[0]
        if len(postings) > 1:
            pods = self._pods
            candidates = [
                n for n in candidates if label_selector_matches(selector, pods[n].metadata.labels)
            ]
        out = []
        for number in candidates:
            facts = self.facts(number)
            if facts is not None:
                out.append(facts)
        return out


def derive_all(
    services: Iterable[Service],
    pods: Iterable[Pod],
    nodes: Iterable[Node],
    *,
    max_endpoints_per_slice: int = DEFAULT_MAX_ENDPOINTS_PER_SLICE,
) -> dict[tuple[str, str], tuple[EndpointSlice, ...]]:
    """The slices of every Service, by ``(namespace, name)``.

    Equal, Service by Service, to :func:`derive_endpoint_slices` (Services
    the controller leaves alone map to ``()``), but pods are indexed once by
    namespace and label pair, and each pod's facts are computed once, so the
    cost follows the pods actually selected, not Services x pods.
    """
    max_endpoints = _check_max_endpoints(max_endpoints_per_slice)
    index = _PodIndex(pods, _node_zones(nodes))
    out: dict[tuple[str, str], tuple[EndpointSlice, ...]] = {}
    for service in services:
        key = (service.metadata.namespace, service.metadata.name)
        if not _wants_slices(service):
            out[key] = ()
            continue
        selected = index.select(service.metadata.namespace, service.selector)
        out[key] = _slices_for(service, selected, max_endpoints)
    return out
