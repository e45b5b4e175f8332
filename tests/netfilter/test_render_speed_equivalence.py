"""The renderers' fast paths give exactly what the full validators and writers give.

``iptables_text._fast_line`` validates and writes the common rule shapes in one
go; it may only return a line for a rule the full validator (``_validate_rule``)
accepts, and that line must be the one ``_restore_rule`` writes. The address
and chain-name prechecks may only accept what the full checks accept. The nft
writer's single-address / single-protocol shortcuts must write what the general
code writes.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from kservice.netfilter import iptables_text as it
from kservice.netfilter import nft_text as nt
from kservice.netfilter.iptables_text import RulesRenderError
from kservice.netfilter.ruleset import (
    DNAT,
    Accept,
    AddrTypeMatch,
    Chain,
    CtStateMatch,
    Drop,
    Goto,
    IPMatch,
    Jump,
    NumgenVmap,
    PortMatch,
    ProtoMatch,
    RawMatch,
    Rule,
    Ruleset,
    StatisticMatch,
    Table,
)

_ADDRS = [
    "10.0.0.1",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "1.2.3.4/32",
    "255.255.255.255",
    "256.1.1.1",
    "01.2.3.4",
    "1.2.3.4/33",
    "1.2.3.4/08",
    "1.2.3.4/255.0.0.0",
    "fd00::1",
    "fd00::/64",
    "::ffff:1.2.3.4",
    "",
    "1.2.3",
    "1.2.3.4 ",
    "a.b.c.d",
]
_CHAINS = ["KUBE-SVC-ABC", "KUBE-SEP-XYZ", "OTHER", "PREROUTING", "ACCEPT", "MISSING", "-bad"]
_COMMENTS = [
    None,
    "ns/svc:http",
    "with space",
    'a "quote"',
    "new\nline",
    "x" * 255,
    "x" * 256,
    "é" * 128,
]

_exprs = st.one_of(
    st.builds(
        IPMatch,
        st.sampled_from(["saddr", "daddr"]),
        st.lists(st.sampled_from(_ADDRS), max_size=2),
        st.booleans(),
    ),
    st.builds(
        ProtoMatch,
        st.lists(st.sampled_from(["tcp", "udp", "sctp", "icmp", "all", "TCP"]), max_size=2),
        st.booleans(),
    ),
    st.builds(
        PortMatch,
        st.sampled_from(["sport", "dport"]),
        st.lists(
            st.tuples(st.sampled_from([0, 1, 80, 65535, 70000]), st.sampled_from([80, 65535, 5])),
            max_size=2,
        ),
        st.booleans(),
    ),
    st.sampled_from(["0.5", "0.1000000000", "1.0", "2", "x", "1e-3"]).map(
        lambda t: StatisticMatch(0.5, t)
    ),
    st.builds(
        AddrTypeMatch,
        st.sampled_from(["saddr", "daddr"]),
        st.sampled_from(["LOCAL", "LOCAL,UNICAST", "BOGUS"]),
        st.booleans(),
        st.booleans(),
    ),
    st.builds(CtStateMatch, st.just(("NEW",))),
    st.builds(RawMatch, st.just("-m tcp --dport 80")),
)
_verdicts = st.one_of(
    st.none(),
    st.builds(Jump, st.sampled_from(_CHAINS)),
    st.builds(Goto, st.sampled_from(_CHAINS)),
    st.builds(
        DNAT,
        st.sampled_from(_ADDRS),
        st.sampled_from([None, 0, 1, 8080, 65535, 65536]),
    ),
    st.just(Accept()),
    st.just(Drop()),
)
_any_rules = st.builds(Rule, st.lists(_exprs, max_size=4), _verdicts, st.sampled_from(_COMMENTS))
# Mostly valid rules of the shapes compilers emit, so the fast path is taken often.
_GOOD = ["10.0.0.1", "10.0.0.0/8", "192.168.1.0/24", "0.0.0.0/0", "fd00::1"]
_likely_exprs = st.one_of(
    st.builds(
        IPMatch,
        st.sampled_from(["saddr", "daddr"]),
        st.lists(st.sampled_from(_GOOD), min_size=1, max_size=2),
        st.booleans(),
    ),
    st.builds(ProtoMatch, st.sampled_from([("tcp",), ("udp",), ("sctp",)])),
    st.builds(
        PortMatch,
        st.sampled_from(["sport", "dport"]),
        st.sampled_from([((80, 80),), ((1000, 2000),), ((80, 80), (443, 443))]),
        st.booleans(),
    ),
    st.sampled_from(["0.5", "0.1000000000", "1.0"]).map(lambda t: StatisticMatch(0.5, t)),
    st.builds(AddrTypeMatch, st.sampled_from(["saddr", "daddr"]), st.just("LOCAL")),
)
_likely_verdicts = st.one_of(
    st.builds(Jump, st.sampled_from(_CHAINS[:4])),
    st.builds(Goto, st.sampled_from(_CHAINS[:2])),
    st.builds(
        DNAT, st.sampled_from(["10.0.0.1", "256.1.1.1", "fd00::1"]), st.sampled_from([None, 8080])
    ),
)
_likely_rules = st.builds(
    Rule,
    st.lists(_likely_exprs, max_size=3),
    _likely_verdicts,
    st.sampled_from([None, "ns/svc:http", "with space", 'a "quote"']),
)
_rules = _any_rules | _likely_rules


def _table(name: str, rule: Rule) -> Table:
    chains = [Chain(n) for n in ("KUBE-SVC-ABC", "KUBE-SEP-XYZ", "OTHER")]
    return Table(
        family="ip",
        name=name,
        dialect="iptables",
        chains=[*chains, Chain("PREROUTING", rules=[rule])],
    )


@settings(max_examples=3000, deadline=None)
@given(_rules, st.sampled_from(["nat", "filter"]), st.sampled_from(["ip", "ip6"]))
def test_fast_line_matches_full_validation_and_rendering(
    rule: Rule, table_name: str, family: it.Family
) -> None:
    table = _table(table_name, rule)
    names = frozenset(c.name for c in table.chains)
    user_chains = names.difference(it.BUILTIN_CHAINS[table_name])
    line = it._fast_line("PREROUTING", rule, table_name, family, user_chains)
    # one writer for a table: the second time, texts checked the first time are known
    write = it._fast_writer(table_name, family, user_chains)
    assert write("-A PREROUTING", rule) == line
    assert write("-A PREROUTING", rule) == line
    if line is None:
        return
    it._validate_rule(rule, table, family, names, "here")  # must not raise
    assert line == it._restore_rule("PREROUTING", rule, family)


def _reference_restore(ruleset: Ruleset) -> str:
    """render_restore as it was before the fast paths: full validation, then writing."""
    family = it._family_of(ruleset)
    out: list[str] = []
    for table in it._iptables_tables(ruleset):
        names = frozenset(c.name for c in table.chains)
        for c in table.chains:
            for i, r in enumerate(c.rules):
                it._validate_rule(r, table, family, names, f"{i}")
        out.append(f"*{table.name}")
        for c in table.chains:
            if it._is_builtin(table.name, c.name):
                if c.policy is not None:
                    out.append(f":{c.name} {c.policy} [0:0]")
            else:
                out.append(f":{c.name} - [0:0]")
        for c in table.chains:
            out.extend(it._restore_rule(c.name, r, family) for r in c.rules)
        out.append("COMMIT")
    return "".join(line + "\n" for line in out)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(_likely_rules, max_size=4) | st.lists(_rules, max_size=3),
    st.sampled_from(["nat", "filter"]),
)
def test_render_restore_matches_reference(rules: list[Rule], table_name: str) -> None:
    chains = [Chain(n) for n in ("KUBE-SVC-ABC", "KUBE-SEP-XYZ", "OTHER")]
    table = Table(
        family="ip",
        name=table_name,
        dialect="iptables",
        chains=[*chains, Chain("OTHER2", rules=rules)],
    )
    ruleset = Ruleset(mode="iptables", tables=[table])
    try:
        expected: str | None = _reference_restore(ruleset)
    except RulesRenderError:
        expected = None
    try:
        got: str | None = it.render_restore(ruleset)
    except RulesRenderError:
        got = None
    assert got == expected


@given(st.sampled_from(_ADDRS) | st.from_regex(r"[0-9./]{1,20}", fullmatch=True))
def test_ipv4_prechecks_accept_only_valid_ipv4(text: str) -> None:
    if it._IPV4_CIDR.fullmatch(text):
        assert ipaddress.ip_network(text, strict=False).version == 4
    if it._IPV4_ADDR.fullmatch(text):
        assert ipaddress.ip_address(text).version == 4


@given(st.text(max_size=35) | st.sampled_from(_CHAINS))
def test_chain_name_precheck_accepts_only_valid_names(name: str) -> None:
    if it._SIMPLE_CHAIN_NAME.fullmatch(name) and name not in it._STANDARD_TARGETS:
        it._check_name("chain name", name, it.MAX_CHAIN_NAME_BYTES, "here")
        assert name[0] not in "-!"


@given(
    st.sampled_from(["ip", "ip6", "inet"]),
    st.sampled_from(["saddr", "daddr"]),
    st.sampled_from(_ADDRS),
    st.booleans(),
)
def test_nft_single_address_matches_general_form(
    family: str, field: str, addr: str, negate: bool
) -> None:
    ctx = nt._Ctx(family, {})
    e = IPMatch(field, (addr,), negate)  # type: ignore[arg-type]
    try:
        got: str | None = nt._render_expr(e, ctx, "script", None)
    except RulesRenderError:
        got = None
    try:
        value = nt._ip_value(e.cidrs, ", ")
        expected: str | None = (
            f"{ctx.ip_word(nt._is_ipv6(addr))} {field} {'!= ' if negate else ''}{value}"
        )
    except RulesRenderError:
        expected = None
    assert got == expected


@given(st.sampled_from(["tcp", "udp", "6", "bad word", "{x}", ""]), st.booleans())
def test_nft_single_protocol_matches_general_form(proto: str, negate: bool) -> None:
    e = ProtoMatch((proto,), negate)
    try:
        got: str | None = nt._render_expr(e, nt._Ctx("ip", {}), "script", None)
    except RulesRenderError:
        got = None
    try:
        expected: str | None = f"meta l4proto {'!= ' if negate else ''}{nt._proto_text(proto)}"
    except RulesRenderError:
        expected = None
    assert got == expected


_FAST_SHAPES = [
    Rule([IPMatch("saddr", ["10.1.2.3"])], Jump("KUBE-SVC-ABC")),
    Rule([IPMatch("daddr", ["10.0.0.0/8", "192.168.0.0/16"])], Goto("KUBE-SEP-XYZ"), "a b"),
    Rule(
        [
            ProtoMatch(["tcp"]),
            IPMatch("daddr", ["172.16.0.1"]),
            PortMatch("dport", [(80, 80)]),
            IPMatch("saddr", ["10.128.0.0/9"], negate=True),
        ],
        Jump("KUBE-SVC-ABC"),
        "ns/svc:http cluster IP",
    ),
    Rule([ProtoMatch(["udp"]), PortMatch("sport", [(1000, 2000)], negate=True)], Jump("OTHER")),
    Rule([ProtoMatch(["tcp"])], DNAT("10.128.0.7", 8080)),
    Rule([], DNAT("10.128.0.7")),
    Rule([StatisticMatch(0.1, "0.1000000000")], Jump("KUBE-SEP-XYZ")),
    Rule([AddrTypeMatch("daddr", "LOCAL", limit_iface_in=True)], Jump("OTHER"), "x"),
    Rule([AddrTypeMatch("saddr", "LOCAL,UNICAST", negate=True)], Jump("OTHER")),
    Rule([], Jump("KUBE-SVC-ABC"), 'say "hi"'),
]


def test_fast_shapes_render_as_before() -> None:
    chains = [Chain(n) for n in ("KUBE-SVC-ABC", "KUBE-SEP-XYZ", "OTHER")]
    table = Table(
        family="ip",
        name="nat",
        dialect="iptables",
        chains=[*chains, Chain("OTHER2", rules=_FAST_SHAPES)],
    )
    user_chains = frozenset(c.name for c in table.chains)
    for rule in _FAST_SHAPES:  # every shape takes the fast path
        assert it._fast_line("OTHER2", rule, "nat", "ip", user_chains) is not None, rule
    ruleset = Ruleset(mode="iptables", tables=[table])
    assert it.render_restore(ruleset) == _reference_restore(ruleset)
    assert it.render_restore(ruleset, builtin_chains=False) == _reference_restore(ruleset)


_nft_exprs = st.one_of(
    st.builds(
        IPMatch,
        st.sampled_from(["saddr", "daddr", "bogus"]),
        st.lists(st.sampled_from([*_ADDRS, "10.0.0.1/{x}", "[fd00::1]"]), max_size=2),
        st.booleans(),
    ),
    st.builds(
        ProtoMatch,
        st.lists(st.sampled_from(["tcp", "udp", "6", "bad word", '"q"', "{x}", ""]), max_size=2),
        st.booleans(),
    ),
    st.builds(PortMatch, st.sampled_from(["sport", "dport"]), st.just([(80, 80)])),
    st.builds(CtStateMatch, st.just(("NEW",))),
)
_NFT_CHAINS = ["svc-a", "ns/svc", "bad name", "", "x" * 256, "é", "9bad"]
_nft_targets = st.one_of(
    st.builds(Jump, st.sampled_from(_NFT_CHAINS)),
    st.builds(Goto, st.sampled_from(_NFT_CHAINS)),
)
_nft_verdicts = st.one_of(
    st.none(),
    _nft_targets,
    st.builds(
        DNAT,
        st.sampled_from(["10.0.0.1", "fd00::1", "bad addr", ""]),
        st.sampled_from([None, 0, 8080, 65535, 65536, -1]),
    ),
    st.just(Accept()),
    st.builds(
        NumgenVmap,
        st.sampled_from([0, 1, 2, 3]),
        st.lists(st.tuples(st.integers(0, 3), _nft_targets | st.just(Accept())), max_size=3),
        st.sampled_from([0, 0, 5]),
    ),
)


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(_nft_exprs, max_size=3),
    _nft_verdicts,
    st.sampled_from([None, "c"]),
    st.sampled_from(["ip", "ip6", "inet"]),
    st.sampled_from(["script", "list"]),
    st.sets(st.sampled_from(_NFT_CHAINS)),
)
def test_nft_fast_rule_matches_general(
    exprs: list[IPMatch],
    verdict: Jump | None,
    comment: str | None,
    family: str,
    style: nt.Style,
    declared: set[str],
) -> None:
    rule = Rule(exprs, verdict, comment)
    # the renderer passes only chain names that passed _check_name
    checked = frozenset(name for name in declared if nt._name_ok(name))
    ctx = nt._Ctx(family, {}, checked)
    write = nt._fast_writer(ctx, style)
    for _ in range(2):  # the second time, texts checked the first time are known
        fast = write(rule)
        if fast is not None:
            assert fast == nt._render_rule_general(rule, ctx, style)
        assert fast == nt._fast_rule(rule, ctx, style)


def test_nft_fast_rule_takes_compiler_shapes() -> None:
    ctx = nt._Ctx("ip", {}, frozenset(["endpoint-a", "endpoint-b"]))
    shapes = [
        Rule([IPMatch("saddr", ["10.1.2.3"])], Jump("mark-for-masquerade")),
        Rule([ProtoMatch(["tcp"])], DNAT("10.1.2.3", 8080)),
        Rule(
            [IPMatch("daddr", ["172.16.0.1"]), IPMatch("saddr", ["10.0.0.0/8"], negate=True)],
            Jump("mark-for-masquerade"),
        ),
        Rule([], NumgenVmap(2, [(0, Goto("endpoint-a")), (1, Goto("endpoint-b"))])),
    ]
    for style in ("script", "list"):
        write = nt._fast_writer(ctx, style)  # type: ignore[arg-type]
        for rule in shapes:
            fast = write(rule)
            assert fast is not None, rule
            assert fast == nt._render_rule_general(rule, ctx, style)  # type: ignore[arg-type]


@given(st.text(max_size=12) | st.text(alphabet='az09_-./:,=+@%^~ "\\\n', max_size=12))
def test_restore_safe_regex_is_the_character_set(value: str) -> None:
    by_set = bool(value) and all(c in it._RESTORE_SAFE for c in value)
    assert bool(it._RESTORE_SAFE_WORD.fullmatch(value)) == by_set
