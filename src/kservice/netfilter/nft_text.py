"""The nftables text formats, both ways: the ``nft -f`` script and ``nft list ruleset``.

Two text forms of one :class:`~kservice.netfilter.ruleset.Ruleset`:

* :func:`render_script` / :func:`parse_script`: what kube-proxy feeds ``nft -f``,
  the knftables transaction form, one command a line (``add table ip
  kube-proxy { comment "rules for kube-proxy" ; }``, ``add chain ...``,
  ``add map ...``, ``add rule ...``, ``add element ...``). Rendering is
  byte-exact with the expectations of upstream's ``pkg/proxy/nftables``
  tests for the objects kube-proxy writes. Parsing runs the transaction:
  ``add``/``create``/``insert``/``flush``/``delete``/``destroy`` commands
  applied in order (optionally on top of a ``base`` ruleset), plus nested
  ``table ... { }`` blocks.
* :func:`render_list` / :func:`parse_list`: the nested, tab-indented form
  ``nft list ruleset`` prints (``# handle N`` annotations of ``nft -a`` are
  accepted and ignored).

The JSON form of ``nft -j list ruleset`` lives in :mod:`kservice.netfilter.nft_json`.

Facts carried over (read, not copied):

* kubernetes ``pkg/proxy/nftables/proxier.go`` and ``proxier_test.go`` (the
  expected rulesets), ``helpers_test.go`` (how upstream compares them:
  sorted lines, blank and ``#`` lines dropped).
* knftables ``objects.go`` / ``types.go`` / ``fake.go``: the command forms:
  ``add table F T { comment "C" ; }``; ``add chain F T C { type X hook H
  priority N ; policy P ; comment "C" ; }`` with the priority written as a
  number; ``add set|map F T S { type K [: V] ; flags a,b ; timeout Ns ;
  comment "C" ; }``; ``add rule F T C RULE comment "C"``; ``add element F T S
  { KEY comment "C" : VALUE }``; ``NameLengthMax = 256``,
  ``CommentLengthMax = 128``; ``Fake.Dump`` writes the table, all chains,
  sets and maps, then the rules and elements.
* nft 1.0.6 itself (checked in a private network namespace), see the notes in
  :func:`render_list` and :func:`as_listed`: named priorities within 10 of a
  standard one (``dstnat - 10``, ``filter``, ``srcnat``; ``dstnat`` only on
  prerouting, ``srcnat`` only on postrouting), set elements sorted and wrapped
  by key type, the ``meta l4proto`` dependency folded into ``tcp dport``,
  single-element anonymous sets printed without braces, ``size 65535`` and
  ``flags dynamic`` added to sets written from the packet path, the default
  ``policy accept`` printed on base chains. Names are identifiers
  (``[A-Za-z_.][A-Za-z0-9_./-]*``, at most 255 bytes; nft 1.0.6 accepts no
  quoted names); comments are at most 128 bytes and cannot contain ``"``
  (nft has no escape).

How the model is spelled (the compilers build these objects):

* ``ProtoMatch(("tcp",))`` right before ``PortMatch("dport", ((80, 80),))`` is
  ``tcp dport 80``; a port match after one known protocol is ``tcp dport``,
  else ``th dport``; ``meta l4proto tcp dnat to ...`` stays as is.
* ``MarkMatch(0, 0x4000)`` is kube-proxy's ``mark and 0x4000 == 0`` in the
  script and nft's ``meta mark & 0x00004000 == 0x00000000`` in the listing;
  ``MarkSet("or", 0x4000)`` is ``mark set mark or 0x4000`` / ``meta mark set
  meta mark | 0x00004000``; ``MarkSet("set", V, M)`` is ``--set-xmark V/M``.
* ``AddrTypeMatch("daddr")`` is ``fib daddr type local`` (``limit_iface_in``:
  ``fib daddr . iif``); ``CtStateMatch`` states and address types are upper
  case in the model, lower case in nft; interface names keep nft's ``*``.
* Key fields: ``saddr``/``daddr`` -> ``ip``/``ip6 saddr`` (in an inet table by
  the set's key type or the address), ``l4proto`` -> ``meta l4proto``,
  ``sport``/``dport`` -> ``th sport``, ``mark`` -> ``meta mark``, ``iif``/``oif``
  -> ``iifname``/``oifname``.
* Map values: verdict maps hold ``"accept"``/``"drop"``/``"return"``/
  ``"continue"`` or :class:`Jump`/:class:`Goto`; data maps the value text
  (``"10.0.0.1 . 80"``). ``Reject.with_`` is what follows ``reject with``
  (``icmp host-unreachable``, ``tcp reset``). ``IPMatch`` addresses read from
  a dump may be ranges (``10.0.0.1-10.0.0.9``).
* Errors are :class:`RulesParseError` (line and text) and
  :class:`RulesRenderError`, shared with :mod:`kservice.netfilter.iptables_text`.

Where the model has no place for something the formats carry:

* Rule expressions that are not modelled are kept verbatim as
  :class:`RawMatch` / :class:`RawStatement` (a counter with non-zero values
  too) and reported as :class:`ParseIssue`.
* Set-element comments and timeouts ride on :class:`ElementKey`, a tuple
  subclass that compares equal to the plain key tuple.
* Anything else the model cannot hold (table flags, set ``size``/``policy``/
  ``gc-interval``/``auto-merge``, chain devices, flowtables and other stateful
  objects) is reported as a :class:`ParseIssue` and left out; with
  ``strict=True`` the first issue raises :class:`RulesParseError` instead.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, NoReturn, TypeAlias

import attrs

from kservice._gc import gc_paused
from kservice.netfilter.iptables_text import RulesParseError, RulesRenderError
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
    NftSet,
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
    "ElementKey",
    "ParseIssue",
    "RulesParseError",
    "RulesRenderError",
    "as_listed",
    "element_options",
    "format_priority",
    "format_time",
    "parse_list",
    "parse_priority",
    "parse_rule_text",
    "parse_script",
    "parse_time_ms",
    "render_list",
    "render_script",
]

Style = Literal["script", "list"]
ElementValue: TypeAlias = str | Jump | Goto | None
Element: TypeAlias = tuple[tuple[str, ...], ElementValue]
Expr: TypeAlias = Match | Statement


# ----------------------------------------------------------------------------- errors
# One error class per concept for every text format: the iptables module defines
# them (RulesParseError(message, line=, text=), RulesRenderError(message, where=)).


@attrs.frozen
class ParseIssue:
    """Something a parser kept verbatim (a raw expression) or could not keep."""

    line: int | None
    text: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.message}: {self.text!r}"


# ------------------------------------------------------------------------ ElementKey
class ElementKey(tuple[str, ...]):
    """A set element key with the element's options (``comment``, ``timeout``).

    It is the key tuple itself (it compares and hashes like the plain tuple, so
    lookups and the packet engine ignore the options) and carries what nft
    stores next to the key: ``comment`` (kube-proxy writes the service port name
    on ``no-endpoint-*`` elements), ``timeout`` in seconds, and ``expires_ms``
    (runtime state: milliseconds left, as ``nft list`` shows it). Stop-gap until
    :class:`~kservice.netfilter.ruleset.NftSet` has a place for element options.
    """

    comment: str | None
    timeout: int | None
    expires_ms: int | None

    def __new__(
        cls,
        items: Iterable[str] = (),
        *,
        comment: str | None = None,
        timeout: int | None = None,
        expires_ms: int | None = None,
    ) -> ElementKey:
        self = super().__new__(cls, items)
        self.comment = comment
        self.timeout = timeout
        self.expires_ms = expires_ms
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_element_key, (tuple(self), self.comment, self.timeout, self.expires_ms))

    def __repr__(self) -> str:
        opts = "".join(
            f", {name}={value!r}"
            for name, value in (
                ("comment", self.comment),
                ("timeout", self.timeout),
                ("expires_ms", self.expires_ms),
            )
            if value is not None
        )
        return f"ElementKey({tuple(self)!r}{opts})"


def _rebuild_element_key(
    items: tuple[str, ...], comment: str | None, timeout: int | None, expires_ms: int | None
) -> ElementKey:
    return ElementKey(items, comment=comment, timeout=timeout, expires_ms=expires_ms)


def element_options(key: tuple[str, ...]) -> tuple[str | None, int | None, int | None]:
    """``(comment, timeout, expires_ms)`` of an element key (all None for a plain tuple)."""
    if isinstance(key, ElementKey):
        return key.comment, key.timeout, key.expires_ms
    return None, None, None


def _make_key(
    items: Iterable[str],
    comment: str | None = None,
    timeout: int | None = None,
    expires_ms: int | None = None,
) -> tuple[str, ...]:
    if comment is None and timeout is None and expires_ms is None:
        return tuple(items)
    return ElementKey(items, comment=comment, timeout=timeout, expires_ms=expires_ms)


# ------------------------------------------------------------------------- constants
FULL_MASK = 0xFFFFFFFF
NAME_MAX_BYTES = 255  # NFT_NAME_MAXLEN is 256 with the NUL; nft rejects 256 characters
COMMENT_MAX_BYTES = 128  # nft: "comment too long, 128 characters maximum allowed"
#: The size nft gives a set that rules update from the packet path (``update @s``).
DYNAMIC_SET_SIZE = 65535

FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
PORT_PROTOS = ("tcp", "udp", "sctp", "dccp", "udplite")

#: Standard priorities of the ip/ip6/inet families, in the order nft tries them.
_STD_PRIOS: tuple[tuple[str, int], ...] = (
    ("raw", -300),
    ("mangle", -150),
    ("dstnat", -100),
    ("filter", 0),
    ("security", 50),
    ("srcnat", 100),
)
_PRIO_HOOK_ONLY = {"dstnat": "prerouting", "srcnat": "postrouting"}
_BRIDGE_PRIOS = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}

#: ct state bits, in the order nft prints them.
CT_STATE_BITS = {"INVALID": 1, "ESTABLISHED": 2, "RELATED": 4, "NEW": 8, "UNTRACKED": 64}

#: /etc/protocols (Debian netbase) names nft prints for protocol numbers.
PROTO_NUMBERS: dict[str, int] = {
    "icmp": 1,
    "igmp": 2,
    "ggp": 3,
    "ipencap": 4,
    "st": 5,
    "tcp": 6,
    "egp": 8,
    "igp": 9,
    "pup": 12,
    "udp": 17,
    "hmp": 20,
    "xns-idp": 22,
    "rdp": 27,
    "iso-tp4": 29,
    "dccp": 33,
    "xtp": 36,
    "ddp": 37,
    "idpr-cmtp": 38,
    "ipv6": 41,
    "ipv6-route": 43,
    "ipv6-frag": 44,
    "idrp": 45,
    "rsvp": 46,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "skip": 57,
    "ipv6-icmp": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "rspf": 73,
    "vmtp": 81,
    "eigrp": 88,
    "ospf": 89,
    "ax.25": 93,
    "ipip": 94,
    "etherip": 97,
    "encap": 98,
    "pim": 103,
    "ipcomp": 108,
    "vrrp": 112,
    "l2tp": 115,
    "isis": 124,
    "sctp": 132,
    "fc": 133,
    "mobility-header": 135,
    "udplite": 136,
    "mpls-in-ip": 137,
    "manet": 138,
    "hip": 139,
    "shim6": 140,
    "wesp": 141,
    "rohc": 142,
    "ethernet": 143,
}
_PROTO_ALIASES = {"icmpv6": "ipv6-icmp"}
_PROTO_NAMES = {num: name for name, num in PROTO_NUMBERS.items()}

#: Set flags in the order nft prints them.
SET_FLAG_ORDER = ("constant", "dynamic", "interval", "timeout")

#: How ``nft list`` wraps ``elements = { ... }``: after this many elements of a key
#: type a line break (types not listed, and concatenations: one element a line).
_ELEMENTS_PER_LINE = {
    **dict.fromkeys(
        (
            "nf_proto",
            "integer",
            "arp_op",
            "inet_proto",
            "inet_service",
            "tcp_flag",
            "dccp_pkttype",
            "mark",
            "iface_index",
            "classid",
            "uid",
            "gid",
            "ct_dir",
        ),
        5,
    ),
    **dict.fromkeys(("ipv4_addr", "ct_state", "ct_status", "pkt_type"), 2),
}
_ELEMENT_BREAK = ",\n\t\t\t     "

#: Key types whose JSON elements are numbers.
INTEGER_TYPES = frozenset(
    {"inet_service", "integer", "mark", "iface_index", "classid", "uid", "gid", "realm"}
)

#: Names kservice writes: nft identifiers (nft 1.0.6 accepts no quoted names).
#: nft also reads some names with a colon (``a:b`` but not ``a:`` or ``a:b.c``);
#: they are read back but never written.
_NAME_RE = re.compile(r"[A-Za-z_.][A-Za-z0-9_./-]*\Z")
_READ_NAME_RE = re.compile(r"[A-Za-z_.][A-Za-z0-9_./:-]*\Z")
_TYPE_RE = re.compile(r"[a-z0-9_]+( \. [a-z0-9_]+)*\Z")
_FLAG_RE = re.compile(r"[a-z][a-z0-9_-]*\Z")
_ADDR_CHARS_RE = re.compile(r"[0-9A-Fa-f:./\-\[\]]+\Z")
_WORD_RE = re.compile(r"[^\s{},;#\"]+\Z")
_QUOTED_WORD_RE = re.compile(r"\"[^\"\n\r\x00]*\"\Z")
_REJECT_RE = re.compile(r"[a-z0-9][a-z0-9 -]*\Z")


# ------------------------------------------------------------------------ validation
def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RulesRenderError(f"invalid nft {what} name {name!r}")
    if len(name) > NAME_MAX_BYTES:  # _NAME_RE admits ASCII only: one byte each
        raise RulesRenderError(f"nft {what} name longer than {NAME_MAX_BYTES} bytes: {name!r}")
    return name


def _bad_comment_char(ch: str) -> bool:
    return ch == '"' or (not ch.isprintable() and ch != "\t")


def _check_comment(comment: str, what: str) -> str:
    if any(_bad_comment_char(ch) for ch in comment):
        raise RulesRenderError(
            f"{what} comment {comment!r} contains a double quote or a control character"
        )
    if len(comment.encode()) > COMMENT_MAX_BYTES:
        raise RulesRenderError(f"{what} comment longer than {COMMENT_MAX_BYTES} bytes: {comment!r}")
    return comment


def _quote(comment: str, what: str) -> str:
    return f'"{_check_comment(comment, what)}"'


def _check_word(text: str, what: str) -> str:
    if not isinstance(text, str) or not (_WORD_RE.match(text) or _QUOTED_WORD_RE.match(text)):
        raise RulesRenderError(f"invalid {what} {text!r}")
    return text


def _check_addr(text: str, what: str = "address") -> str:
    if not isinstance(text, str) or not _ADDR_CHARS_RE.match(text):
        raise RulesRenderError(f"invalid {what} {text!r}")
    return text


def _check_raw(text: str) -> str:
    if not isinstance(text, str) or not text.strip() or any(c in text for c in "\n\r\x00"):
        raise RulesRenderError(f"raw expression must be one non-empty line: {text!r}")
    if text.lstrip().startswith("{"):
        raise RulesRenderError(f"raw JSON expression cannot be written as nft text: {text!r}")
    return text.strip()


def _check_iface(name: str) -> str:
    if not isinstance(name, str) or not name or any(_bad_comment_char(c) for c in name):
        raise RulesRenderError(f"invalid interface name {name!r}")
    return name


def _check_type(text: str, what: str) -> str:
    if not isinstance(text, str) or not _TYPE_RE.match(text):
        raise RulesRenderError(f"invalid {what} {text!r}")
    return text


def _check_flag(flag: str) -> str:
    if not isinstance(flag, str) or not _FLAG_RE.match(flag):
        raise RulesRenderError(f"invalid set flag {flag!r}")
    return flag


# -------------------------------------------------------------------- small formats
def format_time(seconds: int, ms: int = 0) -> str:
    """nft's time format: ``10800`` -> ``3h``, ``90`` -> ``1m30s``, ms as ``992ms``."""
    total_ms = seconds * 1000 + ms
    if total_ms == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, total_ms = divmod(total_ms, size)
        if count:
            out.append(f"{count}{unit}")
    if total_ms:
        out.append(f"{total_ms}ms")
    return "".join(out)


_TIME_RE = re.compile(r"(\d+)(ms|d|h|m|s)")


def parse_time_ms(text: str) -> int:
    """``3h`` / ``1m30s`` / ``29s992ms`` / ``10800`` -> milliseconds."""
    if text.isdigit():
        return int(text) * 1000
    pos, total = 0, 0
    sizes = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
    for m in _TIME_RE.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * sizes[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid time {text!r}")
    return total


def format_priority(family: str, hook: str | None, priority: int) -> str:
    """The priority as ``nft list`` prints it (``dstnat - 10``, ``filter``, ``-110``)."""
    if family in ("ip", "ip6", "inet"):
        for name, value in _STD_PRIOS:
            if abs(priority - value) <= 10:
                only = _PRIO_HOOK_ONLY.get(name)
                if only is not None and hook != only:
                    break
                offset = priority - value
                if offset > 0:
                    return f"{name} + {offset}"
                if offset < 0:
                    return f"{name} - {-offset}"
                return name
    return str(priority)


_PRIO_RE = re.compile(r"([a-z]+)?\s*(?:([+-])\s*(\d+))?\Z")


def parse_priority(family: str, text: str) -> int:
    """``-110`` / ``dstnat`` / ``dstnat - 10`` / ``dstnat-10`` -> the number."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    m = _PRIO_RE.match(text)
    if not m or not m.group(1):
        raise ValueError(f"invalid priority {text!r}")
    table = _BRIDGE_PRIOS if family == "bridge" else dict(_STD_PRIOS)
    if m.group(1) not in table:
        raise ValueError(f"unknown priority name {m.group(1)!r}")
    value = table[m.group(1)]
    if m.group(2):
        value += int(m.group(3)) * (1 if m.group(2) == "+" else -1)
    return value


def _hex8(value: int) -> str:
    return f"0x{value:08x}"


def _script_num(value: int) -> str:
    return "0" if value == 0 else hex(value)


def _is_ipv6(text: str) -> bool:
    return ":" in text


# --------------------------------------------------------------------- rule context
@attrs.frozen
class _Ctx:
    """What a rule needs from its table to be written: the family and the sets.

    ``chains`` are chain names :func:`_check_name` already accepted (the
    declared chains, when every declaration is written before any rule), so
    jumps to them need no second check.
    """

    family: str
    sets: dict[str, NftSet]
    chains: frozenset[str] = frozenset()
    ip4: str = attrs.field(init=False)  # ip_word(False)
    ip6: str = attrs.field(init=False)  # ip_word(True)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "ip4", self.ip_word(False))
        object.__setattr__(self, "ip6", self.ip_word(True))

    def ip_word(self, v6: bool) -> str:
        if self.family == "ip6":
            return "ip6"
        if self.family == "inet":
            return "ip6" if v6 else "ip"
        return "ip"

    def key_words(self, set_name: str | None, keys: Sequence[str]) -> list[str]:
        types: list[str] = []
        if set_name is not None and set_name in self.sets:
            types = self.sets[set_name].key_type.split(" . ")
        out = []
        for i, field in enumerate(keys):
            ktype = types[i] if i < len(types) else ""
            out.append(_key_word(field, self, ktype == "ipv6_addr"))
        return out


def _key_word(field: str, ctx: _Ctx, v6: bool) -> str:
    if field in ("saddr", "daddr"):
        return f"{ctx.ip_word(v6)} {field}"
    if field == "l4proto":
        return "meta l4proto"
    if field in ("sport", "dport"):
        return f"th {field}"
    if field == "mark":
        return "meta mark"
    if field in ("iif", "oif"):
        return f"{field}name"
    raise RulesRenderError(f"unknown key field {field!r}")


def _ctx_for(table: Table, checked_chains: frozenset[str] = frozenset()) -> _Ctx:
    return _Ctx(table.family, {s.name: s for s in table.sets}, checked_chains)


# ------------------------------------------------------------------- rule rendering
def _l4_plan(exprs: Sequence[Expr]) -> tuple[set[int], dict[int, str]]:
    """Which ProtoMatches fold into the next port match, and each PortMatch's word.

    A single, non-negated ``meta l4proto tcp`` right before a port match is
    written as ``tcp dport 80`` (kube-proxy and nft both write it so); a port
    match after a known single protocol is written ``tcp dport``, else ``th
    dport``. Parsing inverts exactly this (see ``_RuleParser``).
    """
    hidden: set[int] = set()
    words: dict[int, str] = {}
    l4: str | None = None
    for i, e in enumerate(exprs):
        if isinstance(e, ProtoMatch):
            single = e.protocols[0] if len(e.protocols) == 1 and not e.negate else None
            nxt = exprs[i + 1] if i + 1 < len(exprs) else None
            if single in PORT_PROTOS and isinstance(nxt, PortMatch) and l4 != single:
                hidden.add(i)
            l4 = single
        elif isinstance(e, PortMatch):
            words[i] = l4 if l4 is not None and l4 in PORT_PROTOS else "th"
    return hidden, words


def _ip_value(cidrs: Sequence[str], sep: str) -> str:
    if not cidrs:
        raise RulesRenderError("address match without addresses")
    vals = [_check_addr(c) for c in cidrs]
    return vals[0] if len(vals) == 1 else "{ " + sep.join(vals) + " }"


def _port_text(lo: int, hi: int) -> str:
    for p in (lo, hi):
        if not isinstance(p, int) or not 0 <= p <= 65535:
            raise RulesRenderError(f"invalid port {p!r}")
    if lo > hi:
        raise RulesRenderError(f"invalid port range {lo}-{hi}")
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _proto_text(proto: str) -> str:
    return _check_word(proto, "protocol")


def _neg(negate: bool) -> str:
    return "!= " if negate else ""


def _render_expr(e: Expr, ctx: _Ctx, style: Style, port_word: str | None) -> str:
    if isinstance(e, IPMatch):
        cidrs = e.cidrs
        if len(cidrs) == 1 and e.field in ("saddr", "daddr"):
            # one address: what the general code below writes, with its checks
            c = cidrs[0]
            if isinstance(c, str) and _ADDR_CHARS_RE.match(c):
                return f"{ctx.ip_word(':' in c)} {e.field} {_neg(e.negate)}{c}"
        v6 = any(_is_ipv6(c) for c in e.cidrs)
        _field(e.field, ("saddr", "daddr"))
        return f"{ctx.ip_word(v6)} {e.field} {_neg(e.negate)}{_ip_value(e.cidrs, ', ')}"
    if isinstance(e, ProtoMatch):
        if len(e.protocols) == 1:
            return f"meta l4proto {_neg(e.negate)}{_proto_text(e.protocols[0])}"
        if not e.protocols:
            raise RulesRenderError("protocol match without protocols")
        protos = [_proto_text(p) for p in e.protocols]
        value = protos[0] if len(protos) == 1 else "{ " + ", ".join(protos) + " }"
        return f"meta l4proto {_neg(e.negate)}{value}"
    if isinstance(e, PortMatch):
        _field(e.field, ("sport", "dport"))
        if not e.ranges:
            raise RulesRenderError("port match without ports")
        ports = [_port_text(lo, hi) for lo, hi in e.ranges]
        value = ports[0] if len(ports) == 1 else "{ " + ", ".join(ports) + " }"
        return f"{port_word or 'th'} {e.field} {_neg(e.negate)}{value}"
    if isinstance(e, IfaceMatch):
        _field(e.field, ("iif", "oif"))
        return f'{e.field}name {_neg(e.negate)}"{_check_iface(e.name)}"'
    if isinstance(e, MarkMatch):
        _u32(e.value, "mark")
        _u32(e.mask, "mark mask")
        if style == "list":
            if e.mask == FULL_MASK:
                return f"meta mark {_neg(e.negate)}{_hex8(e.value)}"
            op = "!=" if e.negate else "=="
            return f"meta mark & {_hex8(e.mask)} {op} {_hex8(e.value)}"
        if e.mask == FULL_MASK:
            return f"mark {_neg(e.negate)}{_script_num(e.value)}"
        op = "!=" if e.negate else "=="
        return f"mark and {hex(e.mask)} {op} {_script_num(e.value)}"
    if isinstance(e, AddrTypeMatch):
        _field(e.field, ("saddr", "daddr"))
        atype = _check_word(e.addr_type.lower(), "address type")
        iif = " . iif" if e.limit_iface_in else ""
        return f"fib {e.field}{iif} type {_neg(e.negate)}{atype}"
    if isinstance(e, CtStateMatch):
        if not e.states:
            raise RulesRenderError("ct state match without states")
        states = [_check_word(s.lower(), "ct state") for s in e.states]
        if e.negate:
            joiner = " | " if style == "list" else ","
            return f"ct state != {joiner.join(states)}"
        return f"ct state {','.join(states)}"
    if isinstance(e, SetMatch):
        if not e.keys:
            raise RulesRenderError(f"set match on @{e.set_name} without keys")
        keys = " . ".join(ctx.key_words(e.set_name, e.keys))
        return f"{keys} {_neg(e.negate)}@{_check_name(e.set_name, 'set')}"
    if isinstance(e, MarkSet):
        return _render_markset(e, style)
    if isinstance(e, SetUpdate):
        if not e.keys:
            raise RulesRenderError(f"update of @{e.set_name} without keys")
        keys = " . ".join(ctx.key_words(e.set_name, e.keys))
        return f"update @{_check_name(e.set_name, 'set')} {{ {keys} }}"
    if isinstance(e, Counter):
        return "counter packets 0 bytes 0" if style == "list" else "counter"
    if isinstance(e, RawMatch | RawStatement):
        return _check_raw(e.text)
    if isinstance(e, StatisticMatch | RecentMatch):
        raise RulesRenderError(f"{type(e).__name__} is an iptables match, not nft")
    raise RulesRenderError(f"cannot write {e!r} as nft")


def _field(value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RulesRenderError(f"invalid field {value!r} (expected one of {allowed})")


def _u32(value: int, what: str) -> None:
    if not isinstance(value, int) or not 0 <= value <= FULL_MASK:
        raise RulesRenderError(f"invalid {what} {value!r}")


def _render_markset(e: MarkSet, style: Style) -> str:
    _u32(e.value, "mark")
    _u32(e.mask, "mark mask")
    fmt = _hex8 if style == "list" else hex
    if style == "list":
        lhs, ops = "meta mark set meta mark", {"or": "|", "xor": "^", "and": "&"}
        head = "meta mark set"
    else:
        lhs, ops = "mark set mark", {"or": "or", "xor": "xor", "and": "and"}
        head = "mark set"
    if e.op == "set":
        if e.mask == FULL_MASK:
            return f"{head} {fmt(e.value)}"
        # --set-xmark V/M: mark = (mark & ~M) ^ V; nft prints (mark & (~M | V)) | V
        # when V lies inside M.
        keep = ~e.mask & FULL_MASK
        if e.value & keep == 0:
            return f"{lhs} {ops['and']} {fmt(keep | e.value)} {ops['or']} {fmt(e.value)}"
        return f"{lhs} {ops['and']} {fmt(keep)} {ops['xor']} {fmt(e.value)}"
    if e.op not in ops:
        raise RulesRenderError(f"invalid mark operation {e.op!r}")
    if e.mask != FULL_MASK:
        raise RulesRenderError(f"mark {e.op} with a mask cannot be written in nft: {e!r}")
    return f"{lhs} {ops[e.op]} {fmt(e.value)}"


def _nat_target(address: str, port: int | None) -> str:
    _check_addr(address, "NAT address")
    if port is None:
        return address
    _port_text(port, port)
    return f"[{address}]:{port}" if _is_ipv6(address) else f"{address}:{port}"


def _render_verdict(v: Verdict, ctx: _Ctx, style: Style) -> str:
    if isinstance(v, Jump):  # the commonest first (the verdict classes are disjoint)
        return f"jump {_check_name(v.chain, 'chain')}"
    if isinstance(v, Goto):
        return f"goto {_check_name(v.chain, 'chain')}"
    if isinstance(v, DNAT | SNAT):
        kind = "dnat" if isinstance(v, DNAT) else "snat"
        fam = ""
        if ctx.family == "inet":
            fam = " ip6" if _is_ipv6(v.address) else " ip"
        return f"{kind}{fam} to {_nat_target(v.address, v.port)}"
    if isinstance(v, Accept):
        return "accept"
    if isinstance(v, Drop):
        return "drop"
    if isinstance(v, Return):
        return "return"
    if isinstance(v, Reject):
        if v.with_ is None:
            return "reject"
        if not _REJECT_RE.match(v.with_):
            raise RulesRenderError(f"invalid reject type {v.with_!r}")
        return f"reject with {v.with_}"
    if isinstance(v, Masquerade):
        return "masquerade fully-random" if v.fully_random else "masquerade"
    if isinstance(v, VmapLookup):
        if not v.keys:
            raise RulesRenderError(f"vmap lookup in @{v.map_name} without keys")
        keys = " . ".join(ctx.key_words(v.map_name, v.keys))
        return f"{keys} vmap @{_check_name(v.map_name, 'map')}"
    if isinstance(v, NumgenVmap):
        if not isinstance(v.modulus, int) or v.modulus < 1 or not v.mapping:
            raise RulesRenderError(f"invalid numgen vmap {v!r}")
        sep = ", " if style == "list" else " , "
        items = sep.join(f"{k} : {_render_verdict(t, ctx, style)}" for k, t in v.mapping)
        offset = f" offset {v.offset}" if v.offset else ""
        return f"numgen random mod {v.modulus}{offset} vmap {{ {items} }}"
    raise RulesRenderError(f"cannot write verdict {v!r} as nft")


def _name_ok(name: object) -> bool:
    """Whether :func:`_check_name` accepts ``name`` (without raising)."""
    return (
        isinstance(name, str) and _NAME_RE.match(name) is not None and len(name) <= NAME_MAX_BYTES
    )


def _fast_rule(rule: Rule, ctx: _Ctx, style: Style = "script") -> str | None:
    """The text :func:`_render_rule_general` writes for ``rule`` if it has one of the
    commonest shapes, else None (one call of :func:`_fast_writer`'s writer)."""
    return _fast_writer(ctx, style)(rule)


def _fast_writer(ctx: _Ctx, style: Style) -> Callable[[Rule], str | None]:
    """A writer of the commonest rule shapes of one table, for renderers to make once.

    ``writer(rule)`` is the text :func:`_render_rule_general` writes, or None.
    It takes single-address IP matches, single-protocol matches (with no port
    match to fold them into), then a jump, goto, DNAT or ``numgen`` vmap of
    jumps and gotos, without comment. It checks everything the general code
    checks (chain names in ``ctx.chains`` were checked already; an address or
    protocol text is checked once per writer) and gives up (None) rather than
    raise, so the general code writes or refuses the rest.
    """
    ip4, ip6 = ctx.ip4, ctx.ip6
    inet = ctx.family == "inet"
    checked = ctx.chains
    sep = ", " if style == "list" else " , "
    good_addrs: set[str] = set()  # texts _ADDR_CHARS_RE matched
    good_words: set[str] = set()  # protocol texts _WORD_RE or _QUOTED_WORD_RE matched
    addr_ok = _ADDR_CHARS_RE.match
    word_ok = _WORD_RE.match
    quoted_word_ok = _QUOTED_WORD_RE.match

    def target(v: object) -> str | None:
        """``jump NAME`` / ``goto NAME`` as :func:`_render_verdict` writes it, or None."""
        if isinstance(v, Jump):
            word = "jump "
        elif isinstance(v, Goto):
            word = "goto "
        else:
            return None
        chain = v.chain
        if (type(chain) is str and chain in checked) or _name_ok(chain):
            return word + chain
        return None

    def write(rule: Rule) -> str | None:
        if rule.comment is not None:
            return None
        parts: list[str] = []
        for e in rule.exprs:
            if isinstance(e, IPMatch):
                cidrs = e.cidrs
                field = e.field
                if len(cidrs) != 1 or (field != "saddr" and field != "daddr"):
                    return None
                c = cidrs[0]
                if not (type(c) is str and c in good_addrs):
                    if not isinstance(c, str) or not addr_ok(c):
                        return None
                    good_addrs.add(c)
                parts.append(f"{ip6 if ':' in c else ip4} {field} {'!= ' if e.negate else ''}{c}")
            elif isinstance(e, ProtoMatch):
                protocols = e.protocols
                if len(protocols) != 1:
                    return None
                p = protocols[0]
                if not (type(p) is str and p in good_words):
                    if not isinstance(p, str) or not (word_ok(p) or quoted_word_ok(p)):
                        return None
                    good_words.add(p)
                parts.append(f"meta l4proto {'!= ' if e.negate else ''}{p}")
            else:  # a PortMatch among others changes how a ProtoMatch is written
                return None
        v = rule.verdict
        if isinstance(v, Jump | Goto):
            text = target(v)
            if text is None:
                return None
            parts.append(text)
        elif isinstance(v, DNAT):
            address, port = v.address, v.port
            if not (type(address) is str and address in good_addrs):
                if not isinstance(address, str) or not addr_ok(address):
                    return None
                good_addrs.add(address)
            v6 = ":" in address
            fam = (" ip6" if v6 else " ip") if inet else ""
            if port is None:
                parts.append(f"dnat{fam} to {address}")
            elif not isinstance(port, int) or not 0 <= port <= 65535:
                return None
            elif v6:
                parts.append(f"dnat{fam} to [{address}]:{port}")
            else:
                parts.append(f"dnat{fam} to {address}:{port}")
        elif isinstance(v, NumgenVmap):
            modulus = v.modulus
            if not isinstance(modulus, int) or modulus < 1 or not v.mapping:
                return None
            items = []
            for k, t in v.mapping:
                text = target(t)
                if text is None:
                    return None
                items.append(f"{k} : {text}")
            offset = f" offset {v.offset}" if v.offset else ""
            parts.append(f"numgen random mod {modulus}{offset} vmap {{ {sep.join(items)} }}")
        else:
            return None
        return " ".join(parts)

    return write


def _render_rule(
    rule: Rule,
    ctx: _Ctx,
    style: Style,
    fast: Callable[[Rule], str | None] | None = None,
) -> str:
    """One rule's text (without ``add rule F T C``), comment included.

    ``fast`` is the table's :func:`_fast_writer` for that style, if the caller
    made one (otherwise one is made for this rule).
    """
    text = _fast_rule(rule, ctx, style) if fast is None else fast(rule)
    return text if text is not None else _render_rule_general(rule, ctx, style)


def _render_rule_general(rule: Rule, ctx: _Ctx, style: Style) -> str:
    """:func:`_render_rule` for any rule (the shortcut's reference)."""
    exprs = rule.exprs
    for e in exprs:
        if isinstance(e, PortMatch):
            hidden, words = _l4_plan(exprs)
            parts = [
                _render_expr(e, ctx, style, words.get(i))
                for i, e in enumerate(exprs)
                if i not in hidden
            ]
            break
    else:  # no port match: _l4_plan would hide nothing and name no port word
        parts = [_render_expr(e, ctx, style, None) for e in exprs]
    if rule.verdict is not None:
        parts.append(_render_verdict(rule.verdict, ctx, style))
    if not parts:
        raise RulesRenderError("empty rule (no expression and no verdict)")
    if rule.comment is not None:
        parts.append(f"comment {_quote(rule.comment, 'rule')}")
    return " ".join(parts)


# ------------------------------------------------------------------ element writing
def _element_value_text(value: ElementValue, style: Style) -> str:
    if isinstance(value, Jump):
        return f"jump {_check_name(value.chain, 'chain')}"
    if isinstance(value, Goto):
        return f"goto {_check_name(value.chain, 'chain')}"
    if value is None:
        raise RulesRenderError("map element without a value")
    return " . ".join(_check_word(part, "element value") for part in value.split(" . "))


def _element_text(s: NftSet, element: Element, style: Style) -> str:
    key, value = element
    if not key:
        raise RulesRenderError(f"empty element key in @{s.name}")
    text = " . ".join(_check_word(k, "element key") for k in key)
    comment, timeout, expires_ms = element_options(key)
    if timeout is not None:
        text += f" timeout {format_time(timeout) if style == 'list' else f'{timeout}s'}"
    if expires_ms is not None:
        text += f" expires {format_time(0, expires_ms)}"
    if comment is not None:
        text += f" comment {_quote(comment, 'element')}"
    if s.is_map:
        text += f" : {_element_value_text(value, style)}"
    elif value is not None:
        raise RulesRenderError(f"set @{s.name} element {key!r} has a value")
    return text


def _set_type_text(s: NftSet) -> str:
    text = _check_type(s.key_type, "set key type")
    if s.value_type is not None:
        text += f" : {_check_type(s.value_type, 'map value type')}"
    return text


def _update_targets(table: Table) -> set[str]:
    return {
        e.set_name
        for chain in table.chains
        for rule in chain.rules
        for e in rule.exprs
        if isinstance(e, SetUpdate)
    }


def _set_kind(s: NftSet) -> str:
    return "map" if s.is_map else "set"


# ----------------------------------------------------------------------- the script
def _family_and_name(table: Table) -> str:
    if table.dialect != "nft":
        raise RulesRenderError(f"table {table.family} {table.name} is not an nft table")
    if table.family not in FAMILIES:
        raise RulesRenderError(f"invalid nft family {table.family!r}")
    return f"{table.family} {_check_name(table.name, 'table')}"


def _nft_tables(ruleset: Ruleset) -> list[Table]:
    if ruleset.ipsets or ruleset.virtual_servers:
        raise RulesRenderError("IPVS objects (ipsets, virtual servers) have no nft form")
    return list(ruleset.tables)


def _check_unique(table: Table) -> None:
    seen: set[str] = set()
    for c in table.chains:
        if c.name in seen:
            raise RulesRenderError(f"duplicate chain {c.name!r} in table {table.name}")
        seen.add(c.name)
    seen = set()
    for s in table.sets:
        if s.name in seen:
            raise RulesRenderError(f"duplicate set {s.name!r} in table {table.name}")
        seen.add(s.name)


def _chain_decl_script(table: Table, chain: Chain) -> str:
    head = f"add chain {_family_and_name(table)} {_check_name(chain.name, 'chain')}"
    body = []
    if chain.hook is not None or chain.type is not None or chain.priority is not None:
        if chain.hook is None or chain.type is None or chain.priority is None:
            raise RulesRenderError(f"base chain {chain.name} needs type, hook and priority")
        body.append(
            f"type {_check_word(chain.type, 'chain type')} hook "
            f"{_check_word(chain.hook, 'hook')} priority {int(chain.priority)} ;"
        )
        if chain.policy is not None:
            body.append(f"policy {_check_word(chain.policy, 'policy')} ;")
    elif chain.policy is not None:
        raise RulesRenderError(f"regular chain {chain.name} cannot have a policy")
    if chain.comment is not None:
        body.append(f"comment {_quote(chain.comment, 'chain')} ;")
    return head + (" { " + " ".join(body) + " }" if body else "")


def _set_decl_script(table: Table, s: NftSet) -> str:
    head = f"add {_set_kind(s)} {_family_and_name(table)} {_check_name(s.name, 'set')}"
    body = [f"type {_set_type_text(s)} ;"]
    if s.flags:
        body.append(f"flags {','.join(_check_flag(f) for f in s.flags)} ;")
    if s.timeout is not None:
        body.append(f"timeout {int(s.timeout)}s ;")
    if s.comment is not None:
        body.append(f"comment {_quote(s.comment, 'set')} ;")
    return f"{head} {{ {' '.join(body)} }}"


def render_script(ruleset: Ruleset, *, flush: bool = False) -> str:
    """The ``nft -f`` script (knftables transaction form) that creates ``ruleset``.

    Per table, in order: ``add table``; ``add chain`` for every chain; ``add
    set``/``add map`` for every set; then the rules of every chain; then the
    elements, one ``add element`` line each (the order of knftables'
    ``Fake.Dump``, and one ``nft -f`` accepts: chains and sets exist before a
    rule or element refers to them). With ``flush=True`` every ``add chain`` /
    ``add set`` / ``add map`` is followed by the matching ``flush``, so the
    script also replaces an existing copy (kube-proxy's full-sync pattern).

    Names, comments and values are checked so that no text can leave its place
    in the command: :class:`RulesRenderError` if a name is not an nft identifier
    (or longer than 255 bytes), a comment holds ``"`` or a control character
    (tab excepted) or more than 128 bytes.
    """
    with gc_paused():  # the many short-lived strings and lists are acyclic
        return _render_script(ruleset, flush)


def _render_script(ruleset: Ruleset, flush: bool) -> str:
    lines: list[str] = []
    for table in _nft_tables(ruleset):
        _check_unique(table)
        fam = _family_and_name(table)
        head = f"add table {fam}"
        if table.comment is not None:
            head += f" {{ comment {_quote(table.comment, 'table')} ; }}"
        lines.append(head)
        declared: list[str] = []
        for chain in table.chains:
            name = chain.name
            if (
                chain.hook is None
                and chain.type is None
                and chain.priority is None
                and chain.policy is None
                and chain.comment is None
            ):  # a regular chain: _chain_decl_script's text, without re-checking the table
                lines.append(f"add chain {fam} {_check_name(name, 'chain')}")
            else:
                lines.append(_chain_decl_script(table, chain))
            declared.append(name)
            if flush:
                lines.append(f"flush chain {fam} {name}")
        for s in table.sets:
            lines.append(_set_decl_script(table, s))
            if flush:
                lines.append(f"flush {_set_kind(s)} {fam} {s.name}")
        # every chain name was checked above: jumps to them need no second check
        ctx = _ctx_for(table, frozenset(declared))
        write = _fast_writer(ctx, "script")
        for chain in table.chains:
            rules = chain.rules
            if not rules:
                continue
            texts = list(map(write, rules))
            if None in texts:  # the shapes the shortcut left, in order
                for i, text in enumerate(texts):
                    if text is None:
                        texts[i] = _render_rule_general(rules[i], ctx, "script")
            lines += map(f"add rule {fam} {chain.name} ".__add__, texts)  # type: ignore[arg-type]
        for s in table.sets:
            for element in s.elements:
                lines.append(
                    f"add element {fam} {s.name} {{ {_element_text(s, element, 'script')} }}"
                )
    if lines:
        lines.append("")  # the final newline, in the same join
    return "\n".join(lines)


# --------------------------------------------------------------------- the listing
def _elements_block(s: NftSet) -> str:
    texts = [_element_text(s, e, "list") for e in s.elements]
    per_line = None if " . " in s.key_type else _ELEMENTS_PER_LINE.get(s.key_type)
    out = ["elements = { "]
    count = 0
    for i, text in enumerate(texts):
        if i:
            if per_line is not None and count < per_line:
                out.append(", ")
            else:
                out.append(_ELEMENT_BREAK)
                count = 0
        out.append(text)
        count += 1
    out.append(" }")
    return "".join(out)


def _set_block_list(s: NftSet, updated: bool) -> list[str]:
    lines = [f"\t{_set_kind(s)} {_check_name(s.name, 'set')} {{", f"\t\ttype {_set_type_text(s)}"]
    if updated:
        lines.append(f"\t\tsize {DYNAMIC_SET_SIZE}")
    if s.flags:
        lines.append(f"\t\tflags {','.join(_check_flag(f) for f in s.flags)}")
    if s.timeout is not None:
        lines.append(f"\t\ttimeout {format_time(int(s.timeout))}")
    if s.comment is not None:
        lines.append(f"\t\tcomment {_quote(s.comment, 'set')}")
    if s.elements:
        lines.append("\t\t" + _elements_block(s))
    lines.append("\t}")
    return lines


def _chain_block_list(
    table: Table, chain: Chain, ctx: _Ctx, fast: Callable[[Rule], str | None] | None = None
) -> list[str]:
    lines = [f"\tchain {_check_name(chain.name, 'chain')} {{"]
    if chain.comment is not None:
        lines.append(f"\t\tcomment {_quote(chain.comment, 'chain')}")
    if chain.hook is not None or chain.type is not None or chain.priority is not None:
        if chain.hook is None or chain.type is None or chain.priority is None:
            raise RulesRenderError(f"base chain {chain.name} needs type, hook and priority")
        prio = format_priority(table.family, chain.hook, int(chain.priority))
        line = (
            f"\t\ttype {_check_word(chain.type, 'chain type')} hook "
            f"{_check_word(chain.hook, 'hook')} priority {prio};"
        )
        if chain.policy is not None:
            line += f" policy {_check_word(chain.policy, 'policy')};"
        lines.append(line)
    elif chain.policy is not None:
        raise RulesRenderError(f"regular chain {chain.name} cannot have a policy")
    if fast is None:
        fast = _fast_writer(ctx, "list")
    lines.extend(f"\t\t{_render_rule(rule, ctx, 'list', fast)}" for rule in chain.rules)
    lines.append("\t}")
    return lines


def render_list(ruleset: Ruleset) -> str:
    """The ruleset as ``nft list ruleset`` prints it (nft 1.0.6, without ``-a``).

    This writes the model as it stands; ``render_list(as_listed(r))`` is what
    nft prints after loading ``render_script(r)`` (byte for byte, for the
    constructs :func:`as_listed` models). Layout: ``table F N {``, a tab-indented
    ``comment``, the sets and maps, then the chains, separated by blank lines;
    set properties in nft's order (``type``, ``size``, ``flags``, ``timeout``,
    ``comment``, ``elements = { ... }`` wrapped as nft wraps them by key type);
    base chains as ``type T hook H priority P; policy X;`` with nft's named
    priorities. A set that a rule updates (``update @s``) is printed with
    ``size 65535``, which nft gives such sets.
    """
    out: list[str] = []
    for table in _nft_tables(ruleset):
        _check_unique(table)
        ctx = _ctx_for(table)
        updated = _update_targets(table)
        out.append(f"table {_family_and_name(table)} {{")
        if table.comment is not None:
            out.append(f"\tcomment {_quote(table.comment, 'table')}")
        blocks = [_set_block_list(s, s.name in updated) for s in table.sets]
        fast = _fast_writer(ctx, "list")
        blocks += [_chain_block_list(table, c, ctx, fast) for c in table.chains]
        for i, block in enumerate(blocks):
            if i:
                out.append("")
            out.extend(block)
        out.append("}")
    return "".join(line + "\n" for line in out)


# ----------------------------------------------------------------------- tokenizing
@attrs.frozen
class _Tok:
    text: str
    start: int
    end: int

    @property
    def quoted(self) -> bool:
        return self.text.startswith('"')


_TOKEN_RE = re.compile(r'"[^"]*"|[{},;]|[^\s{},;"]+')


def _tokenize(text: str) -> list[_Tok]:
    toks = []
    pos = 0
    for m in _TOKEN_RE.finditer(text):
        gap = text[pos : m.start()]
        if gap.strip():
            raise ValueError(f"unterminated quoted string at column {pos + 1}")
        toks.append(_Tok(m.group(), m.start(), m.end()))
        pos = m.end()
    if text[pos:].strip():
        raise ValueError(f"unterminated quoted string at column {pos + 1}")
    return toks


def _strip_hash_comment(line: str) -> str:
    """Drop a ``# ...`` comment (``# handle 12``) outside quotes."""
    in_quote = False
    for i, ch in enumerate(line):
        if ch == '"':
            in_quote = not in_quote
        elif ch == "#" and not in_quote:
            return line[:i]
    return line


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


# ----------------------------------------------------------------------- rule parsing
_STATEMENT_WORDS = frozenset(
    {
        "counter",
        "log",
        "limit",
        "quota",
        "queue",
        "notrack",
        "redirect",
        "tproxy",
        "synproxy",
        "dup",
        "fwd",
        "add",
        "update",
        "delete",
        "continue",
        "flow",
        "reset",
        "secmark",
        "last",
    }
)
_CT_STATES = frozenset(s.lower() for s in CT_STATE_BITS)


def _is_ip_text(text: str) -> bool:
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            ipaddress.ip_address(lo)
            ipaddress.ip_address(hi)
        elif "/" in text:
            ipaddress.ip_network(text, strict=False)
        else:
            ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _port_range(text: str) -> tuple[int, int] | None:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not m:
        return None
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) else lo
    if not (0 <= lo <= hi <= 65535):
        return None
    return lo, hi


def _norm_proto(text: str) -> str | None:
    if text.isdigit():
        return _PROTO_NAMES.get(int(text), text)
    if re.fullmatch(r"[a-z][a-z0-9.+-]*", text):
        return text
    return None


class _RuleParser:
    """Reads one rule's tokens into expressions and a verdict (see ``_l4_plan``)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.n = len(self.toks)

    # -- helpers
    def word(self, i: int) -> str | None:
        return self.toks[i].text if i < self.n else None

    def span(self, i: int, j: int) -> str:
        return self.text[self.toks[i].start : self.toks[j - 1].end]

    def rel(self, i: int) -> tuple[bool, int]:
        w = self.word(i)
        if w in ("!=", "ne"):
            return True, i + 1
        if w in ("==", "eq"):
            return False, i + 1
        return False, i

    def braced(self, i: int) -> tuple[list[str], int] | None:
        """``{ a, b }`` -> ([a, b], index after ``}``); also ``a,b`` lists are not here."""
        if self.word(i) != "{":
            return None
        vals: list[str] = []
        j = i + 1
        expect_value = True
        while j < self.n:
            w = self.toks[j].text
            if w == "}":
                return (vals, j + 1) if vals and not expect_value else None
            if w == ",":
                if expect_value:
                    return None
                expect_value = True
            else:
                if not expect_value:
                    return None
                vals.append(w)
                expect_value = False
            j += 1
        return None

    def values(self, i: int) -> tuple[list[str], int] | None:
        """A single value, a ``{ set }``, or a comma list ``a,b`` (tokens a , b)."""
        b = self.braced(i)
        if b is not None:
            return b
        w = self.word(i)
        if w is None or w in ("{", "}", ",", ";") or self.toks[i].quoted:
            return None
        return [w], i + 1

    # -- keys
    def key_field(self, i: int) -> tuple[str, int] | None:
        w, w2 = self.word(i), self.word(i + 1)
        if w in ("ip", "ip6") and w2 in ("saddr", "daddr"):
            return w2, i + 2
        if w == "meta" and w2 == "l4proto":
            return "l4proto", i + 2
        if w == "th" and w2 in ("sport", "dport"):
            return w2, i + 2
        if w == "meta" and w2 == "mark":
            return "mark", i + 2
        if w == "mark":
            return "mark", i + 1
        if w in ("iifname", "oifname"):
            return w[:3], i + 1
        if w == "meta" and w2 in ("iifname", "oifname"):
            return w2[:3], i + 2
        return None

    def keys(self, i: int) -> tuple[list[str], int] | None:
        first = self.key_field(i)
        if first is None:
            return None
        fields, j = [first[0]], first[1]
        while self.word(j) == ".":
            nxt = self.key_field(j + 1)
            if nxt is None:
                return None
            fields.append(nxt[0])
            j = nxt[1]
        return fields, j

    # -- verdicts (must end the rule)
    def verdict(self, i: int) -> Verdict | None:
        v, j = self._verdict(i)
        return v if v is not None and j == self.n else None

    def _verdict(self, i: int) -> tuple[Verdict | None, int]:
        w = self.word(i)
        if w == "accept":
            return Accept(), i + 1
        if w == "drop":
            return Drop(), i + 1
        if w == "return":
            return Return(), i + 1
        if w in ("jump", "goto"):
            target = self.word(i + 1)
            if target is None or not _READ_NAME_RE.match(target):
                return None, i
            return (Jump(target) if w == "jump" else Goto(target)), i + 2
        if w == "reject":
            if i + 1 == self.n:
                return Reject(), i + 1
            if self.word(i + 1) != "with" or i + 2 >= self.n:
                return None, i
            words = [t.text for t in self.toks[i + 2 : self.n]]
            if len(words) >= 3 and words[0] in ("icmp", "icmpv6", "icmpx") and words[1] == "type":
                words = [words[0], *words[2:]]
            text = " ".join(words)
            return (Reject(text), self.n) if _REJECT_RE.match(text) else (None, i)
        if w in ("dnat", "snat"):
            j = i + 1
            if self.word(j) in ("ip", "ip6"):
                j += 1
            if self.word(j) != "to" or j + 1 >= self.n:
                return None, i
            nat = _parse_nat_target(self.toks[j + 1].text)
            if nat is None:
                return None, i
            addr, port = nat
            return (DNAT(addr, port) if w == "dnat" else SNAT(addr, port)), j + 2
        if w == "masquerade":
            if self.word(i + 1) == "fully-random":
                return Masquerade(True), i + 2
            return Masquerade(), i + 1
        if w == "numgen":
            return self._numgen(i)
        k = self.keys(i)
        if k is not None and self.word(k[1]) == "vmap":
            name = self.word(k[1] + 1)
            if name is not None and name.startswith("@") and _READ_NAME_RE.match(name[1:]):
                return VmapLookup(name[1:], tuple(k[0])), k[1] + 2
        return None, i

    def _numgen(self, i: int) -> tuple[Verdict | None, int]:
        words = [self.word(i + k) for k in range(1, 4)]
        if words[0] != "random" or words[1] != "mod" or words[2] is None or not words[2].isdigit():
            return None, i
        modulus = int(words[2])
        j = i + 4
        offset = 0
        if self.word(j) == "offset":
            off = self.word(j + 1)
            if off is None or not off.isdigit():
                return None, i
            offset = int(off)
            j += 2
        if self.word(j) != "vmap" or self.word(j + 1) != "{":
            return None, i
        j += 2
        mapping: list[tuple[int, Jump | Goto]] = []
        while True:
            num, colon, kind, target = (self.word(j + k) for k in range(4))
            if num is None or not num.isdigit() or colon != ":" or kind not in ("jump", "goto"):
                return None, i
            if target is None or not _READ_NAME_RE.match(target):
                return None, i
            mapping.append((int(num), Jump(target) if kind == "jump" else Goto(target)))
            j += 4
            sep = self.word(j)
            if sep == "}":
                return NumgenVmap(modulus, tuple(mapping), offset), j + 1
            if sep != ",":
                return None, i
            j += 1

    # -- matches and statements
    def expr(self, i: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        """Parse one expression at ``i``: (exprs, next index, new l4 context)."""
        w, w2 = self.word(i), self.word(i + 1)
        if w in ("ip", "ip6") and w2 in ("saddr", "daddr"):
            return self._addr_or_set(i, l4)
        if (w == "meta" and w2 == "l4proto") or (w == "th" and w2 in ("sport", "dport")):
            if self._lookup_follows(i + 2):
                return self._set_match(i, l4)
            if w == "meta":
                return self._proto(i + 2, l4)
            return self._port(i + 2, w2, l4, None)
        if w in PORT_PROTOS and w2 in ("sport", "dport"):
            return self._port(i + 2, w2, l4, w)
        if w == "mark" or (w == "meta" and w2 == "mark"):
            j = i + 1 if w == "mark" else i + 2
            if self.word(j) == "set":
                return self._markset(j + 1, l4)
            if self._lookup_follows(j):
                return self._set_match(i, l4)
            return self._mark(j, l4)
        if w in ("iifname", "oifname") or (w == "meta" and w2 in ("iifname", "oifname")):
            j = i + 1 if w != "meta" else i + 2
            field = (w if w != "meta" else w2 or "")[:3]
            if self._lookup_follows(j):
                return self._set_match(i, l4)
            return self._iface(j, field, l4)
        if w == "fib":
            return self._fib(i + 1, l4)
        if w == "ct" and w2 == "state":
            return self._ctstate(i + 2, l4)
        if w == "counter":
            return self._counter(i, l4)
        if w == "update":
            return self._update(i, l4)
        return None

    def _lookup_follows(self, j: int) -> bool:
        """After a key expression: ``. more``, ``@set`` or ``!= @set``."""
        nxt = self.word(j) or ""
        if nxt in ("!=", "=="):
            nxt = self.word(j + 1) or ""
        return nxt == "." or nxt.startswith("@")

    def _set_match(self, i: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        k = self.keys(i)
        if k is None:
            return None
        fields, j = k
        negate, j = self.rel(j)
        name = self.word(j)
        if name is None or not name.startswith("@") or not _READ_NAME_RE.match(name[1:]):
            return None
        return [SetMatch(name[1:], tuple(fields), negate)], j + 1, l4

    def _addr_or_set(self, i: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        field = self.word(i + 1) or ""
        nxt = self.word(i + 2) or ""
        if nxt == "." or nxt.startswith("@"):
            return self._set_match(i, l4)
        negate, j = self.rel(i + 2)
        if (self.word(j) or "").startswith("@"):
            return self._set_match(i, l4)
        vals = self.values(j)
        if vals is None or not all(_is_ip_text(v) for v in vals[0]):
            return None
        return [IPMatch(field, tuple(vals[0]), negate)], vals[1], l4  # type: ignore[arg-type]

    def _proto(self, j: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        negate, j = self.rel(j)
        vals = self.values(j)
        if vals is None:
            return None
        protos = [_norm_proto(v) for v in vals[0]]
        if any(p is None for p in protos):
            return None
        clean = tuple(p for p in protos if p is not None)
        new_l4 = clean[0] if len(clean) == 1 and not negate else None
        return [ProtoMatch(clean, negate)], vals[1], new_l4

    def _port(
        self, j: int, field: str | None, l4: str | None, proto: str | None
    ) -> tuple[list[Expr], int, str | None] | None:
        negate, j = self.rel(j)
        vals = self.values(j)
        if vals is None:
            return None
        ranges = [_port_range(v) for v in vals[0]]
        if any(r is None for r in ranges):
            return None
        out: list[Expr] = []
        if proto is not None and l4 != proto:
            out.append(ProtoMatch((proto,)))
            l4 = proto
        out.append(PortMatch(field, tuple(r for r in ranges if r is not None), negate))  # type: ignore[arg-type]
        return out, vals[1], l4

    def _mark(self, j: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        mask = FULL_MASK
        if self.word(j) in ("&", "and"):
            m = _int_or_none(self.word(j + 1))
            if m is None:
                return None
            mask, j = m, j + 2
            if self.word(j) not in ("==", "!=", "eq", "ne"):
                return None
        negate, j = self.rel(j)
        value = _int_or_none(self.word(j))
        if value is None or not (0 <= value <= FULL_MASK and 0 <= mask <= FULL_MASK):
            return None
        return [MarkMatch(value, mask, negate)], j + 1, l4

    def _markset(self, j: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        value = _int_or_none(self.word(j))
        if value is not None:
            return [MarkSet("set", value)], j + 1, l4
        if self.word(j) == "meta" and self.word(j + 1) == "mark":
            j += 2
        elif self.word(j) == "mark":
            j += 1
        else:
            return None
        ops = {"or": "or", "|": "or", "xor": "xor", "^": "xor", "and": "and", "&": "and"}
        op = ops.get(self.word(j) or "")
        a = _int_or_none(self.word(j + 1))
        if op is None or a is None:
            return None
        j += 2
        op2 = ops.get(self.word(j) or "")
        if op == "and" and op2 in ("or", "xor"):
            b = _int_or_none(self.word(j + 1))
            if b is None:
                return None
            # (mark & A) | B keeps the bits of A outside B: M = ~(A & ~B)
            mask = ~(a & ~b) & FULL_MASK if op2 == "or" else ~a & FULL_MASK
            return [MarkSet("set", b, mask)], j + 2, l4
        if op2 is not None:
            return None
        return [MarkSet(op, a)], j, l4  # type: ignore[arg-type]

    def _iface(
        self, j: int, field: str, l4: str | None
    ) -> tuple[list[Expr], int, str | None] | None:
        negate, j = self.rel(j)
        w = self.word(j)
        if w is None or w in ("{", "}", ",") or w.startswith("@"):
            return None
        return [IfaceMatch(field, _unquote(w), negate)], j + 1, l4  # type: ignore[arg-type]

    def _fib(self, j: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        field = self.word(j)
        if field not in ("saddr", "daddr"):
            return None
        j += 1
        limit = False
        if self.word(j) == "." and self.word(j + 1) == "iif":
            limit, j = True, j + 2
        if self.word(j) != "type":
            return None
        negate, j = self.rel(j + 1)
        atype = self.word(j)
        if atype is None or not re.fullmatch(r"[a-z]+", atype):
            return None
        fib_field: Literal["saddr", "daddr"] = "saddr" if field == "saddr" else "daddr"
        return [AddrTypeMatch(fib_field, atype.upper(), negate, limit)], j + 1, l4

    def _ctstate(self, j: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        negate, j = self.rel(j)
        b = self.braced(j)
        if b is not None:
            states, j = b
        else:
            states = []
            while True:
                w = self.word(j)
                if w is None or w not in _CT_STATES:
                    return None
                states.append(w)
                j += 1
                if self.word(j) in (",", "|"):
                    j += 1
                    continue
                break
        if not all(s in _CT_STATES for s in states):
            return None
        return [CtStateMatch(tuple(s.upper() for s in states), negate)], j, l4

    def _counter(self, i: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        if self.word(i + 1) == "packets":
            p, bw, b = self.word(i + 2), self.word(i + 3), self.word(i + 4)
            if p is None or not p.isdigit() or bw != "bytes" or b is None or not b.isdigit():
                return None
            if int(p) or int(b):
                return [RawStatement(self.span(i, i + 5))], i + 5, l4
            return [Counter()], i + 5, l4
        return [Counter()], i + 1, l4

    def _update(self, i: int, l4: str | None) -> tuple[list[Expr], int, str | None] | None:
        name = self.word(i + 1)
        if name is None or not name.startswith("@") or not _READ_NAME_RE.match(name[1:]):
            return None
        if self.word(i + 2) != "{":
            return None
        k = self.keys(i + 3)
        if k is None or self.word(k[1]) != "}":
            return None
        return [SetUpdate(name[1:], tuple(k[0]))], k[1] + 1, l4


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def _parse_nat_target(text: str) -> tuple[str, int | None] | None:
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text)
    if m:
        addr, port = m.group(1), m.group(2)
    elif text.count(":") > 1:
        addr, port = text, None
    elif ":" in text:
        addr, port = text.split(":", 1)
    else:
        addr, port = text, None
    if not _is_ip_text(addr) or "/" in addr or "-" in addr:
        return None
    if port is not None:
        if not port.isdigit() or int(port) > 65535:
            return None
        return addr, int(port)
    return addr, None


def _raw_for(text: str, words: Sequence[str]) -> RawMatch | RawStatement:
    if words and (words[0] in _STATEMENT_WORDS or "set" in words[1:] or words[0] == "xt"):
        if words[0] == "xt" and len(words) > 1 and words[1] == "match":
            return RawMatch(text)
        return RawStatement(text)
    return RawMatch(text)


def parse_rule_text(
    text: str,
    *,
    line: int | None = None,
    report: Callable[[int | None, str, str], None] | None = None,
) -> Rule:
    """Parse one rule (the part after ``add rule F T C``, or a listed rule line).

    Known expressions become the model's matches and statements; the first
    expression that is not understood starts a :class:`RawMatch` /
    :class:`RawStatement` that runs up to a trailing verdict (and ``report`` is
    called with it). Raises ``ValueError`` on an unterminated quote.
    """
    text = text.strip()
    p = _RuleParser(text)
    n = p.n
    comment: str | None = None
    if n >= 2 and p.toks[n - 2].text == "comment" and p.toks[n - 1].quoted:
        comment = _unquote(p.toks[n - 1].text)
        n -= 2
        p.n = n
    exprs: list[Expr] = []
    verdict: Verdict | None = None
    l4: str | None = None
    i = 0
    while i < n:
        v = p.verdict(i)
        if v is not None:
            verdict = v
            break
        got = p.expr(i, l4)
        if got is not None:
            new, i, l4 = got
            exprs.extend(new)
            for e in new:
                if isinstance(e, RawMatch | RawStatement) and report is not None:
                    report(line, e.text, f"kept as {type(e).__name__}")
            continue
        k = next((k for k in range(i + 1, n) if p.verdict(k) is not None), n)
        raw_text = p.span(i, k)
        raw = _raw_for(raw_text, [t.text for t in p.toks[i:k]])
        exprs.append(raw)
        if report is not None:
            report(line, raw_text, f"kept as {type(raw).__name__}")
        if k < n:
            verdict = p.verdict(k)
        break
    if not exprs and verdict is None:
        raise ValueError("empty rule")
    return Rule(tuple(exprs), verdict, comment)


# ------------------------------------------------------------------------ builders
@attrs.define
class _SetB:
    name: str
    key_type: str
    value_type: str | None = None
    flags: list[str] = attrs.Factory(list)
    timeout: int | None = None
    comment: str | None = None
    elements: dict[tuple[str, ...], Element] = attrs.Factory(dict)
    size: int | None = None
    line: int | None = None

    def freeze(self) -> NftSet:
        return NftSet(
            self.name,
            self.key_type,
            self.value_type,
            tuple(self.flags),
            self.timeout,
            tuple(self.elements.values()),
            self.comment,
        )


@attrs.define
class _ChainB:
    name: str
    type: str | None = None
    hook: str | None = None
    priority: int | None = None
    policy: str | None = None
    comment: str | None = None
    rules: list[Rule] = attrs.Factory(list)

    def freeze(self) -> Chain:
        return Chain(
            self.name,
            tuple(self.rules),
            self.type,
            self.hook,
            self.priority,
            self.policy,
            self.comment,
        )


@attrs.define
class _TableB:
    family: str
    name: str
    comment: str | None = None
    chains: dict[str, _ChainB] = attrs.Factory(dict)
    sets: dict[str, _SetB] = attrs.Factory(dict)


class _Builder:
    """Mutable state while a parser runs a transaction; frozen into a Ruleset at the end."""

    def __init__(
        self,
        *,
        strict: bool,
        issues: list[ParseIssue] | None,
        source: str | None,
        base: Ruleset | None = None,
    ) -> None:
        self.strict = strict
        self.issues = issues
        self.source = source
        self.tables: dict[tuple[str, str], _TableB] = {}
        self.line: int | None = None
        self.line_text: str | None = None
        if base is not None:
            for t in base.tables:
                if t.dialect != "nft":
                    continue
                tb = _TableB(t.family, t.name, t.comment)
                for c in t.chains:
                    tb.chains[c.name] = _ChainB(
                        c.name, c.type, c.hook, c.priority, c.policy, c.comment, list(c.rules)
                    )
                for s in t.sets:
                    sb = _SetB(
                        s.name, s.key_type, s.value_type, list(s.flags), s.timeout, s.comment
                    )
                    sb.elements = {tuple(e[0]): e for e in s.elements}
                    tb.sets[s.name] = sb
                self.tables[(t.family, t.name)] = tb

    # -- reporting
    def fail(self, message: str, text: str | None = None, line: int | None = None) -> NoReturn:
        raise RulesParseError(
            f"{self.source}: {message}" if self.source else message,
            line=line if line is not None else self.line,
            text=text if text is not None else self.line_text,
        )

    def issue(self, message: str, text: str, line: int | None = None) -> None:
        where = line if line is not None else self.line
        if self.strict:
            self.fail(message, text, where)
        if self.issues is not None:
            self.issues.append(ParseIssue(where, text, message))

    def report_raw(self, line: int | None, text: str, message: str) -> None:
        self.issue(f"expression not modelled, {message}", text, line)

    # -- lookups
    def table(self, family: str, name: str, *, create: bool = False) -> _TableB:
        if family not in FAMILIES:
            self.fail(f"unknown family {family!r}")
        key = (family, name)
        if key not in self.tables:
            if not create:
                self.fail(f"no table {family} {name}")
            if not _READ_NAME_RE.match(name):
                self.fail(f"invalid table name {name!r}")
            self.tables[key] = _TableB(family, name)
        return self.tables[key]

    def chain(self, table: _TableB, name: str) -> _ChainB:
        if name not in table.chains:
            self.fail(f"no chain {name!r} in table {table.family} {table.name}")
        return table.chains[name]

    def set(self, table: _TableB, name: str) -> _SetB:
        if name not in table.sets:
            self.fail(f"no set or map {name!r} in table {table.family} {table.name}")
        return table.sets[name]

    def add_rule(
        self, chain: _ChainB, text: str, *, index: int | None = None, insert: bool = False
    ) -> None:
        try:
            rule = parse_rule_text(text, line=self.line, report=self.report_raw)
        except RulesParseError:
            raise
        except ValueError as exc:
            self.fail(str(exc), text)
        if index is None:
            if insert:
                chain.rules.insert(0, rule)
            else:
                chain.rules.append(rule)
            return
        if not 0 <= index < len(chain.rules):
            self.fail(f"no rule at index {index} in chain {chain.name}")
        chain.rules.insert(index if insert else index + 1, rule)

    def add_element(self, s: _SetB, element: Element, *, create: bool = False) -> None:
        key = tuple(element[0])
        if key in s.elements:
            if create or s.elements[key][1] != element[1]:
                self.fail(f"element {' . '.join(key)} already exists in @{s.name}")
            return
        s.elements[key] = element

    def freeze(self, family: Literal["IPv4", "IPv6"] | None) -> Ruleset:
        tables = []
        for tb in self.tables.values():
            updated = {
                e.set_name
                for cb in tb.chains.values()
                for r in cb.rules
                for e in r.exprs
                if isinstance(e, SetUpdate)
            }
            for sb in tb.sets.values():
                if sb.size is not None and not (sb.size == DYNAMIC_SET_SIZE and sb.name in updated):
                    self.issue(
                        "set size not kept (the model has no set size)",
                        f"set {sb.name}: size {sb.size}",
                        sb.line,
                    )
            tables.append(
                Table(
                    tb.family,
                    tb.name,
                    "nft",
                    tuple(c.freeze() for c in tb.chains.values()),
                    tuple(s.freeze() for s in tb.sets.values()),
                    tb.comment,
                )
            )
        if family is None:
            fams = {t.family for t in tables}
            family = "IPv6" if fams == {"ip6"} else "IPv4"
        return Ruleset("nftables", family, tuple(tables))


# ------------------------------------------------------------- set/chain properties
_CHAIN_LINE_RE = re.compile(
    r"type (?P<type>\S+) hook (?P<hook>\S+)(?: device (?P<device>\S+))?"
    r" priority (?P<prio>[^;]+?)\s*;(?:\s*policy (?P<policy>[a-z]+)\s*;)?\s*\Z"
)


def _split_top(text: str, sep: str = ";") -> list[str]:
    """Split ``text`` on ``sep`` outside quotes and braces."""
    out, depth, start, in_quote = [], 0, 0, False
    for i, ch in enumerate(text):
        if ch == '"':
            in_quote = not in_quote
        elif in_quote:
            continue
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [part.strip() for part in out if part.strip()]


_TYPEOF_TYPES = {
    "ip saddr": "ipv4_addr",
    "ip daddr": "ipv4_addr",
    "ip6 saddr": "ipv6_addr",
    "ip6 daddr": "ipv6_addr",
    "meta l4proto": "inet_proto",
    "th sport": "inet_service",
    "th dport": "inet_service",
    "tcp sport": "inet_service",
    "tcp dport": "inet_service",
    "udp sport": "inet_service",
    "udp dport": "inet_service",
    "meta mark": "mark",
    "iifname": "ifname",
    "oifname": "ifname",
    "meta iifname": "ifname",
    "meta oifname": "ifname",
    "ct state": "ct_state",
}


def _typeof_to_type(expr: str) -> str | None:
    parts = [p.strip() for p in expr.split(" . ")]
    types = [_TYPEOF_TYPES.get(p) for p in parts]
    if any(t is None for t in types):
        return None
    return " . ".join(t for t in types if t is not None)


def _apply_set_property(b: _Builder, s: _SetB, prop: str, *, declaring: bool) -> None:
    """One set property (``type X``, ``flags a,b``, ``elements = {...}``...)."""
    word, _, rest = prop.partition(" ")
    rest = rest.strip()
    if word in ("type", "typeof"):
        if not declaring:
            return
        key, _, value = rest.partition(" : ")
        if word == "typeof":
            resolved = _typeof_to_type(key)
            b.issue("typeof declaration kept as its type", prop)
            if resolved is None:
                b.fail(f"cannot resolve typeof {key!r}", prop)
            key = resolved
            if value:
                value = _typeof_to_type(value) or value
        s.key_type = key.strip()
        s.value_type = value.strip() or None
        if not _TYPE_RE.match(s.key_type) or (s.value_type and not _TYPE_RE.match(s.value_type)):
            b.fail("invalid set type", prop)
    elif word == "flags":
        flags = [f.strip() for f in rest.split(",") if f.strip()]
        if not all(_FLAG_RE.match(f) for f in flags):
            b.fail("invalid set flags", prop)
        s.flags = flags
    elif word == "timeout":
        try:
            ms = parse_time_ms(rest)
        except ValueError:
            b.fail("invalid timeout", prop)
        if ms % 1000:
            b.issue("sub-second set timeout rounded down (the model keeps seconds)", prop)
        s.timeout = ms // 1000
    elif word == "comment":
        s.comment = _unquote(rest)
    elif word == "size":
        if not rest.isdigit():
            b.fail("invalid set size", prop)
        s.size = int(rest)
        s.line = b.line
    elif word == "elements":
        body = rest.lstrip("=").strip()
        if not (body.startswith("{") and body.endswith("}")):
            b.fail("invalid elements block", prop)
        for element in _parse_elements(b, s, body[1:-1]):
            b.add_element(s, element)
    elif word in ("policy", "gc-interval", "auto-merge", "counter", "devices"):
        b.issue(f"set {word} not kept (the model has no place for it)", prop)
    else:
        b.issue("unknown set property not kept", prop)


def _parse_elements(b: _Builder, s: _SetB, body: str) -> list[Element]:
    out: list[Element] = []
    for part in _split_top(body, ","):
        out.append(_parse_element(b, s, part))
    return out


def _parse_element(b: _Builder, s: _SetB, text: str) -> Element:
    try:
        toks = [t.text for t in _tokenize(text)]
    except ValueError as exc:
        b.fail(str(exc), text)
    key: list[str] = []
    i = 0
    while i < len(toks):
        key.append(toks[i])
        i += 1
        if i < len(toks) and toks[i] == ".":
            i += 1
            continue
        break
    comment = None
    timeout = expires = None
    while i < len(toks) and toks[i] != ":":
        opt = toks[i]
        arg = toks[i + 1] if i + 1 < len(toks) else None
        if arg is None:
            b.fail("invalid set element", text)
        if opt == "comment":
            comment = _unquote(arg)
        elif opt in ("timeout", "expires"):
            try:
                ms = parse_time_ms(arg)
            except ValueError:
                b.fail("invalid element time", text)
            if opt == "timeout":
                timeout = ms // 1000
            else:
                expires = ms
        else:
            b.issue("element option not kept (the model has no place for it)", text)
            i = len(toks)
            break
        i += 2
    value: ElementValue = None
    if i < len(toks) and toks[i] == ":":
        vt = toks[i + 1 :]
        if len(vt) == 2 and vt[0] in ("jump", "goto"):
            value = Jump(vt[1]) if vt[0] == "jump" else Goto(vt[1])
        elif vt:
            value = " ".join(vt)
        else:
            b.fail("map element without value", text)
    if not key or any(k in ("{", "}", ",", ":") for k in key):
        b.fail("invalid set element", text)
    if s.value_type is not None and value is None:
        b.fail(f"map @{s.name} element without a value", text)
    if s.value_type is None and value is not None:
        b.fail(f"set @{s.name} element with a value", text)
    return _make_key(key, comment, timeout, expires), value


def _apply_chain_decl(b: _Builder, table: _TableB, c: _ChainB, body: str) -> None:
    """``type X hook H priority P ; policy Y ; comment "C" ;`` (script or listed)."""
    props = _split_top(body)
    i = 0
    while i < len(props):
        prop = props[i]
        if prop.startswith("type "):
            line = prop + " ;"
            if i + 1 < len(props) and props[i + 1].startswith("policy "):
                line += f" {props[i + 1]} ;"
                i += 1
            _apply_chain_type(b, table, c, line)
        elif prop.startswith("policy "):
            c.policy = prop.split()[1]
        elif prop.startswith("comment "):
            c.comment = _unquote(prop[len("comment ") :].strip())
        else:
            b.issue("unknown chain property not kept", prop)
        i += 1


def _apply_chain_type(b: _Builder, table: _TableB, c: _ChainB, line: str) -> None:
    m = _CHAIN_LINE_RE.match(line.strip())
    if not m:
        b.fail("invalid base chain declaration", line)
    c.type, c.hook = m.group("type"), m.group("hook")
    try:
        c.priority = parse_priority(table.family, m.group("prio"))
    except ValueError as exc:
        b.fail(str(exc), line)
    if m.group("policy"):
        c.policy = m.group("policy")
    if m.group("device"):
        b.issue("chain device not kept (the model has no place for it)", line)


# ------------------------------------------------------------------- list parsing
@attrs.frozen
class _Line:
    number: int
    text: str


def _logical_lines(text: str, first_line: int = 1) -> Iterator[_Line]:
    """Non-blank lines without ``#`` comments; a ``{``-block spanning lines is joined
    when it started inside a line (``elements = { a,\\n b }``)."""
    pending: list[str] = []
    start = 0
    depth = 0
    for number, raw in enumerate(text.splitlines(), first_line):
        line = _strip_hash_comment(raw).strip()
        if not line:
            continue
        if pending:
            pending.append(line)
            depth += _brace_delta(line)
            if depth <= 0:
                yield _Line(start, " ".join(pending))
                pending, depth = [], 0
            continue
        delta = _brace_delta(line)
        if delta > 0 and not line.endswith("{"):
            pending, start, depth = [line], number, delta
            continue
        yield _Line(number, line)
    if pending:
        yield _Line(start, " ".join(pending))


def _brace_delta(line: str) -> int:
    depth, in_quote = 0, False
    for ch in line:
        if ch == '"':
            in_quote = not in_quote
        elif not in_quote:
            depth += (ch == "{") - (ch == "}")
    return depth


_BLOCK_RE = re.compile(r"(?P<kind>table|set|map|chain|[a-z][a-z ]*?)\s+(?P<rest>.*?)\s*\{\Z")


class _ListReader:
    """Reads the nested ``table F N { ... }`` form into a builder."""

    def __init__(self, b: _Builder, lines: list[_Line]) -> None:
        self.b = b
        self.lines = lines
        self.i = 0

    def next(self) -> _Line | None:
        if self.i >= len(self.lines):
            return None
        line = self.lines[self.i]
        self.i += 1
        self.b.line, self.b.line_text = line.number, line.text
        return line

    def run(self) -> None:
        while (line := self.next()) is not None:
            self.table_block(line)

    def table_block(self, head: _Line) -> None:
        words = head.text.split()
        if len(words) != 4 or words[0] != "table" or words[3] != "{":
            self.b.fail("expected 'table FAMILY NAME {'")
        table = self.b.table(words[1], words[2], create=True)
        while (line := self.next()) is not None:
            text = line.text
            if text == "}":
                return
            if text.startswith("comment "):
                table.comment = _unquote(text[len("comment ") :].strip())
                continue
            if text.startswith("flags "):
                self.b.issue("table flags not kept (the model has no table flags)", text)
                continue
            m = _BLOCK_RE.match(text)
            if not m:
                self.b.fail("unexpected line in table")
            kind, name = m.group("kind"), m.group("rest")
            if kind in ("set", "map"):
                self.set_block(table, name, kind)
            elif kind == "chain":
                self.chain_block(table, name)
            else:
                self.b.issue(f"{kind} not kept (the model has no {kind} objects)", text)
                self.skip_block()
        self.b.fail("unterminated table block")

    def skip_block(self) -> None:
        depth = 1
        while (line := self.next()) is not None:
            depth += _brace_delta(line.text)
            if depth <= 0:
                return
        self.b.fail("unterminated block")

    def set_block(self, table: _TableB, name: str, kind: str) -> None:
        if not _READ_NAME_RE.match(name):
            self.b.fail(f"invalid {kind} name {name!r}")
        existing = table.sets.get(name)
        s = existing or _SetB(name, "")
        declaring = existing is None
        while (line := self.next()) is not None:
            if line.text == "}":
                if declaring:
                    if not s.key_type:
                        self.b.fail(f"{kind} {name} has no type")
                    if (kind == "map") != (s.value_type is not None):
                        self.b.fail(f"{kind} {name}: maps need 'type K : V', sets 'type K'")
                    table.sets[name] = s
                return
            for prop in _split_top(line.text):
                _apply_set_property(self.b, s, prop, declaring=declaring)
        self.b.fail("unterminated set block")

    def chain_block(self, table: _TableB, name: str) -> None:
        if not _READ_NAME_RE.match(name):
            self.b.fail(f"invalid chain name {name!r}")
        c = table.chains.setdefault(name, _ChainB(name))
        while (line := self.next()) is not None:
            text = line.text
            if text == "}":
                return
            if text.startswith("type ") and " hook " in text:
                _apply_chain_type(self.b, table, c, text)
            elif text.startswith("policy ") and text.endswith(";"):
                c.policy = text.split()[1].rstrip(";")
            elif text.startswith("comment ") and text.count('"') == 2 and text.endswith('"'):
                c.comment = _unquote(text[len("comment ") :].strip())
            else:
                self.b.add_rule(c, text)
        self.b.fail("unterminated chain block")


def parse_list(
    text: str,
    *,
    family: Literal["IPv4", "IPv6"] | None = None,
    strict: bool = False,
    issues: list[ParseIssue] | None = None,
    source: str | None = None,
) -> Ruleset:
    """Read ``nft list ruleset`` output (``nft -a`` handles allowed) into a Ruleset.

    Every table is kept (kube-proxy's and any other). Expressions the model
    does not know are kept as raw text and, like anything left out, appended to
    ``issues`` (with the line number); ``strict=True`` raises
    :class:`RulesParseError` at the first such issue. Malformed text always
    raises :class:`RulesParseError` with the line number and text. ``family``
    sets ``Ruleset.family`` (default: IPv6 when every table is ``ip6``).
    """
    b = _Builder(strict=strict, issues=issues, source=source)
    _ListReader(b, list(_logical_lines(text))).run()
    return b.freeze(family)


# ------------------------------------------------------------------ script parsing
_CMD_RE = re.compile(
    r"(?P<verb>add|create|insert|replace|flush|delete|destroy)\s+(?P<obj>table|chain|set|map|rule|element|ruleset)\b\s*(?P<rest>.*)\Z",
    re.S,
)


def _commands(text: str) -> Iterator[tuple[int, str, list[_Line] | None]]:
    """Split a script into commands: (line, command text, block lines of a nested table).

    A nested ``table F N { ... }`` block is handed over whole (read as the listed
    form); a command whose braces span several lines is joined into one; several
    commands on a line are split at ``;`` outside braces and quotes.
    """
    raw_lines = text.splitlines()
    i = 0
    while i < len(raw_lines):
        number = i + 1
        line = _strip_hash_comment(raw_lines[i]).strip()
        i += 1
        if not line:
            continue
        depth = _brace_delta(line)
        if line.startswith("table ") and line.endswith("{"):
            block = [raw_lines[i - 1]]
            while depth > 0 and i < len(raw_lines):
                block.append(raw_lines[i])
                depth += _brace_delta(_strip_hash_comment(raw_lines[i]))
                i += 1
            yield number, line, list(_logical_lines("\n".join(block), first_line=number))
            continue
        parts = [line]
        while depth > 0 and i < len(raw_lines):
            more = _strip_hash_comment(raw_lines[i]).strip()
            i += 1
            if more:
                parts.append(more)
                depth += _brace_delta(more)
        for command in _split_top(" ".join(parts)):
            yield number, command, None


def _split_braced(rest: str) -> tuple[str, str | None]:
    """``NAME { body }`` -> (``NAME``, ``body``); ``NAME`` -> (``NAME``, None)."""
    if "{" not in rest:
        head, body = rest.strip(), None
    else:
        head, _, body = rest.partition("{")
        head, body = head.strip(), body.strip()
        if not body.endswith("}"):
            raise ValueError("unbalanced braces")
        body = body[:-1].strip()
    if len(head.split()) > 1:
        raise ValueError(f"unexpected text after {head.split()[0]!r}")
    return head, body


class _ScriptRunner:
    def __init__(self, b: _Builder) -> None:
        self.b = b

    def run(self, text: str) -> None:
        for number, command, block in _commands(text):
            self.b.line, self.b.line_text = number, command
            if block is not None:
                _ListReader(self.b, block).run()
                continue
            m = _CMD_RE.match(command)
            if not m:
                self.b.fail("unknown nft command")
            try:
                self.command(m.group("verb"), m.group("obj"), m.group("rest").strip())
            except ValueError as exc:
                if isinstance(exc, RulesParseError):
                    raise
                self.b.fail(str(exc))

    def _fam_table(self, rest: str) -> tuple[str, str, str]:
        words = rest.split(None, 2)
        if len(words) < 2:
            self.b.fail("expected FAMILY TABLE")
        if words[0] not in FAMILIES:
            # nft defaults to the ip family when it is left out
            words = ["ip", *rest.split(None, 1)]
        return words[0], words[1], words[2] if len(words) > 2 else ""

    def command(self, verb: str, obj: str, rest: str) -> None:
        b = self.b
        if obj == "ruleset":
            if verb != "flush":
                b.fail(f"{verb} ruleset is not supported")
            b.tables.clear()
            return
        if verb == "replace":
            b.fail("replace needs rule handles, which the model does not keep")
        fam, tname, rest = self._fam_table(rest)
        if obj == "table":
            self.table_cmd(verb, fam, tname, rest)
            return
        if verb == "destroy" and (fam, tname) not in b.tables:
            return
        table = b.table(fam, tname, create=False)
        if obj == "chain":
            self.chain_cmd(verb, table, rest)
        elif obj in ("set", "map"):
            self.set_cmd(verb, obj, table, rest)
        elif obj == "rule":
            self.rule_cmd(verb, table, rest)
        else:
            self.element_cmd(verb, table, rest)

    def table_cmd(self, verb: str, fam: str, tname: str, rest: str) -> None:
        b = self.b
        key = (fam, tname)
        if verb in ("add", "create"):
            if verb == "create" and key in b.tables:
                b.fail(f"table {fam} {tname} already exists")
            table = b.table(fam, tname, create=True)
            head, body = _split_braced(rest) if rest else ("", None)
            if head:
                b.fail(f"unexpected {head!r} after the table name")
            for prop in _split_top(body or ""):
                if prop.startswith("comment "):
                    table.comment = _unquote(prop[len("comment ") :].strip())
                else:
                    b.issue("table property not kept (the model has no place for it)", prop)
        elif verb == "flush":
            table = b.table(fam, tname)
            for c in table.chains.values():
                c.rules.clear()
            for s in table.sets.values():
                s.elements.clear()
        elif verb in ("delete", "destroy"):
            if key not in b.tables:
                if verb == "destroy":
                    return
                b.fail(f"no table {fam} {tname}")
            del b.tables[key]
        else:
            b.fail(f"{verb} table is not supported")

    def chain_cmd(self, verb: str, table: _TableB, rest: str) -> None:
        b = self.b
        name, body = _split_braced(rest)
        if verb in ("add", "create"):
            if not _READ_NAME_RE.match(name):
                b.fail(f"invalid chain name {name!r}")
            if verb == "create" and name in table.chains:
                b.fail(f"chain {name} already exists")
            c = table.chains.setdefault(name, _ChainB(name))
            if body:
                _apply_chain_decl(b, table, c, body)
        elif verb == "flush":
            b.chain(table, name).rules.clear()
        elif verb in ("delete", "destroy"):
            if name not in table.chains:
                if verb == "destroy":
                    return
                b.fail(f"no chain {name!r}")
            del table.chains[name]
        else:
            b.fail(f"{verb} chain is not supported")

    def set_cmd(self, verb: str, kind: str, table: _TableB, rest: str) -> None:
        b = self.b
        name, body = _split_braced(rest)
        if verb in ("add", "create"):
            if not _READ_NAME_RE.match(name):
                b.fail(f"invalid {kind} name {name!r}")
            existing = table.sets.get(name)
            if existing is not None:
                if verb == "create":
                    b.fail(f"{kind} {name} already exists")
                return
            s = _SetB(name, "")
            for prop in _split_top(body or ""):
                _apply_set_property(b, s, prop, declaring=True)
            if not s.key_type:
                b.fail(f"{kind} {name} has no type")
            if (kind == "map") != (s.value_type is not None):
                b.fail(f"{kind} {name}: maps need 'type K : V', sets 'type K'")
            table.sets[name] = s
        elif verb == "flush":
            b.set(table, name).elements.clear()
        elif verb in ("delete", "destroy"):
            if name not in table.sets:
                if verb == "destroy":
                    return
                b.fail(f"no {kind} {name!r}")
            del table.sets[name]
        else:
            b.fail(f"{verb} {kind} is not supported")

    def rule_cmd(self, verb: str, table: _TableB, rest: str) -> None:
        b = self.b
        words = rest.split(None, 1)
        if not words:
            b.fail("rule without chain")
        chain = b.chain(table, words[0])
        text = words[1] if len(words) > 1 else ""
        index = None
        m = re.match(r"(index|position|handle)\s+(\d+)\s*(.*)\Z", text, re.S)
        if m:
            if m.group(1) != "index":
                b.fail(f"rule {m.group(1)} is not supported (the model keeps no handles)")
            index, text = int(m.group(2)), m.group(3)
        if verb in ("add", "create"):
            b.add_rule(chain, text, index=index)
        elif verb == "insert":
            b.add_rule(chain, text, index=index, insert=True)
        else:
            b.fail(f"{verb} rule needs a handle, which the model does not keep")

    def element_cmd(self, verb: str, table: _TableB, rest: str) -> None:
        b = self.b
        name, body = _split_braced(rest)
        s = b.set(table, name)
        if body is None:
            b.fail("element command without { ... }")
        if verb in ("add", "create"):
            for element in _parse_elements(b, s, body):
                b.add_element(s, element, create=verb == "create")
        elif verb in ("delete", "destroy"):
            for part in _split_top(body, ","):
                key_text = part.split(" : ")[0]
                key = tuple(k.strip() for k in key_text.split(" . "))
                if key not in s.elements:
                    if verb == "destroy":
                        continue
                    b.fail(f"no element {key_text} in @{s.name}")
                del s.elements[key]
        else:
            b.fail(f"{verb} element is not supported")


def parse_script(
    text: str,
    *,
    base: Ruleset | None = None,
    family: Literal["IPv4", "IPv6"] | None = None,
    strict: bool = False,
    issues: list[ParseIssue] | None = None,
    source: str | None = None,
) -> Ruleset:
    """Run an ``nft -f`` script (command form, or nested ``table {}`` blocks).

    Commands apply in order on top of ``base`` (default: an empty ruleset), as
    nft would: ``add`` creates what is missing (an existing object is kept),
    ``create`` fails on an existing one, ``insert rule`` prepends (``index N``
    places the rule), ``flush`` empties chains, sets, maps, tables or the
    ruleset, ``delete``/``destroy`` remove (``destroy`` ignores what is
    missing). Several commands may share a line, separated by ``;``. Rule
    handles are not modelled, so ``... handle N`` forms raise. Issues and
    errors are reported as in :func:`parse_list`.
    """
    if base is not None and (base.ipsets or base.virtual_servers):
        raise RulesParseError("base ruleset holds IPVS objects, not nft tables")
    b = _Builder(strict=strict, issues=issues, source=source, base=base)
    _ScriptRunner(b).run(text)
    if family is None and base is not None:
        family = base.family
    return b.freeze(family)


# ------------------------------------------------------------------------ as_listed
def _addr_key(text: str) -> tuple[int, int, int]:
    """Sort key of an address, prefix or range: (version, start, end)."""
    if "-" in text:
        lo, hi = text.split("-", 1)
        a, z = ipaddress.ip_address(lo), ipaddress.ip_address(hi)
        return a.version, int(a), int(z)
    net = ipaddress.ip_network(text, strict=False)
    return net.version, int(net.network_address), int(net.broadcast_address)


def _canon_addr(text: str) -> str:
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return f"{ipaddress.ip_address(lo)}-{ipaddress.ip_address(hi)}"
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            if net.prefixlen == net.max_prefixlen:
                return str(net.network_address)
            return str(net)
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _interval_text(version: int, lo: int, hi: int) -> str:
    addr = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    if lo == hi:
        return str(addr(lo))
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo % size == 0:
        bits = 32 if version == 4 else 128
        return f"{addr(lo)}/{bits - size.bit_length() + 1}"
    return f"{addr(lo)}-{addr(hi)}"


def _merge_intervals(items: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(items):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def _listed_cidrs(cidrs: Sequence[str]) -> tuple[str, ...]:
    canon = [_canon_addr(c) for c in cidrs]
    if len(canon) <= 1:
        return tuple(canon)
    try:
        keys = [_addr_key(c) for c in canon]
    except ValueError:
        return tuple(canon)
    if len({k[0] for k in keys}) != 1:
        return tuple(canon)
    version = keys[0][0]
    interval = any(("/" in c or "-" in c) for c in canon)
    if interval:
        # an anonymous set with a prefix or range is an interval set: nft merges
        # overlapping and adjacent intervals and prints the result sorted
        merged = _merge_intervals([(k[1], k[2]) for k in keys])
        return tuple(_interval_text(version, lo, hi) for lo, hi in merged)
    unique = sorted(set(canon), key=lambda c: _addr_key(c))
    return tuple(unique)


def _listed_ports(ranges: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    if len(ranges) <= 1:
        return tuple(ranges)
    if any(lo != hi for lo, hi in ranges):
        return tuple(_merge_intervals(list(ranges)))
    return tuple(sorted(set(ranges)))


def _proto_sort_key(p: str) -> tuple[int, str]:
    if p.isdigit():
        return int(p), p
    return PROTO_NUMBERS.get(p, 1 << 20), p


def _listed_proto(p: str) -> str:
    p = _PROTO_ALIASES.get(p, p)
    return _PROTO_NAMES.get(int(p), p) if p.isdigit() else p


def _l4_context(exprs: Sequence[Expr]) -> str | None:
    """The protocol the last ``meta l4proto`` fixes (None: unknown or several)."""
    for e in reversed(exprs):
        if isinstance(e, ProtoMatch):
            return e.protocols[0] if len(e.protocols) == 1 and not e.negate else None
    return None


def _network_context(exprs: Sequence[Expr], sets: dict[str, NftSet]) -> str | None:
    """``icmp`` / ``icmpv6`` when an address match fixes the IP version."""
    for e in exprs:
        if isinstance(e, IPMatch) and e.cidrs:
            return "icmpv6" if _is_ipv6(e.cidrs[0]) else "icmp"
        if isinstance(e, SetMatch | SetUpdate) and e.set_name in sets:
            types = sets[e.set_name].key_type.split(" . ")
            for field, ktype in zip(e.keys, types, strict=False):
                if field in ("saddr", "daddr") and ktype in ("ipv4_addr", "ipv6_addr"):
                    return "icmp" if ktype == "ipv4_addr" else "icmpv6"
    return None


def _listed_rule(rule: Rule, family: str, sets: dict[str, NftSet]) -> Rule:
    exprs = list(rule.exprs)
    # 1. nft drops a `meta l4proto P` dependency that a later `P dport` uses
    #    (matches in between do not stop it, statements do); parsing the
    #    listing puts it back right before the port match.
    out: list[Expr] = []
    dep: int | None = None  # index in `out` of a droppable single ProtoMatch
    for e in exprs:
        if isinstance(e, ProtoMatch):
            single = e.protocols[0] if len(e.protocols) == 1 and not e.negate else None
            out.append(e)
            dep = len(out) - 1 if single in PORT_PROTOS else None
        elif isinstance(e, PortMatch):
            if dep is not None:
                # nft removes the dependency; reading `P dport` back puts a
                # `meta l4proto P` right before the port match unless an earlier
                # one already says P
                proto = out.pop(dep)
                if isinstance(proto, ProtoMatch) and _l4_context(out) != proto.protocols[0]:
                    out.append(proto)
            dep = None
            out.append(e)
        elif isinstance(e, (Counter, MarkSet, SetUpdate, RawStatement)):
            dep = None
            out.append(e)
        else:
            out.append(e)
    # 2. canonical values, as nft prints them back
    canon: list[Expr] = []
    for e in out:
        if isinstance(e, IPMatch):
            e = attrs.evolve(e, cidrs=_listed_cidrs(e.cidrs))
        elif isinstance(e, PortMatch):
            e = attrs.evolve(e, ranges=_listed_ports(e.ranges))
        elif isinstance(e, ProtoMatch):
            protos = [_listed_proto(p) for p in e.protocols]
            if len(protos) > 1:
                protos = sorted(set(protos), key=_proto_sort_key)
            e = attrs.evolve(e, protocols=tuple(protos))
        elif isinstance(e, CtStateMatch):
            states = sorted(set(e.states), key=lambda s: CT_STATE_BITS.get(s, 1 << 20))
            e = attrs.evolve(e, states=tuple(states))
        elif isinstance(e, MarkSet) and e.op == "set" and e.mask != FULL_MASK:
            keep = ~e.mask & FULL_MASK
            if e.value & keep == 0:
                # nft drops the no-op half of (mark & A) | V
                if e.value == 0:
                    e = MarkSet("and", keep)
                elif keep | e.value == FULL_MASK:
                    e = MarkSet("or", e.value)
        canon.append(e)
    # 3. `P dport N P sport M` (both single values) are merged into one compare
    #    and printed in header order: sport first.
    l4: str | None = None
    for i, e in enumerate(canon):
        if isinstance(e, ProtoMatch):
            l4 = e.protocols[0] if len(e.protocols) == 1 and not e.negate else None
        nxt = canon[i + 1] if i + 1 < len(canon) else None
        if (
            l4 in PORT_PROTOS
            and isinstance(e, PortMatch)
            and isinstance(nxt, PortMatch)
            and e.field == "dport"
            and nxt.field == "sport"
            and not e.negate
            and not nxt.negate
            and len(e.ranges) == 1
            and len(nxt.ranges) == 1
            and e.ranges[0][0] == e.ranges[0][1]
            and nxt.ranges[0][0] == nxt.ranges[0][1]
        ):
            canon[i], canon[i + 1] = nxt, e
    verdict = rule.verdict
    if isinstance(verdict, Reject) and verdict.with_ is not None:
        default = {"ip": "icmp", "ip6": "icmpv6", "inet": "icmpx"}.get(family)
        if verdict.with_ == f"{default} port-unreachable":
            verdict = Reject()
    elif isinstance(verdict, Reject) and family == "inet":
        # in an inet table, a plain reject after an IPv4 (IPv6) address match
        # becomes an icmp (icmpv6) reject, which nft then spells out
        net = _network_context(canon, sets)
        if net is not None:
            verdict = Reject(f"{net} port-unreachable")
    elif isinstance(verdict, NumgenVmap):
        verdict = attrs.evolve(verdict, mapping=tuple(sorted(verdict.mapping, key=lambda m: m[0])))
    return attrs.evolve(rule, exprs=tuple(canon), verdict=verdict)


def _component_bytes(ktype: str, text: str) -> bytes | None:
    """A key component as nft exports it for sorting (None: unknown type)."""
    try:
        if ktype == "ipv4_addr":
            return int(ipaddress.IPv4Address(text)).to_bytes(4, "big")
        if ktype == "ipv6_addr":
            return int(ipaddress.IPv6Address(text)).to_bytes(16, "big")
        if ktype == "inet_proto":
            num = int(text) if text.isdigit() else PROTO_NUMBERS[_PROTO_ALIASES.get(text, text)]
            return num.to_bytes(1, "big")
        if ktype == "inet_service":
            return int(text).to_bytes(2, "big")
        if ktype == "mark":
            return int(text, 0).to_bytes(4, "little")
    except (ValueError, KeyError, OverflowError):
        return None
    return None


def _single_sort_value(ktype: str, text: str) -> int | None:
    try:
        if ktype in ("ipv4_addr", "ipv6_addr"):
            return _addr_key(text)[1]
        if ktype == "inet_proto":
            return int(text) if text.isdigit() else PROTO_NUMBERS[_PROTO_ALIASES.get(text, text)]
        if ktype == "inet_service":
            return int(text.split("-")[0])
        if ktype in INTEGER_TYPES:
            return int(text.split("-")[0], 0)
    except (ValueError, KeyError):
        return None
    return None


def _element_sort_key(types: list[str], key: tuple[str, ...]) -> bytes | int | None:
    if len(types) == 1 and len(key) == 1:
        return _single_sort_value(types[0], key[0])
    if len(types) != len(key):
        return None
    data = b""
    for t, k in zip(types, key, strict=True):
        part = _component_bytes(t, k)
        if part is None:
            return None
        data += part
    # nft reads the concatenated data as one host-endian (little-endian) number
    return bytes(reversed(data))


def _canon_component(ktype: str, text: str) -> str:
    if ktype in ("ipv4_addr", "ipv6_addr"):
        return _canon_addr(text)
    if ktype == "inet_proto":
        return _listed_proto(text)
    if ktype == "mark":
        try:
            return _hex8(int(text, 0))
        except ValueError:
            return text
    if ktype == "inet_service" and text.isdigit():
        return str(int(text))
    return text


def _listed_set(s: NftSet, updated: bool) -> NftSet:
    flags = set(s.flags)
    if s.timeout is not None:
        flags.add("timeout")
    if updated:
        flags.add("dynamic")
    known = [f for f in SET_FLAG_ORDER if f in flags]
    extra = [f for f in s.flags if f not in SET_FLAG_ORDER]
    printed = known + extra
    # nft prints no flags line when timeout is the only flag and a default
    # timeout is set
    if printed == ["timeout"] and s.timeout is not None:
        printed = []
    types = s.key_type.split(" . ")
    elements = []
    for key, value in s.elements:
        comment, timeout, expires = element_options(key)
        if len(types) == len(key):
            items: Iterable[str] = (_canon_component(t, k) for t, k in zip(types, key, strict=True))
        else:
            items = key
        elements.append((_make_key(items, comment, timeout, expires), value))
    sort_keys = [_element_sort_key(types, k) for k, _ in elements]
    if elements and all(k is not None for k in sort_keys):
        order = sorted(range(len(elements)), key=lambda i: sort_keys[i])  # type: ignore[arg-type,return-value]
        elements = [elements[i] for i in order]
    return attrs.evolve(s, flags=tuple(printed), elements=tuple(elements))


def as_listed(ruleset: Ruleset) -> Ruleset:
    """The ruleset as nft gives it back: what :func:`parse_list` reads from ``nft
    list ruleset`` after ``nft -f`` loaded :func:`render_script` of ``ruleset``.

    Modelled nft 1.0.6 behaviour (checked against the real tool):

    * base chains get ``policy accept`` when none was given;
    * set flags gain ``timeout`` (a default timeout is set) and ``dynamic`` (a
      rule updates the set), in nft's order (constant, dynamic, interval,
      timeout); a lone ``timeout`` flag next to a default timeout is not printed;
    * set elements are sorted as nft sorts them (numerically for single
      addresses, protocols, ports and marks; concatenations by their data read
      as one little-endian number), with canonical texts (compressed IPv6,
      protocol names, ``0x%08x`` marks);
    * a ``meta l4proto P`` a later ``P dport`` depends on moves right before it
      (nft prints the pair as ``P dport``), adjacent ``P dport N P sport M`` swap;
    * ``meta mark set meta mark & A | V`` loses a no-op half (``| 0``, ``& 0xffffffff``);
    * anonymous sets: addresses canonical (``/32`` dropped, host bits cleared),
      duplicates dropped, sorted; sets holding a prefix or range merged as
      intervals; protocols and ct states sorted by number and bit; numgen maps
      by key; ``reject with icmp port-unreachable`` (the family default) is
      ``reject``, while a plain ``reject`` in an inet table after an IPv4 (IPv6)
      address match is ``reject with icmp (icmpv6) port-unreachable``.

    Not modelled (avoid them where a byte-exact read-back matters): a merge that
    leaves one element in braces (``{ 172.30.0.0/15 }``: the model has no
    brace flag), ``th sport``/``th dport`` pairs nft merges into raw payload
    matches, port matches after a non-port protocol (``icmp checksum``),
    ``reject with tcp reset`` dependencies, and unknown key types (their
    elements keep the model's order).
    """
    tables = []
    for t in ruleset.tables:
        if t.dialect != "nft":
            tables.append(t)
            continue
        updated = _update_targets(t)
        set_types = {s.name: s for s in t.sets}
        chains = []
        for c in t.chains:
            policy = c.policy
            if c.hook is not None and policy is None:
                policy = "accept"
            rules = tuple(_listed_rule(r, t.family, set_types) for r in c.rules)
            chains.append(attrs.evolve(c, rules=rules, policy=policy))
        sets = tuple(_listed_set(s, s.name in updated) for s in t.sets)
        tables.append(attrs.evolve(t, chains=tuple(chains), sets=sets))
    return attrs.evolve(ruleset, tables=tuple(tables))
