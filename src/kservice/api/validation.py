"""The API server's validation primitives, with its own messages, verbatim.

Every validator takes the value to check and the field path to report it at
(``"spec.ports[0].port"``) and returns a ``list[FieldError]``, empty when the
value is valid. Validators never raise on bad input: a value of the wrong type
(a number where a string belongs, a list where a map belongs) yields one
Invalid error ``must be a string, not number`` in the style of the manifest
reader (:class:`kservice.api._base.Reader`), which is what the project reports
where the API server would fail to decode the request.

The rules and texts are those of upstream Kubernetes' current master branch:

* ``k8s.io/apimachinery/pkg/util/validation`` and its ``api/validate/content``
  helpers: :func:`dns1123_label`, :func:`dns1123_subdomain`,
  :func:`dns1035_label`, :func:`qualified_name` (``IsLabelKey``),
  :func:`label_value`, :func:`port_number`, :func:`port_name`,
  :func:`ip_address`, :func:`ip_address_family`, :func:`cidr`, :func:`fqdn`.
  Lengths are counted in bytes of UTF-8, like Go's ``len``, and length
  problems say so (``must be no more than 63 bytes``; older releases said
  ``characters``).
* ``k8s.io/apimachinery/pkg/api/validation`` (objectmeta.go, generic.go):
  :func:`validate_object_name`, :func:`validate_namespace_name`,
  :func:`validate_annotations` (keys are qualified names compared in lower
  case; keys and values together at most 256 KiB).
* ``k8s.io/apimachinery/pkg/apis/meta/v1/validation``:
  :func:`validate_labels`, :func:`validate_selector_map` (a Service's
  ``spec.selector``), :func:`validate_label_selector` (``metav1.LabelSelector``).
* ``pkg/apis/core/validation``: :func:`int_or_string_port`
  (``ValidatePortNumOrName``) and :func:`endpoint_ip` (``ValidateEndpointIP``,
  formerly ``ValidateNonSpecialIP``).

IP and CIDR parsing
-------------------
Every IP-bearing Service/EndpointSlice field is a *legacy* field upstream:
it is parsed with ``netutils.ParseIPSloppy`` / ``ParseCIDRSloppy`` (Go 1.16's
``net.ParseIP``), which accepts IPv4 octets with leading zeros (``010.1.1.1``
is ``10.1.1.1``, read as decimal), IPv6 groups with leading zeros beyond four
digits, IPv4-mapped IPv6 addresses, CIDR values with host bits set
(``10.0.0.1/8``) and prefix lengths with leading zeros (``10.0.0.0/08``); it
rejects zones (``fe80::1%eth0``), brackets, ports and surrounding spaces.
The ``StrictIPCIDRValidation`` feature gate (alpha since 1.33, off by default)
rejects the ambiguous forms; ``strict=True`` on :func:`ip_address` and
:func:`cidr` does the same with the same messages
(``IsValidIPForLegacyField`` / ``IsValidCIDRForLegacyField``). The default
(``strict=False``) is what a default API server does today. :func:`parse_ip`
and :func:`parse_cidr` expose the sloppy parsers themselves.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, NamedTuple

from kservice.api._base import type_name
from kservice.errors import FieldError

__all__ = [
    "DNS1035_LABEL_MAX_LENGTH",
    "DNS1123_LABEL_MAX_LENGTH",
    "DNS1123_SUBDOMAIN_MAX_LENGTH",
    "IS_NEGATIVE_ERROR_MSG",
    "LABEL_VALUE_MAX_LENGTH",
    "PORT_NAME_MAX_LENGTH",
    "QUALIFIED_NAME_MAX_LENGTH",
    "TOTAL_ANNOTATION_SIZE_LIMIT_BYTES",
    "cidr",
    "dns1035_label",
    "dns1123_label",
    "dns1123_subdomain",
    "empty_error",
    "endpoint_ip",
    "fqdn",
    "inclusive_range_error",
    "int_in_range",
    "int_or_string_port",
    "ip_address",
    "ip_address_family",
    "ip_version",
    "label_value",
    "max_len_error",
    "non_negative",
    "one_of",
    "parse_cidr",
    "parse_ip",
    "port_name",
    "port_number",
    "qualified_name",
    "regex_error",
    "validate_annotations",
    "validate_label_selector",
    "validate_labels",
    "validate_namespace_name",
    "validate_object_name",
    "validate_selector_map",
]

Errors = list[FieldError]

# -- limits (upstream constants) -----------------------------------------------------------

DNS1123_LABEL_MAX_LENGTH: Final = 63
DNS1123_SUBDOMAIN_MAX_LENGTH: Final = 253
DNS1035_LABEL_MAX_LENGTH: Final = 63
QUALIFIED_NAME_MAX_LENGTH: Final = 63  # the name part of a label key
LABEL_VALUE_MAX_LENGTH: Final = 63
PORT_NAME_MAX_LENGTH: Final = 15  # IANA_SVC_NAME (RFC 6335)
TOTAL_ANNOTATION_SIZE_LIMIT_BYTES: Final = 256 * (1 << 10)  # 256 KiB

IS_NEGATIVE_ERROR_MSG: Final = "must be greater than or equal to 0"

# -- message builders (validation.go / content/errors.go) ----------------------------------


def max_len_error(length: int) -> str:
    """``MaxLenError``: a string is longer than ``length`` bytes."""
    return f"must be no more than {length} bytes"


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """``RegexError``: the explanation of a failed regex match, with examples."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    # Upstream appends "', " after every example and " or " between them, so two
    # examples read "'my-name',  or '123-abc', regex used ..." (sic, two spaces).
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


def empty_error() -> str:
    """``EmptyError``: a string must not be empty."""
    return "must be non-empty"


def inclusive_range_error(lo: int, hi: int) -> str:
    """``InclusiveRangeError``: a number is outside ``[lo, hi]``."""
    return f"must be between {lo} and {hi}, inclusive"


# -- type handling -----------------------------------------------------------------------


def _wrong_type(path: str, value: Any, expected: str) -> FieldError:
    return FieldError.invalid(path, value, f"must be {expected}, not {type_name(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _byte_len(value: str) -> int:
    """Go's ``len(string)``: the length in bytes of UTF-8."""
    return len(value.encode("utf-8", "surrogatepass"))


def _invalid_each(path: str, value: Any, messages: Iterable[str]) -> Errors:
    return [FieldError.invalid(path, value, msg) for msg in messages]


# -- DNS names -------------------------------------------------------------------------

_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_ERR: Final = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT: Final = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_ERR: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_DNS1035_LABEL_FMT: Final = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_ERR: Final = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character"
)

# Go's MatchString("^...$") matches the whole text; Python needs fullmatch (``$``
# would also match before a trailing newline).
_DNS1123_LABEL_RE: Final = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN_RE: Final = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL_RE: Final = re.compile(_DNS1035_LABEL_FMT)


def _is_dns1123_label(value: str) -> list[str]:
    errs = []
    if _byte_len(value) > DNS1123_LABEL_MAX_LENGTH:
        errs.append(max_len_error(DNS1123_LABEL_MAX_LENGTH))
    if not _DNS1123_LABEL_RE.fullmatch(value):
        if _DNS1123_SUBDOMAIN_RE.fullmatch(value):
            # A valid subdomain but not a label: since length was checked, it has dots.
            errs.append("must not contain dots")
        else:
            errs.append(regex_error(_DNS1123_LABEL_ERR, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def _is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if _byte_len(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errs.append(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errs.append(regex_error(_DNS1123_SUBDOMAIN_ERR, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def _is_dns1035_label(value: str) -> list[str]:
    errs = []
    if _byte_len(value) > DNS1035_LABEL_MAX_LENGTH:
        errs.append(max_len_error(DNS1035_LABEL_MAX_LENGTH))
    if not _DNS1035_LABEL_RE.fullmatch(value):
        errs.append(regex_error(_DNS1035_LABEL_ERR, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def dns1123_label(value: Any, path: str) -> Errors:
    """``IsDNS1123Label``: e.g. port names, namespace names, hostnames."""
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    return _invalid_each(path, value, _is_dns1123_label(value))


def dns1123_subdomain(value: Any, path: str) -> Errors:
    """``IsDNS1123Subdomain``: e.g. EndpointSlice, Pod and Node names."""
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    return _invalid_each(path, value, _is_dns1123_subdomain(value))


def dns1035_label(value: Any, path: str) -> Errors:
    """``IsDNS1035Label``: e.g. Service names."""
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    return _invalid_each(path, value, _is_dns1035_label(value))


def fqdn(value: Any, path: str) -> Errors:
    """``IsFullyQualifiedDomainName``: at least two labels; one trailing dot allowed.

    Upstream reports the value with its trailing dot removed, and a bad label
    as the offending label alone.
    """
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    if not value:
        return [FieldError.required(path, "")]
    name = value[:-1] if value.endswith(".") else value
    if errs := _is_dns1123_subdomain(name):
        return [FieldError.invalid(path, name, ",".join(errs))]
    labels = name.split(".")
    if len(labels) < 2:
        return [
            FieldError.invalid(
                path, name, "should be a domain with at least two segments separated by dots"
            )
        ]
    for label in labels:
        if errs := _is_dns1123_label(label):
            return [FieldError.invalid(path, label, ",".join(errs))]
    return []


# -- label keys, label values, labels, annotations ---------------------------------------

_LABEL_KEY_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_ERR: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character"
)
_LABEL_VALUE_FMT: Final = "(" + _LABEL_KEY_FMT + ")?"
_LABEL_VALUE_ERR: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character"
)
_LABEL_KEY_RE: Final = re.compile(_LABEL_KEY_FMT)
_LABEL_VALUE_RE: Final = re.compile(_LABEL_VALUE_FMT)


def _is_qualified_name(value: str) -> list[str]:
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part " + empty_error())
        else:
            errs.extend("prefix part " + msg for msg in _is_dns1123_subdomain(prefix))
    else:
        return [
            "a valid label key "
            + regex_error(_LABEL_KEY_ERR, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part " + empty_error())
    elif _byte_len(name) > QUALIFIED_NAME_MAX_LENGTH:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX_LENGTH))
    if not _LABEL_KEY_RE.fullmatch(name):
        errs.append(
            "name part "
            + regex_error(_LABEL_KEY_ERR, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def _is_label_value(value: str) -> list[str]:
    errs = []
    if _byte_len(value) > LABEL_VALUE_MAX_LENGTH:
        errs.append(max_len_error(LABEL_VALUE_MAX_LENGTH))
    if not _LABEL_VALUE_RE.fullmatch(value):
        errs.append(regex_error(_LABEL_VALUE_ERR, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345"))
    return errs


def qualified_name(value: Any, path: str) -> Errors:
    """``IsQualifiedName`` (``IsLabelKey``): ``[prefix/]name``, e.g. label keys.

    The optional prefix is a DNS-1123 subdomain; the name is at most 63 bytes
    of alphanumerics, ``-``, ``_`` and ``.``, starting and ending alphanumeric.
    """
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    return _invalid_each(path, value, _is_qualified_name(value))


def label_value(value: Any, path: str) -> Errors:
    """``IsValidLabelValue``: empty, or at most 63 bytes like a label key's name."""
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    return _invalid_each(path, value, _is_label_value(value))


def validate_labels(labels: Any, path: str) -> Errors:
    """``ValidateLabels``: every key a qualified name, every value a label value.

    As upstream, errors about any key or value are reported at ``path`` itself
    (``metadata.labels: Invalid value: "-x": ...``). ``None`` is an empty map.
    """
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [_wrong_type(path, labels, "an object")]
    errs: Errors = []
    for key, val in labels.items():
        if not isinstance(key, str):
            errs.append(_wrong_type(path, key, "a string"))
            continue
        errs.extend(qualified_name(key, path))
        if isinstance(val, str):
            errs.extend(_invalid_each(path, val, _is_label_value(val)))
        else:
            errs.append(_wrong_type(f"{path}[{key}]", val, "a string"))
    return errs


def validate_selector_map(selector: Any, path: str) -> Errors:
    """A Service's ``spec.selector``: validated as labels (``ValidateLabels``)."""
    return validate_labels(selector, path)


def _go_lower(value: str) -> str:
    # Go's strings.ToLower uses simple case mapping; Python's str.lower uses the
    # full mapping, which differs only for U+0130 ('İ' -> 'i', not 'i̇').
    return "".join("i" if ch == "\u0130" else ch.lower() for ch in value)


def validate_annotations(annotations: Any, path: str) -> Errors:
    """``ValidateAnnotations``: keys are qualified names (in any case); size limit.

    Keys and values together may not exceed 256 KiB (262144 bytes), reported
    as ``Too long: may not be more than 262144 bytes``. ``None`` is an empty map.
    """
    if annotations is None:
        return []
    if not isinstance(annotations, Mapping):
        return [_wrong_type(path, annotations, "an object")]
    errs: Errors = []
    total = 0
    for key, val in annotations.items():
        if not isinstance(key, str):
            errs.append(_wrong_type(path, key, "a string"))
            continue
        errs.extend(_invalid_each(path, key, _is_qualified_name(_go_lower(key))))
        total += _byte_len(key)
        if isinstance(val, str):
            total += _byte_len(val)
        else:
            errs.append(_wrong_type(f"{path}[{key}]", val, "a string"))
    if total > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES:
        errs.append(FieldError.too_long(path, "", TOTAL_ANNOTATION_SIZE_LIMIT_BYTES))
    return errs


# -- object names ------------------------------------------------------------------------


def validate_object_name(value: Any, path: str, *, dns1035: bool = False) -> Errors:
    """``metadata.name`` as ``ValidateObjectMeta`` checks it (no generateName).

    Empty gives ``Required value: name or generateName is required``. Service
    names are DNS-1035 labels (``dns1035=True``, ``NameIsDNS1035Label``);
    EndpointSlice, Pod and Node names are DNS-1123 subdomains (the default,
    ``NameIsDNSSubdomain``). Namespaces: :func:`validate_namespace_name`.
    """
    if value is None or value == "":
        return [FieldError.required(path, "name or generateName is required")]
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    msgs = _is_dns1035_label(value) if dns1035 else _is_dns1123_subdomain(value)
    return _invalid_each(path, value, msgs)


def validate_namespace_name(value: Any, path: str) -> Errors:
    """``metadata.namespace`` of a namespaced object: required, a DNS-1123 label."""
    if value is None or value == "":
        return [FieldError.required(path, "")]
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    return _invalid_each(path, value, _is_dns1123_label(value))


# -- numbers and ports -------------------------------------------------------------------


def int_in_range(value: Any, path: str, lo: int, hi: int) -> Errors:
    """``IsInRange``: an integer in ``[lo, hi]``."""
    if not _is_int(value):
        return [_wrong_type(path, value, "an integer")]
    if lo <= value <= hi:
        return []
    return [FieldError.invalid(path, value, inclusive_range_error(lo, hi))]


def non_negative(value: Any, path: str) -> Errors:
    """``ValidateNonnegativeField``: an integer ``>= 0``."""
    if not _is_int(value):
        return [_wrong_type(path, value, "an integer")]
    if value < 0:
        return [FieldError.invalid(path, value, IS_NEGATIVE_ERROR_MSG)]
    return []


def port_number(value: Any, path: str) -> Errors:
    """``IsValidPortNum``: 1-65535 (``must be between 1 and 65535, inclusive``)."""
    return int_in_range(value, path, 1, 65535)


_PORT_NAME_CHARSET_RE: Final = re.compile("[-a-z0-9]+")
_PORT_NAME_ONE_LETTER_RE: Final = re.compile("[a-z]")


def _is_valid_port_name(port: str) -> list[str]:
    errs = []
    if _byte_len(port) > PORT_NAME_MAX_LENGTH:
        errs.append(max_len_error(PORT_NAME_MAX_LENGTH))
    if not _PORT_NAME_CHARSET_RE.fullmatch(port):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _PORT_NAME_ONE_LETTER_RE.search(port):
        errs.append("must contain at least one letter (a-z)")
    if "--" in port:
        errs.append("must not contain consecutive hyphens")
    if port and (port[0] == "-" or port[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def port_name(value: Any, path: str) -> Errors:
    """``IsValidPortName`` (IANA_SVC_NAME): a named ``targetPort`` / container port.

    At most 15 bytes of ``[-a-z0-9]`` with at least one letter, no leading,
    trailing or doubled hyphen; every broken rule is reported.
    """
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    return _invalid_each(path, value, _is_valid_port_name(value))


def int_or_string_port(value: Any, path: str) -> Errors:
    """``ValidatePortNumOrName``: a port number (1-65535) or an IANA port name.

    A string is always a name, as in an ``IntOrString``: ``"8080"`` is an
    invalid name (it has no letter), not the number 8080.
    """
    if _is_int(value):
        return port_number(value, path)
    if isinstance(value, str):
        return port_name(value, path)
    return [_wrong_type(path, value, "an integer or a string")]


def one_of(value: Any, path: str, supported: Iterable[str], *, required: bool = False) -> Errors:
    """``NotSupported`` unless ``value`` is one of ``supported``.

    ``None`` (unset) is accepted unless ``required``; with ``required``, unset
    or ``""`` gives ``Required value``, the way upstream checks enum fields.
    The supported values are listed sorted, as upstream's ``sets.List(...)``
    gives them to ``field.NotSupported``.
    """
    if value is None or value == "":
        if required:
            return [FieldError.required(path, "")]
        if value is None:
            return []
    choices = sorted(supported)
    if isinstance(value, str) and value in choices:
        return []
    return [FieldError.not_supported(path, value, choices)]


# -- IP addresses and CIDRs ----------------------------------------------------------------

_BIG: Final = 0xFFFFFF
_V4_IN_V6_PREFIX: Final = b"\x00" * 10 + b"\xff\xff"


class _ParsedIP(NamedTuple):
    packed: bytes  # always 16 bytes, IPv4 as IPv4-mapped IPv6 (Go's net.IP)
    is_v4_text: bool  # written as dotted-quad IPv4
    leading_zeros: bool  # accepted only by the sloppy parser (netip rejects it)


def _dtoi(s: str, i: int) -> tuple[int, int, bool]:
    """Go's ``dtoi``: decimal digits from ``s[i]``; (value, end, ok)."""
    n = 0
    j = i
    while j < len(s) and "0" <= s[j] <= "9":
        n = n * 10 + ord(s[j]) - 48
        if n >= _BIG:
            return _BIG, j, False
        j += 1
    if j == i:
        return 0, i, False
    return n, j, True


def _xtoi(s: str, i: int) -> tuple[int, int, bool]:
    """Go's ``xtoi``: hexadecimal digits from ``s[i]``; (value, end, ok)."""
    n = 0
    j = i
    while j < len(s):
        c = s[j]
        if "0" <= c <= "9":
            n = n * 16 + ord(c) - 48
        elif "a" <= c <= "f":
            n = n * 16 + ord(c) - 87
        elif "A" <= c <= "F":
            n = n * 16 + ord(c) - 55
        else:
            break
        if n >= _BIG:
            return 0, j, False
        j += 1
    if j == i:
        return 0, i, False
    return n, j, True


def _parse_ipv4(s: str) -> tuple[bytes, bool] | None:
    """Go 1.16 ``parseIPv4`` (leading zeros allowed, read as decimal)."""
    octets = bytearray()
    pos = 0
    leading = False
    for k in range(4):
        if pos >= len(s):
            return None
        if k > 0:
            if s[pos] != ".":
                return None
            pos += 1
        n, end, ok = _dtoi(s, pos)
        if not ok or n > 0xFF:
            return None
        if end - pos > 1 and s[pos] == "0":
            leading = True
        octets.append(n)
        pos = end
    if pos != len(s):
        return None
    return _V4_IN_V6_PREFIX + bytes(octets), leading


def _parse_ipv6(s: str) -> tuple[bytes, bool] | None:
    """Go 1.16 ``parseIPv6`` (no zones; groups may have more than 4 digits)."""
    ip = bytearray(16)
    ellipsis = -1
    leading = False
    pos = 0
    if len(s) >= 2 and s[0] == ":" and s[1] == ":":
        ellipsis = 0
        pos = 2
        if pos == len(s):
            return bytes(ip), False
    i = 0
    while i < 16:
        n, end, ok = _xtoi(s, pos)
        if not ok or n > 0xFFFF:
            return None
        if end < len(s) and s[end] == ".":  # trailing IPv4
            if ellipsis < 0 and i != 12:
                return None
            if i + 4 > 16:
                return None
            v4 = _parse_ipv4(s[pos:])
            if v4 is None:
                return None
            ip[i : i + 4] = v4[0][12:]
            leading = leading or v4[1]
            pos = len(s)
            i += 4
            break
        if end - pos > 4:
            leading = True
        ip[i] = n >> 8
        ip[i + 1] = n & 0xFF
        i += 2
        pos = end
        if pos == len(s):
            break
        if s[pos] != ":" or pos + 1 == len(s):
            return None
        pos += 1
        if s[pos] == ":":
            if ellipsis >= 0:
                return None
            ellipsis = i
            pos += 1
            if pos == len(s):
                break
    if pos != len(s):
        return None
    if i < 16:
        if ellipsis < 0:
            return None
        gap = 16 - i
        ip[ellipsis + gap : 16] = ip[ellipsis:i]
        ip[ellipsis : ellipsis + gap] = bytes(gap)
    elif ellipsis >= 0:
        return None  # an ellipsis must stand for at least one group
    return bytes(ip), leading


def _parse_ip_sloppy(s: str) -> _ParsedIP | None:
    """``netutils.ParseIPSloppy``: Go 1.16's ``net.ParseIP``."""
    for ch in s:
        if ch == ".":
            v4 = _parse_ipv4(s)
            return None if v4 is None else _ParsedIP(v4[0], True, v4[1])
        if ch == ":":
            v6 = _parse_ipv6(s)
            return None if v6 is None else _ParsedIP(v6[0], False, v6[1])
    return None


def _is_v4(packed: bytes) -> bool:
    """Go's ``ip.To4() != nil`` (IPv4, or IPv4-mapped IPv6)."""
    return packed[:12] == _V4_IN_V6_PREFIX


def parse_ip(text: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse like ``netutils.ParseIPSloppy``; ``None`` when it would fail.

    The result is the address the API server sees, as Go's ``net.IP`` has it:
    ``"010.0.0.1"`` is ``IPv4Address("10.0.0.1")`` (leading zeros read as
    decimal), and an IPv4-mapped IPv6 address (``"::ffff:1.2.3.4"``) is the
    IPv4 address ``1.2.3.4`` (Go's ``To4``/``String``). Never raises.
    """
    if not isinstance(text, str):
        return None
    parsed = _parse_ip_sloppy(text)
    if parsed is None:
        return None
    if _is_v4(parsed.packed):
        return ipaddress.IPv4Address(parsed.packed[12:])
    return ipaddress.IPv6Address(parsed.packed)


class _ParsedCIDR(NamedTuple):
    ip: _ParsedIP
    prefix_len: int
    bits: int  # 32 or 128
    prefix_leading_zeros: bool


def _parse_cidr_sloppy(s: str) -> _ParsedCIDR | None:
    """``netutils.ParseCIDRSloppy``: Go 1.16's ``net.ParseCIDR``."""
    slash = s.find("/")
    if slash < 0:
        return None
    addr, mask = s[:slash], s[slash + 1 :]
    v4 = _parse_ipv4(addr)
    if v4 is not None:
        ip = _ParsedIP(v4[0], True, v4[1])
        bits = 32
    else:
        v6 = _parse_ipv6(addr)
        if v6 is None:
            return None
        ip = _ParsedIP(v6[0], False, v6[1])
        bits = 128
    n, end, ok = _dtoi(mask, 0)
    if not ok or end != len(mask) or n > bits:
        return None
    return _ParsedCIDR(ip, n, bits, len(mask) > 1 and mask[0] == "0")


def ip_version(text: Any) -> int | None:
    """4 or 6 for an address the API server parses (IPv4-mapped IPv6 counts as 4), else None."""
    addr = parse_ip(text)
    return None if addr is None else addr.version


def parse_cidr(text: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """Parse like ``netutils.ParseCIDRSloppy``; ``None`` when it would fail.

    The result is the ``IPNet`` the API server sees: host bits are masked off
    (``"10.1.2.3/8"`` is ``10.0.0.0/8``) and an IPv4-mapped network with an
    IPv6 prefix of 96 or more is its IPv4 network (``"::ffff:1.1.1.0/120"`` is
    ``1.1.1.0/24``), as Go's ``IPNet.String`` prints it. Never raises.
    """
    if not isinstance(text, str):
        return None
    parsed = _parse_cidr_sloppy(text)
    if parsed is None:
        return None
    if parsed.bits == 32:
        return ipaddress.IPv4Network((parsed.ip.packed[12:], parsed.prefix_len), strict=False)
    net = ipaddress.IPv6Network((parsed.ip.packed, parsed.prefix_len), strict=False)
    if parsed.prefix_len >= 96 and _is_v4(net.network_address.packed):
        return ipaddress.IPv4Network(
            (net.network_address.packed[12:], parsed.prefix_len - 96), strict=False
        )
    return net


def ip_address(value: Any, path: str, *, strict: bool = False) -> Errors:
    """``IsValidIPForLegacyField``: clusterIPs, externalIPs, loadBalancerIP, ...

    Default (``strict=False``) is upstream's default, sloppy parsing; with
    ``strict=True`` (the ``StrictIPCIDRValidation`` gate) leading zeros and
    IPv4-mapped IPv6 addresses are rejected too.
    """
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    parsed = _parse_ip_sloppy(value)
    if parsed is None:
        return [
            FieldError.invalid(
                path, value, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            )
        ]
    if not strict:
        return []
    if parsed.leading_zeros:
        return [FieldError.invalid(path, value, "must not have leading 0s")]
    if not parsed.is_v4_text and _is_v4(parsed.packed):
        return [FieldError.invalid(path, value, "must not be an IPv4-mapped IPv6 address")]
    return []


def ip_address_family(value: Any, path: str, family: Literal["IPv4", "IPv6"]) -> Errors:
    """``IsValidIPv4Address`` / ``IsValidIPv6Address`` (EndpointSlice addresses).

    As upstream, an IPv4-mapped IPv6 address (``::ffff:1.2.3.4``) counts as
    IPv4. ``family`` is ``"IPv4"`` or ``"IPv6"`` (anything else is a
    programming error and raises :class:`ValueError`).
    """
    if family not in ("IPv4", "IPv6"):
        raise ValueError(f"unknown IP family {family!r}: expected 'IPv4' or 'IPv6'")
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    parsed = _parse_ip_sloppy(value)
    want_v4 = family == "IPv4"
    if parsed is None or _is_v4(parsed.packed) != want_v4:
        return [FieldError.invalid(path, value, f"must be a valid {family} address")]
    return []


def cidr(value: Any, path: str, *, strict: bool = False) -> Errors:
    """``IsValidCIDRForLegacyField``: e.g. ``spec.loadBalancerSourceRanges[i]``.

    Upstream trims surrounding whitespace from source ranges *before* calling
    this (``strings.TrimSpace``); callers must do the same. Default
    (``strict=False``) accepts leading zeros, IPv4-mapped addresses and host
    bits (``10.0.0.1/8``); ``strict=True`` rejects them, reporting the first
    problem found in upstream's order (leading zeros, IPv4-mapped, host bits).
    """
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    parsed = _parse_cidr_sloppy(value)
    if parsed is None:
        return [
            FieldError.invalid(
                path, value, "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
            )
        ]
    if not strict:
        return []
    if parsed.ip.leading_zeros or parsed.prefix_leading_zeros:
        return [FieldError.invalid(path, value, "must not have leading 0s in IP or prefix length")]
    if not parsed.ip.is_v4_text and _is_v4(parsed.ip.packed):
        return [FieldError.invalid(path, value, "must not have an IPv4-mapped IPv6 address")]
    addr = int.from_bytes(parsed.ip.packed[16 - parsed.bits // 8 :], "big")
    host_bits = parsed.bits - parsed.prefix_len
    if addr & ((1 << host_bits) - 1):
        return [FieldError.invalid(path, value, "must not have bits set beyond the prefix length")]
    return []


def endpoint_ip(value: Any, path: str) -> Errors:
    """``ValidateEndpointIP``: an endpoint or external IP may not be special.

    Rejects the unspecified address, loopback, link-local unicast and
    link-local multicast, each with its own error (Go's ``net.IP`` predicates,
    so IPv4-mapped IPv6 forms count as IPv4).
    """
    if not isinstance(value, str):
        return [_wrong_type(path, value, "a string")]
    parsed = _parse_ip_sloppy(value)
    if parsed is None:
        return [FieldError.invalid(path, value, "must be a valid IP address")]
    ip = parsed.packed
    v4 = _is_v4(ip)
    errs: Errors = []
    if ip == bytes(16) or ip == _V4_IN_V6_PREFIX + bytes(4):
        errs.append(FieldError.invalid(path, value, f"may not be unspecified ({value})"))
    if (v4 and ip[12] == 127) or (not v4 and ip == bytes(15) + b"\x01"):
        errs.append(
            FieldError.invalid(
                path, value, "may not be in the loopback range (127.0.0.0/8, ::1/128)"
            )
        )
    if (v4 and ip[12] == 169 and ip[13] == 254) or (
        not v4 and ip[0] == 0xFE and ip[1] & 0xC0 == 0x80
    ):
        errs.append(
            FieldError.invalid(
                path, value, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
            )
        )
    if (v4 and ip[12] == 224 and ip[13] == 0 and ip[14] == 0) or (
        not v4 and ip[0] == 0xFF and ip[1] & 0x0F == 0x02
    ):
        errs.append(
            FieldError.invalid(
                path,
                value,
                "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
            )
        )
    return errs


# -- label selectors ---------------------------------------------------------------------

_OPS_WITH_VALUES: Final = ("In", "NotIn")
_OPS_WITHOUT_VALUES: Final = ("Exists", "DoesNotExist")


def _validate_requirement(expr: Mapping[Any, Any], path: str, check_values: bool) -> Errors:
    errs: Errors = []
    values: Any = expr.get("values")
    if values is None:
        values = []
    elif not isinstance(values, list | tuple):
        errs.append(_wrong_type(f"{path}.values", values, "an array"))
        values = None
    operator = expr.get("operator", "")
    if operator is None:
        operator = ""
    if not isinstance(operator, str):
        errs.append(_wrong_type(f"{path}.operator", operator, "a string"))
    elif operator in _OPS_WITH_VALUES:
        if values is not None and len(values) == 0:
            errs.append(
                FieldError.required(
                    f"{path}.values", "must be specified when `operator` is 'In' or 'NotIn'"
                )
            )
    elif operator in _OPS_WITHOUT_VALUES:
        if values:
            errs.append(
                FieldError.forbidden(
                    f"{path}.values",
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
            )
    else:
        errs.append(
            FieldError.invalid(f"{path}.operator", operator, "not a valid selector operator")
        )
    key = expr.get("key", "")
    errs.extend(qualified_name("" if key is None else key, f"{path}.key"))
    if check_values and values:
        for j, val in enumerate(values):
            errs.extend(label_value(val, f"{path}.values[{j}]"))
    return errs


def validate_label_selector(
    selector: Any, path: str, *, allow_invalid_label_value: bool = False
) -> Errors:
    """``ValidateLabelSelector`` for a ``metav1.LabelSelector`` given as a dict.

    ``matchLabels`` is validated as labels; each ``matchExpressions[i]`` needs
    a valid operator (``In``/``NotIn`` require ``values``,
    ``Exists``/``DoesNotExist`` forbid them), a qualified-name ``key`` and,
    unless ``allow_invalid_label_value`` (upstream's ratcheting option for
    stored objects), label-value ``values``. ``None`` is no selector.
    """
    if selector is None:
        return []
    if not isinstance(selector, Mapping):
        return [_wrong_type(path, selector, "an object")]
    errs = validate_labels(selector.get("matchLabels"), f"{path}.matchLabels")
    exprs = selector.get("matchExpressions")
    if exprs is None:
        return errs
    exprs_path = f"{path}.matchExpressions"
    if not isinstance(exprs, list | tuple):
        errs.append(_wrong_type(exprs_path, exprs, "an array"))
        return errs
    for i, expr in enumerate(exprs):
        item_path = f"{exprs_path}[{i}]"
        if isinstance(expr, Mapping):
            errs.extend(_validate_requirement(expr, item_path, not allow_invalid_label_value))
        else:
            errs.append(_wrong_type(item_path, expr, "an object"))
    return errs
