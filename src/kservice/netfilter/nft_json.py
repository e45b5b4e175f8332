"""The JSON form of ``nft -j list ruleset`` (libnftables-json(5)), both ways.

:func:`render_json` writes a :class:`~kservice.netfilter.ruleset.Ruleset` as
``nft -j list ruleset`` prints it: one line, ``{"nftables": [{"metainfo":
...}, {"table": ...}, {"set": ...}/{"map": ...}, ..., {"chain": ...}, ...,
{"rule": ...}, ...]}`` table by table (sets and maps, then chains, then every
chain's rules), with Python's default separators (``", "``, ``": "``) and raw
UTF-8, exactly as nft's jansson output. :func:`parse_json` reads it back.

The rule expressions follow the listed form (see
:func:`~kservice.netfilter.nft_text.render_list`): ``tcp dport 80`` is one
``{"payload": {"protocol": "tcp", "field": "dport"}}`` match, whose
``meta l4proto tcp`` dependency is implied. Expressions the model does not know
are kept as :class:`RawMatch` / :class:`RawStatement` holding the JSON text of
the statement (written back verbatim by :func:`render_json`; such raw JSON
cannot be written as nft text, nor raw text as JSON).

Differences to nft 1.0.6's own output, by design:

* no ``"handle"`` members (the model keeps no handles); the parser ignores them;
* ``"comment"`` of tables and chains and the ``"dynamic"`` set flag are written
  (newer nft writes them; 1.0.6 leaves them out, so they are missing when its
  output is read back);
* a ``"timeout"`` set flag is written only when the model has it (nft adds it
  whenever a default timeout is set);
* element ``"expires"`` is in whole seconds (the listed form has ms).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from kservice.netfilter.nft_text import (
    _CT_STATES,
    _PROTO_NAMES,
    _READ_NAME_RE,
    DYNAMIC_SET_SIZE,
    FAMILIES,
    FULL_MASK,
    INTEGER_TYPES,
    PORT_PROTOS,
    ElementValue,
    Expr,
    ParseIssue,
    RulesParseError,
    RulesRenderError,
    _Builder,
    _ChainB,
    _check_comment,
    _check_flag,
    _check_iface,
    _check_name,
    _check_type,
    _check_unique,
    _Ctx,
    _ctx_for,
    _family_and_name,
    _field,
    _is_ip_text,
    _is_ipv6,
    _l4_plan,
    _make_key,
    _nft_tables,
    _port_text,
    _SetB,
    _TableB,
    _u32,
    _update_targets,
    element_options,
)
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
    NftSet,
    NumgenVmap,
    PortMatch,
    ProtoMatch,
    RawMatch,
    RawStatement,
    Reject,
    Return,
    Rule,
    Ruleset,
    SetMatch,
    SetUpdate,
    Table,
    Verdict,
    VmapLookup,
)

__all__ = ["DEFAULT_METAINFO", "parse_json", "render_json"]

#: What nft 1.0.6 (the version these formats were checked against) reports.
DEFAULT_METAINFO: dict[str, Any] = {
    "version": "1.0.6",
    "release_name": "Lester Gooch #5",
    "json_schema_version": 1,
}

_REJECT_DEFAULT = {"ip": "icmp", "ip6": "icmpv6", "inet": "icmpx"}
JSON = Any


# --------------------------------------------------------------------------- render
def _meta(key: str) -> JSON:
    return {"meta": {"key": key}}


def _payload(protocol: str, field: str) -> JSON:
    return {"payload": {"protocol": protocol, "field": field}}


def _match(op: str, left: JSON, right: JSON) -> JSON:
    return {"match": {"op": op, "left": left, "right": right}}


def _addr_json(text: str) -> JSON:
    if "-" in text:
        lo, hi = text.split("-", 1)
        return {"range": [lo, hi]}
    if "/" in text:
        addr, length = text.split("/", 1)
        if not length.isdigit():
            raise RulesRenderError(f"invalid prefix {text!r}")
        return {"prefix": {"addr": addr, "len": int(length)}}
    return text


def _check_ip(text: str) -> str:
    if not isinstance(text, str) or not _is_ip_text(text):
        raise RulesRenderError(f"invalid address {text!r}")
    return text


def _key_json(field: str, ctx: _Ctx, v6: bool) -> JSON:
    if field in ("saddr", "daddr"):
        return _payload(ctx.ip_word(v6), field)
    if field == "l4proto":
        return _meta("l4proto")
    if field in ("sport", "dport"):
        return _payload("th", field)
    if field == "mark":
        return _meta("mark")
    if field in ("iif", "oif"):
        return _meta(f"{field}name")
    raise RulesRenderError(f"unknown key field {field!r}")


def _keys_json(ctx: _Ctx, set_name: str, keys: Sequence[str]) -> JSON:
    if not keys:
        raise RulesRenderError(f"lookup in @{set_name} without keys")
    types: list[str] = []
    if set_name in ctx.sets:
        types = ctx.sets[set_name].key_type.split(" . ")
    parts = [
        _key_json(k, ctx, (types[i] if i < len(types) else "") == "ipv6_addr")
        for i, k in enumerate(keys)
    ]
    return parts[0] if len(parts) == 1 else {"concat": parts}


def _values(items: list[JSON]) -> JSON:
    return items[0] if len(items) == 1 else {"set": items}


def _port_json(lo: int, hi: int) -> JSON:
    _port_text(lo, hi)
    return lo if lo == hi else {"range": [lo, hi]}


def _eq(negate: bool) -> str:
    return "!=" if negate else "=="


def _raw_json(text: str) -> JSON:
    try:
        value = json.loads(text)
    except ValueError:
        raise RulesRenderError(f"raw expression is not JSON: {text!r}") from None
    if not isinstance(value, dict) or len(value) != 1:
        raise RulesRenderError(f"raw JSON expression must be one statement object: {text!r}")
    return value


def _expr_json(e: Expr, ctx: _Ctx, port_word: str | None) -> JSON:
    if isinstance(e, IPMatch):
        _field(e.field, ("saddr", "daddr"))
        if not e.cidrs:
            raise RulesRenderError("address match without addresses")
        v6 = any(_is_ipv6(c) for c in e.cidrs)
        right = _values([_addr_json(_check_ip(c)) for c in e.cidrs])
        return _match(_eq(e.negate), _payload(ctx.ip_word(v6), e.field), right)
    if isinstance(e, ProtoMatch):
        if not e.protocols:
            raise RulesRenderError("protocol match without protocols")
        return _match(_eq(e.negate), _meta("l4proto"), _values(list(e.protocols)))
    if isinstance(e, PortMatch):
        _field(e.field, ("sport", "dport"))
        if not e.ranges:
            raise RulesRenderError("port match without ports")
        right = _values([_port_json(lo, hi) for lo, hi in e.ranges])
        return _match(_eq(e.negate), _payload(port_word or "th", e.field), right)
    if isinstance(e, IfaceMatch):
        _field(e.field, ("iif", "oif"))
        return _match(_eq(e.negate), _meta(f"{e.field}name"), _check_iface(e.name))
    if isinstance(e, MarkMatch):
        _u32(e.value, "mark")
        _u32(e.mask, "mark mask")
        left = _meta("mark") if e.mask == FULL_MASK else {"&": [_meta("mark"), e.mask]}
        return _match(_eq(e.negate), left, e.value)
    if isinstance(e, AddrTypeMatch):
        _field(e.field, ("saddr", "daddr"))
        flags = [e.field, "iif"] if e.limit_iface_in else [e.field]
        return _match(
            _eq(e.negate), {"fib": {"result": "type", "flags": flags}}, e.addr_type.lower()
        )
    if isinstance(e, CtStateMatch):
        if not e.states:
            raise RulesRenderError("ct state match without states")
        states = [s.lower() for s in e.states]
        left = {"ct": {"key": "state"}}
        if e.negate:
            # nft writes a | b | c as binary ORs: {"|": [{"|": [a, b]}, c]}
            ored: JSON = states[0]
            for state in states[1:]:
                ored = {"|": [ored, state]}
            return _match("!=", left, ored)
        return _match("in", left, states[0] if len(states) == 1 else states)
    if isinstance(e, SetMatch):
        right = f"@{_check_name(e.set_name, 'set')}"
        return _match(_eq(e.negate), _keys_json(ctx, e.set_name, e.keys), right)
    if isinstance(e, MarkSet):
        return {"mangle": {"key": _meta("mark"), "value": _markset_value(e)}}
    if isinstance(e, SetUpdate):
        return {
            "set": {
                "op": "update",
                "elem": _keys_json(ctx, e.set_name, e.keys),
                "set": f"@{_check_name(e.set_name, 'set')}",
            }
        }
    if isinstance(e, Counter):
        return {"counter": {"packets": 0, "bytes": 0}}
    if isinstance(e, RawMatch | RawStatement):
        return _raw_json(e.text)
    raise RulesRenderError(f"cannot write {e!r} as nft JSON")


def _markset_value(e: MarkSet) -> JSON:
    _u32(e.value, "mark")
    _u32(e.mask, "mark mask")
    mark = _meta("mark")
    if e.op == "set":
        if e.mask == FULL_MASK:
            return e.value
        keep = ~e.mask & FULL_MASK
        if e.value & keep == 0:
            return {"|": [{"&": [mark, keep | e.value]}, e.value]}
        return {"^": [{"&": [mark, keep]}, e.value]}
    ops = {"or": "|", "xor": "^", "and": "&"}
    if e.op not in ops:
        raise RulesRenderError(f"invalid mark operation {e.op!r}")
    if e.mask != FULL_MASK:
        raise RulesRenderError(f"mark {e.op} with a mask cannot be written in nft: {e!r}")
    return {ops[e.op]: [mark, e.value]}


def _verdict_json(v: Verdict | str, ctx: _Ctx) -> JSON:
    if isinstance(v, str):
        if v not in ("accept", "drop", "return", "continue"):
            raise RulesRenderError(f"invalid verdict {v!r}")
        return {v: None}
    if isinstance(v, Accept):
        return {"accept": None}
    if isinstance(v, Drop):
        return {"drop": None}
    if isinstance(v, Return):
        return {"return": None}
    if isinstance(v, Jump):
        return {"jump": {"target": _check_name(v.chain, "chain")}}
    if isinstance(v, Goto):
        return {"goto": {"target": _check_name(v.chain, "chain")}}
    if isinstance(v, Reject):
        if v.with_ is None:
            return {
                "reject": {
                    "type": _REJECT_DEFAULT.get(ctx.family, "icmpx"),
                    "expr": "port-unreachable",
                }
            }
        if v.with_ == "tcp reset":
            return {"reject": {"type": "tcp reset"}}
        kind, _, code = v.with_.partition(" ")
        if not code or " " in code:
            raise RulesRenderError(f"invalid reject type {v.with_!r}")
        return {"reject": {"type": kind, "expr": code}}
    if isinstance(v, DNAT | SNAT):
        body: dict[str, Any] = {}
        if ctx.family == "inet":
            body["family"] = "ip6" if _is_ipv6(v.address) else "ip"
        body["addr"] = _check_ip(v.address)
        if v.port is not None:
            _port_text(v.port, v.port)
            body["port"] = v.port
        return {"dnat" if isinstance(v, DNAT) else "snat": body}
    if isinstance(v, Masquerade):
        return {"masquerade": {"flags": "fully-random"} if v.fully_random else None}
    if isinstance(v, VmapLookup):
        return {
            "vmap": {
                "key": _keys_json(ctx, v.map_name, v.keys),
                "data": f"@{_check_name(v.map_name, 'map')}",
            }
        }
    if isinstance(v, NumgenVmap):
        if not isinstance(v.modulus, int) or v.modulus < 1 or not v.mapping:
            raise RulesRenderError(f"invalid numgen vmap {v!r}")
        items = [[k, _verdict_json(t, ctx)] for k, t in v.mapping]
        return {
            "vmap": {
                "key": {"numgen": {"mode": "random", "mod": v.modulus, "offset": v.offset}},
                "data": {"set": items},
            }
        }
    raise RulesRenderError(f"cannot write verdict {v!r} as nft JSON")


def _rule_json(table: Table, chain: Chain, rule: Rule, ctx: _Ctx) -> JSON:
    hidden, words = _l4_plan(rule.exprs)
    exprs = [_expr_json(e, ctx, words.get(i)) for i, e in enumerate(rule.exprs) if i not in hidden]
    if rule.verdict is not None:
        exprs.append(_verdict_json(rule.verdict, ctx))
    if not exprs:
        raise RulesRenderError("empty rule (no expression and no verdict)")
    body: dict[str, Any] = {"family": table.family, "table": table.name, "chain": chain.name}
    if rule.comment is not None:
        body["comment"] = _check_comment(rule.comment, "rule")
    body["expr"] = exprs
    return {"rule": body}


def _component_json(ktype: str, text: str) -> JSON:
    if ktype in INTEGER_TYPES:
        try:
            if "-" in text:
                lo, hi = text.split("-", 1)
                return {"range": [int(lo, 0), int(hi, 0)]}
            return int(text, 0)
        except ValueError:
            raise RulesRenderError(f"invalid {ktype} element {text!r}") from None
    if ktype in ("ipv4_addr", "ipv6_addr"):
        return _addr_json(_check_ip(text))
    if not isinstance(text, str) or not text or any(c in text for c in "\n\r\x00"):
        raise RulesRenderError(f"invalid element {text!r}")
    return text


def _data_json(types: list[str], parts: Sequence[str]) -> JSON:
    if len(types) != len(parts):
        raise RulesRenderError(f"element {' . '.join(parts)!r} does not fit type {types}")
    items = [_component_json(t, p) for t, p in zip(types, parts, strict=True)]
    return items[0] if len(items) == 1 else {"concat": items}


def _element_json(s: NftSet, key: tuple[str, ...], value: ElementValue, ctx: _Ctx) -> JSON:
    if not key:
        raise RulesRenderError(f"empty element key in @{s.name}")
    kj = _data_json(s.key_type.split(" . "), key)
    comment, timeout, expires_ms = element_options(key)
    if comment is not None or timeout is not None or expires_ms is not None:
        opts: dict[str, Any] = {"val": kj}
        if timeout is not None:
            opts["timeout"] = timeout
        if expires_ms is not None:
            opts["expires"] = expires_ms // 1000
        if comment is not None:
            opts["comment"] = _check_comment(comment, "element")
        kj = {"elem": opts}
    if s.value_type is None:
        if value is not None:
            raise RulesRenderError(f"set @{s.name} element {key!r} has a value")
        return kj
    if value is None:
        raise RulesRenderError(f"map @{s.name} element {key!r} has no value")
    if s.value_type == "verdict":
        return [kj, _verdict_json(value, ctx)]
    if isinstance(value, Jump | Goto):
        raise RulesRenderError(f"map @{s.name} holds {s.value_type}, not verdicts")
    return [kj, _data_json(s.value_type.split(" . "), value.split(" . "))]


def _set_json(table: Table, s: NftSet, ctx: _Ctx, updated: bool) -> JSON:
    types = _check_type(s.key_type, "set key type").split(" . ")
    if s.value_type is not None:
        _check_type(s.value_type, "map value type")
    body: dict[str, Any] = {
        "family": table.family,
        "name": _check_name(s.name, "set"),
        "table": table.name,
        "type": types[0] if len(types) == 1 else types,
    }
    if s.comment is not None:
        body["comment"] = _check_comment(s.comment, "set")
    if s.value_type is not None:
        body["map"] = s.value_type
    if updated:
        body["size"] = DYNAMIC_SET_SIZE
    if s.flags:
        body["flags"] = [_check_flag(f) for f in s.flags]
    if s.timeout is not None:
        body["timeout"] = int(s.timeout)
    if s.elements:
        body["elem"] = [_element_json(s, k, v, ctx) for k, v in s.elements]
    return {"map" if s.is_map else "set": body}


def _chain_json(table: Table, chain: Chain) -> JSON:
    body: dict[str, Any] = {
        "family": table.family,
        "table": table.name,
        "name": _check_name(chain.name, "chain"),
    }
    if chain.comment is not None:
        body["comment"] = _check_comment(chain.comment, "chain")
    if chain.hook is not None or chain.type is not None or chain.priority is not None:
        if chain.hook is None or chain.type is None or chain.priority is None:
            raise RulesRenderError(f"base chain {chain.name} needs type, hook and priority")
        body.update(type=chain.type, hook=chain.hook, prio=int(chain.priority))
        if chain.policy is not None:
            body["policy"] = chain.policy
    elif chain.policy is not None:
        raise RulesRenderError(f"regular chain {chain.name} cannot have a policy")
    return {"chain": body}


def render_json(ruleset: Ruleset, *, metainfo: dict[str, Any] | None = None) -> str:
    """The ruleset as ``nft -j list ruleset`` prints it (see the module notes).

    ``metainfo`` replaces the ``{"metainfo": ...}`` object's content (default:
    :data:`DEFAULT_METAINFO`, nft 1.0.6). Names and comments are checked as in
    :func:`~kservice.netfilter.nft_text.render_script`, so a ruleset that
    renders as JSON also renders as text.
    """
    out: list[JSON] = [{"metainfo": dict(metainfo if metainfo is not None else DEFAULT_METAINFO)}]
    for table in _nft_tables(ruleset):
        _check_unique(table)
        _family_and_name(table)
        ctx = _ctx_for(table)
        updated = _update_targets(table)
        tbody: dict[str, Any] = {"family": table.family, "name": table.name}
        if table.comment is not None:
            tbody["comment"] = _check_comment(table.comment, "table")
        out.append({"table": tbody})
        out.extend(_set_json(table, s, ctx, s.name in updated) for s in table.sets)
        out.extend(_chain_json(table, c) for c in table.chains)
        for c in table.chains:
            out.extend(_rule_json(table, c, r, ctx) for r in c.rules)
    return json.dumps({"nftables": out}, ensure_ascii=False)


# ---------------------------------------------------------------------------- parse
def _raw_text(stmt: JSON) -> str:
    return json.dumps(stmt, ensure_ascii=False)


def _payload_of(expr: JSON) -> tuple[str, str] | None:
    if isinstance(expr, dict) and set(expr) == {"payload"}:
        p = expr["payload"]
        if isinstance(p, dict) and set(p) == {"protocol", "field"}:
            return str(p["protocol"]), str(p["field"])
    return None


def _meta_of(expr: JSON) -> str | None:
    if isinstance(expr, dict) and set(expr) == {"meta"}:
        m = expr["meta"]
        if isinstance(m, dict) and set(m) == {"key"}:
            return str(m["key"])
    return None


def _key_field(expr: JSON) -> str | None:
    pay = _payload_of(expr)
    if pay is not None:
        proto, field = pay
        if proto in ("ip", "ip6") and field in ("saddr", "daddr"):
            return field
        if proto == "th" and field in ("sport", "dport"):
            return field
        return None
    meta = _meta_of(expr)
    if meta == "l4proto":
        return "l4proto"
    if meta == "mark":
        return "mark"
    if meta in ("iifname", "oifname"):
        return meta[:3]
    return None


def _keys_of(expr: JSON) -> list[str] | None:
    if isinstance(expr, dict) and set(expr) == {"concat"} and isinstance(expr["concat"], list):
        fields = [_key_field(x) for x in expr["concat"]]
        if not fields or any(f is None for f in fields):
            return None
        return [f for f in fields if f is not None]
    field = _key_field(expr)
    return None if field is None else [field]


def _set_ref(right: JSON) -> str | None:
    if isinstance(right, str) and right.startswith("@") and _READ_NAME_RE.match(right[1:]):
        return right[1:]
    return None


def _listify(right: JSON) -> list[JSON]:
    if isinstance(right, dict) and set(right) == {"set"} and isinstance(right["set"], list):
        return list(right["set"])
    return [right]


def _addr_text(value: JSON) -> str | None:
    if isinstance(value, str) and _is_ip_text(value) and "/" not in value and "-" not in value:
        return value
    if isinstance(value, dict) and set(value) == {"prefix"}:
        p = value["prefix"]
        if isinstance(p, dict) and isinstance(p.get("addr"), str) and isinstance(p.get("len"), int):
            text = f"{p['addr']}/{p['len']}"
            return text if _is_ip_text(text) else None
    if isinstance(value, dict) and set(value) == {"range"}:
        r = value["range"]
        if isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r):
            text = f"{r[0]}-{r[1]}"
            return text if _is_ip_text(text) else None
    return None


def _port_of(value: JSON) -> tuple[int, int] | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535:
        return value, value
    if isinstance(value, dict) and set(value) == {"range"}:
        r = value["range"]
        if (
            isinstance(r, list)
            and len(r) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in r)
            and 0 <= r[0] <= r[1] <= 65535
        ):
            return r[0], r[1]
    return None


def _proto_of(value: JSON) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return _PROTO_NAMES.get(value, str(value))
    return None


def _u32_of(value: JSON) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= FULL_MASK:
        return value
    return None


class _JsonRules:
    """Turns one JSON rule's statement list into the model (see ``_RuleParser``)."""

    def __init__(self, b: _Builder, where: str, family: str) -> None:
        self.b = b
        self.where = where
        self.family = family
        self.l4: str | None = None

    def rule(self, body: JSON) -> Rule:
        stmts = body.get("expr")
        if not isinstance(stmts, list) or not stmts:
            self.b.fail(f"{self.where}: rule without expressions")
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            self.b.fail(f"{self.where}: rule comment is not a string")
        exprs: list[Expr] = []
        verdict: Verdict | None = None
        for i, stmt in enumerate(stmts):
            if not isinstance(stmt, dict) or len(stmt) != 1:
                self.b.fail(f"{self.where}: statement {i} is not an object with one member")
            if i == len(stmts) - 1:
                verdict = self.verdict(stmt)
                if verdict is not None:
                    break
            got = self.expr(stmt)
            if got is None:
                text = _raw_text(stmt)
                raw: RawMatch | RawStatement = (
                    RawMatch(text) if _is_match_stmt(stmt) else RawStatement(text)
                )
                self.b.issue(
                    f"{self.where}: statement not modelled, kept as {type(raw).__name__}", text
                )
                exprs.append(raw)
            else:
                exprs.extend(got)
        return Rule(tuple(exprs), verdict, comment)

    # -- verdicts
    def verdict(self, stmt: dict[str, JSON]) -> Verdict | None:
        ((kind, value),) = stmt.items()
        if kind in ("accept", "drop", "return") and value is None:
            simple: dict[str, Verdict] = {"accept": Accept(), "drop": Drop(), "return": Return()}
            return simple[kind]
        if kind in ("jump", "goto") and isinstance(value, dict) and set(value) == {"target"}:
            target = value["target"]
            if isinstance(target, str) and _READ_NAME_RE.match(target):
                return Jump(target) if kind == "jump" else Goto(target)
            return None
        if kind == "reject":
            return self._reject(value)
        if kind in ("dnat", "snat") and isinstance(value, dict):
            if not set(value) <= {"family", "addr", "port"} or "addr" not in value:
                return None
            addr = value["addr"]
            port = value.get("port")
            if not isinstance(addr, str) or _addr_text(addr) is None:
                return None
            if port is not None and _port_of(port) is None:
                return None
            if port is not None and not isinstance(port, int):
                return None
            return DNAT(addr, port) if kind == "dnat" else SNAT(addr, port)
        if kind == "masquerade":
            if value is None:
                return Masquerade()
            if value == {"flags": "fully-random"} or value == {"flags": ["fully-random"]}:
                return Masquerade(True)
            return None
        if kind == "vmap" and isinstance(value, dict) and set(value) == {"key", "data"}:
            return self._vmap(value)
        return None

    def _reject(self, value: JSON) -> Verdict | None:
        if value is None:
            return Reject()
        if not isinstance(value, dict) or not set(value) <= {"type", "expr"}:
            return None
        kind, code = value.get("type"), value.get("expr")
        if kind == "tcp reset" and code is None:
            return Reject("tcp reset")
        if not isinstance(kind, str) or not isinstance(code, str):
            return None
        if code == "port-unreachable" and kind == _REJECT_DEFAULT.get(self.family, ""):
            return Reject()
        return Reject(f"{kind} {code}")

    def _vmap(self, value: dict[str, JSON]) -> Verdict | None:
        key, data = value["key"], value["data"]
        if isinstance(key, dict) and set(key) == {"numgen"}:
            ng = key["numgen"]
            if not isinstance(ng, dict) or ng.get("mode") != "random":
                return None
            mod, offset = ng.get("mod"), ng.get("offset", 0)
            if not isinstance(mod, int) or not isinstance(offset, int):
                return None
            if not isinstance(data, dict) or set(data) != {"set"}:
                return None
            mapping: list[tuple[int, Jump | Goto]] = []
            for item in data["set"]:
                if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], int)):
                    return None
                target = self.verdict(item[1]) if isinstance(item[1], dict) else None
                if not isinstance(target, Jump | Goto):
                    return None
                mapping.append((item[0], target))
            if not mapping:
                return None
            return NumgenVmap(mod, tuple(mapping), offset)
        keys = _keys_of(key)
        name = _set_ref(data)
        if keys is None or name is None:
            return None
        return VmapLookup(name, tuple(keys))

    # -- matches and statements
    def expr(self, stmt: dict[str, JSON]) -> list[Expr] | None:
        ((kind, value),) = stmt.items()
        if kind == "match" and isinstance(value, dict) and set(value) == {"op", "left", "right"}:
            return self._match(value["op"], value["left"], value["right"])
        if kind == "mangle" and isinstance(value, dict) and set(value) == {"key", "value"}:
            if _meta_of(value["key"]) != "mark":
                return None
            ms = _markset_of(value["value"])
            return None if ms is None else [ms]
        if kind == "set" and isinstance(value, dict) and set(value) == {"op", "elem", "set"}:
            if value["op"] != "update":
                return None
            keys = _keys_of(value["elem"])
            name = _set_ref(value["set"])
            if keys is None or name is None:
                return None
            return [SetUpdate(name, tuple(keys))]
        if kind == "counter":
            if value is None or value == {"packets": 0, "bytes": 0}:
                return [Counter()]
            return None
        return None

    def _match(self, op: JSON, left: JSON, right: JSON) -> list[Expr] | None:
        name = _set_ref(right)
        if name is not None:
            keys = _keys_of(left)
            if keys is None or op not in ("==", "!="):
                return None
            return [SetMatch(name, tuple(keys), op == "!=")]
        if left == {"ct": {"key": "state"}}:
            return self._ctstate(op, right)
        if op not in ("==", "!="):
            return None
        negate = op == "!="
        pay = _payload_of(left)
        meta = _meta_of(left)
        if pay is not None and pay[0] in ("ip", "ip6") and pay[1] in ("saddr", "daddr"):
            addrs = [_addr_text(v) for v in _listify(right)]
            if any(a is None for a in addrs):
                return None
            field: Literal["saddr", "daddr"] = "saddr" if pay[1] == "saddr" else "daddr"
            return [IPMatch(field, tuple(a for a in addrs if a is not None), negate)]
        if (
            pay is not None
            and pay[1] in ("sport", "dport")
            and (pay[0] == "th" or pay[0] in PORT_PROTOS)
        ):
            ports = [_port_of(v) for v in _listify(right)]
            if any(p is None for p in ports):
                return None
            out: list[Expr] = []
            if pay[0] != "th" and self.l4 != pay[0]:
                out.append(ProtoMatch((pay[0],)))
                self.l4 = pay[0]
            pfield: Literal["sport", "dport"] = "sport" if pay[1] == "sport" else "dport"
            out.append(PortMatch(pfield, tuple(p for p in ports if p is not None), negate))
            return out
        if meta == "l4proto":
            protos = [_proto_of(v) for v in _listify(right)]
            if any(p is None for p in protos):
                return None
            clean = tuple(p for p in protos if p is not None)
            self.l4 = clean[0] if len(clean) == 1 and not negate else None
            return [ProtoMatch(clean, negate)]
        if meta in ("iifname", "oifname") and isinstance(right, str):
            ifield: Literal["iif", "oif"] = "iif" if meta == "iifname" else "oif"
            return [IfaceMatch(ifield, right, negate)]
        if meta == "mark" and _u32_of(right) is not None:
            return [MarkMatch(right, FULL_MASK, negate)]
        if isinstance(left, dict) and set(left) == {"&"}:
            parts = left["&"]
            if (
                isinstance(parts, list)
                and len(parts) == 2
                and _meta_of(parts[0]) == "mark"
                and _u32_of(parts[1]) is not None
                and _u32_of(right) is not None
            ):
                return [MarkMatch(right, parts[1], negate)]
            return None
        if isinstance(left, dict) and set(left) == {"fib"}:
            fib = left["fib"]
            if (
                not isinstance(fib, dict)
                or fib.get("result") != "type"
                or set(fib) != {"result", "flags"}
            ):
                return None
            flags = fib["flags"]
            if flags in (["saddr"], ["daddr"], ["saddr", "iif"], ["daddr", "iif"]) and isinstance(
                right, str
            ):
                ffield: Literal["saddr", "daddr"] = "saddr" if flags[0] == "saddr" else "daddr"
                return [AddrTypeMatch(ffield, right.upper(), negate, len(flags) == 2)]
        return None

    def _ctstate(self, op: JSON, right: JSON) -> list[Expr] | None:
        if op == "in":
            states = right if isinstance(right, list) else [right]
            negate = False
        elif op == "==" and isinstance(right, dict) and set(right) == {"set"}:
            states, negate = right["set"], False
        elif op == "!=":
            negate = True
            states = _flatten_or(right)
        else:
            return None
        if not isinstance(states, list) or not states:
            return None
        if not all(isinstance(s, str) and s in _CT_STATES for s in states):
            return None
        return [CtStateMatch(tuple(s.upper() for s in states), negate)]


def _flatten_or(value: JSON) -> list[JSON]:
    if isinstance(value, dict) and set(value) == {"|"}:
        parts = value["|"]
        if isinstance(parts, list):
            return [x for part in parts for x in _flatten_or(part)]
    return [value]


def _is_match_stmt(stmt: dict[str, JSON]) -> bool:
    if "match" in stmt:
        return True
    xt = stmt.get("xt")
    return isinstance(xt, dict) and xt.get("type") == "match"


def _markset_of(value: JSON) -> MarkSet | None:
    v = _u32_of(value)
    if v is not None:
        return MarkSet("set", v)
    if not isinstance(value, dict) or len(value) != 1:
        return None
    ((op, args),) = value.items()
    if not (isinstance(args, list) and len(args) == 2 and _u32_of(args[1]) is not None):
        return None
    b = args[1]
    names = {"|": "or", "^": "xor", "&": "and"}
    if _meta_of(args[0]) == "mark" and op in names:
        return MarkSet(names[op], b)  # type: ignore[arg-type]
    inner = args[0]
    if op in ("|", "^") and isinstance(inner, dict) and set(inner) == {"&"}:
        ia = inner["&"]
        if isinstance(ia, list) and len(ia) == 2 and _meta_of(ia[0]) == "mark":
            a = _u32_of(ia[1])
            if a is None:
                return None
            mask = ~(a & ~b) & FULL_MASK if op == "|" else ~a & FULL_MASK
            return MarkSet("set", b, mask)
    return None


def _component_text(ktype: str, value: JSON) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if ktype == "mark":
            return f"0x{value:08x}"
        if ktype == "inet_proto":
            return _PROTO_NAMES.get(value, str(value))
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and set(value) == {"range"}:
        r = value["range"]
        if isinstance(r, list) and len(r) == 2:
            lo, hi = (_component_text(ktype, x) for x in r)
            if lo is not None and hi is not None:
                return f"{lo}-{hi}"
        return None
    if isinstance(value, dict) and set(value) == {"prefix"}:
        return _addr_text(value)
    return None


def _data_text(types: list[str], value: JSON) -> tuple[str, ...] | None:
    if isinstance(value, dict) and set(value) == {"concat"} and isinstance(value["concat"], list):
        parts = value["concat"]
    else:
        parts = [value]
    if len(parts) != len(types):
        return None
    texts = [_component_text(t, p) for t, p in zip(types, parts, strict=True)]
    if any(t is None for t in texts):
        return None
    return tuple(t for t in texts if t is not None)


class _JsonReader:
    def __init__(self, b: _Builder) -> None:
        self.b = b

    def run(self, doc: JSON) -> None:
        if not isinstance(doc, dict) or not isinstance(doc.get("nftables"), list):
            self.b.fail('expected {"nftables": [...]}')
        for index, item in enumerate(doc["nftables"]):
            where = f"nftables[{index}]"
            self.b.line_text = _raw_text(item)
            if not isinstance(item, dict) or len(item) != 1:
                self.b.fail(f"{where} is not an object with one member")
            ((kind, body),) = item.items()
            if kind in ("add", "create") and isinstance(body, dict) and len(body) == 1:
                ((kind, body),) = body.items()
            if kind == "metainfo":
                continue
            if kind in ("table", "chain", "set", "map", "rule", "element"):
                if not isinstance(body, dict):
                    self.b.fail(f"{where}: {kind} is not an object")
                getattr(self, f"do_{kind}")(body, where)
            elif kind in (
                "list",
                "flush",
                "delete",
                "destroy",
                "insert",
                "replace",
                "reset",
                "rename",
            ):
                self.b.fail(f"{where}: command {kind!r} is not supported")
            else:
                self.b.issue(
                    f"{where}: {kind} not kept (the model has no {kind} objects)", _raw_text(item)
                )

    def _table(self, body: dict[str, JSON], where: str) -> _TableB:
        fam, name = body.get("family"), body.get("table")
        if not isinstance(fam, str) or fam not in FAMILIES or not isinstance(name, str):
            self.b.fail(f"{where}: invalid family or table")
        return self.b.table(fam, name)

    def _name(self, body: dict[str, JSON], where: str) -> str:
        name = body.get("name")
        if not isinstance(name, str) or not _READ_NAME_RE.match(name):
            self.b.fail(f"{where}: invalid name {name!r}")
        return name

    def _comment(self, body: dict[str, JSON], where: str) -> str | None:
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            self.b.fail(f"{where}: comment is not a string")
        return comment

    def do_table(self, body: dict[str, JSON], where: str) -> None:
        fam, name = body.get("family"), body.get("name")
        if not isinstance(fam, str) or not isinstance(name, str):
            self.b.fail(f"{where}: invalid table")
        table = self.b.table(fam, name, create=True)
        comment = self._comment(body, where)
        if comment is not None:
            table.comment = comment
        for extra in set(body) - {"family", "name", "handle", "comment"}:
            self.b.issue(f"{where}: table {extra} not kept", _raw_text({extra: body[extra]}))

    def do_chain(self, body: dict[str, JSON], where: str) -> None:
        table = self._table(body, where)
        name = self._name(body, where)
        c = table.chains.setdefault(name, _ChainB(name))
        comment = self._comment(body, where)
        if comment is not None:
            c.comment = comment
        if "hook" in body or "type" in body or "prio" in body:
            ctype, hook, prio = body.get("type"), body.get("hook"), body.get("prio")
            if not isinstance(ctype, str) or not isinstance(hook, str) or not isinstance(prio, int):
                self.b.fail(f"{where}: base chain needs type, hook and prio")
            c.type, c.hook, c.priority = ctype, hook, prio
            policy = body.get("policy")
            if policy is not None:
                if not isinstance(policy, str):
                    self.b.fail(f"{where}: invalid policy")
                c.policy = policy
        known = {"family", "table", "name", "handle", "comment", "type", "hook", "prio", "policy"}
        for extra in set(body) - known:
            self.b.issue(f"{where}: chain {extra} not kept", _raw_text({extra: body[extra]}))

    def do_set(self, body: dict[str, JSON], where: str, kind: str = "set") -> None:
        table = self._table(body, where)
        name = self._name(body, where)
        ktype = body.get("type")
        if isinstance(ktype, list) and ktype and all(isinstance(t, str) for t in ktype):
            key_type = " . ".join(ktype)
        elif isinstance(ktype, str):
            key_type = ktype
        else:
            self.b.fail(f"{where}: invalid set type")
        value_type = body.get("map")
        if kind == "map" and not isinstance(value_type, str):
            self.b.fail(f"{where}: map without value type")
        if kind == "set" and value_type is not None:
            self.b.fail(f"{where}: set with a map value type")
        s = table.sets.get(name)
        if s is None:
            s = _SetB(name, key_type, value_type if isinstance(value_type, str) else None)
            table.sets[name] = s
        s.comment = self._comment(body, where)
        flags = body.get("flags", [])
        if isinstance(flags, str):
            flags = [flags]
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            self.b.fail(f"{where}: invalid set flags")
        s.flags = list(flags)
        timeout = body.get("timeout")
        if timeout is not None:
            if not isinstance(timeout, int):
                self.b.fail(f"{where}: invalid timeout")
            s.timeout = timeout
        size = body.get("size")
        if size is not None:
            if not isinstance(size, int):
                self.b.fail(f"{where}: invalid size")
            s.size = size
        for prop in ("policy", "gc-interval", "auto-merge"):
            if prop in body:
                self.b.issue(f"{where}: set {prop} not kept", _raw_text({prop: body[prop]}))
        for element in _listify_elems(body.get("elem")):
            self._element(s, element, where)
        known = {"family", "name", "table", "type", "handle", "comment", "map", "flags"}
        known |= {"timeout", "size", "elem", "policy", "gc-interval", "auto-merge"}
        for extra in set(body) - known:
            self.b.issue(f"{where}: set {extra} not kept", _raw_text({extra: body[extra]}))

    def do_map(self, body: dict[str, JSON], where: str) -> None:
        self.do_set(body, where, kind="map")

    def _element(self, s: _SetB, item: JSON, where: str) -> None:
        value_json: JSON = None
        if s.value_type is not None:
            if not (isinstance(item, list) and len(item) == 2):
                self.b.fail(f"{where}: map element is not [key, value]")
            item, value_json = item
        comment = timeout = expires = None
        if isinstance(item, dict) and set(item) == {"elem"} and isinstance(item["elem"], dict):
            opts = item["elem"]
            for extra in set(opts) - {"val", "timeout", "expires", "comment"}:
                self.b.issue(f"{where}: element {extra} not kept", _raw_text({extra: opts[extra]}))
            comment, timeout = opts.get("comment"), opts.get("timeout")
            expires = opts.get("expires")
            item = opts.get("val")
            if comment is not None and not isinstance(comment, str):
                self.b.fail(f"{where}: invalid element comment")
            if (timeout is not None and not isinstance(timeout, int)) or (
                expires is not None and not isinstance(expires, int)
            ):
                self.b.fail(f"{where}: invalid element timeout")
        key = _data_text(s.key_type.split(" . "), item)
        if key is None:
            self.b.fail(f"{where}: element {_raw_text(item)} does not fit type {s.key_type}")
        value: ElementValue = None
        if s.value_type == "verdict":
            if not isinstance(value_json, dict) or len(value_json) != 1:
                self.b.fail(f"{where}: invalid verdict map value")
            ((vk, vv),) = value_json.items()
            if vk in ("accept", "drop", "return", "continue") and vv is None:
                value = vk
            elif (
                vk in ("jump", "goto")
                and isinstance(vv, dict)
                and isinstance(vv.get("target"), str)
            ):
                value = Jump(vv["target"]) if vk == "jump" else Goto(vv["target"])
            else:
                self.b.fail(f"{where}: invalid verdict map value")
        elif s.value_type is not None:
            data = _data_text(s.value_type.split(" . "), value_json)
            if data is None:
                self.b.fail(f"{where}: map value does not fit type {s.value_type}")
            value = " . ".join(data)
        ms = expires * 1000 if isinstance(expires, int) else None
        element = (_make_key(key, comment, timeout, ms), value)
        self.b.add_element(s, element)

    def do_element(self, body: dict[str, JSON], where: str) -> None:
        table = self._table(body, where)
        s = self.b.set(table, self._name(body, where))
        for element in _listify_elems(body.get("elem")):
            self._element(s, element, where)

    def do_rule(self, body: dict[str, JSON], where: str) -> None:
        table = self._table(body, where)
        chain_name = body.get("chain")
        if not isinstance(chain_name, str):
            self.b.fail(f"{where}: rule without chain")
        chain = self.b.chain(table, chain_name)
        chain.rules.append(_JsonRules(self.b, where, table.family).rule(body))


def _listify_elems(elem: JSON) -> list[JSON]:
    if elem is None:
        return []
    return list(elem) if isinstance(elem, list) else [elem]


def parse_json(
    text: str,
    *,
    family: Literal["IPv4", "IPv6"] | None = None,
    strict: bool = False,
    issues: list[ParseIssue] | None = None,
    source: str | None = None,
) -> Ruleset:
    """Read ``nft -j list ruleset`` output (or ``add``/``create`` command objects).

    As :func:`~kservice.netfilter.nft_text.parse_list`: statements the model does
    not know are kept as raw JSON text and reported in ``issues``; anything left
    out is reported; ``strict=True`` raises at the first issue. Errors carry the
    index of the offending object (``nftables[7]``) and its JSON text.
    """
    b = _Builder(strict=strict, issues=issues, source=source)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        prefix = f"{source}: " if source else ""
        raise RulesParseError(f"{prefix}invalid JSON: {exc}") from None
    _JsonReader(b).run(doc)
    return b.freeze(family)
