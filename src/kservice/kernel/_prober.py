"""The probe helper of one client namespace (run as a script inside it; standard library only).

Started as ``ip netns exec NS python -I _prober.py``; prints ``READY`` and then
answers one JSON line for every JSON request line on stdin:

* ``{"op": "probe", "proto": "tcp", "src": IP, "dst": IP, "port": N, "timeout": S,
  "count": K}`` makes K new connections (each from a fresh source port, so each
  is a new conntrack entry) and answers ``{"results": [RESULT, ...]}``;
* ``{"op": "open", ...}`` makes one TCP connection and keeps it:
  ``{"handle": H, "result": RESULT}``; ``{"op": "send", "handle": H}`` sends a
  line on it and reads the answer (``{"result": RESULT}``); ``{"op": "close",
  "handle": H}`` closes it.

RESULT is ``{"kind": K, "sport": P, ...}`` with K one of ``answer`` (plus
``ip``/``port`` of the endpoint that answered and ``seen_ip``/``seen_port``,
the source it saw), ``refused`` (RST or ICMP port unreachable),
``unreachable`` (ICMP host/network unreachable, no route), ``timeout``
(nothing came back: dropped), ``eperm`` (the local output path dropped the
packet: the kernel says so at once for locally generated UDP), ``silent``
(connected but no answer line) or ``error`` (anything else; ``errno`` says
what).
"""

from __future__ import annotations

import errno
import json
import random
import select
import socket
import struct
import sys
import time
from typing import Any

_PORT_LO, _PORT_HI = 20000, 60000
_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


class _Ports:
    """Source ports handed out in turn from a random start, so none repeats soon."""

    def __init__(self) -> None:
        self.next = random.randrange(_PORT_LO, _PORT_HI)

    def take(self) -> int:
        port = self.next
        self.next = port + 1 if port + 1 < _PORT_HI else _PORT_LO
        return port


_PORTS = _Ports()


def _socket(proto: str, src: str) -> tuple[socket.socket, int]:
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    number = socket.IPPROTO_SCTP if proto == "sctp" else 0
    for _ in range(200):
        sock = socket.socket(family, kind, number)
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, _FREEBIND, 1)
        if kind == socket.SOCK_STREAM:
            # close with RST: no TIME_WAIT left behind on the client.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        port = _PORTS.take()
        try:
            sock.bind((src, port))
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                continue
            raise
        return sock, port
    raise OSError(errno.EADDRINUSE, "no free source port")


def _error(exc: BaseException, sport: int | None) -> dict[str, Any]:
    if isinstance(exc, socket.timeout | TimeoutError):
        return {"kind": "timeout", "sport": sport}
    code = getattr(exc, "errno", None)
    name = errno.errorcode.get(code or 0, type(exc).__name__)
    if code == errno.ECONNREFUSED:
        kind = "refused"
    elif code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        kind = "unreachable"
    elif code == errno.EPERM:
        kind = "eperm"
    else:
        kind = "error"
    return {"kind": kind, "sport": sport, "errno": name}


def _answer(data: bytes, sport: int) -> dict[str, Any]:
    parts = data.decode(errors="replace").split()
    if len(parts) != 4:
        return {"kind": "silent", "sport": sport, "errno": repr(data[:60])}
    return {
        "kind": "answer",
        "sport": sport,
        "ip": parts[0],
        "port": int(parts[1]),
        "seen_ip": parts[2],
        "seen_port": int(parts[3]),
    }


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(512)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


_RECVERR = {socket.AF_INET: (socket.IPPROTO_IP, 11), socket.AF_INET6: (socket.IPPROTO_IPV6, 25)}
_MSG_ERRQUEUE = 0x2000


def _stream_connect(sock: socket.socket, address: tuple[str, int], deadline: float) -> None:
    """``connect()`` that also sees an ICMP error the kernel could only queue.

    An ICMP error that arrives while ``connect()`` still holds the socket
    lock (a reject answered within microseconds, as over a veth; IPv6 shows
    it) is not made the connection's error: TCP would notice only when it
    resends the SYN a second later. With ``IP_RECVERR`` / ``IPV6_RECVERR``
    the kernel queues it on the error queue all the same, so a
    non-blocking connect polls for it and raises it at once.
    """
    level, option = _RECVERR[sock.family]
    sock.setsockopt(level, option, 1)
    sock.setblocking(False)
    try:
        sock.connect(address)
        return
    except BlockingIOError:
        pass
    poller = select.poll()
    poller.register(sock, select.POLLOUT | select.POLLERR)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("connect timed out")
        events = poller.poll(max(1, int(left * 1000)))
        if not events:
            continue
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, errno.errorcode.get(code, "?"))
        mask = events[0][1]
        if mask & select.POLLERR:
            try:
                _data, ancdata, _flags, _addr = sock.recvmsg(512, 512, _MSG_ERRQUEUE)
            except OSError:
                ancdata = []
            for _level, _type, payload in ancdata:
                if len(payload) >= 4:
                    queued = struct.unpack("I", payload[:4])[0]
                    raise OSError(queued, errno.errorcode.get(queued, "?"))
        if mask & select.POLLOUT:
            return


def _connect(req: dict[str, Any]) -> tuple[socket.socket | None, dict[str, Any]]:
    """One connection; the socket is returned open (TCP/SCTP answered) or None."""
    proto, timeout = req["proto"], float(req.get("timeout", 0.4))
    sport = None
    try:
        sock, sport = _socket(proto, req["src"])
    except OSError as exc:
        return None, _error(exc, sport)
    deadline = time.monotonic() + timeout
    try:
        if proto == "udp":
            sock.settimeout(timeout)
            sock.connect((req["dst"], int(req["port"])))
        else:
            _stream_connect(sock, (req["dst"], int(req["port"])), deadline)
        if proto == "udp":
            try:
                sock.send(b"?\n")
            except PermissionError:
                # Dropped on the node's own output path. A REJECT there drops
                # too, after sending its ICMP error to this very socket: wait
                # a moment for it, to tell the two apart.
                sock.settimeout(0.05)
                try:
                    sock.recv(512)
                except ConnectionRefusedError:
                    raise
                except OSError:
                    pass
                raise
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = sock.recv(512)
        else:
            data = _read_line(sock, deadline + timeout)
    except OSError as exc:
        sock.close()
        return None, _error(exc, sport)
    if not data:
        sock.close()
        return None, {"kind": "silent", "sport": sport}
    return sock, _answer(data, sport)


def main() -> int:
    handles: dict[int, socket.socket] = {}
    print("READY", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        op = req.get("op", "probe")
        if op == "probe":
            results = []
            for _ in range(int(req.get("count", 1))):
                sock, result = _connect(req)
                if sock is not None:
                    sock.close()
                results.append(result)
            reply: dict[str, Any] = {"results": results}
        elif op == "open":
            sock, result = _connect(req)
            handle = -1
            if sock is not None:
                handle = len(handles) + 1
                handles[handle] = sock
            reply = {"handle": handle, "result": result}
        elif op == "send":
            sock = handles[int(req["handle"])]
            try:
                sock.sendall(b"ping\n")
                data = _read_line(sock, time.monotonic() + float(req.get("timeout", 1.0)))
                result = _answer(data, sock.getsockname()[1]) if data else {"kind": "silent"}
            except OSError as exc:
                result = _error(exc, None)
            reply = {"result": result}
        elif op == "close":
            sock = handles.pop(int(req["handle"]))
            sock.close()
            reply = {}
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
