"""The installed version, read from the package metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kservice")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0+unknown"
