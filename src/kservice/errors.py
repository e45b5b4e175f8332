"""The exceptions kservice raises.

Every exception derives from :class:`KServiceError`. Errors caused by bad
arguments or bad input also derive from :class:`ValueError` (or
:class:`TypeError`), so callers that do not know kservice can still catch them.

Validation errors mirror the Kubernetes API server's ``field.Error`` /
``field.ErrorList``: each :class:`FieldError` has a type, a field path such as
``spec.ports[0].port``, the offending value and a detail, and prints exactly as
the API server writes it::

    spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

__all__ = [
    "AllocationError",
    "AlreadyAllocatedError",
    "ConfigError",
    "ErrorType",
    "FieldError",
    "KServiceError",
    "ManifestError",
    "NotFoundError",
    "NotInRangeError",
    "RangeFullError",
    "ValidationError",
]


class KServiceError(Exception):
    """Root of every exception kservice raises on purpose."""


class ErrorType(enum.Enum):
    """The kinds of field error the API server reports (``field.ErrorType``)."""

    NOT_FOUND = "Not found"
    REQUIRED = "Required value"
    DUPLICATE = "Duplicate value"
    INVALID = "Invalid value"
    NOT_SUPPORTED = "Unsupported value"
    FORBIDDEN = "Forbidden"
    TOO_LONG = "Too long"
    TOO_MANY = "Too many"
    INTERNAL = "Internal error"
    TYPE_INVALID = "Invalid value"


_OMIT = object()


_SHORT_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(text: str) -> str:
    """Quote a string as Go's ``%q`` does (``strconv.Quote``)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_value(value: Any) -> str:
    """Render a bad value the way the API server prints it in field errors.

    Strings are quoted as Go's ``%q`` does, numbers and booleans are bare,
    ``None`` is ``null``, and structures are printed as compact JSON.
    """
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if value is None:
        return "null"
    try:
        return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    except (TypeError, ValueError):  # pragma: no cover - defensive
        return repr(value)


@attrs.frozen
class FieldError:
    """One problem with one field, as the API server reports it.

    ``value`` is :data:`None`-able; use ``has_value=False`` for error types that
    print no value (Required, Forbidden, Too long, Internal).
    """

    type: ErrorType
    field: str
    value: Any = None
    detail: str = ""
    has_value: bool = True

    # Constructors named after the API server's helpers (field.Invalid, ...).
    @classmethod
    def invalid(cls, field: str, value: Any, detail: str) -> FieldError:
        return cls(ErrorType.INVALID, field, value, detail)

    @classmethod
    def required(cls, field: str, detail: str = "") -> FieldError:
        return cls(ErrorType.REQUIRED, field, None, detail, has_value=False)

    @classmethod
    def duplicate(cls, field: str, value: Any) -> FieldError:
        return cls(ErrorType.DUPLICATE, field, value, "")

    @classmethod
    def not_supported(cls, field: str, value: Any, supported: Iterable[str]) -> FieldError:
        # In the caller's order, as upstream (callers pass sorted choices).
        quoted = ", ".join(go_quote(s) for s in supported)
        detail = f"supported values: {quoted}" if quoted else ""
        return cls(ErrorType.NOT_SUPPORTED, field, value, detail)

    @classmethod
    def forbidden(cls, field: str, detail: str) -> FieldError:
        return cls(ErrorType.FORBIDDEN, field, None, detail, has_value=False)

    @classmethod
    def too_long(cls, field: str, value: Any, max_length: int) -> FieldError:
        if max_length < 0:
            detail = "value is too long"
        else:
            detail = f"may not be more than {max_length} {'byte' if max_length == 1 else 'bytes'}"
        return cls(ErrorType.TOO_LONG, field, value, detail, has_value=False)

    @classmethod
    def too_many(cls, field: str, actual: int, max_items: int) -> FieldError:
        if max_items < 0:
            detail = "has too many items"
        else:
            detail = f"must have at most {max_items} {'item' if max_items == 1 else 'items'}"
        return cls(ErrorType.TOO_MANY, field, actual, detail, has_value=actual >= 0)

    @classmethod
    def not_found(cls, field: str, value: Any) -> FieldError:
        return cls(ErrorType.NOT_FOUND, field, value, "")

    @classmethod
    def internal(cls, field: str, detail: str) -> FieldError:
        return cls(ErrorType.INTERNAL, field, None, detail, has_value=False)

    def __str__(self) -> str:
        text = f"{self.field}: {self.type.value}" if self.field else self.type.value
        if self.has_value:
            text += f": {format_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text


class ValidationError(KServiceError, ValueError):
    """An object (or a manifest) is invalid; carries every problem at once.

    ``str()`` gives the API server's message, e.g.
    ``Service "web" is invalid: spec.ports[0].port: Invalid value: 0: must be
    between 1 and 65535, inclusive``; with several errors they are listed in
    brackets, comma-separated, as the API server aggregates them. ``source``
    names where the object came from (file and document index) when known.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        errors: Sequence[FieldError],
        *,
        source: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.errors: tuple[FieldError, ...] = tuple(errors)
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        if len(self.errors) == 1:
            body = str(self.errors[0])
        else:
            body = "[" + ", ".join(str(e) for e in self.errors) + "]"
        head = f'{self.kind} "{self.name}" is invalid: {body}'
        return f"{self.source}: {head}" if self.source else head

    def with_source(self, source: str) -> ValidationError:
        """The same error, annotated with where the object came from."""
        return ValidationError(self.kind, self.name, self.errors, source=source)

    def lines(self) -> list[str]:
        """One line per field error, kubectl style, for terminals:
        ``file.yaml, document 0: The Service "web" is invalid: spec...``."""
        prefix = f"{self.source}: " if self.source else ""
        return [f'{prefix}The {self.kind} "{self.name}" is invalid: {e}' for e in self.errors]

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_validation_error, (self.kind, self.name, self.errors, self.source))


def _rebuild_validation_error(
    kind: str, name: str, errors: Sequence[FieldError], source: str | None
) -> ValidationError:
    return ValidationError(kind, name, errors, source=source)


class ManifestError(KServiceError, ValueError):
    """A manifest could not be read: bad YAML/JSON, not an object, unknown kind.

    ``source`` names the file (or ``<text>``) and ``document`` the 0-based
    document index inside it, when known.
    """

    def __init__(self, message: str, *, source: str | None = None, document: int | None = None):
        self.message = message
        self.source = source
        self.document = document
        where = []
        if source is not None:
            where.append(source)
        if document is not None:
            where.append(f"document {document}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_manifest_error, (self.message, self.source, self.document))


def _rebuild_manifest_error(
    message: str, source: str | None, document: int | None
) -> ManifestError:
    return ManifestError(message, source=source, document=document)


class ConfigError(KServiceError, ValueError):
    """A configuration value (cluster, controller, proxy) is invalid."""


class NotFoundError(KServiceError, LookupError):
    """A named object does not exist (e.g. ``Cluster.get`` of a missing Service)."""


class AllocationError(KServiceError):
    """Root of the allocator errors (ClusterIP, NodePort)."""


class AlreadyAllocatedError(AllocationError, ValueError):
    """The requested IP or port is already allocated."""


class NotInRangeError(AllocationError, ValueError):
    """The requested IP or port lies outside the allocator's range."""


class RangeFullError(AllocationError):
    """No free IP or port is left in the range."""
