"""Bulk-load 10,000 entries into KUBE-CLUSTER-IP through Ipsets.update (one ipset restore).

Run under a real kernel, as root:
    python3 tests/vm/uml_run.py -- .venv/bin/python tests/bench/bench_ipset.py
Prints ``BENCH ipset_restore_10k_s <seconds> s`` (and the replace figure); asserts nothing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ipvsproxy import ipsetnames
from ipvsproxy.dataplane.ipsets import IpsetCli
from ipvsproxy.model import Family
from tests.support.netns import fresh_netns

NEEDS_KERNEL = True
CLUSTER_IP = ipsetnames.set_name(ipsetnames.CLUSTER_IP, Family.V4)

COUNT = 10_000


def entries(count: int) -> set[str]:
    return {
        f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256},tcp:{80 + i % 3}" for i in range(count)
    }


async def run() -> None:
    ipsets = IpsetCli()
    await ipsets.ensure(ipsetnames.all_specs(Family.V4))
    wanted = entries(COUNT)
    start = time.perf_counter()
    await ipsets.update({CLUSTER_IP: (wanted, set())})
    loaded = time.perf_counter() - start
    got = await ipsets.entries(CLUSTER_IP)
    if got != wanted:
        raise SystemExit(f"loaded {len(got)} entries, expected {COUNT}")
    print(f"BENCH ipset_restore_10k_s {loaded:.3f} s", flush=True)
    start = time.perf_counter()
    await ipsets.replace(CLUSTER_IP, entries(COUNT // 2))
    print(f"BENCH ipset_replace_5k_s {time.perf_counter() - start:.3f} s", flush=True)


def main() -> None:
    with fresh_netns():
        asyncio.run(run())


if __name__ == "__main__":
    main()
