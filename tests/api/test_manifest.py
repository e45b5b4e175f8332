"""Manifest reading and writing: kservice.api.manifest."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kservice.api import manifest
from kservice.api.endpointslice import EndpointSlice
from kservice.api.manifest import (
    LoadError,
    SkippedDocument,
    UnknownKindError,
    dump,
    dump_file,
    load,
    load_text,
    read,
    read_text,
)
from kservice.api.node import Node
from kservice.api.pod import Pod
from kservice.api.service import Service
from kservice.errors import KServiceError, ManifestError, ValidationError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def service(name: str = "web", namespace: str = "default", port: int = 80) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Service
        metadata:
          name: {name}
          namespace: {namespace}
        spec:
          selector:
            app: {name}
          ports:
            - name: http
              port: {port}
              targetPort: 8080
        """
    )


def service_dict(name: str = "web", namespace: str = "default", port: int = 80) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": 8080}]},
    }


POD = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Pod
    metadata:
      name: web-0
      labels:
        app: web
    spec:
      nodeName: node-a
      containers:
        - name: web
          image: nginx:1.27
          ports:
            - name: http
              containerPort: 8080
    status:
      phase: Running
      podIP: 10.244.1.5
    """
)

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n"


def load_error(source: Any, **kwargs: Any) -> LoadError:
    with pytest.raises(LoadError) as info:
        if isinstance(source, str) and "\n" in source:
            load_text(source, **kwargs)
        else:
            load(source, **kwargs)
    return info.value


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- the registry -----------------------------------------------------------------------


def test_kinds_registry() -> None:
    assert manifest.kinds() == {
        ("", "Service"): Service,
        ("discovery.k8s.io", "EndpointSlice"): EndpointSlice,
        ("", "Pod"): Pod,
        ("", "Node"): Node,
    }
    # A fresh copy each time: callers cannot break the loader.
    manifest.kinds().clear()
    assert len(manifest.kinds()) == 4


# -- YAML -------------------------------------------------------------------------------


def test_multi_document_yaml_with_comments_and_empty_documents() -> None:
    text = (
        "# leading comment\n"
        "---\n" + service("a") + "---\n"
        "---\n"
        "# a document holding only a comment\n"
        "---\n" + POD + "...\n"
    )
    result = read_text(text, source="cluster.yaml")
    assert [(o.KIND, o.metadata.name) for o in result.objects] == [
        ("Service", "a"),
        ("Pod", "web-0"),
    ]
    # Document indices count empty documents, as YAML does (a leading comment
    # is not a document; the first --- starts document 0).
    assert result.locations == ("cluster.yaml, document 0", "cluster.yaml, document 3")
    assert result.skipped == ()


def test_empty_text_and_blank_documents() -> None:
    assert load_text("") == []
    assert load_text("# nothing here\n") == []
    assert load_text("---\n---\n") == []


def test_yaml_keeps_timestamps_as_text() -> None:
    text = service().replace(
        "metadata:\n", "metadata:\n  creationTimestamp: 2024-05-01T10:00:00Z\n"
    )
    (svc,) = load_text(text)
    assert svc.metadata.creation_timestamp == "2024-05-01T10:00:00Z"
    assert load_text(dump([svc])) == [svc]


def test_yaml_anchors_and_aliases() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          labels: &labels
            app: web
        spec:
          selector: *labels
          ports:
            - port: 80
        """
    )
    (svc,) = load_text(text)
    assert isinstance(svc, Service)
    assert dict(svc.selector) == {"app": "web"} == dict(svc.metadata.labels)


def test_yaml_scalar_keys_become_strings() -> None:
    # Kubernetes converts YAML to JSON: the label key 80 becomes "80".
    text = service().replace("metadata:\n", "metadata:\n  annotations:\n    80: http\n")
    (svc,) = load_text(text)
    assert dict(svc.metadata.annotations) == {"80": "http"}


# -- JSON -------------------------------------------------------------------------------


def test_json_object() -> None:
    (svc,) = load_text(json.dumps(service_dict(), indent=2))
    assert isinstance(svc, Service)
    assert svc.metadata.name == "web"


def test_json_single_line_is_text_not_a_path() -> None:
    (svc,) = load(json.dumps(service_dict()))
    assert svc.metadata.name == "web"


def test_json_stream() -> None:
    text = json.dumps(service_dict("a")) + "\n" + json.dumps(service_dict("b"), indent=1)
    assert [o.metadata.name for o in load_text(text)] == ["a", "b"]


def test_json_file(tmp_path: Path) -> None:
    path = write(tmp_path / "svc.json", json.dumps(service_dict()))
    (svc,) = load(path)
    assert svc.metadata.name == "web"


def test_bad_json_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", '{\n  "apiVersion": "v1",\n  "kind" "Service"\n}\n')
    (err,) = load_error(path).errors
    assert isinstance(err, ManifestError)
    assert (err.source, err.document) == (str(path), 0)
    assert str(err) == (
        f"{path}, document 0: invalid JSON: line 3, column 10: Expecting ':' delimiter"
    )


def test_yaml_flow_mapping_that_is_not_json() -> None:
    text = "{apiVersion: v1, kind: Service, metadata: {name: web}, spec: {ports: [{port: 80}]}}"
    (svc,) = load_text(text)
    assert svc.metadata.name == "web"


# -- lists ------------------------------------------------------------------------------


def test_kind_list() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [service_dict("a"), service_dict("b", "staging")],
    }
    result = read_text(json.dumps(doc), source="list.json")
    assert [(o.metadata.namespace, o.metadata.name) for o in result.objects] == [
        ("default", "a"),
        ("staging", "b"),
    ]
    assert result.locations == (
        "list.json, document 0, items[0]",
        "list.json, document 0, items[1]",
    )


def test_typed_list_items_take_kind_and_api_version_from_the_list() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: ServiceList
        items:
          - metadata: {name: a}
            spec: {ports: [{port: 80}]}
          - apiVersion: v1
            kind: Service
            metadata: {name: b}
            spec: {ports: [{port: 81}]}
        """
    )
    objs = load_text(text)
    assert [(o.KIND, o.metadata.name) for o in objs] == [("Service", "a"), ("Service", "b")]


def test_typed_list_of_endpointslices() -> None:
    doc = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSliceList",
        "items": [
            {
                "metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.1.5"]}],
                "ports": [{"name": "http", "port": 8080}],
            }
        ],
    }
    (eps,) = load_text(json.dumps(doc))
    assert isinstance(eps, EndpointSlice)


def test_empty_lists() -> None:
    assert load_text("apiVersion: v1\nkind: List\nitems: []\n") == []
    assert load_text("apiVersion: v1\nkind: ServiceList\nitems:\n") == []
    assert load_text("apiVersion: v1\nkind: List\n") == []


def test_list_problems_name_the_item() -> None:
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: List
        items:
          - 42
          - metadata: {name: x}
          - apiVersion: v1
            kind: Namespace
            metadata: {name: prod}
        """
    )
    errors = load_error(text).errors
    assert [str(e) for e in errors[:2]] == [
        "<text>, document 0: items[0]: not an object: number",
        "<text>, document 0: items[1]: apiVersion not set, kind not set",
    ]
    assert isinstance(errors[2], UnknownKindError)
    assert str(errors[2]).startswith(
        '<text>, document 0: items[2]: unknown kind "Namespace" (apiVersion "v1")'
    )
    bad = load_error("apiVersion: v1\nkind: List\nitems: {a: 1}\n").errors
    assert [str(e) for e in bad] == ["<text>, document 0: items: must be an array, not object"]


def test_invalid_object_in_a_list_names_the_item() -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [service_dict("a"), service_dict("b", port=0)],
    }
    (err,) = load_error(json.dumps(doc)).errors
    assert isinstance(err, ValidationError)
    assert err.source == "<text>, document 0, items[1]"


# -- folders and paths ------------------------------------------------------------------


def test_directory_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "b.yaml", service("b"))
    write(tmp_path / "a.yml", service("a"))
    write(tmp_path / "sub" / "deeper" / "c.json", json.dumps(service_dict("c")))
    write(tmp_path / "sub" / "d.YAML", service("d"))
    write(tmp_path / "README.md", "not: a manifest\n")
    write(tmp_path / "notes.txt", "- nor this\n")
    result = read(tmp_path)
    # Sorted as a directory walk visits them: by path component.
    assert [o.metadata.name for o in result.objects] == ["a", "b", "d", "c"]
    assert result.files == tuple(
        str(tmp_path / p) for p in ("a.yml", "b.yaml", "sub/d.YAML", "sub/deeper/c.json")
    )


def test_sources_are_named_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "cluster" / "web.yaml", service())
    monkeypatch.chdir(tmp_path)
    assert read("cluster").locations == ("cluster/web.yaml, document 0",)
    assert read("cluster/web.yaml").locations == ("cluster/web.yaml, document 0",)


def test_path_types_and_lists_of_paths(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", service("a"))
    b = write(tmp_path / "dir" / "b.yaml", service("b"))
    assert [o.metadata.name for o in load(str(a))] == ["a"]
    assert [o.metadata.name for o in load(a)] == ["a"]
    assert [o.metadata.name for o in load([b.parent, a])] == ["b", "a"]
    assert [o.metadata.name for o in load((str(a),))] == ["a"]


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", service("a"))
    assert [o.metadata.name for o in load([tmp_path, a, str(a)])] == ["a"]


def test_text_detection_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A str is text when blank, multi-line, or starting like a manifest ...
    assert [o.metadata.name for o in load(service())] == ["web"]
    assert load("") == []
    assert load("   ") == []
    # ... unless a path of that name exists.
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "kind: odd.yaml", service("odd"))
    assert [o.metadata.name for o in load("kind: odd.yaml")] == ["odd"]
    # Anything else is a path.
    (err,) = load_error("missing.yaml").errors
    assert str(err) == "missing.yaml: no such file or directory"


def test_unsupported_source_types() -> None:
    with pytest.raises(TypeError):
        load(b"apiVersion: v1\n")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        load([42])  # type: ignore[list-item]


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "README.md", "# nothing\n")
    (err,) = load_error(tmp_path).errors
    assert str(err) == f"{tmp_path}: no manifest files (*.json, *.yaml, *.yml) in directory"


def test_unreadable_and_undecodable_files(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    data = b"apiVersion: v1\nkind: Service\nmetadata:\n  name: caf\xe9\n"
    latin1.write_bytes(data)
    (err,) = load_error(latin1).errors
    assert str(err) == f"{latin1}: not UTF-8 text: invalid byte at offset {data.index(0xE9)}"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + service().encode())
    assert len(load(path)) == 1


# -- errors -----------------------------------------------------------------------------


def test_bad_yaml_names_file_document_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bad.yaml",
        service("a") + "---\n" + "apiVersion: v1\nkind: Service\nmetadata:\n  name: [b\n",
    )
    (err,) = load_error(path).errors
    assert isinstance(err, ManifestError)
    assert (err.source, err.document) == (str(path), 1)
    assert str(err).startswith(f"{path}, document 1: invalid YAML: line 18, column 1: ")


def test_bad_yaml_after_an_invalid_document_reports_both(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", service("a", port=0) + "---\nkey: [unclosed\n")
    first, second = load_error(path).errors
    assert isinstance(first, ValidationError)
    assert first.source == f"{path}, document 0"
    assert isinstance(second, ManifestError)
    assert second.document == 1
    assert "invalid YAML: line " in str(second)


def test_yaml_tab_indentation_error() -> None:
    (err,) = load_error("apiVersion: v1\nkind: Service\nmetadata:\n\tname: web\n").errors
    assert str(err).startswith("<text>, document 0: invalid YAML: line 4, column 1: ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "not an object: array"),
        ("just a string\n", "not an object: string"),
        ("42\n", "not an object: number"),
        ("metadata: {name: x}\n", "apiVersion not set, kind not set"),
        ("apiVersion: v1\nmetadata: {name: x}\n", "kind not set"),
        ("kind: Service\nmetadata: {name: x}\n", "apiVersion not set"),
        ('apiVersion: v1\nkind: ""\n', "kind not set"),
        ("apiVersion: 1\nkind: Service\n", "apiVersion must be a string"),
        ("apiVersion: v1\nkind: [Service]\n", "kind must be a string"),
    ],
)
def test_documents_that_are_not_objects(text: str, message: str) -> None:
    (err,) = load_error(text).errors
    assert type(err) is ManifestError
    assert str(err) == f"<text>, document 0: {message}"


def test_unknown_kind_is_an_error() -> None:
    (err,) = load_error(service() + "---\n" + NAMESPACE).errors
    assert isinstance(err, UnknownKindError)
    assert (err.kind, err.api_version, err.document) == ("Namespace", "v1", 1)
    assert str(err) == (
        '<text>, document 1: unknown kind "Namespace" (apiVersion "v1"); kservice reads '
        "Service (v1), EndpointSlice (discovery.k8s.io/v1), Pod (v1), Node (v1)"
    )


def test_unknown_kind_suggests_the_right_spelling() -> None:
    (err,) = load_error(service().replace("kind: Service", "kind: service")).errors
    assert 'unknown kind "service" (apiVersion "v1"); did you mean "Service"?' in str(err)


def test_skip_unknown() -> None:
    knative = (
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: hello\n"
        "spec: {template: {}}\n"
    )
    text = NAMESPACE + "---\n" + service() + "---\n" + knative
    result = read_text(text, source="all.yaml", skip_unknown=True)
    assert [o.KIND for o in result.objects] == ["Service"]
    assert result.skipped == (
        SkippedDocument("all.yaml, document 0", "v1", "Namespace", "production"),
        SkippedDocument("all.yaml, document 2", "serving.knative.dev/v1", "Service", "hello"),
    )
    assert str(result.skipped[0]) == 'all.yaml, document 0: Namespace "production" (v1)'
    assert [o.KIND for o in load_text(text, skip_unknown=True)] == ["Service"]
    # A document without a name is still skipped, named "".
    (skipped,) = read_text("apiVersion: apps/v1\nkind: Deployment\n", skip_unknown=True).skipped
    assert skipped.name == ""


@pytest.mark.parametrize("skip_unknown", [False, True])
def test_unsupported_api_version_of_a_known_kind(skip_unknown: bool) -> None:
    text = textwrap.dedent(
        """\
        apiVersion: discovery.k8s.io/v1beta1
        kind: EndpointSlice
        metadata: {name: web-abc}
        addressType: IPv4
        endpoints: []
        """
    )
    (err,) = load_error(text, skip_unknown=skip_unknown).errors
    assert type(err) is ManifestError
    assert str(err) == (
        '<text>, document 0: unsupported apiVersion "discovery.k8s.io/v1beta1" for '
        'EndpointSlice: kservice reads "discovery.k8s.io/v1"'
    )
    (err,) = load_error(service().replace("apiVersion: v1", "apiVersion: v2")).errors
    assert str(err) == (
        '<text>, document 0: unsupported apiVersion "v2" for Service: kservice reads "v1"'
    )


def test_validation_errors_get_their_source(tmp_path: Path) -> None:
    path = write(tmp_path / "svc.yaml", POD + "---\n---\n" + service(port=0))
    (err,) = load_error(path).errors
    assert isinstance(err, ValidationError)
    assert err.source == f"{path}, document 2"
    assert err.lines() == [
        f'{path}, document 2: The Service "web" is invalid: spec.ports[0].port: '
        "Invalid value: 0: must be between 1 and 65535, inclusive"
    ]


def test_duplicates_name_both_places(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", service("web", "prod") + "---\n" + POD)
    b = write(tmp_path / "b.yaml", POD + "---\n" + service("web", "prod"))
    errors = load_error([a, b]).errors
    assert [str(e) for e in errors] == [
        f'{b}, document 0: duplicate Pod "default/web-0": already defined at {a}, document 1',
        f'{b}, document 1: duplicate Service "prod/web": already defined at {a}, document 0',
    ]


def test_duplicate_cluster_scoped_objects() -> None:
    node = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n"
    (err,) = load_error(node + "---\n" + node).errors
    assert str(err) == (
        '<text>, document 1: duplicate Node "node-a": already defined at <text>, document 0'
    )


def test_same_name_in_other_namespace_or_kind_is_fine() -> None:
    eps = textwrap.dedent(
        """\
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: web
          labels: {kubernetes.io/service-name: web}
        addressType: IPv4
        endpoints: []
        """
    )
    objs = load_text(service("web") + "---\n" + service("web", "staging") + "---\n" + eps)
    assert len(objs) == 3


def test_all_errors_are_collected_across_files(tmp_path: Path) -> None:
    write(tmp_path / "1-bad-yaml.yaml", service("a") + "---\nmetadata: {name: [\n")
    write(tmp_path / "2-invalid.yaml", service("b", port=70000) + "---\n" + service("c", port=0))
    write(tmp_path / "3-unknown.json", json.dumps({"apiVersion": "v1", "kind": "ConfigMap"}))
    write(tmp_path / "4-good.yaml", service("d"))
    err = load_error([tmp_path, tmp_path / "missing.yaml"])
    where = [
        (Path(e.source or "").name, e.document)
        if isinstance(e, ManifestError)
        else (e.source, None)
        for e in err.errors
    ]
    assert where == [
        ("1-bad-yaml.yaml", 1),
        (f"{tmp_path / '2-invalid.yaml'}, document 0", None),
        (f"{tmp_path / '2-invalid.yaml'}, document 1", None),
        ("3-unknown.json", 0),
        ("missing.yaml", None),
    ]
    lines = err.lines()
    assert len(lines) == 5
    assert str(err) == "\n".join(lines)
    assert lines[1].endswith(
        "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
    )


def test_load_error_lists_one_line_per_field_error() -> None:
    text = service("a", port=0).replace("targetPort: 8080", "targetPort: 0\n      protocol: FTP")
    err = load_error(text + "---\n" + NAMESPACE)
    invalid, unknown = err.errors
    assert isinstance(invalid, ValidationError)
    assert len(invalid.errors) >= 2
    assert len(err.lines()) == len(invalid.errors) + 1
    assert all(line.startswith("<text>, document ") for line in err.lines())
    assert isinstance(unknown, UnknownKindError)


def test_errors_are_kservice_errors_and_value_errors() -> None:
    err = load_error("- 1\n")
    assert isinstance(err, ManifestError)
    assert isinstance(err, KServiceError)
    assert isinstance(err, ValueError)


def test_errors_pickle() -> None:
    err = load_error(service(port=0) + "---\n" + NAMESPACE + "---\n- 1\n")
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is LoadError
    assert str(copy) == str(err)
    assert [type(e) for e in copy.errors] == [ValidationError, UnknownKindError, ManifestError]
    unknown = copy.errors[1]
    assert isinstance(unknown, UnknownKindError)
    assert (unknown.kind, unknown.api_version, unknown.document) == ("Namespace", "v1", 1)


# -- documents that are not plain JSON data ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: Service\nmetadata: !!binary aGVsbG8=\n", "metadata: unsupported"),
        ("apiVersion: v1\nkind: Service\nmetadata: !!set {a}\n", "metadata: unsupported"),
        ("apiVersion: v1\nkind: Service\nx: !!timestamp 2024-01-01\n", "x: unsupported"),
        ("apiVersion: v1\nkind: Service\nx: &a [*a]\n", "x[0]: recursive YAML alias"),
        ("apiVersion: v1\nkind: Service\n? [a]\n: 1\n", "invalid YAML"),
        ("apiVersion: v1\nkind: Service\nx: " + "[" * 150 + "]" * 150 + "\n", "levels deep"),
        ('{"kind": "Service", "x": ' + "[" * 150 + "]" * 150 + "}", "levels deep"),
    ],
)
def test_values_json_cannot_hold_are_errors(text: str, message: str) -> None:
    (err,) = load_error(text).errors
    assert type(err) is ManifestError
    assert message in str(err)


def test_billion_laughs_is_refused() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    text = "\n".join(lines) + "\napiVersion: v1\nkind: Service\nmetadata:\n  name: *a9\n"
    (err,) = load_error(text).errors
    assert "YAML aliases expand to more than 100000 nodes" in str(err)


def test_very_deep_nesting_is_an_error_not_a_crash() -> None:
    for text in ("[" * 5000 + "]" * 5000, "{" + '"a": {' * 5000 + "}" * 5001, "a:\n" + "[" * 5000):
        with pytest.raises(LoadError):
            load_text(text)


# -- writing ----------------------------------------------------------------------------


def example_objects() -> list[Any]:
    return load(EXAMPLES)


def test_dump_yaml_round_trip() -> None:
    objs = example_objects()
    text = dump(objs)
    assert load_text(text) == objs
    assert text.count("\n---\n") == len(objs) - 1
    assert not text.startswith("---")
    # Keys keep to_manifest's order; block style throughout.
    first = text.split("---\n")[0]
    assert first.startswith("apiVersion: v1\nkind: Service\nmetadata:\n")
    assert "{" not in text
    assert "&id" not in text  # no YAML anchors for shared values


def test_dump_json_round_trip() -> None:
    objs = example_objects()
    text = dump(objs, format="json")
    doc = json.loads(text)
    assert (doc["apiVersion"], doc["kind"], len(doc["items"])) == ("v1", "List", len(objs))
    assert doc["items"][0] == objs[0].to_manifest()
    assert load_text(text) == objs


def test_dump_nothing() -> None:
    assert dump([]) == ""
    assert load_text(dump([])) == []
    assert load_text(dump([], format="json")) == []


def test_dump_unknown_format() -> None:
    with pytest.raises(ManifestError, match='unknown format "xml"'):
        dump([], format="xml")  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "first"), [("a.yaml", "a"), ("a.yml", "a"), ("a.json", "{")])
def test_dump_file(tmp_path: Path, name: str, first: str) -> None:
    objs = example_objects()[:3]
    dump_file(objs, tmp_path / name)
    assert (tmp_path / name).read_text(encoding="utf-8").startswith(first)
    assert load(tmp_path / name) == objs
    dump_file(objs, tmp_path / "out.txt", format="json")
    assert load_text((tmp_path / "out.txt").read_text(encoding="utf-8")) == objs
    with pytest.raises(ManifestError, match="cannot tell the format"):
        dump_file(objs, tmp_path / "out.txt")


def test_dump_keeps_strings_that_look_like_other_types() -> None:
    text = service().replace(
        "metadata:\n",
        'metadata:\n  annotations:\n    a: "yes"\n    b: "1.0"\n    c: "null"\n'
        '    d: "2024-01-01"\n    e: "0x1F"\n    f: ""\n    g: "~"\n    h: "café ✓"\n',
    )
    objs = load_text(text)
    assert load_text(dump(objs)) == objs
    assert load_text(dump(objs, format="json")) == objs


# -- the bundled example cluster --------------------------------------------------------


def test_examples_load_cleanly() -> None:
    result = read(EXAMPLES)
    assert result.skipped == ()
    services = {
        (o.metadata.namespace, o.metadata.name): o for o in result.objects if isinstance(o, Service)
    }
    assert set(services) == {
        ("production", "backend-api"),
        ("production", "public-api"),
        ("production", "legacy-db"),
        ("staging", "demo-app"),
        ("billing", "billing-db"),
        ("data", "redis"),
    }
    # No ClusterIP is set except the headless one: the allocator assigns them.
    assert {k: s.cluster_ip for k, s in services.items() if s.cluster_ip} == {
        ("data", "redis"): "None"
    }
    backend = services["production", "backend-api"]
    assert (backend.type, backend.ports[0].port, backend.ports[0].target_port) == (
        "ClusterIP",
        80,
        8080,
    )
    demo = services["staging", "demo-app"]
    assert (demo.type, demo.ports[0].node_port) == ("NodePort", 30080)
    public = services["production", "public-api"]
    assert public.type == "LoadBalancer"
    assert public.external_traffic_policy == "Local"
    assert [i.ip for i in public.load_balancer_ingress] == ["203.0.113.10"]
    assert services["billing", "billing-db"].external_name == "billing-db.prod.example.com"

    pods = [o for o in result.objects if isinstance(o, Pod)]
    backend_pods = [p for p in pods if p.metadata.labels.get("app") == "backend-api"]
    assert sorted(p.is_ready for p in backend_pods) == [False, True, True]
    redis = sorted((p.hostname, p.subdomain) for p in pods if p.metadata.namespace == "data")
    assert redis == [("redis-0", "redis"), ("redis-1", "redis"), ("redis-2", "redis")]
    # Every selector matches pods, and every pod runs on a known node.
    nodes = {o.metadata.name for o in result.objects if isinstance(o, Node)}
    assert nodes == {"node-a", "node-b", "node-c"}
    assert {p.node_name for p in pods} == nodes
    for svc in services.values():
        if svc.selector:
            assert any(
                p.metadata.namespace == svc.metadata.namespace
                and all(p.metadata.labels.get(k) == v for k, v in svc.selector.items())
                for p in pods
            ), svc.metadata.name


# -- properties -------------------------------------------------------------------------


@given(st.text())
def test_arbitrary_text_raises_only_manifest_errors(text: str) -> None:
    try:
        load_text(text)
    except LoadError as exc:
        assert exc.errors
        assert all(isinstance(e, ManifestError | ValidationError) for e in exc.errors)
        assert exc.lines()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = st.sampled_from(
    ["metadata", "spec", "status", "items", "addressType", "endpoints", "ports", "name"]
)


@given(
    kind=st.sampled_from(["Service", "Pod", "Node", "EndpointSlice", "List", "ServiceList"]),
    fields=st.dictionaries(FIELDS, JSON_VALUES, max_size=4),
    as_yaml=st.booleans(),
)
def test_arbitrary_documents_raise_only_manifest_errors(
    kind: str, fields: dict[str, Any], as_yaml: bool
) -> None:
    version = "discovery.k8s.io/v1" if kind == "EndpointSlice" else "v1"
    doc = {"apiVersion": version, "kind": kind, **fields}
    text = json.dumps(doc)
    if as_yaml:
        text = yaml.safe_dump(doc)
    try:
        objs = load_text(text)
    except LoadError as exc:
        assert all(isinstance(e, ManifestError | ValidationError) for e in exc.errors)
        assert exc.lines()
    else:
        assert load_text(dump(objs)) == objs


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


EXAMPLE_DOCS = [
    doc
    for path in sorted(EXAMPLES.glob("*.yaml"))
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
    if doc
]


@given(st.data())
def test_mutated_examples_raise_only_manifest_errors(data: st.DataObject) -> None:
    doc = json.loads(json.dumps(data.draw(st.sampled_from(EXAMPLE_DOCS))))
    path = data.draw(st.sampled_from(_paths(doc)[1:]))
    new = data.draw(JSON_VALUES)
    target = doc
    for step in path[:-1]:
        target = target[step]
    if data.draw(st.booleans()):
        target[path[-1]] = new
    elif isinstance(target, dict):
        del target[path[-1]]
    else:
        target.pop(path[-1])
    try:
        objs = load_text(json.dumps(doc))
    except LoadError as exc:
        assert all(isinstance(e, ManifestError | ValidationError) for e in exc.errors)
        assert exc.lines()
    else:
        assert load_text(dump(objs)) == objs
        assert load_text(dump(objs, format="json")) == objs
