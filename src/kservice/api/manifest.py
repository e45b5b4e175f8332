"""Reading and writing manifests: YAML or JSON, files, folders and text.

:func:`load` turns manifests into API objects (:class:`~kservice.api.service.Service`,
:class:`~kservice.api.endpointslice.EndpointSlice`, :class:`~kservice.api.pod.Pod`,
:class:`~kservice.api.node.Node`) the way ``kubectl apply -f`` reads them:

* multi-document YAML (``---``), comments, empty documents (skipped);
* JSON, one object or a stream of objects;
* ``kind: List`` and typed lists (``ServiceList``, ...) whose ``items`` are
  expanded; items of a typed list may omit ``apiVersion`` and ``kind``;
* folders, read recursively: every ``*.yaml``, ``*.yml`` and ``*.json`` file,
  in sorted path order.

Every problem in every document of every file is collected, and all of them are
raised together as one :class:`LoadError`; nothing is returned unless everything
is valid. Each problem names where it is: the file (or ``<text>``), the 0-based
index of the document in that file's YAML stream (empty documents count; the
first ``---`` starts document 0), and ``items[i]`` inside a list.

:func:`dump` writes objects back as multi-document YAML or a JSON ``List``;
``load_text(dump(objects)) == objects`` for valid objects with distinct names.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self, TypeAlias

import attrs
import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from kservice.api._base import FrozenMap, ObjectMeta
from kservice.errors import ManifestError, ValidationError

__all__ = [
    "MANIFEST_SUFFIXES",
    "ApiObject",
    "LoadError",
    "LoadResult",
    "SkippedDocument",
    "Source",
    "UnknownKindError",
    "dump",
    "dump_file",
    "kinds",
    "load",
    "load_text",
    "read",
    "read_text",
]

#: File name endings read from folders (matched case-insensitively).
MANIFEST_SUFFIXES = (".json", ".yaml", ".yml")

#: Deepest nesting accepted in a document; real manifests stay below 20.
MAX_DEPTH = 100
#: Most extra nodes YAML aliases may add by repetition (a "billion laughs" guard).
MAX_ALIAS_EXPANSION = 100_000

Format: TypeAlias = Literal["yaml", "json"]


class ApiObject(Protocol):
    """What every API object class provides (Service, EndpointSlice, Pod, Node)."""

    KIND: ClassVar[str]
    API_VERSION: ClassVar[str]

    @property
    def metadata(self) -> ObjectMeta: ...

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Self: ...

    def to_manifest(self) -> dict[str, Any]: ...


#: What :func:`load` and :func:`read` accept: a path, text, or several paths.
Source: TypeAlias = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


# -- errors --------------------------------------------------------------------------


class UnknownKindError(ManifestError):
    """A document's ``kind`` (in its API group) is not one kservice models.

    ``kind`` and ``api_version`` are the document's values. With
    ``skip_unknown=True`` such documents are skipped instead (see
    :class:`SkippedDocument`).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        api_version: str,
        source: str | None = None,
        document: int | None = None,
    ) -> None:
        self.kind = kind
        self.api_version = api_version
        super().__init__(message, source=source, document=document)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_unknown_kind_error,
            (self.message, self.kind, self.api_version, self.source, self.document),
        )


def _rebuild_unknown_kind_error(
    message: str, kind: str, api_version: str, source: str | None, document: int | None
) -> UnknownKindError:
    return UnknownKindError(
        message, kind=kind, api_version=api_version, source=source, document=document
    )


class LoadError(ManifestError):
    """Everything wrong with a load, collected across all documents and files.

    ``errors`` lists each problem in file and document order: a
    :class:`~kservice.errors.ManifestError` (unreadable file, bad YAML/JSON,
    not an object, unknown kind, unsupported apiVersion, duplicate object) or a
    :class:`~kservice.errors.ValidationError` (an invalid object, with its
    ``source`` set to ``"file, document N"``). ``str()`` and :meth:`lines`
    give one line per problem, and one per field error of an invalid object.
    """

    def __init__(self, errors: Iterable[ManifestError | ValidationError]) -> None:
        self.errors: list[ManifestError | ValidationError] = list(errors)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem (per field error for invalid objects)."""
        out: list[str] = []
        for err in self.errors:
            if isinstance(err, ValidationError | LoadError):
                out.extend(err.lines())
            else:
                out.append(str(err))
        return out

    def __reduce__(self) -> tuple[Any, ...]:
        return (LoadError, (self.errors,))


# -- results ---------------------------------------------------------------------------


@attrs.frozen
class SkippedDocument:
    """A document of a kind kservice does not model, skipped by ``skip_unknown=True``.

    ``location`` is ``"file, document N"`` (plus ``", items[i]"`` inside a list);
    ``name`` is ``metadata.name``, or ``""`` when absent.
    """

    location: str
    api_version: str
    kind: str
    name: str = ""

    def __str__(self) -> str:
        return f'{self.location}: {self.kind} "{self.name}" ({self.api_version})'


@attrs.frozen
class LoadResult:
    """What :func:`read` found.

    ``objects`` in file and document order, with ``locations[i]`` naming where
    ``objects[i]`` came from (``"file, document N"``); ``skipped`` the documents of
    unknown kinds (only with ``skip_unknown=True``); ``files`` the files read.
    """

    objects: tuple[ApiObject, ...] = ()
    locations: tuple[str, ...] = ()
    skipped: tuple[SkippedDocument, ...] = ()
    files: tuple[str, ...] = ()


# -- the kinds ------------------------------------------------------------------------------


@functools.cache
def _registry() -> dict[tuple[str, str], type[ApiObject]]:
    # Imported here, not at module level: the object modules are heavier and
    # manifest I/O should not fix their import order.
    from kservice.api.endpointslice import EndpointSlice
    from kservice.api.node import Node
    from kservice.api.pod import Pod
    from kservice.api.service import Service

    classes: tuple[type[ApiObject], ...] = (Service, EndpointSlice, Pod, Node)
    return {(_split_api_version(c.API_VERSION)[0], c.KIND): c for c in classes}


def kinds() -> dict[tuple[str, str], type[ApiObject]]:
    """The classes manifests are read into, keyed by ``(api_group, kind)``.

    The core group is ``""``: ``("", "Service")``, ``("discovery.k8s.io",
    "EndpointSlice")``, ``("", "Pod")``, ``("", "Node")``. A fresh dict each call.
    """
    return dict(_registry())


def _split_api_version(api_version: str) -> tuple[str, str]:
    """``"discovery.k8s.io/v1"`` -> ``("discovery.k8s.io", "v1")``; ``"v1"`` -> ``("", "v1")``."""
    group, _, version = api_version.rpartition("/")
    return group, version


def _supported() -> str:
    return ", ".join(f"{cls.KIND} ({cls.API_VERSION})" for cls in _registry().values())


# -- where a document is ---------------------------------------------------------------


@attrs.frozen
class _Where:
    source: str
    document: int
    item: str = ""  # "items[2]", "items[2].items[0]" inside lists

    def __str__(self) -> str:
        text = f"{self.source}, document {self.document}"
        return f"{text}, {self.item}" if self.item else text

    def at_item(self, index: int) -> _Where:
        item = f"{self.item}.items[{index}]" if self.item else f"items[{index}]"
        return attrs.evolve(self, item=item)

    def error(self, message: str) -> ManifestError:
        if self.item:
            message = f"{self.item}: {message}"
        return ManifestError(message, source=self.source, document=self.document)


# -- parsing -----------------------------------------------------------------------------

_TIMESTAMP = "tag:yaml.org,2002:timestamp"

if TYPE_CHECKING or not getattr(yaml, "__with_libyaml__", False):
    _Loader = yaml.SafeLoader
    _BaseDumper = yaml.SafeDumper
else:
    from yaml.cyaml import CParser

    _BaseDumper = yaml.CSafeDumper

    class _Loader(Composer, CParser, SafeConstructor, Resolver):
        """libyaml's parser under PyYAML's own composer and safe constructor.

        ``CSafeLoader`` composes nodes in C with unbounded recursion, so deeply
        nested input (``[[[[...`` 50,000 levels) crashes the interpreter; the
        Python composer raises RecursionError instead, for about 5% more time.
        """

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


class _TextLoader(_Loader):
    """The safe loader, keeping timestamps as text as the API server does."""


# Kubernetes converts YAML to JSON before decoding, so ``creationTimestamp:
# 2024-01-01T00:00:00Z`` stays a string; PyYAML would make it a datetime.
_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
    for first, resolvers in _Loader.yaml_implicit_resolvers.items()
}


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{context}: {problem}" if context and context != problem else problem
    if mark is not None:
        return f"invalid YAML: line {mark.line + 1}, column {mark.column + 1}: {text}"
    return f"invalid YAML: {text}"


def _parse_yaml(text: str, source: str) -> tuple[list[Any], ManifestError | None]:
    docs: list[Any] = []
    try:
        for doc in yaml.load_all(text, Loader=_TextLoader):
            docs.append(doc)
    except yaml.YAMLError as exc:
        return docs, ManifestError(_yaml_error(exc), source=source, document=len(docs))
    except RecursionError:
        msg = f"invalid YAML: nested more than {MAX_DEPTH} levels deep"
        return docs, ManifestError(msg, source=source, document=len(docs))
    return docs, None


_JSON_SPACE = re.compile(r"[ \t\r\n]*")


def _skip_space(text: str, pos: int) -> int:
    match = _JSON_SPACE.match(text, pos)
    return match.end() if match else pos


def _parse_json(text: str, source: str) -> tuple[list[Any], ManifestError | None]:
    """A stream of JSON values separated by whitespace, as kubectl accepts."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos = _skip_space(text, 0)
    try:
        while pos < len(text):
            doc, pos = decoder.raw_decode(text, pos)
            docs.append(doc)
            pos = _skip_space(text, pos)
    except json.JSONDecodeError as exc:
        msg = f"invalid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}"
        return docs, ManifestError(msg, source=source, document=len(docs))
    except RecursionError:
        msg = f"invalid JSON: nested more than {MAX_DEPTH} levels deep"
        return docs, ManifestError(msg, source=source, document=len(docs))
    return docs, None


def _parse(text: str, source: str) -> tuple[list[Any], ManifestError | None]:
    """The documents of ``text`` (``None`` for empty ones) and the parse error, if any.

    Text whose first character is ``{`` is read as JSON, anything else as YAML
    (kubectl's YAMLOrJSONDecoder rule). JSON that fails but happens to be valid
    YAML (a flow mapping such as ``{a: 1}``) is accepted as YAML.
    """
    if text.lstrip().startswith("{"):
        docs, error = _parse_json(text, source)
        if error is None:
            return docs, None
        yaml_docs, yaml_error = _parse_yaml(text, source)
        return (yaml_docs, None) if yaml_error is None else (docs, error)
    return _parse_yaml(text, source)


class _Normalizer:
    """Checks that a decoded document is plain JSON data, as Kubernetes requires.

    Scalar mapping keys become strings (``80`` -> ``"80"``, ``true`` ->
    ``"true"``), as Kubernetes' YAML-to-JSON conversion does. Values YAML can
    express but JSON cannot (binary, sets, explicit timestamps) are errors, as
    are recursive aliases, nesting deeper than :data:`MAX_DEPTH` and aliases
    that expand to more than :data:`MAX_ALIAS_EXPANSION` extra nodes. Aliased
    subtrees are converted once and shared, so the walk stays linear.
    """

    def __init__(self) -> None:
        self._done: dict[int, tuple[Any, int]] = {}
        self._active: set[int] = set()
        self._expanded = 0

    def run(self, value: Any) -> Any:
        return self._walk(value, "", 0)[0]

    def _walk(self, value: Any, path: str, depth: int) -> tuple[Any, int]:
        if value is None or isinstance(value, str | bool | int | float):
            return value, 1
        if not isinstance(value, dict | list):
            kind = type(value).__name__
            raise _Invalid(f"{path or '<root>'}: unsupported value of type {kind}")
        key = id(value)
        if key in self._done:
            result, size = self._done[key]
            self._expanded += size
            if self._expanded > MAX_ALIAS_EXPANSION:
                raise _Invalid(f"YAML aliases expand to more than {MAX_ALIAS_EXPANSION} nodes")
            return result, size
        if key in self._active:
            raise _Invalid(f"{path or '<root>'}: recursive YAML alias")
        if depth >= MAX_DEPTH:
            raise _Invalid(f"{path or '<root>'}: nested more than {MAX_DEPTH} levels deep")
        self._active.add(key)
        size = 1
        out: Any
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                name = _key_text(k)
                if name is None:
                    raise _Invalid(
                        f"{path or '<root>'}: unsupported key of type {type(k).__name__}"
                    )
                out[name], n = self._walk(v, f"{path}.{name}" if path else name, depth + 1)
                size += n
        else:
            out = []
            for i, v in enumerate(value):
                item, n = self._walk(v, f"{path}[{i}]", depth + 1)
                out.append(item)
                size += n
        self._active.discard(key)
        self._done[key] = (out, size)
        return out, size


class _Invalid(Exception):
    """Internal: a document is not plain JSON data."""


def _key_text(key: Any) -> str | None:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float):
        return repr(key)
    if key is None:
        return "null"
    return None


# -- reading ----------------------------------------------------------------------------------


class _Reader:
    """One load: turns documents into objects, collecting every problem."""

    def __init__(self, skip_unknown: bool) -> None:
        self.skip_unknown = skip_unknown
        self.registry = _registry()
        self.objects: list[ApiObject] = []
        self.locations: list[str] = []
        self.skipped: list[SkippedDocument] = []
        self.files: list[str] = []
        self.errors: list[ManifestError | ValidationError] = []
        self._seen: dict[tuple[str, str, str], str] = {}
        self._files_seen: set[str] = set()

    def result(self) -> LoadResult:
        if self.errors:
            raise LoadError(self.errors)
        return LoadResult(
            objects=tuple(self.objects),
            locations=tuple(self.locations),
            skipped=tuple(self.skipped),
            files=tuple(self.files),
        )

    # sources
    def read_path(self, path: str | os.PathLike[str]) -> None:
        """A file, or every manifest file under a folder; each file at most once."""
        name = os.fspath(path)
        if not os.path.isdir(name):  # False, not an error, for any bad path
            self.read_file(name)
            return
        root = Path(name)
        files = sorted(
            f for f in root.rglob("*") if f.suffix.lower() in MANIFEST_SUFFIXES and f.is_file()
        )
        if not files:
            suffixes = ", ".join(f"*{s}" for s in MANIFEST_SUFFIXES)
            self.errors.append(
                ManifestError(f"no manifest files ({suffixes}) in directory", source=name)
            )
        for f in files:
            self.read_file(os.path.join(name, os.fspath(f.relative_to(root))))

    def read_file(self, name: str) -> None:
        try:
            real = os.path.realpath(name)
        except ValueError:  # an embedded NUL character
            self.errors.append(ManifestError("invalid path", source=repr(name)))
            return
        if real in self._files_seen:
            return
        self._files_seen.add(real)
        try:
            data = Path(name).read_bytes()
        except FileNotFoundError:
            self.errors.append(ManifestError("no such file or directory", source=name))
            return
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.errors.append(ManifestError(f"cannot read: {reason}", source=name))
            return
        self.files.append(name)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            msg = f"not UTF-8 text: invalid byte at offset {exc.start}"
            self.errors.append(ManifestError(msg, source=name))
            return
        self.read_text(text, name)

    def read_text(self, text: str, source: str) -> None:
        docs, error = _parse(text, source)
        for index, doc in enumerate(docs):
            where = _Where(source, index)
            try:
                doc = _Normalizer().run(doc)
            except _Invalid as exc:
                self.errors.append(where.error(str(exc)))
                continue
            except RecursionError:  # pragma: no cover - MAX_DEPTH stops it first
                self.errors.append(where.error("nested too deeply"))
                continue
            if doc is not None:  # empty documents are skipped
                self.read_document(doc, where)
        if error is not None:
            self.errors.append(error)

    # documents
    def read_document(
        self, doc: Any, where: _Where, defaults: Mapping[str, str] | None = None
    ) -> None:
        if not isinstance(doc, dict):
            self.errors.append(where.error(f"not an object: {_json_type(doc)}"))
            return
        for key, value in (defaults or {}).items():
            if not doc.get(key):
                doc = {**doc, key: value}
        api_version, kind = doc.get("apiVersion"), doc.get("kind")
        problems = [
            f"{field} {'not set' if not value else 'must be a string'}"
            for field, value in (("apiVersion", api_version), ("kind", kind))
            if not value or not isinstance(value, str)
        ]
        if problems:
            self.errors.append(where.error(", ".join(problems)))
            return
        assert isinstance(api_version, str) and isinstance(kind, str)
        if kind == "List" or (kind.endswith("List") and "items" in doc):
            self.read_list(doc, kind, api_version, where)
            return
        cls = self.lookup(doc, kind, api_version, where)
        if cls is None:
            return
        try:
            obj = cls.from_manifest(doc)
        except ValidationError as exc:
            self.errors.append(exc.with_source(str(where)))
            return
        self.add(obj, where)

    def read_list(self, doc: dict[str, Any], kind: str, api_version: str, where: _Where) -> None:
        items = doc.get("items")
        if items is None:
            return
        if not isinstance(items, list):
            self.errors.append(where.error(f"items: must be an array, not {_json_type(items)}"))
            return
        # Items of a typed list (ServiceList) take apiVersion and kind from it.
        defaults = {} if kind == "List" else {"apiVersion": api_version, "kind": kind[:-4]}
        for i, item in enumerate(items):
            self.read_document(item, where.at_item(i), defaults)

    def lookup(
        self, doc: dict[str, Any], kind: str, api_version: str, where: _Where
    ) -> type[ApiObject] | None:
        group = _split_api_version(api_version)[0]
        cls = self.registry.get((group, kind))
        if cls is not None:
            if api_version == cls.API_VERSION:
                return cls
            self.errors.append(
                where.error(
                    f'unsupported apiVersion "{api_version}" for {kind}: '
                    f'kservice reads "{cls.API_VERSION}"'
                )
            )
            return None
        if self.skip_unknown:
            meta = doc.get("metadata")
            name = meta.get("name") if isinstance(meta, dict) else None
            self.skipped.append(
                SkippedDocument(
                    str(where), api_version, kind, name if isinstance(name, str) else ""
                )
            )
            return None
        message = f'unknown kind "{kind}" (apiVersion "{api_version}")'
        close = [c.KIND for c in self.registry.values() if c.KIND.lower() == kind.lower()]
        if close and close[0] != kind:
            message += f'; did you mean "{close[0]}"?'
        message += f"; kservice reads {_supported()}"
        if where.item:
            message = f"{where.item}: {message}"
        self.errors.append(
            UnknownKindError(
                message,
                kind=kind,
                api_version=api_version,
                source=where.source,
                document=where.document,
            )
        )
        return None

    def add(self, obj: ApiObject, where: _Where) -> None:
        meta = obj.metadata
        key = (obj.KIND, meta.namespace, meta.name)
        shown = f"{meta.namespace}/{meta.name}" if meta.namespace else meta.name
        first = self._seen.get(key)
        if first is not None:
            self.errors.append(
                where.error(f'duplicate {obj.KIND} "{shown}": already defined at {first}')
            )
            return
        self._seen[key] = str(where)
        self.objects.append(obj)
        self.locations.append(str(where))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _looks_like_text(source: str) -> bool:
    if not source.strip() or "\n" in source:
        return True
    head = source.lstrip()
    return head.startswith(("{", "---", "apiVersion:", "kind:")) and not os.path.exists(source)


def read(source: Source, *, skip_unknown: bool = False) -> LoadResult:
    """Read manifests into API objects, with where each came from and what was skipped.

    ``source`` is one of:

    * a path (``str`` or :class:`os.PathLike`) to a file or a folder; folders are
      read recursively, every ``*.yaml``, ``*.yml`` and ``*.json`` file in sorted
      order (a folder without any is an error);
    * manifest text, for a ``str`` that is empty or blank, contains a newline, or
      starts (after blanks) with ``{``, ``---``, ``apiVersion:`` or ``kind:`` and
      is not an existing path; such text is named ``<text>`` in errors (use
      :func:`read_text` to name it yourself);
    * a sequence (list, tuple) of paths, never text, read in the order given;
      a file named twice (even through a folder) is read once.

    Documents whose kind kservice does not model are errors, or with
    ``skip_unknown=True`` are skipped and listed in :attr:`LoadResult.skipped`.
    A known kind in an unsupported apiVersion (``discovery.k8s.io/v1beta1``) is
    always an error. The same (kind, namespace, name) twice is an error.

    Raises :class:`LoadError` with every problem found.
    """
    reader = _Reader(skip_unknown)
    if isinstance(source, str) and _looks_like_text(source):
        reader.read_text(source, "<text>")
        return reader.result()
    if isinstance(source, str | os.PathLike):
        paths: Sequence[str | os.PathLike[str]] = [source]
    elif isinstance(source, Sequence) and not isinstance(source, bytes):
        paths = source
    else:
        raise TypeError(f"source must be a path, text or a list of paths, not {type(source)!r}")
    for path in paths:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"paths must be str or os.PathLike, not {type(path)!r}")
        reader.read_path(path)
    return reader.result()


def read_text(text: str, *, source: str = "<text>", skip_unknown: bool = False) -> LoadResult:
    """Like :func:`read` for manifest text; ``source`` names it in errors."""
    reader = _Reader(skip_unknown)
    reader.read_text(text, source)
    return reader.result()


def load(source: Source, *, skip_unknown: bool = False) -> list[ApiObject]:
    """The API objects in ``source``; see :func:`read` for what ``source`` may be.

    Raises :class:`LoadError` listing every problem. With ``skip_unknown=True``
    documents of kinds kservice does not model are dropped; call :func:`read`
    to learn which.
    """
    return list(read(source, skip_unknown=skip_unknown).objects)


def load_text(text: str, *, source: str = "<text>", skip_unknown: bool = False) -> list[ApiObject]:
    """The API objects in manifest ``text`` (YAML or JSON); ``source`` names it in errors."""
    return list(read_text(text, source=source, skip_unknown=skip_unknown).objects)


# -- writing -------------------------------------------------------------------------------


class _Dumper(_BaseDumper):
    """Block-style YAML, keys in the order ``to_manifest`` gives, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_mapping(dumper: yaml.SafeDumper, data: Mapping[str, Any]) -> yaml.Node:
    return dumper.represent_dict(dict(data))


def _represent_tuple(dumper: yaml.SafeDumper, data: tuple[Any, ...]) -> yaml.Node:
    return dumper.represent_list(list(data))


# to_manifest gives plain dicts and lists; be lenient with the attrs-side types.
_Dumper.add_representer(FrozenMap, _represent_mapping)
_Dumper.add_representer(tuple, _represent_tuple)


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dump(objects: Iterable[ApiObject], *, format: Format = "yaml") -> str:
    """Write ``objects`` as manifest text that :func:`load_text` reads back equal.

    ``"yaml"``: one document per object, separated by ``---`` lines, block
    style, keys in ``to_manifest`` order. ``"json"``: one ``kind: List``
    (apiVersion v1) with the objects as ``items``, indented by two spaces.
    """
    manifests = [obj.to_manifest() for obj in objects]
    if format == "json":
        doc = {"apiVersion": "v1", "kind": "List", "items": manifests}
        return json.dumps(doc, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    if format == "yaml":
        return "---\n".join(
            yaml.dump(
                m,
                Dumper=_Dumper,
                sort_keys=False,
                default_flow_style=False,
                allow_unicode=True,
                width=1 << 30,  # never fold long strings
            )
            for m in manifests
        )
    raise ManifestError(f'unknown format "{format}": use "yaml" or "json"')


_SUFFIX_FORMATS: dict[str, Format] = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def dump_file(
    objects: Iterable[ApiObject],
    path: str | os.PathLike[str],
    *,
    format: Format | None = None,
) -> None:
    """Write ``objects`` to ``path`` (UTF-8) with :func:`dump`.

    The format comes from the file name (``.yaml``/``.yml``/``.json``) unless
    given.
    """
    if format is None:
        suffix = Path(path).suffix.lower()
        if suffix not in _SUFFIX_FORMATS:
            raise ManifestError(
                f"cannot tell the format from the name {os.fspath(path)!r}: "
                'use .yaml, .yml or .json, or pass format="yaml" or "json"'
            )
        format = _SUFFIX_FORMATS[suffix]
    Path(path).write_text(dump(objects, format=format), encoding="utf-8")
