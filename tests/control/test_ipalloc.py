"""Tests of the ClusterIP allocator and of the bitmap core it shares with NodePorts."""

from __future__ import annotations

import ipaddress
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kservice.control._bitmap import Bitmap
from kservice.control.ipalloc import (
    BandUsage,
    ClusterIPAllocator,
    ClusterIPAllocators,
    Occupancy,
)
from kservice.errors import (
    AllocationError,
    AlreadyAllocatedError,
    KServiceError,
    NotInRangeError,
    RangeFullError,
)

# -- the bitmap core -----------------------------------------------------------


def _model_next_clear(bits: set[int], size: int, start: int) -> int:
    return next((i for i in range(start, size) if i not in bits), size)


# Sizes around word and summary-level boundaries (64, 4096 and 262144 bits).
BITMAP_SIZES = [0, 1, 63, 64, 65, 127, 128, 4095, 4096, 4097, 70000, 262145]


@pytest.mark.parametrize("size", BITMAP_SIZES)
def test_bitmap_fill_and_drain(size: int) -> None:
    bm = Bitmap(size)
    for i in range(size):
        assert bm.next_clear(0) == i
        assert bm.set(i)
    assert bm.next_clear(0) == size
    assert list(bm.iter_set()) == list(range(size))
    assert bm.to_int() == (1 << size) - 1
    for i in reversed(range(size)):
        assert bm.clear(i)
        assert bm.next_clear(0) == i
    if size:
        assert not bm.clear(0)
    assert bm.to_int() == 0


@settings(max_examples=150)
@given(
    size=st.sampled_from(BITMAP_SIZES[1:]),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 10**6)), max_size=200),
    probes=st.lists(st.integers(0, 10**6), max_size=20),
)
def test_bitmap_matches_a_set(size: int, ops: list[tuple[bool, int]], probes: list[int]) -> None:
    bm = Bitmap(size)
    model: set[int] = set()
    for setting, raw in ops:
        i = raw % size
        if setting:
            assert bm.set(i) == (i not in model)
            model.add(i)
        else:
            assert bm.clear(i) == (i in model)
            model.discard(i)
    # Also fill a whole word or two, so summary levels are exercised.
    for i in range(min(size, 130)):
        bm.set(i)
        model.add(i)
    for raw in [*probes, 0, size - 1, size]:
        start = raw % (size + 1)
        assert bm.next_clear(start) == _model_next_clear(model, size, start)
    assert list(bm.iter_set()) == sorted(model)
    assert bm.to_int() == sum(1 << i for i in model)
    clone = Bitmap(size)
    assert clone.load_int(bm.to_int()) == len(model)
    assert list(clone.iter_set()) == sorted(model)


def test_bitmap_rejects_bits_past_the_end() -> None:
    bm = Bitmap(10)
    bm.set(3)
    with pytest.raises(ValueError):
        bm.load_int(1 << 10)
    assert list(bm.iter_set()) == [3]


# -- ranges and bands ------------------------------------------------------------

# cidr, usable addresses, static band, first usable, last usable
RANGES = [
    ("10.0.0.0/24", 254, 16, "10.0.0.1", "10.0.0.254"),
    ("10.0.0.0/16", 65534, 256, "10.0.0.1", "10.0.255.254"),
    ("10.96.0.0/12", 1048574, 256, "10.96.0.1", "10.111.255.254"),
    ("10.0.0.0/20", 4094, 256, "10.0.0.1", "10.0.15.254"),
    ("10.0.0.0/21", 2046, 128, "10.0.0.1", "10.0.7.254"),
    ("10.0.0.0/27", 30, 16, "10.0.0.1", "10.0.0.30"),
    ("10.0.0.0/28", 14, 0, "10.0.0.1", "10.0.0.14"),
    ("10.0.0.0/29", 6, 0, "10.0.0.1", "10.0.0.6"),
    ("10.0.0.0/30", 2, 0, "10.0.0.1", "10.0.0.2"),
    ("10.0.0.0/31", 0, 0, None, None),
    ("10.0.0.0/32", 0, 0, None, None),
    ("fd00::/64", 65535, 256, "fd00::1", "fd00::ffff"),
    ("fd00::/108", 65535, 256, "fd00::1", "fd00::ffff"),
    ("fd00::/112", 65535, 256, "fd00::1", "fd00::ffff"),
    ("fd00::/116", 4095, 256, "fd00::1", "fd00::fff"),
    ("fd00::/120", 255, 16, "fd00::1", "fd00::ff"),
    ("fd00::/124", 15, 0, "fd00::1", "fd00::f"),
    ("fd00::/126", 3, 0, "fd00::1", "fd00::3"),
    ("fd00::/127", 1, 0, "fd00::1", "fd00::1"),
    ("fd00::/128", 0, 0, None, None),
]


@pytest.mark.parametrize(("cidr", "size", "static", "first", "last"), RANGES)
def test_range_and_bands(
    cidr: str, size: int, static: int, first: str | None, last: str | None
) -> None:
    alloc = ClusterIPAllocator(cidr)
    assert alloc.size == size
    assert alloc.free == size
    assert alloc.used == 0
    assert alloc.band_usage() == BandUsage(
        static=Occupancy(0, static), dynamic=Occupancy(0, size - static)
    )
    network = ipaddress.ip_network(cidr)
    assert not alloc.contains(network.network_address)
    if network.version == 4:
        assert not alloc.contains(network.broadcast_address)
    if first is None:
        return
    assert last is not None
    assert alloc.contains(first)
    assert alloc.contains(last)
    assert alloc.band_of(first) == ("static" if static else "dynamic")
    assert alloc.band_of(last) == "dynamic"
    if static:
        boundary = ipaddress.ip_address(first) + static
        assert alloc.band_of(boundary - 1) == "static"
        assert alloc.band_of(boundary) == "dynamic"
    after_last = ipaddress.ip_address(last) + 1
    if after_last in network:
        assert not alloc.contains(after_last)


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [
        ("10.0.0.0/29", [f"10.0.0.{i}" for i in range(1, 7)]),
        ("10.0.0.0/30", ["10.0.0.1", "10.0.0.2"]),
        ("10.0.0.4/31", []),
        ("10.0.0.4/32", []),
        ("fd00::/126", ["fd00::1", "fd00::2", "fd00::3"]),
        ("fd00::2/127", ["fd00::3"]),
        ("fd00::/128", []),
    ],
)
def test_reserved_addresses_are_never_handed_out(cidr: str, expected: list[str]) -> None:
    alloc = ClusterIPAllocator(cidr, seed=7)
    got = []
    while True:
        try:
            got.append(alloc.allocate_next())
        except RangeFullError:
            break
    assert sorted(got, key=ipaddress.ip_address) == expected
    assert list(alloc) == expected
    assert alloc.free == 0


def test_full_slash_24_hands_out_every_host_once() -> None:
    alloc = ClusterIPAllocator("192.168.7.0/24", seed=1)
    got = [alloc.allocate_next() for _ in range(254)]
    assert sorted(got, key=ipaddress.ip_address) == [f"192.168.7.{i}" for i in range(1, 255)]
    with pytest.raises(RangeFullError, match=r"^range is full$"):
        alloc.allocate_next()


def test_ipv6_cap_leaves_the_rest_of_the_prefix_out_of_range() -> None:
    alloc = ClusterIPAllocator("fd00:10:96::/64")
    assert alloc.contains("fd00:10:96::ffff")
    assert not alloc.contains("fd00:10:96::1:0")
    with pytest.raises(NotInRangeError):
        alloc.allocate("fd00:10:96::1:0")


# -- allocation ----------------------------------------------------------------


def test_allocate_specific_addresses_in_both_bands() -> None:
    alloc = ClusterIPAllocator("10.96.0.0/12")
    assert alloc.allocate("10.96.0.10") == "10.96.0.10"  # the static band
    assert alloc.allocate(ipaddress.ip_address("10.100.1.1")) == "10.100.1.1"  # dynamic
    assert alloc.band_of("10.96.0.10") == "static"
    assert alloc.band_of("10.100.1.1") == "dynamic"
    assert alloc.has("10.96.0.10")
    assert alloc.has(ipaddress.IPv4Address("10.100.1.1"))
    assert not alloc.has("10.96.0.11")
    assert alloc.used == 2
    assert alloc.band_usage() == BandUsage(Occupancy(1, 256), Occupancy(1, 1048318))
    assert list(alloc) == ["10.96.0.10", "10.100.1.1"]
    assert len(alloc) == 2


def test_already_allocated_message() -> None:
    alloc = ClusterIPAllocator("10.96.0.0/12")
    alloc.allocate("10.96.0.10")
    with pytest.raises(AlreadyAllocatedError) as info:
        alloc.allocate("10.96.0.10")
    assert str(info.value) == "provided IP is already allocated"
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, AllocationError)
    assert alloc.used == 1


@pytest.mark.parametrize(
    ("cidr", "ip", "shown"),
    [
        ("10.96.0.0/12", "1.1.1.1", "1.1.1.1"),
        ("10.96.0.0/12", "10.96.0.0", "10.96.0.0"),
        ("10.96.0.0/12", "10.111.255.255", "10.111.255.255"),
        ("10.96.0.0/12", "fd00::1", "fd00::1"),
        ("fd00::/108", "FD00:0:0:0:0:0:1:0", "fd00::1:0"),
        ("fd00::/108", "fd00::", "fd00::"),
        ("fd00::/108", "10.96.0.1", "10.96.0.1"),
    ],
)
def test_not_in_range_message(cidr: str, ip: str, shown: str) -> None:
    alloc = ClusterIPAllocator(cidr)
    with pytest.raises(NotInRangeError) as info:
        alloc.allocate(ip)
    assert str(info.value) == (
        f"the provided IP ({shown}) is not in the valid range. The range of valid IPs is {cidr}"
    )
    assert isinstance(info.value, ValueError)
    assert not alloc.contains(ip)
    assert not alloc.has(ip)
    with pytest.raises(NotInRangeError):
        alloc.band_of(ip)


@pytest.mark.parametrize("ip", ["", "10.96.0", "10.96.0.256", "bogus", "fe80::1%eth0", "::g"])
def test_invalid_ip_strings(ip: str) -> None:
    alloc = ClusterIPAllocator("10.96.0.0/12")
    with pytest.raises(NotInRangeError) as info:
        alloc.allocate(ip)
    assert str(info.value) == f"the provided IP ({ip}) is not a valid IP address"
    with pytest.raises(NotInRangeError):
        alloc.release(ip)
    with pytest.raises(NotInRangeError):
        alloc.has(ip)


@pytest.mark.parametrize("ip", [None, 167772161, b"10.96.0.1", ["10.96.0.1"]])
def test_wrong_types(ip: object) -> None:
    alloc = ClusterIPAllocator("10.96.0.0/12")
    with pytest.raises(TypeError):
        alloc.allocate(ip)  # type: ignore[arg-type]


def test_results_are_canonical_strings() -> None:
    alloc = ClusterIPAllocator("FD00:0::/108", seed=3)
    assert alloc.cidr == "fd00::/108"
    assert alloc.allocate("FD00:0000::000A") == "fd00::a"
    assert alloc.has("fd00::a")
    ip = alloc.allocate_next()
    assert ip == str(ipaddress.ip_address(ip))
    assert alloc.family == "IPv6"


def test_ipv4_mapped_ipv6_counts_as_ipv4() -> None:
    alloc = ClusterIPAllocator("10.96.0.0/12")
    assert alloc.allocate("::ffff:10.96.0.5") == "10.96.0.5"
    assert alloc.has("10.96.0.5")


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.96.0.0", "invalid CIDR address: 10.96.0.0"),
        ("10.96.0.0/33", "invalid CIDR address: 10.96.0.0/33"),
        ("bogus/12", "invalid CIDR address: bogus/12"),
        ("", "invalid CIDR address: "),
        (
            "10.0.0.0/8",
            "specified --service-cluster-ip-range is too large; "
            "for 32-bit addresses, the mask must be >= 12",
        ),
    ],
)
def test_bad_cidrs(cidr: str, message: str) -> None:
    with pytest.raises(NotInRangeError) as info:
        ClusterIPAllocator(cidr)
    assert str(info.value) == message
    assert isinstance(info.value, KServiceError)


def test_cidr_with_host_bits_is_masked() -> None:
    alloc = ClusterIPAllocator("10.96.0.1/12")
    assert alloc.cidr == "10.96.0.0/12"
    assert alloc.network == ipaddress.ip_network("10.96.0.0/12")
    assert alloc.family == "IPv4"


def test_release_is_a_noop_for_free_and_out_of_range_addresses() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24")
    alloc.allocate("10.0.0.5")
    alloc.release("10.0.0.6")
    alloc.release("10.0.0.0")
    alloc.release("10.0.0.255")
    alloc.release("192.168.0.1")
    alloc.release("fd00::1")
    assert list(alloc) == ["10.0.0.5"]
    alloc.release("10.0.0.5")
    alloc.release("10.0.0.5")
    assert alloc.used == 0
    assert alloc.allocate("10.0.0.5") == "10.0.0.5"


def test_allocate_next_prefers_the_dynamic_band() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24", seed=11)
    dynamic = [alloc.allocate_next() for _ in range(238)]
    assert {alloc.band_of(ip) for ip in dynamic} == {"dynamic"}
    assert alloc.band_usage() == BandUsage(Occupancy(0, 16), Occupancy(238, 238))
    static = [alloc.allocate_next() for _ in range(16)]
    assert sorted(static, key=ipaddress.ip_address) == [f"10.0.0.{i}" for i in range(1, 17)]
    with pytest.raises(RangeFullError):
        alloc.allocate_next()


def test_allocate_next_takes_the_last_dynamic_address_before_the_static_band() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24", seed=5)
    for i in range(17, 255):
        if i != 200:
            alloc.allocate(f"10.0.0.{i}")
    assert alloc.allocate_next() == "10.0.0.200"
    assert alloc.band_of(alloc.allocate_next()) == "static"


def test_allocate_next_ignores_a_full_static_band() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24", seed=5)
    for i in range(1, 17):
        alloc.allocate(f"10.0.0.{i}")
    got = [alloc.allocate_next() for _ in range(238)]
    assert len(set(got)) == 238
    assert alloc.free == 0


def test_seed_reproducibility() -> None:
    a = ClusterIPAllocator("10.96.0.0/12", seed=42)
    b = ClusterIPAllocator("10.96.0.0/12", seed=42)
    c = ClusterIPAllocator("10.96.0.0/12", seed=43)
    seq_a = [a.allocate_next() for _ in range(50)]
    seq_b = [b.allocate_next() for _ in range(50)]
    seq_c = [c.allocate_next() for _ in range(50)]
    assert seq_a == seq_b
    assert seq_a != seq_c


def test_scan_from_a_random_start_takes_the_next_free_address() -> None:
    # Fill the dynamic band but for two addresses: allocate_next must return
    # one of them, and which one depends only on the random start.
    alloc = ClusterIPAllocator("10.0.0.0/24", seed=9)
    for i in range(17, 255):
        if i not in (50, 100):
            alloc.allocate(f"10.0.0.{i}")
    rng = random.Random(9)
    start = 17 + rng.randrange(238)
    expected = "10.0.0.100" if 50 < start <= 100 else "10.0.0.50"
    assert alloc.allocate_next() == expected


# -- snapshots ------------------------------------------------------------------


def test_snapshot_format_is_big_int_bytes() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24")
    assert alloc.snapshot() == ("10.0.0.0/24", b"")
    alloc.allocate("10.0.0.1")  # offset 0
    assert alloc.snapshot() == ("10.0.0.0/24", b"\x01")
    alloc.allocate("10.0.0.10")  # offset 9
    assert alloc.snapshot() == ("10.0.0.0/24", b"\x02\x01")


@pytest.mark.parametrize("cidr", ["10.0.0.0/16", "fd00::/64", "10.0.0.0/30", "10.0.0.0/32"])
def test_snapshot_restore_round_trip(cidr: str) -> None:
    alloc = ClusterIPAllocator(cidr, seed=1)
    for _ in range(min(alloc.size, 1000)):
        alloc.allocate_next()
    range_spec, data = alloc.snapshot()
    assert range_spec == cidr
    copy = ClusterIPAllocator.from_snapshot(range_spec, data, seed=2)
    assert list(copy) == list(alloc)
    assert copy.used == alloc.used
    assert copy.band_usage() == alloc.band_usage()
    assert copy.snapshot() == (range_spec, data)
    other = ClusterIPAllocator(cidr)
    if other.size:
        other.allocate_next()
    other.restore(range_spec, data)
    assert list(other) == list(alloc)


def test_restore_refuses_another_range() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24")
    alloc.allocate("10.0.0.7")
    for spec in ["10.0.1.0/24", "10.0.0.0/25", "fd00::/120", "junk"]:
        with pytest.raises(NotInRangeError) as info:
            alloc.restore(spec, b"\x01")
        assert str(info.value) == "the provided network does not match the current range"
    assert list(alloc) == ["10.0.0.7"]
    alloc.restore("10.0.0.9/24", b"\x01")  # host bits are masked, as ParseCIDR does
    assert list(alloc) == ["10.0.0.1"]


def test_restore_refuses_addresses_past_the_range() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/30")
    alloc.allocate("10.0.0.2")
    with pytest.raises(NotInRangeError, match=r"outside 10\.0\.0\.0/30$"):
        alloc.restore("10.0.0.0/30", b"\x04")  # offset 2 is the broadcast address
    assert list(alloc) == ["10.0.0.2"]


# -- operations -----------------------------------------------------------------


def test_operation_rollback_restores_the_allocator() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24", seed=3)
    alloc.allocate("10.0.0.20")
    alloc.allocate("10.0.0.21")
    before = alloc.snapshot()
    op = alloc.operation()
    first = op.allocate("10.0.0.5")
    second = op.allocate_next()
    op.release_deferred("10.0.0.20")
    with pytest.raises(AlreadyAllocatedError):
        op.allocate("10.0.0.21")
    assert op.allocated == (first, second)
    assert op.pending_release == ("10.0.0.20",)
    assert alloc.has(first)
    assert alloc.has(second)
    assert alloc.has("10.0.0.20")  # deferred: still held until commit
    op.rollback()
    assert alloc.snapshot() == before
    assert op.finished
    op.rollback()  # idempotent
    with pytest.raises(AllocationError, match="already finished"):
        op.allocate_next()
    with pytest.raises(AllocationError):
        op.commit()


def test_operation_commit_does_the_deferred_releases() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24", seed=3)
    alloc.allocate("10.0.0.20")
    with alloc.operation() as op:
        new = op.allocate_next()
        op.release_deferred(ipaddress.ip_address("10.0.0.20"))
        op.release_deferred("10.0.0.99")  # free: releasing is a no-op
        op.commit()
    assert list(alloc) == [new]


def test_operation_context_manager_rolls_back_without_commit() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24", seed=3)
    alloc.allocate("10.0.0.20")
    before = alloc.snapshot()
    with pytest.raises(RuntimeError), alloc.operation() as op:
        op.allocate("10.0.0.30")
        op.release_deferred("10.0.0.20")
        raise RuntimeError("storing the Service failed")
    assert alloc.snapshot() == before
    with alloc.operation() as op:
        op.allocate("10.0.0.30")
    assert alloc.snapshot() == before  # left without commit: rolled back


def test_operation_dry_run_changes_nothing() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24", seed=3)
    alloc.allocate("10.0.0.20")
    before = alloc.snapshot()
    with alloc.operation(dry_run=True) as op:
        assert op.dry_run
        op.allocate("10.0.0.30")
        with pytest.raises(AlreadyAllocatedError):
            op.allocate("10.0.0.30")
        with pytest.raises(NotInRangeError):
            op.allocate("10.0.1.1")
        op.allocate_next()
        op.release_deferred("10.0.0.20")
        op.commit()
    assert alloc.snapshot() == before


def test_operation_release_deferred_checks_its_input() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24")
    op = alloc.operation()
    with pytest.raises(NotInRangeError):
        op.release_deferred("not-an-ip")
    op.rollback()


# -- concurrency ------------------------------------------------------------------


def test_threads_allocating_until_full_never_share_an_address() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/20", seed=1)
    results: list[list[str]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def worker(out: list[str]) -> None:
        barrier.wait()
        rounds = 0
        while True:
            try:
                out.append(alloc.allocate_next())
            except RangeFullError:
                return
            rounds += 1
            if rounds % 7 == 0:  # churn a little, too: give every 7th address back
                alloc.release(out.pop())

    threads = [threading.Thread(target=worker, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [ip for out in results for ip in out]
    assert len(everything) == len(set(everything)) == 4094
    assert alloc.used == 4094
    assert alloc.free == 0
    assert sorted(everything, key=ipaddress.ip_address) == list(alloc)


# -- model-based property test ------------------------------------------------------


class ClusterIPMachine(RuleBasedStateMachine):
    """Random allocate / allocate_next / release / operations against a model set."""

    def __init__(self) -> None:
        super().__init__()
        self.alloc = ClusterIPAllocator("10.0.0.0/26", seed=0)  # 62 addresses, 16 static
        self.model: set[str] = set()
        self.usable = {f"10.0.0.{i}" for i in range(1, 63)}

    addresses = st.integers(0, 70).map(lambda i: f"10.0.0.{i}")

    @rule(ip=addresses)
    def allocate(self, ip: str) -> None:
        if ip not in self.usable:
            with pytest.raises(NotInRangeError):
                self.alloc.allocate(ip)
        elif ip in self.model:
            with pytest.raises(AlreadyAllocatedError):
                self.alloc.allocate(ip)
        else:
            assert self.alloc.allocate(ip) == ip
            self.model.add(ip)

    @rule()
    def allocate_next(self) -> None:
        dynamic_free = any(self.alloc.band_of(ip) == "dynamic" for ip in self.usable - self.model)
        if self.model == self.usable:
            with pytest.raises(RangeFullError):
                self.alloc.allocate_next()
            return
        ip = self.alloc.allocate_next()
        assert ip in self.usable
        assert ip not in self.model
        assert self.alloc.band_of(ip) == ("dynamic" if dynamic_free else "static")
        self.model.add(ip)

    @rule(ip=addresses)
    def release(self, ip: str) -> None:
        self.alloc.release(ip)
        self.model.discard(ip)

    @precondition(lambda self: self.model != self.usable)
    @rule(ip=addresses, old=addresses, commit=st.booleans())
    def operation(self, ip: str, old: str, commit: bool) -> None:
        before = self.alloc.snapshot()
        op = self.alloc.operation()
        got = [op.allocate_next()]
        if ip in self.usable and ip not in self.model and ip not in got:
            got.append(op.allocate(ip))
        op.release_deferred(old)
        if commit:
            op.commit()
            self.model.update(got)
            self.model.discard(old)
        else:
            op.rollback()
            assert self.alloc.snapshot() == before

    @invariant()
    def matches_model(self) -> None:
        assert self.alloc.used == len(self.model)
        assert self.alloc.free == 62 - len(self.model)
        assert set(self.alloc) == self.model
        usage = self.alloc.band_usage()
        static = sum(1 for ip in self.model if int(ip.rsplit(".", 1)[1]) <= 16)
        assert usage.static == Occupancy(static, 16)
        assert usage.dynamic == Occupancy(len(self.model) - static, 46)


ClusterIPMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=80)
TestClusterIPMachine = ClusterIPMachine.TestCase


# -- dual stack ----------------------------------------------------------------------


def test_dual_stack_allocators() -> None:
    allocs = ClusterIPAllocators.from_cidrs("10.96.0.0/12, fd00::/108", seed=1)
    assert allocs.families == ("IPv4", "IPv6")
    assert allocs.dual_stack
    assert allocs.primary.cidr == "10.96.0.0/12"
    assert allocs.secondary is not None
    assert allocs.secondary.cidr == "fd00::/108"
    assert allocs["IPv6"] is allocs.secondary
    assert "IPv4" in allocs
    assert [a.cidr for a in allocs] == ["10.96.0.0/12", "fd00::/108"]
    assert len(allocs) == 2
    single = ClusterIPAllocators.from_cidrs(["fd00::/108"])
    assert single.families == ("IPv6",)
    assert single.get("IPv4") is None
    assert single.secondary is None
    assert not single.dual_stack


@pytest.mark.parametrize(
    ("cidrs", "message"),
    [
        (
            "10.96.0.0/12,10.0.0.0/16",
            "--service-cluster-ip-range[0] and --service-cluster-ip-range[1] "
            "must be of different IP family",
        ),
        (
            "10.96.0.0/12,fd00::/108,10.0.0.0/16",
            "--service-cluster-ip-range must not contain more than two entries",
        ),
        ("", "--service-cluster-ip-range must contain at least one valid cidr"),
    ],
)
def test_dual_stack_errors(cidrs: str, message: str) -> None:
    with pytest.raises(NotInRangeError) as info:
        ClusterIPAllocators.from_cidrs(cidrs)
    assert str(info.value) == message


def test_repr() -> None:
    alloc = ClusterIPAllocator("10.0.0.0/24")
    alloc.allocate("10.0.0.1")
    assert repr(alloc) == "ClusterIPAllocator('10.0.0.0/24', used=1, size=254)"
    pair = ClusterIPAllocators.from_cidrs("10.96.0.0/12,fd00::/108")
    assert repr(pair) == "ClusterIPAllocators('10.96.0.0/12,fd00::/108')"


@settings(max_examples=300)
@given(value=st.integers(0, 2**128 - 1), prefix=st.integers(112, 128))
def test_ipv6_results_match_ipaddress_text(value: int, prefix: int) -> None:
    network = ipaddress.IPv6Network((value, prefix), strict=False)
    alloc = ClusterIPAllocator(network)
    if not alloc.size:
        return
    ip = ipaddress.IPv6Address(value)
    if alloc.contains(ip):
        assert alloc.allocate(ip) == str(ip)
        assert list(alloc) == [str(ip)]
    for got in [alloc.allocate_next() for _ in range(min(3, alloc.free))]:
        assert got == str(ipaddress.IPv6Address(got))


@pytest.mark.parametrize("cidr", ["::/120", "::ffff:0:0/120", "::1:0/112", "fd00::/120"])
def test_ipv6_text_of_low_prefixes(cidr: str) -> None:
    alloc = ClusterIPAllocator(cidr, seed=1)
    got = [alloc.allocate_next() for _ in range(alloc.size)]
    assert sorted(got) == sorted(str(ip) for ip in list(alloc.network.hosts())[: alloc.size])
