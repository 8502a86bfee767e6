"""The README's demo as a test: the real ipvsproxy process against the test API server.

The one test where every part runs as in production: the CLI, the watchers
over HTTP, the reconciler, the kernel, the HTTP servers, SIGTERM and
--cleanup. (tests/support/demo.py says what it does and checks.)
"""

from __future__ import annotations

import sys

from tests.support.demo import run_demo


async def test_the_demo_passes_every_check(netns: int) -> None:
    lines: list[str] = []
    result = await run_demo(lines.append, [sys.executable, "-m", "ipvsproxy"])
    print("\n".join(lines))
    failed = [what for what, ok in result.checks if not ok]
    assert result.checks
    assert not failed, "\n".join(lines)
