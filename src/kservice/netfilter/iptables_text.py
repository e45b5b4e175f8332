"""The iptables text formats, both ways: ``iptables-restore`` input and ``iptables-save`` output.

Three functions over the :class:`~kservice.netfilter.ruleset.Ruleset` model:

* :func:`render_restore` prints what kube-proxy feeds ``iptables-restore``:
  per table ``*nat`` ... ``COMMIT``, chain declarations ``:KUBE-SERVICES - [0:0]``,
  then ``-A CHAIN ...`` rules with every match in the order the :class:`Rule`
  holds it, spelled as kube-proxy spells it (``-m comment --comment "..."``
  first, ``-m tcp -p tcp``, bare ``-d 172.30.0.41``, ``--probability`` exactly
  as the model's text). Byte-exact with the expected dumps of upstream's
  ``pkg/proxy/iptables/proxier_test.go``.
* :func:`render_save` prints what ``iptables-save`` (iptables-nft 1.8) prints
  back once the kernel holds the rules: generic options first (``-s -d -i -o
  -p -f``), then the match modules in rule order, addresses with their prefix,
  marks as ``--set-xmark``, probabilities as the kernel stores them, tables and
  chains in the tool's order. It is ``normalise(ruleset)`` printed.
* :func:`parse` reads both formats (and real node dumps: counters, ``#``
  comments, other tools' chains and tables, matches and targets the model has
  no type for) into a :class:`ParseResult`: the Ruleset plus line-numbered
  :class:`ParseWarning` for everything kept verbatim as :class:`RawMatch` /
  :class:`RawStatement` or otherwise worth a look. Malformed lines raise
  :class:`RulesParseError`.

Conventions of the ``iptables`` dialect (what the parser produces and the
renderers expect):

* Built-in chains (``PREROUTING`` ... per table, :data:`BUILTIN_CHAINS`) have
  ``hook`` = the lower-cased name and ``policy`` = ``"ACCEPT"``/``"DROP"`` as
  iptables prints it (``None``: not declared, the chain keeps its policy);
  ``type``/``priority`` stay ``None``. User chains have neither hook nor policy.
* ``Rule.comment`` is the ``-m comment`` match *when it is the rule's first
  match module*, where kube-proxy always puts it. A comment module anywhere
  else is kept in place as a ``RawMatch("-m comment --comment ...")``.
* A ``ProtoMatch`` of ``tcp``/``udp``/``sctp`` (not negated) loads that
  protocol's match module, as kube-proxy's iptables mode writes it: ``-m tcp
  -p tcp``; its ``PortMatch`` (one range) are options of that module
  (``--dport 80``); a ``PortMatch`` of several ranges is ``-m multiport
  --dports 80,443``. When the rule carries a ``RawMatch`` loading the module
  itself (``-m tcp --syn``), the protocol is a bare ``-p tcp``. With
  ``ProtoMatch.module=False`` the rule loads no such module: a bare ``-p tcp``
  that takes no ``--dport``, as kube-proxy's IPVS proxier writes it; leading
  the rule, it is written ahead of the comment (``-A KUBE-NODE-PORT -p tcp -m
  comment --comment "..." -m set ...``, byte for byte kube-proxy's line). The
  parser reads a ``-p tcp`` with no ``-m tcp`` anywhere in the rule that way.
* ``SetMatch.keys`` are packet fields; ipset's direction flags are derived
  (``daddr``/``dport``/``oif`` -> ``dst``, the others ``src``) and read back
  with the set's type (``parse(..., set_types=...)``).
* Values are kept as written: ``parse`` of save output gives ``172.30.0.41/32``
  where kube-proxy's restore input says ``172.30.0.41``. :func:`normalise` maps
  any Ruleset to the kernel's form, so ``parse(render_save(r)).ruleset ==
  normalise(r)`` and a compiled Ruleset compares with a kernel dump as
  ``normalise(compiled) == parse(dump).ruleset``.

Limits the kernel enforces and the renderers check rather than let the kernel
silently change the rules (or refuse them at restore time): comments are at
most 255 bytes (iptables truncates longer ones without a word), chain names at
most 28 bytes and never a standard target, interface names 15, ipset names 31;
no name or comment may contain a newline or NUL, and names are never quoted,
so they may not contain whitespace or ``"``. Comments are quoted and escaped
whenever needed, so no comment can break out of its place. REJECT lives in
filter, the NAT targets in nat, DROP never in nat; ``!`` cannot go with
several ``-s``/``-d`` addresses; IPv6 addrtype has no BROADCAST and friends.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import ipaddress
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Final, Literal, TypeAlias

import attrs

from kservice._gc import gc_paused
from kservice.errors import KServiceError
from kservice.netfilter.ruleset import (
    DNAT,
    SNAT,
    Accept,
    AddrTypeMatch,
    Chain,
    Counter,
    CtStateMatch,
    Drop,
    Goto,
    IfaceMatch,
    IPMatch,
    Jump,
    MarkMatch,
    MarkSet,
    Masquerade,
    Match,
    NumgenVmap,
    PortMatch,
    ProtoMatch,
    RawMatch,
    RawStatement,
    RecentMatch,
    Reject,
    Return,
    Rule,
    Ruleset,
    SetMatch,
    SetUpdate,
    Statement,
    StatisticMatch,
    Table,
    Verdict,
    VmapLookup,
)

__all__ = [
    "BUILTIN_CHAINS",
    "MAX_CHAIN_NAME_BYTES",
    "MAX_COMMENT_BYTES",
    "SAVE_TABLE_ORDER",
    "ParseResult",
    "ParseWarning",
    "RulesParseError",
    "RulesRenderError",
    "normalise",
    "parse",
    "render_restore",
    "render_save",
]

Family: TypeAlias = Literal["ip", "ip6"]
Expr: TypeAlias = Match | Statement

# ------------------------------------------------------------------------- kernel facts
#: Built-in chains of each iptables table, in the order iptables-save prints them.
BUILTIN_CHAINS: Final[Mapping[str, tuple[str, ...]]] = {
    "raw": ("PREROUTING", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
#: iptables-nft's table order in iptables-save output (its ``enum nft_table_type``);
#: iptables-legacy prints tables in kernel registration order instead.
SAVE_TABLE_ORDER: Final[tuple[str, ...]] = ("mangle", "security", "raw", "filter", "nat")
#: ``XT_MAX_COMMENT_LEN`` is 256 with the NUL; longer comments are silently truncated.
MAX_COMMENT_BYTES: Final = 255
#: ``XT_EXTENSION_MAXNAMELEN`` is 29 with the NUL; iptables-restore rejects longer names.
MAX_CHAIN_NAME_BYTES: Final = 28
_MAX_IFNAME_BYTES: Final = 15  # IFNAMSIZ - 1
_MAX_SET_NAME_BYTES: Final = 31  # IPSET_MAXNAMELEN - 1
_MAX_RECENT_NAME_BYTES: Final = 199  # XT_RECENT_NAME_LEN - 1
_MAX_MULTIPORT: Final = 15  # XT_MULTI_PORTS; a range counts twice
_POLICIES: Final = ("ACCEPT", "DROP")
_PORT_PROTOCOLS: Final = ("tcp", "udp", "sctp")
# conntrack --ctstate and addrtype type names in the order the kernel's bits print.
_CT_STATES: Final = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
_ADDR_TYPES: Final = (
    "UNSPEC",
    "UNICAST",
    "LOCAL",
    "BROADCAST",
    "ANYCAST",
    "MULTICAST",
    "BLACKHOLE",
    "UNREACHABLE",
    "PROHIBIT",
    "THROW",
    "NAT",
    "XRESOLVE",
)
# Types xt_addrtype refuses for IPv6 (checked against the kernel: RULE_APPEND fails).
_NO_IPV6_ADDR_TYPES: Final = frozenset(
    ("BROADCAST", "BLACKHOLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE")
)
# /etc/protocols names iptables-save prints for protocol numbers (getprotobynumber).
_PROTO_BY_NUMBER: Final[Mapping[int, str]] = {
    1: "icmp",
    2: "igmp",
    6: "tcp",
    17: "udp",
    33: "dccp",
    41: "ipv6",
    47: "gre",
    50: "esp",
    51: "ah",
    58: "ipv6-icmp",
    132: "sctp",
    135: "mobility-header",
    136: "udplite",
}
_PROTO_NUMBER: Final[Mapping[str, int]] = {
    **{name: num for num, name in _PROTO_BY_NUMBER.items()},
    "all": 0,
    "icmpv6": 58,
    "ipv6-mh": 135,
    "mh": 135,
}
# REJECT --reject-with: canonical name per alias, per family (libipt_REJECT, libip6t_REJECT).
_REJECT_WITH: Final[Mapping[Family, Mapping[str, str]]] = {
    "ip": {
        **{
            n: n
            for n in (
                "icmp-net-unreachable",
                "icmp-host-unreachable",
                "icmp-proto-unreachable",
                "icmp-port-unreachable",
                "icmp-net-prohibited",
                "icmp-host-prohibited",
                "icmp-admin-prohibited",
                "tcp-reset",
            )
        },
        "net-unreach": "icmp-net-unreachable",
        "host-unreach": "icmp-host-unreachable",
        "proto-unreach": "icmp-proto-unreachable",
        "port-unreach": "icmp-port-unreachable",
        "net-prohib": "icmp-net-prohibited",
        "host-prohib": "icmp-host-prohibited",
        "admin-prohib": "icmp-admin-prohibited",
        "tcp-rst": "tcp-reset",
    },
    "ip6": {
        **{
            n: n
            for n in (
                "icmp6-no-route",
                "icmp6-adm-prohibited",
                "icmp6-addr-unreachable",
                "icmp6-port-unreachable",
                "icmp6-policy-fail",
                "icmp6-reject-route",
                "tcp-reset",
            )
        },
        "no-route": "icmp6-no-route",
        "adm-prohibited": "icmp6-adm-prohibited",
        "addr-unreach": "icmp6-addr-unreachable",
        "port-unreach": "icmp6-port-unreachable",
        "policy-fail": "icmp6-policy-fail",
        "reject-route": "icmp6-reject-route",
        "tcp-rst": "tcp-reset",
    },
}
_REJECT_DEFAULT: Final[Mapping[Family, str]] = {
    "ip": "icmp-port-unreachable",
    "ip6": "icmp6-port-unreachable",
}
_FULL_MASK: Final[Mapping[Family, str]] = {
    "ip": "255.255.255.255",
    "ip6": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
}
_U32: Final = 0xFFFFFFFF
#: Targets iptables knows without options of ours; a ``-j NAME`` that is not a chain
#: of the table and not one of these is taken as a jump to an undeclared chain.
_KNOWN_TARGETS: Final = frozenset(
    re.findall(
        r"\S+",
        "ACCEPT DROP RETURN QUEUE REJECT DNAT SNAT MASQUERADE MARK LOG NFLOG NFQUEUE CT "
        "NOTRACK CONNMARK CONNSECMARK SECMARK TRACE TCPMSS TPROXY REDIRECT NETMAP CLASSIFY "
        "CHECKSUM DSCP TOS TTL HL AUDIT CLUSTERIP TEE SET ULOG LED IDLETIMER RATEEST HMARK "
        "SYNPROXY TCPOPTSTRIP",
    )
)
#: Names iptables-restore refuses for chains ("chain name may not clash with target name").
_STANDARD_TARGETS: Final = frozenset(("ACCEPT", "DROP", "RETURN", "QUEUE"))
_SET_DIRECTIONS: Final[Mapping[str, str]] = {
    "saddr": "src",
    "sport": "src",
    "iif": "src",
    "daddr": "dst",
    "dport": "dst",
    "oif": "dst",
}


# ------------------------------------------------------------------------------ errors
class RulesParseError(KServiceError, ValueError):
    """A line of iptables text is malformed (could move to :mod:`kservice.errors`).

    ``line`` is 1-based; ``text`` is the offending line as read.
    """

    def __init__(self, message: str, *, line: int | None = None, text: str | None = None):
        self.message = message
        self.line = line
        self.text = text
        where = f"line {line}: " if line is not None else ""
        shown = f": {text!r}" if text is not None else ""
        super().__init__(f"{where}{message}{shown}")


class RulesRenderError(KServiceError, ValueError):
    """A Ruleset cannot be written as iptables text without changing its meaning.

    ``where`` names the table, chain and rule index.
    """

    def __init__(self, message: str, *, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


# ----------------------------------------------------------------------------- results
@attrs.frozen
class ParseWarning:
    """Something the parser kept verbatim or had to assume, at a 1-based line."""

    line: int
    text: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}: {self.text!r}"


@attrs.frozen
class ParseResult:
    """What :func:`parse` read.

    ``chain_counters`` are ``(table, chain, packets, bytes)`` from ``:CHAIN POLICY
    [p:b]`` lines; ``rule_counters`` are ``(table, chain, index, packets, bytes)``
    from ``[p:b] -A ...`` lines (``iptables-save -c``). Counters are kernel state,
    not rules, so they live here rather than in the Ruleset.
    """

    ruleset: Ruleset
    warnings: tuple[ParseWarning, ...] = ()
    chain_counters: tuple[tuple[str, str, int, int], ...] = ()
    rule_counters: tuple[tuple[str, str, int, int, int], ...] = ()


# ------------------------------------------------------------------------ tokenising
_RESTORE_SAFE: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:,=+@%^~"
)
_SAVE_SAFE: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


# A non-empty word of _RESTORE_SAFE characters only (the same test, as one regex).
_RESTORE_SAFE_WORD: Final = re.compile(r"[a-zA-Z0-9_\-./:,=+@%^~]+")


def _quote_restore(value: str) -> str:
    """Quote ``value`` for iptables-restore when its tokenizer needs it.

    Plain words stay bare, as kube-proxy writes ``--comment ns1/svc1:p80``;
    anything else is double-quoted with ``\\`` and ``"`` backslash-escaped (the
    only escapes iptables-restore's ``add_param_to_argv`` honours).
    """
    if _RESTORE_SAFE_WORD.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _quote_save(value: str) -> str:
    """Quote as iptables-save's ``xtables_save_string``: bare only for ``[A-Za-z0-9_-]+``,
    otherwise double quotes with ``"``, ``\\`` and ``'`` backslash-escaped."""
    if value and all(c in _SAVE_SAFE for c in value):
        return value
    out = ['"']
    for c in value:
        if c in "\"\\'":
            out.append("\\")
        out.append(c)
    out.append('"')
    return "".join(out)


# A quoted run: "...", in which a backslash escapes the next character.
_QUOTED: Final = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_ESCAPE: Final = re.compile(r"\\(.)", re.S)


def _words(text: str) -> list[str]:
    if '"' in text:
        raise ValueError("unterminated quote")
    return [w for w in text.replace("\t", " ").split(" ") if w]


def _tokenize(line: str) -> tuple[list[str], list[bool]]:
    """Split a line into arguments as iptables-restore does; also say which were quoted.

    Blanks and tabs separate; outside quotes every other character is literal
    (backslash too); a double quote opens a quoted run, joined to the word before
    it, in which a backslash escapes the next character; the closing quote ends
    the argument.
    """
    if '"' not in line:
        tokens = _words(line)
        return tokens, [False] * len(tokens)
    tokens = []
    quoted: list[bool] = []
    pos = 0
    for m in _QUOTED.finditer(line):
        before = line[pos : m.start()]
        words = _words(before)
        prefix = words.pop() if before and before[-1] not in " \t" else ""
        tokens += words
        quoted += [False] * len(words)
        tokens.append(prefix + _ESCAPE.sub(r"\1", m.group(1)))
        quoted.append(True)
        pos = m.end()
    words = _words(line[pos:])
    return tokens + words, quoted + [False] * len(words)


def _join_restore(tokens: Sequence[str]) -> str:
    return " ".join(t if t == "!" else _quote_restore(t) for t in tokens)


# ------------------------------------------------------------------------- value helpers
def _family_of(ruleset: Ruleset) -> Family:
    return "ip6" if ruleset.family == "IPv6" else "ip"


def _ip_version(family: Family) -> int:
    return 6 if family == "ip6" else 4


def _parse_uint(text: str) -> int:
    """An unsigned integer as ``strtoul(text, NULL, 0)`` reads it (0x hex, 0 octal)."""
    t = text.lower()
    if re.fullmatch(r"0x[0-9a-f]+", t):
        return int(t, 16)
    if re.fullmatch(r"0[0-7]+", t):
        return int(t, 8)
    if re.fullmatch(r"[0-9]+", t):
        return int(t, 10)
    raise ValueError(f"not a number: {text!r}")


def _hex(value: int) -> str:
    return f"0x{value:x}"


def _value_mask(text: str) -> tuple[int, int]:
    value, _, mask = text.partition("/")
    v = _parse_uint(value)
    m = _parse_uint(mask) if mask else _U32
    if v > _U32 or m > _U32:
        raise ValueError(f"mark out of range: {text!r}")
    return v, m


def _fmt_mark(value: int, mask: int) -> str:
    return _hex(value) if mask == _U32 else f"{_hex(value)}/{_hex(mask)}"


def _fmt_range(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}:{r[1]}"


def _parse_range(text: str) -> tuple[int, int]:
    """``80``, ``80:90``, ``:90`` or ``80:`` as iptables reads a port range."""
    m = re.fullmatch(r"([0-9]{0,5})(?:(:)([0-9]{0,5}))?", text)
    if m is None or not (m.group(1) or m.group(2)):
        raise ValueError(f"bad port {text!r} (port names are not read)")
    lo, sep, hi = m.groups()
    a = int(lo) if lo else 0
    b = (int(hi) if hi else 65535) if sep else a
    if not 0 <= a <= b <= 65535:
        raise ValueError(f"bad port {text!r}")
    return a, b


def _ntop(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address as glibc's ``inet_ntop`` prints it (iptables-save uses it).

    Python agrees except for IPv4 inside IPv6: glibc prints ``::ffff:1.2.3.4``
    and ``::1.2.3.4`` when the longest zero run starts the address.
    """
    if addr.version == 4:
        return str(addr)
    words = [int.from_bytes(addr.packed[i : i + 2], "big") for i in range(0, 16, 2)]
    best_base, best_len, run_base, run_len = -1, 0, -1, 0
    for i, word in enumerate([*words, 1]):  # the sentinel closes a trailing run
        if word == 0:
            run_base, run_len = (i, 1) if run_base < 0 else (run_base, run_len + 1)
            continue
        if run_base >= 0 and run_len > best_len:
            best_base, best_len = run_base, run_len
        run_base = -1
    if best_base == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
        v4 = ipaddress.IPv4Address(addr.packed[12:])
        return f"::ffff:{v4}" if best_len == 5 else f"::{v4}"
    return addr.compressed


@functools.lru_cache(maxsize=4096)
def _canon_cidr(text: str, family: Family) -> str:
    net = ipaddress.ip_network(text, strict=False)
    if net.version != _ip_version(family):
        raise ValueError(f"{text!r} is not an {family} address")
    return f"{_ntop(net.network_address)}/{net.prefixlen}"


def _canon_addr(text: str) -> str:
    return _ntop(ipaddress.ip_address(text))


def _quantize_probability(text: str) -> str:
    """The probability iptables-save prints: the kernel keeps ``lround(p * 2**31)``."""
    stored = math.floor(float(text) * 0x80000000 + 0.5)
    return f"{stored / 0x80000000:.11f}"


def _is_builtin(table_name: str, chain_name: str) -> bool:
    return chain_name in BUILTIN_CHAINS.get(table_name, ())


def _raw_first(text: str) -> list[str]:
    try:
        toks, _ = _tokenize(text)
    except ValueError:
        return []
    return toks


def _raw_module_name(match: RawMatch) -> str | None:
    toks = _raw_first(match.text)
    if len(toks) >= 2 and toks[0] in ("-m", "--match"):
        return toks[1]
    return None


def _raw_loads(rule: Rule, module: str) -> bool:
    """Whether a RawMatch of ``rule`` loads match module ``module`` (``-m tcp --syn``)."""
    return any(isinstance(e, RawMatch) and _raw_module_name(e) == module for e in rule.exprs)


def _module_protocol(rule: Rule, match: ProtoMatch) -> str | None:
    """The protocol whose match module this ProtoMatch loads (``-m tcp -p tcp``), if any."""
    if (
        not match.module
        or match.negate
        or len(match.protocols) != 1
        or match.protocols[0] not in _PORT_PROTOCOLS
    ):
        return None
    proto = match.protocols[0]
    if _raw_loads(rule, proto):
        return None
    return proto


def _bare_protocol_first(rule: Rule) -> bool:
    """Whether ``rule`` starts with a module-less ``-p`` (``ProtoMatch.module`` False).

    kube-proxy's IPVS proxier writes that ``-p`` ahead of the comment (``-A
    KUBE-NODE-PORT -p tcp -m comment --comment "..." -m set ...``), and so does
    iptables-restore input written here.
    """
    first = rule.exprs[0] if rule.exprs else None
    return isinstance(first, ProtoMatch) and not first.module


# ----------------------------------------------------------------------- validation
_NAME_BAD = re.compile(r'[\s"\x00]')
_PROTOCOL_NAME: Final = re.compile(r"[a-z0-9][a-z0-9-]*")
_PROBABILITY: Final = re.compile(r"[0-9]+(\.[0-9]+)?")


def _check_name(kind: str, name: str, limit: int, where: str) -> None:
    if not name:
        raise RulesRenderError(f"empty {kind}", where=where)
    if _NAME_BAD.search(name) or not name.isprintable():
        raise RulesRenderError(
            f"{kind} {name!r} contains whitespace, a quote or an unprintable character",
            where=where,
        )
    if len(name.encode()) > limit:
        raise RulesRenderError(f"{kind} {name!r} is longer than {limit} bytes", where=where)


# Chain names _check_chain_name surely accepts (printable ASCII without blanks or
# quotes, at most MAX_CHAIN_NAME_BYTES, not starting with - or !), bar the
# standard targets; anything else takes the full check.
_SIMPLE_CHAIN_NAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,27}")


def _check_chain_name(name: str, where: str) -> None:
    if _SIMPLE_CHAIN_NAME.fullmatch(name) and name not in _STANDARD_TARGETS:
        return
    _check_name("chain name", name, MAX_CHAIN_NAME_BYTES, where)
    if name[0] in "-!":
        raise RulesRenderError(f"chain name {name!r} may not start with {name[0]!r}", where=where)
    if name in _STANDARD_TARGETS:
        raise RulesRenderError(f"chain name {name!r} clashes with a standard target", where=where)


def _check_comment(comment: str, where: str) -> None:
    if "\n" in comment or "\x00" in comment:
        raise RulesRenderError(f"comment {comment!r} contains a newline or NUL", where=where)
    if len(comment.encode()) > MAX_COMMENT_BYTES:
        raise RulesRenderError(
            f"comment is {len(comment.encode())} bytes; iptables keeps only "
            f"{MAX_COMMENT_BYTES} and truncates the rest silently",
            where=where,
        )


# Dotted-quad IPv4 addresses (optionally /0-/32) in the exact form ipaddress accepts:
# no leading zeros, each octet 0-255. A match is valid for family "ip" without
# parsing; anything else goes through ipaddress as before.
_OCTET: Final = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_ADDR: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_IPV4_CIDR: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}(?:/(?:3[0-2]|[12]?[0-9]))?")


def _check_cidr(text: str, family: Family, where: str) -> None:
    if family == "ip" and _IPV4_CIDR.fullmatch(text):
        return
    try:
        _canon_cidr(text, family)
    except ValueError as exc:
        raise RulesRenderError(f"bad address {text!r}: {exc}", where=where) from None


def _check_address(text: str, family: Family, where: str) -> None:
    if family == "ip" and _IPV4_ADDR.fullmatch(text):
        return
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise RulesRenderError(f"bad address {text!r}", where=where) from None
    if addr.version != _ip_version(family):
        raise RulesRenderError(f"{text!r} is not an {family} address", where=where)


def _check_port(port: int | None, where: str) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise RulesRenderError(f"bad port {port}", where=where)


def _check_raw(text: str, kind: str, where: str) -> list[str]:
    if "\n" in text or "\x00" in text:
        raise RulesRenderError(f"{kind} {text!r} contains a newline or NUL", where=where)
    try:
        toks, quoted = _tokenize(text)
    except ValueError:
        raise RulesRenderError(f"{kind} {text!r} has an unterminated quote", where=where) from None
    if not toks:
        raise RulesRenderError(f"empty {kind}", where=where)
    stops = {"-j", "--jump", "-g", "--goto", "-A", "--append", "-I", "--insert"}
    if kind == "RawMatch":
        if toks[0] not in ("-m", "--match", "-f", "--fragment", "!"):
            raise RulesRenderError(
                f"RawMatch {text!r} must be a match module (-m NAME ...) or -f", where=where
            )
        bad = [t for t, q in zip(toks, quoted, strict=True) if t in stops and not q]
    else:
        if toks[0] not in ("-j", "--jump", "-g", "--goto") or len(toks) < 2:
            raise RulesRenderError(
                f"RawStatement {text!r} must be a target (-j NAME ...)", where=where
            )
        bad = [t for t, q in zip(toks[2:], quoted[2:], strict=True) if t in stops and not q]
        bad += [t for t, q in zip(toks[2:], quoted[2:], strict=True) if t in ("-m", "--match")]
    if bad:
        raise RulesRenderError(
            f"{kind} {text!r} would break out of its place ({bad[0]})", where=where
        )
    return toks


def _validate_rule(
    rule: Rule, table: Table, family: Family, chain_names: frozenset[str], where: str
) -> None:
    """Everything that must hold for ``rule`` to be written as one iptables rule."""
    if rule.comment is not None:
        _check_comment(rule.comment, where)
    seen: set[str] = set()
    proto: tuple[str, bool, bool] | None = None  # (protocol, loads its module, negated)
    ports_seen: set[str] = set()
    module_seen = False
    target_seen = False

    def once(key: str) -> None:
        if key in seen:
            raise RulesRenderError(f"more than one {key} in one iptables rule", where=where)
        seen.add(key)

    for e in rule.exprs:
        if target_seen:
            raise RulesRenderError(
                "a MarkSet or RawStatement is the rule's target and must come last", where=where
            )
        if isinstance(e, IPMatch):
            once("-s" if e.field == "saddr" else "-d")
            if not e.cidrs:
                raise RulesRenderError("IPMatch without addresses", where=where)
            if e.negate and len(e.cidrs) > 1:
                raise RulesRenderError("! -s/-d takes a single address", where=where)
            for c in e.cidrs:
                _check_cidr(c, family, where)
                if e.negate and ipaddress.ip_network(c, strict=False).prefixlen == 0:
                    raise RulesRenderError(f"! {c} never matches", where=where)
        elif isinstance(e, IfaceMatch):
            once("-i" if e.field == "iif" else "-o")
            _check_name("interface name", e.name, _MAX_IFNAME_BYTES, where)
            if "/" in e.name or ":" in e.name or e.name in (".", ".."):
                raise RulesRenderError(f"bad interface name {e.name!r}", where=where)
        elif isinstance(e, ProtoMatch):
            once("-p")
            if len(e.protocols) != 1:
                raise RulesRenderError("iptables matches one protocol per rule", where=where)
            p = e.protocols[0]
            if not _PROTOCOL_NAME.fullmatch(p):
                raise RulesRenderError(f"bad protocol {p!r}", where=where)
            if e.negate and p in ("all", "0"):
                raise RulesRenderError("! -p all never matches", where=where)
            if not e.module:
                if e.negate or p not in _PORT_PROTOCOLS:
                    raise RulesRenderError(
                        "ProtoMatch.module=False is for a non-negated tcp, udp or sctp match "
                        "(no other -p loads a module)",
                        where=where,
                    )
                if _raw_loads(rule, p):
                    raise RulesRenderError(
                        f"a RawMatch loads -m {p}, so the module is loaded: "
                        "ProtoMatch.module must be True",
                        where=where,
                    )
            loads = _module_protocol(rule, e) is not None
            proto = (p, loads, e.negate)
            module_seen = module_seen or loads
        elif isinstance(e, PortMatch):
            if not e.ranges:
                raise RulesRenderError("PortMatch without ports", where=where)
            for lo, hi in e.ranges:
                if not 0 <= lo <= hi <= 65535:
                    raise RulesRenderError(f"bad port range {lo}:{hi}", where=where)
            if proto is None or proto[2] or proto[0] not in _PORT_PROTOCOLS:
                raise RulesRenderError(
                    "a PortMatch needs a tcp, udp or sctp ProtoMatch before it", where=where
                )
            if len(e.ranges) == 1:
                if not proto[1]:
                    raise RulesRenderError(
                        "a one-range PortMatch is an option of the protocol's module, which "
                        "the ProtoMatch does not load here (module=False, or a RawMatch "
                        "loads it: put the port in that RawMatch)",
                        where=where,
                    )
                if e.field in ports_seen:
                    raise RulesRenderError(f"more than one --{e.field} in one rule", where=where)
                ports_seen.add(e.field)
            else:
                count = sum(1 if lo == hi else 2 for lo, hi in e.ranges)
                if count > _MAX_MULTIPORT:
                    raise RulesRenderError(
                        f"multiport takes at most {_MAX_MULTIPORT} ports", where=where
                    )
                module_seen = True
        elif isinstance(e, MarkMatch):
            if not (0 <= e.value <= _U32 and 0 <= e.mask <= _U32):
                raise RulesRenderError("mark out of 32-bit range", where=where)
            module_seen = True
        elif isinstance(e, AddrTypeMatch):
            types = e.addr_type.split(",")
            if not all(t in _ADDR_TYPES for t in types):
                raise RulesRenderError(f"bad address type {e.addr_type!r}", where=where)
            if family == "ip6" and set(types) & _NO_IPV6_ADDR_TYPES:
                raise RulesRenderError(
                    f"IPv6 addrtype cannot match {sorted(set(types) & _NO_IPV6_ADDR_TYPES)}",
                    where=where,
                )
            module_seen = True
        elif isinstance(e, CtStateMatch):
            if not e.states or not all(s in _CT_STATES for s in e.states):
                raise RulesRenderError(f"bad conntrack states {e.states!r}", where=where)
            module_seen = True
        elif isinstance(e, StatisticMatch):
            if not _PROBABILITY.fullmatch(e.text) or not 0.0 <= float(e.text) <= 1.0:
                raise RulesRenderError(f"bad probability text {e.text!r}", where=where)
            module_seen = True
        elif isinstance(e, RecentMatch):
            _check_name("recent list name", e.name, _MAX_RECENT_NAME_BYTES, where)
            if "/" in e.name:
                raise RulesRenderError(f"recent list name {e.name!r} contains '/'", where=where)
            if e.seconds is not None and (e.seconds < 1 or e.mode not in ("rcheck", "update")):
                raise RulesRenderError("--seconds needs --rcheck or --update", where=where)
            if e.reap and e.seconds is None:
                raise RulesRenderError("--reap needs --seconds", where=where)
            if e.mask is not None:
                _check_address(e.mask, family, where)
            module_seen = True
        elif isinstance(e, SetMatch):
            _check_name("set name", e.set_name, _MAX_SET_NAME_BYTES, where)
            if not 1 <= len(e.keys) <= 6 or not all(k in _SET_DIRECTIONS for k in e.keys):
                raise RulesRenderError(
                    f"ipset keys {e.keys!r}: each must be one of {sorted(_SET_DIRECTIONS)}",
                    where=where,
                )
            module_seen = True
        elif isinstance(e, RawMatch):
            toks = _check_raw(e.text, "RawMatch", where)
            name = toks[1] if toks[0] in ("-m", "--match") and len(toks) > 1 else None
            if name == "comment" and not module_seen and rule.comment is None:
                raise RulesRenderError(
                    "a comment RawMatch before every other match module would read back as "
                    "Rule.comment; set Rule.comment instead",
                    where=where,
                )
            if name is not None:
                module_seen = True
        elif isinstance(e, MarkSet):
            if not (0 <= e.value <= _U32 and 0 <= e.mask <= _U32):
                raise RulesRenderError("mark out of 32-bit range", where=where)
            if e.op != "set" and e.mask != _U32:
                raise RulesRenderError(f"--{e.op}-mark takes no mask", where=where)
            target_seen = True
        elif isinstance(e, RawStatement):
            toks = _check_raw(e.text, "RawStatement", where)
            if toks[1] in chain_names:
                raise RulesRenderError(
                    f"RawStatement {e.text!r} names chain {toks[1]!r} of this table: "
                    "it would read back as a jump",
                    where=where,
                )
            target_seen = True
        elif isinstance(e, Counter | SetUpdate):
            raise RulesRenderError(
                f"{type(e).__name__} is an nftables statement; iptables has none", where=where
            )
        else:  # pragma: no cover - the Match/Statement unions are exhaustive
            raise RulesRenderError(f"unknown expression {e!r}", where=where)

    _check_recent_set(rule, where)
    ips = [e for e in rule.exprs if isinstance(e, IPMatch)]
    if any(e.negate for e in ips) and any(len(e.cidrs) > 1 for e in ips):
        raise RulesRenderError(
            "! is not allowed with multiple source or destination addresses", where=where
        )
    v = rule.verdict
    # Targets bound to a table: xt_REJECT is filter-only, the NAT targets nat-only, and
    # iptables refuses DROP in nat ("not intended for filtering").
    if isinstance(v, Reject) and table.name != "filter":
        raise RulesRenderError("REJECT is valid only in the filter table", where=where)
    if isinstance(v, DNAT | SNAT | Masquerade) and table.name != "nat":
        raise RulesRenderError(f"{type(v).__name__} is valid only in the nat table", where=where)
    if isinstance(v, Drop) and table.name == "nat":
        raise RulesRenderError("iptables refuses DROP in the nat table", where=where)
    if v is not None and target_seen:
        raise RulesRenderError(
            "an iptables rule has one target: a MarkSet/RawStatement and a verdict cannot "
            "share a rule",
            where=where,
        )
    if isinstance(v, Jump | Goto):
        if v.chain not in chain_names:  # the table's own chain names were checked already
            _check_chain_name(v.chain, where)
        if v.chain not in chain_names or _is_builtin(table.name, v.chain):
            raise RulesRenderError(
                f"{'jump' if isinstance(v, Jump) else 'goto'} to {v.chain!r}, which is not a "
                f"user chain of table {table.name}",
                where=where,
            )
    elif isinstance(v, Reject):
        if v.with_ is not None and v.with_ not in _REJECT_WITH[family]:
            raise RulesRenderError(f"bad --reject-with {v.with_!r} for {family}", where=where)
        if v.with_ in ("tcp-reset", "tcp-rst") and (proto is None or proto[0] != "tcp" or proto[2]):
            raise RulesRenderError("--reject-with tcp-reset needs -p tcp", where=where)
    elif isinstance(v, DNAT | SNAT):
        _check_address(v.address, family, where)
        _check_port(v.port, where)
        if v.port is not None and (proto is None or proto[2] or proto[0] not in _PORT_PROTOCOLS):
            raise RulesRenderError(
                "a NAT port needs a tcp, udp or sctp ProtoMatch in the rule", where=where
            )
    elif isinstance(v, VmapLookup | NumgenVmap):
        raise RulesRenderError(f"{type(v).__name__} is an nftables verdict", where=where)


@functools.lru_cache(maxsize=1024)
def _probability_ok(text: str) -> bool:
    return bool(_PROBABILITY.fullmatch(text)) and 0.0 <= float(text) <= 1.0


def _fast_line(
    chain_name: str, rule: Rule, table_name: str, family: Family, user_chains: AbstractSet[str]
) -> str | None:
    """The ``-A`` line of ``rule``, or None when the shortcut is not sure it is valid.

    One call of :func:`_fast_writer`'s writer (see there); renderers make the
    writer once per table instead.
    """
    return _fast_writer(table_name, family, user_chains)("-A " + chain_name, rule)


#: ``-m PROTO -p PROTO`` of the protocols the shortcut writes.
_FAST_PROTO_WORDS: Final = {p: f" -m {p} -p {p}" for p in _PORT_PROTOCOLS}


def _fast_comment_words(comment: str) -> str:
    """`` -m comment --comment TEXT`` if :func:`_check_comment` passes, else ``""``."""
    if "\n" in comment or "\x00" in comment or len(comment.encode()) > MAX_COMMENT_BYTES:
        return ""
    return " -m comment --comment " + _quote_restore(comment)


def _fast_writer(
    table_name: str, family: Family, user_chains: AbstractSet[str]
) -> Callable[[str, Rule], str | None]:
    """A writer of the ``-A`` lines of one table's rules, for the commonest shapes.

    ``writer(head, rule)`` (``head`` is ``"-A CHAIN"``) gives the rule's line,
    or None when this shortcut is not sure the rule is valid. It covers the
    shapes compilers emit by the thousand (IPv4 addresses, one non-negated
    tcp/udp/sctp protocol, one-range ports, probabilities, address types,
    jumps to the table's own chains, DNAT; ``user_chains`` is the table's
    chain names less its built-in ones). Every check it makes is one
    :func:`_validate_rule` makes, so a line comes back only for a rule that
    validator accepts, and the line is the one :func:`_restore_rule` writes.
    Anything else (other types, subclasses, IPv6, multiport, ...) gets None and
    goes to the full validator, which also produces the error message.

    Texts that repeat (comments, probabilities, addresses) are checked once per
    writer.
    """
    if family != "ip":
        return _no_fast_line
    nat = table_name == "nat"
    comments: dict[str, str] = {}  # comment -> its words ("" if not for the shortcut)
    probabilities: dict[str, str] = {}
    # Texts _IPV4_CIDR / _IPV4_ADDR matched (an endpoint's or a ClusterIP's address
    # appears in two rules); a plain address matches both.
    good_cidrs: set[str] = set()
    good_addrs: set[str] = set()
    cidr_ok = _IPV4_CIDR.fullmatch
    addr_ok = _IPV4_ADDR.fullmatch
    proto_words = _FAST_PROTO_WORDS

    def cidr_good(c: str) -> bool:
        if not cidr_ok(c):
            return False
        good_cidrs.add(c)
        if "/" not in c:
            good_addrs.add(c)
        return True

    def write(head: str, rule: Rule) -> str | None:
        comment = rule.comment
        text = head
        if comment is not None:
            words = comments.get(comment)
            if words is None:
                words = comments[comment] = _fast_comment_words(comment)
            if not words:  # not for the shortcut
                return None
            text += words
        proto: str | None = None
        seen = 0  # -s 1, -d 2, --sport 4, --dport 8
        neg_ip = multi_ip = False
        for e in rule.exprs:
            if isinstance(e, IPMatch):
                cidrs = e.cidrs
                neg = e.negate
                if len(cidrs) == 1:
                    c = cidrs[0]
                    if c not in good_cidrs and not cidr_good(c):
                        return None
                    if neg:
                        if c.endswith("/0"):  # never matches
                            return None
                        neg_ip = True
                elif not cidrs or neg:
                    return None
                else:
                    for c in cidrs:
                        if c not in good_cidrs and not cidr_good(c):
                            return None
                    c = ",".join(cidrs)
                    multi_ip = True
                if e.field == "saddr":
                    if seen & 1:
                        return None
                    seen |= 1
                    text += (" ! -s " if neg else " -s ") + c
                else:
                    if seen & 2:
                        return None
                    seen |= 2
                    text += (" ! -d " if neg else " -d ") + c
            elif isinstance(e, ProtoMatch):
                if proto is not None or e.negate or len(e.protocols) != 1 or not e.module:
                    return None
                proto = e.protocols[0]
                words = proto_words.get(proto)
                if words is None:
                    return None
                # no RawMatch gets through here, so the protocol loads its module
                text += words
            elif isinstance(e, StatisticMatch):
                p = e.text
                words = probabilities.get(p)
                if words is None:
                    if not _probability_ok(p):
                        return None
                    words = probabilities[p] = " -m statistic --mode random --probability " + p
                text += words
            elif isinstance(e, PortMatch):
                ranges = e.ranges
                if proto is None or len(ranges) != 1:
                    return None
                lo, hi = ranges[0]
                if not 0 <= lo <= hi <= 65535:
                    return None
                if e.field == "dport":
                    if seen & 8:
                        return None
                    seen |= 8
                    opt = " ! --dport " if e.negate else " --dport "
                else:
                    if seen & 4:
                        return None
                    seen |= 4
                    opt = " ! --sport " if e.negate else " --sport "
                text += opt + (str(lo) if lo == hi else f"{lo}:{hi}")
            elif isinstance(e, AddrTypeMatch):
                for a in e.addr_type.split(","):
                    if a not in _ADDR_TYPES:
                        return None
                text += " " + " ".join(_module_words(e, save=False, family=family))
            else:
                return None
        if neg_ip and multi_ip:
            return None
        v = rule.verdict
        if isinstance(v, Jump):
            if v.chain not in user_chains:
                return None
            return text + " -j " + v.chain
        if isinstance(v, DNAT):
            address = v.address
            port = v.port
            if not nat:
                return None
            if address not in good_addrs:
                if not addr_ok(address):
                    return None
                good_addrs.add(address)
                good_cidrs.add(address)
            if port is None:
                return text + " -j DNAT --to-destination " + address
            if not 1 <= port <= 65535 or proto is None:
                return None
            return f"{text} -j DNAT --to-destination {address}:{port}"
        if isinstance(v, Goto):
            if v.chain not in user_chains:
                return None
            return text + " -g " + v.chain
        return None

    return write


def _no_fast_line(head: str, rule: Rule) -> None:
    return None


def _check_recent_set(rule: Rule, where: str) -> None:
    """Refuse a ``-m recent ... --set`` iptables would hand to ``-m set`` instead.

    iptables merges an extension's options once, when the extension is first
    loaded, and an option both know goes to the one merged last: once ``-m set``
    was loaded after ``-m recent``, a later ``--set`` belongs to the set match
    (``option "--set" requires an argument``).
    """
    first_recent: int | None = None
    first_set: int | None = None
    for i, e in enumerate(rule.exprs):
        if isinstance(e, RecentMatch):
            if first_recent is None:
                first_recent = i
            if e.mode == "set" and first_set is not None and first_recent < first_set:
                raise RulesRenderError(
                    "iptables gives this RecentMatch's --set to the SetMatch loaded before "
                    "it; put the RecentMatch ahead of every SetMatch",
                    where=where,
                )
        elif isinstance(e, SetMatch) and first_set is None:
            first_set = i


def _iptables_tables(ruleset: Ruleset) -> list[Table]:
    family = _family_of(ruleset)
    tables: list[Table] = []
    seen: set[str] = set()
    for t in ruleset.tables:
        if t.dialect != "iptables":
            raise RulesRenderError(
                f"table {t.family} {t.name} is of dialect {t.dialect!r}, not iptables"
            )
        if t.family != family:
            raise RulesRenderError(
                f"table {t.family} {t.name} in an {ruleset.family} ruleset (one family per text)"
            )
        if t.name not in BUILTIN_CHAINS:
            raise RulesRenderError(f"iptables has no table {t.name!r}")
        if t.name in seen:
            raise RulesRenderError(f"table {t.name} appears twice")
        if t.sets or t.comment is not None:
            raise RulesRenderError(f"table {t.name}: iptables tables carry no sets or comment")
        seen.add(t.name)
        tables.append(t)
    return tables


def _validate_table(table: Table, family: Family) -> None:
    _table_lines(table, family)


def _validate_chains(table: Table) -> frozenset[str]:
    """Check the chain declarations of ``table``; return its chain names."""
    names: set[str] = set()
    builtins = BUILTIN_CHAINS.get(table.name, ())
    for chain in table.chains:
        if (
            chain.name not in names
            and _SIMPLE_CHAIN_NAME.fullmatch(chain.name)
            and chain.name not in _STANDARD_TARGETS
            and chain.name not in builtins
            and chain.comment is None
            and chain.type is None
            and chain.priority is None
            and chain.hook is None
            and chain.policy is None
        ):  # the usual user chain: every check below passes
            names.add(chain.name)
            continue
        where = f"{table.name} {chain.name}"
        _check_chain_name(chain.name, where)
        if chain.name in names:
            raise RulesRenderError("chain declared twice", where=where)
        names.add(chain.name)
        if chain.comment is not None or chain.type is not None or chain.priority is not None:
            raise RulesRenderError(
                "iptables chains carry no comment, type or priority", where=where
            )
        if _is_builtin(table.name, chain.name):
            if chain.hook not in (None, chain.name.lower()):
                raise RulesRenderError(f"built-in chain with hook {chain.hook!r}", where=where)
            if chain.policy is not None and chain.policy not in _POLICIES:
                raise RulesRenderError(f"bad policy {chain.policy!r}", where=where)
        elif chain.hook is not None or chain.policy is not None:
            raise RulesRenderError(
                f"{chain.name!r} is not a built-in chain of table {table.name}; "
                "it can have no hook or policy",
                where=where,
            )
    return frozenset(names)


# --------------------------------------------------------------------- rendering: words
def _set_flags(keys: Sequence[str]) -> str:
    return ",".join(_SET_DIRECTIONS[k] for k in keys)


def _recent_words(e: RecentMatch, *, save: bool, family: Family) -> list[str]:
    neg = ["!"] if e.negate else []
    mode = [*neg, f"--{e.mode}"]
    timing = (["--seconds", str(e.seconds)] if e.seconds is not None else []) + (
        ["--reap"] if e.reap else []
    )
    if save:
        mask = e.mask if e.mask is not None else _FULL_MASK[family]
        return ["-m", "recent", *mode, *timing, "--name", e.name, "--mask", mask, f"--{e.side}"]
    words = ["-m", "recent", "--name", e.name]
    if e.mask is not None:
        words += ["--mask", e.mask]
    words += [*mode, *timing]
    if e.side == "rdest":
        words.append("--rdest")
    return words


def _module_words(e: Match, *, save: bool, family: Family) -> list[str]:
    """The ``-m NAME ...`` words of a module-bearing match (not tcp/udp/sctp, not raw)."""
    neg = ["!"] if getattr(e, "negate", False) else []
    if isinstance(e, PortMatch):
        opt = "--dports" if e.field == "dport" else "--sports"
        return ["-m", "multiport", *neg, opt, ",".join(_fmt_range(r) for r in e.ranges)]
    if isinstance(e, MarkMatch):
        return ["-m", "mark", *neg, "--mark", _fmt_mark(e.value, e.mask)]
    if isinstance(e, AddrTypeMatch):
        opt = "--src-type" if e.field == "saddr" else "--dst-type"
        words = ["-m", "addrtype", *neg, opt, e.addr_type]
        return [*words, "--limit-iface-in"] if e.limit_iface_in else words
    if isinstance(e, CtStateMatch):
        return ["-m", "conntrack", *neg, "--ctstate", ",".join(e.states)]
    if isinstance(e, StatisticMatch):
        return ["-m", "statistic", "--mode", "random", "--probability", e.text]
    if isinstance(e, RecentMatch):
        return _recent_words(e, save=save, family=family)
    if isinstance(e, SetMatch):
        return ["-m", "set", *neg, "--match-set", e.set_name, _set_flags(e.keys)]
    raise AssertionError(e)  # pragma: no cover


def _host_port(address: str, port: int | None) -> str:
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _target_words(rule: Rule) -> list[str] | str | None:
    """The target: a word list, raw text (RawStatement), or None (no target)."""
    last = rule.exprs[-1] if rule.exprs else None
    if isinstance(last, RawStatement):
        return last.text
    if isinstance(last, MarkSet):
        if last.op == "set":
            if last.mask == _U32:
                return ["-j", "MARK", "--set-mark", _hex(last.value)]
            return ["-j", "MARK", "--set-xmark", f"{_hex(last.value)}/{_hex(last.mask)}"]
        return ["-j", "MARK", f"--{last.op}-mark", _hex(last.value)]
    v = rule.verdict
    if v is None:
        return None
    if isinstance(v, Accept):
        return ["-j", "ACCEPT"]
    if isinstance(v, Drop):
        return ["-j", "DROP"]
    if isinstance(v, Return):
        return ["-j", "RETURN"]
    if isinstance(v, Jump):
        return ["-j", v.chain]
    if isinstance(v, Goto):
        return ["-g", v.chain]
    if isinstance(v, Reject):
        return ["-j", "REJECT"] + (["--reject-with", v.with_] if v.with_ else [])
    if isinstance(v, DNAT):
        return ["-j", "DNAT", "--to-destination", _host_port(v.address, v.port)]
    if isinstance(v, SNAT):
        return ["-j", "SNAT", "--to-source", _host_port(v.address, v.port)]
    if isinstance(v, Masquerade):
        return ["-j", "MASQUERADE"] + (["--random-fully"] if v.fully_random else [])
    raise AssertionError(v)  # pragma: no cover


def _restore_rule(chain: str, rule: Rule, family: Family) -> str:
    parts = ["-A", chain]
    exprs = rule.exprs
    if rule.comment is not None:
        if _bare_protocol_first(rule):
            first = exprs[0]
            assert isinstance(first, ProtoMatch)
            parts += ("-p", first.protocols[0])
            exprs = exprs[1:]
        parts += ("-m", "comment", "--comment", _quote_restore(rule.comment))
    for e in exprs:
        if isinstance(e, IPMatch):
            if e.negate:
                parts.append("!")
            parts += ("-s" if e.field == "saddr" else "-d", ",".join(e.cidrs))
        elif isinstance(e, IfaceMatch):
            if e.negate:
                parts.append("!")
            parts += ("-i" if e.field == "iif" else "-o", e.name)
        elif isinstance(e, ProtoMatch):
            module = _module_protocol(rule, e)
            if module:
                parts += ("-m", module)
            if e.negate:
                parts.append("!")
            parts += ("-p", e.protocols[0])
        elif isinstance(e, PortMatch) and len(e.ranges) == 1:
            if e.negate:
                parts.append("!")
            lo, hi = e.ranges[0]
            parts += (
                "--dport" if e.field == "dport" else "--sport",
                str(lo) if lo == hi else f"{lo}:{hi}",
            )
        elif isinstance(e, RawMatch):
            parts.append(e.text)
        elif isinstance(e, MarkSet | RawStatement):
            pass  # the target, below
        else:
            parts += _module_words(e, save=False, family=family)  # type: ignore[arg-type]
    v = rule.verdict
    if type(v) is Jump and not (rule.exprs and isinstance(rule.exprs[-1], MarkSet | RawStatement)):
        parts += ("-j", v.chain)  # the commonest target, as _target_words writes it
        return " ".join(parts)
    target = _target_words(rule)
    if isinstance(target, str):
        parts.append(target)
    elif target is not None:
        parts += target
    return " ".join(parts)


def render_restore(ruleset: Ruleset, *, builtin_chains: bool = True) -> str:
    """The ``iptables-restore`` input for ``ruleset``, as kube-proxy writes it.

    Chains are declared in the Table's order, then their rules chain by chain.
    Built-in chains are declared with their policy (``:PREROUTING ACCEPT
    [0:0]``; not at all when ``policy`` is None). kube-proxy itself only
    declares and fills its own chains and hooks them into the built-in ones with
    separate ``iptables -I`` calls: ``builtin_chains=False`` leaves built-in
    chains and their rules out, giving exactly that input.

    Raises :class:`RulesRenderError` for anything iptables cannot express or
    would silently change (nftables-only objects, over-long comments or names,
    two protocols in one rule, ...).
    """
    with gc_paused():  # the many short-lived strings and lists are acyclic
        return _render_restore(ruleset, builtin_chains)


def _render_restore(ruleset: Ruleset, builtin_chains: bool) -> str:
    family = _family_of(ruleset)
    out: list[str] = []
    for table in _iptables_tables(ruleset):
        declarations, lines = _table_lines(table, family, builtin_chains)
        out.append(f"*{table.name}")
        out += declarations
        out += lines
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def _table_lines(
    table: Table, family: Family, builtin_chains: bool = True
) -> tuple[list[str], list[str]]:
    """The chain declarations and ``-A`` lines of ``table``, as ``iptables-restore`` reads them.

    The whole table is validated, built-in chains left out or not
    (:class:`RulesRenderError` at the first rule, in order, that is not
    valid): the fast writer validates and writes the common shapes in one go,
    the rest take the full validator and writer.
    """
    chain_names = _validate_chains(table)
    builtins = BUILTIN_CHAINS[table.name]
    write = _fast_writer(table.name, family, chain_names.difference(builtins))
    repeat = itertools.repeat
    declarations: list[str] = []
    lines: list[str | None] = []
    spans: list[tuple[Chain, int]] = []  # chains with rules, and where their lines start
    hidden: list[tuple[int, int]] = []  # line ranges of built-in chains left out
    for chain in table.chains:
        name = chain.name
        rules = chain.rules
        if name not in builtins:
            declarations.append(f":{name} - [0:0]")
        elif not builtin_chains:
            if rules:
                hidden.append((len(lines), len(lines) + len(rules)))
        elif chain.policy is not None:
            declarations.append(f":{name} {chain.policy} [0:0]")
        if rules:
            spans.append((chain, len(lines)))
            lines += map(write, repeat("-A " + name, len(rules)), rules)
    if None in lines:  # the rules the shortcut left, in order: validate, then write
        starts = [start for _, start in spans]
        i = lines.index(None)
        while True:
            chain, start = spans[bisect.bisect_right(starts, i) - 1]
            rule = chain.rules[i - start]
            where = f"{table.name} {chain.name} rule {i - start}"
            _validate_rule(rule, table, family, chain_names, where)
            lines[i] = _restore_rule(chain.name, rule, family)
            try:
                i = lines.index(None, i + 1)
            except ValueError:
                break
    for lo, hi in reversed(hidden):
        del lines[lo:hi]
    return declarations, lines  # type: ignore[return-value]


# ------------------------------------------------------------------------ normalisation
def _protocol_name(p: str) -> str:
    if p.isdigit():
        return _PROTO_BY_NUMBER.get(int(p), "all" if int(p) == 0 else p)
    num = _PROTO_NUMBER.get(p)
    return _PROTO_BY_NUMBER.get(num, p) if num else p


def _normal_rules(rule: Rule, family: Family) -> list[Rule]:
    """One rule as the kernel holds it; several when ``-s``/``-d`` list several addresses."""
    srcs: list[IPMatch | None] = [None]
    dsts: list[IPMatch | None] = [None]
    for e in rule.exprs:
        if isinstance(e, IPMatch):
            # 0.0.0.0/0 is "any address": the kernel keeps no -s/-d for it.
            one: list[IPMatch | None] = [
                IPMatch(e.field, (_canon_cidr(c, family),), e.negate)
                if e.negate or ipaddress.ip_network(c, strict=False).prefixlen != 0
                else None
                for c in e.cidrs
            ]
            if e.field == "saddr":
                srcs = list(one)
            else:
                dsts = list(one)
    # iptables appends one rule per (source, destination), sources outermost.
    return [_normal_rule(rule, s, d, family) for s in srcs for d in dsts]


def _normal_rule(rule: Rule, src: IPMatch | None, dst: IPMatch | None, family: Family) -> Rule:
    generic: dict[str, list[Expr]] = {k: [] for k in ("s", "d", "i", "o", "p", "f")}
    if src is not None:
        generic["s"].append(src)
    if dst is not None:
        generic["d"].append(dst)
    modules: list[Expr] = []
    statements: list[Expr] = []
    proto_ports: dict[str, list[PortMatch]] = {"sport": [], "dport": []}
    proto_module: ProtoMatch | None = None
    for e in rule.exprs:
        if isinstance(e, IfaceMatch):
            # "-i +" is "any interface": the kernel keeps no interface match for it.
            if e.negate or e.name != "+":
                generic["i" if e.field == "iif" else "o"].append(e)
        elif isinstance(e, ProtoMatch):
            name = _protocol_name(e.protocols[0])
            # A -p without its module stays without (-p 6 is a bare -p tcp).
            loaded = _module_protocol(rule, e) is not None or _raw_loads(rule, name)
            module = loaded or e.negate or name not in _PORT_PROTOCOLS
            canon = ProtoMatch((name,), e.negate, module)
            if _module_protocol(rule, e) is not None:
                proto_module = canon
                modules.append(canon)
            elif name != "all" or e.negate:
                generic["p"].append(canon)
        elif isinstance(e, PortMatch):
            ranges = tuple((lo, hi) for lo, hi in e.ranges)
            if len(ranges) == 1:
                # The kernel keeps 0:65535 as "no port restriction": iptables-save omits it.
                if e.negate or ranges[0] != (0, 65535):
                    proto_ports[e.field].append(PortMatch(e.field, ranges, e.negate))
            else:
                modules.append(PortMatch(e.field, ranges, e.negate))
        elif isinstance(e, RawMatch):
            toks = _raw_first(e.text)
            if toks and toks[0] in ("-m", "--match"):
                modules.append(e)
            else:
                generic["f"].append(e)
        elif isinstance(e, AddrTypeMatch):
            types = e.addr_type.split(",")
            ordered = ",".join(t for t in _ADDR_TYPES if t in types)
            modules.append(attrs.evolve(e, addr_type=ordered))
        elif isinstance(e, CtStateMatch):
            modules.append(attrs.evolve(e, states=tuple(s for s in _CT_STATES if s in e.states)))
        elif isinstance(e, StatisticMatch):
            text = _quantize_probability(e.text)
            modules.append(StatisticMatch(float(text), text))
        elif isinstance(e, RecentMatch):
            recent_mask = _canon_addr(e.mask) if e.mask is not None else _FULL_MASK[family]
            modules.append(attrs.evolve(e, mask=recent_mask))
        elif isinstance(e, MarkSet):
            # libxt_MARK turns every form into --set-xmark VALUE/MASK.
            if e.op == "or":
                value, mask = e.value, e.value
            elif e.op == "xor":
                value, mask = e.value, 0
            elif e.op == "and":
                value, mask = 0, ~e.value & _U32
            else:
                value, mask = e.value, e.mask
            statements.append(MarkSet("set", value, mask))
        elif isinstance(e, RawStatement):
            statements.append(e)
        elif not isinstance(e, IPMatch):
            modules.append(e)
    exprs: list[Expr] = [x for k in ("s", "d", "i", "o", "p", "f") for x in generic[k]]
    for m in modules:
        exprs.append(m)
        if m is proto_module:
            exprs.extend(proto_ports["sport"] + proto_ports["dport"])
    exprs.extend(statements)
    verdict: Verdict | None = rule.verdict
    if isinstance(verdict, Reject):
        with_ = _REJECT_WITH[family][verdict.with_] if verdict.with_ else None
        verdict = Reject(with_ or _REJECT_DEFAULT[family])
    elif isinstance(verdict, DNAT | SNAT):
        verdict = attrs.evolve(verdict, address=_canon_addr(verdict.address))
    return Rule(tuple(exprs), verdict, rule.comment)


def _save_table_key(table: Table) -> int:
    return SAVE_TABLE_ORDER.index(table.name)


def normalise(ruleset: Ruleset) -> Ruleset:
    """``ruleset`` as the kernel gives it back: what ``parse(render_save(ruleset))`` reads.

    * tables in iptables-nft's save order; every built-in chain of a table
      present (policy ACCEPT unless set), in hook order, then user chains
      sorted by name;
    * ``-s``/``-d`` with several addresses expanded into one rule per pair;
      addresses with their prefix and host bits cleared (``10.0.0.1/32``), IPv6
      as ``inet_ntop`` prints it; ``0.0.0.0/0``, ``-i +`` and ``-p all``
      dropped; protocol numbers named (``47`` -> ``gre``);
    * match order as iptables-save prints it: ``-s -d -i -o -p -f`` first, then
      the match modules in rule order (a ``tcp``/``udp``/``sctp`` ProtoMatch at
      its module, followed by its ``--sport`` and ``--dport``); a port range
      ``0:65535`` of that module dropped;
    * conntrack states and address types in kernel bit order; probabilities as
      the kernel stores them (``0.3333333333`` -> ``0.33333333349``); recent
      ``--mask`` explicit; ``MARK`` targets as ``--set-xmark`` (MarkSet op
      ``set``); REJECT with its ``--reject-with``; NAT addresses canonical.

    Chain ``type``/``priority`` are dropped (iptables text has neither); the
    Ruleset's ipsets, virtual servers and interfaces are kept as they are.
    """
    family = _family_of(ruleset)
    tables = sorted(_iptables_tables(ruleset), key=_save_table_key)
    out: list[Table] = []
    for table in tables:
        _validate_table(table, family)
        by_name = {c.name: c for c in table.chains}
        chains: list[Chain] = []
        for name in BUILTIN_CHAINS[table.name]:
            rules = by_name[name].rules if name in by_name else ()
            policy = by_name[name].policy if name in by_name else None
            chains.append(Chain(name, rules, hook=name.lower(), policy=policy or "ACCEPT"))
        chains += sorted(
            (c for c in table.chains if not _is_builtin(table.name, c.name)),
            key=lambda c: c.name.encode(),
        )
        normal = [
            attrs.evolve(c, rules=tuple(n for r in c.rules for n in _normal_rules(r, family)))
            for c in chains
        ]
        out.append(attrs.evolve(table, chains=tuple(normal)))
    return attrs.evolve(ruleset, tables=tuple(out))


# ------------------------------------------------------------------------- save output
def _save_rule(chain: str, rule: Rule, family: Family) -> str:
    """One rule of a normalised Ruleset, as iptables-save prints it."""
    generic: dict[str, list[str]] = {k: [] for k in ("s", "d", "i", "o", "p", "f")}
    modules: list[list[str]] = []
    proto_module: list[str] | None = None
    if rule.comment is not None:
        modules.append(["-m", "comment", "--comment", _quote_save(rule.comment)])
    for e in rule.exprs:
        neg = ["!"] if getattr(e, "negate", False) else []
        if isinstance(e, IPMatch):
            generic["s" if e.field == "saddr" else "d"] += [
                *neg,
                "-s" if e.field == "saddr" else "-d",
                e.cidrs[0],
            ]
        elif isinstance(e, IfaceMatch):
            key = "i" if e.field == "iif" else "o"
            generic[key] += [*neg, f"-{key}", e.name]
        elif isinstance(e, ProtoMatch):
            generic["p"] += [*neg, "-p", e.protocols[0]]
            module = _module_protocol(rule, e)
            if module:
                proto_module = ["-m", module]
                modules.append(proto_module)
        elif isinstance(e, PortMatch) and len(e.ranges) == 1:
            assert proto_module is not None
            proto_module += [*neg, f"--{e.field}", _fmt_range(e.ranges[0])]
        elif isinstance(e, RawMatch):
            toks = _raw_first(e.text)
            if toks and toks[0] in ("-m", "--match"):
                modules.append([e.text])
            else:
                generic["f"].append(e.text)
        elif isinstance(e, MarkSet):
            modules.append(["-j", "MARK", "--set-xmark", f"{_hex(e.value)}/{_hex(e.mask)}"])
        elif isinstance(e, RawStatement):
            modules.append([e.text])
        else:
            modules.append(_module_words(e, save=True, family=family))  # type: ignore[arg-type]
    words = ["-A", chain]
    for k in ("s", "d", "i", "o", "p", "f"):
        words += generic[k]
    for m in modules:
        words += m
    v = rule.verdict
    if v is not None:
        target = _target_words(Rule((), v))
        assert isinstance(target, list)
        words += target
    return " ".join(words)


def render_save(
    ruleset: Ruleset,
    *,
    header: bool = False,
    timestamp: datetime.datetime | None = None,
    version: str = "v1.8.9 (nf_tables)",
) -> str:
    """What ``iptables-save`` prints once the kernel holds ``ruleset``.

    It is :func:`normalise` printed: ``:CHAIN POLICY [0:0]`` for every chain
    (``-`` for user chains), rules in iptables-save's option order, comments
    quoted as ``xtables_save_string`` quotes them. ``header=True`` adds the
    ``# Generated by iptables-save VERSION on DATE`` / ``# Completed on DATE``
    lines; the date is ``timestamp`` (default: the epoch, so output stays
    deterministic) in C's ``ctime`` form.
    """
    family = _family_of(ruleset)
    normal = normalise(ruleset)
    when = timestamp or datetime.datetime(1970, 1, 1)
    date = when.strftime("%a %b ") + f"{when.day:2d}" + when.strftime(" %H:%M:%S %Y")
    out: list[str] = []
    for table in normal.tables:
        if header:
            out.append(f"# Generated by iptables-save {version} on {date}")
        out.append(f"*{table.name}")
        for c in table.chains:
            out.append(f":{c.name} {c.policy or '-'} [0:0]")
        for c in table.chains:
            out.extend(_save_rule(c.name, r, family) for r in c.rules)
        out.append("COMMIT")
        if header:
            out.append(f"# Completed on {date}")
    return "".join(line + "\n" for line in out)


# ------------------------------------------------------------------------------ parsing
_GENERIC: Final[Mapping[str, str]] = {
    "-s": "s",
    "--source": "s",
    "--src": "s",
    "-d": "d",
    "--destination": "d",
    "--dst": "d",
    "-i": "i",
    "--in-interface": "i",
    "-o": "o",
    "--out-interface": "o",
    "-p": "p",
    "--protocol": "p",
}
_PORT_OPTS: Final[Mapping[str, str]] = {
    "--sport": "sport",
    "--source-port": "sport",
    "--dport": "dport",
    "--destination-port": "dport",
}
_MODULE_OPTS: Final[Mapping[str, Mapping[str, int]]] = {
    "comment": {"--comment": 1},
    "tcp": {**dict.fromkeys(_PORT_OPTS, 1), "--tcp-flags": 2, "--syn": 0, "--tcp-option": 1},
    "udp": dict.fromkeys(_PORT_OPTS, 1),
    "sctp": {**dict.fromkeys(_PORT_OPTS, 1), "--chunk-types": 2},
    "multiport": dict.fromkeys(
        ("--sports", "--source-ports", "--dports", "--destination-ports", "--ports"), 1
    ),
    "mark": {"--mark": 1},
    "addrtype": {"--src-type": 1, "--dst-type": 1, "--limit-iface-in": 0, "--limit-iface-out": 0},
    "conntrack": {
        **dict.fromkeys(
            (
                "--ctstate",
                "--ctproto",
                "--ctorigsrc",
                "--ctorigdst",
                "--ctreplsrc",
                "--ctrepldst",
                "--ctorigsrcport",
                "--ctorigdstport",
                "--ctreplsrcport",
                "--ctrepldstport",
                "--ctstatus",
                "--ctexpire",
                "--ctdir",
            ),
            1,
        )
    },
    "statistic": {"--mode": 1, "--probability": 1, "--every": 1, "--packet": 1},
    "recent": {
        "--name": 1,
        "--set": 0,
        "--rcheck": 0,
        "--update": 0,
        "--remove": 0,
        "--seconds": 1,
        "--reap": 0,
        "--hitcount": 1,
        "--rttl": 0,
        "--rsource": 0,
        "--rdest": 0,
        "--mask": 1,
    },
    "set": {
        "--match-set": 2,
        "--set": 2,
        "--return-nomatch": 0,
        "--update-counters": 0,
        "--update-subcounters": 0,
        **dict.fromkeys(
            ("--packets-eq", "--packets-lt", "--packets-gt", "--bytes-eq", "--bytes-lt"), 1
        ),
        "--bytes-gt": 1,
    },
}
_TARGET_OPTS: Final[Mapping[str, Mapping[str, int]]] = {
    "ACCEPT": {},
    "DROP": {},
    "RETURN": {},
    "REJECT": {"--reject-with": 1},
    "DNAT": {"--to-destination": 1, "--to": 1, "--random": 0, "--persistent": 0},
    "SNAT": {"--to-source": 1, "--to": 1, "--random": 0, "--random-fully": 0, "--persistent": 0},
    "MASQUERADE": {"--to-ports": 1, "--random": 0, "--random-fully": 0},
    "MARK": dict.fromkeys(
        ("--set-mark", "--set-xmark", "--or-mark", "--and-mark", "--xor-mark"), 1
    ),
}


@attrs.define
class _Opt:
    neg: bool
    name: str
    args: list[str]
    pos: int


@attrs.define
class _Owner:
    """A match module (``-m NAME``) or the target (``-j NAME``) and its options."""

    kind: Literal["match", "target", "goto"]
    name: str
    pos: int
    opts: list[_Opt] = attrs.Factory(list)
    auto: bool = False  # a protocol module iptables loads by itself for --dport

    def known(self) -> Mapping[str, int] | None:
        table = _MODULE_OPTS if self.kind == "match" else _TARGET_OPTS
        return table.get(self.name)

    def words(self) -> list[str]:
        head = {"match": "-m", "target": "-j", "goto": "-g"}[self.kind]
        words = [head, self.name]
        for o in self.opts:
            words += (["!"] if o.neg else []) + [o.name, *o.args]
        return words


@attrs.define
class _Generic:
    key: str
    neg: bool
    value: str
    pos: int


class _RuleParser:
    """Reads the words of one rule (after ``-A CHAIN``) into exprs, comment and target."""

    def __init__(
        self,
        words: list[str],
        quoted: list[bool],
        *,
        family: Family,
        chains: AbstractSet[str],
        set_types: Mapping[str, str],
        warn: _Warn,
    ) -> None:
        self.words = words
        self.quoted = quoted
        self.family = family
        self.chains = chains
        self.set_types = set_types
        self.warn = warn
        self.generics: dict[str, _Generic] = {}
        self.raw_generics: list[tuple[int, str]] = []
        self.owners: list[_Owner] = []
        self.target: _Owner | None = None

    # -- reading words
    def _value(self, i: int, what: str) -> str:
        if i >= len(self.words):
            raise RulesParseError(f"{what} needs a value")
        return self.words[i]

    def _is_option(self, i: int) -> bool:
        w = self.words[i]
        return not self.quoted[i] and ((w.startswith("-") and len(w) > 1) or w == "!")

    def read(self) -> None:
        words = self.words
        i = 0
        while i < len(words):
            neg = False
            if words[i] == "!" and not self.quoted[i]:
                neg = True
                i += 1
                if i >= len(words):
                    raise RulesParseError("'!' at the end of the rule")
            w = words[i]
            if w in _GENERIC:
                key = _GENERIC[w]
                if key in self.generics:
                    raise RulesParseError(f"more than one {w}")
                self.generics[key] = _Generic(key, neg, self._value(i + 1, w), i)
                i += 2
            elif w in ("-f", "--fragment"):
                self.raw_generics.append((i - neg, ("! " if neg else "") + "-f"))
                i += 1
            elif w in ("-m", "--match"):
                if neg:
                    raise RulesParseError("'!' cannot negate -m")
                self.owners.append(_Owner("match", self._value(i + 1, w), i))
                i += 2
            elif w in ("-j", "--jump", "-g", "--goto"):
                if neg:
                    raise RulesParseError(f"'!' cannot negate {w}")
                if self.target is not None:
                    raise RulesParseError("more than one target")
                kind: Literal["target", "goto"] = "goto" if w in ("-g", "--goto") else "target"
                self.target = _Owner(kind, self._value(i + 1, w), i)
                self.owners.append(self.target)
                i += 2
            elif w.startswith("--") and not self.quoted[i]:
                i = self._option(i, neg)
            else:
                raise RulesParseError(f"unexpected {w!r}")

    def _option(self, i: int, neg: bool) -> int:
        name = self.words[i]
        owner: _Owner | None = None
        for cand in reversed(self.owners):
            known = cand.known()
            if known is not None and name in known:
                owner = cand
                break
        if owner is None and self.owners and self.owners[-1].known() is None:
            owner = self.owners[-1]  # an extension we do not know takes what follows it
        if owner is None and name in _PORT_OPTS:
            proto = self.generics.get("p")
            if proto is not None and not proto.neg and proto.value in _PORT_PROTOCOLS:
                # iptables loads the protocol's match here, at the first port option.
                owner = _Owner("match", proto.value, i - neg, auto=True)
                self.owners.append(owner)
        if owner is None:
            raise RulesParseError(f"unknown option {name!r}")
        known = owner.known()
        args: list[str] = []
        j = i + 1
        if known is not None and name in known:
            for _ in range(known[name]):
                args.append(self._value(j, name))
                j += 1
        else:
            while j < len(self.words) and not self._is_option(j):
                args.append(self.words[j])
                j += 1
        owner.opts.append(_Opt(neg, name, args, i - neg))
        return j

    # -- building the rule
    def build(self) -> Rule:
        placed: list[tuple[int, int, Expr]] = []  # (position, tie-break, expr)
        comment: str | None = None
        matches = [o for o in self.owners if o.kind == "match"]
        proto = self.generics.get("p")
        proto_module: _Owner | None = None
        if proto is not None and not proto.neg and proto.value in _PORT_PROTOCOLS:
            for m in matches:
                if m.name == proto.value and self._ports_only(m):
                    proto_module = m
                    break
        for key in ("s", "d"):
            g = self.generics.get(key)
            if g is not None:
                cidrs = tuple(g.value.split(","))
                for c in cidrs:
                    try:
                        _canon_cidr(c, self.family)
                    except ValueError:
                        raise RulesParseError(f"bad address {c!r}") from None
                field: Literal["saddr", "daddr"] = "saddr" if key == "s" else "daddr"
                placed.append((g.pos, 0, IPMatch(field, cidrs, g.neg)))
        for key in ("i", "o"):
            g = self.generics.get(key)
            if g is not None:
                ifield: Literal["iif", "oif"] = "iif" if key == "i" else "oif"
                placed.append((g.pos, 0, IfaceMatch(ifield, g.value, g.neg)))
        if proto is not None:
            if proto_module is not None:
                # The module's place among the match modules is what the kernel keeps
                # (iptables-save prints -p up front, -m tcp where the module sits).
                placed.append((proto_module.pos, 0, ProtoMatch((proto.value,), proto.neg)))
            else:
                # No -m tcp at all: a bare -p tcp (module=False), as the IPVS proxier
                # writes it. With a -m tcp the model keeps raw, the module is loaded.
                explicit = any(m.name == proto.value for m in matches)
                bare = proto.value in _PORT_PROTOCOLS and not proto.neg and not explicit
                pm = ProtoMatch((proto.value,), proto.neg, module=not bare)
                placed.append((proto.pos, 0, pm))
        for pos, text in self.raw_generics:
            placed.append((pos, 0, RawMatch(text)))
        first_module = min((m.pos for m in matches), default=None)
        for m in matches:
            if m is proto_module:
                for o in m.opts:
                    port_field = _PORT_OPTS[o.name]
                    rng = self._range(o.args[0])
                    placed.append((o.pos, 1, PortMatch(port_field, (rng,), o.neg)))  # type: ignore[arg-type]
                continue
            if m.name == "comment" and m.pos == first_module and comment is None:
                comment_text = self._comment(m)
                if comment_text is not None:
                    comment = comment_text
                    continue
            placed.append((m.pos, 0, self._match(m, proto)))
        placed.sort(key=lambda t: (t[0], t[1]))
        exprs: list[Expr] = [e for _, _, e in placed]
        verdict: Verdict | None = None
        if self.target is not None:
            result = self._target(self.target)
            if isinstance(result, MarkSet | RawStatement):
                exprs.append(result)
            else:
                verdict = result
        return Rule(tuple(exprs), verdict, comment)

    def _ports_only(self, m: _Owner) -> bool:
        return all(o.name in _PORT_OPTS and len(o.args) == 1 for o in m.opts) and len(
            {_PORT_OPTS[o.name] for o in m.opts}
        ) == len(m.opts)

    def _range(self, text: str) -> tuple[int, int]:
        try:
            return _parse_range(text)
        except ValueError:
            raise RulesParseError(f"bad port {text!r}") from None

    def _raw(self, owner: _Owner, why: str) -> RawMatch:
        text = _join_restore(owner.words())
        self.warn(f"{why}; kept as RawMatch {text!r}")
        return RawMatch(text)

    def _comment(self, m: _Owner) -> str | None:
        if len(m.opts) == 1 and not m.opts[0].neg and m.opts[0].name == "--comment":
            return m.opts[0].args[0]
        return None

    def _opts(self, m: _Owner) -> dict[str, _Opt] | None:
        """Options by name, or None when one repeats (then the module stays raw)."""
        out: dict[str, _Opt] = {}
        for o in m.opts:
            if o.name in out:
                return None
            out[o.name] = o
        return out

    def _match(self, m: _Owner, proto: _Generic | None) -> Expr:
        opts = self._opts(m)
        if opts is None:
            return self._raw(m, f"-m {m.name} repeats an option")
        names = set(opts)
        negs = {n for n, o in opts.items() if o.neg}
        if m.name == "comment":
            return self._raw(m, "comment that is not the rule's first match module")
        if m.name in _PORT_PROTOCOLS:
            if proto is None or proto.value != m.name or proto.neg:
                return self._raw(m, f"-m {m.name} without -p {m.name}")
            if any(o.name not in _PORT_OPTS for o in m.opts):
                unknown = sorted(o.name for o in m.opts if o.name not in _PORT_OPTS)
                return self._raw(m, f"{m.name} option(s) {', '.join(unknown)} not modelled")
            return self._raw(m, f"a second -m {m.name}, or one naming a port twice")
        try:
            if m.name == "multiport":
                return self._multiport(m, opts)
            if m.name == "mark" and names == {"--mark"}:
                value, mask = _value_mask(opts["--mark"].args[0])
                return MarkMatch(value, mask, "--mark" in negs)
            if m.name == "addrtype" and (names - {"--limit-iface-in"}) in (
                {"--src-type"},
                {"--dst-type"},
            ):
                (opt,) = names - {"--limit-iface-in"}
                if not negs - {opt}:
                    types = opts[opt].args[0]
                    if all(t in _ADDR_TYPES for t in types.split(",")):
                        return AddrTypeMatch(
                            "saddr" if opt == "--src-type" else "daddr",
                            types,
                            opt in negs,
                            "--limit-iface-in" in names,
                        )
            if m.name == "conntrack" and names == {"--ctstate"}:
                states = tuple(opts["--ctstate"].args[0].split(","))
                if all(s in _CT_STATES for s in states):
                    return CtStateMatch(states, "--ctstate" in negs)
            if m.name == "statistic" and names == {"--mode", "--probability"} and not negs:
                text = opts["--probability"].args[0]
                if opts["--mode"].args[0] == "random" and re.fullmatch(r"[0-9.]+", text):
                    return StatisticMatch(float(text), text)
            if m.name == "recent":
                recent = self._recent(opts, negs)
                if recent is not None:
                    return recent
            if m.name == "set":
                found = self._set(opts, negs)
                if found is not None:
                    return found
        except ValueError as exc:
            raise RulesParseError(f"-m {m.name}: {exc}") from None
        if m.known() is None:
            return self._raw(m, f"match -m {m.name} has no model type")
        return self._raw(m, f"-m {m.name} with options the model does not cover")

    def _multiport(self, m: _Owner, opts: dict[str, _Opt]) -> Expr:
        fields = {"--dports": "dport", "--destination-ports": "dport"}
        fields |= {"--sports": "sport", "--source-ports": "sport"}
        if len(opts) == 1:
            ((name, opt),) = opts.items()
            ranges = tuple(self._range(p) for p in opt.args[0].split(","))
            if name in fields and len(ranges) > 1:
                return PortMatch(fields[name], ranges, opt.neg)  # type: ignore[arg-type]
        return self._raw(m, "multiport form without a model type (one port, or --ports)")

    def _recent(self, opts: dict[str, _Opt], negs: set[str]) -> RecentMatch | None:
        modes = [n for n in ("--set", "--rcheck", "--update", "--remove") if n in opts]
        allowed = {"--name", "--seconds", "--reap", "--rsource", "--rdest", "--mask", *modes}
        if len(modes) != 1 or set(opts) - allowed or negs - {modes[0]}:
            return None
        if "--rsource" in opts and "--rdest" in opts:
            return None
        seconds = int(opts["--seconds"].args[0]) if "--seconds" in opts else None
        mode: Literal["set", "rcheck", "update", "remove"] = modes[0][2:]  # type: ignore[assignment]
        return RecentMatch(
            name=opts["--name"].args[0] if "--name" in opts else "DEFAULT",
            mode=mode,
            seconds=seconds,
            reap="--reap" in opts,
            side="rdest" if "--rdest" in opts else "rsource",
            mask=opts["--mask"].args[0] if "--mask" in opts else None,
            negate=modes[0] in negs,
        )

    def _set(self, opts: dict[str, _Opt], negs: set[str]) -> SetMatch | None:
        if len(opts) != 1 or not ({"--match-set", "--set"} & set(opts)):
            return None
        (opt,) = opts.values()
        name, flags = opt.args
        dirs = flags.split(",")
        if any(d not in ("src", "dst") for d in dirs):
            return None
        set_type = self.set_types.get(name)
        if set_type is None:
            dims = ["ip", "port", *(["ip"] * (len(dirs) - 2))][: len(dirs)]
            self.warn(
                f"type of ipset {name!r} unknown (pass set_types); assumed "
                f"hash:{','.join(dims)} to read {flags!r}"
            )
        else:
            dims = set_type.partition(":")[2].split(",")
        if len(dims) < len(dirs):
            return None
        keys: list[str] = []
        for dim, d in zip(dims, dirs, strict=False):
            if dim in ("ip", "net"):
                keys.append("saddr" if d == "src" else "daddr")
            elif dim == "port":
                keys.append("sport" if d == "src" else "dport")
            elif dim == "iface":
                keys.append("iif" if d == "src" else "oif")
            else:
                return None
        return SetMatch(name, tuple(keys), opt.neg)

    def _target(self, t: _Owner) -> Verdict | MarkSet | RawStatement:
        if t.kind == "goto":
            if t.opts:
                raise RulesParseError("-g takes a chain and no options")
            if t.name not in self.chains:
                self.warn(f"goto {t.name!r}, a chain not declared in this table")
            return Goto(t.name)
        if t.name in self.chains:
            if t.opts:
                raise RulesParseError(f"jump to chain {t.name!r} takes no options")
            return Jump(t.name)
        opts = self._opts(t)
        known = _TARGET_OPTS.get(t.name)
        if known is None:
            if not t.opts and t.name not in _KNOWN_TARGETS:
                self.warn(f"jump to {t.name!r}, a chain not declared in this table")
                return Jump(t.name)
            text = _join_restore(t.words())
            self.warn(f"target -j {t.name} has no model type; kept as RawStatement {text!r}")
            return RawStatement(text)
        verdict = None if opts is None or any(o.neg for o in t.opts) else self._verdict(t, opts)
        if verdict is None:
            text = _join_restore(t.words())
            self.warn(f"-j {t.name} with options the model does not cover; kept as {text!r}")
            return RawStatement(text)
        return verdict

    def _verdict(self, t: _Owner, opts: dict[str, _Opt]) -> Verdict | MarkSet | None:
        names = set(opts)
        try:
            if t.name == "ACCEPT" and not names:
                return Accept()
            if t.name == "DROP" and not names:
                return Drop()
            if t.name == "RETURN" and not names:
                return Return()
            if t.name == "REJECT" and names <= {"--reject-with"}:
                with_ = opts["--reject-with"].args[0] if names else None
                if with_ is None or with_ in _REJECT_WITH[self.family]:
                    return Reject(with_)
            if t.name == "DNAT" and len(names) == 1 and names <= {"--to-destination", "--to"}:
                addr, port = self._host_port(next(iter(opts.values())).args[0])
                return DNAT(addr, port) if addr is not None else None
            if t.name == "SNAT" and names == {"--to-source"}:
                addr, port = self._host_port(opts["--to-source"].args[0])
                return SNAT(addr, port) if addr is not None else None
            if t.name == "MASQUERADE" and names <= {"--random-fully"}:
                return Masquerade(fully_random=bool(names))
            if t.name == "MARK" and len(names) == 1:
                (name,) = names
                value, mask = _value_mask(opts[name].args[0])
                if name == "--set-xmark":
                    return MarkSet("set", value, mask)
                if name == "--set-mark":
                    # (mark & ~M) | V is --set-xmark V/(V|M)
                    return MarkSet("set", value, value | mask)
                if mask == _U32 and "/" not in opts[name].args[0]:
                    op: Literal["or", "and", "xor"] = name[2:-5]  # type: ignore[assignment]
                    return MarkSet(op, value)
        except ValueError as exc:
            raise RulesParseError(f"-j {t.name}: {exc}") from None
        return None

    def _host_port(self, text: str) -> tuple[str | None, int | None]:
        m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:([0-9]+)|([0-9.]+):([0-9]+)|([0-9a-fA-F:.]+)", text)
        if m is None:
            return None, None
        addr = m.group(1) or m.group(3) or m.group(5)
        port = m.group(2) or m.group(4)
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return None, None
        if ip.version != _ip_version(self.family):
            raise ValueError(f"{addr!r} is not an {self.family} address")
        if port is not None and not 1 <= int(port) <= 65535:
            return None, None
        return addr, int(port) if port is not None else None


class _Warn:
    def __init__(self, sink: list[ParseWarning]) -> None:
        self.sink = sink
        self.line = 0
        self.text = ""

    def __call__(self, message: str) -> None:
        self.sink.append(ParseWarning(self.line, self.text, message))


@attrs.define
class _TableState:
    name: str
    start: int
    lines: list[tuple[int, str]] = attrs.Factory(list)


_COUNTERS = re.compile(r"\[([0-9]+):([0-9]+)\]")


def parse(
    text: str,
    *,
    family: Family = "ip",
    mode: Literal["iptables", "ipvs"] = "iptables",
    set_types: Mapping[str, str] | None = None,
) -> ParseResult:
    """Read ``iptables-restore`` input or ``iptables-save`` output into a Ruleset.

    ``family`` says which of iptables/ip6tables wrote it (the text does not);
    ``mode`` is the Ruleset's mode. ``set_types`` maps ipset names to their type
    (``{"KUBE-CLUSTER-IP": "hash:ip,port"}``, e.g. from ``Ruleset.ipsets``) so
    ``-m set --match-set NAME dst,dst`` reads as the right packet fields.

    Accepts ``#`` lines, blank lines, counters (``[12:345]``), any table, the
    restore commands ``-A -I -N -X -F -P -Z``. Values are kept as written (see
    :func:`normalise`). Matches and targets without a model type are kept
    verbatim as RawMatch/RawStatement and reported in ``warnings`` with their
    line. A malformed line raises :class:`RulesParseError`.
    """
    if family not in ("ip", "ip6"):
        raise ValueError(f"family must be 'ip' or 'ip6', not {family!r}")
    warnings: list[ParseWarning] = []
    warn = _Warn(warnings)
    chain_counters: list[tuple[str, str, int, int]] = []
    rule_counters: list[tuple[str, str, int, int, int]] = []
    tables: dict[str, Table] = {}
    current: _TableState | None = None
    types = dict(set_types or {})

    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r").strip(" \t")
        if not line or line.startswith("#"):
            continue
        if current is None:
            if line.startswith("*"):
                name = line[1:].strip()
                if not name or " " in name:
                    raise RulesParseError("bad table line", line=number, text=raw)
                current = _TableState(name, number)
                continue
            raise RulesParseError("expected a table (*nat, *filter, ...)", line=number, text=raw)
        if line == "COMMIT":
            table = _finish_table(current, family, types, warn, chain_counters, rule_counters)
            if table.name in tables:
                warn.line, warn.text = current.start, f"*{table.name}"
                warn(f"table {table.name} appears again; the later block replaces it")
            tables[table.name] = table
            current = None
            continue
        current.lines.append((number, raw))
    if current is not None:
        raise RulesParseError(
            f"table {current.name} has no COMMIT", line=current.start, text=f"*{current.name}"
        )
    ruleset = Ruleset(
        mode=mode,
        family="IPv6" if family == "ip6" else "IPv4",
        tables=tuple(tables.values()),
    )
    return ParseResult(ruleset, tuple(warnings), tuple(chain_counters), tuple(rule_counters))


def _finish_table(
    state: _TableState,
    family: Family,
    set_types: Mapping[str, str],
    warn: _Warn,
    chain_counters: list[tuple[str, str, int, int]],
    rule_counters: list[tuple[str, str, int, int, int]],
) -> Table:
    # All chains the block declares, so jumps read right wherever they are declared.
    declared: set[str] = set()
    for _, raw in state.lines:
        line = raw.strip(" \t\r")
        if line.startswith(":"):
            declared.add(line[1:].split()[0] if line[1:].split() else "")
        elif line.startswith(("-N ", "--new-chain ")):
            parts = line.split()
            if len(parts) > 1:
                declared.add(parts[1])
    declared.discard("")
    known = set(declared)  # every chain a jump may name: declared, or created by use
    order: list[str] = []
    chains: dict[str, Chain] = {}
    rules: dict[str, list[tuple[int, Rule]]] = {}

    def ensure(name: str, number: int, raw: str) -> None:
        if name in chains:
            return
        if _is_builtin(state.name, name):
            chains[name] = Chain(name, hook=name.lower())
        else:
            warn.line, warn.text = number, raw
            warn(f"chain {name!r} used without being declared")
            chains[name] = Chain(name)
        order.append(name)
        rules[name] = []
        known.add(name)

    for number, raw in state.lines:
        warn.line, warn.text = number, raw
        line = raw.rstrip("\r").strip(" \t")
        if line.startswith(":"):
            parts = line[1:].split()
            if len(parts) not in (2, 3) or (len(parts) == 3 and not _COUNTERS.fullmatch(parts[2])):
                raise RulesParseError("bad chain line", line=number, text=raw)
            name, policy = parts[0], parts[1]
            if name in chains:
                raise RulesParseError(f"chain {name!r} declared twice", line=number, text=raw)
            if policy == "-":
                if _is_builtin(state.name, name):
                    raise RulesParseError("a built-in chain needs a policy", line=number, text=raw)
                chains[name] = Chain(name)
            else:
                if not _is_builtin(state.name, name) or policy not in _POLICIES:
                    raise RulesParseError(
                        f"{name!r} is not a built-in chain of {state.name} with policy "
                        "ACCEPT or DROP",
                        line=number,
                        text=raw,
                    )
                chains[name] = Chain(name, hook=name.lower(), policy=policy)
            order.append(name)
            rules[name] = []
            if len(parts) == 3:
                m = _COUNTERS.fullmatch(parts[2])
                assert m is not None
                chain_counters.append((state.name, name, int(m.group(1)), int(m.group(2))))
            continue
        counters: tuple[int, int] | None = None
        m = _COUNTERS.match(line)
        if m:
            counters = (int(m.group(1)), int(m.group(2)))
            line = line[m.end() :].lstrip(" \t")
        try:
            words, quoted = _tokenize(line)
        except ValueError as exc:
            raise RulesParseError(str(exc), line=number, text=raw) from None
        cmd = words[0]
        args = words[1:]
        try:
            if cmd in ("-A", "--append", "-I", "--insert"):
                if not args:
                    raise RulesParseError(f"{cmd} needs a chain")
                chain = args[0]
                ensure(chain, number, raw)
                rest, rest_q = words[2:], quoted[2:]
                index = len(rules[chain])
                if cmd in ("-I", "--insert"):
                    index = 0
                    if rest and rest[0].isdigit() and not rest_q[0]:
                        index = max(int(rest[0]) - 1, 0)
                        rest, rest_q = rest[1:], rest_q[1:]
                parser = _RuleParser(
                    rest,
                    rest_q,
                    family=family,
                    chains=known,
                    set_types=set_types,
                    warn=warn,
                )
                parser.read()
                rule = parser.build()
                rules[chain].insert(index, (number, rule))
                if counters is not None:
                    rule_counters.append((state.name, chain, index, *counters))
            elif cmd in ("-N", "--new-chain"):
                if len(args) != 1:
                    raise RulesParseError("-N takes one chain name")
                if args[0] in chains:
                    raise RulesParseError(f"chain {args[0]!r} already exists")
                chains[args[0]] = Chain(args[0])
                order.append(args[0])
                rules[args[0]] = []
            elif cmd in ("-X", "--delete-chain"):
                doomed = args or [n for n in order if not _is_builtin(state.name, n)]
                for name in doomed:
                    if name not in chains or _is_builtin(state.name, name):
                        raise RulesParseError(f"no user chain {name!r} to delete")
                    del chains[name], rules[name]
                    order.remove(name)
            elif cmd in ("-F", "--flush"):
                for name in args or list(order):
                    if name not in rules:
                        raise RulesParseError(f"no chain {name!r} to flush")
                    rules[name] = []
            elif cmd in ("-P", "--policy"):
                if len(args) != 2 or args[1] not in _POLICIES:
                    raise RulesParseError("-P takes a built-in chain and ACCEPT or DROP")
                if not _is_builtin(state.name, args[0]):
                    raise RulesParseError(f"{args[0]!r} is not a built-in chain")
                ensure(args[0], number, raw)
                chains[args[0]] = attrs.evolve(chains[args[0]], policy=args[1])
            elif cmd in ("-Z", "--zero"):
                pass  # counters only
            else:
                raise RulesParseError(f"unsupported command {cmd!r}")
        except RulesParseError as exc:
            if exc.line is not None:
                raise
            raise RulesParseError(exc.message, line=number, text=raw) from None
    built = tuple(attrs.evolve(chains[n], rules=tuple(r for _, r in rules[n])) for n in order)
    return Table(family, state.name, "iptables", built)
