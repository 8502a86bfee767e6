"""Options shared by every test directory (registered here so any subset can be run)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dataplane",
        choices=("fake", "real"),
        default="fake",
        help="run the contract suites against the fakes (default) or the real kernel",
    )
