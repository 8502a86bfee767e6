"""Contract tests: one suite per dataplane interface, run against both implementations.

On the host (``tox -e unit``) the suites run against the in-memory fakes. Under a kernel
with IPVS (``tox -e kernel``) the same suites run against the real implementations with
``--dataplane=real``, each test inside a fresh network namespace of its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.netns import fresh_netns


@pytest.fixture
def dataplane_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.config.getoption("--dataplane")
    return kind


@pytest.fixture
def real(dataplane_kind: str) -> bool:
    """True when the suite runs against the real kernel."""
    return dataplane_kind == "real"


@pytest.fixture
def netns(real: bool) -> Iterator[None]:
    """A fresh network namespace for a real-kernel test; nothing for a fake."""
    if not real:
        yield
        return
    with fresh_netns():
        yield
