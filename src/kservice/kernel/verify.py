"""The kernel as oracle: does the engine predict what the real kernel does?

:func:`verify` compiles a node's rules, builds the node in private network
namespaces (:mod:`kservice.kernel.topology`), loads the rules with the real
tools and makes real connections (:mod:`kservice.kernel.probe`); for every
probe it asks the engine what should happen and compares.

What is compared, per probe (a client, a destination, a protocol):

* **Deterministic part**, exactly: every outcome the kernel showed must be one
  the engine gives a non-zero probability: answered by *this* endpoint (or by
  the node itself, for a packet passed unchanged to a node address), with the
  source *masqueraded or not*; refused (REJECT: TCP reset or ICMP port
  unreachable); dropped (no answer before the timeout, or EPERM on the node's
  own output path); unreachable (passed unchanged towards an address no one
  holds). An outcome the engine calls certain must be the only one seen.
  Masquerading is visible only where the client's address is not the node's
  own (from the node, the masquerade address is the source it already had).
* **Random part**: where the engine spreads new connections over several
  outcomes, the kernel's counts over ``connections`` new connections must pass
  Pearson's chi-square test against the engine's exact probabilities at
  p > ``alpha`` (0.001). A probe that fails is sampled once more, and only a
  second failure is a disagreement: with dozens of probes per run, a single
  0.1% test would otherwise fail a correct run every few dozen runs.
* **Session affinity** (Services with ClientIP affinity): connections from
  one client are followed one by one; after each the engine is moved to the
  kernel's choice (:meth:`~kservice.engine.Engine.follow`), so it must then
  predict that every later connection sticks. With ``expiry`` and a timeout
  of at most ``max_affinity_wait`` seconds, the run waits the timeout out
  and checks that both let clients move again.

:func:`verify_delta` loads one cluster state's nftables rules, applies the
partial-sync transaction to the next state's, and checks that
``nft list ruleset`` is then exactly what loading the new state whole gives,
and that a connection opened before the update still answers after it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import attrs

from kservice.engine import Engine, Packet, Verdict
from kservice.kernel.netns import KernelError, NetnsGroup, kernel_unavailable
from kservice.kernel.probe import DEFAULT_TIMEOUT, Observation
from kservice.kernel.stats import chi_square_p
from kservice.kernel.topology import LoadStep, Topology, TopologyPlan, family_of
from kservice.netfilter.nft_text import render_script
from kservice.netfilter.ruleset import Ruleset
from kservice.proxy.config import ProxyConfig
from kservice.proxy.naming import join_host_port
from kservice.proxy.nodeview import NodeView, ServicePortInfo

__all__ = [
    "ALPHA",
    "AffinityCheck",
    "DeltaCheck",
    "Outcome",
    "Probe",
    "ProbeResult",
    "Report",
    "compile_node",
    "plan_probes",
    "verify",
    "verify_delta",
]

#: The chi-square test's significance level: a p-value at or below it disagrees.
ALPHA = 0.001

OutcomeKind = Literal["answer", "refused", "drop", "unreachable", "error"]


@attrs.frozen(order=True)
class Outcome:
    """What one connection ended in, as both sides can state it.

    ``endpoint`` is ``ip:port`` of whoever answered; ``masquerade`` is None
    where it cannot be seen (probes from the node itself, and outcomes other
    than an answer).
    """

    kind: OutcomeKind
    endpoint: str | None = None
    masquerade: bool | None = None
    detail: str | None = attrs.field(default=None, eq=False, order=False)

    def __str__(self) -> str:
        if self.kind == "answer":
            masq = {True: ", masqueraded", False: ", source kept", None: ""}[self.masquerade]
            return f"answered by {self.endpoint}{masq}"
        return self.kind + (f" ({self.detail})" if self.detail else "")


@attrs.frozen
class Probe:
    """Connections from namespace ``client`` to ``dst:port``.

    ``what`` names the Service address probed (``cluster-ip``, ``node-port``,
    ``external-ip``, ``load-balancer``, ``hairpin``); ``source`` says which
    client it is (``pod``, ``node``, ``endpoint pod``, ``external``, or the
    allowed / denied source of a ``loadBalancerSourceRanges`` entry).
    """

    family: str
    service: str
    what: str
    client: str
    source: str
    origin: Literal["pod", "node", "external"]
    iif: str | None
    protocol: str
    src: str
    dst: str
    port: int
    affinity: bool = False

    def packet(self, sport: int | None = None) -> Packet:
        return Packet(
            self.dst,
            self.port,
            self.protocol,
            src=self.src,
            sport=sport,
            origin=self.origin,
            iif=self.iif,
        )

    def __str__(self) -> str:
        return (
            f"{self.service} {self.what}: {self.source} {self.src} -> "
            f"{join_host_port(self.dst, self.port)}/{self.protocol}"
        )


@attrs.frozen
class ProbeResult:
    """One probe: what the engine predicted, what the kernel did, and the verdict."""

    probe: Probe
    expected: dict[Outcome, float]
    observed: dict[Outcome, int]
    agrees: bool
    reason: str = ""
    p_value: float | None = None
    connections: int = 0
    resampled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "probe": str(self.probe),
            "agrees": self.agrees,
            "reason": self.reason,
            "p_value": self.p_value,
            "connections": self.connections,
            "resampled": self.resampled,
            "expected": {str(o): p for o, p in self.expected.items()},
            "observed": {str(o): n for o, n in self.observed.items()},
        }


@attrs.frozen
class AffinityCheck:
    """Session affinity of one Service seen from several clients.

    ``sticky``: every client stayed on its first endpoint in the kernel, as the
    engine (moved to the kernel's choices) predicted. ``moved`` / ``clients``:
    after waiting out the timeout, how many clients' next connection went
    elsewhere; ``could_stay`` is the engine's probability that none would.
    """

    service: str
    timeout: int
    clients: int
    sticky: bool
    agrees: bool
    reason: str = ""
    expiry_checked: bool = False
    moved: int = 0
    could_stay: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class DeltaCheck:
    """An nftables partial sync applied in the kernel (see :func:`verify_delta`)."""

    operations: int
    applied: bool
    same_ruleset: bool
    connection_kept: bool | None
    agrees: bool
    reason: str = ""
    probes: tuple[ProbeResult, ...] = ()
    #: ``nft list ruleset`` was byte-identical (not only the same once chains
    #: and sets are put in name order).
    identical_text: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=False)
        out["probes"] = [p.to_dict() for p in self.probes]
        return out


@attrs.frozen
class Report:
    """Everything :func:`verify` found for one node and mode."""

    node: str
    mode: str
    families: tuple[str, ...]
    load: tuple[LoadStep, ...]
    probes: tuple[ProbeResult, ...]
    affinity: tuple[AffinityCheck, ...] = ()
    notes: tuple[str, ...] = ()
    plan: dict[str, Any] = attrs.field(factory=dict)

    @property
    def accepted(self) -> bool:
        return all(step.ok for step in self.load)

    @property
    def disagreements(self) -> list[ProbeResult | AffinityCheck]:
        checks: list[ProbeResult | AffinityCheck] = [*self.probes, *self.affinity]
        return [r for r in checks if not r.agrees]

    @property
    def connections(self) -> int:
        return sum(r.connections for r in self.probes)

    @property
    def ok(self) -> bool:
        return self.accepted and not self.disagreements

    @property
    def agreement_rate(self) -> float:
        checks = len(self.probes) + len(self.affinity)
        return 1.0 if checks == 0 else 1 - len(self.disagreements) / checks

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "mode": self.mode,
            "families": list(self.families),
            "ok": self.ok,
            "accepted": self.accepted,
            "load": [attrs.asdict(s) for s in self.load],
            "probes": [p.to_dict() for p in self.probes],
            "affinity": [a.to_dict() for a in self.affinity],
            "connections": self.connections,
            "agreement_rate": self.agreement_rate,
            "notes": list(self.notes),
            "topology": self.plan,
        }

    def render(self, *, verbose: bool = False) -> str:
        """The human report: load steps, a line per disagreement, the totals."""
        lines = [f"kservice verify: node {self.node}, {self.mode} mode, {'/'.join(self.families)}"]
        for step in self.load:
            state = "skipped" if step.skipped else "ok" if step.ok else "FAILED"
            detail = f": {step.detail}" if step.detail else ""
            lines.append(f"  load {step.family} {step.tool}: {state}{detail}")
        for r in self.probes:
            if verbose or not r.agrees:
                lines.append(f"  {'ok  ' if r.agrees else 'DISAGREE'} {r.probe}")
                if not r.agrees or verbose:
                    lines.append(f"      engine: {_dist_text(r.expected)}")
                    lines.append(f"      kernel: {_count_text(r.observed)}")
                    if r.reason:
                        lines.append(f"      {r.reason}")
        for a in self.affinity:
            if verbose or not a.agrees:
                head = "ok  " if a.agrees else "DISAGREE"
                expiry = (
                    f", after {a.timeout}s {a.moved}/{a.clients} clients moved"
                    if a.expiry_checked
                    else ""
                )
                lines.append(
                    f"  {head} affinity {a.service}: {a.clients} clients, "
                    f"{'sticky' if a.sticky else 'NOT sticky'}{expiry}"
                    + (f": {a.reason}" if a.reason else "")
                )
        for note in self.notes:
            lines.append(f"  note: {note}")
        bad = len(self.disagreements)
        checks = len(self.probes) + len(self.affinity)
        lines.append(
            f"{len(self.probes)} probes ({self.connections} connections), "
            f"{len(self.affinity)} affinity checks: {checks - bad} agree, {bad} disagree"
            f" ({100 * self.agreement_rate:.1f}% agreement)"
            + ("" if self.accepted else "; the kernel REJECTED the rules")
        )
        return "\n".join(lines)


def _dist_text(dist: dict[Outcome, float]) -> str:
    return ", ".join(f"{o} {p:.4g}" for o, p in dist.items()) or "nothing"


def _count_text(counts: dict[Outcome, int]) -> str:
    return ", ".join(f"{o} x{n}" for o, n in counts.items()) or "nothing"


# -- compiling a node ------------------------------------------------------------------------


def compile_node(
    cluster: Any,
    node: str,
    mode: str,
    *,
    families: Sequence[str] | None = None,
    config: ProxyConfig | None = None,
    node_ips: Iterable[str] | None = None,
) -> tuple[list[NodeView], list[Ruleset]]:
    """One view and one ruleset per IP family of ``node`` (the cluster's
    families by default), compiled as kube-proxy in ``mode`` would."""
    from kservice.proxy import iptables, ipvs, nftables

    base = config or ProxyConfig(mode=mode)
    if families is None:
        families = tuple(dict.fromkeys(family_of(c.split("/")[0]) for c in _cidrs(cluster)))
    views: list[NodeView] = []
    rulesets: list[Ruleset] = []
    for family in families:
        cfg = attrs.evolve(base, mode=mode, ip_family=family)
        ips = [ip for ip in node_ips or () if family_of(ip) == family] or None
        view = NodeView.from_cluster(cluster, node, cfg, node_ips=ips)
        if mode == "nftables":
            rs = nftables.compile(view, service_cidrs=cluster.config.service_cidrs)
        elif mode == "ipvs":
            rs = ipvs.compile(view)
        else:
            rs = iptables.compile(view)
        views.append(view)
        rulesets.append(rs)
    return views, rulesets


def _cidrs(cluster: Any) -> tuple[str, ...]:
    return tuple(cluster.config.service_cidrs)


# -- planning probes ---------------------------------------------------------------------------


def plan_probes(plan: TopologyPlan, views: Sequence[NodeView]) -> list[Probe]:
    """The probes of every service port the node programs (see the module docstring)."""
    probes: list[Probe] = []
    iface = {p.role: f"{plan.pod_interface_prefix}{i}" for i, p in enumerate(plan.pods)}
    client = plan.client_pod
    for view in views:
        family = view.ip_family
        pod_src = client.address(family)
        node_src = next((a for a in plan.node_addresses if family_of(a) == family), None)
        ext_src = plan.external_client(family)
        for p in view:
            proto = p.protocol.lower()
            if proto not in plan.protocols:
                continue
            name = f"{p.name_string}/{proto}"
            sticky = p.client_ip_affinity

            def add(
                what: str,
                role: str,
                source: str,
                origin: Literal["pod", "node", "external"],
                src: str | None,
                dst: str,
                port: int,
                *,
                name: str = name,
                proto: str = proto,
                sticky: bool = sticky,
                family: str = family,
            ) -> None:
                if src is None:
                    return
                probes.append(
                    Probe(
                        family,
                        name,
                        what,
                        role,
                        source,
                        origin,
                        iface.get(role) if origin == "pod" else None,
                        proto,
                        src,
                        dst,
                        port,
                        sticky,
                    )
                )

            if p.cluster_ip:
                add("cluster-ip", client.role, "pod", "pod", pod_src, p.cluster_ip, p.port)
                add("cluster-ip", "node", "node", "node", node_src, p.cluster_ip, p.port)
                hairpin = _local_endpoint_pod(plan, p)
                if hairpin is not None:
                    add(
                        "hairpin",
                        hairpin[0],
                        "endpoint pod",
                        "pod",
                        hairpin[1],
                        p.cluster_ip,
                        p.port,
                    )
            if p.node_port and node_src is not None:
                add("node-port", "external", "external", "external", ext_src, node_src, p.node_port)
                add("node-port", client.role, "pod", "pod", pod_src, node_src, p.node_port)
            for eip in p.external_ips:
                add("external-ip", "external", "external", "external", ext_src, eip, p.port)
                add("external-ip", client.role, "pod", "pod", pod_src, eip, p.port)
            for vip in p.load_balancer_vips:
                if p.load_balancer_source_ranges:
                    for c in plan.external:
                        if c.service != name or c.purpose not in ("allowed", "denied"):
                            continue
                        if family_of(c.address) == family_of(vip):
                            source = f"{c.purpose} source" + (
                                f" ({c.source_range})" if c.source_range else ""
                            )
                            add(
                                "load-balancer",
                                "external",
                                source,
                                "external",
                                c.address,
                                vip,
                                p.port,
                            )
                else:
                    add("load-balancer", "external", "external", "external", ext_src, vip, p.port)
                add("load-balancer", client.role, "pod", "pod", pod_src, vip, p.port)
    return probes


def _local_endpoint_pod(plan: TopologyPlan, p: ServicePortInfo) -> tuple[str, str] | None:
    for ep in p.all_endpoints:
        role = plan.pod_role(ep.ip)
        if role is not None and role != plan.client_pod.role:
            return role, ep.ip
    return None


# -- comparing ------------------------------------------------------------------------------------


def expected_outcome(plan: TopologyPlan, probe: Probe, verdict: Verdict) -> Outcome:
    """The observation a verdict of the engine stands for, in this topology."""
    masq: bool | None = None if plan.node_local(probe.src) else verdict.masquerade
    if verdict.kind == "reject":
        return Outcome("refused")
    if verdict.kind == "drop":
        return Outcome("drop")
    if verdict.kind == "dnat":
        assert verdict.address is not None and verdict.port is not None
        address, port = verdict.address, verdict.port
    else:
        address, port = probe.dst, probe.port
    if plan.host_of(probe.protocol, address, port) is not None:
        return Outcome("answer", join_host_port(address, port), masq)
    if plan.node_local(address):
        return Outcome("refused", detail="nothing listens there")
    return Outcome("unreachable")


def observed_outcome(plan: TopologyPlan, probe: Probe, obs: Observation) -> Outcome:
    """The comparable form of what the kernel did with one connection."""
    if obs.kind == "answer":
        masq = None if plan.node_local(probe.src) else obs.seen_address != probe.src
        return Outcome("answer", obs.endpoint, masq)
    if obs.kind in ("timeout", "eperm"):
        return Outcome("drop", detail=obs.kind)
    if obs.kind == "refused":
        return Outcome("refused")
    if obs.kind == "unreachable":
        return Outcome("unreachable", detail=obs.detail)
    return Outcome("error", detail=f"{obs.kind} {obs.detail or ''}".strip())


def _expected(
    engine: Engine, plan: TopologyPlan, probe: Probe
) -> tuple[dict[Outcome, float], dict[Outcome, Verdict]]:
    dist: dict[Outcome, float] = {}
    verdicts: dict[Outcome, Verdict] = {}
    for verdict, p in engine.exact_distribution(probe.packet()).items():
        outcome = expected_outcome(plan, probe, verdict)
        dist[outcome] = dist.get(outcome, 0.0) + float(p)
        verdicts.setdefault(outcome, verdict)
    return dist, verdicts


class _Runner:
    """Probes a built topology and compares with one engine per family."""

    def __init__(
        self,
        topo: Topology,
        engines: dict[str, Engine],
        *,
        connections: int,
        deterministic_connections: int,
        timeout: float,
        alpha: float,
    ) -> None:
        self.topo = topo
        self.plan = topo.plan
        self.engines = engines
        self.connections = connections
        self.few = deterministic_connections
        self.timeout = timeout
        self.alpha = alpha

    def observe(self, probe: Probe, count: int) -> list[Outcome]:
        prober = self.topo.prober(probe.client)
        found = prober.probe(
            probe.protocol, probe.src, probe.dst, probe.port, count=count, timeout=self.timeout
        )
        return [observed_outcome(self.plan, probe, o) for o in found]

    def run(self, probe: Probe) -> ProbeResult:
        engine = self.engines[probe.family]
        expected, verdicts = _expected(engine, self.plan, probe)
        if probe.affinity:
            return self._sequential(probe, engine, expected, verdicts)
        random = len(expected) > 1
        count = self.connections if random else self.few
        if not random and next(iter(expected), Outcome("drop")).kind == "drop":
            count = min(count, 3)  # each costs a timeout
        seen = self.observe(probe, count)
        result = self._compare(probe, expected, seen)
        if not result.agrees and result.p_value is not None:
            again = self._compare(probe, expected, self.observe(probe, count))
            return attrs.evolve(
                again, resampled=True, connections=result.connections + again.connections
            )
        return result

    def _compare(
        self, probe: Probe, expected: dict[Outcome, float], seen: list[Outcome]
    ) -> ProbeResult:
        counts = Counter(seen)
        observed = dict(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))
        stray = [o for o in counts if expected.get(o, 0.0) <= 0]
        if stray:
            return ProbeResult(
                probe,
                expected,
                observed,
                False,
                "the kernel did what the engine calls impossible: "
                + "; ".join(f"{o}{' (' + o.detail + ')' if o.detail else ''}" for o in stray),
                connections=len(seen),
            )
        if len(expected) < 2:
            return ProbeResult(probe, expected, observed, True, connections=len(seen))
        support = list(expected)
        p = chi_square_p([counts.get(o, 0) for o in support], [expected[o] for o in support])
        if p <= self.alpha:
            return ProbeResult(
                probe,
                expected,
                observed,
                False,
                f"chi-square p = {p:.3g} <= {self.alpha}: the kernel's spread is not the engine's",
                p_value=p,
                connections=len(seen),
            )
        return ProbeResult(probe, expected, observed, True, p_value=p, connections=len(seen))

    def _sequential(
        self,
        probe: Probe,
        engine: Engine,
        expected: dict[Outcome, float],
        verdicts: dict[Outcome, Verdict],
    ) -> ProbeResult:
        """Connections one by one; the engine follows the kernel after each."""
        count = max(2, min(self.few * 2, 20))
        if len(expected) == 1:  # nothing random to stick to: a few connections do
            count = 2 if next(iter(expected)).kind == "drop" else min(count, self.few)
        seen: list[Outcome] = []
        first_expected = expected
        for _ in range(count):
            outcome = self.observe(probe, 1)[0]
            seen.append(outcome)
            if expected.get(outcome, 0.0) <= 0:
                return ProbeResult(
                    probe,
                    first_expected,
                    dict(Counter(seen)),
                    False,
                    f"connection {len(seen)}: the kernel gave {outcome}, the engine (following "
                    f"the kernel's earlier choices) predicted {_dist_text(expected)}",
                    connections=len(seen),
                )
            verdict = verdicts[outcome]
            engine.follow(probe.packet(), verdict)
            expected, verdicts = _expected(engine, self.plan, probe)
        return ProbeResult(probe, first_expected, dict(Counter(seen)), True, connections=len(seen))

    def affinity(
        self, views: Sequence[NodeView], *, expiry: bool, max_wait: float, clients: int
    ) -> list[AffinityCheck]:
        """Each ClientIP Service from several external clients: sticky, then expiry."""
        checks: list[AffinityCheck] = []
        plan = self.plan
        pending: list[tuple[AffinityCheck, list[tuple[Probe, Outcome]]]] = []
        for view in views:
            family = view.ip_family
            sources = [
                c.address
                for c in plan.external
                if c.purpose == "affinity" and family_of(c.address) == family
            ][:clients]
            node_src = next((a for a in plan.node_addresses if family_of(a) == family), None)
            for p in view:
                proto = p.protocol.lower()
                if not p.client_ip_affinity or proto not in plan.protocols or not sources:
                    continue
                if p.node_port and node_src:
                    dst, port, what = node_src, p.node_port, "node-port"
                elif p.cluster_ip:
                    dst, port, what = p.cluster_ip, p.port, "cluster-ip"
                else:
                    continue
                name = f"{p.name_string}/{proto}"
                firsts: list[tuple[Probe, Outcome]] = []
                reason = ""
                used = sources
                for src in sources:
                    probe = Probe(
                        family, name, what, "external", "affinity client", "external", None,
                        proto, src, dst, port, True,
                    )  # fmt: skip
                    expected, verdicts = self._exp(probe)
                    if len(expected) == 1 and not firsts:
                        used = sources[:1]  # one possible outcome: one client shows it
                    result = self._sequential(probe, self.engines[family], expected, verdicts)
                    if not result.agrees:
                        reason = f"{probe}: {result.reason}"
                        break
                    firsts.append((probe, next(iter(result.observed))))
                    if len(used) == 1:
                        break
                timeout = p.session_affinity_timeout or 0
                check = AffinityCheck(name, timeout, len(used), not reason, not reason, reason)
                if not reason and expiry and 0 < timeout <= max_wait and len(used) > 1:
                    pending.append((check, firsts))
                else:
                    checks.append(check)
        if pending:
            # one wait for every Service: the longest timeout, plus a margin
            wait = max(c.timeout for c, _ in pending) + 1.5
            time.sleep(wait)
            for check, firsts in pending:
                checks.append(self._after_expiry(check, firsts))
        return checks

    def _exp(self, probe: Probe) -> tuple[dict[Outcome, float], dict[Outcome, Verdict]]:
        return _expected(self.engines[probe.family], self.plan, probe)

    def _after_expiry(
        self, check: AffinityCheck, firsts: list[tuple[Probe, Outcome]]
    ) -> AffinityCheck:
        moved = 0
        could_stay = 1.0
        for probe, before in firsts:
            expected, _ = self._exp(probe)
            outcome = self.observe(probe, 1)[0]
            if expected.get(outcome, 0.0) <= 0:
                return attrs.evolve(
                    check,
                    agrees=False,
                    expiry_checked=True,
                    reason=f"after the timeout, {probe}: the kernel gave {outcome}, "
                    f"the engine predicted {_dist_text(expected)}",
                )
            could_stay *= expected.get(before, 0.0)
            moved += outcome != before
        agrees = moved > 0 or could_stay > self.alpha
        reason = (
            ""
            if agrees
            else f"no client moved after the timeout; the engine gives that {could_stay:.2g}"
        )
        return attrs.evolve(
            check,
            agrees=agrees,
            expiry_checked=True,
            moved=moved,
            could_stay=could_stay,
            reason=reason,
        )


def _engines(
    views: Sequence[NodeView], rulesets: Sequence[Ruleset], seed: int
) -> dict[str, Engine]:
    """One engine per family (seeds ``seed``, ``seed + 1``)."""
    return {
        v.ip_family: Engine(rs, seed=seed + i)
        for i, (v, rs) in enumerate(zip(views, rulesets, strict=True))
    }


# -- the whole run ------------------------------------------------------------------------------


def verify(
    cluster: Any,
    node: str,
    mode: str = "nftables",
    *,
    families: Sequence[str] | None = None,
    config: ProxyConfig | None = None,
    node_ips: Iterable[str] | None = None,
    connections: int = 200,
    deterministic_connections: int = 5,
    timeout: float = DEFAULT_TIMEOUT,
    alpha: float = ALPHA,
    affinity: bool = True,
    expiry: bool = True,
    max_affinity_wait: float = 5.0,
    affinity_clients: int = 16,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Compile ``node`` in ``mode``, load it in private namespaces, probe it,
    and compare every probe with the engine (see the module docstring).

    Needs root and network namespaces (:class:`KernelError` says why not).
    Everything made is removed again, also on errors and interrupts. In IPVS
    mode without the ip_vs module nothing can be probed: the report holds the
    load steps (ipsets, iptables rules, the ipvsadm text) and says so.
    """
    reason = kernel_unavailable()
    if reason:
        raise KernelError(f"kservice verify: {reason}")
    views, rulesets = compile_node(
        cluster, node, mode, families=families, config=config, node_ips=node_ips
    )
    plan = TopologyPlan.build(
        cluster, node, views, rulesets, affinity_clients=affinity_clients if affinity else 0
    )
    say = progress or (lambda _text: None)
    with Topology.create(plan) as topo:
        steps: list[LoadStep] = []
        for rs in rulesets:
            steps += topo.load(rs)
        notes = list(plan.notes)
        results: list[ProbeResult] = []
        checks: list[AffinityCheck] = []
        if not all(s.ok for s in steps):
            notes.append("the kernel refused the rules: nothing was probed")
        elif mode == "ipvs" and any(s.skipped for s in steps):
            notes.append("IPVS: no virtual server could be programmed, so nothing was probed")
        else:
            runner = _Runner(
                topo,
                _engines(views, rulesets, seed),
                connections=connections,
                deterministic_connections=deterministic_connections,
                timeout=timeout,
                alpha=alpha,
            )
            probes = plan_probes(plan, views)
            for i, probe in enumerate(probes):
                say(f"probe {i + 1}/{len(probes)}: {probe}")
                results.append(runner.run(probe))
            if affinity:
                say("session affinity")
                checks = runner.affinity(
                    views, expiry=expiry, max_wait=max_affinity_wait, clients=affinity_clients
                )
        return Report(
            node,
            mode,
            plan.families,
            tuple(steps),
            tuple(results),
            tuple(checks),
            tuple(notes),
            {**plan.to_dict(), "namespaces": sorted(topo.names.values())},
        )


def verify_delta(
    old: Any,
    new: Any,
    node: str,
    *,
    families: Sequence[str] | None = None,
    config: ProxyConfig | None = None,
    connections: int = 50,
    timeout: float = DEFAULT_TIMEOUT,
    seed: int = 0,
) -> list[DeltaCheck]:
    """nftables partial sync in the kernel, one check per IP family.

    The topology is built for ``old`` and ``new`` together (every endpoint of
    both answers). ``old``'s rules are loaded; a TCP connection is opened
    through the first Service port that has endpoints in both states; the
    transaction :func:`kservice.proxy.nftables.delta` computes is applied with
    ``nft -f``; then ``nft list ruleset`` must equal what a private namespace
    shows after loading ``new``'s rules whole, the open connection must still
    answer from the same endpoint, and new connections must follow ``new``
    (every probe of :func:`plan_probes` against a fresh engine of ``new``).
    """
    from kservice.proxy import nftables

    reason = kernel_unavailable()
    if reason:
        raise KernelError(f"kservice verify: {reason}")
    old_views, old_rules = compile_node(old, node, "nftables", families=families, config=config)
    new_views, new_rules = compile_node(new, node, "nftables", families=families, config=config)
    plan_new = TopologyPlan.build(new, node, new_views, new_rules, affinity_clients=0)
    plan_old = TopologyPlan.build(old, node, old_views, old_rules, affinity_clients=0)
    plan = _merge_plans(plan_new, plan_old)
    checks: list[DeltaCheck] = []
    with Topology.create(plan) as topo, NetnsGroup() as scratch:
        reference = scratch.add("reference")
        for rs in new_rules:
            reference.run("nft", "-f", "-", stdin=render_script(rs))
        want = reference.run("nft", "list", "ruleset").stdout
        for old_rs in old_rules:
            topo.load(old_rs)
        held = _open_connection(topo, plan, old_views, new_views, timeout)
        txns = [nftables.delta(o, n) for o, n in zip(old_rules, new_rules, strict=True)]
        node_ns = topo.ns("node")
        applied = True
        why = ""
        for txn in txns:
            if txn.is_empty:
                continue
            done = node_ns.run("nft", "-f", "-", stdin=txn.text, check=False)
            if done.returncode != 0:
                applied = False
                why = f"nft -f refused the transaction: {done.stderr.strip()[:2000]}"
                break
        got = topo.nft_list()
        same, difference = _same_listing(got, want)
        if applied and not same:
            why = "nft list ruleset after the delta differs from loading the new state: " + (
                difference
            )
        kept: bool | None = None
        if held is not None:
            prober, handle, before = held
            after = prober.send(handle, timeout=max(1.0, timeout))
            kept = after.kind == "answer" and after.endpoint == before.endpoint
            if not kept:
                why = (why + "; " if why else "") + (
                    f"the connection to {before.endpoint} opened before the update "
                    f"gave {after} after it"
                )
        runner = _Runner(
            topo,
            _engines(new_views, new_rules, seed),
            connections=connections,
            deterministic_connections=3,
            timeout=timeout,
            alpha=ALPHA,
        )
        results = tuple(runner.run(probe) for probe in plan_probes(plan, new_views))
        bad = [r for r in results if not r.agrees]
        if bad:
            why = (why + "; " if why else "") + f"{len(bad)} probes disagree after the update"
        checks.append(
            DeltaCheck(
                sum(len(t) for t in txns),
                applied,
                same,
                kept,
                applied and same and kept is not False and not bad,
                why,
                results,
                got == want,
            )
        )
    return checks


def _merge_plans(a: TopologyPlan, b: TopologyPlan) -> TopologyPlan:
    """``a`` with ``b``'s servers too (remote endpoints and binds of both states)."""
    binds = {role: set(v) for role, v in a.binds.items()}
    pod_roles = {p.name: p.role for p in a.pods}
    extra_remote: list[str] = []
    for role, bs in b.binds.items():
        if role.startswith("pod"):
            pod = b.pod(role)
            target = pod_roles.get(pod.name)
            if target is None:
                # a pod only in b: serve its endpoints from remote (no namespace of its own)
                target = "remote"
                extra_remote += [x.address for x in bs]
        else:
            target = role
        binds.setdefault(target, set()).update(bs)
    remote = tuple(dict.fromkeys((*a.remote_addresses, *b.remote_addresses, *extra_remote)))
    return attrs.evolve(
        a,
        binds={role: tuple(sorted(v)) for role, v in sorted(binds.items())},
        remote_addresses=remote,
    )


def _open_connection(
    topo: Topology,
    plan: TopologyPlan,
    old_views: Sequence[NodeView],
    new_views: Sequence[NodeView],
    timeout: float,
) -> tuple[Any, int, Observation] | None:
    """A TCP connection from the client pod through a Service port that has
    endpoints in both states (None when there is none)."""
    client = plan.client_pod
    for view in old_views:
        src = client.address(view.ip_family)
        if src is None:
            continue
        keep = {
            (p.cluster_ip, p.port)
            for nv in new_views
            if nv.ip_family == view.ip_family
            for p in nv
            if p.all_reachable_endpoints
        }
        for p in view:
            if p.protocol != "TCP" or not p.all_reachable_endpoints:
                continue
            if (p.cluster_ip, p.port) not in keep:
                continue
            prober = topo.prober(client.role)
            handle, first = prober.open("tcp", src, p.cluster_ip, p.port, timeout=timeout)
            if handle >= 0 and first.kind == "answer":
                return prober, handle, first
    return None


def _same_listing(got: str, want: str) -> tuple[bool, str]:
    """Whether two ``nft list ruleset`` texts show the same ruleset.

    Byte-identical texts are; otherwise both are parsed and compared with
    chains and sets in name order, since nft lists them in the order they
    were made, and a partial sync makes new ones after the old.
    """
    if got == want:
        return True, ""
    from kservice.netfilter.nft_text import parse_list

    def canonical(text: str) -> list[Any]:
        tables = []
        for table in parse_list(text).tables:
            tables.append(
                attrs.evolve(
                    table,
                    chains=sorted(table.chains, key=lambda c: c.name),
                    sets=sorted(table.sets, key=lambda x: x.name),
                )
            )
        return sorted(tables, key=lambda t: (t.family, t.name))

    if canonical(got) == canonical(want):
        return True, ""
    return False, _first_difference(got, want)


def _first_difference(got: str, want: str) -> str:
    a, b = got.splitlines(), want.splitlines()
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"line {i + 1}: got {x.strip()!r}, want {y.strip()!r}"
    return f"got {len(a)} lines, want {len(b)}"
