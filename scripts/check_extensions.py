"""Fail loudly unless every Cython module under src/kservice was compiled and loads.

Run after ``setup.py build_ext --inplace``. Skipped only when
KSERVICE_NO_EXTENSIONS is set (an explicit pure-Python build).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def main() -> int:
    if os.environ.get("KSERVICE_NO_EXTENSIONS", "") not in ("", "0"):
        print("KSERVICE_NO_EXTENSIONS is set: pure-Python build, no extension checked")
        return 0
    sys.path.insert(0, str(SRC))
    modules = sorted(".".join(p.relative_to(SRC).with_suffix("").parts) for p in SRC.rglob("*.pyx"))
    failed = []
    for name in modules:
        try:
            mod = importlib.import_module(name)
        except ImportError as exc:
            failed.append(f"{name}: import failed: {exc}")
            continue
        origin = getattr(mod, "__file__", "") or ""
        if not origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            failed.append(f"{name}: loaded from {origin}, not a compiled extension")
    if failed:
        print("COMPILED EXTENSIONS DID NOT LOAD:", *failed, sep="\n  ", file=sys.stderr)
        return 1
    print(f"compiled extensions loaded: {', '.join(modules) if modules else '(none yet)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
