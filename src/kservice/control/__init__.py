"""The API-server side of kservice: the cluster registry, the ClusterIP and NodePort
allocators, the EndpointSlice controller, cluster DNS and service environment variables."""

from kservice.control.cluster import (
    ApplyError,
    Cluster,
    ClusterConfig,
    StateError,
)
from kservice.control.dns import (
    Answer,
    ClusterDNS,
    DNSError,
    Record,
    Resolution,
    format_resolution,
    pod_resolver_config,
    resolv_conf,
)
from kservice.control.endpointslices import derive_all, derive_endpoint_slices
from kservice.control.envvars import service_env
from kservice.control.ipalloc import ClusterIPAllocator, ClusterIPAllocators
from kservice.control.portalloc import NodePortAllocator

__all__ = [
    "Answer",
    "ApplyError",
    "Cluster",
    "ClusterConfig",
    "ClusterDNS",
    "ClusterIPAllocator",
    "ClusterIPAllocators",
    "DNSError",
    "NodePortAllocator",
    "Record",
    "Resolution",
    "StateError",
    "derive_all",
    "derive_endpoint_slices",
    "format_resolution",
    "pod_resolver_config",
    "resolv_conf",
    "service_env",
]
