"""Benchmark: the memory of the real proxy process, everything included.

bench_memory.py measures what the proxy keeps per Service in a process of its own
making; this measures the process users run: ``python -m ipvsproxy`` with the shipped
config (tests/support/switching.py), its API client, reflectors, HTTP servers and the
real dataplane, against the project's test API server holding N ClusterIP Services x 5
endpoints (bench_e2e's load) before it starts. After its first full sync and a few
quiet seconds, read from /proc/PID/status:

- ``rss_mb_<n>k_process``: the process's peak RSS (VmHWM), to set beside kube-proxy's
  107 MB at 5,000 Services (design.md);
- ``rss_mb_<n>k_process_settled``: its RSS then (VmRSS);
- ``startup_to_first_sync_s_<n>k_process``: exec until the first full sync ended.

Run: `python3 tests/bench/run.py bench_memory_process` (one kernel boot, in a fresh
network namespace per size). Prints `BENCH <name> <value> <unit>` lines; asserts nothing.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ipvsproxy import lean_import

# As the proxy's entry point does, before anything imports its big dependencies.
lean_import.install_dependencies()

from tests.bench.bench_e2e import in_fresh_netns, loaded_server, wait_first_sync
from tests.bench.reconcile_common import bench
from tests.support import builders
from tests.support.switching import start_proxy

NEEDS_KERNEL = True
SIZES = (5_000, 10_000)
SETTLE_S = 5.0


def status_mb(pid: int, field: str) -> float:
    """A ``VmHWM``/``VmRSS`` line of /proc/PID/status, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise LookupError(field)


async def size_run(services: int, workdir: Path) -> None:
    label = f"{services // 1000}k"
    server = await loaded_server(services)
    started = time.time()
    proxy = await start_proxy(server, workdir, builders.NODE)
    try:
        first = await wait_first_sync(proxy)
        bench(f"startup_to_first_sync_s_{label}_process", first - started, "s")
        await asyncio.sleep(SETTLE_S)
        pid = proxy.process.pid
        bench(f"rss_mb_{label}_process", status_mb(pid, "VmHWM"), "MB")
        bench(f"rss_mb_{label}_process_settled", status_mb(pid, "VmRSS"), "MB")
    finally:
        await proxy.stop()
        await server.stop()


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-process-"))
    for size in SIZES:
        in_fresh_netns(size_run, workdir / str(size), size)


if __name__ == "__main__":
    main()
