"""The NodePort allocator: one port range, the API server's bitmap rules.

Facts carried over from the API server (``pkg/registry/core/service/
portallocator/allocator.go`` and ``operation.go``, ``allocator/bitmap.go``,
``storage/alloc.go`` and apimachinery ``util/net/port_range.go``):

* **The range** is ``--service-node-port-range``, by default
  ``30000-32767`` (2,768 ports). ``ParsePortRange`` takes ``"min-max"``,
  a single ``"port"`` or ``"base+offset"`` (``"30000+2767"``), inclusive at
  both ends, and prints it back as ``"min-max"``; its errors are "unable to
  parse port range: ...", "the port range cannot be greater than 65535: ..."
  and "end port cannot be less than start port: ...". Unlike the flag
  parser we refuse an empty range (there would be nothing to allocate).
  Every port of the range is allocatable: nothing is reserved.
* **Bands (KEP-3668).** ``calculateRangeOffset``: the lower
  ``min(max(16, n // 32), 128)`` ports of a range of ``n`` form the *static*
  band, none when ``n <= 16``: 86 ports (30000-30085) for the default range,
  16 for a 100-port range, 128 from 4,096 ports up.
* **Choosing the next port** (``randomScanStrategyWithOffset``): a random
  start inside the dynamic band, then the first free port from there,
  wrapping around inside the band; only when the dynamic band is full, the
  same inside the static band. We use a seeded :class:`random.Random`, so the
  strategy is the API server's but the numbers are not Go's.
* **Messages**: "provided port is already allocated", "range is full",
  "provided port is not in the valid range. The range of valid ports is
  30000-32767", and on restore "the provided port range does not match the
  current port range". Releasing a free or out-of-range port is a no-op.
* **Snapshots** are the ``RangeAllocation`` object's: the range string and
  ``big.Int.Bytes()`` of the bitmap (big-endian, no leading zero bytes, bit
  ``i`` standing for port ``base + i``).
* **One nodePort, several protocols.** The allocator knows nothing of
  protocols: a port number is simply taken or free. Sharing is decided by the
  Service REST layer (``storage/alloc.go``). On create (``initNodePorts``),
  Service ports with the same ``port`` number (say 53/TCP and 53/UDP) share one
  nodePort: the one requested on any of them (``findRequestedNodePort``), or
  the one allocated for the first; a later entry that asks for a *different*
  nodePort gets it allocated separately. On update (``updateNodePorts``) a
  nodePort the old object already held is kept without allocating it again,
  an explicit nodePort used by several ports is allocated once, a port
  without one always gets a new one, the same (protocol, nodePort) pair twice
  is an error ("duplicate nodePort"), and old nodePorts no longer used are
  released only when the update commits (``ReleaseDeferred``). The
  healthCheckNodePort comes from the same allocator. So the registry, not this
  module, implements reuse; :meth:`NodePortAllocator.operation` gives it the
  transaction it needs.

Our choices: unparsable ranges and snapshots raise
:class:`~kservice.errors.NotInRangeError` (also a :class:`ValueError`); a
port that is not an ``int`` raises :class:`TypeError`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import TypeAlias

from kservice.control._bitmap import (
    AllocationOperation,
    Band,
    BandedBitmap,
    BandUsage,
    BitmapAllocator,
    Occupancy,
    band_offset,
)
from kservice.errors import AlreadyAllocatedError, NotInRangeError, RangeFullError

__all__ = [
    "DEFAULT_NODE_PORT_RANGE",
    "AllocationOperation",
    "Band",
    "BandUsage",
    "NodePortAllocator",
    "Occupancy",
    "PortAllocationOperation",
    "parse_port_range",
]

#: kube-apiserver's default ``--service-node-port-range``.
DEFAULT_NODE_PORT_RANGE = "30000-32767"
#: An :class:`AllocationOperation` over a NodePort allocator.
PortAllocationOperation: TypeAlias = AllocationOperation[int, int]

ERR_ALLOCATED = "provided port is already allocated"
ERR_FULL = "range is full"
ERR_MISMATCHED_RANGE = "the provided port range does not match the current port range"

_NUMBER = re.compile(r"[0-9]+")
_MAX_PORT = 65535


def parse_port_range(spec: str | tuple[int, int]) -> tuple[int, int]:
    """``(first, last)`` of a port range, inclusive, as ``ParsePortRange`` reads it.

    Accepts ``"min-max"``, ``"port"``, ``"base+offset"`` or a ``(min, max)``
    tuple; raises :class:`NotInRangeError` with the parser's message otherwise.
    """
    if isinstance(spec, tuple):
        if len(spec) != 2 or not all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in spec
        ):
            raise NotInRangeError(f"unable to parse port range: {spec!r}")
        low, high = spec
        text = f"{low}-{high}"
    elif isinstance(spec, str):
        text = spec.strip()
        hyphen, plus = text.find("-"), text.find("+")
        if hyphen == -1 and plus == -1:
            parts, joiner = [text], ""
        elif plus == -1:
            parts, joiner = [text[:hyphen], text[hyphen + 1 :]], "-"
        elif hyphen == -1:
            parts, joiner = [text[:plus], text[plus + 1 :]], "+"
        else:
            raise NotInRangeError(f"unable to parse port range: {text}")
        if not all(_NUMBER.fullmatch(p) for p in parts):
            raise NotInRangeError(f"unable to parse port range: {text}")
        numbers = [int(p) for p in parts]
        low = numbers[0]
        if joiner == "":
            high = low
        elif joiner == "-":
            high = numbers[1]
        else:
            high = low + numbers[1]
    else:
        raise TypeError(f"expected a port range string or tuple, got {type(spec).__name__}")
    if low > _MAX_PORT or high > _MAX_PORT:
        raise NotInRangeError(f"the port range cannot be greater than {_MAX_PORT}: {text}")
    if high < low:
        raise NotInRangeError(f"end port cannot be less than start port: {text}")
    return low, high


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"expected a port number, got {type(port).__name__}")
    return port


class NodePortAllocator(BitmapAllocator):
    """Allocates NodePorts out of one port range, thread-safely.

    Iterating yields the allocated ports in order; ``len()`` is the number
    allocated.
    """

    __slots__ = ("_bits", "_first", "_last", "_range")

    def __init__(
        self,
        port_range: str | tuple[int, int] = DEFAULT_NODE_PORT_RANGE,
        *,
        seed: int | None = None,
    ) -> None:
        first, last = parse_port_range(port_range)
        size = last - first + 1
        static = band_offset(size, minimum=16, step=32, maximum=128)
        self._first = first
        self._last = last
        self._range = f"{first}-{last}"
        self._bits = BandedBitmap(size, static, random.Random(seed))

    @classmethod
    def from_snapshot(
        cls, range_spec: str, data: bytes, *, seed: int | None = None
    ) -> NodePortAllocator:
        """A new allocator over ``range_spec`` holding a :meth:`snapshot`'s allocations."""
        allocator = cls(range_spec, seed=seed)
        allocator.restore(range_spec, data)
        return allocator

    # -- the range ---------------------------------------------------------

    @property
    def port_range(self) -> str:
        """The range, canonical (``"30000-32767"``)."""
        return self._range

    @property
    def first(self) -> int:
        """The lowest port of the range."""
        return self._first

    @property
    def last(self) -> int:
        """The highest port of the range."""
        return self._last

    # -- ports ---------------------------------------------------------------

    def _offset(self, port: int) -> int | None:
        offset = _check_port(port) - self._first
        return offset if 0 <= offset < self._bits.size else None

    def _not_in_range(self) -> NotInRangeError:
        return NotInRangeError(
            f"provided port is not in the valid range. The range of valid ports is {self._range}"
        )

    def _canonical(self, port: int) -> int:
        return _check_port(port)

    def contains(self, port: int) -> bool:
        """Whether ``port`` lies in the range."""
        return self._offset(port) is not None

    def has(self, port: int) -> bool:
        """Whether ``port`` is allocated (``False`` outside the range)."""
        offset = self._offset(port)
        return offset is not None and self._bits.has(offset)

    def band_of(self, port: int) -> Band:
        """``"static"`` or ``"dynamic"``; :class:`NotInRangeError` outside the range."""
        offset = self._offset(port)
        if offset is None:
            raise self._not_in_range()
        return self._bits.band_of(offset)

    def allocate(self, port: int) -> int:
        """Allocate this port (in either band) and return it.

        Raises :class:`NotInRangeError` or :class:`AlreadyAllocatedError`.
        """
        offset = self._offset(port)
        if offset is None:
            raise self._not_in_range()
        if not self._bits.allocate(offset):
            raise AlreadyAllocatedError(ERR_ALLOCATED)
        return port

    def allocate_next(self) -> int:
        """Allocate a free port, from the dynamic band first; :class:`RangeFullError`."""
        offset = self._bits.allocate_next()
        if offset is None:
            raise RangeFullError(ERR_FULL)
        return self._first + offset

    def release(self, port: int) -> None:
        """Give ``port`` back; a no-op if it is free or out of range."""
        offset = self._offset(port)
        if offset is not None:
            self._bits.release(offset)

    def __iter__(self) -> Iterator[int]:
        first = self._first
        return (first + offset for offset in self._bits.offsets())

    # -- persistence and transactions ---------------------------------------

    def snapshot(self) -> tuple[str, bytes]:
        """``(range, data)`` as the ``RangeAllocation`` object stores them."""
        return self._range, self._bits.snapshot()

    def restore(self, range_spec: str, data: bytes) -> None:
        """Replace the allocations with a snapshot of the same range.

        Raises :class:`NotInRangeError` if ``range_spec`` is another range or
        ``data`` has ports past the end of the range; nothing changes then.
        """
        try:
            other = parse_port_range(range_spec)
        except (NotInRangeError, TypeError):
            raise NotInRangeError(ERR_MISMATCHED_RANGE) from None
        if other != (self._first, self._last):
            raise NotInRangeError(ERR_MISMATCHED_RANGE)
        try:
            self._bits.restore(data)
        except ValueError:
            raise NotInRangeError(
                f"restoring snapshot encountered ports outside {self._range}"
            ) from None

    def operation(self, *, dry_run: bool = False) -> PortAllocationOperation:
        """Start an all-or-nothing :class:`AllocationOperation` on this allocator."""
        return AllocationOperation(self, dry_run=dry_run)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._range!r}, used={self.used}, size={self.size})"
