"""Shared test configuration."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        help="kernel conformance at length: 2,000 generated clusters for acceptance and"
        " 200 for engine/kernel agreement (KSERVICE_KERNEL_EXAMPLES and"
        " KSERVICE_AGREEMENT_EXAMPLES, when set, still win)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--long"):
        os.environ.setdefault("KSERVICE_KERNEL_EXAMPLES", "2000")
        os.environ.setdefault("KSERVICE_AGREEMENT_EXAMPLES", "200")
