"""The ClusterIP allocator: one service CIDR, the API server's bitmap rules.

Facts carried over from the API server (``pkg/registry/core/service/ipallocator/
bitmap.go``, ``interfaces.go``, ``allocator/bitmap.go``, k8s.io/utils ``RangeSize``
and ``cmd/kube-apiserver/app/options/validation.go``):

* **Reserved addresses.** Offset 0 of the bitmap is the network address + 1.
  The network address is never allocatable, nor, for IPv4, the broadcast
  address; IPv6 has no broadcast, so the last address of an IPv6 range *is*
  allocatable. Neither is merely "allocated at start": they lie outside the
  bitmap and can never be released. So ``/24`` gives 254 addresses, ``/30``
  gives 2 and ``/31`` and ``/32`` give none (the API server does not apply
  RFC 3021 here, unlike netaddr's habit); IPv6 ``/126`` gives 3, ``/127``
  gives 1 (the upper address) and ``/128`` none. (``RangeSize`` calls an
  IPv6 ``/0`` or ``/1`` empty, and so do we.)
* **IPv6 cap.** The bitmap allocator caps the size of an IPv6 range at 2^16
  addresses *before* dropping the network address: every IPv6 prefix of
  ``/112`` or shorter (``/64`` included) yields exactly the 65,535 addresses
  ``prefix::1 .. prefix::ffff``. We mirror that cap, which is what the
  bitmap-backed API server does and keeps the map small. (The newer
  IPAddress-object allocator of MultiCIDRServiceAllocator has no cap but
  refuses prefixes shorter than ``/64``; we do not model it.)
* **Range limit.** kube-apiserver refuses an IPv4 range with more than 2^20
  addresses ("specified --service-cluster-ip-range is too large; for 32-bit
  addresses, the mask must be >= 12"); we refuse it too, since the bitmap is
  kept whole. The same flag check requires ``>= /108`` for IPv6, but thanks
  to the cap an IPv6 bitmap never exceeds 2^16 bits, so we accept any IPv6
  prefix, as the bitmap allocator itself does.
* **Bands (KEP-3070).** ``calculateRangeOffset``: with ``n`` the size of the
  whole CIDR (network and broadcast included, *not* capped), the lower
  ``min(max(16, n // 16), 256)`` addresses form the *static* band, and there
  is no static band at all when ``n <= 16``. So ``/28`` has none, ``/27`` and
  ``/24`` have 16, ``/20`` and larger have 256; IPv6 ``/120`` has 16,
  ``/112`` and ``/64`` have 256.
* **Choosing the next address** (``randomScanStrategyWithOffset``): a random
  start inside the dynamic band, then the first free address from there,
  wrapping around inside the band; only when the dynamic band is full, the
  same inside the static band. We use a seeded :class:`random.Random`, so the
  strategy is the API server's but the numbers are not Go's.
* **Messages** are the API server's: "provided IP is already allocated",
  "range is full", "the provided IP (1.1.1.1) is not in the valid range. The
  range of valid IPs is 10.96.0.0/12", and on restore "the provided network
  does not match the current range". Releasing a free or out-of-range
  address is a no-op, as upstream.
* **Snapshots** are what the ``RangeAllocation`` object stores: the range
  string (``IPNet.String()``) and ``big.Int.Bytes()`` of the bitmap, i.e.
  big-endian bytes without leading zeros, bit ``i`` standing for offset ``i``.

Our choices where the API server has nothing to say: unparsable input (a bad
IP string, CIDR or snapshot) raises :class:`~kservice.errors.NotInRangeError`,
which is also a :class:`ValueError`, so callers handle one error for "this
address cannot be allocated here"; the wrong type raises :class:`TypeError`.
A CIDR with host bits set is accepted and masked, as ``net.ParseCIDR`` does.
An IPv4-mapped IPv6 address counts as the IPv4 address, as Go's ``net.IP``
does. Results are canonical strings; integers are used underneath.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Iterable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal, TypeAlias

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
    "AllocationOperation",
    "Band",
    "BandUsage",
    "ClusterIPAllocator",
    "ClusterIPAllocators",
    "IPAllocationOperation",
    "IPFamily",
    "IPLike",
    "Occupancy",
]

#: What the allocators accept as an address: a string or an :mod:`ipaddress` object.
IPLike: TypeAlias = str | IPv4Address | IPv6Address
#: The ``ipFamilies`` values of a Service.
IPFamily = Literal["IPv4", "IPv6"]
#: An :class:`AllocationOperation` over a ClusterIP allocator.
IPAllocationOperation: TypeAlias = AllocationOperation[IPLike, str]

_IPV6_MAX_RANGE = 1 << 16  # ipallocator/bitmap.go: "Limit the max size" of an IPv6 range
_IPV4_MAX_HOST_BITS = 20  # kube-apiserver maxCIDRBits: an IPv4 range must be /12 or longer

ERR_ALLOCATED = "provided IP is already allocated"
ERR_FULL = "range is full"
ERR_MISMATCHED_NETWORK = "the provided network does not match the current range"


def _parse_cidr(cidr: str | IPv4Network | IPv6Network) -> IPv4Network | IPv6Network:
    if isinstance(cidr, IPv4Network | IPv6Network):
        return cidr
    if not isinstance(cidr, str):
        raise TypeError(f"expected a CIDR string or ipaddress network, got {type(cidr).__name__}")
    try:
        if "/" not in cidr:
            raise ValueError(cidr)
        network = ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise NotInRangeError(f"invalid CIDR address: {cidr}") from None
    if isinstance(network, IPv6Network) and network.network_address.scope_id:
        raise NotInRangeError(f"invalid CIDR address: {cidr}")
    return network


def _range_size(network: IPv4Network | IPv6Network) -> int:
    """k8s.io/utils ``RangeSize``: addresses in the CIDR, 0 for IPv4 /0-/1 and IPv6 /0-/1."""
    host_bits = network.max_prefixlen - network.prefixlen
    if host_bits >= network.max_prefixlen - 1:
        return 0
    return 1 << host_bits


class ClusterIPAllocator(BitmapAllocator):
    """Allocates ClusterIPs out of one service CIDR (IPv4 or IPv6), thread-safely.

    Accepts addresses as strings or :mod:`ipaddress` objects and returns them
    as canonical strings. Iterating yields the allocated addresses in order;
    ``len()`` is the number allocated.
    """

    __slots__ = ("_base", "_bits", "_cidr", "_family", "_network")

    def __init__(self, cidr: str | IPv4Network | IPv6Network, *, seed: int | None = None) -> None:
        network = _parse_cidr(cidr)
        host_bits = network.max_prefixlen - network.prefixlen
        if network.version == 4 and host_bits > _IPV4_MAX_HOST_BITS:
            raise NotInRangeError(
                "specified --service-cluster-ip-range is too large; for 32-bit addresses, "
                f"the mask must be >= {32 - _IPV4_MAX_HOST_BITS}"
            )
        cidr_size = _range_size(network)
        size = cidr_size
        if network.version == 6:
            size = min(size, _IPV6_MAX_RANGE)
        else:
            size -= 1  # the broadcast address
        size = max(0, size - 1)  # the network address
        static = band_offset(cidr_size, minimum=16, step=16, maximum=256)
        self._network = network
        self._cidr = str(network)
        self._family: IPFamily = "IPv4" if network.version == 4 else "IPv6"
        self._base = int(network.network_address) + 1
        self._bits = BandedBitmap(size, static, random.Random(seed))

    @classmethod
    def from_snapshot(
        cls, range_spec: str, data: bytes, *, seed: int | None = None
    ) -> ClusterIPAllocator:
        """A new allocator over ``range_spec`` holding a :meth:`snapshot`'s allocations."""
        allocator = cls(range_spec, seed=seed)
        allocator.restore(range_spec, data)
        return allocator

    # -- the range ---------------------------------------------------------

    @property
    def cidr(self) -> str:
        """The service CIDR, canonical (``"10.96.0.0/12"``)."""
        return self._cidr

    @property
    def network(self) -> IPv4Network | IPv6Network:
        """The service CIDR as an :mod:`ipaddress` network."""
        return self._network

    @property
    def family(self) -> IPFamily:
        """``"IPv4"`` or ``"IPv6"``."""
        return self._family

    # -- addresses ---------------------------------------------------------

    def _address(self, ip: IPLike) -> IPv4Address | IPv6Address:
        if isinstance(ip, str):
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                raise NotInRangeError(f"the provided IP ({ip}) is not a valid IP address") from None
            if isinstance(address, IPv6Address) and address.scope_id:
                raise NotInRangeError(f"the provided IP ({ip}) is not a valid IP address")
        elif isinstance(ip, IPv4Address | IPv6Address):
            address = ip
        else:
            raise TypeError(
                f"expected an IP address string or ipaddress object, got {type(ip).__name__}"
            )
        if self._network.version == 4 and isinstance(address, IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is not None:
                return mapped
        return address

    def _offset(self, address: IPv4Address | IPv6Address) -> int | None:
        if address.version != self._network.version:
            return None
        offset = int(address) - self._base
        if 0 <= offset < self._bits.size:
            return offset
        return None

    def _format(self, offset: int) -> str:
        value = self._base + offset
        if self._network.version == 4:
            return socket.inet_ntoa(value.to_bytes(4, "big"))
        if value >> 48:
            # inet_ntop is ten times faster than ipaddress and prints the same
            # RFC 5952 text, except for the ::/80 addresses it writes with a
            # dotted IPv4 tail; those go through ipaddress.
            return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))
        return str(IPv6Address(value))

    def _not_in_range(self, address: IPv4Address | IPv6Address) -> NotInRangeError:
        return NotInRangeError(
            f"the provided IP ({address}) is not in the valid range. "
            f"The range of valid IPs is {self._cidr}"
        )

    def _canonical(self, ip: IPLike) -> str:
        return str(self._address(ip))

    def contains(self, ip: IPLike) -> bool:
        """Whether ``ip`` lies in the allocatable part of the range."""
        return self._offset(self._address(ip)) is not None

    def has(self, ip: IPLike) -> bool:
        """Whether ``ip`` is allocated (``False`` outside the range)."""
        offset = self._offset(self._address(ip))
        return offset is not None and self._bits.has(offset)

    def band_of(self, ip: IPLike) -> Band:
        """``"static"`` or ``"dynamic"``; :class:`NotInRangeError` outside the range."""
        address = self._address(ip)
        offset = self._offset(address)
        if offset is None:
            raise self._not_in_range(address)
        return self._bits.band_of(offset)

    def allocate(self, ip: IPLike) -> str:
        """Allocate this address (in either band) and return it in canonical form.

        Raises :class:`NotInRangeError` or :class:`AlreadyAllocatedError`.
        """
        address = self._address(ip)
        offset = self._offset(address)
        if offset is None:
            raise self._not_in_range(address)
        if not self._bits.allocate(offset):
            raise AlreadyAllocatedError(ERR_ALLOCATED)
        return self._format(offset)

    def allocate_next(self) -> str:
        """Allocate a free address, from the dynamic band first; :class:`RangeFullError`."""
        offset = self._bits.allocate_next()
        if offset is None:
            raise RangeFullError(ERR_FULL)
        return self._format(offset)

    def release(self, ip: IPLike) -> None:
        """Give ``ip`` back; a no-op if it is free or out of range."""
        offset = self._offset(self._address(ip))
        if offset is not None:
            self._bits.release(offset)

    def __iter__(self) -> Iterator[str]:
        return (self._format(offset) for offset in self._bits.offsets())

    # -- persistence and transactions ---------------------------------------

    def snapshot(self) -> tuple[str, bytes]:
        """``(range, data)`` as the ``RangeAllocation`` object stores them."""
        return self._cidr, self._bits.snapshot()

    def restore(self, range_spec: str, data: bytes) -> None:
        """Replace the allocations with a snapshot of the same range.

        Raises :class:`NotInRangeError` if ``range_spec`` is another network or
        ``data`` has addresses past the end of the range; nothing changes then.
        """
        try:
            other = _parse_cidr(range_spec)
        except NotInRangeError:
            raise NotInRangeError(ERR_MISMATCHED_NETWORK) from None
        if other != self._network:
            raise NotInRangeError(ERR_MISMATCHED_NETWORK)
        try:
            self._bits.restore(data)
        except ValueError:
            raise NotInRangeError(
                f"restoring snapshot encountered addresses outside {self._cidr}"
            ) from None

    def operation(self, *, dry_run: bool = False) -> IPAllocationOperation:
        """Start an all-or-nothing :class:`AllocationOperation` on this allocator."""
        return AllocationOperation(self, dry_run=dry_run)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._cidr!r}, used={self.used}, size={self.size})"


class ClusterIPAllocators:
    """The allocators of a cluster: one per configured family, primary first.

    The primary family is the cluster's default (``--service-cluster-ip-range[0]``);
    a dual-stack cluster has a secondary allocator of the other family.
    """

    __slots__ = ("_by_family", "_ordered")

    def __init__(
        self, primary: ClusterIPAllocator, secondary: ClusterIPAllocator | None = None
    ) -> None:
        if secondary is not None and secondary.family == primary.family:
            raise NotInRangeError(
                "--service-cluster-ip-range[0] and --service-cluster-ip-range[1] "
                "must be of different IP family"
            )
        ordered = [primary] if secondary is None else [primary, secondary]
        self._ordered: tuple[ClusterIPAllocator, ...] = tuple(ordered)
        self._by_family: dict[IPFamily, ClusterIPAllocator] = {a.family: a for a in ordered}

    @classmethod
    def from_cidrs(
        cls, cidrs: str | Iterable[str], *, seed: int | None = None
    ) -> ClusterIPAllocators:
        """Build from ``"10.96.0.0/12,fd00::/108"`` (the flag's form) or a list of CIDRs.

        With a seed, the secondary allocator gets ``seed + 1`` so the two
        families do not draw the same numbers.
        """
        if isinstance(cidrs, str):
            items = [c.strip() for c in cidrs.split(",")]
        else:
            items = [c.strip() for c in cidrs]
        if not items or not items[0]:
            raise NotInRangeError("--service-cluster-ip-range must contain at least one valid cidr")
        if len(items) > 2:
            raise NotInRangeError(
                "--service-cluster-ip-range must not contain more than two entries"
            )
        primary = ClusterIPAllocator(items[0], seed=seed)
        secondary = None
        if len(items) == 2:
            secondary = ClusterIPAllocator(items[1], seed=None if seed is None else seed + 1)
        return cls(primary, secondary)

    @property
    def primary(self) -> ClusterIPAllocator:
        """The allocator of the cluster's default family."""
        return self._ordered[0]

    @property
    def secondary(self) -> ClusterIPAllocator | None:
        """The allocator of the other family, on a dual-stack cluster."""
        return self._ordered[1] if len(self._ordered) > 1 else None

    @property
    def families(self) -> tuple[IPFamily, ...]:
        """The configured families, primary first."""
        return tuple(a.family for a in self._ordered)

    @property
    def dual_stack(self) -> bool:
        """Whether both families are configured."""
        return len(self._ordered) == 2

    def get(self, family: IPFamily) -> ClusterIPAllocator | None:
        """The allocator of ``family``, or ``None`` if it is not configured."""
        return self._by_family.get(family)

    def __getitem__(self, family: IPFamily) -> ClusterIPAllocator:
        return self._by_family[family]

    def __contains__(self, family: object) -> bool:
        return family in self._by_family

    def __iter__(self) -> Iterator[ClusterIPAllocator]:
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    def __repr__(self) -> str:
        cidrs = ",".join(a.cidr for a in self._ordered)
        return f"{type(self).__name__}({cidrs!r})"
