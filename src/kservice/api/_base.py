"""Shared machinery of the API objects: a frozen mapping, ObjectMeta, and a
manifest reader that turns camelCase dicts into typed values while collecting
every type error with its Kubernetes field path (never raising on bad input).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, Mapping, ValuesView
from typing import Any, TypeVar

import attrs

from kservice.errors import FieldError

__all__ = [
    "Condition",
    "FrozenMap",
    "Named",
    "ObjectMeta",
    "Reader",
    "condition_status",
    "frozen_map",
    "tuple_of",
    "type_name",
]

T = TypeVar("T")


class FrozenMap(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping (labels, selectors, annotations).

    Compares equal to any mapping with the same items, keeps insertion order
    for printing, and hashes by content so objects holding it stay hashable.
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self._data: dict[str, str] = dict(data) if data else {}
        self._hash: int | None = None

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # Direct delegation: the Mapping mixins go through __getitem__ and are slow.
    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def items(self) -> ItemsView[str, str]:
        return self._data.items()

    def keys(self) -> KeysView[str]:
        return self._data.keys()

    def values(self) -> ValuesView[str]:
        return self._data.values()

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def to_dict(self) -> dict[str, str]:
        return dict(self._data)


def frozen_map(value: Mapping[str, str] | None) -> FrozenMap:
    """attrs converter: any mapping (or None) to a FrozenMap."""
    if isinstance(value, FrozenMap):
        return value
    return FrozenMap(value)


def tuple_of(value: Any) -> tuple[Any, ...]:
    """attrs converter: any iterable (or None) to a tuple, order kept."""
    return tuple(value) if value is not None else ()


@attrs.frozen
class Condition:
    """One ``status.conditions[]`` entry (Pod or Node); ``status`` is "True", "False"
    or "Unknown". Other condition fields (reason, message, times) are not kept."""

    type: str
    status: str

    @classmethod
    def read(cls, r: Reader, data: dict[str, Any], path: str) -> Condition:
        return cls(
            type=r.str(data, "type", f"{path}.type", default=""),
            status=r.str(data, "status", f"{path}.status", default=""),
        )

    def to_manifest(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status}


def condition_status(conditions: Iterable[Condition], type_: str) -> str | None:
    """The status ("True", "False", "Unknown") of condition ``type_``, if present."""
    for c in conditions:
        if c.type == type_:
            return c.status
    return None


@attrs.frozen
class ObjectMeta:
    """The metadata kservice keeps: identity, labels, annotations and lifecycle.

    ``creation_timestamp`` (RFC 3339 text, as in manifests) and
    ``deletion_timestamp`` (set on terminating objects) are kept verbatim;
    ``uid`` and ``resource_version`` round-trip when present. Other metadata
    fields (managedFields, ownerReferences, ...) are accepted and not kept.
    """

    name: str
    namespace: str = "default"
    labels: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map)
    annotations: FrozenMap = attrs.field(factory=FrozenMap, converter=frozen_map)
    uid: str | None = None
    resource_version: str | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None

    @classmethod
    def read(cls, r: Reader, data: Any, *, namespaced: bool = True) -> ObjectMeta:
        m = r.map(data, "metadata", "metadata")
        # An empty name is reported by validate() ("name or generateName is required").
        name = r.str(m, "name", "metadata.name", default="")
        namespace = r.str(m, "namespace", "metadata.namespace", default="") or (
            "default" if namespaced else ""
        )
        if not namespaced and namespace:
            r.errors.append(FieldError.forbidden("metadata.namespace", "not allowed on this type"))
            namespace = ""
        ts = m.get("creationTimestamp")
        dts = m.get("deletionTimestamp")
        return cls(
            name=name,
            namespace=namespace,
            labels=r.str_map(m, "labels", "metadata.labels"),
            annotations=r.str_map(m, "annotations", "metadata.annotations"),
            uid=r.str(m, "uid", "metadata.uid"),
            resource_version=r.str(m, "resourceVersion", "metadata.resourceVersion"),
            creation_timestamp=None if ts is None else str(ts),
            deletion_timestamp=None if dts is None else str(dts),
        )

    def validate(self, *, dns1035: bool = False, namespaced: bool = True) -> list[FieldError]:
        """``ValidateObjectMeta``: name (DNS-1035 label with ``dns1035``, else a
        DNS-1123 subdomain), namespace (a DNS-1123 label when namespaced),
        labels and annotations."""
        from kservice.api import validation as v

        errs = v.validate_object_name(self.name, "metadata.name", dns1035=dns1035)
        if namespaced:
            errs += v.validate_namespace_name(self.namespace, "metadata.namespace")
        errs += v.validate_labels(self.labels, "metadata.labels")
        errs += v.validate_annotations(self.annotations, "metadata.annotations")
        return errs

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        if self.uid is not None:
            out["uid"] = self.uid
        if self.resource_version is not None:
            out["resourceVersion"] = self.resource_version
        if self.creation_timestamp is not None:
            out["creationTimestamp"] = self.creation_timestamp
        if self.deletion_timestamp is not None:
            out["deletionTimestamp"] = self.deletion_timestamp
        if self.labels:
            out["labels"] = self.labels.to_dict()
        if self.annotations:
            out["annotations"] = self.annotations.to_dict()
        return out


class Named:
    """Identity shortcuts of every API object (``name``, ``namespace``, ``key``)."""

    __slots__ = ()
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> tuple[str, str]:
        """``(namespace, name)``; the namespace is empty for cluster-scoped objects."""
        return (self.metadata.namespace, self.metadata.name)


def type_name(value: Any) -> str:
    """The JSON name of a value's type, for "must be a string, not number" errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


class Reader:
    """Reads typed fields out of a decoded manifest, recording type errors.

    Each accessor takes the containing dict, the key and the field path used
    in error messages; on a type mismatch it appends an Invalid FieldError and
    returns the default, so one pass reports every problem in a document.
    ``strict`` objects report unknown keys, like the API server's strict field
    validation (``kubectl apply --validate=strict``).
    """

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def _bad(self, path: builtins.str, value: Any, expected: builtins.str) -> None:
        self.errors.append(
            FieldError.invalid(path, value, f"must be {expected}, not {type_name(value)}")
        )

    def map(
        self, obj: Any, key: builtins.str, path: builtins.str, *, required: builtins.bool = False
    ) -> dict[builtins.str, Any]:
        value = obj.get(key) if isinstance(obj, dict) else None
        if value is None:
            if required:
                self.errors.append(FieldError.required(path))
            return {}
        if not isinstance(value, dict):
            self._bad(path, value, "an object")
            return {}
        return value

    def list(
        self, obj: dict[builtins.str, Any], key: builtins.str, path: builtins.str
    ) -> builtins.list[Any]:
        value = obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self._bad(path, value, "an array")
            return []
        return value

    def str(
        self,
        obj: dict[builtins.str, Any],
        key: builtins.str,
        path: builtins.str,
        default: Any = None,
    ) -> Any:
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            self._bad(path, value, "a string")
            return default
        return value

    def int(
        self,
        obj: dict[builtins.str, Any],
        key: builtins.str,
        path: builtins.str,
        default: Any = None,
    ) -> Any:
        value = obj.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self._bad(path, value, "an integer")
            return default
        return value

    def bool(
        self,
        obj: dict[builtins.str, Any],
        key: builtins.str,
        path: builtins.str,
        default: Any = None,
    ) -> Any:
        value = obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self._bad(path, value, "a boolean")
            return default
        return value

    def int_or_str(
        self, obj: dict[builtins.str, Any], key: builtins.str, path: builtins.str
    ) -> builtins.int | builtins.str | None:
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            self._bad(path, value, "an integer or a string")
            return None
        return value

    def str_list(
        self, obj: dict[builtins.str, Any], key: builtins.str, path: builtins.str
    ) -> tuple[builtins.str, ...]:
        out = []
        for i, item in enumerate(self.list(obj, key, path)):
            if isinstance(item, str):
                out.append(item)
            else:
                self._bad(f"{path}[{i}]", item, "a string")
        return tuple(out)

    def str_map(
        self, obj: dict[builtins.str, Any], key: builtins.str, path: builtins.str
    ) -> FrozenMap:
        out: dict[builtins.str, builtins.str] = {}
        for k, v in self.map(obj, key, path).items():
            if not isinstance(k, str):
                self._bad(path, k, "a map with string keys")
            elif not isinstance(v, str):
                self._bad(f"{path}[{k}]", v, "a string")
            else:
                out[k] = v
        return FrozenMap(out)

    def objects(
        self,
        obj: dict[builtins.str, Any],
        key: builtins.str,
        path: builtins.str,
        read_one: Callable[[Reader, dict[builtins.str, Any], builtins.str], T],
    ) -> tuple[T, ...]:
        """Read a list of sub-objects with ``read_one(reader, item, item_path)``."""
        out = []
        for i, item in enumerate(self.list(obj, key, path)):
            item_path = f"{path}[{i}]"
            if not isinstance(item, dict):
                self._bad(item_path, item, "an object")
                continue
            out.append(read_one(self, item, item_path))
        return tuple(out)

    def unknown(self, obj: Any, path: builtins.str, known: frozenset[builtins.str]) -> None:
        """Report keys the API does not define (strict field validation)."""
        if not isinstance(obj, dict):
            return
        for key in obj:
            if key not in known:
                self.errors.append(
                    FieldError.forbidden(
                        path or "<root>", f'unknown field "{key}": field not declared in schema'
                    )
                )
