"""Kubernetes API objects: Service, EndpointSlice, Pod, Node, and manifest I/O."""
