"""Tests of the NodePort allocator."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from kservice.control.portalloc import (
    DEFAULT_NODE_PORT_RANGE,
    BandUsage,
    NodePortAllocator,
    Occupancy,
    parse_port_range,
)
from kservice.errors import (
    AllocationError,
    AlreadyAllocatedError,
    NotInRangeError,
    RangeFullError,
)

# -- the range ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("30000-32767", (30000, 32767)),
        (" 30000-32767 ", (30000, 32767)),
        ("30000+2767", (30000, 32767)),
        ("8080", (8080, 8080)),
        ("0-65535", (0, 65535)),
        ((100, 199), (100, 199)),
    ],
)
def test_parse_port_range(spec: str | tuple[int, int], expected: tuple[int, int]) -> None:
    assert parse_port_range(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "unable to parse port range: "),
        ("30000:32767", "unable to parse port range: 30000:32767"),
        ("abc-def", "unable to parse port range: abc-def"),
        ("-1-5", "unable to parse port range: -1-5"),
        ("1-2-3", "unable to parse port range: 1-2-3"),
        ("1+2-3", "unable to parse port range: 1+2-3"),
        ("30000-", "unable to parse port range: 30000-"),
        ("30000-70000", "the port range cannot be greater than 65535: 30000-70000"),
        ("65000+1000", "the port range cannot be greater than 65535: 65000+1000"),
        ("32767-30000", "end port cannot be less than start port: 32767-30000"),
        ((200, 100), "end port cannot be less than start port: 200-100"),
        ((-1, 100), "unable to parse port range: (-1, 100)"),
    ],
)
def test_parse_port_range_errors(spec: str | tuple[int, int], message: str) -> None:
    with pytest.raises(NotInRangeError) as info:
        parse_port_range(spec)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)
    with pytest.raises(NotInRangeError):
        NodePortAllocator(spec)


def test_parse_port_range_wrong_type() -> None:
    with pytest.raises(TypeError):
        parse_port_range(30000)  # type: ignore[arg-type]


# range, size, static band
BANDS = [
    (DEFAULT_NODE_PORT_RANGE, 2768, 86),
    ("30000-30099", 100, 16),
    ("30000-30016", 17, 16),
    ("30000-30015", 16, 0),
    ("30000-30000", 1, 0),
    ("30000-31023", 1024, 32),
    ("20000-24095", 4096, 128),
    ("1-65535", 65535, 128),
]


@pytest.mark.parametrize(("spec", "size", "static"), BANDS)
def test_bands(spec: str, size: int, static: int) -> None:
    alloc = NodePortAllocator(spec)
    assert alloc.size == size
    assert alloc.free == size
    assert alloc.band_usage() == BandUsage(Occupancy(0, static), Occupancy(0, size - static))
    assert alloc.band_of(alloc.first) == ("static" if static else "dynamic")
    assert alloc.band_of(alloc.last) == "dynamic"
    if static:
        assert alloc.band_of(alloc.first + static - 1) == "static"
        assert alloc.band_of(alloc.first + static) == "dynamic"


def test_default_range() -> None:
    alloc = NodePortAllocator()
    assert alloc.port_range == "30000-32767"
    assert (alloc.first, alloc.last) == (30000, 32767)
    assert alloc.band_of(30085) == "static"
    assert alloc.band_of(30086) == "dynamic"
    assert NodePortAllocator("30000+2767").port_range == "30000-32767"


# -- allocation ----------------------------------------------------------------


def test_allocate_in_both_bands_and_messages() -> None:
    alloc = NodePortAllocator()
    assert alloc.allocate(30000) == 30000
    assert alloc.allocate(32767) == 32767
    assert alloc.has(30000)
    assert not alloc.has(30001)
    assert list(alloc) == [30000, 32767]
    assert len(alloc) == 2
    assert alloc.band_usage() == BandUsage(Occupancy(1, 86), Occupancy(1, 2682))
    with pytest.raises(AlreadyAllocatedError) as already:
        alloc.allocate(30000)
    assert str(already.value) == "provided port is already allocated"
    for port in (29999, 32768, 80, 0):
        with pytest.raises(NotInRangeError) as outside:
            alloc.allocate(port)
        assert str(outside.value) == (
            "provided port is not in the valid range. The range of valid ports is 30000-32767"
        )
        assert not alloc.contains(port)
        assert not alloc.has(port)
        with pytest.raises(NotInRangeError):
            alloc.band_of(port)
    assert alloc.used == 2


@pytest.mark.parametrize("port", ["30000", 30000.0, None, True])
def test_wrong_types(port: object) -> None:
    alloc = NodePortAllocator()
    with pytest.raises(TypeError):
        alloc.allocate(port)  # type: ignore[arg-type]


def test_release_is_a_noop_for_free_and_out_of_range_ports() -> None:
    alloc = NodePortAllocator()
    alloc.allocate(30500)
    alloc.release(30501)
    alloc.release(80)
    alloc.release(40000)
    assert list(alloc) == [30500]
    alloc.release(30500)
    alloc.release(30500)
    assert alloc.used == 0


def test_allocate_next_prefers_the_dynamic_band_then_falls_back() -> None:
    alloc = NodePortAllocator("30000-30099", seed=4)
    dynamic = [alloc.allocate_next() for _ in range(84)]
    assert sorted(dynamic) == list(range(30016, 30100))
    assert alloc.band_usage().dynamic == Occupancy(84, 84)
    static = [alloc.allocate_next() for _ in range(16)]
    assert sorted(static) == list(range(30000, 30016))
    with pytest.raises(RangeFullError) as info:
        alloc.allocate_next()
    assert str(info.value) == "range is full"


def test_allocate_next_falls_back_only_when_the_dynamic_band_is_full() -> None:
    alloc = NodePortAllocator(seed=4)
    for port in range(30086, 32768):
        if port != 31000:
            alloc.allocate(port)
    assert alloc.allocate_next() == 31000
    assert alloc.band_of(alloc.allocate_next()) == "static"


def test_tiny_ranges() -> None:
    one = NodePortAllocator("30000-30000", seed=1)
    assert one.allocate_next() == 30000
    with pytest.raises(RangeFullError):
        one.allocate_next()
    small = NodePortAllocator("30000-30015", seed=1)
    assert sorted(small.allocate_next() for _ in range(16)) == list(range(30000, 30016))


def test_seed_reproducibility() -> None:
    def run(seed: int) -> list[int]:
        alloc = NodePortAllocator(seed=seed)
        return [alloc.allocate_next() for _ in range(100)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_full_default_range() -> None:
    alloc = NodePortAllocator(seed=0)
    got = [alloc.allocate_next() for _ in range(2768)]
    assert sorted(got) == list(range(30000, 32768))
    assert alloc.free == 0
    assert alloc.band_usage() == BandUsage(Occupancy(86, 86), Occupancy(2682, 2682))


# -- snapshots ------------------------------------------------------------------


def test_snapshot_format() -> None:
    alloc = NodePortAllocator()
    assert alloc.snapshot() == ("30000-32767", b"")
    alloc.allocate(30000)
    alloc.allocate(30015)
    assert alloc.snapshot() == ("30000-32767", b"\x80\x01")


def test_snapshot_restore_round_trip() -> None:
    alloc = NodePortAllocator(seed=8)
    for _ in range(1000):
        alloc.allocate_next()
    alloc.allocate(30001)
    range_spec, data = alloc.snapshot()
    copy = NodePortAllocator.from_snapshot(range_spec, data)
    assert list(copy) == list(alloc)
    assert copy.band_usage() == alloc.band_usage()
    assert copy.snapshot() == (range_spec, data)
    # "base+offset" names the same range.
    NodePortAllocator().restore("30000+2767", data)


def test_restore_refuses_another_range() -> None:
    alloc = NodePortAllocator()
    alloc.allocate(30100)
    for spec in ["30000-32766", "1-65535", "junk", ""]:
        with pytest.raises(NotInRangeError) as info:
            alloc.restore(spec, b"\x01")
        assert str(info.value) == "the provided port range does not match the current port range"
    with pytest.raises(NotInRangeError):
        alloc.restore("30000-32767", (1 << 2768).to_bytes(347, "big"))
    assert list(alloc) == [30100]


# -- operations -----------------------------------------------------------------


def test_operation_rollback_leaves_the_allocator_as_before() -> None:
    alloc = NodePortAllocator(seed=2)
    alloc.allocate(30500)
    before = alloc.snapshot()
    op = alloc.operation()
    op.allocate(30501)
    op.allocate_next()
    op.release_deferred(30500)
    with pytest.raises(AlreadyAllocatedError):
        op.allocate(30501)
    op.rollback()
    assert alloc.snapshot() == before
    with pytest.raises(AllocationError):
        op.allocate(30502)


def test_operation_commit_releases_old_ports() -> None:
    # An update that moves a Service from nodePort 30500 to a new one.
    alloc = NodePortAllocator(seed=2)
    alloc.allocate(30500)
    with alloc.operation() as op:
        new = op.allocate_next()
        op.release_deferred(30500)
        assert alloc.has(30500)  # still held until the update is stored
        op.commit()
    assert list(alloc) == [new]
    assert op.finished


def test_operation_failed_update_keeps_old_ports() -> None:
    alloc = NodePortAllocator(seed=2)
    alloc.allocate(30500)
    alloc.allocate(30600)
    before = alloc.snapshot()
    with pytest.raises(AlreadyAllocatedError), alloc.operation() as op:
        op.release_deferred(30500)
        op.allocate(30700)
        op.allocate(30600)  # taken by another Service: the update fails
    assert alloc.snapshot() == before


def test_operation_dry_run() -> None:
    alloc = NodePortAllocator(seed=2)
    alloc.allocate(30500)
    before = alloc.snapshot()
    with alloc.operation(dry_run=True) as op:
        op.allocate(30501)
        with pytest.raises(AlreadyAllocatedError):
            op.allocate(30501)
        op.allocate_next()
        op.release_deferred(30500)
        op.commit()
    assert alloc.snapshot() == before


def test_one_node_port_number_is_allocated_once_for_tcp_and_udp() -> None:
    # The allocator is protocol-agnostic: the registry allocates the shared
    # nodePort of 53/TCP and 53/UDP once and reuses it for the second port.
    alloc = NodePortAllocator(seed=2)
    with alloc.operation() as op:
        shared = op.allocate_next()
        with pytest.raises(AlreadyAllocatedError):
            op.allocate(shared)
        op.commit()
    assert list(alloc) == [shared]


# -- concurrency ------------------------------------------------------------------


def test_threads_allocating_until_full_never_share_a_port() -> None:
    alloc = NodePortAllocator(seed=3)
    results: list[list[int]] = [[] for _ in range(6)]
    barrier = threading.Barrier(6)

    def worker(out: list[int]) -> None:
        barrier.wait()
        while True:
            try:
                out.append(alloc.allocate_next())
            except RangeFullError:
                return

    threads = [threading.Thread(target=worker, args=(out,)) for out in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [p for out in results for p in out]
    assert len(everything) == len(set(everything)) == 2768
    assert alloc.used == 2768
    assert sorted(everything) == list(alloc)


def test_threads_mixing_static_and_dynamic_allocations() -> None:
    alloc = NodePortAllocator("30000-30999", seed=3)
    wins: list[int] = []
    lock = threading.Lock()

    def explicit() -> None:
        for port in range(30000, 31000):
            try:
                alloc.allocate(port)
            except AlreadyAllocatedError:
                continue
            with lock:
                wins.append(port)

    def dynamic() -> None:
        while True:
            try:
                port = alloc.allocate_next()
            except RangeFullError:
                return
            with lock:
                wins.append(port)

    threads = [threading.Thread(target=f) for f in (explicit, dynamic, explicit, dynamic)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == list(range(30000, 31000))


# -- property tests -----------------------------------------------------------------


@settings(max_examples=100)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("allocate"), st.integers(29990, 30110)),
            st.tuples(st.just("next"), st.just(0)),
            st.tuples(st.just("release"), st.integers(29990, 30110)),
        ),
        max_size=300,
    ),
    seed=st.integers(0, 2**32),
)
def test_random_operations_never_double_allocate(ops: list[tuple[str, int]], seed: int) -> None:
    alloc = NodePortAllocator("30000-30099", seed=seed)
    model: set[int] = set()
    for kind, port in ops:
        if kind == "allocate":
            if not 30000 <= port <= 30099:
                with pytest.raises(NotInRangeError):
                    alloc.allocate(port)
            elif port in model:
                with pytest.raises(AlreadyAllocatedError):
                    alloc.allocate(port)
            else:
                alloc.allocate(port)
                model.add(port)
        elif kind == "next":
            if len(model) == 100:
                with pytest.raises(RangeFullError):
                    alloc.allocate_next()
            else:
                dynamic_free = any(p not in model for p in range(30016, 30100))
                port = alloc.allocate_next()
                assert port not in model
                assert (port >= 30016) == dynamic_free
                model.add(port)
        else:
            alloc.release(port)
            model.discard(port)
        assert alloc.used == len(model)
    assert list(alloc) == sorted(model)
    static = sum(1 for p in model if p < 30016)
    assert alloc.band_usage() == BandUsage(
        Occupancy(static, 16), Occupancy(len(model) - static, 84)
    )
    copy = NodePortAllocator.from_snapshot(*alloc.snapshot())
    assert list(copy) == sorted(model)


class NodePortMachine(RuleBasedStateMachine):
    """Operations committed or rolled back at random, against a model set."""

    def __init__(self) -> None:
        super().__init__()
        self.alloc = NodePortAllocator("30000-30049", seed=0)  # 50 ports, 16 static
        self.model: set[int] = set()

    ports = st.integers(30000, 30049)

    @rule(port=ports)
    def allocate(self, port: int) -> None:
        if port in self.model:
            with pytest.raises(AlreadyAllocatedError):
                self.alloc.allocate(port)
        else:
            self.alloc.allocate(port)
            self.model.add(port)

    @rule(port=ports)
    def release(self, port: int) -> None:
        self.alloc.release(port)
        self.model.discard(port)

    @rule(
        wanted=st.lists(ports, max_size=4),
        nexts=st.integers(0, 3),
        old=st.lists(ports, max_size=3),
        commit=st.booleans(),
    )
    def update(self, wanted: list[int], nexts: int, old: list[int], commit: bool) -> None:
        before = self.alloc.snapshot()
        got: list[int] = []
        op = self.alloc.operation()
        try:
            for port in wanted:
                got.append(op.allocate(port))
            for _ in range(nexts):
                got.append(op.allocate_next())
            for port in old:
                op.release_deferred(port)
        except (AlreadyAllocatedError, RangeFullError):
            op.rollback()
            assert self.alloc.snapshot() == before
            return
        if commit:
            op.commit()
            self.model.update(got)
            self.model.difference_update(old)
        else:
            op.rollback()
            assert self.alloc.snapshot() == before

    @invariant()
    def matches_model(self) -> None:
        assert list(self.alloc) == sorted(self.model)
        assert self.alloc.used == len(self.model)
        assert self.alloc.free == 50 - len(self.model)


NodePortMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=60)
TestNodePortMachine = NodePortMachine.TestCase
