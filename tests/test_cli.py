"""The kservice command: kservice.cli and python -m kservice."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import kservice
from kservice.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BAD_SERVICE = textwrap.dedent(
    """\
    apiVersion: v1
    kind: Service
    metadata:
      name: web
    spec:
      selector:
        app: web
      ports:
        - port: 0
          targetPort: 8080
    """
)

GOOD_SERVICE = BAD_SERVICE.replace("port: 0", "port: 80")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(EXAMPLES))
    assert (code, err) == (0, "")
    assert out == "20 objects valid: 6 Service, 1 EndpointSlice, 10 Pod, 3 Node\n"


def test_validate_files_and_folders_together(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(GOOD_SERVICE, encoding="utf-8")
    code, out, _ = run(capsys, "validate", str(path), str(EXAMPLES / "nodes.yaml"))
    assert code == 0
    assert out == "4 objects valid: 1 Service, 3 Node\n"


def test_validate_bad_file_prints_kubectl_style_lines(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD_SERVICE.replace("name: web", "name: ok") + "---\n" + BAD_SERVICE)
    code, out, err = run(capsys, "validate", str(path))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f'{path}, document 1: The Service "web" is invalid: spec.ports[0].port: '
        "Invalid value: 0: must be between 1 and 65535, inclusive"
    ]


def test_validate_relative_path_is_printed_as_given(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "examples").mkdir()
    # The first --- starts document 0 (empty), the second document 1.
    (tmp_path / "examples" / "bad.yaml").write_text("---\n---\n" + BAD_SERVICE)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "validate", "examples/")
    assert code == 1
    assert err == (
        'examples/bad.yaml, document 1: The Service "web" is invalid: spec.ports[0].port: '
        "Invalid value: 0: must be between 1 and 65535, inclusive\n"
    )


def test_validate_prints_every_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        BAD_SERVICE.replace("targetPort: 8080", "targetPort: 8080\n      protocol: FTP")
    )
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: [x\n")
    (tmp_path / "c.json").write_text('{"kind": "Pod"}')
    code, out, err = run(capsys, "validate", str(tmp_path), str(tmp_path / "missing.yaml"))
    assert (code, out) == (1, "")
    lines = err.splitlines()
    a, b, c = (tmp_path / n for n in ("a.yaml", "b.yaml", "c.json"))
    assert lines[0] == (
        f'{a}, document 0: The Service "web" is invalid: spec.ports[0].port: '
        "Invalid value: 0: must be between 1 and 65535, inclusive"
    )
    assert lines[1] == (
        f'{a}, document 0: The Service "web" is invalid: spec.ports[0].protocol: '
        'Unsupported value: "FTP": supported values: "SCTP", "TCP", "UDP"'
    )
    assert lines[2].startswith(f"{b}, document 0: invalid YAML: line 4, column 1: ")
    assert lines[3:] == [
        f"{c}, document 0: apiVersion not set",
        f"{tmp_path / 'missing.yaml'}: no such file or directory",
    ]


def test_unknown_kinds(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n---\n" + GOOD_SERVICE
    )
    code, out, err = run(capsys, "validate", str(path))
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith(f'{path}, document 0: unknown kind "Namespace" (apiVersion "v1")')
    assert lines[1].startswith(f'{path}, document 1: unknown kind "Deployment"')
    assert lines[2] == "hint: --skip-unknown skips documents of kinds kservice does not model"

    code, out, err = run(capsys, "validate", "--skip-unknown", str(path))
    assert (code, err) == (0, "")
    assert out == "1 object valid: 1 Service (2 skipped: 1 Deployment, 1 Namespace)\n"


def test_validate_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert run(capsys, "validate", str(tmp_path)) == (0, "0 objects valid\n", "")


def test_validate_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(BAD_SERVICE))
    code, _, err = run(capsys, "validate", "-")
    assert code == 1
    assert err.startswith('<stdin>, document 0: The Service "web" is invalid: ')
    monkeypatch.setattr(sys, "stdin", io.StringIO(GOOD_SERVICE))
    assert run(capsys, "validate", "-") == (0, "1 object valid: 1 Service\n", "")
    code, _, err = run(capsys, "validate", "-", "x.yaml")
    assert code == 1
    assert "cannot be combined" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["validate"], ["frobnicate"], ["validate", "--bogus", "x.yaml"]):
        code, out, err = run(capsys, *argv)
        assert code == 2, argv
        assert out == ""
        assert err.startswith("usage: kservice")


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "validate" in out
    code, out, _ = run(capsys, "validate", "--help")
    assert code == 0
    assert "--skip-unknown" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version") == (0, f"kservice {kservice.__version__}\n", "")


def test_python_dash_m() -> None:
    src = str(Path(kservice.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "kservice", "--version"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        0,
        f"kservice {kservice.__version__}\n",
        "",
    )


def test_unprintable_characters_do_not_crash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "odd.json"
    path.write_text('{"apiVersion": "v1", "kind": "\\ud800"}')
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1
    assert "unknown kind" in err
