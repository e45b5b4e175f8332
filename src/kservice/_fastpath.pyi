# Type stub of the compiled twin: the same API as kservice._fastpath_py.Machine.
from typing import Any

from kservice.engine.compile import Program
from kservice.engine.packet import Packet, Verdict

DEFAULT_POD_INTERFACE: str

class Machine:
    p: Program
    state: Any
    node_hi: int
    node_lo: int
    has_node_address: bool
    primary_mask: int
    lo_mask: int
    pod_mask: int
    flow_cache: bool
    def __init__(
        self, program: Program, state: Any, seed: int, flow_cache: bool = True
    ) -> None: ...
    def clear_flow_cache(self) -> None: ...
    def flow_cache_info(self) -> tuple[int, int, int]: ...
    def memory_bytes(self) -> int: ...
    def next_u32(self) -> int: ...
    def get_rng_state(self) -> int: ...
    def set_rng_state(self, value: int) -> None: ...
    def iface_mask(self, name: str) -> int: ...
    def verdict(self, kind: int, addr: int, port: int, masq: int) -> Verdict: ...
    def run(
        self,
        origin: int,
        saddr: int,
        sport: int,
        daddr: int,
        dport: int,
        proto: int,
        iif: int,
        now: float,
        obs: list[Any] | None = None,
        oracle: Any = None,
    ) -> tuple[int, int, int, int, int]: ...
    def packet_iif(self, packet: Packet) -> int: ...
    def lookup(self, packet: Packet, now: float) -> Verdict: ...
    def lookup_batch(
        self,
        dst: Any,
        dport: Any,
        proto: Any,
        src: Any,
        sport: Any,
        origin: int,
        iif: int,
        now: float,
        n: int,
        kind_out: Any,
        addr_out: Any,
        port_out: Any,
        masq_out: Any,
        rules_out: Any,
    ) -> None: ...
