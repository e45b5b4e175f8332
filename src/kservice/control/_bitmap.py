"""The bitmap core shared by the ClusterIP and NodePort allocators.

The API server keeps one bit per allocatable value in a ``big.Int``
(``pkg/registry/core/service/allocator/bitmap.go``) and scans it linearly.
Here the bits live in 64-bit words under a small tree of "word is full"
summaries, so finding the first free bit at or after a position costs one
step per level (four levels for the 2^20 bits of a /12) whatever the occupancy.

:class:`BandedBitmap` adds what both allocators share: the KEP-3070 /
KEP-3668 split into a lower *static* band and an upper *dynamic* band, the
API server's "random offset, then scan forward" choice of the next value,
counts per band, the snapshot bytes and a lock. :class:`AllocationOperation`
is the all-or-nothing helper modelled on the API server's
``portallocator.PortAllocationOperation``.

Everything here works on offsets ``0 .. size-1``; turning them into IPs or
ports (and writing the API server's error messages) is the allocators' job.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Generic, Literal, Protocol, TypeVar

import attrs

from kservice.errors import AllocationError

__all__ = [
    "AllocationOperation",
    "Band",
    "BandUsage",
    "BandedBitmap",
    "Bitmap",
    "Occupancy",
    "band_offset",
]

_WORD_BITS = 64
_FULL = (1 << _WORD_BITS) - 1

#: The two bands of a range: ``"static"`` (the lower one, kept for explicit
#: requests) and ``"dynamic"`` (the upper one, where ``allocate_next`` looks first).
Band = Literal["static", "dynamic"]


def _pad(words: list[int], used_bits: int) -> None:
    """Mark the bits past ``used_bits`` in the last word as taken, so searches skip them."""
    tail = used_bits % _WORD_BITS
    if used_bits == 0:
        words[-1] = _FULL
    elif tail:
        words[-1] |= _FULL & ~((1 << tail) - 1)


class Bitmap:
    """A fixed-size set of bits with a fast "next clear bit" search. Not locked.

    Level 0 holds the bits, 64 to a word. Bit ``j`` of a word at level ``k+1``
    is set when word ``j`` of level ``k`` is full. Bits past the end are kept
    set, so a search never has to check bounds and full words stay full.
    """

    __slots__ = ("_levels", "_size")

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"bitmap size must not be negative, got {size}")
        self._size = size
        self._levels: list[list[int]] = []
        self._build([0] * max(1, -(-size // _WORD_BITS)))

    def _build(self, words: list[int]) -> None:
        _pad(words, self._size)
        levels = [words]
        while len(levels[-1]) > 1:
            child = levels[-1]
            parent = [0] * -(-len(child) // _WORD_BITS)
            for index, word in enumerate(child):
                if word == _FULL:
                    parent[index >> 6] |= 1 << (index & 63)
            _pad(parent, len(child))
            levels.append(parent)
        self._levels = levels

    @property
    def size(self) -> int:
        """How many bits the map holds."""
        return self._size

    def test(self, i: int) -> bool:
        """Whether bit ``i`` is set (``0 <= i < size``)."""
        return bool(self._levels[0][i >> 6] >> (i & 63) & 1)

    def set(self, i: int) -> bool:
        """Set bit ``i``; return ``False`` if it was already set."""
        levels = self._levels
        words = levels[0]
        index, bit = i >> 6, 1 << (i & 63)
        word = words[index]
        if word & bit:
            return False
        word |= bit
        words[index] = word
        level = 1
        # A word that just became full sets its bit one level up, and so on.
        while word == _FULL and level < len(levels):
            index, bit = index >> 6, 1 << (index & 63)
            words = levels[level]
            word = words[index] | bit
            words[index] = word
            level += 1
        return True

    def clear(self, i: int) -> bool:
        """Clear bit ``i``; return ``False`` if it was already clear."""
        levels = self._levels
        words = levels[0]
        index, bit = i >> 6, 1 << (i & 63)
        word = words[index]
        if not word & bit:
            return False
        words[index] = word ^ bit
        level = 1
        # Only a word that was full has a summary bit to clear.
        while word == _FULL and level < len(levels):
            index, bit = index >> 6, 1 << (index & 63)
            words = levels[level]
            word = words[index]
            words[index] = word & ~bit
            level += 1
        return True

    def next_clear(self, start: int) -> int:
        """The first clear bit at or after ``start``, or :attr:`size` if there is none."""
        if start >= self._size:
            return self._size
        levels = self._levels
        level, pos = 0, start
        # Climb until some word has a clear bit at or after ``pos``.
        while True:
            words = levels[level]
            index = pos >> 6
            if index >= len(words):
                return self._size
            free = ~words[index] & (_FULL << (pos & 63)) & _FULL
            if free:
                pos = (index << 6) | ((free & -free).bit_length() - 1)
                break
            level += 1
            if level == len(levels):
                return self._size
            pos = index + 1
        # Descend: each clear summary bit names a child word with a clear bit.
        while level:
            level -= 1
            free = ~levels[level][pos] & _FULL
            pos = (pos << 6) | ((free & -free).bit_length() - 1)
        return pos

    def iter_set(self) -> Iterator[int]:
        """The set bits, in increasing order."""
        words = self._levels[0]
        last = len(words) - 1
        tail = self._size - last * _WORD_BITS
        for index, word in enumerate(words):
            if index == last:
                word &= (1 << tail) - 1
            base = index << 6
            while word:
                low = word & -word
                yield base + low.bit_length() - 1
                word ^= low

    def to_int(self) -> int:
        """The bits as one integer, bit ``i`` of the map being bit ``i`` of the int."""
        data = b"".join(word.to_bytes(8, "little") for word in self._levels[0])
        return int.from_bytes(data, "little") & ((1 << self._size) - 1)

    def load_int(self, value: int) -> int:
        """Replace the bits with those of ``value``; return how many are set.

        Raises :class:`ValueError` if ``value`` is negative or has bits at or
        past :attr:`size`; the map is left unchanged then.
        """
        if value < 0 or value >> self._size:
            raise ValueError("value has bits outside the bitmap")
        count = max(1, -(-self._size // _WORD_BITS))
        data = value.to_bytes(count * 8, "little")
        self._build([int.from_bytes(data[i : i + 8], "little") for i in range(0, count * 8, 8)])
        return value.bit_count()


@attrs.frozen
class Occupancy:
    """How many values of a band (or range) are used, out of how many."""

    used: int
    total: int

    @property
    def free(self) -> int:
        """How many values are left."""
        return self.total - self.used


@attrs.frozen
class BandUsage:
    """Occupancy of the static (lower) and dynamic (upper) bands of a range."""

    static: Occupancy
    dynamic: Occupancy


def band_offset(size: int, *, minimum: int, step: int, maximum: int) -> int:
    """The size of the static band: ``min(max(minimum, size // step), maximum)``.

    Mirrors ``calculateRangeOffset`` of the ip and port allocators: no static
    band at all when ``size <= minimum``.
    """
    if size <= minimum:
        return 0
    return min(max(minimum, size // step), maximum)


class BandedBitmap:
    """Offsets ``0 .. size-1`` with a static band ``0 .. static_size-1`` below the rest.

    Thread-safe: every public method takes the lock.
    """

    __slots__ = ("_bits", "_count", "_lock", "_rng", "_size", "_static_count", "_static_size")

    def __init__(self, size: int, static_size: int, rng: random.Random) -> None:
        if not 0 <= static_size < max(size, 1):
            raise ValueError(f"static band of {static_size} does not fit a range of {size}")
        self._size = size
        self._static_size = static_size
        self._bits = Bitmap(size)
        self._count = 0
        self._static_count = 0
        self._rng = rng
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    @property
    def static_size(self) -> int:
        return self._static_size

    @property
    def used(self) -> int:
        return self._count

    def usage(self) -> BandUsage:
        with self._lock:
            count, static_count = self._count, self._static_count
        return BandUsage(
            static=Occupancy(static_count, self._static_size),
            dynamic=Occupancy(count - static_count, self._size - self._static_size),
        )

    def band_of(self, offset: int) -> Band:
        return "static" if offset < self._static_size else "dynamic"

    def has(self, offset: int) -> bool:
        with self._lock:
            return self._bits.test(offset)

    def allocate(self, offset: int) -> bool:
        """Take ``offset``; ``False`` if it was already taken."""
        with self._lock:
            if not self._bits.set(offset):
                return False
            self._count += 1
            if offset < self._static_size:
                self._static_count += 1
            return True

    def release(self, offset: int) -> bool:
        """Free ``offset``; ``False`` if it was already free."""
        with self._lock:
            if not self._bits.clear(offset):
                return False
            self._count -= 1
            if offset < self._static_size:
                self._static_count -= 1
            return True

    def allocate_next(self) -> int | None:
        """Take a free offset chosen as the API server does, or ``None`` when full.

        ``randomScanStrategyWithOffset``: draw a random start inside the dynamic
        band and take the first free offset from there, wrapping around inside
        the band; only if the dynamic band is full, do the same in the static band.
        """
        with self._lock:
            if self._count >= self._size:
                return None
            lower = self._static_size
            start = self._rng.randrange(self._size - lower)
            offset = self._scan(lower + start, lower, self._size)
            if offset is None and lower:
                offset = self._scan(self._rng.randrange(lower), 0, lower)
            if offset is None:  # pragma: no cover - count says there is room
                return None
            self._bits.set(offset)
            self._count += 1
            if offset < lower:
                self._static_count += 1
            return offset

    def _scan(self, start: int, low: int, high: int) -> int | None:
        """First free offset in ``[start, high)``, else in ``[low, start)``."""
        found = self._bits.next_clear(start)
        if found < high:
            return found
        found = self._bits.next_clear(low)
        return found if found < start else None

    def offsets(self) -> list[int]:
        """The taken offsets, in increasing order."""
        with self._lock:
            return list(self._bits.iter_set())

    def snapshot(self) -> bytes:
        """The bits as ``big.Int.Bytes()`` gives them: big-endian, no leading zero bytes."""
        with self._lock:
            value = self._bits.to_int()
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    def restore(self, data: bytes) -> None:
        """Replace the bits with a :meth:`snapshot`; ``ValueError`` if they overflow the range."""
        value = int.from_bytes(data, "big")
        with self._lock:
            self._count = self._bits.load_int(value)
            self._static_count = (value & ((1 << self._static_size) - 1)).bit_count()


class BitmapAllocator:
    """What both allocators share: counts and band occupancy of their bitmap.

    Subclasses set ``_bits`` (a :class:`BandedBitmap`) and translate values
    (addresses, ports) to and from bit offsets.
    """

    __slots__ = ()
    _bits: BandedBitmap

    @property
    def size(self) -> int:
        """How many values can be allocated at all."""
        return self._bits.size

    @property
    def used(self) -> int:
        """How many values are allocated."""
        return self._bits.used

    @property
    def free(self) -> int:
        """How many values are left."""
        return self._bits.size - self._bits.used

    def band_usage(self) -> BandUsage:
        """Occupancy of the static (lower) and dynamic (upper) bands."""
        return self._bits.usage()

    def __len__(self) -> int:
        return self._bits.used


_K = TypeVar("_K")
_V = TypeVar("_V")
_Kc = TypeVar("_Kc", contravariant=True)


class _Target(Protocol[_Kc, _V]):
    """What an :class:`AllocationOperation` needs from an allocator."""

    def allocate(self, value: _Kc | _V, /) -> _V: ...

    def allocate_next(self) -> _V: ...

    def release(self, value: _Kc | _V, /) -> None: ...

    def _canonical(self, value: _Kc | _V, /) -> _V: ...


class AllocationOperation(Generic[_K, _V]):
    """An all-or-nothing set of allocations and releases on one allocator.

    Modelled on the API server's ``PortAllocationOperation``: it is better to
    leak a value than to hand it out twice, so allocations happen at once
    (and are undone by :meth:`rollback`) while releases are only recorded
    (:meth:`release_deferred`) and done by :meth:`commit`. A failed update
    therefore never frees the values the old object still holds.

    Use it as a context manager and call :meth:`commit` once the owner is
    stored; leaving the block without committing rolls back::

        with alloc.operation() as op:
            ip = op.allocate_next()
            op.release_deferred(old_ip)
            store(service)          # may raise: then ip is released again
            op.commit()             # old_ip is released now

    With ``dry_run=True`` every allocation is checked and held for the life
    of the operation but always given back at the end, and deferred releases
    are never done, so the allocator ends exactly as it started.

    An operation is meant for one thread; the allocator itself is thread-safe.
    """

    __slots__ = ("_allocated", "_deferred", "_dry_run", "_finished", "_target")

    def __init__(self, target: _Target[_K, _V], *, dry_run: bool = False) -> None:
        self._target = target
        self._dry_run = dry_run
        self._allocated: list[_V] = []
        self._deferred: list[_V] = []
        self._finished = False

    @property
    def dry_run(self) -> bool:
        """Whether the operation gives everything back at the end."""
        return self._dry_run

    @property
    def allocated(self) -> tuple[_V, ...]:
        """The values allocated by this operation so far."""
        return tuple(self._allocated)

    @property
    def pending_release(self) -> tuple[_V, ...]:
        """The values :meth:`commit` will release."""
        return tuple(self._deferred)

    @property
    def finished(self) -> bool:
        """Whether :meth:`commit` or :meth:`rollback` has run."""
        return self._finished

    def _check_open(self) -> None:
        if self._finished:
            raise AllocationError("the allocation operation is already finished")

    def allocate(self, value: _K | _V) -> _V:
        """Allocate ``value`` now; :meth:`rollback` gives it back."""
        self._check_open()
        result = self._target.allocate(value)
        self._allocated.append(result)
        return result

    def allocate_next(self) -> _V:
        """Allocate any free value now; :meth:`rollback` gives it back."""
        self._check_open()
        result = self._target.allocate_next()
        self._allocated.append(result)
        return result

    def release_deferred(self, value: _K | _V) -> None:
        """Release ``value`` when (and only if) the operation commits."""
        self._check_open()
        self._deferred.append(self._target._canonical(value))

    def commit(self) -> None:
        """Do the deferred releases and end the operation (a dry run gives back instead)."""
        self._check_open()
        self._finished = True
        if self._dry_run:
            self._give_back()
            return
        for value in self._deferred:
            self._target.release(value)

    def rollback(self) -> None:
        """Give back every value this operation allocated; a no-op once finished."""
        if self._finished:
            return
        self._finished = True
        self._give_back()

    def _give_back(self) -> None:
        for value in reversed(self._allocated):
            self._target.release(value)

    def __enter__(self) -> AllocationOperation[_K, _V]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()
