"""The ipvsproxy command on a real kernel: clear failures, and --cleanup on a clean node."""

from __future__ import annotations

import asyncio
import sys


async def run(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ipvsproxy", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode()


async def test_a_missing_kubeconfig_is_one_clear_error(netns: int) -> None:
    status, out = await run(
        "--kubeconfig=/nonexistent/kubeconfig",
        "--healthz-bind-address=127.0.0.1:10256",
        "--conntrack-max-per-core=0",  # a namespace: nf_conntrack_max is read-only here
        "--log-format=json",
    )
    assert status == 1
    assert "/nonexistent/kubeconfig" in out
    assert "Traceback" not in out


async def test_cleanup_on_a_node_without_the_proxy_succeeds(netns: int) -> None:
    status, out = await run("--cleanup", "--log-format=json")
    assert status == 0, out
    assert '"cleaned up"' in out
