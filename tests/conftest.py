"""Options shared by every test directory (registered here so any subset can be run)."""

from __future__ import annotations

import pytest

from ipvsproxy import lean_import

# The proxy imports its big dependencies through lazy stand-ins
# (ipvsproxy/lean_import.py, installed by its entry point); installing them here,
# before any test module imports those libraries, makes every test run on them too.
lean_import.install_dependencies()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dataplane",
        choices=("fake", "real"),
        default="fake",
        help="run the contract suites against the fakes (default) or the real kernel",
    )
