"""A small real network for one node: namespaces, veth pairs, routes, endpoint servers.

:class:`TopologyPlan` is pure data, computed from a cluster, a node and the
rulesets compiled for it (one per IP family); :class:`Topology` builds it in
private namespaces (see :mod:`kservice.kernel.netns`) and loads rulesets into
the node namespace with the real tools.

The network, as CNI plugins with host routes (Calico, Cilium's host routing)
build it::

    external ──eth0══eth0── node ──vethN══eth0── pod N   (one per local pod)
    (clients,               (node IPs,  ──rmt0══eth0── remote  (pods on other nodes,
     LB source ranges)       kube-ipvs0)                        selectorless endpoints)

* The **node** namespace holds the node's IPs on ``eth0`` (and, in IPVS mode,
  the virtual IPs on ``kube-ipvs0``), forwards (``ip_forward``,
  IPv6 ``forwarding``), and has ``route_localnet`` where kube-proxy sets it
  (iptables mode with localhost NodePorts). It has a /32 (/128) host route
  to every address of the other namespaces, through their veth, and a
  default route to **remote**, the rest of the network, as a real node
  routes through its gateway (the node's own connections to a ClusterIP
  need a route before OUTPUT rewrites them). Remote forwards, but only back
  to the addresses of the topology: for anything else it has an
  ``unreachable`` default route, so a packet the rules pass unchanged to an
  address nobody holds is answered with ICMP host unreachable. ICMP rate
  limits are off in node and remote, so every reject and unreachable is
  answered, however many probes there are.
* Every other namespace routes everything to the node (default route via
  ``169.254.1.1`` / ``fe80::1``, bound to the node's MAC by a permanent
  neighbour entry, as Calico does), so replies of DNATed and masqueraded
  connections come back through the node, where conntrack un-NATs them.
  All neighbour entries are permanent: no ARP or NDP at run time.
* **Pods**: one namespace per pod of the node (not hostNetwork, not
  finished) plus a *client pod* ``kst-client`` (a free address of the node's
  pod CIDR) that is no Service's endpoint, to probe from. **Remote** holds
  every endpoint address that is neither a local pod's nor the node's.
  **External** holds a client address per family outside every cluster range,
  an allowed and a denied source per ``loadBalancerSourceRanges``, and a few
  more clients for session-affinity checks.
* **Servers**: every endpoint ``ip:port`` (from the views and from the
  rules' DNAT targets) answers TCP and UDP with its identity and the source it
  saw; the node also answers on its own addresses (node IPs, loopback,
  kube-ipvs0) at every service port and nodePort, so a packet the rules pass
  unchanged to the node shows as "answered by the node".
"""

from __future__ import annotations

import ipaddress
import json
import select
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs

from kservice.kernel.netns import (
    KernelError,
    Netns,
    NetnsGroup,
    dummy_supported,
    ip_vs_available,
    sctp_available,
)
from kservice.netfilter import iptables_text, ipvs_text, nft_text
from kservice.netfilter.ruleset import DNAT, ProtoMatch, Ruleset
from kservice.proxy.nodeview import NodeView

if TYPE_CHECKING:
    from kservice.control.cluster import Cluster
    from kservice.kernel.probe import Prober

__all__ = [
    "GATEWAY_V4",
    "GATEWAY_V6",
    "REMOTE_GATEWAY_V4",
    "REMOTE_GATEWAY_V6",
    "Bind",
    "ExternalClient",
    "LoadStep",
    "PodPlan",
    "Topology",
    "TopologyPlan",
]

GATEWAY_V4 = "169.254.1.1"
GATEWAY_V6 = "fe80::1"
#: The remote namespace's side of the node's default routes.
REMOTE_GATEWAY_V4 = "169.254.1.2"
REMOTE_GATEWAY_V6 = "fe80::2"
_HERE = Path(__file__).resolve().parent
_READY_TIMEOUT = 20.0

#: Address pools for external clients, tried in order; an address inside any
#: cluster range (service and pod CIDRs) or already used is skipped.
_EXTERNAL_POOLS = {
    "IPv4": ("192.0.2.0/24", "198.18.0.0/24", "100.64.0.0/24", "172.31.255.0/24"),
    "IPv6": ("2001:db8:ffff::/64", "fd00:ffff:1::/64"),
}
#: Where the client pod goes when the node has no pod CIDR of the family.
_FALLBACK_POD_CIDR = {"IPv4": "10.254.254.0/24", "IPv6": "fd00:ffff:2::/64"}

Protocol = Literal["tcp", "udp", "sctp"]


def family_of(address: str) -> str:
    return "IPv6" if ":" in address else "IPv4"


def _host_prefix(address: str) -> str:
    return f"{address}/{128 if ':' in address else 32}"


@attrs.frozen(order=True)
class Bind:
    """A server socket: ``protocol`` (tcp, udp, sctp) on ``address``:``port``."""

    protocol: str
    address: str
    port: int


@attrs.frozen
class PodPlan:
    """A pod namespace: ``role`` (``pod0``...), the pod's ``ns/name``, its addresses."""

    role: str
    name: str
    addresses: tuple[str, ...]
    client: bool = False

    def address(self, family: str) -> str | None:
        return next((a for a in self.addresses if family_of(a) == family), None)


@attrs.frozen
class ExternalClient:
    """An address of the external namespace and why it is there.

    ``purpose``: ``client`` (the default outside client of its family),
    ``allowed`` / ``denied`` (a source inside / outside the
    ``loadBalancerSourceRanges`` of ``service``), ``affinity`` (extra
    clients for session-affinity checks).
    """

    address: str
    purpose: Literal["client", "allowed", "denied", "affinity"]
    service: str = ""
    source_range: str = ""


def _nets(texts: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for text in texts:
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue
    return out


class _Addresses:
    """Picks addresses nobody in the cluster uses, outside the cluster's ranges."""

    def __init__(self, ranges: Iterable[str], used: Iterable[str]) -> None:
        self.ranges = _nets(ranges)
        self.used = {str(ipaddress.ip_address(a)) for a in used if _is_ip(a)}

    def free(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if str(address) in self.used or address.is_loopback or address.is_link_local:
            return False
        if address.is_unspecified or address.is_multicast:
            return False
        return not any(address.version == n.version and address in n for n in self.ranges)

    def take(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        self.used.add(str(address))
        return str(address)

    def pick(
        self,
        cidrs: Iterable[str],
        *,
        avoid: Iterable[str] = (),
        inside_ranges: bool = False,
        from_top: bool = False,
        limit: int = 4096,
    ) -> str | None:
        """The first free host of ``cidrs`` not in any of ``avoid`` (None when there is none).

        ``inside_ranges`` allows addresses inside the cluster ranges (the
        client pod lives in the pod CIDR).
        """
        avoid_nets = _nets(avoid)
        for net in _nets(cidrs):
            hosts: Iterator[Any]
            if net.num_addresses <= 2:
                hosts = iter(net)
            elif from_top:
                top = int(net.broadcast_address) - 1
                bottom = max(int(net.network_address) + 1, top - limit)
                hosts = (ipaddress.ip_address(i) for i in range(top, bottom, -1))
            else:
                first = int(net.network_address) + 1
                last = min(int(net.broadcast_address), first + limit)
                hosts = (ipaddress.ip_address(i) for i in range(first, last))
            for host in hosts:
                if host.version != net.version:
                    continue
                if any(host.version == n.version and host in n for n in avoid_nets):
                    continue
                if str(host) in self.used or host.is_loopback or host.is_link_local:
                    continue
                if host.is_unspecified or host.is_multicast:
                    continue
                if not inside_ranges and not self.free(host):
                    continue
                return self.take(host)
        return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _proto(protocol: str) -> str:
    return protocol.lower()


@attrs.frozen
class TopologyPlan:
    """Everything :class:`Topology` builds, decided up front (pure data).

    ``binds`` maps a namespace role (``node``, ``remote``, ``pod0``...) to its
    server sockets. ``protocols`` are those probed and served (SCTP only where
    the kernel has it).
    """

    node_name: str
    mode: str
    families: tuple[str, ...]
    node_addresses: tuple[str, ...]
    ipvs_addresses: tuple[str, ...]
    pods: tuple[PodPlan, ...]
    remote_addresses: tuple[str, ...]
    external: tuple[ExternalClient, ...]
    binds: Mapping[str, tuple[Bind, ...]]
    route_localnet: bool = False
    pod_interface_prefix: str = "veth"
    protocols: tuple[str, ...] = ("tcp", "udp")
    notes: tuple[str, ...] = ()

    # -- building the plan --------------------------------------------------------
    @classmethod
    def build(
        cls,
        cluster: Cluster,
        node_name: str,
        views: Sequence[NodeView],
        rulesets: Sequence[Ruleset],
        *,
        affinity_clients: int = 8,
        protocols: Sequence[str] | None = None,
    ) -> TopologyPlan:
        """The plan for ``node_name``: one view and one ruleset per IP family (same order)."""
        if not views or len(views) != len(rulesets):
            raise ValueError("give one NodeView and one Ruleset per IP family")
        mode = rulesets[0].mode
        families = tuple(v.ip_family for v in views)
        notes: list[str] = []
        if protocols is None:
            protocols = ("tcp", "udp", "sctp") if sctp_available() else ("tcp", "udp")
            if "sctp" not in protocols:
                notes.append(
                    "SCTP: this kernel has no SCTP; SCTP ports are neither served nor probed"
                )
        protos = tuple(protocols)

        node_addresses: list[str] = []
        ipvs_addresses: list[str] = []
        for rs in rulesets:
            for iface in rs.interfaces:
                if iface.name == "kube-ipvs0":
                    ipvs_addresses += iface.addresses
                elif iface.kind != "loopback":
                    node_addresses += iface.addresses
        for view in views:
            node_addresses += view.node.ips
        node_addresses = list(dict.fromkeys(node_addresses))
        ipvs_addresses = [a for a in dict.fromkeys(ipvs_addresses) if a not in node_addresses]
        loopbacks = ["127.0.0.1" if f == "IPv4" else "::1" for f in families]
        node_local = set(node_addresses) | set(ipvs_addresses) | set(loopbacks)

        # every address the cluster uses, and its ranges
        used: set[str] = set(node_local)
        ranges: list[str] = list(cluster.config.service_cidrs)
        for node in cluster.nodes:
            used.update(node.internal_ips)
            used.update(node.external_ips)
            ranges += list(node.pod_cidrs)
        for view in views:
            ranges += list(view.config.cluster_cidrs)
            for p in view:
                used.add(p.cluster_ip)
                used.update(p.external_ips)
                used.update(p.load_balancer_vips)
                used.update(ep.ip for ep in p.all_endpoints)
        for pod in cluster.pods:
            used.update(pod.pod_ips)
        pool = _Addresses(ranges, used)

        # pods of this node, then the client pod
        pods: list[PodPlan] = []
        pod_of: dict[str, str] = {}
        for pod in sorted(cluster.pods, key=lambda p: p.key):
            if pod.node_name != node_name or pod.host_network or pod.is_terminal:
                continue
            addresses = tuple(a for a in pod.pod_ips if _is_ip(a) and a not in node_local)
            addresses = tuple(a for a in addresses if a not in pod_of)
            if not addresses:
                continue
            role = f"pod{len(pods)}"
            pods.append(PodPlan(role, f"{pod.namespace}/{pod.name}", addresses))
            pod_of.update(dict.fromkeys(addresses, role))
        client_addresses = []
        for view in views:
            cidrs = list(view.node.pod_cidrs)
            own = view.config.cluster_cidr_for_family()
            if own:
                cidrs.append(own)
            cidrs.append(_FALLBACK_POD_CIDR[view.ip_family])
            picked = pool.pick(cidrs, inside_ranges=True, from_top=True)
            if picked:
                client_addresses.append(picked)
        client_role = f"pod{len(pods)}"
        pods.append(PodPlan(client_role, "kst-client", tuple(client_addresses), client=True))
        pod_of.update(dict.fromkeys(client_addresses, client_role))

        # where each endpoint lives
        wanted: set[Bind] = set()
        for view in views:
            for p in view:
                proto = _proto(p.protocol)
                if proto in protos:
                    wanted.update(Bind(proto, ep.ip, ep.port) for ep in p.all_endpoints)
        for rs in rulesets:
            for _table, _chain, _i, rule in rs.iter_rules():
                if isinstance(rule.verdict, DNAT) and rule.verdict.port is not None:
                    names: tuple[str, ...] = protos
                    for e in rule.exprs:
                        if isinstance(e, ProtoMatch) and not e.negate:
                            names = tuple(n for n in e.protocols if n in protos)
                    address = rule.verdict.address.strip("[]")
                    wanted.update(Bind(n, address, rule.verdict.port) for n in names)
            for vs in rs.virtual_servers:
                if vs.protocol in protos:
                    wanted.update(Bind(vs.protocol, r.address, r.port) for r in vs.real_servers)
        binds: dict[str, set[Bind]] = {}
        remote: list[str] = []
        for bind in wanted:
            if not _is_ip(bind.address):
                continue
            if bind.address in node_local:
                role = "node"
            elif bind.address in pod_of:
                role = pod_of[bind.address]
            else:
                role = "remote"
                remote.append(bind.address)
            binds.setdefault(role, set()).add(bind)
        # the node answers on its own addresses at every service port and nodePort
        for view in views:
            family = view.ip_family
            local = [a for a in (*node_addresses, *ipvs_addresses) if family_of(a) == family]
            local.append("127.0.0.1" if family == "IPv4" else "::1")
            for p in view:
                proto = _proto(p.protocol)
                if proto not in protos:
                    continue
                for port in {p.port, p.node_port} - {None}:
                    assert port is not None
                    binds.setdefault("node", set()).update(Bind(proto, a, port) for a in local)

        # external clients
        external: list[ExternalClient] = []
        all_source_ranges = [
            r for view in views for p in view for r in p.load_balancer_source_ranges
        ]
        for family in families:
            outside = pool.pick(_EXTERNAL_POOLS[family], avoid=all_source_ranges)
            if outside is None:
                outside = pool.pick(_EXTERNAL_POOLS[family])
            if outside is not None:
                external.append(ExternalClient(outside, "client"))
        seen_ranges: dict[tuple[str, str], str] = {}
        for view in views:
            for p in view:
                if not p.load_balancer_source_ranges or not p.load_balancer_vips:
                    continue
                name = f"{p.name_string}/{p.protocol.lower()}"
                for source_range in p.load_balancer_source_ranges:
                    key = ("allowed", source_range)
                    if key not in seen_ranges:
                        net = ipaddress.ip_network(source_range, strict=False)
                        picked = None if net.prefixlen == 0 else pool.pick([source_range])
                        if picked is None and net.prefixlen != 0:
                            notes.append(
                                f"{name}: no free address inside source range {source_range}"
                            )
                        seen_ranges[key] = picked or ""
                    if seen_ranges[key]:
                        external.append(
                            ExternalClient(seen_ranges[key], "allowed", name, source_range)
                        )
                fam = view.ip_family
                deny = pool.pick(_EXTERNAL_POOLS[fam], avoid=p.load_balancer_source_ranges)
                if deny is not None:
                    external.append(ExternalClient(deny, "denied", name))
        if any(p.client_ip_affinity for view in views for p in view):
            for family in families:
                for _ in range(affinity_clients):
                    extra = pool.pick(_EXTERNAL_POOLS[family], avoid=all_source_ranges)
                    if extra is not None:
                        external.append(ExternalClient(extra, "affinity"))

        config = views[0].config
        prefix = "veth"
        if config.detect_local_mode == "InterfaceNamePrefix" and config.interface_name_prefix:
            prefix = config.interface_name_prefix[:10]
        elif config.detect_local_mode == "BridgeInterface":
            notes.append(
                "detect-local BridgeInterface: pods are joined by veth pairs with host routes,"
                f" not through bridge {config.bridge_interface!r}; pod traffic is not seen as local"
            )
        if mode == "ipvs" and not ip_vs_available():
            notes.append(
                "IPVS: the ip_vs kernel module is not available here: the ipsets, the iptables"
                " rules and kube-ipvs0 are loaded and the ipvsadm text is checked, but no IPVS"
                " virtual server is programmed and no traffic is probed"
            )
        return cls(
            node_name=node_name,
            mode=mode,
            families=families,
            node_addresses=tuple(node_addresses),
            ipvs_addresses=tuple(ipvs_addresses),
            pods=tuple(pods),
            remote_addresses=tuple(sorted(set(remote), key=_sort_key)),
            external=tuple(dict.fromkeys(external)),
            binds={role: tuple(sorted(b)) for role, b in sorted(binds.items())},
            route_localnet=any(
                rs.mode == "iptables" and v.config.localhost_nodeports_enabled
                for v, rs in zip(views, rulesets, strict=True)
            ),
            pod_interface_prefix=prefix,
            protocols=protos,
            notes=tuple(notes),
        )

    # -- questions about the plan ---------------------------------------------------
    @property
    def client_pod(self) -> PodPlan:
        return next(p for p in self.pods if p.client)

    def pod(self, role: str) -> PodPlan:
        return next(p for p in self.pods if p.role == role)

    def pod_role(self, address: str) -> str | None:
        """The role of the pod namespace holding ``address`` (None: not a pod's)."""
        return next((p.role for p in self.pods if address in p.addresses), None)

    def external_client(self, family: str) -> str | None:
        return next(
            (
                c.address
                for c in self.external
                if c.purpose == "client" and family_of(c.address) == family
            ),
            None,
        )

    def node_local(self, address: str) -> bool:
        return (
            address in self.node_addresses
            or address in self.ipvs_addresses
            or ipaddress.ip_address(address).is_loopback
        )

    def host_of(self, protocol: str, address: str, port: int) -> str | None:
        """The role whose server answers ``protocol`` at ``address:port`` (None: nobody)."""
        bind = Bind(protocol, address, port)
        return next((role for role, binds in self.binds.items() if bind in binds), None)

    def routable(self, address: str) -> bool:
        """Whether the node has a route to ``address`` (it is somewhere in the topology)."""
        return (
            self.node_local(address)
            or self.pod_role(address) is not None
            or address in self.remote_addresses
            or any(c.address == address for c in self.external)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node_name,
            "mode": self.mode,
            "families": list(self.families),
            "node_addresses": list(self.node_addresses),
            "ipvs_addresses": list(self.ipvs_addresses),
            "pods": [
                {"role": p.role, "name": p.name, "addresses": list(p.addresses)} for p in self.pods
            ],
            "remote_addresses": list(self.remote_addresses),
            "external": [attrs.asdict(c) for c in self.external],
            "servers": {role: len(b) for role, b in self.binds.items()},
            "notes": list(self.notes),
        }


def _sort_key(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address)
    return ip.version, int(ip)


def _mac(index: int, side: int) -> str:
    """A locally administered MAC: ``02:6b:73`` ("ks"), then the link and the side."""
    return f"02:6b:73:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}:{side:02x}"


@attrs.frozen
class LoadStep:
    """One step of loading a ruleset: the tool, whether it worked, and what it said."""

    family: str
    tool: str
    ok: bool
    detail: str = ""
    skipped: bool = False


class Topology:
    """The plan built in private namespaces; a context manager that removes it all.

    ``ns(role)`` gives a namespace (``node``, ``external``, ``remote``,
    ``pod0``...); :meth:`load` programs rulesets into the node namespace;
    :meth:`prober` gives the probe helper of a client namespace.
    """

    def __init__(self, plan: TopologyPlan, group: NetnsGroup) -> None:
        self.plan = plan
        self.group = group
        self._probers: dict[str, Prober] = {}
        self.kube_ipvs0_kind: str | None = None

    # -- life cycle ------------------------------------------------------------------
    @classmethod
    def create(cls, plan: TopologyPlan) -> Topology:
        """Build ``plan``; on any failure everything made so far is removed again."""
        group = NetnsGroup()
        topo = cls(plan, group)
        try:
            topo._build()
        except BaseException:
            group.close()
            raise
        return topo

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for prober in self._probers.values():
            prober.close()
        self._probers.clear()
        self.group.close()

    def ns(self, role: str) -> Netns:
        return self.group[role]

    @property
    def names(self) -> dict[str, str]:
        """Role -> namespace name."""
        return {role: ns.name for role, ns in self.group.namespaces.items()}

    # -- building ---------------------------------------------------------------------
    def _build(self) -> None:
        plan = self.plan
        group = self.group
        roles = ["node", "external", *(p.role for p in plan.pods), "remote"]
        for role in roles:
            ns = group.add(role)
            settings: dict[str, str | int] = {
                "net.ipv6.conf.all.accept_dad": 0,
                "net.ipv6.conf.default.accept_dad": 0,
            }
            if role == "node":
                settings |= {
                    "net.ipv4.ip_forward": 1,
                    "net.ipv6.conf.all.forwarding": 1,
                    "net.ipv4.conf.all.rp_filter": 0,
                    "net.ipv4.conf.default.rp_filter": 0,
                }
                if plan.route_localnet:
                    settings["net.ipv4.conf.all.route_localnet"] = 1
            if role in ("node", "remote"):
                # answer every probe: no ICMP rate limit (rejects, unreachables)
                settings |= {
                    "net.ipv4.icmp_ratelimit": 0,
                    "net.ipv4.icmp_msgs_per_sec": 1000000,
                    "net.ipv4.icmp_msgs_burst": 1000000,
                    "net.ipv6.icmp.ratelimit": 0,
                }
            if role == "remote":
                settings |= {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1}
            ns.sysctl(settings)

        node = group["node"]
        node_cmds: list[str] = ["link set lo up"]
        peers: list[tuple[str, str, int, tuple[str, ...]]] = []  # role, node-side dev, index, addrs
        # one address may serve several purposes (the same source range in two Services)
        outside = tuple(dict.fromkeys(c.address for c in plan.external))
        peers.append(("external", "eth0", 0, outside))
        for i, pod in enumerate(plan.pods):
            peers.append((pod.role, f"{plan.pod_interface_prefix}{i}", i + 1, pod.addresses))
        remote_index = len(plan.pods) + 1
        peers.append(("remote", "rmt0", remote_index, plan.remote_addresses))
        for role, dev, index, _addrs in peers:
            node_cmds.append(
                f"link add {dev} address {_mac(index, 1)} type veth peer name eth0"
                f" address {_mac(index, 2)} netns {group[role].name}"
            )
        for address in plan.node_addresses:
            nodad = " nodad" if ":" in address else ""
            node_cmds.append(f"addr add {_host_prefix(address)} dev eth0{nodad}")
        for _role, dev, index, addrs in peers:
            node_cmds.append(f"link set {dev} up")
            for address in addrs:
                node_cmds.append(f"route replace {_host_prefix(address)} dev {dev}")
                node_cmds.append(
                    f"neigh replace {address} lladdr {_mac(index, 2)} dev {dev} nud permanent"
                )
        # the rest of the network: the node's default routes lead to remote
        node_cmds += [
            f"neigh replace {REMOTE_GATEWAY_V4} lladdr {_mac(remote_index, 2)} dev rmt0"
            " nud permanent",
            f"route replace default via {REMOTE_GATEWAY_V4} dev rmt0 onlink",
            f"neigh replace {REMOTE_GATEWAY_V6} lladdr {_mac(remote_index, 2)} dev rmt0"
            " nud permanent",
            f"route replace default via {REMOTE_GATEWAY_V6} dev rmt0",
        ]
        node.ip_batch(node_cmds)
        if plan.ipvs_addresses or plan.mode == "ipvs":
            kind = "dummy" if dummy_supported(node) else "bridge"
            self.kube_ipvs0_kind = kind
            cmds = [f"link add kube-ipvs0 type {kind}", "link set kube-ipvs0 up"]
            cmds += [
                f"addr add {_host_prefix(a)} dev kube-ipvs0" + (" nodad" if ":" in a else "")
                for a in plan.ipvs_addresses
            ]
            node.ip_batch(cmds)

        for role, _dev, index, addrs in peers:
            cmds = ["link set lo up", "link set eth0 up"]
            cmds += [
                f"addr add {_host_prefix(a)} dev eth0" + (" nodad" if ":" in a else "")
                for a in addrs
            ]
            if role == "remote":
                group[role].ip_batch(cmds + self._remote_routes(index))
                continue
            if any(":" not in a for a in addrs):
                cmds += [
                    f"route add {GATEWAY_V4} dev eth0 scope link",
                    f"neigh replace {GATEWAY_V4} lladdr {_mac(index, 1)} dev eth0 nud permanent",
                    f"route add default via {GATEWAY_V4} dev eth0",
                ]
            if any(":" in a for a in addrs):
                cmds += [
                    f"neigh replace {GATEWAY_V6} lladdr {_mac(index, 1)} dev eth0 nud permanent",
                    f"route add default via {GATEWAY_V6} dev eth0",
                ]
            group[role].ip_batch(cmds)
        self._start_servers()

    def _remote_routes(self, index: int) -> list[str]:
        """Remote's routes: back to the node for every address of the topology
        (replies, masqueraded sources), ``unreachable`` for everything else."""
        plan = self.plan
        back = [
            *plan.node_addresses,
            *(a for p in plan.pods for a in p.addresses),
            *(c.address for c in plan.external),
        ]
        cmds = [
            f"addr add {REMOTE_GATEWAY_V4}/32 dev eth0 scope link",
            f"addr add {REMOTE_GATEWAY_V6}/64 dev eth0 nodad",
            f"route add {GATEWAY_V4} dev eth0 scope link",
            f"neigh replace {GATEWAY_V4} lladdr {_mac(index, 1)} dev eth0 nud permanent",
            f"neigh replace {GATEWAY_V6} lladdr {_mac(index, 1)} dev eth0 nud permanent",
            "route add unreachable 0.0.0.0/0",
            "route add unreachable ::/0",
        ]
        for address in dict.fromkeys(back):
            gateway = GATEWAY_V6 if ":" in address else GATEWAY_V4
            cmds.append(f"route replace {_host_prefix(address)} via {gateway} dev eth0")
        return cmds

    def _start_servers(self) -> None:
        started: list[tuple[str, subprocess.Popen[str]]] = []
        for role, binds in self.plan.binds.items():
            if not binds:
                continue
            proc = self.group[role].popen(sys.executable, "-I", str(_HERE / "_server.py"))
            assert proc.stdin is not None
            proc.stdin.write(
                json.dumps({"binds": [[b.protocol, b.address, b.port] for b in binds]}) + "\n"
            )
            proc.stdin.flush()
            started.append((role, proc))
        for role, proc in started:
            line = read_line(proc, _READY_TIMEOUT)
            if not line.startswith("READY"):
                err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
                raise KernelError(f"the servers of {role} did not start: {line.strip()} {err}")

    # -- rules ------------------------------------------------------------------------
    def check(self, ruleset: Ruleset) -> list[LoadStep]:
        """Acceptance only: ``nft -c -f`` / ``iptables-restore --test`` (nothing changes)."""
        node = self.ns("node")
        steps: list[LoadStep] = []
        if ruleset.mode == "nftables":
            done = node.run(
                "nft", "-c", "-f", "-", stdin=nft_text.render_script(ruleset), check=False
            )
            steps.append(_step(ruleset.family, "nft -c -f", done))
        else:
            tool = "iptables-restore" if ruleset.family == "IPv4" else "ip6tables-restore"
            text = iptables_text.render_restore(ruleset)
            if ruleset.mode == "ipvs":
                # --test resolves ipset names: the sets must exist (restored, then removed).
                sets = ipvs_text.render_ipset_save(ruleset)
                made = node.run("ipset", "restore", "-exist", stdin=sets, check=False)
                steps.append(_step(ruleset.family, "ipset restore", made))
            done = node.run(tool, "--test", stdin=text, check=False)
            steps.append(_step(ruleset.family, f"{tool} --test", done))
            if ruleset.mode == "ipvs":
                for s in ruleset.ipsets:
                    node.run("ipset", "destroy", s.name, check=False)
        return steps

    def load(self, ruleset: Ruleset) -> list[LoadStep]:
        """Program ``ruleset`` into the node namespace as kube-proxy would.

        nftables: ``nft -f``; iptables: ``iptables-restore`` (``ip6tables-``);
        IPVS: ``ipset restore``, the iptables rules, and ``ipvsadm-restore``
        only where ip_vs is available (otherwise the ipvsadm text is parsed back
        and the step says it was skipped).
        """
        node = self.ns("node")
        family = ruleset.family
        steps: list[LoadStep] = []
        if ruleset.mode == "nftables":
            done = node.run("nft", "-f", "-", stdin=nft_text.render_script(ruleset), check=False)
            steps.append(_step(family, "nft -f", done))
            return steps
        if ruleset.mode == "ipvs":
            done = node.run(
                "ipset",
                "restore",
                "-exist",
                stdin=ipvs_text.render_ipset_save(ruleset),
                check=False,
            )
            steps.append(_step(family, "ipset restore", done))
        tool = "iptables-restore" if family == "IPv4" else "ip6tables-restore"
        text = iptables_text.render_restore(ruleset)
        if ruleset.mode == "ipvs" and not ip_vs_available():
            # ``-m ipvs`` needs the ip_vs module to be committed; --test still
            # checks every rule, set name and target
            done = node.run(tool, "--test", stdin=text, check=False)
            step = _step(family, f"{tool} --test", done)
            if step.ok:
                step = attrs.evolve(
                    step, detail="checked, not committed: `-m ipvs` needs the ip_vs module"
                )
            steps.append(step)
        else:
            done = node.run(tool, "--noflush", stdin=text, check=False)
            steps.append(_step(family, tool, done))
        if ruleset.mode == "ipvs":
            text = ipvs_text.render_ipvsadm_save(ruleset)
            try:
                parsed = ipvs_text.parse_ipvsadm_save(text)
                same = _same_virtual_servers(parsed, ruleset)
                steps.append(
                    LoadStep(
                        family,
                        "ipvsadm-save text",
                        same,
                        "parses back to the same virtual servers"
                        if same
                        else "parses back to different virtual servers",
                    )
                )
            except ValueError as exc:
                steps.append(LoadStep(family, "ipvsadm-save text", False, str(exc)))
            if ip_vs_available():
                done = node.run("ipvsadm-restore", stdin=text, check=False)
                steps.append(_step(family, "ipvsadm-restore", done))
            else:
                steps.append(
                    LoadStep(
                        family,
                        "ipvsadm-restore",
                        True,
                        "not run: the ip_vs kernel module is not available",
                        skipped=True,
                    )
                )
        return steps

    def reset_rules(self) -> None:
        """Remove every rule and ipset from the node namespace (for loading another mode)."""
        node = self.ns("node")
        node.run("nft", "flush", "ruleset")
        node.run("ipset", "destroy", check=False)

    def nft_list(self) -> str:
        """``nft list ruleset`` of the node namespace."""
        return self.ns("node").run("nft", "list", "ruleset").stdout

    # -- probing ----------------------------------------------------------------------
    def prober(self, role: str) -> Prober:
        """The probe helper running in namespace ``role`` (started on first use)."""
        from kservice.kernel.probe import Prober

        if role not in self._probers:
            self._probers[role] = Prober.start(self.ns(role))
        return self._probers[role]


def _step(family: str, tool: str, done: subprocess.CompletedProcess[str]) -> LoadStep:
    detail = (done.stderr or done.stdout).strip()
    return LoadStep(family, tool, done.returncode == 0, detail[:4000])


def _same_virtual_servers(parsed: Sequence[Any], ruleset: Ruleset) -> bool:
    def key(vs: Any) -> tuple[Any, ...]:
        return (
            vs.address,
            vs.protocol,
            vs.port,
            vs.scheduler,
            vs.persistence,
            tuple(sorted((r.address, r.port, r.weight, r.forward) for r in vs.real_servers)),
        )

    return sorted(map(key, parsed)) == sorted(map(key, ruleset.virtual_servers))


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of ``proc``'s stdout within ``timeout`` seconds (``""`` if none)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return ""
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            return proc.stdout.readline()
