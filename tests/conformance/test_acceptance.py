"""Kernel acceptance: the kernel takes every ruleset kservice compiles.

For Hypothesis-generated clusters (``strategies.clusters``) and the examples/
cluster, every node's ruleset is compiled in both modes and for each family of
the cluster, and checked inside one private network namespace: ``nft -c -f``
for the nftables script (``ip kube-proxy`` or ``ip6 kube-proxy``; nothing is
loaded) and ``iptables-restore --test`` / ``ip6tables-restore --test`` for the
restore input (nothing is committed). A rejection shows the tool's error, the
offending lines and the cluster's manifests.

``KSERVICE_KERNEL_EXAMPLES`` sets the number of generated clusters (default
200; a long run uses thousands).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import POD_CIDRS, GeneratedCluster, clusters

from kservice.api.endpointslice import EndpointSlice
from kservice.api.manifest import load
from kservice.api.node import Node
from kservice.api.pod import Pod
from kservice.api.service import Service
from kservice.control.cluster import Cluster
from kservice.netfilter.iptables_text import render_restore
from kservice.netfilter.nft_text import render_script
from kservice.proxy import iptables, nftables
from kservice.proxy.config import ProxyConfig
from kservice.proxy.nodeview import NodeView

if TYPE_CHECKING:
    from conftest import Netns

pytestmark = pytest.mark.kernel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAX_EXAMPLES = int(os.environ.get("KSERVICE_KERNEL_EXAMPLES", "200"))
MODES = ("iptables", "nftables")

#: Line numbers in nft's (``FILE:12:3-9: Error``) and iptables-restore's
#: (``line 12 failed``, ``Error occurred at line: 12``) messages.
_LINE_RE = re.compile(r":(\d+):\d+(?:-\d+)?: Error|line:? (\d+)")


def render(
    cluster: Cluster,
    node: str,
    mode: str,
    family: str,
    cidrs: tuple[str, ...],
    options: dict[str, Any] | None = None,
    host: iptables.IptablesHost | None = None,
    restore_only: bool = False,
) -> str:
    """The kernel input for one node, mode and family (``options``: more ProxyConfig;
    ``host`` and ``restore_only`` go to the iptables compiler)."""
    config = ProxyConfig(mode=mode, ip_family=family, cluster_cidrs=cidrs, **(options or {}))
    view = NodeView.from_cluster(cluster, node, config)
    if mode == "nftables":
        return render_script(nftables.compile(view, service_cidrs=cluster.config.service_cidrs))
    return render_restore(iptables.compile(view, host, restore_only=restore_only))


def offending_lines(text: str, error: str, context: int = 1) -> str:
    """The input lines named in ``error`` (with ``context`` lines around), numbered."""
    lines = text.splitlines()
    wanted: set[int] = set()
    for m in _LINE_RE.finditer(error):
        n = int(m.group(1) or m.group(2))
        wanted.update(range(max(1, n - context), min(len(lines), n + context) + 1))
    if not wanted:
        return "(no line named; whole input)\n" + text
    return "\n".join(f"{n:5}: {lines[n - 1]}" for n in sorted(wanted))


def kernel_check(netns: Netns, mode: str, family: str, text: str) -> str | None:
    """``None`` when the kernel accepts ``text``, else the tool's error and the lines."""
    if mode == "nftables":
        suffix, argv = ".nft", ["nft", "-c", "-f"]
    else:
        tool = "iptables-restore" if family == "IPv4" else "ip6tables-restore"
        suffix, argv = ".rules", [tool, "--test"]
    with tempfile.NamedTemporaryFile("w", suffix=suffix, prefix="kst-") as f:
        f.write(text)
        f.flush()
        done = netns.run(*argv, f.name)
    if done.returncode == 0:
        return None
    error = (done.stderr + done.stdout).strip()
    return (
        f"{' '.join(argv)} rejected the {family} {mode} ruleset "
        f"(exit {done.returncode}):\n{error}\n--- offending lines:\n"
        f"{offending_lines(text, error)}"
    )


def check_cluster(
    netns: Netns,
    cluster: Cluster,
    nodes: tuple[str, ...],
    families: tuple[str, ...],
    cidrs: tuple[str, ...],
    options: dict[str, Any] | None = None,
    host: iptables.IptablesHost | None = None,
    restore_only: bool = False,
) -> list[str]:
    """Every rejection for every node, mode and family of ``cluster``."""
    failures = []
    for node in nodes:
        for family in families:
            for mode in MODES:
                text = render(cluster, node, mode, family, cidrs, options, host, restore_only)
                problem = kernel_check(netns, mode, family, text)
                if problem:
                    failures.append(f"node {node}: {problem}")
    return failures


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    generated=clusters(),
    host=st.builds(iptables.IptablesHost, st.booleans(), st.booleans(), st.booleans()),
    restore_only=st.booleans(),
)
def test_kernel_accepts_generated_clusters(
    netns: Netns, generated: GeneratedCluster, host: iptables.IptablesHost, restore_only: bool
) -> None:
    failures = check_cluster(
        netns,
        generated.cluster,
        generated.node_names,
        generated.families,
        generated.cluster_cidrs,
        generated.proxy_options,
        host,
        restore_only,
    )
    if failures:
        manifests = yaml.safe_dump_all(generated.manifests, sort_keys=False)
        pytest.fail(
            "\n\n".join(failures)
            + f"\n--- proxy options: {generated.proxy_options}; {host}, {restore_only=}"
            + "\n--- cluster manifests:\n"
            + manifests
        )


def test_kernel_accepts_the_examples(netns: Netns) -> None:
    objects = load(EXAMPLES)
    typed = [o for o in objects if isinstance(o, Service | EndpointSlice | Pod | Node)]
    assert len(typed) == len(objects)
    cluster = Cluster.from_objects(typed, seed=0)
    nodes = tuple(n.name for n in cluster.nodes)
    assert len(nodes) == 3
    failures = check_cluster(netns, cluster, nodes, ("IPv4",), (POD_CIDRS["IPv4"],))
    assert not failures, "\n\n".join(failures)


def test_a_rejection_names_the_error_and_the_line(netns: Netns) -> None:
    """The failure message machinery itself: a broken rule is reported with its line."""
    text = "*nat\n:KUBE-X - [0:0]\n-A KUBE-X -p tcp --dport 99999 -j ACCEPT\nCOMMIT\n"
    problem = kernel_check(netns, "iptables", "IPv4", text)
    assert problem is not None
    assert "3: -A KUBE-X -p tcp --dport 99999" in problem
    script = "add table ip t\nadd chain ip t c\nadd rule ip t c tcp dport 99999 accept\n"
    problem = kernel_check(netns, "nftables", "IPv4", script)
    assert problem is not None
    assert "3: add rule ip t c tcp dport 99999 accept" in problem
    text = "*filter\n:KUBE-X - [0:0]\n-A KUBE-X -d 10.0.0.1/32 -j ACCEPT\nCOMMIT\n"
    assert kernel_check(netns, "iptables", "IPv4", text) is None
    problem = kernel_check(netns, "iptables", "IPv6", text)
    assert problem is not None
    assert "ip6tables-restore --test" in problem
