"""Endpoint servers for one namespace (run as a script inside it; standard library only).

Started as ``ip netns exec NS python -I _server.py``. The first line on stdin
is JSON: ``{"binds": [["tcp", "10.244.1.5", 8080], ["udp", "fd00::5", 53], ...]}``.
Once every address is bound it prints ``READY <n>`` (or ``ERROR <text>`` and
exits). Then each TCP connection gets one line at once, and another line for
every chunk it sends; each UDP datagram gets one line back. The line is
``<local ip> <local port> <peer ip> <peer port>``: which endpoint answered
and the source address it saw (masqueraded or not). The server exits when
its stdin closes (its parent is gone) or on SIGTERM.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import sys
from typing import Any

_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


def _line(sock: socket.socket, peer: Any) -> bytes:
    local = sock.getsockname()
    return f"{local[0]} {local[1]} {peer[0]} {peer[1]}\n".encode()


def _bind(proto: str, ip: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    kind = socket.SOCK_STREAM if proto in ("tcp", "sctp") else socket.SOCK_DGRAM
    number = socket.IPPROTO_SCTP if proto == "sctp" else 0
    sock = socket.socket(family, kind, number)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, _FREEBIND, 1)
    sock.bind((ip, port))
    if kind == socket.SOCK_STREAM:
        sock.listen(1024)
    sock.setblocking(False)
    return sock


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        binds = json.loads(sys.stdin.readline())["binds"]
        socks = [(proto, _bind(proto, ip, int(port))) for proto, ip, port in binds]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"ERROR {exc}", flush=True)
        return 1
    sel = selectors.DefaultSelector()
    for proto, listener in socks:
        sel.register(listener, selectors.EVENT_READ, "listen" if proto != "udp" else "udp")
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print(f"READY {len(socks)}", flush=True)
    while True:
        for key, _ in sel.select():
            sock: Any = key.fileobj
            role = key.data
            if role == "stdin":
                if not sys.stdin.readline():
                    return 0
            elif role == "udp":
                assert isinstance(sock, socket.socket)
                try:
                    _, peer = sock.recvfrom(2048)
                    sock.sendto(_line(sock, peer), peer)
                except OSError:
                    pass
            elif role == "listen":
                assert isinstance(sock, socket.socket)
                try:
                    conn, peer = sock.accept()
                except OSError:
                    continue
                try:
                    conn.setblocking(True)
                    conn.settimeout(1.0)
                    conn.sendall(_line(conn, peer))
                    conn.setblocking(False)
                except OSError:
                    conn.close()
                    continue
                sel.register(conn, selectors.EVENT_READ, ("conn", peer))
            else:
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    continue
                try:
                    sock.setblocking(True)
                    sock.settimeout(1.0)
                    sock.sendall(_line(sock, role[1]))
                    sock.setblocking(False)
                except OSError:
                    sel.unregister(sock)
                    sock.close()


if __name__ == "__main__":
    sys.exit(main())
