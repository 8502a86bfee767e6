"""Benchmark: one EndpointSlice change to dataplane updated, on the fake dataplane.

The Python cost alone (plan, diff, the reconciler's bookkeeping, the fakes' own
work), at 10,000 and at 100 Services x 5 endpoints: the median of 20 changes at
each size, their ratio (the goal is < 2: a change costs the same whatever the
cluster's size), and the peak RSS of the process once 10,000 Services are loaded
and synced. See reconcile_common.py for what is measured exactly.

Run: .venv/bin/python tests/bench/bench_reconcile.py   (or tests/bench/run.py bench_reconcile)
Prints `BENCH <name> <value> <unit>` lines; asserts nothing about the numbers.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ipvsproxy import lean_import

# As the proxy's entry point does, before anything imports its big dependencies.
lean_import.install_dependencies()

from tests.bench.reconcile_common import Load, bench, median_ms, peak_rss_mb
from tests.support.fake_dataplane import fake_dataplane


async def run(services: int) -> tuple[list[float], float]:
    load = Load(services, fake_dataplane())
    load.load()
    initial = await load.initial_sync()
    return await load.change_latencies(), initial


def main() -> None:
    # 10,000 first, so the peak RSS read after it is that of 10,000 Services alone.
    big, initial = asyncio.run(run(10_000))
    rss = peak_rss_mb()
    gc.collect()
    small, _ = asyncio.run(run(100))
    bench("change_latency_ms_10k_fake", median_ms(big), "ms")
    bench("change_latency_ms_100_fake", median_ms(small), "ms")
    bench("change_latency_ratio_fake", median_ms(big) / median_ms(small), "x")
    bench("change_latency_max_ms_10k_fake", max(big) * 1000, "ms")
    bench("initial_sync_s_10k_fake", initial, "s")
    bench("peak_rss_mb_10k", rss, "MB")


if __name__ == "__main__":
    main()
