"""Benchmarks of the IPVS-mode compiler (kservice.proxy.ipvs) and its three texts.

The same NodeViews as ``bench_compile_iptables`` (100 to 10,000 Services with 10
endpoints, one 250-endpoint Service; built once, outside the timed part). Timed:
``compile`` alone, and ``compile`` + ``ipvsadm-save`` + ``ipset save`` +
``iptables-restore`` text. Peak memory (tracemalloc) goes into ``extra_info``.

Run: ``PYTHONPATH=src python -m pytest benchmarks/bench_compile_ipvs.py``.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from bench_compile_iptables import SIZES, _rounds, _view
from kservice.netfilter.iptables_text import render_restore
from kservice.netfilter.ipvs_text import render_ipset_save, render_ipvsadm_save
from kservice.proxy import NodeView
from kservice.proxy.ipvs import compile


def _compile_and_render(view: NodeView) -> str:
    ruleset = compile(view, restore_only=True)
    return render_ipvsadm_save(ruleset) + render_ipset_save(ruleset) + render_restore(ruleset)


@pytest.mark.parametrize(("services", "endpoints"), SIZES)
def test_compile(benchmark: BenchmarkFixture, services: int, endpoints: int) -> None:
    view = _view(services, endpoints)
    pedantic: Callable[..., object] = benchmark.pedantic
    ruleset = pedantic(compile, args=(view,), rounds=_rounds(services), warmup_rounds=1)
    assert ruleset == compile(view)


@pytest.mark.parametrize(("services", "endpoints"), SIZES)
def test_compile_and_render(benchmark: BenchmarkFixture, services: int, endpoints: int) -> None:
    view = _view(services, endpoints)
    tracemalloc.start()
    try:
        text = _compile_and_render(view)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    benchmark.extra_info["peak_mib"] = round(peak / 2**20, 1)
    pedantic: Callable[..., str] = benchmark.pedantic
    again = pedantic(_compile_and_render, args=(view,), rounds=_rounds(services), warmup_rounds=1)
    assert again == text
    # One real server line per endpoint behind each ClusterIP virtual server at least.
    assert text.count(" -m -w 1\n") >= services * endpoints
