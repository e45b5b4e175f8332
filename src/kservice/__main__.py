"""``python -m kservice``: the ``kservice`` command."""

from kservice.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
