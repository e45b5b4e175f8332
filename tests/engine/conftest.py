"""Engine fixtures: every engine test runs on both twins (multidict's habit)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# the Hypothesis cluster strategies live with the kernel acceptance tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conformance"))

IMPLEMENTATIONS = ("cython", "python")


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "cython":
        try:
            import kservice._fastpath  # noqa: F401
        except ImportError:
            pytest.skip("the compiled engine is not built (KSERVICE_NO_EXTENSIONS?)")
    return name
