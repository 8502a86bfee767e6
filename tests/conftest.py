"""Options shared by every test directory (registered here so any subset can be run)."""

from __future__ import annotations

import pytest

# The proxy imports kubernetes_asyncio and pyroute2 through lazy stand-ins
# (ipvsproxy/lean_import.py, installed by ipvsproxy.kube and ipvsproxy.dataplane);
# importing those packages here first makes every test run on them, as the proxy does.
import ipvsproxy.dataplane
import ipvsproxy.kube  # noqa: F401


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dataplane",
        choices=("fake", "real"),
        default="fake",
        help="run the contract suites against the fakes (default) or the real kernel",
    )
