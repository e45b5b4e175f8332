"""Fixtures for the kernel conformance tests.

``netns`` is ONE private network namespace per test session, named
``kst-<random hex>``: created on first use, reused by every example (``nft -c``
loads nothing and ``iptables-restore --test`` commits nothing) and always
deleted at the end. Tools only ever run inside it through ``ip netns exec``;
nothing here touches the root namespace's rules, routes or interfaces.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from kservice.kernel.netns import kernel_unavailable as _kernel_unavailable

TOOLS = ("ip", "nft", "iptables-restore", "ip6tables-restore")


def kernel_unavailable() -> str | None:
    """Why the kernel tests cannot run here, or ``None``."""
    return _kernel_unavailable(TOOLS)


class Netns:
    """A private network namespace; :meth:`run` runs a command inside it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )


@pytest.fixture(scope="session")
def netns() -> Iterator[Netns]:
    reason = kernel_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"kst-{uuid.uuid4().hex[:12]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        yield Netns(name)
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
