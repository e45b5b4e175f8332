"""Private network namespaces: the only place kservice ever touches the kernel.

Every namespace is named ``kst-<random hex>[-role]`` and every command that
changes anything runs inside one (``ip netns exec NAME ...`` or ``ip -n NAME
...``); nothing here reads or writes the root namespace's rules, routes,
sysctls or interfaces. A :class:`NetnsGroup` owns its namespaces and the
helper processes started in them, and removes them all when closed: on
leaving its ``with`` block (also on errors and Ctrl-C), at interpreter exit
(``atexit``), and on SIGTERM / SIGHUP (a handler is installed only where none
is set).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from kservice.errors import KServiceError

__all__ = [
    "PREFIX",
    "TOOLS",
    "KernelError",
    "Netns",
    "NetnsGroup",
    "dummy_supported",
    "ip_vs_available",
    "kernel_unavailable",
    "sctp_available",
]

#: Every namespace kservice creates starts with this.
PREFIX = "kst-"
#: The tools the kernel checks need.
TOOLS = ("ip", "nft", "iptables-restore", "ip6tables-restore", "ipset", "sysctl")

_COMMAND_TIMEOUT = 120.0


class KernelError(KServiceError, RuntimeError):
    """A kernel-side step failed (a tool's error, a helper that did not start)."""


def _quote(argv: Sequence[str]) -> str:
    return " ".join(
        a if a and all(c.isalnum() or c in "-_./:=@" for c in a) else repr(a) for a in argv
    )


def _check(done: subprocess.CompletedProcess[str], argv: Sequence[str], stdin: str | None) -> None:
    if done.returncode == 0:
        return
    message = (
        f"`{_quote(argv)}` failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}"
    )
    if stdin is not None and len(stdin) < 4000:
        message += f"\n--- input:\n{stdin}"
    raise KernelError(message)


# -- what this machine offers --------------------------------------------------------

_UNAVAILABLE: list[str | None] = []


def kernel_unavailable(tools: Iterable[str] = TOOLS) -> str | None:
    """Why namespaces cannot be used here (not root, a tool missing, netns refused), or None.

    Creating a namespace is tried once per process (and deleted at once).
    """
    if os.geteuid() != 0:
        return "kernel checks need root (network namespaces)"
    for tool in tools:
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not _UNAVAILABLE:
        name = f"{PREFIX}{secrets.token_hex(6)}"
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if made.returncode == 0:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)
            _UNAVAILABLE.append(None)
        else:
            _UNAVAILABLE.append(f"cannot create a network namespace: {made.stderr.strip()}")
    return _UNAVAILABLE[0]


def ip_vs_available() -> bool:
    """Whether the IPVS kernel module is loaded (or built in).

    Never loads it: ``ipvsadm`` would try ``modprobe ip_vs`` on the host, so
    kservice only looks for ``/sys/module/ip_vs`` and ``/proc/net/ip_vs``.
    """
    return Path("/sys/module/ip_vs").exists() or Path("/proc/net/ip_vs").exists()


def sctp_available() -> bool:
    """Whether the kernel has SCTP registered (checked without loading a module)."""
    try:
        text = Path("/proc/net/protocols").read_text()
    except OSError:
        return False
    return any(line.split()[:1] == ["SCTP"] for line in text.splitlines())


_DUMMY: list[bool] = []


def dummy_supported(ns: Netns) -> bool:
    """Whether the kernel has the ``dummy`` link type (kube-ipvs0), tried inside ``ns``."""
    if not _DUMMY:
        probe = f"kst{secrets.token_hex(4)}"
        made = ns.run("ip", "link", "add", probe, "type", "dummy", check=False)
        if made.returncode == 0:
            ns.run("ip", "link", "delete", probe, check=False)
        _DUMMY.append(made.returncode == 0)
    return _DUMMY[0]


# -- one namespace ---------------------------------------------------------------------


class Netns:
    """A network namespace made by a :class:`NetnsGroup`; commands run inside it."""

    def __init__(self, name: str, group: NetnsGroup) -> None:
        if not name.startswith(PREFIX):
            raise ValueError(f"namespace {name!r} must start with {PREFIX!r}")
        self.name = name
        self._group = group

    def __repr__(self) -> str:
        return f"Netns({self.name!r})"

    def argv(self, *command: str) -> list[str]:
        """``ip netns exec NAME command...``."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(
        self,
        *command: str,
        stdin: str | None = None,
        check: bool = True,
        timeout: float = _COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside the namespace; a failure raises :class:`KernelError`."""
        argv = self.argv(*command)
        done = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check:
            _check(done, command, stdin)
        return done

    def ip_batch(self, commands: Sequence[str]) -> None:
        """``ip -n NAME -batch -``: many ``ip`` commands in one process."""
        if not commands:
            return
        argv = ["ip", "-n", self.name, "-batch", "-"]
        text = "".join(c + "\n" for c in commands)
        done = subprocess.run(
            argv, input=text, capture_output=True, text=True, check=False, timeout=_COMMAND_TIMEOUT
        )
        _check(done, argv, text)

    def sysctl(self, settings: Mapping[str, str | int]) -> None:
        """Set sysctls inside the namespace (``sysctl -w``, one process)."""
        if settings:
            self.run("sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items()))

    def popen(self, *command: str) -> subprocess.Popen[str]:
        """Start a long-lived helper inside the namespace (killed when the group closes).

        Its stdin and stdout are text pipes; it runs in its own session so a
        terminal's Ctrl-C reaches only this process, which then cleans up.
        """
        proc = subprocess.Popen(
            self.argv(*command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._group._processes.append(proc)
        return proc


# -- a group of namespaces with guaranteed cleanup -------------------------------------

_LIVE: list[NetnsGroup] = []
_LIVE_LOCK = threading.Lock()


def _cleanup_all() -> None:
    with _LIVE_LOCK:
        groups = list(_LIVE)
    for group in groups:
        group.close()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _cleanup_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_HANDLERS_INSTALLED: list[bool] = []


def _install_handlers() -> None:
    if _HANDLERS_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    _HANDLERS_INSTALLED.append(True)
    atexit.register(_cleanup_all)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_signal)


class NetnsGroup:
    """Namespaces ``kst-<token>-<role>`` and the processes in them, removed together.

    Use it as a context manager; :meth:`close` is idempotent and also runs at
    exit and on SIGTERM/SIGHUP.
    """

    def __init__(self) -> None:
        self.token = secrets.token_hex(5)
        self.namespaces: dict[str, Netns] = {}
        self._processes: list[subprocess.Popen[str]] = []
        self._closed = False
        _install_handlers()
        with _LIVE_LOCK:
            _LIVE.append(self)

    def __enter__(self) -> NetnsGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, role: str) -> Netns:
        """Create the namespace ``kst-<token>-<role>`` (``ip netns add``)."""
        if self._closed:
            raise KernelError("the namespace group is closed")
        if role in self.namespaces:
            return self.namespaces[role]
        name = f"{PREFIX}{self.token}-{role}"
        done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        if done.returncode != 0:
            raise KernelError(f"cannot create network namespace {name}: {done.stderr.strip()}")
        ns = Netns(name, self)
        self.namespaces[role] = ns
        return ns

    def __getitem__(self, role: str) -> Netns:
        return self.namespaces[role]

    def __iter__(self) -> Iterator[Netns]:
        return iter(list(self.namespaces.values()))

    def close(self) -> None:
        """Kill every helper process, then delete every namespace."""
        if self._closed:
            return
        self._closed = True
        for proc in self._processes:
            _stop(proc)
        self._processes.clear()
        for ns in self.namespaces.values():
            subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True, check=False)
        self.namespaces.clear()
        with _LIVE_LOCK, contextlib.suppress(ValueError):
            _LIVE.remove(self)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.terminate()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def errno_name(code: int | None) -> str:
    """``ECONNREFUSED`` for 111 (``"?"`` when unknown)."""
    return errno.errorcode.get(code or 0, "?")
