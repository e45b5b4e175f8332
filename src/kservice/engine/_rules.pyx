# cython: language_level=3
"""The rule loop of ``Engine()``, compiled: the twin of ``_Builder.emit_rules``
in ``kservice.engine.compile``.

That method is the specification (read it first); this is the same loop,
statement for statement, with C-typed locals: the same ops appended to the
same lists in the same order, the same helpers of the builder called for the
shapes it does not inline, the same errors. Tests build every test ruleset
with both and compare the Programs field by field. ``KSERVICE_NO_EXTENSIONS=1``
(or ``Engine(..., implementation="python")``) uses the pure loop.
"""

from libc.stdint cimport int64_t, uint32_t, uint64_t

from kservice.engine.compile import (
    END,
    M_CTSTATE,
    M_DADDR4,
    M_PROTO,
    M_SADDR4,
    M_STAT,
    RULE,
    V_DNAT,
    V_GOTO,
    V_JUMP,
    _CT_CACHE,
    _PROTO_MASK,
    _SIMPLE_VERDICTS,
    _Where,
    statistic_threshold,
)
from kservice.netfilter.ruleset import (
    DNAT,
    CtStateMatch,
    Goto,
    IPMatch,
    Jump,
    ProtoMatch,
    StatisticMatch,
)

cdef object _IPMatch = IPMatch
cdef object _StatisticMatch = StatisticMatch
cdef object _ProtoMatch = ProtoMatch
cdef object _CtStateMatch = CtStateMatch
cdef object _Jump = Jump
cdef object _Goto = Goto
cdef object _DNAT = DNAT
cdef object _RULE = RULE
cdef object _END = END
cdef object _M_SADDR4 = M_SADDR4
cdef object _M_DADDR4 = M_DADDR4
cdef object _M_STAT = M_STAT
cdef object _M_PROTO = M_PROTO
cdef object _M_CTSTATE = M_CTSTATE
cdef object _V_JUMP = V_JUMP
cdef object _V_GOTO = V_GOTO
cdef object _V_DNAT = V_DNAT
cdef object _ZERO = 0
cdef object _ONE = 1


cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size) except NULL


cdef int64_t _quad(const char *p, Py_ssize_t n) noexcept:
    """A dotted quad in ``p[:n]`` as an integer, or -1 unless it is one in the
    form inet_pton accepts (four decimal octets up to 255, no leading zeros),
    which the pure twin's fast path (``_fast_v4``) takes; anything else goes
    to the builder's full parser there and here alike."""
    cdef int64_t value = 0, octet = -1
    cdef int parts = 0, digits = 0
    cdef Py_ssize_t i
    cdef char c
    for i in range(n):
        c = p[i]
        if c >= 48 and c <= 57:
            if digits and octet == 0:
                return -1  # a leading zero
            octet = (0 if octet < 0 else octet) * 10 + (c - 48)
            digits += 1
            if octet > 255:
                return -1
        elif c == 46 and digits:  # '.'
            value = (value << 8) | octet
            parts += 1
            octet = -1
            digits = 0
        else:
            return -1
    if parts != 3 or not digits:
        return -1
    return (value << 8) | octet


cdef const char *_utf8(object text, Py_ssize_t *n):
    """``text``'s UTF-8 bytes, or NULL when it is not a str or cannot be
    encoded (the pure parsers then report it)."""
    if type(text) is not str:
        return NULL
    try:
        return PyUnicode_AsUTF8AndSize(text, n)
    except UnicodeError:
        return NULL


cdef object _net4(object text):
    """``_parse_net(text, 4, ...)`` for ``A.B.C.D`` and ``A.B.C.D/N``
    (ASCII digits, N up to 32), else None."""
    cdef Py_ssize_t n, i, slash = -1
    cdef const char *p = _utf8(text, &n)
    cdef int64_t value, bits = 0
    if p == NULL:
        return None
    cdef uint32_t mask
    for i in range(n):
        if p[i] == 47:  # '/'
            slash = i
            break
    value = _quad(p, n if slash < 0 else slash)
    if value < 0:
        return None
    if slash < 0:
        bits = 32
    else:
        if slash == n - 1:
            return None  # "a.b.c.d/": left to the pure parser
        for i in range(slash + 1, n):
            if p[i] < 48 or p[i] > 57:
                return None
            bits = bits * 10 + (p[i] - 48)
            if bits > 32:
                return None
    mask = <uint32_t>((<uint64_t>0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF)
    return (<uint32_t>value & mask, mask)


cdef inline void _op(list code, object op, object a, object b, object c):
    code.append(op)
    code.append(a)
    code.append(b)
    code.append(c)


def emit_rules(b):
    """Append every rule of ``b.tables`` to ``b.code`` (see the pure twin)."""
    cdef list code = b.code
    cdef list fixups = b._fixups
    cdef list chain_offset = b.chain_offset
    cdef list chain_first = b.chain_first_rule
    cdef dict net4_cache = b._net4_cache
    cdef dict address_ids = b._address_ids
    cdef list address_values = b.address_values
    cdef dict stat_cache = {}
    cdef dict simple_verdicts = _SIMPLE_VERDICTS
    cdef dict proto_mask = _PROTO_MASK
    cdef dict ct_cache = _CT_CACHE
    cdef bint v4 = b.version == 4
    cdef Py_ssize_t n_rule = 0, header, i, ti = 0
    cdef list chain_ids = b.chain_ids
    cdef dict ids
    cdef tuple exprs
    cdef object table, chain, rule, e, t, v, found, threshold, simple, target, aid, bit, cidrs
    cdef object where, text
    cdef list address_texts = b.address_texts
    cdef const char *p
    cdef Py_ssize_t n
    cdef int64_t value
    for table in b.tables:
        ids = chain_ids[ti]
        where = _Where(table, "", 0)
        for chain in table.chains:
            where.chain = chain.name
            chain_offset.append(len(code) >> 2)
            chain_first.append(n_rule)
            i = 0
            for rule in chain.rules:
                where.index = i
                i += 1
                header = len(code)
                _op(code, _RULE, n_rule, _ZERO, _ZERO)
                n_rule += 1
                exprs = rule.exprs
                for e in exprs:
                    t = type(e)
                    if t is _IPMatch and v4 and len(e.cidrs) == 1:
                        cidrs = e.cidrs
                        found = net4_cache.get(cidrs[0])
                        if found is None:
                            found = _net4(cidrs[0])
                            if found is None:
                                found = b._net4(cidrs[0], where)
                            else:
                                net4_cache[cidrs[0]] = found
                        _op(
                            code,
                            _M_SADDR4 if e.field == "saddr" else _M_DADDR4,
                            (<tuple>found)[0],
                            (<tuple>found)[1],
                            _ONE if e.negate else _ZERO,
                        )
                    elif t is _StatisticMatch:
                        threshold = stat_cache.get(e)
                        if threshold is None:
                            threshold = statistic_threshold(e)
                            stat_cache[e] = threshold
                        _op(code, _M_STAT, threshold, _ZERO, _ZERO)
                    elif t is _ProtoMatch and len(e.protocols) == 1:
                        bit = proto_mask.get(e.protocols[0])
                        if bit is None:
                            b._expr(ti, e, where)
                        else:
                            _op(code, _M_PROTO, bit, _ONE if e.negate else _ZERO, _ZERO)
                    elif t is _CtStateMatch and e.states in ct_cache:
                        _op(code, _M_CTSTATE, ct_cache[e.states], _ONE if e.negate else _ZERO,
                            _ZERO)
                    else:
                        b._expr(ti, e, where)
                v = rule.verdict
                t = type(v)
                simple = simple_verdicts.get(t)
                if simple is not None:
                    _op(code, simple, _ZERO, _ZERO, _ZERO)
                elif t is _Jump or t is _Goto:
                    target = ids.get(v.chain)
                    if target is None:
                        target = b._chain(ti, v.chain, where)
                    fixups.append(len(code) + 1)
                    _op(code, _V_JUMP if t is _Jump else _V_GOTO, target, _ZERO, _ZERO)
                elif t is _DNAT and v4:
                    text = v.address
                    aid = address_ids.get(text)
                    if aid is None:
                        p = _utf8(text, &n)
                        value = -1 if p == NULL else _quad(p, n)
                        if value < 0:
                            aid = b.address(text, where)
                        else:  # as the pure address() does for a canonical quad
                            aid = len(address_values)
                            address_values.append(value)
                            address_texts.append(text)
                            address_ids[text] = aid
                    _op(code, _V_DNAT, aid, v.port or _ZERO, address_values[aid])
                else:
                    b._verdict(ti, v, where)
                code[header + 2] = len(code) >> 2
            _op(code, _END, ids[chain.name], _ZERO, _ZERO)
        ti += 1
    b.n_rules = n_rule
