"""One way to pause the cyclic garbage collector around a big build.

Compiling, rendering and flattening a large ruleset makes hundreds of
thousands to millions of small acyclic objects (frozen attrs objects, tuples,
strings). With the collector running, every few hundred allocations start a
collection, and the older generations walk every live object again and
again: at 10,000 Services that doubles the time the build takes. Nothing
these builds make can form a cycle, so the collector pauses for them and
resumes (if it was running) when they return or raise.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector for the ``with`` block (nesting is fine)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
