"""The ``kservice`` command.

One function per subcommand (``cmd_<name>(args) -> exit status``), each
registered by an ``_add_<name>(subparsers)`` function listed in
:data:`_COMMANDS`. Subcommands that read manifests share
:func:`_add_manifest_arguments` (``PATH...``, ``--skip-unknown``) and
:func:`read_manifests`, which prints every problem kubectl style and returns
``None`` when there were any.

Exit status: 0 success, 1 invalid input (every problem printed on stderr,
never a traceback), 2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TextIO, TypeAlias, cast

from kservice import __version__
from kservice.api import manifest
from kservice.api.pod import Pod
from kservice.control.cluster import ApiObject, ApplyError, Cluster, ClusterConfig
from kservice.control.dns import format_resolution
from kservice.engine import Engine, Packet
from kservice.engine.dumps import ruleset_from_dumps
from kservice.errors import KServiceError, ManifestError, NotInRangeError, ValidationError
from kservice.netfilter import iptables_text, ipvs_text, nft_json, nft_text
from kservice.netfilter.ruleset import Ruleset
from kservice.proxy.config import ProxyConfig
from kservice.proxy.iptables import compile as iptables_compile
from kservice.proxy.ipvs import compile as ipvs_compile
from kservice.proxy.nftables import compile as nftables_compile
from kservice.proxy.nftables import delta as nftables_delta
from kservice.proxy.nodeview import NodeView

__all__ = ["build_cluster", "build_parser", "error_lines", "main", "read_manifests"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
#: ``kservice verify`` cannot reach the kernel here (not root, no namespaces, a tool missing).
EXIT_UNAVAILABLE = 3

_SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


# -- output helpers ------------------------------------------------------------------


def _write(stream: TextIO, line: str) -> None:
    """Print one line, escaping what the terminal's encoding cannot show."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    safe = line.encode(encoding, "backslashreplace").decode(encoding, "replace")
    print(safe, file=stream)


def _out(line: str) -> None:
    _write(sys.stdout, line)


def _err(line: str) -> None:
    _write(sys.stderr, line)


def error_lines(error: BaseException) -> list[str]:
    """The lines to print for an error, kubectl style, one per field error.

    ``examples/bad.yaml, document 2: The Service "web" is invalid:
    spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive``
    """
    if isinstance(error, manifest.LoadError | ApplyError):
        return [line for e in error.errors for line in error_lines(e)]
    if isinstance(error, ValidationError):
        return error.lines()
    return [str(error)]


def _count(counter: Counter[str], order: Sequence[str]) -> str:
    """``"2 Service, 1 Pod"``: kinds in ``order`` first, then the rest sorted."""
    ranked = [k for k in order if k in counter] + sorted(k for k in counter if k not in order)
    return ", ".join(f"{counter[k]} {k}" for k in ranked)


# -- shared by the subcommands that read manifests ---------------------------------------


def _add_manifest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="manifest files or folders (read recursively: *.yaml, *.yml, *.json); '-' for stdin",
    )
    parser.add_argument(
        "--skip-unknown",
        action="store_true",
        help="skip documents of kinds kservice does not model (Deployment, Namespace, ...)",
    )


def _read_stdin() -> str:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # replaced by a text stream (tests, embedding)
        return sys.stdin.read()
    try:
        return bytes(buffer.read()).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError("not UTF-8 text", source="<stdin>") from exc


def read_manifests(
    paths: Sequence[str], *, skip_unknown: bool = False
) -> manifest.LoadResult | None:
    """Read ``paths`` (``-`` is stdin); on problems print them all and return None."""
    try:
        if "-" in paths:
            if len(paths) > 1:
                raise KServiceError("'-' (stdin) cannot be combined with other paths")
            return manifest.read_text(_read_stdin(), source="<stdin>", skip_unknown=skip_unknown)
        return manifest.read(list(paths), skip_unknown=skip_unknown)
    except KServiceError as exc:
        for line in error_lines(exc):
            _err(line)
        errors = exc.errors if isinstance(exc, manifest.LoadError) else []
        if any(isinstance(e, manifest.UnknownKindError) for e in errors):
            _err("hint: --skip-unknown skips documents of kinds kservice does not model")
        return None


# -- validate ----------------------------------------------------------------------------


def _add_validate(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check manifests as the API server would",
        description=(
            "Read manifests, apply the API server's defaulting and validation, and report"
            " every problem, one line per field error. Prints a summary when all is valid."
        ),
    )
    _add_manifest_arguments(parser)
    parser.set_defaults(handler=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    """``kservice validate PATH...``: exit 0 with a summary, or 1 with every error."""
    result = read_manifests(args.paths, skip_unknown=args.skip_unknown)
    if result is None:
        return EXIT_INVALID
    order = [cls.KIND for cls in manifest.kinds().values()]
    n = len(result.objects)
    summary = f"{n} object{'' if n == 1 else 's'} valid"
    if n:
        summary += ": " + _count(Counter(o.KIND for o in result.objects), order)
    if result.skipped:
        skipped = _count(Counter(s.kind for s in result.skipped), ())
        summary += f" ({len(result.skipped)} skipped: {skipped})"
    _out(summary)
    return EXIT_OK


# -- shared by the subcommands that build a cluster ------------------------------------


def _add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service-cidr",
        action="append",
        metavar="CIDR",
        help="service CIDR (--service-cluster-ip-range); give twice for dual-stack"
        " (default 10.96.0.0/12)",
    )
    parser.add_argument(
        "--node-port-range",
        default="30000-32767",
        metavar="RANGE",
        help="--service-node-port-range (default 30000-32767)",
    )
    parser.add_argument(
        "--domain", default="cluster.local", help="cluster DNS domain (default cluster.local)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the allocators' random choices (default 0: the same IPs every run)",
    )


def build_cluster(args: argparse.Namespace) -> Cluster | None:
    """Read the manifests and apply them to a new cluster; None (after printing) on errors."""
    result = read_manifests(args.paths, skip_unknown=args.skip_unknown)
    if result is None:
        return None
    config = ClusterConfig(
        service_cidrs=tuple(args.service_cidr or ("10.96.0.0/12",)),
        node_port_range=args.node_port_range,
        domain=args.domain,
        seed=args.seed,
    )
    try:
        objects = cast("list[ApiObject]", list(result.objects))
        return Cluster.from_objects(objects, config)
    except KServiceError as exc:
        for line in error_lines(exc):
            _err(line)
        return None


def _find_pod(cluster: Cluster, namespace: str, name: str) -> Pod:
    obj = cluster.get("Pod", namespace, name)
    assert isinstance(obj, Pod)
    return obj


# -- alloc ---------------------------------------------------------------------------------


def _add_alloc(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "alloc",
        help="show allocated ClusterIPs and nodePorts, and band occupancy",
        description=(
            "Apply the manifests to a cluster and report every allocated ClusterIP,"
            " nodePort and healthCheckNodePort, the allocators' static/dynamic band"
            " occupancy, and whether given IPs or nodePorts are free."
        ),
    )
    _add_manifest_arguments(parser)
    _add_cluster_arguments(parser)
    parser.add_argument(
        "--ip", action="append", default=[], metavar="IP", help="is this ClusterIP free?"
    )
    parser.add_argument(
        "--node-port",
        action="append",
        default=[],
        type=int,
        metavar="PORT",
        help="is this nodePort free?",
    )
    parser.set_defaults(handler=cmd_alloc)


def _owners(cluster: Cluster) -> tuple[dict[str, str], dict[int, str]]:
    ips: dict[str, str] = {}
    ports: dict[int, str] = {}
    for svc in cluster.services:
        who = f"{svc.namespace}/{svc.name}"
        for ip in svc.cluster_ips:
            if ip != "None":
                ips[ip] = who
        for p in svc.ports:
            if p.node_port is not None:
                ports[p.node_port] = f"{who} ({p.name or p.port}/{p.protocol})"
        if svc.health_check_node_port is not None:
            ports[svc.health_check_node_port] = f"{who} (healthCheckNodePort)"
    return ips, ports


def cmd_alloc(args: argparse.Namespace) -> int:
    """``kservice alloc PATH...``: allocations, band occupancy, and free/used queries."""
    cluster = build_cluster(args)
    if cluster is None:
        return EXIT_INVALID
    ip_owner, port_owner = _owners(cluster)
    _out("SERVICE                          TYPE          CLUSTER-IPS                NODE-PORTS")
    for svc in cluster.services:
        ips = ",".join(svc.cluster_ips) or "-"
        nps = [str(p.node_port) for p in svc.ports if p.node_port is not None]
        if svc.health_check_node_port is not None:
            nps.append(f"hc:{svc.health_check_node_port}")
        _out(
            f"{svc.namespace + '/' + svc.name:<32} {svc.type:<13} {ips:<26} {','.join(nps) or '-'}"
        )
    _out("")
    for alloc in cluster.ip_allocators:
        usage = alloc.band_usage()
        _out(
            f"ClusterIP {alloc.cidr}: {alloc.used}/{alloc.size} used;"
            f" static band {usage.static.used}/{usage.static.total},"
            f" dynamic band {usage.dynamic.used}/{usage.dynamic.total}"
        )
    npa = cluster.node_port_allocator
    usage = npa.band_usage()
    _out(
        f"NodePort {npa.port_range}: {npa.used}/{npa.size} used;"
        f" static band {usage.static.used}/{usage.static.total},"
        f" dynamic band {usage.dynamic.used}/{usage.dynamic.total}"
    )
    status = EXIT_OK
    for ip in args.ip:
        line = _ip_status(cluster, ip, ip_owner)
        status = status if line[1] else EXIT_INVALID
        _out(line[0])
    for port in args.node_port:
        if not npa.contains(port):
            _out(f"nodePort {port}: not in the range {npa.port_range}")
            status = EXIT_INVALID
            continue
        band = npa.band_of(port)
        owner = port_owner.get(port)
        state = f"allocated to {owner}" if owner else "free"
        _out(f"nodePort {port}: {state} ({band} band)")
    return status


def _ip_status(cluster: Cluster, ip: str, owners: dict[str, str]) -> tuple[str, bool]:
    for alloc in cluster.ip_allocators:
        try:
            if not alloc.contains(ip):
                continue
            band = alloc.band_of(ip)
        except NotInRangeError:
            continue
        owner = owners.get(ip) if alloc.has(ip) else None
        state = f"allocated to {owner}" if owner else "free"
        return f"{ip}: {state} ({band} band of {alloc.cidr})", True
    cidrs = ", ".join(a.cidr for a in cluster.ip_allocators)
    return f"{ip}: not in the service range ({cidrs})", False


# -- dns -----------------------------------------------------------------------------------


def _add_dns(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "dns",
        help="resolve a name as a pod would, through cluster DNS",
        description=(
            "Show the queries a pod's resolver sends for NAME (search path and ndots),"
            " which one answers, what CoreDNS answers, and how many queries were wasted."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the name to look up")
    parser.add_argument("--namespace", "-n", default="default", help="the pod's namespace")
    parser.add_argument(
        "--pod", metavar="POD", help="resolve from this pod (its dnsPolicy/dnsConfig)"
    )
    parser.add_argument(
        "--type", dest="qtype", default="A", help="query type: A, AAAA, SRV, CNAME, PTR, TXT"
    )
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="NAME=IP[,IP]",
        help="answers of the upstream resolver for names outside the cluster",
    )
    _add_manifest_arguments(parser)
    _add_cluster_arguments(parser)
    parser.set_defaults(handler=cmd_dns)


def cmd_dns(args: argparse.Namespace) -> int:
    """``kservice dns NAME --namespace NS PATH...``."""
    upstream: dict[str, list[str]] = {}
    for item in args.upstream:
        name, sep, values = item.partition("=")
        if not sep or not name or not values:
            _err(f"--upstream {item!r}: expected NAME=IP[,IP...] (or NAME=CNAME-TARGET)")
            return EXIT_USAGE
        upstream.setdefault(name, []).extend(v for v in values.split(",") if v)
    cluster = build_cluster(args)
    if cluster is None:
        return EXIT_INVALID
    pod = _find_pod(cluster, args.namespace, args.pod) if args.pod else None
    res = cluster.dns(upstream=upstream).resolve(
        args.name, pod=pod, namespace=args.namespace, qtype=args.qtype
    )
    _out(format_resolution(res))
    return EXIT_OK if res.resolved else EXIT_INVALID


# -- env -----------------------------------------------------------------------------------


def _add_env(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "env",
        help="the service environment variables a pod gets",
        description=(
            "Print the {SVC}_SERVICE_HOST/_PORT and Docker-link variables the kubelet"
            " injects into POD (Services created before the pod, in its namespace,"
            " when enableServiceLinks is true, plus the master service)."
        ),
    )
    parser.add_argument("pod", metavar="POD", help="the pod's name")
    parser.add_argument("--namespace", "-n", default="default", help="the pod's namespace")
    _add_manifest_arguments(parser)
    _add_cluster_arguments(parser)
    parser.set_defaults(handler=cmd_env)


def cmd_env(args: argparse.Namespace) -> int:
    """``kservice env POD --namespace NS PATH...``: ``NAME=value`` lines."""
    cluster = build_cluster(args)
    if cluster is None:
        return EXIT_INVALID
    pod = _find_pod(cluster, args.namespace, args.pod)
    for key, value in cluster.env_for(pod).items():
        _out(f"{key}={value}")
    return EXIT_OK


# -- compile and diff ------------------------------------------------------------------

#: Output formats per mode: the first is the default (what kube-proxy itself writes).
_FORMATS = {
    "iptables": ("restore", "save"),
    "ipvs": ("ipvsadm", "ipset", "iptables"),
    "nftables": ("script", "list", "json"),
}


def _add_proxy_arguments(parser: argparse.ArgumentParser, *, node_required: bool = True) -> None:
    parser.add_argument(
        "--mode", choices=sorted(_FORMATS), default="iptables", help="kube-proxy mode"
    )
    parser.add_argument(
        "--node", required=node_required, metavar="NAME", help="the node to compile for"
    )
    parser.add_argument(
        "--node-ip",
        action="append",
        default=[],
        metavar="IP",
        help="the node's IP (default: the Node object's addresses); repeatable",
    )
    parser.add_argument(
        "--cluster-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="pod CIDR for kube-proxy's local-traffic detection (--cluster-cidr)",
    )
    parser.add_argument(
        "--ip-family", choices=("IPv4", "IPv6"), default="IPv4", help="the proxier's family"
    )
    parser.add_argument("--masquerade-all", action="store_true", help="kube-proxy --masquerade-all")


def _proxy_config(args: argparse.Namespace) -> ProxyConfig:
    return ProxyConfig(
        mode=args.mode,
        ip_family=args.ip_family,
        cluster_cidrs=tuple(args.cluster_cidr),
        masquerade_all=args.masquerade_all,
    )


def _compile_ruleset(cluster: Cluster, args: argparse.Namespace) -> Ruleset:
    view = NodeView.from_cluster(
        cluster, args.node, _proxy_config(args), node_ips=args.node_ip or None
    )
    if args.mode == "nftables":
        return nftables_compile(view, service_cidrs=cluster.config.service_cidrs)
    if args.mode == "ipvs":
        return ipvs_compile(view)
    return iptables_compile(view)


def _render(ruleset: Ruleset, mode: str, fmt: str) -> str:
    if mode == "nftables":
        if fmt == "list":
            return nft_text.render_list(ruleset)
        if fmt == "json":
            return nft_json.render_json(ruleset)
        return nft_text.render_script(ruleset)
    if fmt == "ipvsadm":
        return ipvs_text.render_ipvsadm_save(ruleset)
    if fmt == "ipset":
        return ipvs_text.render_ipset_save(ruleset)
    if fmt == "save":
        return iptables_text.render_save(ruleset)
    return iptables_text.render_restore(ruleset)


def _write_output(text: str, path: str | None) -> None:
    if path is None or path == "-":
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise KServiceError(f"{path}: cannot write: {exc.strerror}") from exc


def _add_compile(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "compile",
        help="the rules kube-proxy programs on a node",
        description=(
            "Apply the manifests to a cluster, take NODE's view as kube-proxy sees it,"
            " and print the ruleset kube-proxy would program there, in the real tools'"
            " text: iptables-restore (or iptables-save) for iptables mode; the nft -f"
            " script (or `nft list ruleset`, or `nft -j` JSON) for nftables mode;"
            " ipvsadm-save, ipset save or iptables-restore text for IPVS mode."
        ),
    )
    _add_manifest_arguments(parser)
    _add_cluster_arguments(parser)
    _add_proxy_arguments(parser)
    parser.add_argument(
        "--format",
        metavar="FORMAT",
        help="iptables: restore (default) or save; nftables: script (default), list or json;"
        " ipvs: ipvsadm (default, ipvsadm-save -n), ipset (ipset save) or iptables",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    parser.set_defaults(handler=cmd_compile)


def _check_format(args: argparse.Namespace) -> str | None:
    allowed = _FORMATS[args.mode]
    fmt = args.format or allowed[0]
    if fmt not in allowed:
        _err(f"--format {fmt!r} is not available in {args.mode} mode: choose {', '.join(allowed)}")
        return None
    return fmt


def _check_node(cluster: Cluster, args: argparse.Namespace) -> bool:
    names = [n.metadata.name for n in cluster.nodes]
    if args.node in names or args.node_ip:
        return True
    known = ", ".join(names) if names else "none"
    _err(f'Node "{args.node}" not found (nodes in the manifests: {known}); give --node-ip')
    return False


def cmd_compile(args: argparse.Namespace) -> int:
    """``kservice compile PATH... --mode M --node N``."""
    fmt = _check_format(args)
    if fmt is None:
        return EXIT_USAGE
    cluster = build_cluster(args)
    if cluster is None or not _check_node(cluster, args):
        return EXIT_INVALID
    _write_output(_render(_compile_ruleset(cluster, args), args.mode, fmt), args.output)
    return EXIT_OK


def _add_diff(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="the nftables transaction between two cluster states",
        description=(
            "Apply OLD's manifests to a cluster, then move it to NEW's (updating,"
            " creating and deleting objects as the API server would, so unchanged"
            " Services keep their ClusterIPs), and print the nft transaction that turns"
            " NODE's kube-proxy table from the first state into the second, touching"
            " only what changed (kube-proxy's partial sync)."
        ),
    )
    parser.add_argument("old", metavar="OLD_PATH", help="manifests of the first state")
    parser.add_argument("new", metavar="NEW_PATH", help="manifests of the second state")
    parser.add_argument(
        "--skip-unknown",
        action="store_true",
        help="skip documents of kinds kservice does not model",
    )
    _add_cluster_arguments(parser)
    _add_proxy_arguments(parser)
    parser.set_defaults(handler=cmd_diff, mode="nftables")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def cmd_diff(args: argparse.Namespace) -> int:
    """``kservice diff OLD NEW --mode nftables --node N``."""
    if args.mode != "nftables":
        _err("kservice diff: only nftables mode has partial syncs (use --mode nftables)")
        return EXIT_USAGE
    args.paths = [args.old]
    old = build_cluster(args)
    if old is None:
        return EXIT_INVALID
    new = _next_state(old, args.new, args)
    if new is None:
        return EXIT_INVALID
    if not (_check_node(old, args) and _check_node(new, args)):
        return EXIT_INVALID
    txn = nftables_delta(_compile_ruleset(old, args), _compile_ruleset(new, args))
    _write_output(txn.text, args.output)
    return EXIT_OK


def _next_state(old: Cluster, path: str, args: argparse.Namespace) -> Cluster | None:
    """The cluster after the manifests at ``path`` replace ``old``'s objects, as
    ``kubectl apply --prune`` would leave it: allocations kept where objects stay,
    objects not in ``path`` deleted (derived EndpointSlices follow their Service)."""
    new_objects = read_manifests([path], skip_unknown=args.skip_unknown)
    if new_objects is None:
        return None
    new = Cluster.from_state(old.to_state())
    wanted = {(o.KIND, o.metadata.namespace, o.metadata.name) for o in new_objects.objects}
    try:
        for obj in list(new):
            key = (obj.KIND, obj.metadata.namespace, obj.metadata.name)
            derived = (
                obj.KIND == "EndpointSlice"
                and obj.metadata.labels.get("endpointslice.kubernetes.io/managed-by")
                == "endpointslice-controller.k8s.io"
            )
            if key not in wanted and not derived:
                new.delete(obj.KIND, obj.metadata.namespace, obj.metadata.name)
        new.apply_all(cast("list[ApiObject]", list(new_objects.objects)))
    except KServiceError as exc:
        for line in error_lines(exc):
            _err(line)
        return None
    return new


# -- trace ---------------------------------------------------------------------------------


def _add_trace(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "trace",
        help="where a packet goes on a node, with what probability, and why",
        description=(
            "Compile NODE's ruleset from the manifests (or read a real node's dumps with"
            " --rules) and send one packet through it as the kernel would: every rule it"
            " meets, the verdict (DNAT to which endpoint, reject, drop, masquerade), and"
            " the exact probability of each endpoint, computed from the rules. --count N"
            " sends N new connections and prints how many went where."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="manifest files or folders ('-' for stdin); not needed with --rules",
    )
    parser.add_argument(
        "--skip-unknown", action="store_true", help="skip documents of kinds not modelled"
    )
    parser.add_argument(
        "--rules",
        action="append",
        default=[],
        metavar="FILE",
        help="trace a real node's dump instead (iptables-save, nft list ruleset, nft -f"
        " script, ipvsadm-save -n, ipset save); repeatable (IPVS mode needs its three);"
        " give the node's addresses with --node-ip",
    )
    _add_cluster_arguments(parser)
    _add_proxy_arguments(parser, node_required=False)
    parser.add_argument("--dst", required=True, metavar="IP", help="destination address")
    parser.add_argument("--dport", required=True, type=int, metavar="PORT", help="destination port")
    parser.add_argument(
        "--proto", default="tcp", choices=("tcp", "udp", "sctp"), help="protocol (default tcp)"
    )
    parser.add_argument("--src", metavar="IP", help="source address")
    parser.add_argument(
        "--from",
        dest="origin",
        default=None,
        metavar="ORIGIN",
        help="pod:NAMESPACE/NAME (a pod on this node: its IP is the source), node (the node"
        " itself) or external (arriving on the node's interface; default source"
        " 203.0.113.1); default: pod, or node without --src",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--count", type=int, default=0, metavar="N", help="also send N new connections"
    )
    parser.set_defaults(handler=cmd_trace)


def _trace_ruleset(args: argparse.Namespace) -> tuple[Ruleset, Cluster | None] | None:
    if args.rules:
        if args.paths:
            _err("kservice trace: give manifests or --rules, not both")
            return None
        dumps = []
        for path in args.rules:
            try:
                with open(path, encoding="utf-8") as fh:
                    dumps.append((path, fh.read()))
            except OSError as exc:
                _err(f"{path}: cannot read: {exc.strerror}")
                return None
        ruleset = ruleset_from_dumps(dumps, family=args.ip_family, node_ips=args.node_ip)
        return ruleset, None
    if not args.paths:
        _err("kservice trace: give manifest PATHs, or --rules FILE")
        return None
    if args.node is None:
        _err("kservice trace: --node is required with manifests")
        return None
    cluster = build_cluster(args)
    if cluster is None or not _check_node(cluster, args):
        return None
    return _compile_ruleset(cluster, args), cluster


def _trace_packet(args: argparse.Namespace, cluster: Cluster | None) -> Packet | None:
    origin = args.origin or ("pod" if args.src else "node")
    src = args.src
    if origin.startswith("pod:"):
        ref = origin[4:]
        namespace, _, name = ref.rpartition("/")
        if cluster is None or not name:
            _err("--from pod:NAMESPACE/NAME needs manifests that hold the pod")
            return None
        try:
            pod = _find_pod(cluster, namespace or "default", name)
        except KServiceError:
            _err(f'Pod "{namespace or "default"}/{name}" not found in the manifests')
            return None
        family_ips = [ip for ip in pod.pod_ips if (":" in ip) == (args.ip_family == "IPv6")]
        if not family_ips:
            _err(f'Pod "{namespace}/{name}" has no {args.ip_family} address')
            return None
        src, origin = src or family_ips[0], "pod"
    elif origin == "external" and src is None:
        src = "203.0.113.1" if args.ip_family == "IPv4" else "2001:db8::1"
    elif origin not in ("pod", "node", "external"):
        _err(f"--from {origin!r}: use pod:NAMESPACE/NAME, node or external")
        return None
    if origin == "pod" and src is None:
        _err("--from pod needs --src (or --from pod:NAMESPACE/NAME)")
        return None
    return Packet(dst=args.dst, dport=args.dport, proto=args.proto, src=src, origin=origin)  # type: ignore[arg-type]


def cmd_trace(args: argparse.Namespace) -> int:
    """``kservice trace PATH... --mode M --node N --dst IP --dport P``."""
    if args.count < 0:
        _err("--count must not be negative")
        return EXIT_USAGE
    found = _trace_ruleset(args)
    if found is None:
        return EXIT_INVALID
    ruleset, cluster = found
    packet = _trace_packet(args, cluster)
    if packet is None:
        return EXIT_INVALID
    engine = Engine(ruleset, seed=args.seed)
    trace = engine.trace(packet)
    dist = engine.distribution(packet)
    samples = engine.sample(packet, args.count) if args.count else None
    if args.json:
        out = trace.to_dict()
        out["mode"] = ruleset.mode
        out["implementation"] = engine.implementation
        out["distribution"] = [{**v.to_dict(), "probability": p} for v, p in dist.items()]
        if samples is not None:
            out["samples"] = [{**v.to_dict(), "count": n} for v, n in samples.most_common()]
        _out(json.dumps(out, indent=2))
        return EXIT_OK
    who = f"{packet.src or 'node'}" + (f" ({packet.origin})" if packet.origin != "node" else "")
    _out(f"packet: {packet.proto} {who} -> {packet.dst}:{packet.dport}   [{ruleset.mode} mode]")
    for step in trace.steps:
        _out(str(step))
    _out(f"verdict: {trace.verdict}   ({trace.rules_evaluated} rules evaluated)")
    if trace.affinity:
        _out(f"affinity: {', '.join(trace.affinity)}")
    _out("where new connections go:")
    for verdict, p in dist.items():
        _out(f"  {100 * p:7.3f}%  {verdict}")
    if samples is not None:
        _out(f"{args.count} connections (seed {args.seed}):")
        for verdict, n in samples.most_common():
            _out(f"  {n:8d}  {verdict}")
    return EXIT_OK


# -- verify --------------------------------------------------------------------------------


def _add_verify(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="load NODE's rules into a private network namespace and check the engine"
        " against real traffic (root)",
        description=(
            "Compile NODE's rules from the manifests, build the node, its pods and outside"
            " clients in private network namespaces (kst-*; the host's own networking is"
            " never touched), load the rules with the real tools (nft, iptables-restore,"
            " ipset) and make real connections: from a pod to each ClusterIP, from the node,"
            " from outside to nodePorts, externalIPs and load-balancer IPs (allowed and denied"
            " sources). Each probe's outcome (which endpoint answered, masqueraded or not,"
            " refused, dropped) is compared with what the packet engine predicts; random"
            " spreads with a chi-square test, session affinity connection by connection."
            " --delta NEW also applies the nftables partial sync to NEW in the kernel."
            " Exit status: 0 all agree, 1 a disagreement or bad input, 2 usage,"
            " 3 kernel checks unavailable here (not root, no namespaces, a tool missing)."
        ),
    )
    _add_manifest_arguments(parser)
    _add_cluster_arguments(parser)
    _add_proxy_arguments(parser)
    parser.set_defaults(ip_family=None)
    parser.add_argument(
        "--connections",
        type=int,
        default=200,
        metavar="N",
        help="new connections per probe whose outcome is random (default 200)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.4,
        metavar="SECONDS",
        help="how long a connection waits before it counts as dropped (default 0.4)",
    )
    parser.add_argument(
        "--no-expiry",
        action="store_true",
        help="do not wait out session-affinity timeouts (of at most 5 s) to check expiry",
    )
    parser.add_argument(
        "--delta",
        metavar="NEW_PATH",
        help="also check the nftables partial sync from PATH's state to NEW_PATH's",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show every probe, not only disagreements"
    )
    parser.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    """``kservice verify PATH... --mode M --node N``."""
    from kservice.kernel.netns import kernel_unavailable
    from kservice.kernel.verify import verify, verify_delta

    if args.connections < 1:
        _err("--connections must be at least 1")
        return EXIT_USAGE
    if not 0 < args.timeout <= 10:
        _err("--timeout must be more than 0 and at most 10 seconds")
        return EXIT_USAGE
    if args.delta and args.mode != "nftables":
        _err("kservice verify --delta: only nftables mode has partial syncs (use --mode nftables)")
        return EXIT_USAGE
    cluster = build_cluster(args)
    if cluster is None or not _check_node(cluster, args):
        return EXIT_INVALID
    new = None
    if args.delta:
        new = _next_state(cluster, args.delta, args)
        if new is None or not _check_node(new, args):
            return EXIT_INVALID
    reason = kernel_unavailable()
    if reason:
        _err(f"kservice verify: cannot run here: {reason}")
        return EXIT_UNAVAILABLE
    config = ProxyConfig(
        mode=args.mode,
        cluster_cidrs=tuple(args.cluster_cidr),
        masquerade_all=args.masquerade_all,
    )
    families = [args.ip_family] if args.ip_family else None
    progress = None if args.json else (lambda text: print(f"  ... {text}", file=sys.stderr))
    report = verify(
        cluster,
        args.node,
        args.mode,
        families=families,
        config=config,
        node_ips=args.node_ip or None,
        connections=args.connections,
        timeout=args.timeout,
        expiry=not args.no_expiry,
        seed=args.seed,
        progress=progress if args.verbose else None,
    )
    deltas = (
        verify_delta(cluster, new, args.node, families=families, config=config, seed=args.seed)
        if new is not None
        else []
    )
    ok = report.ok and all(d.agrees for d in deltas)
    if args.json:
        out = report.to_dict()
        out["delta"] = [d.to_dict() for d in deltas]
        out["ok"] = ok
        _out(json.dumps(out, indent=2))
    else:
        _out(report.render(verbose=args.verbose))
        for d in deltas:
            state = "agrees" if d.agrees else "DISAGREES"
            kept = {None: "no connection to keep", True: "kept", False: "BROKEN"}[d.connection_kept]
            bad = sum(not p.agrees for p in d.probes)
            _out(
                f"delta: {d.operations} nft operations, applied: {d.applied}, same ruleset as a"
                f" full load: {d.same_ruleset}, open connection {kept}, {len(d.probes)} probes"
                f" after it ({bad} disagree): {state}" + (f": {d.reason}" if d.reason else "")
            )
    return EXIT_OK if ok else EXIT_INVALID


# -- the parser ---------------------------------------------------------------------------

#: The subcommands, in the order ``--help`` lists them.
_COMMANDS: tuple[Callable[[_SubParsers], None], ...] = (
    _add_validate,
    _add_alloc,
    _add_dns,
    _add_env,
    _add_compile,
    _add_diff,
    _add_trace,
    _add_verify,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``kservice`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="kservice",
        description="The Kubernetes Service data plane, end to end.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kservice`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else 1)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KServiceError as exc:  # a command's input problem that escaped it
        for line in error_lines(exc):
            _err(f"error: {line}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
