"""Cluster DNS, as CoreDNS's *kubernetes* plugin answers it, and a pod's resolver.

:class:`ClusterDNS` is a snapshot of the cluster (Services, EndpointSlices,
Pods) indexed for lookups; :meth:`ClusterDNS.query` answers one question the
way a default CoreDNS deployment does::

    .:53 {
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            fallthrough in-addr.arpa ip6.arpa
        }
        forward . <upstream>
    }

Names in the cluster domain follow the Kubernetes DNS specification (schema
1.1.0) with CoreDNS's exact answers (``plugin/kubernetes/kubernetes.go``,
``parse.go``, ``reverse.go`` and ``plugin/backend_lookup.go``):

* ``<svc>.<ns>.svc.<zone>``: A/AAAA with every ClusterIP of the family; for a
  headless Service one record per published endpoint address; for an
  ExternalName Service a CNAME, chased through the ``upstream`` table.
* ``_<port>._<proto>.<svc>.<ns>.svc.<zone>``: SRV, priority 0, weight
  ``floor(100 / n)`` (at least 1) over the n matches, target the Service name
  (ClusterIP) or each endpoint's name (headless), addresses in ``extra``.
* ``<endpoint>.<svc>.<ns>.svc.<zone>``: an endpoint by hostname, else by the
  dashed address (``10-244-1-5``, ``fd00--5``).
* ``<a-b-c-d>.<ns>.pod.<zone>``: pod records, by ``pods_mode``
  (``disabled``, CoreDNS's default; ``insecure``; ``verified``).
* PTR for ClusterIPs (-> Service name) and published endpoint addresses
  (-> endpoint name).
* NXDOMAIN for what does not exist (wildcards included: CoreDNS no longer
  answers them); NODATA (NOERROR, no records) for names that exist without
  records of the asked type, and for the apex, ``svc.<zone>``,
  ``pod.<zone>`` and ``<ns>.svc.<zone>`` of an existing namespace.

Names outside the cluster domain are answered from the ``upstream`` table,
the stand-in for what ``forward`` would reach.

:meth:`ClusterDNS.resolve` replays what a pod's glibc stub resolver sends for
a name given its ``/etc/resolv.conf`` (:func:`pod_resolver_config`, the
kubelet's ``GetPodDNS``): the search-list expansion, ``ndots``, which query
answered and how many were wasted.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import attrs

from kservice.api._base import ObjectMeta
from kservice.api.endpointslice import EndpointSlice
from kservice.api.pod import (
    MAX_DNS_NAMESERVERS,
    MAX_DNS_SEARCH_LIST_CHARS,
    MAX_DNS_SEARCH_PATHS,
    Pod,
)
from kservice.api.service import Service
from kservice.errors import KServiceError

__all__ = [
    "DEFAULT_CLUSTER_DNS",
    "DEFAULT_DOMAIN",
    "DEFAULT_TTL",
    "DNS_SCHEMA_VERSION",
    "NOERROR",
    "NXDOMAIN",
    "POD_MODES",
    "QTYPES",
    "UPSTREAM_TTL",
    "Answer",
    "ClusterDNS",
    "DNSError",
    "Query",
    "Record",
    "Resolution",
    "ResolverConfig",
    "effective_dns_policy",
    "format_resolution",
    "pod_resolver_config",
    "resolv_conf",
    "reverse_name",
]

NOERROR: Final = "NOERROR"
NXDOMAIN: Final = "NXDOMAIN"

#: Query types :meth:`ClusterDNS.query` understands. Others are answered by
#: CoreDNS with a "fake A lookup" (existence only); ANY gets that treatment too.
QTYPES: Final = ("A", "AAAA", "ANY", "CNAME", "PTR", "SRV", "TXT")
#: CoreDNS's ``pods`` option: ``disabled`` is its default (kubeadm's Corefile
#: sets ``insecure``).
POD_MODES: Final = ("disabled", "insecure", "verified")

DEFAULT_DOMAIN: Final = "cluster.local"
#: The kube-dns Service's ClusterIP in a default kubeadm cluster.
DEFAULT_CLUSTER_DNS: Final = "10.96.0.10"
#: CoreDNS's default TTL for kubernetes answers (kubeadm's Corefile sets 30).
DEFAULT_TTL: Final = 5
#: ``dns-version.<zone>`` TXT: the schema version CoreDNS implements.
DNS_SCHEMA_VERSION: Final = "1.1.0"
_DNS_VERSION_TTL: Final = 28800
#: The upstream table has no TTLs of its own; this stands in for them.
UPSTREAM_TTL: Final = 300

_MAX_NAME: Final = 253  # presentation length without the trailing dot
_MAX_LABEL: Final = 63
_MAX_NDOTS: Final = 15  # glibc's RES_MAXNDOTS
_CNAME_CHAIN: Final = 8  # CoreDNS stops adding CNAMEs after 8 (len(previous) > 7)

_SOURCE_K8S: Final = "kubernetes"
_SOURCE_UPSTREAM: Final = "upstream"
_SOURCE_INVALID: Final = "invalid"

_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# The kubelet's podDNSType and the namespaces every cluster has.
_BUILTIN_NAMESPACES: Final = ("default", "kube-node-lease", "kube-public", "kube-system")


class DNSError(KServiceError, ValueError):
    """A bad argument to the DNS model: unknown qtype or pods mode, bad upstream table."""


# -- records and answers -----------------------------------------------------------


@attrs.frozen
class Record:
    """One resource record, names absolute (trailing dot) as on the wire.

    ``data`` is the presentation form of the RDATA (an address, a target
    name, ``"priority weight port target"`` for SRV, the text for TXT).
    SRV records also carry ``priority``, ``weight``, ``port`` and ``target``.
    """

    name: str
    type: str
    ttl: int
    data: str
    priority: int | None = None
    weight: int | None = None
    port: int | None = None
    target: str | None = None

    def __str__(self) -> str:
        data = f'"{self.data}"' if self.type == "TXT" else self.data
        return f"{self.name}\t{self.ttl}\tIN\t{self.type}\t{data}"


@attrs.frozen
class Answer:
    """The reply to one question.

    ``rcode`` is ``NOERROR`` or ``NXDOMAIN``; NOERROR with no ``records`` is
    NODATA. ``extra`` is the additional section (the addresses of SRV
    targets). ``source`` says who answered: ``"kubernetes"`` (the cluster
    zone or a reverse zone), ``"upstream"`` (the forwarded table), or
    ``"invalid"`` for a malformed name (empty label, label over 63 octets,
    name over 253), which no resolver would send.
    """

    name: str
    qtype: str
    rcode: str
    records: tuple[Record, ...] = ()
    extra: tuple[Record, ...] = ()
    source: str = _SOURCE_K8S

    @property
    def nodata(self) -> bool:
        """NOERROR without records: the name exists, not with this type."""
        return self.rcode == NOERROR and not self.records

    @property
    def answered(self) -> bool:
        """NOERROR with records: what makes a stub resolver stop searching."""
        return self.rcode == NOERROR and bool(self.records)

    @property
    def addresses(self) -> tuple[str, ...]:
        """The A/AAAA data in the answer section, in order."""
        return tuple(r.data for r in self.records if r.type in ("A", "AAAA"))

    @property
    def status(self) -> str:
        """``NOERROR``, ``NODATA`` or ``NXDOMAIN``, for display."""
        return "NODATA" if self.nodata else self.rcode


# -- name helpers ---------------------------------------------------------------------


def _fold(name: str) -> str:
    """DNS case folding: ASCII only (RFC 4343), so lengths never change."""
    return name.lower() if name.isascii() else name.translate(_ASCII_FOLD)


def _octets(label: str) -> int:
    return len(label.encode("utf-8", "surrogatepass"))


def _absolute(name: str) -> str | None:
    """``name`` with exactly one trailing dot, or None if it cannot be sent.

    The root is ``"."``. Empty labels, labels over 63 octets and names over
    253 octets are rejected, as a stub resolver would before sending.
    """
    relative = name[:-1] if name.endswith(".") else name
    if relative == "":
        return "."
    size = len if relative.isascii() else _octets
    if size(relative) > _MAX_NAME:
        return None
    if any(not label or size(label) > _MAX_LABEL for label in relative.split(".")):
        return None
    return relative + "."


def _labels(absolute: str) -> list[str]:
    return [] if absolute == "." else absolute[:-1].split(".")


def _in_zone(folded: str, zone: str) -> bool:
    """Whether absolute ``folded`` equals or lies under absolute ``zone``."""
    return folded == zone or folded.endswith("." + zone)


def _canon(text: str) -> tuple[int, str] | None:
    """``(4 or 6, canonical text)`` for an IP literal, else None.

    ``inet_pton`` is strict as Go's ``net.ParseIP`` is (no leading zeros, no
    zone), and fast; every address is read once, when the index is built.
    """
    try:
        if ":" in text:
            packed = socket.inet_pton(socket.AF_INET6, text)
            return 6, socket.inet_ntop(socket.AF_INET6, packed)
        return 4, socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
    except (OSError, ValueError):  # UnicodeEncodeError is a ValueError
        return None


def _family(text: str) -> int | None:
    canon = _canon(text)
    return None if canon is None else canon[0]


def reverse_name(ip: str) -> str:
    """The PTR owner name of an address: ``5.1.244.10.in-addr.arpa.`` or ip6.arpa nibbles."""
    return ipaddress.ip_address(ip).reverse_pointer + "."


def _address_from_reverse(folded: str) -> str | None:
    """The canonical address a full reverse name stands for (``ExtractAddressFromReverse``)."""
    if folded.endswith(".in-addr.arpa."):
        parts = folded[: -len(".in-addr.arpa.")].split(".")
        if len(parts) != 4:
            return None
        canon = _canon(".".join(reversed(parts)))
        return canon[1] if canon is not None and canon[0] == 4 else None
    if folded.endswith(".ip6.arpa."):
        nibbles = folded[: -len(".ip6.arpa.")].split(".")
        if len(nibbles) != 32 or any(len(n) != 1 or n not in "0123456789abcdef" for n in nibbles):
            return None
        packed = bytes.fromhex("".join(reversed(nibbles)))
        return socket.inet_ntop(socket.AF_INET6, packed)
    return None


def _dashed(ip: str) -> str:
    """The endpoint/pod label of an address: dots or colons become dashes."""
    if "." in ip:
        return ip.replace(".", "-")
    return ip.replace(":", "-")


def _undash(label: str) -> str:
    """CoreDNS's reading of a pod label: 3 dashes (no ``--``) is IPv4, else IPv6."""
    if label.count("-") == 3 and "--" not in label:
        return label.replace("-", ".")
    return label.replace("-", ":")


# -- the index ---------------------------------------------------------------------------


@attrs.frozen
class _Port:
    name: str
    protocol: str
    port: int  # -1: CoreDNS's sentinel for "no ports declared"


_NO_PORTS: Final = (_Port("", "", -1),)


@attrs.frozen
class _Address:
    ip: str  # canonical
    family: int
    label: str  # folded endpoint name: hostname, pod name, or dashed address
    target: str  # folded <label>.<service>.<ns>.svc.<zone>.


@attrs.frozen
class _Subset:
    """One slice's published addresses, each exposing every port of the slice."""

    addresses: tuple[_Address, ...]
    ports: tuple[_Port, ...]


@attrs.frozen
class _Item:
    """What CoreDNS calls a ``msg.Service``: a host (IP or name), a port and an owner."""

    host: str  # canonical address, or a name (ExternalName)
    port: int
    target: str  # absolute, folded name: the SRV target
    family: int = 0  # 4, 6, or 0 when host is a name (a CNAME)


@attrs.frozen
class _Request:
    """A parsed cluster-zone name (``parseRequest``); empty fields were not given."""

    kind: str = ""  # "svc" | "pod" | "" (apex forms)
    namespace: str = ""
    service: str = ""
    endpoint: str = ""
    port: str = ""
    protocol: str = ""


def _parse(labels: list[str]) -> _Request | None:
    """Read the labels left of the zone; None for names CoreDNS rejects (NXDOMAIN).

    ``[endpoint | _port._proto] . service . namespace . (svc|pod)``; more
    labels than that is "too long". Underscores are stripped from port and
    protocol, as CoreDNS does (so ``http.tcp.svc...`` reads the same).
    """
    if not labels or labels in (["svc"], ["pod"]):
        return _Request()
    rest = list(labels)
    kind = rest.pop()
    if kind not in ("svc", "pod"):
        return None
    if not rest:
        return _Request(kind=kind)
    namespace = rest.pop()
    if not rest:
        return _Request(kind=kind, namespace=namespace)
    service = rest.pop()
    if not rest:
        return _Request(kind=kind, namespace=namespace, service=service)
    if len(rest) == 1:
        return _Request(kind=kind, namespace=namespace, service=service, endpoint=rest[0])
    if len(rest) == 2:
        return _Request(
            kind=kind,
            namespace=namespace,
            service=service,
            port=rest[0].removeprefix("_"),
            protocol=rest[1].removeprefix("_"),
        )
    return None


def _port_matches(req: _Request, port: _Port) -> bool:
    """``matchPortAndProtocol``: an unset request field matches anything."""
    return (req.port == "" or req.port == _fold(port.name)) and (
        req.protocol == "" or req.protocol == _fold(port.protocol)
    )


class _NameError(Exception):
    """CoreDNS's errNoItems / errInvalidRequest: answer NXDOMAIN."""


def _check_qtype(qtype: str) -> str:
    upper = qtype.upper()
    if upper not in QTYPES:
        raise DNSError(f"unsupported query type {qtype!r}: expected one of {', '.join(QTYPES)}")
    return upper


def _zone_name(domain: str) -> str:
    absolute = _absolute(_fold(domain.strip()))
    if absolute is None or absolute == ".":
        raise DNSError(f"invalid cluster domain {domain!r}")
    return absolute


def _nameserver_tuple(value: str | Sequence[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


class _Upstream:
    """The names ``forward`` would reach: name -> addresses, or -> one CNAME target."""

    def __init__(self, table: Mapping[str, str | Iterable[str]] | None) -> None:
        self.addresses: dict[str, tuple[tuple[int, str], ...]] = {}
        self.aliases: dict[str, str] = {}
        for key, value in (table or {}).items():
            name = _absolute(_fold(key.strip())) if isinstance(key, str) else None
            if name is None or name == ".":
                raise DNSError(f"upstream: invalid name {key!r}")
            entries = (value,) if isinstance(value, str) else tuple(value)
            ips: list[tuple[int, str]] = []
            aliases: list[str] = []
            for entry in entries:
                if not isinstance(entry, str):
                    raise DNSError(f"upstream: {key!r}: entries must be strings, not {entry!r}")
                canon = _canon(entry.strip())
                if canon is not None:
                    ips.append(canon)
                    continue
                target = _absolute(_fold(entry.strip()))
                if target is None or target == ".":
                    raise DNSError(f"upstream: {key!r}: {entry!r} is neither an IP nor a name")
                aliases.append(target)
            if aliases and (ips or len(aliases) > 1):
                raise DNSError(
                    f"upstream: {key!r}: a CNAME cannot coexist with other data (RFC 1034)"
                )
            if aliases:
                self.aliases[name] = aliases[0]
            else:
                self.addresses[name] = tuple(ips)

    def lookup(self, qname: str, qtype: str) -> Answer:
        """Answer from the table, chasing CNAMEs inside it (at most 8 deep)."""
        records: list[Record] = []
        owner = qname
        seen: set[str] = set()
        for _ in range(_CNAME_CHAIN):
            folded = _fold(owner)
            if folded == ".":
                return Answer(qname, qtype, NOERROR, tuple(records), source=_SOURCE_UPSTREAM)
            target = self.aliases.get(folded)
            if target is not None:
                records.append(Record(owner, "CNAME", UPSTREAM_TTL, target))
                if qtype == "CNAME" or target in seen:
                    break
                seen.add(folded)
                owner = target
                continue
            ips = self.addresses.get(folded)
            if ips is None:
                return Answer(qname, qtype, NXDOMAIN, tuple(records), source=_SOURCE_UPSTREAM)
            want = {"A": 4, "AAAA": 6}.get(qtype)
            for family, ip in ips:
                if family == want:
                    records.append(Record(owner, qtype, UPSTREAM_TTL, ip))
            break
        return Answer(qname, qtype, NOERROR, tuple(records), source=_SOURCE_UPSTREAM)


# -- the server ---------------------------------------------------------------------------


class ClusterDNS:
    """CoreDNS with the *kubernetes* plugin, over a snapshot of the cluster.

    Takes plain iterables of API objects so any registry can feed it:
    ``services``, ``endpoint_slices`` (matched to their Service by the
    ``kubernetes.io/service-name`` label and namespace; FQDN slices are
    ignored), and ``pods`` (only read in ``verified`` pods mode).

    Options mirror the plugin's: ``pods_mode`` (``pods``), ``ttl``,
    ``endpoint_pod_names``, ``ignore_empty_service`` (``ignore
    empty_service``) and ``include_terminating`` (``terminating_endpoints``:
    publish endpoints that are serving while terminating). An endpoint is
    published when its ``ready`` condition is true or unset, or when its
    Service sets ``publishNotReadyAddresses`` (the EndpointSlice controller
    writes ``ready: true`` for those, so hand-built slices answer the same).

    ``upstream`` maps names outside the cluster zone to a list of addresses,
    or to one CNAME target; unknown names are NXDOMAIN there.
    ``namespaces`` declares namespaces that exist without objects (the four
    built-in ones always exist, as does every namespace holding an object):
    CoreDNS answers NXDOMAIN under a namespace that does not exist.
    ``cluster_dns`` is the kube-dns Service IP(s): what pods' resolv.conf
    points at and what ``ns.dns.<zone>`` returns.
    """

    def __init__(
        self,
        services: Iterable[Service],
        endpoint_slices: Iterable[EndpointSlice] = (),
        pods: Iterable[Pod] = (),
        *,
        domain: str = DEFAULT_DOMAIN,
        upstream: Mapping[str, str | Iterable[str]] | None = None,
        pods_mode: str = "disabled",
        ttl: int = DEFAULT_TTL,
        cluster_dns: str | Sequence[str] = DEFAULT_CLUSTER_DNS,
        namespaces: Iterable[str] = (),
        endpoint_pod_names: bool = False,
        ignore_empty_service: bool = False,
        include_terminating: bool = False,
    ) -> None:
        if pods_mode not in POD_MODES:
            raise DNSError(f"unknown pods mode {pods_mode!r}: expected one of {POD_MODES}")
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 3600:
            raise DNSError(f"ttl must be an integer between 0 and 3600, not {ttl!r}")
        self.zone = _zone_name(domain)
        self._zone_depth = len(_labels(self.zone))
        self.domain = self.zone[:-1]
        self.pods_mode = pods_mode
        self.ttl = ttl
        self.cluster_dns = _nameserver_tuple(cluster_dns)
        self.ignore_empty_service = ignore_empty_service
        self._upstream = _Upstream(upstream)

        self._namespaces: set[str] = {_fold(ns) for ns in (*_BUILTIN_NAMESPACES, *namespaces)}
        self._services: dict[tuple[str, str], Service] = {}
        for svc in services:
            key = (_fold(svc.namespace), _fold(svc.name))
            self._services.setdefault(key, svc)
            self._namespaces.add(key[0])

        self._subsets: dict[tuple[str, str], list[_Subset]] = {}
        self._endpoint_ptr: dict[str, list[str]] = {}
        for eps in endpoint_slices:
            self._namespaces.add(_fold(eps.namespace))
            self._add_slice(eps, endpoint_pod_names, include_terminating)

        # Every ClusterIP, canonical, read once; and the PTR index over them.
        self._cluster_ips: dict[tuple[str, str], tuple[tuple[int, str], ...]] = {}
        self._service_ptr: dict[str, str] = {}
        for (ns, name), svc in self._services.items():
            if svc.is_headless or svc.type == "ExternalName":
                continue
            raw = svc.cluster_ips or ((svc.cluster_ip,) if svc.cluster_ip else ())
            ips = tuple(c for c in map(_canon, raw) if c is not None)
            self._cluster_ips[(ns, name)] = ips
            for _, ip in ips:
                self._service_ptr.setdefault(ip, f"{name}.{ns}.svc.{self.zone}")

        self._pod_ips: dict[str, set[str]] = {}
        for pod in pods:
            self._namespaces.add(_fold(pod.namespace))
            # CoreDNS indexes status.podIP only, and drops pods being deleted.
            if pod.is_terminating or pod.pod_ip is None:
                continue
            canon = _canon(pod.pod_ip)
            if canon is not None:
                self._pod_ips.setdefault(canon[1], set()).add(_fold(pod.namespace))

    def _add_slice(self, eps: EndpointSlice, pod_names: bool, include_terminating: bool) -> None:
        service_name = eps.service_name
        if not service_name or eps.address_type not in ("IPv4", "IPv6"):
            return
        key = (_fold(eps.namespace), _fold(service_name))
        svc = self._services.get(key)
        publish_all = svc is not None and svc.publish_not_ready_addresses
        suffix = f".{key[1]}.{key[0]}.svc.{self.zone}"
        addresses: list[_Address] = []
        for endpoint in eps.endpoints:
            if include_terminating:
                # Serving, deferring to ready when unset (endpointsliceServing).
                published = (
                    endpoint.conditions.serving
                    if endpoint.conditions.serving is not None
                    else endpoint.is_ready
                )
            else:
                published = endpoint.is_ready
            if not (published or publish_all):
                continue
            for ip in endpoint.addresses:
                canon = _canon(ip)
                if canon is None:
                    continue
                if endpoint.hostname:
                    label = endpoint.hostname
                elif (
                    pod_names
                    and endpoint.target_ref is not None
                    and endpoint.target_ref.name
                    and len(endpoint.target_ref.name) < 64
                ):
                    label = endpoint.target_ref.name
                else:
                    label = _dashed(ip)
                label = _fold(label)
                fqdn = label + suffix
                addresses.append(_Address(canon[1], canon[0], label, fqdn))
                self._endpoint_ptr.setdefault(canon[1], []).append(fqdn)
        ports = (
            tuple(
                _Port(p.name, p.protocol, p.port if p.port is not None else -1) for p in eps.ports
            )
            or _NO_PORTS
        )
        self._subsets.setdefault(key, []).append(_Subset(tuple(addresses), ports))

    # -- CoreDNS's Records / findServices / findPods -----------------------------------

    def _items(self, folded: str, qtype: str) -> list[_Item]:
        """The ``msg.Service`` list for a cluster-zone name; raises _NameError for NXDOMAIN."""
        labels = _labels(folded)[: -self._zone_depth]
        if labels == ["ns", "dns"]:
            # isDefaultNS: the DNS server's own addresses.
            want = {"A": 4, "AAAA": 6}.get(qtype)
            return [
                _Item(c[1], 0, folded, c[0])
                for c in map(_canon, self.cluster_dns)
                if c is not None and c[0] == want
            ]
        req = _parse(labels)
        if req is None:
            raise _NameError
        if req.kind == "":
            return []  # apex, svc.<zone>, pod.<zone>: NODATA
        if req.namespace not in self._namespaces:
            raise _NameError
        if req.kind == "pod":
            return self._find_pods(req, folded)
        return self._find_services(req)

    def _find_pods(self, req: _Request, folded: str) -> list[_Item]:
        if self.pods_mode == "disabled":
            raise _NameError
        if req.service == "":
            return []  # <ns>.pod.<zone> of an existing namespace: NODATA
        canon = _canon(_undash(req.service))
        if canon is None:
            raise _NameError
        if self.pods_mode == "verified" and req.namespace not in self._pod_ips.get(canon[1], ()):
            raise _NameError
        return [_Item(canon[1], 0, folded, canon[0])]

    def _find_services(self, req: _Request) -> list[_Item]:
        if req.service == "":
            return []  # <ns>.svc.<zone>: NODATA
        svc = self._services.get((req.namespace, req.service))
        if svc is None:
            raise _NameError
        key = (req.namespace, req.service)
        base = f"{req.service}.{req.namespace}.svc.{self.zone}"
        subsets = self._subsets.get(key, [])
        if (
            self.ignore_empty_service
            and svc.type != "ExternalName"
            and not svc.is_headless
            and not any(s.addresses for s in subsets)
        ):
            raise _NameError

        if svc.type == "ExternalName":
            # ExternalName has no endpoints; an IP-valued externalName is not answered.
            if req.endpoint or not svc.external_name or _canon(svc.external_name) is not None:
                raise _NameError
            return [_Item(svc.external_name, 0, base)]

        items: list[_Item] = []
        found = False
        if svc.is_headless or req.endpoint:
            for subset in subsets:
                for address in subset.addresses:
                    if req.endpoint and req.endpoint != address.label:
                        continue
                    for port in subset.ports:
                        if not _port_matches(req, port):
                            continue
                        found = True
                        items.append(_Item(address.ip, port.port, address.target, address.family))
            if not found:
                raise _NameError
            return items

        ports = tuple(_Port(p.name, p.protocol, p.port) for p in svc.ports) or _NO_PORTS
        ips = self._cluster_ips.get(key, ())
        for port in ports:
            if not _port_matches(req, port):
                continue
            found = True
            items.extend(_Item(ip, port.port, base, family) for family, ip in ips)
        if not found:
            raise _NameError
        return items

    # -- answers per type (plugin/backend_lookup.go) -------------------------------------

    def _address_records(
        self, qname: str, items: list[_Item], qtype: str, previous: list[Record]
    ) -> list[Record]:
        want = 4 if qtype == "A" else 6
        records: list[Record] = []
        seen: set[str] = set()
        for item in items:
            if not item.family:
                target = _absolute(_fold(item.host))
                if target is None or target == _fold(qname):
                    continue  # x CNAME x is a direct loop
                cname = Record(qname, "CNAME", self.ttl, target)
                if len(previous) >= _CNAME_CHAIN or any(
                    r.type == "CNAME" and _fold(r.name) == _fold(qname) and r.data == target
                    for r in previous
                ):
                    continue
                if _in_zone(target, self.zone):
                    try:
                        nested = self._items(target, qtype)
                    except _NameError:
                        continue
                    more = self._address_records(target, nested, qtype, [*previous, cname])
                    if more:
                        records.extend((cname, *more))
                    continue
                upstream = self._upstream.lookup(target, qtype)
                records.append(cname)
                records.extend(upstream.records)
            elif item.family == want and item.host not in seen:
                seen.add(item.host)
                records.append(Record(qname, qtype, self.ttl, item.host))
        return records

    def _srv(self, qname: str, items: list[_Item]) -> tuple[list[Record], list[Record]]:
        # SRV never returns ExternalName CNAMEs ("not yet implemented" upstream).
        items = [i for i in items if i.family]
        records: list[Record] = []
        extra: list[Record] = []
        if not items:
            return records, extra
        # All kubernetes items have priority 0 and weight 0 (read as 100), so the
        # weight is 100/(100n)*100 floored, with n counting port-less items too.
        weight = max(1, math.floor(100.0 / float(100 * len(items)) * 100))
        seen_srv: set[tuple[str, int]] = set()
        seen_addr: set[tuple[str, str]] = set()
        for item in items:
            if item.port == -1:
                continue
            target = item.target
            if (target, item.port) not in seen_srv:
                seen_srv.add((target, item.port))
                records.append(
                    Record(
                        qname,
                        "SRV",
                        self.ttl,
                        f"0 {weight} {item.port} {target}",
                        priority=0,
                        weight=weight,
                        port=item.port,
                        target=target,
                    )
                )
            if (target, item.host) not in seen_addr:
                seen_addr.add((target, item.host))
                rtype = "A" if item.family == 4 else "AAAA"
                extra.append(Record(target, rtype, self.ttl, item.host))
        return records, extra

    def _cname_only(self, qname: str, items: list[_Item], qtype: str) -> list[Record]:
        """CNAME queries, and TXT over an ExternalName (a CNAME the upstream has no TXT for)."""
        records: list[Record] = []
        for item in items[:1] if qtype == "CNAME" else items:
            if item.family:
                continue
            target = _absolute(_fold(item.host))
            if target is None or target == _fold(qname):
                continue
            if qtype == "TXT" and _in_zone(target, self.zone):
                continue  # internal chase finds no TXT: nothing is added
            records.append(Record(qname, "CNAME", self.ttl, target))
        return records

    def _kubernetes(self, qname: str, folded: str, qtype: str) -> Answer:
        if qtype == "TXT" and folded == "dns-version." + self.zone:
            txt = Record(qname, "TXT", _DNS_VERSION_TTL, DNS_SCHEMA_VERSION)
            return Answer(qname, qtype, NOERROR, (txt,))
        # Everything else first asks "does this exist?" the same way: a name
        # error is NXDOMAIN whatever the type (ANY and PTR included).
        try:
            items = self._items(folded, qtype)
        except _NameError:
            return Answer(qname, qtype, NXDOMAIN)
        extra: list[Record] = []
        if qtype in ("A", "AAAA"):
            records = self._address_records(qname, items, qtype, [])
        elif qtype == "SRV":
            records, extra = self._srv(qname, items)
        elif qtype in ("CNAME", "TXT"):
            records = self._cname_only(qname, items, qtype)
        else:  # PTR of a forward name, ANY: existence only
            records = []
        return Answer(qname, qtype, NOERROR, tuple(records), tuple(extra))

    def _reverse(self, qname: str, folded: str) -> Answer | None:
        """PTR for a ClusterIP or a published endpoint address; None falls through."""
        addr = _address_from_reverse(folded)
        if addr is None:
            return None
        service = self._service_ptr.get(addr)
        targets = [service] if service is not None else self._endpoint_ptr.get(addr, [])
        if not targets:
            return None
        records = tuple(Record(qname, "PTR", self.ttl, t) for t in dict.fromkeys(targets))
        return Answer(qname, "PTR", NOERROR, records)

    # -- public ----------------------------------------------------------------------------

    def query(self, name: str, qtype: str = "A") -> Answer:
        """Answer one question as CoreDNS would. Never raises for any ``name``.

        ``name`` is absolute whether or not it ends in a dot, matched
        case-insensitively; answers keep the question's spelling as owner
        name. ``qtype`` is one of :data:`QTYPES` (case-insensitive);
        anything else raises :class:`DNSError`.
        """
        qtype = _check_qtype(qtype)
        qname = _absolute(name)
        if qname is None:
            shown = name if name.endswith(".") else name + "."
            return Answer(shown, qtype, NXDOMAIN, source=_SOURCE_INVALID)
        folded = _fold(qname)
        if _in_zone(folded, self.zone):
            return self._kubernetes(qname, folded, qtype)
        if qtype == "PTR" and (_in_zone(folded, "in-addr.arpa.") or _in_zone(folded, "ip6.arpa.")):
            answer = self._reverse(qname, folded)
            if answer is not None:
                return answer
            # fallthrough in-addr.arpa ip6.arpa: on to forward.
        return self._upstream.lookup(qname, qtype)

    def upstream_query(self, name: str, qtype: str = "A") -> Answer:
        """Answer from the upstream table alone: what a node's resolver would say."""
        qtype = _check_qtype(qtype)
        qname = _absolute(name)
        if qname is None:
            shown = name if name.endswith(".") else name + "."
            return Answer(shown, qtype, NXDOMAIN, source=_SOURCE_INVALID)
        return self._upstream.lookup(qname, qtype)

    def resolver_config(self, pod: Pod, *, host: ResolverConfig | None = None) -> ResolverConfig:
        """The pod's resolv.conf settings in this cluster (see :func:`pod_resolver_config`)."""
        return pod_resolver_config(pod, cluster_dns=self.cluster_dns, domain=self.domain, host=host)

    def resolv_conf(self, pod: Pod, *, host: ResolverConfig | None = None) -> str:
        """The /etc/resolv.conf the pod gets in this cluster."""
        return self.resolver_config(pod, host=host).render()

    def resolve(
        self,
        name: str,
        *,
        pod: Pod | None = None,
        namespace: str = "default",
        qtype: str = "A",
        host: ResolverConfig | None = None,
    ) -> Resolution:
        """What a pod's glibc resolver sends for ``name``, and what comes back.

        The pod (or, without one, a ClusterFirst pod in ``namespace``) gets
        its resolv.conf from :func:`pod_resolver_config`; the queries follow
        glibc's ``res_search``: a trailing dot means one absolute query; fewer
        dots than ``ndots`` tries each search domain first, then the name as
        is; otherwise the name as is first, then the search domains. The
        search stops at the first NOERROR answer with records (a CNAME alone
        counts: glibc stops there too). Queries go to the first nameserver:
        when it is this cluster's DNS they are answered by :meth:`query`,
        otherwise by the upstream table alone (the node's resolver knows
        nothing of the cluster zone). One query type per name: real
        ``getaddrinfo`` sends A and AAAA in parallel, doubling every count.
        """
        qtype = _check_qtype(qtype)
        if pod is None:
            pod = Pod(metadata=ObjectMeta(name="resolver", namespace=namespace))
        config = self.resolver_config(pod, host=host)
        server = config.nameservers[0] if config.nameservers else "127.0.0.1"
        cluster = server in self.cluster_dns
        queries: list[Query] = []
        answered: int | None = None
        for candidate in config.candidates(name):
            answer = (
                self.query(candidate, qtype) if cluster else self.upstream_query(candidate, qtype)
            )
            queries.append(Query(answer.name, qtype, server, answer))
            if answer.answered:
                answered = len(queries) - 1
                break
        return Resolution(
            name=name,
            qtype=qtype,
            namespace=pod.namespace,
            config=config,
            queries=tuple(queries),
            answered_index=answered,
        )


# -- the pod's resolv.conf (pkg/kubelet/network/dns/dns.go) ------------------------------


def _str_tuple(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class ResolverConfig:
    """A resolv.conf: nameservers, search domains and options (``ndots:5``, ...)."""

    nameservers: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    searches: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    options: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)

    @property
    def ndots(self) -> int:
        """glibc's ndots: 1 by default, the last ``ndots:n`` wins, capped at 15."""
        value = 1
        for option in self.options:
            if option.startswith("ndots:"):
                digits = ""
                for char in option[len("ndots:") :]:
                    if not char.isdigit():
                        break
                    digits += char
                value = min(int(digits or "0"), _MAX_NDOTS)
        return value

    @property
    def no_tld_query(self) -> bool:
        """``options no-tld-query``: never try a dotless name as is."""
        return "no-tld-query" in self.options

    def candidates(self, name: str) -> list[str]:
        """The names glibc's ``res_search`` queries for ``name``, in order.

        A search domain loses one leading dot; the root (``.`` or empty) as a
        search domain queries the name as is and spares the final try.
        (BSD and bionic resolvers skip a root domain after an as-is try;
        glibc does not.)
        """
        if name in ("", "."):
            return ["."]
        trailing = name.endswith(".")
        dots = name.count(".")
        out: list[str] = []
        tried_as_is = False
        if dots >= self.ndots or trailing:
            out.append(name if trailing else name + ".")
            if trailing:
                return out
            tried_as_is = True
        searched = False
        root_on_list = False
        for domain in self.searches:
            searched = True
            domain = domain.removeprefix(".").rstrip(".")
            if domain == "":
                root_on_list = True
                out.append(name + ".")
            else:
                out.append(f"{name}.{domain}.")
        if (dots or not searched or not self.no_tld_query) and not (tried_as_is or root_on_list):
            out.append(name + ".")
        return out

    def render(self) -> str:
        """The file as the container runtime writes it (containerd/CRI-O ``parseDNSOptions``)."""
        text = ""
        if self.searches:
            text += "search " + " ".join(self.searches) + "\n"
        for server in self.nameservers:
            text += f"nameserver {server}\n"
        if self.options:
            text += "options " + " ".join(self.options) + "\n"
        return text

    @classmethod
    def parse(cls, text: str) -> ResolverConfig:
        """Read a resolv.conf as the kubelet does (``parseResolvConf``).

        Nameservers accumulate; the last ``search`` and ``options`` lines win;
        search domains lose a trailing dot; ``#`` lines are comments.
        """
        nameservers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
        for line in text.split("\n"):
            stripped = line.strip()
            if stripped.startswith("#"):
                continue
            fields = stripped.split()
            if not fields:
                continue
            if fields[0] == "nameserver" and len(fields) >= 2:
                nameservers.append(fields[1])
            elif fields[0] == "search":
                searches = [f.removesuffix(".") for f in fields[1:]]
            elif fields[0] == "options":
                options = fields[1:]
        return cls(nameservers, searches, options)


def effective_dns_policy(pod: Pod, cluster_dns: Sequence[str] = (DEFAULT_CLUSTER_DNS,)) -> str:
    """The policy the kubelet applies (``getPodDNSType``).

    ClusterFirst on a hostNetwork pod falls back to Default (use
    ClusterFirstWithHostNet to keep cluster DNS), as it does when the kubelet
    has no cluster DNS configured; ClusterFirstWithHostNet is ClusterFirst.
    """
    policy = pod.dns_policy
    if policy == "None":
        return "None"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        if policy == "ClusterFirst" and pod.host_network:
            return "Default"
        return "ClusterFirst" if cluster_dns else "Default"
    if policy == "Default":
        return "Default"
    # The API server rejects anything else; the kubelet then uses ClusterFirst.
    return "ClusterFirst" if cluster_dns else "Default"


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _merge_options(
    existing: Sequence[str], pod_options: Iterable[tuple[str, str | None]]
) -> list[str]:
    """``mergeDNSOptions``: pod options override same-named ones.

    The kubelet rebuilds the list from a Go map, so its order is random; here
    existing options keep their place and new ones follow in pod order.
    """
    merged: dict[str, str] = {}
    for option in existing:
        key, _, value = option.partition(":")
        merged[key] = value
    for name, pod_value in pod_options:
        merged[name] = pod_value or ""
    return [f"{k}:{v}" if v else k for k, v in merged.items()]


def _fit_searches(searches: list[str]) -> list[str]:
    """``formDNSSearchFitsLimits``: 32 paths, none over 253 chars, 2048 chars in all."""
    searches = [s for s in searches[:MAX_DNS_SEARCH_PATHS] if len(s) <= _MAX_NAME]
    line = len(" ".join(searches))
    if line > MAX_DNS_SEARCH_LIST_CHARS:
        cut = 0
        while searches and line - cut > MAX_DNS_SEARCH_LIST_CHARS:
            cut += len(searches.pop()) + 1
    return searches


def pod_resolver_config(
    pod: Pod,
    *,
    cluster_dns: str | Sequence[str] = DEFAULT_CLUSTER_DNS,
    domain: str = DEFAULT_DOMAIN,
    host: ResolverConfig | None = None,
) -> ResolverConfig:
    """The resolver settings the kubelet gives ``pod`` (``Configurer.GetPodDNS``).

    ``host`` is the node's resolv.conf (kubelet ``--resolv-conf``), empty by
    default. ClusterFirst: the cluster DNS server(s) only, search
    ``<ns>.svc.<domain> svc.<domain> <domain>`` then the host's search
    domains, ``options ndots:5`` (the host's options are dropped). Default:
    the host's file as is. None: nothing. Then ``spec.dnsConfig`` is
    appended: nameservers and searches de-duplicated, options merged (a pod
    ``ndots`` overrides). Finally the limits: 3 nameservers, 32 search
    domains of at most 253 characters, 2048 characters of search line.
    """
    servers = _nameserver_tuple(cluster_dns)
    base = host or ResolverConfig()
    policy = effective_dns_policy(pod, servers)
    if policy == "None":
        nameservers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
    elif policy == "ClusterFirst":
        zone = domain.strip().rstrip(".")
        nameservers = list(servers)
        cluster_search = [f"{pod.namespace}.svc.{zone}", f"svc.{zone}", zone] if zone else []
        searches = _unique([*cluster_search, *base.searches])
        options = ["ndots:5"]
    else:
        nameservers = list(base.nameservers)
        searches = list(base.searches)
        options = list(base.options)
    if pod.dns_config is not None:
        nameservers = _unique([*nameservers, *pod.dns_config.nameservers])
        searches = _unique([*searches, *pod.dns_config.searches])
        options = _merge_options(options, ((o.name, o.value) for o in pod.dns_config.options))
    return ResolverConfig(nameservers[:MAX_DNS_NAMESERVERS], _fit_searches(searches), options)


def resolv_conf(
    pod: Pod,
    *,
    cluster_dns: str | Sequence[str] = DEFAULT_CLUSTER_DNS,
    domain: str = DEFAULT_DOMAIN,
    host: ResolverConfig | None = None,
) -> str:
    """The /etc/resolv.conf of ``pod``: search line, nameserver lines, options line.

    For a ClusterFirst pod in ``production``::

        search production.svc.cluster.local svc.cluster.local cluster.local
        nameserver 10.96.0.10
        options ndots:5

    An all-empty config renders as ``""`` (the runtime then copies the node's
    file).
    """
    return pod_resolver_config(pod, cluster_dns=cluster_dns, domain=domain, host=host).render()


# -- resolutions ---------------------------------------------------------------------------


@attrs.frozen
class Query:
    """One query a stub resolver sent: the name, the type, the server and its answer."""

    name: str
    qtype: str
    server: str
    answer: Answer


@attrs.frozen
class Resolution:
    """The story of one name lookup from a pod.

    ``queries`` lists every query in the order sent; ``answered_index`` is
    the one that answered (None when none did). :attr:`wasted` counts the
    NXDOMAIN/NODATA replies paid for before the answer (all of them when
    unresolved).
    """

    name: str
    qtype: str
    namespace: str
    config: ResolverConfig
    queries: tuple[Query, ...]
    answered_index: int | None

    @property
    def answer(self) -> Answer | None:
        return None if self.answered_index is None else self.queries[self.answered_index].answer

    @property
    def answered_by(self) -> str | None:
        """The name that answered, absolute."""
        return None if self.answered_index is None else self.queries[self.answered_index].name

    @property
    def wasted(self) -> int:
        return len(self.queries) if self.answered_index is None else self.answered_index

    @property
    def resolved(self) -> bool:
        """An answer with records of the asked type (a dangling CNAME is not enough)."""
        answer = self.answer
        return answer is not None and any(r.type == self.qtype for r in answer.records)

    @property
    def addresses(self) -> tuple[str, ...]:
        answer = self.answer
        return () if answer is None else answer.addresses

    @property
    def rcode(self) -> str:
        """The final rcode: the answer's, else NOERROR if any reply was NODATA
        (glibc reports NO_DATA then), else NXDOMAIN."""
        answer = self.answer
        if answer is not None:
            return answer.rcode
        return NOERROR if any(q.answer.nodata for q in self.queries) else NXDOMAIN


def format_resolution(res: Resolution) -> str:
    """A short text account of a :class:`Resolution`, for the CLI."""
    cfg = res.config
    server = cfg.nameservers[0] if cfg.nameservers else "127.0.0.1"
    lines = [
        f"resolving {res.name} ({res.qtype}) from namespace {res.namespace}",
        f"  search {' '.join(cfg.searches) or '(none)'}; ndots:{cfg.ndots}; nameserver {server}",
    ]
    width = max((len(q.name) for q in res.queries), default=0)
    for i, q in enumerate(res.queries, 1):
        mark = "  <- answer" if res.answered_index == i - 1 else ""
        via = f" [{q.answer.source}]" if q.answer.source != _SOURCE_K8S else ""
        lines.append(f"  {i}. {q.name:<{width}} {q.qtype} -> {q.answer.status}{via}{mark}")
    answer = res.answer
    if answer is not None:
        lines.append("answer:")
        lines.extend(f"  {r}" for r in answer.records)
        if not res.resolved:
            lines.append(f"  (no {res.qtype} record at the end of the chain)")
        if answer.extra:
            lines.append("additional:")
            lines.extend(f"  {r}" for r in answer.extra)
        lines.append(f"wasted queries: {res.wasted} (NXDOMAIN/NODATA before the answer)")
    else:
        lines.append(f"unresolved: {res.rcode}")
        lines.append(f"wasted queries: {res.wasted} (every query)")
    return "\n".join(lines)
