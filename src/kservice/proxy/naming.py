"""kube-proxy's names: the ServicePortName key and the chain names derived from it.

Facts carried over from kubernetes/kubernetes:

* ``pkg/proxy/types.go``: ``ServicePortName{NamespacedName, Port, Protocol}``
  prints ``namespace/name:port`` -- or ``namespace/name`` when the port name
  is empty (``fmtPortName``). The protocol is part of the key but not of the
  printed form.
* ``pkg/proxy/iptables/proxier.go``: every per-service chain is a fixed prefix
  plus ``portProtoHash(servicePortName, protocol)`` = the first 16 characters
  of ``base32(sha256(servicePortName.String() + protocol))`` (standard base32
  alphabet, with padding, so only ``A-Z2-7``), where ``protocol`` is the
  lower-cased protocol (``strings.ToLower``). Prefixes: ``KUBE-SVC-``
  (Cluster policy), ``KUBE-SVL-`` (Local policy), ``KUBE-EXT-`` (external
  traffic), ``KUBE-FW-`` (loadBalancerSourceRanges). An endpoint chain is
  ``KUBE-SEP-`` plus the first 16 characters of
  ``base32(sha256(servicePortName + protocol + endpoint))``, ``endpoint`` being
  ``ip:port`` (``[ip]:port`` for IPv6, ``net.JoinHostPort``). iptables chain
  names may have at most 28 characters, which is why the hash is cut to 16.
* ``pkg/proxy/nftables/proxier.go``: chain names are readable.
  ``servicePortChainNameBase`` is ``hashAndTruncate("ns/name/proto/port")``
  and ``servicePortEndpointChainNameBase`` is
  ``hashAndTruncate("ns/name/proto/port__ip/port")``, with the colons of an
  IPv6 endpoint IP replaced by dots (colons are not allowed in nft names).
  ``hashAndTruncate`` prefixes the first 8 characters of the base32 sha256 of
  the name and a ``-``, and cuts names longer than 240 characters (nft's
  256-character name limit minus 16 for the longest prefix) to 237 characters
  plus ``...``. Prefixes: ``service-``, ``local-``, ``external-``,
  ``firewall-``, ``endpoint-``, and ``affinity-`` (the ClientIP affinity set
  of an endpoint, on the endpoint base). Example from upstream:
  ``service-ULMVA6XW-ns1/svc1/tcp/p80`` and
  ``endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80``.

Every helper takes the protocol in any case and lower-cases it, as every
upstream caller does before hashing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

import attrs

__all__ = [
    "IPTABLES_CHAIN_NAME_MAX",
    "IPTABLES_EXTERNAL_PREFIX",
    "IPTABLES_FIREWALL_PREFIX",
    "IPTABLES_LOCAL_PREFIX",
    "IPTABLES_SEP_PREFIX",
    "IPTABLES_SVC_PREFIX",
    "NFTABLES_AFFINITY_PREFIX",
    "NFTABLES_CHAIN_NAME_BASE_MAX",
    "NFTABLES_CHAIN_NAME_MAX",
    "NFTABLES_CLUSTER_PREFIX",
    "NFTABLES_ENDPOINT_PREFIX",
    "NFTABLES_EXTERNAL_PREFIX",
    "NFTABLES_FIREWALL_PREFIX",
    "NFTABLES_LOCAL_PREFIX",
    "ServicePortName",
    "hash_and_truncate",
    "iptables_cluster_chain",
    "iptables_endpoint_chain",
    "iptables_external_chain",
    "iptables_firewall_chain",
    "iptables_local_chain",
    "join_host_port",
    "nftables_affinity_set",
    "nftables_cluster_chain",
    "nftables_endpoint_chain",
    "nftables_endpoint_chain_name_base",
    "nftables_external_chain",
    "nftables_firewall_chain",
    "nftables_local_chain",
    "nftables_service_chain_name_base",
    "port_proto_hash",
    "service_port_chain_name",
    "service_port_endpoint_chain_name",
]

# -- iptables (pkg/proxy/iptables/proxier.go) ------------------------------------
IPTABLES_SVC_PREFIX = "KUBE-SVC-"
IPTABLES_LOCAL_PREFIX = "KUBE-SVL-"
IPTABLES_EXTERNAL_PREFIX = "KUBE-EXT-"
IPTABLES_FIREWALL_PREFIX = "KUBE-FW-"
IPTABLES_SEP_PREFIX = "KUBE-SEP-"
#: iptables chain names may have at most 28 characters (XT_EXTENSION_MAXNAMELEN - 1).
IPTABLES_CHAIN_NAME_MAX = 28

# -- nftables (pkg/proxy/nftables/proxier.go) ------------------------------------
NFTABLES_CLUSTER_PREFIX = "service-"
NFTABLES_LOCAL_PREFIX = "local-"
NFTABLES_EXTERNAL_PREFIX = "external-"
NFTABLES_FIREWALL_PREFIX = "firewall-"
NFTABLES_ENDPOINT_PREFIX = "endpoint-"
NFTABLES_AFFINITY_PREFIX = "affinity-"
#: ``knftables.NameLengthMax``: nft names may have at most 256 characters.
NFTABLES_CHAIN_NAME_MAX = 256
_NFTABLES_PREFIX_MAX = 16  # chainNamePrefixLengthMax, trailing hyphen included
#: ``chainNameBaseLengthMax``: the longest a hashed base name may be.
NFTABLES_CHAIN_NAME_BASE_MAX = NFTABLES_CHAIN_NAME_MAX - _NFTABLES_PREFIX_MAX


@attrs.frozen(order=True)
class ServicePortName:
    """The key of one Service port in kube-proxy's maps (``proxy.ServicePortName``).

    ``port`` is the Service port's *name* (``""`` for a single unnamed port),
    not its number. ``str()`` is kube-proxy's ``String()``: ``ns/name:port``,
    or ``ns/name`` when the port name is empty; the protocol is not printed.
    Instances order by (namespace, name, port, protocol), which gives
    deterministic iteration.
    """

    namespace: str
    name: str
    port: str = ""
    protocol: str = "TCP"

    def __str__(self) -> str:
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base

    @property
    def port_name(self) -> str:
        """The Service port's name (the same as :attr:`port`)."""
        return self.port

    @property
    def namespaced_name(self) -> str:
        """``namespace/name`` (``types.NamespacedName.String()``)."""
        return f"{self.namespace}/{self.name}"

    @property
    def key(self) -> tuple[str, str]:
        """``(namespace, name)`` of the Service."""
        return (self.namespace, self.name)


_B32_PAIRS: Final = tuple(
    a + b for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
)  # RFC 4648 base32 (Go's base32.StdEncoding), two characters (10 bits) per entry


def hash8(text: str) -> str:
    """The first 8 characters of base32(sha256(text)) (nftables' ``hashAndTruncate``).

    Base32 maps every 5 bytes to 8 characters independently, so only the first
    5 digest bytes are encoded, from a table: ``base64.b32encode`` of the whole
    digest is a pure-Python loop that dominated compile times.
    """
    n = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:5], "big")
    p = _B32_PAIRS
    return f"{p[n >> 30]}{p[n >> 20 & 1023]}{p[n >> 10 & 1023]}{p[n & 1023]}"


def hash16(text: str) -> str:
    """The first 16 characters of base32(sha256(text)) (iptables chain hashes)."""
    x = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:10], "big")
    p = _B32_PAIRS
    # one f-string builds the result once (chained + would build 7 partial strings)
    return (
        f"{p[x >> 70]}{p[x >> 60 & 1023]}{p[x >> 50 & 1023]}{p[x >> 40 & 1023]}"
        f"{p[x >> 30 & 1023]}{p[x >> 20 & 1023]}{p[x >> 10 & 1023]}{p[x & 1023]}"
    )


def hash16_each(prefix: str, suffixes: Iterable[str]) -> list[str]:
    """:func:`hash16` of ``prefix + suffix`` for each suffix (an endpoint chain per
    endpoint of a service port), the common prefix hashed once."""
    head = hashlib.sha256(prefix.encode("utf-8"))
    p = _B32_PAIRS
    out = []
    for suffix in suffixes:
        h = head.copy()
        h.update(suffix.encode("utf-8"))
        x = int.from_bytes(h.digest()[:10], "big")
        out.append(
            f"{p[x >> 70]}{p[x >> 60 & 1023]}{p[x >> 50 & 1023]}{p[x >> 40 & 1023]}"
            f"{p[x >> 30 & 1023]}{p[x >> 20 & 1023]}{p[x >> 10 & 1023]}{p[x & 1023]}"
        )
    return out


def hash_and_truncate_each(prefix: str, suffixes: Iterable[str]) -> list[str]:
    """:func:`hash_and_truncate` of ``prefix + suffix`` for each suffix, the common
    prefix hashed once."""
    head = hashlib.sha256(prefix.encode("utf-8"))
    p = _B32_PAIRS
    limit = NFTABLES_CHAIN_NAME_BASE_MAX
    out = []
    for suffix in suffixes:
        h = head.copy()
        h.update(suffix.encode("utf-8"))
        n = int.from_bytes(h.digest()[:5], "big")
        name = f"{p[n >> 30]}{p[n >> 20 & 1023]}{p[n >> 10 & 1023]}{p[n & 1023]}-{prefix}{suffix}"
        out.append(name if len(name) <= limit else name[: limit - 3] + "...")
    return out


def _name_string(service_port_name: ServicePortName | str) -> str:
    return str(service_port_name)


def _protocol(service_port_name: ServicePortName | str, protocol: str | None) -> str:
    if protocol is None:
        if isinstance(service_port_name, ServicePortName):
            protocol = service_port_name.protocol
        else:
            raise TypeError("protocol is required when the service port name is a string")
    return protocol.lower()


def join_host_port(ip: str, port: int | str) -> str:
    """Go's ``net.JoinHostPort``: ``ip:port``, or ``[ip]:port`` when ``ip`` has a colon."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def port_proto_hash(service_port_name: ServicePortName | str, protocol: str | None = None) -> str:
    """``portProtoHash``: 16 characters of base32(sha256(servicePortName + protocol)).

    ``protocol`` defaults to the ServicePortName's own; it is lower-cased.
    """
    text = _name_string(service_port_name) + _protocol(service_port_name, protocol)
    return hash16(text)


def service_port_chain_name(
    prefix: str, service_port_name: ServicePortName | str, protocol: str | None = None
) -> str:
    """An iptables per-service chain: ``prefix`` + :func:`port_proto_hash`."""
    return prefix + port_proto_hash(service_port_name, protocol)


def service_port_endpoint_chain_name(
    service_port_name: ServicePortName | str,
    endpoint: str,
    protocol: str | None = None,
    *,
    prefix: str = IPTABLES_SEP_PREFIX,
) -> str:
    """``servicePortEndpointChainName``: ``KUBE-SEP-`` + 16 characters of
    base32(sha256(servicePortName + protocol + endpoint)).

    ``endpoint`` is the endpoint string ``ip:port`` / ``[ip]:port``.
    """
    text = _name_string(service_port_name) + _protocol(service_port_name, protocol) + endpoint
    return prefix + hash16(text)


def iptables_cluster_chain(spn: ServicePortName) -> str:
    """``KUBE-SVC-<hash>``: dispatch to the Cluster-policy endpoints."""
    return service_port_chain_name(IPTABLES_SVC_PREFIX, spn)


def iptables_local_chain(spn: ServicePortName) -> str:
    """``KUBE-SVL-<hash>``: dispatch to the Local-policy endpoints."""
    return service_port_chain_name(IPTABLES_LOCAL_PREFIX, spn)


def iptables_external_chain(spn: ServicePortName) -> str:
    """``KUBE-EXT-<hash>``: external traffic (NodePort, externalIPs, load balancers)."""
    return service_port_chain_name(IPTABLES_EXTERNAL_PREFIX, spn)


def iptables_firewall_chain(spn: ServicePortName) -> str:
    """``KUBE-FW-<hash>``: the loadBalancerSourceRanges filter."""
    return service_port_chain_name(IPTABLES_FIREWALL_PREFIX, spn)


def iptables_endpoint_chain(spn: ServicePortName, endpoint: str) -> str:
    """``KUBE-SEP-<hash>`` of one endpoint (``ip:port``) of a service port."""
    return service_port_endpoint_chain_name(spn, endpoint)


def hash_and_truncate(name: str) -> str:
    """nftables' ``hashAndTruncate``: ``HASH8-name``, cut to 240 characters with ``...``."""
    name = hash8(name) + "-" + name
    if len(name) > NFTABLES_CHAIN_NAME_BASE_MAX:
        name = name[: NFTABLES_CHAIN_NAME_BASE_MAX - 3] + "..."
    return name


def nftables_service_chain_name_base(spn: ServicePortName, protocol: str | None = None) -> str:
    """``servicePortChainNameBase``: ``HASH-ns/name/proto/port``.

    For example ``ULMVA6XW-ns1/svc1/tcp/p80``.
    """
    proto = _protocol(spn, protocol)
    return hash_and_truncate(f"{spn.namespace}/{spn.name}/{proto}/{spn.port}")


def _split_host_port(endpoint: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort`` for the endpoint strings kube-proxy builds."""
    if endpoint.startswith("["):
        end = endpoint.find("]")
        if end < 0 or endpoint[end + 1 : end + 2] != ":":
            raise ValueError(f"invalid endpoint {endpoint!r}: missing port after ']'")
        return endpoint[1:end], endpoint[end + 2 :]
    host, sep, port = endpoint.rpartition(":")
    if not sep or ":" in host:
        raise ValueError(f"invalid endpoint {endpoint!r}: want ip:port or [ip]:port")
    return host, port


def nftables_endpoint_chain_name_base(
    spn: ServicePortName, endpoint: str, protocol: str | None = None
) -> str:
    """``servicePortEndpointChainNameBase``: ``HASH-ns/name/proto/port__ip/port``.

    IPv6 colons become dots: ``[fd00:10:180::1]:80`` gives ``...__fd00.10.180..1/80``.
    """
    ip, port = _split_host_port(endpoint)
    ip = ip.replace(":", ".")
    proto = _protocol(spn, protocol)
    return hash_and_truncate(f"{spn.namespace}/{spn.name}/{proto}/{spn.port}__{ip}/{port}")


def nftables_cluster_chain(spn: ServicePortName) -> str:
    """``service-<base>``: dispatch to the Cluster-policy endpoints."""
    return NFTABLES_CLUSTER_PREFIX + nftables_service_chain_name_base(spn)


def nftables_local_chain(spn: ServicePortName) -> str:
    """``local-<base>``: dispatch to the Local-policy endpoints."""
    return NFTABLES_LOCAL_PREFIX + nftables_service_chain_name_base(spn)


def nftables_external_chain(spn: ServicePortName) -> str:
    """``external-<base>``: external traffic."""
    return NFTABLES_EXTERNAL_PREFIX + nftables_service_chain_name_base(spn)


def nftables_firewall_chain(spn: ServicePortName) -> str:
    """``firewall-<base>``: the loadBalancerSourceRanges filter."""
    return NFTABLES_FIREWALL_PREFIX + nftables_service_chain_name_base(spn)


def nftables_endpoint_chain(spn: ServicePortName, endpoint: str) -> str:
    """``endpoint-<endpoint base>``: DNAT to one endpoint."""
    return NFTABLES_ENDPOINT_PREFIX + nftables_endpoint_chain_name_base(spn, endpoint)


def nftables_affinity_set(spn: ServicePortName, endpoint: str) -> str:
    """``affinity-<endpoint base>``: the ClientIP session-affinity set of one endpoint."""
    return NFTABLES_AFFINITY_PREFIX + nftables_endpoint_chain_name_base(spn, endpoint)
