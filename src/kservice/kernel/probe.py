"""Real connections from a client namespace, and what the kernel did with them.

A :class:`Prober` is one long-lived helper process (``_prober.py``) in a client
namespace, driven by JSON lines, so thousands of connections cost no process
start each. Every connection binds a fresh source port (a new conntrack
entry, a new NAT decision). An :class:`Observation` is the kernel's answer:
which endpoint answered and which source it saw, or refused (RST / ICMP port
unreachable: a REJECT), unreachable (ICMP host or network unreachable, or no
route), timeout (dropped), eperm (dropped on the local output path).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import attrs

from kservice.kernel.netns import KernelError, Netns
from kservice.kernel.topology import read_line
from kservice.proxy.naming import join_host_port

__all__ = ["DEFAULT_TIMEOUT", "Observation", "ObservationKind", "Prober"]

#: How long a probe waits before calling the packet dropped (seconds).
DEFAULT_TIMEOUT = 0.4

ObservationKind = Literal["answer", "refused", "unreachable", "timeout", "eperm", "silent", "error"]
_HELPER = Path(__file__).resolve().parent / "_prober.py"


@attrs.frozen
class Observation:
    """What one connection ended in (see the module docstring for ``kind``)."""

    kind: ObservationKind
    address: str | None = None
    port: int | None = None
    seen_address: str | None = None
    seen_port: int | None = None
    sport: int | None = None
    detail: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Observation:
        return cls(
            kind=data["kind"],
            address=data.get("ip"),
            port=data.get("port"),
            seen_address=data.get("seen_ip"),
            seen_port=data.get("seen_port"),
            sport=data.get("sport"),
            detail=data.get("errno"),
        )

    @property
    def endpoint(self) -> str | None:
        """``ip:port`` of the server that answered (None without an answer)."""
        if self.address is None or self.port is None:
            return None
        return join_host_port(self.address, self.port)

    def __str__(self) -> str:
        if self.kind == "answer":
            return f"answered by {self.endpoint}, which saw source {self.seen_address}"
        return self.kind + (f" ({self.detail})" if self.detail else "")


class Prober:
    """The probe helper of one namespace."""

    def __init__(self, ns: Netns, proc: Any) -> None:
        self.ns = ns
        self._proc = proc

    @classmethod
    def start(cls, ns: Netns) -> Prober:
        proc = ns.popen(sys.executable, "-I", str(_HELPER))
        line = read_line(proc, 20.0)
        if line.strip() != "READY":
            raise KernelError(f"the probe helper in {ns.name} did not start: {line.strip()!r}")
        return cls(ns, proc)

    def _ask(self, request: dict[str, Any], wait: float) -> dict[str, Any]:
        if self._proc.poll() is not None:
            raise KernelError(f"the probe helper in {self.ns.name} has exited")
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = read_line(self._proc, wait)
        if not line:
            raise KernelError(f"the probe helper in {self.ns.name} did not answer {request}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def probe(
        self,
        protocol: str,
        src: str,
        dst: str,
        port: int,
        *,
        count: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[Observation]:
        """``count`` new connections from ``src`` to ``dst:port`` (``protocol`` tcp/udp/sctp)."""
        request = {
            "op": "probe",
            "proto": protocol,
            "src": src,
            "dst": dst,
            "port": port,
            "timeout": timeout,
            "count": count,
        }
        reply = self._ask(request, 10.0 + count * (3 * timeout + 0.05))
        return [Observation.from_json(r) for r in reply["results"]]

    def open(
        self, protocol: str, src: str, dst: str, port: int, *, timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[int, Observation]:
        """A TCP connection kept open: ``(handle, first answer)``; handle -1 if it failed."""
        request = {
            "op": "open",
            "proto": protocol,
            "src": src,
            "dst": dst,
            "port": port,
            "timeout": timeout,
        }
        reply = self._ask(request, 10.0 + 3 * timeout)
        return int(reply["handle"]), Observation.from_json(reply["result"])

    def send(self, handle: int, *, timeout: float = 1.0) -> Observation:
        """Send a line on an open connection; the answer that comes back."""
        reply = self._ask({"op": "send", "handle": handle, "timeout": timeout}, 10.0 + timeout)
        return Observation.from_json(reply["result"])

    def close_connection(self, handle: int) -> None:
        self._ask({"op": "close", "handle": handle}, 10.0)

    def close(self) -> None:
        """Stop the helper (the namespace group kills it anyway)."""
        if self._proc.poll() is None and self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=2)
            except (OSError, ValueError):
                pass
            except Exception:  # pragma: no cover - TimeoutExpired: killed by the group
                pass
