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


# -- alloc, dns, env -----------------------------------------------------------------------
def test_alloc_reports_allocations_bands_and_queries(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "alloc", str(EXAMPLES), "--node-port", "30080", "--node-port", "30001",
        "--ip", "10.96.0.50",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    demo = next(line for line in lines if line.startswith("staging/demo-app"))
    assert "NodePort" in demo and demo.endswith("30080")
    public = next(line for line in lines if line.startswith("production/public-api"))
    assert ",hc:" in public  # externalTrafficPolicy Local: a healthCheckNodePort
    assert "ClusterIP 10.96.0.0/12: 4/1048574 used; static band 0/256, dynamic band 4/1048318" in (
        lines
    )
    assert "nodePort 30080: allocated to staging/demo-app (http/TCP) (static band)" in lines
    assert "nodePort 30001: free (static band)" in lines
    assert "10.96.0.50: free (static band of 10.96.0.0/12)" in lines


def test_alloc_is_reproducible_and_seedable(capsys: pytest.CaptureFixture[str]) -> None:
    first = run(capsys, "alloc", str(EXAMPLES))[1]
    assert run(capsys, "alloc", str(EXAMPLES))[1] == first
    assert run(capsys, "alloc", str(EXAMPLES), "--seed", "5")[1] != first


def test_alloc_out_of_range_queries_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "alloc", str(EXAMPLES), "--ip", "1.2.3.4", "--node-port", "80")
    assert code == 1
    assert "1.2.3.4: not in the service range (10.96.0.0/12)" in out
    assert "nodePort 80: not in the range 30000-32767" in out


def test_alloc_conflicting_manifests_report_every_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    two = GOOD_SERVICE.replace("port: 80", "port: 80\n      nodePort: 30080").replace(
        "spec:", "spec:\n  type: NodePort"
    )
    (tmp_path / "a.yaml").write_text(two)
    (tmp_path / "b.yaml").write_text(two.replace("name: web", "name: web2"))
    code, out, err = run(capsys, "alloc", str(tmp_path))
    assert code == 1 and out == ""
    assert err.strip() == (
        'The Service "web2" is invalid: spec.ports[0].nodePort: Invalid value: 30080: '
        "provided port is already allocated"
    )


def test_dns_counts_wasted_queries(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "dns", "api.example.com", "-n", "production", str(EXAMPLES),
        "--upstream", "api.example.com=203.0.113.5",
    )  # fmt: skip
    assert code == 0
    assert "4. api.example.com." in out and "wasted queries: 3" in out
    code, out, _ = run(capsys, "dns", "backend-api", "-n", "production", str(EXAMPLES))
    assert code == 0 and "wasted queries: 0" in out
    code, out, _ = run(capsys, "dns", "nothing-here", "-n", "production", str(EXAMPLES))
    assert code == 1 and "unresolved: NXDOMAIN" in out


def test_dns_headless_statefulset_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "dns", "redis-0.redis", "-n", "data", str(EXAMPLES))
    assert code == 0
    assert "redis-0.redis.data.svc.cluster.local.\t5\tIN\tA\t10.244.1.40" in out


def test_dns_bad_upstream_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "dns", "x", str(EXAMPLES), "--upstream", "nope")
    assert code == 2 and "expected NAME=IP" in err


def test_env_prints_kubelet_variables(capsys: pytest.CaptureFixture[str]) -> None:
    pods = [o for o in kservice.load(EXAMPLES) if o.KIND == "Pod"]
    name = next(p.metadata.name for p in pods if p.metadata.namespace == "production")
    code, out, _ = run(capsys, "env", name, "-n", "production", str(EXAMPLES))
    assert code == 0
    env = dict(line.split("=", 1) for line in out.splitlines())
    host = env["BACKEND_API_SERVICE_HOST"]
    assert env["BACKEND_API_PORT"] == f"tcp://{host}:80"
    assert env["BACKEND_API_SERVICE_PORT_HTTP"] == "80"
    assert not any(k.startswith("DEMO_APP") for k in env)  # another namespace
    assert not any(k.startswith("BILLING_DB") for k in env)  # ExternalName, other namespace


def test_env_unknown_pod(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "env", "ghost", "-n", "production", str(EXAMPLES))
    assert code == 1
    assert 'Pod "ghost" not found in namespace "production"' in err


# -- compile and diff ------------------------------------------------------------------------
def test_compile_nftables_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "compile", str(EXAMPLES), "--mode", "nftables", "--node", "node-a",
        "--cluster-cidr", "10.244.0.0/16",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith('add table ip kube-proxy { comment "rules for kube-proxy" ; }\n')
    assert "service-H7YJ45HE-production/backend-api/tcp/http" in out
    assert "redis" not in out  # headless: kube-proxy programs nothing
    # Deterministic: the same command prints the same bytes.
    assert run(capsys, "compile", str(EXAMPLES), "--mode", "nftables", "--node", "node-a",
               "--cluster-cidr", "10.244.0.0/16")[1] == out  # fmt: skip


def test_compile_iptables_formats(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "rules.txt"
    code, out, err = run(
        capsys, "compile", str(EXAMPLES), "--node", "node-b", "-o", str(target)
    )  # fmt: skip
    assert code == 0 and out == "", err
    text = target.read_text()
    assert text.startswith("*filter\n") and "*nat\n" in text and text.endswith("COMMIT\n")
    assert "-A KUBE-SERVICES" in text
    code, out, _ = run(capsys, "compile", str(EXAMPLES), "--node", "node-b", "--format", "save")
    assert code == 0 and "/32" in out


def test_compile_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "compile", str(EXAMPLES), "--node", "ghost")
    assert code == 1 and 'Node "ghost" not found' in err and "node-a" in err
    code, _, err = run(capsys, "compile", str(EXAMPLES), "--node", "node-a", "--format", "json")
    assert code == 2 and "not available in iptables mode" in err


def test_diff_touches_only_what_changed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    for f in EXAMPLES.glob("*.yaml"):
        (new / f.name).write_text(f.read_text().replace("nodePort: 30080", "nodePort: 30081"))
    code, out, err = run(
        capsys, "diff", str(EXAMPLES), str(new), "--node", "node-a",
        "--cluster-cidr", "10.244.0.0/16",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines() == [
        "delete element ip kube-proxy service-nodeports { tcp . 30080 }",
        "add element ip kube-proxy service-nodeports { tcp . 30081 : goto "
        "external-WZAIZS5M-staging/demo-app/tcp/http }",
    ]
    code, out, _ = run(capsys, "diff", str(EXAMPLES), str(EXAMPLES), "--node", "node-a")
    assert code == 0 and out == ""


def test_compile_ipvs_formats(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "compile", str(EXAMPLES), "--mode", "ipvs", "--node", "node-a")
    assert code == 0, err
    assert out.startswith("-A -t ") and " -m -w 1\n" in out
    code, out, _ = run(
        capsys, "compile", str(EXAMPLES), "--mode", "ipvs", "--node", "node-a", "--format", "ipset"
    )
    assert code == 0 and "create KUBE-CLUSTER-IP hash:ip,port family inet" in out
    code, out, _ = run(
        capsys, "compile", str(EXAMPLES), "--mode", "ipvs", "--node", "node-a",
        "--format", "iptables",
    )  # fmt: skip
    assert code == 0 and "-m set --match-set KUBE-CLUSTER-IP dst,dst" in out


# -- trace ---------------------------------------------------------------------------------
def test_trace_node_port_from_outside(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "trace", str(EXAMPLES), "--mode", "nftables", "--node", "node-a",
        "--dst", "192.168.1.10", "--dport", "30080", "--from", "external", "--count", "400",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("packet: tcp 203.0.113.1 (external) -> 192.168.1.10:30080")
    assert "numgen random mod 2 vmap" in out
    assert "verdict: DNAT to 10.244." in out and "masqueraded" in out
    assert out.count(" 50.000%  DNAT to ") == 2
    lines = out.split("400 connections (seed 0):\n")[1].splitlines()
    assert sum(int(line.split()[0]) for line in lines) == 400


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_trace_json_from_a_pod(capsys: pytest.CaptureFixture[str], mode: str) -> None:
    import json

    pod = "pod:production/backend-api-7c9d6b5f4-2xk8p"  # 10.244.1.11, on node-a
    code, out, err = run(
        capsys, "trace", str(EXAMPLES), "--mode", mode, "--node", "node-a",
        "--dst", "192.168.1.10", "--dport", "30080", "--from", pod, "--json",
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["packet"]["src"] == "10.244.1.11" and doc["packet"]["origin"] == "pod"
    assert doc["mode"] == mode
    assert {d["address"] for d in doc["distribution"]} == {"10.244.2.31", "10.244.3.32"}
    assert doc["rules_evaluated"] == sum(1 for s in doc["steps"] if s["event"] == "rule")


def test_trace_a_real_nodes_dump(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    dump = tmp_path / "rules.save"
    code, _, err = run(
        capsys, "compile", str(EXAMPLES), "--node", "node-a", "--format", "save", "-o", str(dump)
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run(
        capsys, "trace", "--rules", str(dump), "--node-ip", "192.168.1.10",
        "--dst", "192.168.1.10", "--dport", "30080", "--src", "198.51.100.9", "--from", "external",
    )  # fmt: skip
    assert code == 0, err
    assert "[iptables mode]" in out and "KUBE-NODEPORTS" in out
    assert out.count(" 50.000%  DNAT to ") == 2


def test_trace_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    base = ["trace", str(EXAMPLES), "--node", "node-a", "--dport", "80"]
    code, _, err = run(capsys, *base, "--dst", "10.0.0.300", "--src", "10.244.1.11")
    assert code == 1 and "packet dst: '10.0.0.300' is not an IP address" in err
    code, _, err = run(capsys, *base, "--dst", "10.96.0.1", "--from", "pod:default/ghost")
    assert code == 1 and 'Pod "default/ghost" not found' in err
    code, _, err = run(capsys, *base, "--dst", "10.96.0.1", "--from", "mars")
    assert code == 1 and "--from 'mars'" in err
    code, _, err = run(capsys, "trace", "--dst", "10.96.0.1", "--dport", "80")
    assert code == 1 and "give manifest PATHs, or --rules FILE" in err
    garbage = tmp_path / "x.txt"
    garbage.write_text("hello\n")
    code, _, err = run(
        capsys, "trace", "--rules", str(garbage), "--dst", "10.0.0.1", "--dport", "1"
    )
    assert code == 1 and "cannot tell which tool wrote this dump" in err
    assert "Traceback" not in err
