"""kservice: the Kubernetes Service data plane, end to end.

The public API is re-exported here; the work lives in the subpackages
(``kservice.api`` objects and manifests, ``kservice.control`` the API-server
side, ``kservice.netfilter`` rulesets).
"""

from kservice._version import __version__
from kservice.api.endpointslice import Endpoint, EndpointSlice
from kservice.api.manifest import (
    LoadError,
    LoadResult,
    UnknownKindError,
    dump,
    dump_file,
    load,
    load_text,
    read,
    read_text,
)
from kservice.api.node import Node
from kservice.api.pod import Pod
from kservice.api.service import Service, ServicePort
from kservice.control.cluster import Cluster, ClusterConfig
from kservice.errors import (
    AllocationError,
    AlreadyAllocatedError,
    ConfigError,
    FieldError,
    KServiceError,
    ManifestError,
    NotFoundError,
    NotInRangeError,
    RangeFullError,
    ValidationError,
)

__all__ = [
    "AllocationError",
    "AlreadyAllocatedError",
    "Cluster",
    "ClusterConfig",
    "ConfigError",
    "Endpoint",
    "EndpointSlice",
    "FieldError",
    "KServiceError",
    "LoadError",
    "LoadResult",
    "ManifestError",
    "Node",
    "NotFoundError",
    "NotInRangeError",
    "Pod",
    "RangeFullError",
    "Service",
    "ServicePort",
    "UnknownKindError",
    "ValidationError",
    "__version__",
    "dump",
    "dump_file",
    "load",
    "load_text",
    "read",
    "read_text",
]
