"""kservice.api.validation: the API server's validation primitives, message for message.

Cases come from upstream's own tests where they exist
(``staging/src/k8s.io/apimachinery/pkg/util/validation/validation_test.go``,
``ip_test.go``, ``api/validate/content/kube_test.go``); the expected texts are the
API server's, verbatim.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kservice.api import validation as v
from kservice.errors import ErrorType, FieldError

# -- the messages, spelled out once --------------------------------------------------------

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
    "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
NAME_PART_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
    "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_KEY_SLASHES_MSG = (
    "a valid label key must consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', "
    "regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an "
    "optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
PORT_RANGE_MSG = "must be between 1 and 65535, inclusive"
PORT_CHARSET_MSG = "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
PORT_LETTER_MSG = "must contain at least one letter (a-z)"
PORT_DOUBLE_HYPHEN_MSG = "must not contain consecutive hyphens"
PORT_EDGE_HYPHEN_MSG = "must not begin or end with a hyphen"
IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
CIDR_MSG = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"


def strs(errs: list[FieldError]) -> list[str]:
    return [str(e) for e in errs]


def details(errs: list[FieldError]) -> list[str]:
    return [e.detail for e in errs]


# -- message builders --------------------------------------------------------------------


def test_message_builders() -> None:
    assert v.max_len_error(63) == "must be no more than 63 bytes"
    assert v.empty_error() == "must be non-empty"
    assert v.inclusive_range_error(1, 65535) == PORT_RANGE_MSG
    assert v.regex_error("msg", "re") == "msg (regex used for validation is 're')"
    assert v.regex_error("msg", "re", "a", "b") == (
        "msg (e.g. 'a',  or 'b', regex used for validation is 're')"
    )
    assert v.TOTAL_ANNOTATION_SIZE_LIMIT_BYTES == 262144


# -- DNS names -------------------------------------------------------------------------

DNS1123_LABEL_GOOD = ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a"]
DNS1123_LABEL_GOOD += ["1--a--b--2", "a" * 63]
DNS1123_LABEL_BAD = ["", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a", "1-", "-1"]
DNS1123_LABEL_BAD += ["_", "a_", "_a", "a_b", "1_", "_1", "1_2", " ", "a ", " a", "a b", "1 "]
DNS1123_LABEL_BAD += [" 1", "1 2", "a\n", "ä"]


@pytest.mark.parametrize("value", DNS1123_LABEL_GOOD)
def test_dns1123_label_good(value: str) -> None:
    assert v.dns1123_label(value, "x") == []


@pytest.mark.parametrize("value", DNS1123_LABEL_BAD)
def test_dns1123_label_bad(value: str) -> None:
    assert strs(v.dns1123_label(value, "spec.ports[0].name")) == [
        f"spec.ports[0].name: Invalid value: {v_q(value)}: {DNS1123_LABEL_MSG}"
    ]


def v_q(value: str) -> str:
    """The value as the error prints it (Go's %q, for the values used here)."""
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # A valid subdomain but not a label: "must not contain dots" instead of the regex.
        (".", [DNS1123_LABEL_MSG]),
        ("a.b", ["must not contain dots"]),
        ("1.2", ["must not contain dots"]),
        ("a." * 31 + "a", ["must not contain dots"]),
        ("a" * 64, ["must be no more than 63 bytes"]),
        ("A" * 64, ["must be no more than 63 bytes", DNS1123_LABEL_MSG]),
        # 64 bytes of "a." pattern: too long, and a subdomain, so "dots".
        ("a." * 32, ["must be no more than 63 bytes", DNS1123_LABEL_MSG]),
        ("ab." * 21 + "a", ["must be no more than 63 bytes", "must not contain dots"]),
    ],
)
def test_dns1123_label_messages(value: str, expected: list[str]) -> None:
    assert details(v.dns1123_label(value, "x")) == expected


SUBDOMAIN_GOOD = ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a"]
SUBDOMAIN_GOOD += ["a.a", "ab.a", "a--1--2--b.a", "a.1", "0.a", "1--a--b--2.1", "a.b.c.d.e"]
SUBDOMAIN_GOOD += ["1.2.3.4.5", "11.22.33.44.55", "a" * 253]
SUBDOMAIN_BAD = ["", "A", "aBc", "-", "a-", "-a", "_", "a_b", ".", "a.", ".a", "a..b", "1..2"]
SUBDOMAIN_BAD += [" ", "a b", "A.a", "aB.a", "ab.A", "0.A", "A.B.C.D.E", "a.B.c.d.e"]
SUBDOMAIN_BAD += ["a@b", "a,b", "a;b", "a:b", "a%b", "a?b", "a$b"]


@pytest.mark.parametrize("value", SUBDOMAIN_GOOD)
def test_dns1123_subdomain_good(value: str) -> None:
    assert v.dns1123_subdomain(value, "x") == []


@pytest.mark.parametrize("value", SUBDOMAIN_BAD)
def test_dns1123_subdomain_bad(value: str) -> None:
    assert details(v.dns1123_subdomain(value, "x")) == [DNS1123_SUBDOMAIN_MSG]


def test_dns1123_subdomain_too_long() -> None:
    assert details(v.dns1123_subdomain("a" * 254, "x")) == ["must be no more than 253 bytes"]
    assert str(v.dns1123_subdomain("A" * 254, "metadata.name")[1]) == (
        f'metadata.name: Invalid value: "{"A" * 254}": {DNS1123_SUBDOMAIN_MSG}'
    )


DNS1035_GOOD = ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "a" * 63]
DNS1035_BAD = ["0", "01", "012", "1a", "1-a", "1--a--b--2", "", "A", "ABC", "aBc", "A1", "-"]
DNS1035_BAD += ["a-", "-a", "1-", "-1", "_", "a_", "a_b", ".", "a.", ".a", "a.b", "1.2", " "]
DNS1035_BAD += ["a ", " a", "a b"]


@pytest.mark.parametrize("value", DNS1035_GOOD)
def test_dns1035_label_good(value: str) -> None:
    assert v.dns1035_label(value, "x") == []


@pytest.mark.parametrize("value", DNS1035_BAD)
def test_dns1035_label_bad(value: str) -> None:
    assert details(v.dns1035_label(value, "x")) == [DNS1035_LABEL_MSG]


def test_dns1035_label_too_long() -> None:
    assert details(v.dns1035_label("a" * 64, "x")) == ["must be no more than 63 bytes"]


FQDN_GOOD = ["a.com", "k8s.io", "dev.k8s.io", "dev.k8s.io.", "foo.example.com", "bbc.co.uk"]
FQDN_GOOD += ["this.is.a.really.long.fqdn", "10.0.0.1", "hyphens-are-good.k8s.io"]
FQDN_GOOD += ["a" * 63 + ".k8s.io", "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 54]
FQDN_BAD = [".", "...", ".io", "com", ".com", "Dev.k8s.io", ".foo.example.com", "*.example.com"]
FQDN_BAD += ["*.bar.com", "underscores_are_bad.k8s.io", "foo@bar.example.com"]
FQDN_BAD += ["http://foo.example.com", "a" * 64 + ".k8s.io"]
FQDN_BAD += ["a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 55 + ".k8s.io"]


@pytest.mark.parametrize("value", FQDN_GOOD)
def test_fqdn_good(value: str) -> None:
    assert v.fqdn(value, "x") == []


@pytest.mark.parametrize("value", FQDN_BAD)
def test_fqdn_bad(value: str) -> None:
    assert len(v.fqdn(value, "x")) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", "endpoints[0].addresses[0]: Required value"),
        (
            "com.",  # the trailing dot is dropped from the reported value
            'endpoints[0].addresses[0]: Invalid value: "com": should be a domain with at '
            "least two segments separated by dots",
        ),
        (
            "Dev.k8s.io.",
            f'endpoints[0].addresses[0]: Invalid value: "Dev.k8s.io": {DNS1123_SUBDOMAIN_MSG}',
        ),
        (
            ".",
            f'endpoints[0].addresses[0]: Invalid value: "": {DNS1123_SUBDOMAIN_MSG}',
        ),
        (
            # A subdomain whose first label is too long: the label alone is reported.
            "a" * 64 + ".k8s.io",
            f'endpoints[0].addresses[0]: Invalid value: "{"a" * 64}": '
            "must be no more than 63 bytes",
        ),
        (
            "x" * 251 + ".io",
            f'endpoints[0].addresses[0]: Invalid value: "{"x" * 251}.io": '
            "must be no more than 253 bytes",
        ),
    ],
)
def test_fqdn_messages(value: str, expected: str) -> None:
    assert strs(v.fqdn(value, "endpoints[0].addresses[0]")) == [expected]


# -- qualified names, label values, labels, selectors, annotations -------------------------

QUALIFIED_GOOD = ["simple", "now-with-dashes", "1-starts-with-num", "1234", "simple/simple"]
QUALIFIED_GOOD += ["now-with-dashes/simple", "now-with-dashes/now-with-dashes"]
QUALIFIED_GOOD += ["now.with.dots/simple", "now-with.dashes-and.dots/simple", "1-num.2-num/3-num"]
QUALIFIED_GOOD += ["1234/5678", "1.2.3.4/5678", "Uppercase_Is_OK_123"]
QUALIFIED_GOOD += ["example.com/Uppercase_Is_OK_123", "requests.storage-foo", "a" * 63]
QUALIFIED_GOOD += ["a" * 253 + "/" + "b" * 63, "kubernetes.io/service-name"]


@pytest.mark.parametrize("value", QUALIFIED_GOOD)
def test_qualified_name_good(value: str) -> None:
    assert v.qualified_name(value, "x") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nospecialchars%^=@", [NAME_PART_MSG]),
        ("cantendwithadash-", [NAME_PART_MSG]),
        ("-cantstartwithadash-", [NAME_PART_MSG]),
        ("only/one/slash", [LABEL_KEY_SLASHES_MSG]),
        ("Example.com/abc", ["prefix part " + DNS1123_SUBDOMAIN_MSG]),
        ("example_com/abc", ["prefix part " + DNS1123_SUBDOMAIN_MSG]),
        ("example.com/", ["name part must be non-empty", NAME_PART_MSG]),
        ("/simple", ["prefix part must be non-empty"]),
        ("", ["name part must be non-empty", NAME_PART_MSG]),
        ("a" * 64, ["name part must be no more than 63 bytes"]),
        (
            "a" * 254 + "/abc",
            ["prefix part must be no more than 253 bytes"],
        ),
        (
            "A" * 254 + "/-",
            [
                "prefix part must be no more than 253 bytes",
                "prefix part " + DNS1123_SUBDOMAIN_MSG,
                NAME_PART_MSG,
            ],
        ),
    ],
)
def test_qualified_name_bad(value: str, expected: list[str]) -> None:
    errs = v.qualified_name(value, "spec.ports[0].appProtocol")
    assert details(errs) == expected
    assert all(e.type is ErrorType.INVALID and e.value == value for e in errs)


LABEL_VALUE_GOOD = ["simple", "now-with-dashes", "1-starts-with-num", "end-with-num-1", "1234"]
LABEL_VALUE_GOOD += ["a" * 63, "", "A_b.C-1"]
LABEL_VALUE_BAD = ["nospecialchars%^=@", "Tama-nui-te-rā.is.Māori.sun", "\\backslashes\\are\\bad"]
LABEL_VALUE_BAD += ["-starts-with-dash", "ends-with-dash-", ".starts.with.dot", "ends.with.dot."]
LABEL_VALUE_BAD += ["trailing-newline\n"]


@pytest.mark.parametrize("value", LABEL_VALUE_GOOD)
def test_label_value_good(value: str) -> None:
    assert v.label_value(value, "x") == []


@pytest.mark.parametrize("value", LABEL_VALUE_BAD)
def test_label_value_bad(value: str) -> None:
    assert details(v.label_value(value, "x")) == [LABEL_VALUE_MSG]


def test_label_value_length_is_in_bytes() -> None:
    assert details(v.label_value("a" * 64, "x")) == ["must be no more than 63 bytes"]
    # 32 two-byte characters: 32 characters, 64 bytes.
    assert details(v.label_value("é" * 32, "x")) == [
        "must be no more than 63 bytes",
        LABEL_VALUE_MSG,
    ]


def test_validate_labels() -> None:
    assert v.validate_labels({"app": "web", "example.com/tier": ""}, "metadata.labels") == []
    assert v.validate_labels(None, "metadata.labels") == []
    assert v.validate_labels({}, "metadata.labels") == []
    errs = v.validate_labels({"-bad": "ok", "good": "-bad-", "x/y/z": "v"}, "metadata.labels")
    # Upstream reports every label problem at the map's own path.
    assert strs(errs) == [
        f'metadata.labels: Invalid value: "-bad": {NAME_PART_MSG}',
        f'metadata.labels: Invalid value: "-bad-": {LABEL_VALUE_MSG}',
        f'metadata.labels: Invalid value: "x/y/z": {LABEL_KEY_SLASHES_MSG}',
    ]


def test_validate_labels_wrong_types() -> None:
    assert strs(v.validate_labels(["a"], "metadata.labels")) == [
        'metadata.labels: Invalid value: ["a"]: must be an object, not array'
    ]
    assert strs(v.validate_labels({"a": 1, 2: "b"}, "metadata.labels")) == [
        "metadata.labels[a]: Invalid value: 1: must be a string, not number",
        "metadata.labels: Invalid value: 2: must be a string, not number",
    ]


def test_validate_selector_map() -> None:
    assert v.validate_selector_map({"app": "web"}, "spec.selector") == []
    assert v.validate_selector_map(None, "spec.selector") == []
    assert strs(v.validate_selector_map({"app": "w b"}, "spec.selector")) == [
        f'spec.selector: Invalid value: "w b": {LABEL_VALUE_MSG}'
    ]


def test_validate_label_selector_good() -> None:
    good = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "tier", "operator": "NotIn", "values": [""]},
            {"key": "example.com/x", "operator": "Exists"},
            {"key": "y", "operator": "DoesNotExist", "values": []},
        ],
    }
    assert v.validate_label_selector(good, "spec.selector") == []
    assert v.validate_label_selector(None, "spec.selector") == []
    assert v.validate_label_selector({}, "spec.selector") == []


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        (
            {"key": "k", "operator": "In"},
            [
                "s.matchExpressions[0].values: Required value: must be specified when "
                "`operator` is 'In' or 'NotIn'"
            ],
        ),
        (
            {"key": "k", "operator": "NotIn", "values": []},
            [
                "s.matchExpressions[0].values: Required value: must be specified when "
                "`operator` is 'In' or 'NotIn'"
            ],
        ),
        (
            {"key": "k", "operator": "Exists", "values": ["x"]},
            [
                "s.matchExpressions[0].values: Forbidden: may not be specified when "
                "`operator` is 'Exists' or 'DoesNotExist'"
            ],
        ),
        (
            {"key": "k", "operator": "in", "values": ["x"]},
            ['s.matchExpressions[0].operator: Invalid value: "in": not a valid selector operator'],
        ),
        (
            {"key": "k"},
            ['s.matchExpressions[0].operator: Invalid value: "": not a valid selector operator'],
        ),
        (
            {"key": "-k", "operator": "In", "values": ["ok", "-no"]},
            [
                f's.matchExpressions[0].key: Invalid value: "-k": {NAME_PART_MSG}',
                f's.matchExpressions[0].values[1]: Invalid value: "-no": {LABEL_VALUE_MSG}',
            ],
        ),
        (
            {"operator": "Exists"},
            [
                's.matchExpressions[0].key: Invalid value: "": name part must be non-empty',
                f's.matchExpressions[0].key: Invalid value: "": {NAME_PART_MSG}',
            ],
        ),
    ],
)
def test_validate_label_selector_requirements(expr: dict[str, Any], expected: list[str]) -> None:
    assert strs(v.validate_label_selector({"matchExpressions": [expr]}, "s")) == expected


def test_validate_label_selector_ratcheting_and_match_labels() -> None:
    sel = {"matchExpressions": [{"key": "k", "operator": "In", "values": ["-no"]}]}
    assert v.validate_label_selector(sel, "s", allow_invalid_label_value=True) == []
    assert strs(v.validate_label_selector({"matchLabels": {"a": "-"}}, "s")) == [
        f's.matchLabels: Invalid value: "-": {LABEL_VALUE_MSG}'
    ]


def test_validate_label_selector_wrong_types() -> None:
    assert strs(v.validate_label_selector("app=web", "s")) == [
        's: Invalid value: "app=web": must be an object, not string'
    ]
    assert strs(v.validate_label_selector({"matchExpressions": {"k": 1}}, "s")) == [
        's.matchExpressions: Invalid value: {"k":1}: must be an array, not object'
    ]
    assert strs(v.validate_label_selector({"matchExpressions": [3]}, "s")) == [
        "s.matchExpressions[0]: Invalid value: 3: must be an object, not number"
    ]
    assert strs(
        v.validate_label_selector(
            {"matchExpressions": [{"key": "k", "operator": 1, "values": "x"}]}, "s"
        )
    ) == [
        's.matchExpressions[0].values: Invalid value: "x": must be an array, not string',
        "s.matchExpressions[0].operator: Invalid value: 1: must be a string, not number",
    ]


def test_validate_annotations() -> None:
    assert v.validate_annotations({"example.com/Some-Key": "any value at all!"}, "m") == []
    assert v.validate_annotations(None, "m") == []
    # Keys are compared in lower case: "A.B/C" is valid although "A.B" is not a subdomain.
    assert v.validate_annotations({"A.B/C": "x"}, "m") == []
    # Go's simple lower-case mapping: U+0130 lowers to a plain "i".
    assert v.validate_annotations({"\u0130": "x"}, "m") == []
    # The bad key is reported as written, not lower-cased.
    assert strs(v.validate_annotations({"Bad Key": "x"}, "metadata.annotations")) == [
        f'metadata.annotations: Invalid value: "Bad Key": {NAME_PART_MSG}'
    ]


def test_validate_annotations_total_size() -> None:
    limit = v.TOTAL_ANNOTATION_SIZE_LIMIT_BYTES
    assert v.validate_annotations({"k": "x" * (limit - 1)}, "metadata.annotations") == []
    errs = v.validate_annotations({"k": "x" * limit}, "metadata.annotations")
    assert strs(errs) == ["metadata.annotations: Too long: may not be more than 262144 bytes"]
    assert errs[0].type is ErrorType.TOO_LONG
    # Counted in bytes, over keys and values together.
    assert len(v.validate_annotations({"a": "é" * (limit // 4), "b": "é" * (limit // 4)}, "m")) == 1


# -- object names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "dns1035", "expected"),
    [
        ("web", True, []),
        ("web-1", False, []),
        ("web.example", False, []),
        ("", True, ["metadata.name: Required value: name or generateName is required"]),
        (None, False, ["metadata.name: Required value: name or generateName is required"]),
        ("1web", True, [f'metadata.name: Invalid value: "1web": {DNS1035_LABEL_MSG}']),
        (
            "web.example",
            True,
            [f'metadata.name: Invalid value: "web.example": {DNS1035_LABEL_MSG}'],
        ),
        ("Web", False, [f'metadata.name: Invalid value: "Web": {DNS1123_SUBDOMAIN_MSG}']),
        ("a" * 64, True, [f'metadata.name: Invalid value: "{"a" * 64}": ' + v.max_len_error(63)]),
        (12, False, ["metadata.name: Invalid value: 12: must be a string, not number"]),
    ],
)
def test_validate_object_name(value: Any, dns1035: bool, expected: list[str]) -> None:
    assert strs(v.validate_object_name(value, "metadata.name", dns1035=dns1035)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("default", []),
        ("kube-system", []),
        ("", ["metadata.namespace: Required value"]),
        (None, ["metadata.namespace: Required value"]),
        ("a.b", ['metadata.namespace: Invalid value: "a.b": must not contain dots']),
        ("Prod", [f'metadata.namespace: Invalid value: "Prod": {DNS1123_LABEL_MSG}']),
    ],
)
def test_validate_namespace_name(value: Any, expected: list[str]) -> None:
    assert strs(v.validate_namespace_name(value, "metadata.namespace")) == expected


# -- numbers and ports -------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 2, 1000, 16384, 32768, 65535])
def test_port_number_good(value: int) -> None:
    assert v.port_number(value, "x") == []


@pytest.mark.parametrize("value", [0, -1, 65536, 100000])
def test_port_number_bad(value: int) -> None:
    assert strs(v.port_number(value, "spec.ports[0].port")) == [
        f"spec.ports[0].port: Invalid value: {value}: {PORT_RANGE_MSG}"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("80", 'x: Invalid value: "80": must be an integer, not string'),
        (True, "x: Invalid value: true: must be an integer, not boolean"),
        (80.0, "x: Invalid value: 80.0: must be an integer, not number"),
        (None, "x: Invalid value: null: must be an integer, not null"),
    ],
)
def test_port_number_wrong_type(value: Any, expected: str) -> None:
    assert strs(v.port_number(value, "x")) == [expected]


def test_int_in_range_and_non_negative() -> None:
    assert v.int_in_range(5, "x", 5, 20) == []
    assert v.int_in_range(25, "x", 10, 25) == []
    assert strs(v.int_in_range(1, "x", 2, 10)) == [
        "x: Invalid value: 1: must be between 2 and 10, inclusive"
    ]
    assert strs(v.int_in_range(5, "x", -4, 2)) == [
        "x: Invalid value: 5: must be between -4 and 2, inclusive"
    ]
    assert v.non_negative(0, "x") == []
    assert strs(v.non_negative(-1, "metadata.generation")) == [
        "metadata.generation: Invalid value: -1: must be greater than or equal to 0"
    ]
    assert strs(v.non_negative("1", "x")) == [
        'x: Invalid value: "1": must be an integer, not string'
    ]


PORT_NAME_GOOD = ["telnet", "re-mail-ck", "pop3", "a", "a-1", "1-a", "a-1-b-2-c", "1-a-2-b-3"]
PORT_NAME_GOOD += ["a" * 15]


@pytest.mark.parametrize("value", PORT_NAME_GOOD)
def test_port_name_good(value: str) -> None:
    assert v.port_name(value, "x") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("longerthan15characters", ["must be no more than 15 bytes"]),
        ("", [PORT_CHARSET_MSG, PORT_LETTER_MSG]),
        ("a" * 16, ["must be no more than 15 bytes"]),
        ("12345", [PORT_LETTER_MSG]),
        ("1-2-3-4", [PORT_LETTER_MSG]),
        ("-begin", [PORT_EDGE_HYPHEN_MSG]),
        ("end-", [PORT_EDGE_HYPHEN_MSG]),
        ("two--hyphens", [PORT_DOUBLE_HYPHEN_MSG]),
        ("whois++", [PORT_CHARSET_MSG]),
        ("HTTP", [PORT_CHARSET_MSG, PORT_LETTER_MSG]),
        ("-", [PORT_LETTER_MSG, PORT_EDGE_HYPHEN_MSG]),
        (
            "--Bad-Port-Name--",
            [
                "must be no more than 15 bytes",
                PORT_CHARSET_MSG,
                PORT_DOUBLE_HYPHEN_MSG,
                PORT_EDGE_HYPHEN_MSG,
            ],
        ),
    ],
)
def test_port_name_bad(value: str, expected: list[str]) -> None:
    errs = v.port_name(value, "spec.ports[0].targetPort")
    assert details(errs) == expected
    assert all(
        str(e).startswith(f"spec.ports[0].targetPort: Invalid value: {v_q(value)}: ") for e in errs
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (8080, []),
        ("http", []),
        (0, [f"p: Invalid value: 0: {PORT_RANGE_MSG}"]),
        (70000, [f"p: Invalid value: 70000: {PORT_RANGE_MSG}"]),
        # A string is a name, even when it looks like a number (IntOrString).
        ("8080", [f'p: Invalid value: "8080": {PORT_LETTER_MSG}']),
        (
            "",
            [
                f'p: Invalid value: "": {PORT_CHARSET_MSG}',
                f'p: Invalid value: "": {PORT_LETTER_MSG}',
            ],
        ),
        (None, ["p: Invalid value: null: must be an integer or a string, not null"]),
        (False, ["p: Invalid value: false: must be an integer or a string, not boolean"]),
        (8.5, ["p: Invalid value: 8.5: must be an integer or a string, not number"]),
    ],
)
def test_int_or_string_port(value: Any, expected: list[str]) -> None:
    assert strs(v.int_or_string_port(value, "p")) == expected


def test_one_of() -> None:
    supported = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]
    assert v.one_of("NodePort", "spec.type", supported) == []
    assert v.one_of(None, "spec.type", supported) == []
    assert strs(v.one_of("Nodeport", "spec.type", supported)) == [
        'spec.type: Unsupported value: "Nodeport": supported values: "ClusterIP", '
        '"ExternalName", "LoadBalancer", "NodePort"'
    ]
    assert strs(v.one_of("", "spec.type", supported, required=True)) == [
        "spec.type: Required value"
    ]
    assert strs(v.one_of(None, "spec.type", supported, required=True)) == [
        "spec.type: Required value"
    ]
    assert strs(v.one_of("", "spec.type", ["TCP"])) == [
        'spec.type: Unsupported value: "": supported values: "TCP"'
    ]
    assert strs(v.one_of(["TCP"], "p", ["TCP"])) == [
        'p: Unsupported value: ["TCP"]: supported values: "TCP"'
    ]


# -- IP addresses ------------------------------------------------------------------------

# (input, error with default (legacy) validation, error with strict validation), from
# ip_test.go's TestIsValidIP (legacyErr / legacyStrictErr).
IP_CASES = [
    ("1.2.3.4", None, None),
    ("0.0.0.0", None, None),
    ("255.255.255.255", None, None),
    ("1234::abcd", None, None),
    ("::", None, None),
    ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None, None),
    ("0:0:0:0:0:0:0:0", None, None),  # non-canonical, still valid for legacy fields
    ("0001:002:03:4::", None, None),
    ("1234::ABCD", None, None),
    ("1.1.1.01", None, "must not have leading 0s"),
    ("010.000.001.002", None, "must not have leading 0s"),
    ("00001::", None, "must not have leading 0s"),  # five hex digits
    ("::ffff:1.1.1.1", None, "must not be an IPv4-mapped IPv6 address"),
    ("::ffff:01.1.1.1", None, "must not have leading 0s"),
    ("", IP_MSG, IP_MSG),
    ("aaaaaaa", IP_MSG, IP_MSG),
    ("myhost.mydomain", IP_MSG, IP_MSG),
    ("1.2.3.0/24", IP_MSG, IP_MSG),
    ("1.2.3.400", IP_MSG, IP_MSG),
    ("-1.0.0.0", IP_MSG, IP_MSG),
    ("2001:db8::10005", IP_MSG, IP_MSG),
    ("1.2.3.4:80", IP_MSG, IP_MSG),
    ("[2001:db8::1]", IP_MSG, IP_MSG),
    ("[2001:db8::1]:80", IP_MSG, IP_MSG),
    ("example.com:80", IP_MSG, IP_MSG),
    ("1234::abcd%eth0", IP_MSG, IP_MSG),
    ("169.254.0.0%eth0", IP_MSG, IP_MSG),
    (" 1.2.3.4", IP_MSG, IP_MSG),
    ("1.2.3", IP_MSG, IP_MSG),
    ("1.2.3.4.5", IP_MSG, IP_MSG),
    ("1:2:3:4:5:6:7:8::", IP_MSG, IP_MSG),
    ("1::2::3", IP_MSG, IP_MSG),
    (":1::", IP_MSG, IP_MSG),
    ("\uff11.2.3.4", IP_MSG, IP_MSG),  # a full-width digit is not a digit
]


@pytest.mark.parametrize(("value", "legacy", "strict"), IP_CASES)
def test_ip_address(value: str, legacy: str | None, strict: str | None) -> None:
    path = "spec.externalIPs[0]"
    assert strs(v.ip_address(value, path)) == (
        [] if legacy is None else [f"{path}: Invalid value: {v_q(value)}: {legacy}"]
    )
    assert strs(v.ip_address(value, path, strict=True)) == (
        [] if strict is None else [f"{path}: Invalid value: {v_q(value)}: {strict}"]
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("010.001.002.003", "10.1.2.3"),  # decimal, not octal
        ("::ffff:1.2.3.4", "1.2.3.4"),  # Go's net.IP: an IPv4-mapped address is IPv4
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("1::1.2.3.4", "1::102:304"),
        ("bad", None),
        (7, None),
    ],
)
def test_parse_ip(text: Any, expected: str | None) -> None:
    got = v.parse_ip(text)
    assert (None if got is None else str(got)) == expected


@pytest.mark.parametrize(
    ("value", "family", "expected"),
    [
        ("10.0.0.1", "IPv4", None),
        ("010.0.0.1", "IPv4", None),
        ("::ffff:10.0.0.1", "IPv4", None),  # IPv4 to Go's net.IP
        ("2001:db8::1", "IPv6", None),
        ("::", "IPv6", None),
        ("2001:db8::1", "IPv4", "must be a valid IPv4 address"),
        ("10.0.0.1", "IPv6", "must be a valid IPv6 address"),
        ("::ffff:10.0.0.1", "IPv6", "must be a valid IPv6 address"),
        ("nope", "IPv4", "must be a valid IPv4 address"),
        ("nope", "IPv6", "must be a valid IPv6 address"),
    ],
)
def test_ip_address_family(value: str, family: Any, expected: str | None) -> None:
    assert strs(v.ip_address_family(value, "a", family)) == (
        [] if expected is None else [f"a: Invalid value: {v_q(value)}: {expected}"]
    )


def test_ip_address_family_rejects_unknown_family() -> None:
    with pytest.raises(ValueError, match="unknown IP family"):
        v.ip_address_family("1.2.3.4", "a", "IPv5")  # type: ignore[arg-type]


# (input, legacy error, strict error), from ip_test.go's TestIsValidCIDR.
CIDR_CASES = [
    ("1.0.0.0/8", None, None),
    ("0.0.0.0/0", None, None),
    ("1.1.1.1/32", None, None),
    ("2001:4860:4860::/48", None, None),
    ("::/0", None, None),
    ("::1/128", None, None),
    ("2a00:79e0:2:0::/64", None, None),
    ("2001:DB8::/64", None, None),
    ("1.1.01.0/24", None, "must not have leading 0s in IP or prefix length"),
    ("::ffff:1.1.1.0/24", None, "must not have an IPv4-mapped IPv6 address"),
    ("::ffff:1.1.1.0/120", None, "must not have an IPv4-mapped IPv6 address"),
    ("1.2.3.4/24", None, "must not have bits set beyond the prefix length"),
    ("2001:db8::1/64", None, "must not have bits set beyond the prefix length"),
    ("192.168.0.0/016", None, "must not have leading 0s in IP or prefix length"),
    ("192.168.0.0/0016", None, "must not have leading 0s in IP or prefix length"),
    ("", CIDR_MSG, CIDR_MSG),
    ("aaaaaaa", CIDR_MSG, CIDR_MSG),
    ("1.2.3.4", CIDR_MSG, CIDR_MSG),
    ("192.168.0.1/healthz", CIDR_MSG, CIDR_MSG),
    ("192.168.0.1/0/99", CIDR_MSG, CIDR_MSG),
    ("192.168.0.0/-16", CIDR_MSG, CIDR_MSG),
    ("192.168.0.0/+16", CIDR_MSG, CIDR_MSG),
    ("192.168.0.0/33", CIDR_MSG, CIDR_MSG),
    ("::/129", CIDR_MSG, CIDR_MSG),
    ("10.0.0.0/", CIDR_MSG, CIDR_MSG),
    (" 10.0.0.0/8", CIDR_MSG, CIDR_MSG),  # upstream trims source ranges before this
    ("fe80::/10%eth0", CIDR_MSG, CIDR_MSG),
]


@pytest.mark.parametrize(("value", "legacy", "strict"), CIDR_CASES)
def test_cidr(value: str, legacy: str | None, strict: str | None) -> None:
    path = "spec.loadBalancerSourceRanges[0]"
    assert strs(v.cidr(value, path)) == (
        [] if legacy is None else [f"{path}: Invalid value: {v_q(value)}: {legacy}"]
    )
    assert strs(v.cidr(value, path, strict=True)) == (
        [] if strict is None else [f"{path}: Invalid value: {v_q(value)}: {strict}"]
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("010.0.0.0/08", "10.0.0.0/8"),
        ("2001:db8::1/64", "2001:db8::/64"),
        ("::ffff:192.12.2.0/120", "192.12.2.0/24"),
        ("::ffff:1.1.1.0/24", "::/24"),
        ("1.2.3.4", None),
        (None, None),
    ],
)
def test_parse_cidr(text: Any, expected: str | None) -> None:
    got = v.parse_cidr(text)
    assert (None if got is None else str(got)) == expected


UNSPEC = "may not be unspecified ({})"
LOOPBACK = "may not be in the loopback range (127.0.0.0/8, ::1/128)"
LINK_LOCAL = "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
LL_MULTICAST = "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.1.2.3", []),
        ("2001:db8::1", []),
        ("8.8.8.8", []),
        ("224.0.1.1", []),  # global multicast is allowed (an upstream quirk)
        ("ff05::1", []),
        ("0.0.0.0", [UNSPEC.format("0.0.0.0")]),
        ("::", [UNSPEC.format("::")]),
        ("0:0::0", [UNSPEC.format("0:0::0")]),
        ("127.0.0.1", [LOOPBACK]),
        ("127.255.1.2", [LOOPBACK]),
        ("::1", [LOOPBACK]),
        ("::ffff:127.0.0.1", [LOOPBACK]),
        ("169.254.169.254", [LINK_LOCAL]),
        ("fe80::1", [LINK_LOCAL]),
        ("febf::1", [LINK_LOCAL]),
        ("224.0.0.251", [LL_MULTICAST]),
        ("ff02::1", [LL_MULTICAST]),
        ("ff32::1", [LL_MULTICAST]),  # any flags: Go checks ff?2::/16
        ("not-an-ip", ["must be a valid IP address"]),
        ("", ["must be a valid IP address"]),
    ],
)
def test_endpoint_ip(value: str, expected: list[str]) -> None:
    path = "endpoints[0].addresses[0]"
    assert strs(v.endpoint_ip(value, path)) == [
        f"{path}: Invalid value: {v_q(value)}: {msg}" for msg in expected
    ]


# -- wrong types, never raising ----------------------------------------------------------

STRING_VALIDATORS: list[Callable[[Any, str], list[FieldError]]] = [
    v.dns1123_label,
    v.dns1123_subdomain,
    v.dns1035_label,
    v.fqdn,
    v.qualified_name,
    v.label_value,
    v.port_name,
    v.ip_address,
    v.cidr,
    v.endpoint_ip,
]


@pytest.mark.parametrize("fn", STRING_VALIDATORS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("value", "type_name"),
    [(80, "number"), (1.5, "number"), (None, "null"), (True, "boolean"), ([1], "array")],
)
def test_string_validators_reject_other_types(
    fn: Callable[[Any, str], list[FieldError]], value: Any, type_name: str
) -> None:
    errs = fn(value, "f")
    assert len(errs) == 1
    assert errs[0].type is ErrorType.INVALID
    assert errs[0].detail == f"must be a string, not {type_name}"
    assert errs[0].value == value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
anything = st.one_of(
    json_values,
    st.text(alphabet="0123456789abcdefABCDEF:./%-_ ", max_size=45),
    st.dictionaries(st.none() | st.booleans() | st.integers() | st.text(), json_values, max_size=3),
    st.builds(object),
    st.binary(max_size=5),
    st.tuples(st.integers(), st.text(max_size=3)),
)

ALL_VALIDATORS: list[Callable[[Any, str], list[FieldError]]] = [
    *STRING_VALIDATORS,
    v.port_number,
    v.int_or_string_port,
    v.non_negative,
    v.validate_labels,
    v.validate_selector_map,
    v.validate_annotations,
    v.validate_label_selector,
    v.validate_namespace_name,
    lambda x, p: v.validate_object_name(x, p),
    lambda x, p: v.validate_object_name(x, p, dns1035=True),
    lambda x, p: v.ip_address(x, p, strict=True),
    lambda x, p: v.cidr(x, p, strict=True),
    lambda x, p: v.ip_address_family(x, p, "IPv4"),
    lambda x, p: v.ip_address_family(x, p, "IPv6"),
    lambda x, p: v.int_in_range(x, p, 0, 10),
    lambda x, p: v.one_of(x, p, ["a", "b"]),
    lambda x, p: v.one_of(x, p, ["a"], required=True),
]


@settings(max_examples=300, deadline=None)
@given(value=anything)
def test_every_validator_returns_a_list_and_never_raises(value: Any) -> None:
    for fn in ALL_VALIDATORS:
        errs = fn(value, "spec.x")
        assert isinstance(errs, list)
        for e in errs:
            assert isinstance(e, FieldError)
            assert isinstance(str(e), str)
    assert v.parse_ip(value) is None or isinstance(value, str)
    assert v.parse_cidr(value) is None or isinstance(value, str)


@settings(max_examples=150, deadline=None)
@given(
    selector=st.dictionaries(
        st.sampled_from(["matchLabels", "matchExpressions", "other"]),
        st.one_of(
            json_values,
            st.lists(
                st.dictionaries(
                    st.sampled_from(["key", "operator", "values"]), json_values, max_size=3
                ),
                max_size=3,
            ),
        ),
        max_size=3,
    )
)
def test_label_selector_never_raises(selector: dict[str, Any]) -> None:
    assert isinstance(v.validate_label_selector(selector, "s"), list)


# -- the sloppy parser agrees with a strict one wherever the strict one accepts -------------

_group = st.text(alphabet="0123456789abcdefF", max_size=5)
_dotted = st.lists(st.text(alphabet="0123456789", max_size=4), min_size=3, max_size=5).map(".".join)
_ip_like = st.one_of(
    _dotted, st.lists(st.one_of(_group, _dotted), min_size=1, max_size=10).map(":".join)
)


@settings(max_examples=400, deadline=None)
@given(text=_ip_like)
def test_sloppy_parser_matches_strict_parser(text: str) -> None:
    try:
        strict: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(text)
    except ValueError:
        strict = None
    sloppy_ok = v.ip_address(text, "x") == []
    strict_ok = v.ip_address(text, "x", strict=True) == []
    if strict is not None:
        # What a strict parser accepts, the API server accepts, as the same address.
        assert sloppy_ok
        got = v.parse_ip(text)
        mapped = strict.ipv4_mapped if isinstance(strict, ipaddress.IPv6Address) else None
        assert got == (mapped or strict)
        assert strict_ok == (mapped is None)
    elif sloppy_ok:
        # Accepted only by the sloppy parser: strict validation must say why.
        assert details(v.ip_address(text, "x", strict=True)) == ["must not have leading 0s"]


@settings(max_examples=300, deadline=None)
@given(addr=st.ip_addresses())
def test_every_address_form_parses(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    for text in {str(addr), addr.exploded, addr.exploded.upper()}:
        assert v.ip_address(text, "x") == []
        expected = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
        assert v.parse_ip(text) == (expected or addr)


def test_all_is_sorted_and_complete() -> None:
    assert v.__all__ == sorted(v.__all__)
    assert all(hasattr(v, name) for name in v.__all__)
