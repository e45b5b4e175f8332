"""The ``kservice`` command.

One function per subcommand (``cmd_<name>(args) -> exit status``), each
registered by an ``_add_<name>(subparsers)`` function listed in
:data:`_COMMANDS`. Subcommands that read manifests share
:func:`_add_manifest_arguments` (``PATH...``, ``--skip-unknown``) and
:func:`read_manifests`, which prints every problem kubectl style and returns
``None`` when there were any.

Exit status: 0 success, 1 invalid input (every problem printed on stderr,
never a traceback), 2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TextIO, TypeAlias

from kservice import __version__
from kservice.api import manifest
from kservice.errors import KServiceError, ManifestError, ValidationError

__all__ = ["build_parser", "error_lines", "main", "read_manifests"]

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

_SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


# -- output helpers ------------------------------------------------------------------


def _write(stream: TextIO, line: str) -> None:
    """Print one line, escaping what the terminal's encoding cannot show."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    safe = line.encode(encoding, "backslashreplace").decode(encoding, "replace")
    print(safe, file=stream)


def _out(line: str) -> None:
    _write(sys.stdout, line)


def _err(line: str) -> None:
    _write(sys.stderr, line)


def error_lines(error: BaseException) -> list[str]:
    """The lines to print for an error, kubectl style, one per field error.

    ``examples/bad.yaml, document 2: The Service "web" is invalid:
    spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive``
    """
    if isinstance(error, manifest.LoadError):
        return [line for e in error.errors for line in error_lines(e)]
    if isinstance(error, ValidationError):
        return error.lines()
    return [str(error)]


def _count(counter: Counter[str], order: Sequence[str]) -> str:
    """``"2 Service, 1 Pod"``: kinds in ``order`` first, then the rest sorted."""
    ranked = [k for k in order if k in counter] + sorted(k for k in counter if k not in order)
    return ", ".join(f"{counter[k]} {k}" for k in ranked)


# -- shared by the subcommands that read manifests ---------------------------------------


def _add_manifest_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="manifest files or folders (read recursively: *.yaml, *.yml, *.json); '-' for stdin",
    )
    parser.add_argument(
        "--skip-unknown",
        action="store_true",
        help="skip documents of kinds kservice does not model (Deployment, Namespace, ...)",
    )


def _read_stdin() -> str:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # replaced by a text stream (tests, embedding)
        return sys.stdin.read()
    try:
        return bytes(buffer.read()).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError("not UTF-8 text", source="<stdin>") from exc


def read_manifests(
    paths: Sequence[str], *, skip_unknown: bool = False
) -> manifest.LoadResult | None:
    """Read ``paths`` (``-`` is stdin); on problems print them all and return None."""
    try:
        if "-" in paths:
            if len(paths) > 1:
                raise KServiceError("'-' (stdin) cannot be combined with other paths")
            return manifest.read_text(_read_stdin(), source="<stdin>", skip_unknown=skip_unknown)
        return manifest.read(list(paths), skip_unknown=skip_unknown)
    except KServiceError as exc:
        for line in error_lines(exc):
            _err(line)
        errors = exc.errors if isinstance(exc, manifest.LoadError) else []
        if any(isinstance(e, manifest.UnknownKindError) for e in errors):
            _err("hint: --skip-unknown skips documents of kinds kservice does not model")
        return None


# -- validate ----------------------------------------------------------------------------


def _add_validate(subparsers: _SubParsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check manifests as the API server would",
        description=(
            "Read manifests, apply the API server's defaulting and validation, and report"
            " every problem, one line per field error. Prints a summary when all is valid."
        ),
    )
    _add_manifest_arguments(parser)
    parser.set_defaults(handler=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    """``kservice validate PATH...``: exit 0 with a summary, or 1 with every error."""
    result = read_manifests(args.paths, skip_unknown=args.skip_unknown)
    if result is None:
        return EXIT_INVALID
    order = [cls.KIND for cls in manifest.kinds().values()]
    n = len(result.objects)
    summary = f"{n} object{'' if n == 1 else 's'} valid"
    if n:
        summary += ": " + _count(Counter(o.KIND for o in result.objects), order)
    if result.skipped:
        skipped = _count(Counter(s.kind for s in result.skipped), ())
        summary += f" ({len(result.skipped)} skipped: {skipped})"
    _out(summary)
    return EXIT_OK


# -- the parser ---------------------------------------------------------------------------

#: The subcommands, in the order ``--help`` lists them.
_COMMANDS: tuple[Callable[[_SubParsers], None], ...] = (_add_validate,)


def build_parser() -> argparse.ArgumentParser:
    """The ``kservice`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="kservice",
        description="The Kubernetes Service data plane, end to end.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kservice`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else 1)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KServiceError as exc:  # a command's input problem that escaped it
        for line in error_lines(exc):
            _err(f"error: {line}")
        return EXIT_INVALID
    except KeyboardInterrupt:
        return 130
