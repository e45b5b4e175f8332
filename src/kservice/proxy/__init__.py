"""What kube-proxy on one node sees, and the names it gives things.

:class:`NodeView` is the input of the rule compilers: for one node and one IP
family, the service ports kube-proxy would program (:class:`ServicePortInfo`,
keyed by :class:`ServicePortName`) with their endpoints (:class:`EndpointInfo`)
already selected for Cluster and Local traffic policy and topology
(:func:`categorize_endpoints`). :class:`ProxyConfig` is the kube-proxy
configuration the compilers read. :mod:`kservice.proxy.naming` computes
kube-proxy's iptables and nftables chain names.
"""

from kservice.proxy.config import (
    DETECT_LOCAL_MODES,
    IP_FAMILIES,
    IPVS_SCHEDULERS,
    NODE_PORT_ADDRESSES_PRIMARY,
    PROXY_MODES,
    ProxyConfig,
)
from kservice.proxy.naming import (
    ServicePortName,
    hash_and_truncate,
    iptables_cluster_chain,
    iptables_endpoint_chain,
    iptables_external_chain,
    iptables_firewall_chain,
    iptables_local_chain,
    join_host_port,
    nftables_affinity_set,
    nftables_cluster_chain,
    nftables_endpoint_chain,
    nftables_endpoint_chain_name_base,
    nftables_external_chain,
    nftables_firewall_chain,
    nftables_local_chain,
    nftables_service_chain_name_base,
    port_proto_hash,
    service_port_chain_name,
    service_port_endpoint_chain_name,
)
from kservice.proxy.nodeview import (
    LABEL_HEADLESS,
    LABEL_SERVICE_PROXY_NAME,
    TOPOLOGY_MODES,
    EndpointInfo,
    EndpointSelection,
    LocalTrafficDetector,
    NodeInfo,
    NodePortAddresses,
    NodeView,
    NodeViewError,
    ServicePortInfo,
    categorize_endpoints,
    topology_mode_from_hints,
)

__all__ = [
    "DETECT_LOCAL_MODES",
    "IPVS_SCHEDULERS",
    "IP_FAMILIES",
    "LABEL_HEADLESS",
    "LABEL_SERVICE_PROXY_NAME",
    "NODE_PORT_ADDRESSES_PRIMARY",
    "PROXY_MODES",
    "TOPOLOGY_MODES",
    "EndpointInfo",
    "EndpointSelection",
    "LocalTrafficDetector",
    "NodeInfo",
    "NodePortAddresses",
    "NodeView",
    "NodeViewError",
    "ProxyConfig",
    "ServicePortInfo",
    "ServicePortName",
    "categorize_endpoints",
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
    "topology_mode_from_hints",
]
