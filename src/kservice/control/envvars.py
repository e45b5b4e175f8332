"""Service environment variables, as the kubelet injects them into containers.

The kubelet (``pkg/kubelet/kubelet_pods.go`` ``getServiceEnvVarMap`` and
``pkg/kubelet/envvars/envvars.go`` ``FromServices``) gives every container
variables for the Services it can see:

* the master Services (``kubernetes``) of the master namespace (``default``),
  always, even with ``enableServiceLinks: false``;
* every Service of the pod's own namespace when ``enableServiceLinks`` is
  true (the default). A Service of the pod's namespace wins over a master
  Service of the same name.

Services without a ClusterIP (headless, ExternalName, not yet allocated) get
none. Only the primary ClusterIP (``spec.clusterIP``) is used, also for
dual-stack Services. Per Service, in this order::

    {SVC}_SERVICE_HOST=10.96.12.7
    {SVC}_SERVICE_PORT=80                     # the first port
    {SVC}_SERVICE_PORT_{PORTNAME}=80          # each named port
    {SVC}_PORT=tcp://10.96.12.7:80            # Docker links: the first port
    {SVC}_PORT_80_TCP=tcp://10.96.12.7:80     # then for each port
    {SVC}_PORT_80_TCP_PROTO=tcp
    {SVC}_PORT_80_TCP_PORT=80
    {SVC}_PORT_80_TCP_ADDR=10.96.12.7

Names are upper-cased with ``-`` turned into ``_``; URLs bracket IPv6
addresses (``tcp://[fd00::1]:80``, Go's ``net.JoinHostPort``) while ``_HOST``
and ``_ADDR`` do not.

The variables only describe Services that existed when the container
started: the kubelet reads its Service cache then and never updates a
running container. Callers pass exactly those Services.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from kservice.api.pod import Pod
from kservice.api.service import CLUSTER_IP_NONE, Service, ip_family_of

__all__ = [
    "MASTER_SERVICES",
    "MASTER_SERVICE_NAMESPACE",
    "env_var_name",
    "link_variables",
    "service_env",
    "service_variables",
]

#: The kubelet's ``--master-service-namespace`` default.
MASTER_SERVICE_NAMESPACE: Final = "default"
#: Services of the master namespace every pod sees (``masterServices``).
MASTER_SERVICES: Final = frozenset({"kubernetes"})


def env_var_name(name: str) -> str:
    """``makeEnvVariableName``: upper case, ``-`` to ``_`` (``backend-api`` -> ``BACKEND_API``)."""
    return name.replace("-", "_").upper()


def _has_cluster_ip(svc: Service) -> bool:
    """``IsServiceIPSet``: a ClusterIP that is neither empty nor ``None``."""
    return bool(svc.cluster_ip) and svc.cluster_ip != CLUSTER_IP_NONE


def _host_port(ip: str, port: int) -> str:
    """Go's ``net.JoinHostPort``: IPv6 literals go in brackets."""
    return f"[{ip}]:{port}" if ":" in ip or ip_family_of(ip) == "IPv6" else f"{ip}:{port}"


def link_variables(svc: Service) -> list[tuple[str, str]]:
    """``makeLinkVariables``: the Docker-link variables of one Service."""
    ip = svc.cluster_ip or ""
    prefix = env_var_name(svc.name)
    out: list[tuple[str, str]] = []
    for i, sp in enumerate(svc.ports):
        protocol = sp.protocol or "TCP"
        url = f"{protocol.lower()}://{_host_port(ip, sp.port)}"
        if i == 0:
            # Docker special-cases the first port.
            out.append((f"{prefix}_PORT", url))
        port_prefix = f"{prefix}_PORT_{sp.port}_{protocol.upper()}"
        out.extend(
            [
                (port_prefix, url),
                (f"{port_prefix}_PROTO", protocol.lower()),
                (f"{port_prefix}_PORT", str(sp.port)),
                (f"{port_prefix}_ADDR", ip),
            ]
        )
    return out


def service_variables(services: Iterable[Service]) -> list[tuple[str, str]]:
    """``FromServices``: every variable of ``services``, in the kubelet's order.

    Services without a ClusterIP are skipped. A Service with no ports (only
    possible when headless, hence already skipped) gets just ``_SERVICE_HOST``.
    """
    out: list[tuple[str, str]] = []
    for svc in services:
        if not _has_cluster_ip(svc):
            continue
        prefix = env_var_name(svc.name)
        out.append((f"{prefix}_SERVICE_HOST", svc.cluster_ip or ""))
        if svc.ports:
            out.append((f"{prefix}_SERVICE_PORT", str(svc.ports[0].port)))
            # All named ports (only the first may be unnamed, checked in validation).
            for sp in svc.ports:
                if sp.name:
                    out.append((f"{prefix}_SERVICE_PORT_{env_var_name(sp.name)}", str(sp.port)))
        out.extend(link_variables(svc))
    return out


def service_env(
    pod: Pod,
    services: Iterable[Service],
    *,
    master_service_namespace: str = MASTER_SERVICE_NAMESPACE,
) -> dict[str, str]:
    """The Service variables the kubelet gives ``pod``'s containers.

    ``services`` are the Services that existed before the pod started, in
    any namespace; the pod sees the master Services of
    ``master_service_namespace`` and, with ``enable_service_links``, those of
    its own namespace (a same-named one there replaces the master Service).

    Order: the kubelet walks a Go map, so its order across Services is
    random; here Services come sorted by name, each with its variables in
    ``FromServices`` order. Should two Services produce the same variable
    (e.g. ``a``'s ``A_PORT_80_TCP_PORT`` and ``a-port-80-tcp``'s first-port
    link variable), the later one wins, as in the kubelet's map.
    """
    visible: dict[str, Service] = {}
    for svc in services:
        if not _has_cluster_ip(svc):
            continue
        if svc.namespace == master_service_namespace and svc.name in MASTER_SERVICES:
            # Master Services never replace a Service of the pod's namespace.
            visible.setdefault(svc.name, svc)
        elif svc.namespace == pod.namespace and pod.enable_service_links:
            visible[svc.name] = svc
    ordered = [visible[name] for name in sorted(visible)]
    return dict(service_variables(ordered))
