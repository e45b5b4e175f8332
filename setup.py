"""Build script: compiles every Cython module under src/kservice.

Set KSERVICE_NO_EXTENSIONS=1 for a pure-Python build. Otherwise a failed
compile is an error: we never ship the pure-Python twin by accident.
Set KSERVICE_CYTHON_DEBUG=1 to turn bounds checks and wraparound back on.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
NO_EXTENSIONS = os.environ.get("KSERVICE_NO_EXTENSIONS", "") not in ("", "0")
DEBUG = os.environ.get("KSERVICE_CYTHON_DEBUG", "") not in ("", "0")


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    sources = sorted(p.relative_to(HERE) for p in (HERE / "src" / "kservice").rglob("*.pyx"))
    exts = [
        Extension(
            ".".join(src.with_suffix("").parts[1:]),
            [str(src)],
            extra_compile_args=["-O3"],
        )
        for src in sources
    ]
    directives = {
        "language_level": "3",
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "cdivision": not DEBUG,
        "initializedcheck": DEBUG,
        "embedsignature": True,
    }
    return cythonize(exts, compiler_directives=directives)


setup(ext_modules=extensions())
