"""Kubernetes API objects: Service, EndpointSlice, Pod, Node, and manifest I/O."""

from kservice.api.endpointslice import Endpoint, EndpointSlice
from kservice.api.manifest import dump, load, load_text, read, read_text
from kservice.api.node import Node
from kservice.api.pod import Pod
from kservice.api.service import Service, ServicePort

__all__ = [
    "Endpoint",
    "EndpointSlice",
    "Node",
    "Pod",
    "Service",
    "ServicePort",
    "dump",
    "load",
    "load_text",
    "read",
    "read_text",
]
