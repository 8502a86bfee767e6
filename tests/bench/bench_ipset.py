"""Bulk-load 10,000 entries into KUBE-CLUSTER-IP through Ipsets.update: restore and netlink.

Run under a real kernel, as root:
    python3 tests/vm/uml_run.py -- .venv/bin/python tests/bench/bench_ipset.py
Prints BENCH ipset_restore_10k_s, ipset_netlink_10k_s and ipset_replace_5k_s; asserts nothing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ipvsproxy import lean_import

# As the proxy's entry point does, before anything imports its big dependencies.
lean_import.install_dependencies()

from ipvsproxy.core import ipset_catalog
from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.ipsets import IpsetCli
from tests.support.netns import fresh_netns

NEEDS_KERNEL = True
CLUSTER_IP = ipset_catalog.set_name(ipset_catalog.CLUSTER_IP, Family.V4)

COUNT = 10_000


def entries(count: int) -> set[str]:
    return {
        f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256},tcp:{80 + i % 3}" for i in range(count)
    }


async def load(ipsets: IpsetCli, name: str) -> None:
    """Bulk-load COUNT entries into an empty KUBE-CLUSTER-IP and print the time."""
    await ipsets.ensure(ipset_catalog.all_specs(Family.V4))
    await ipsets.update({CLUSTER_IP: (set(), await ipsets.entries(CLUSTER_IP))})
    wanted = entries(COUNT)
    start = time.perf_counter()
    await ipsets.update({CLUSTER_IP: (wanted, set())})
    loaded = time.perf_counter() - start
    got = await ipsets.entries(CLUSTER_IP)
    if got != wanted:
        raise SystemExit(f"loaded {len(got)} entries, expected {COUNT}")
    print(f"BENCH {name} {loaded:.3f} s", flush=True)


async def run() -> None:
    # The same load twice: through one `ipset restore` process (the bulk path), and over
    # netlink (the path IpsetCli takes for updates up to its netlink limit).
    await load(IpsetCli(netlink_limit=0), "ipset_restore_10k_s")
    ipsets = IpsetCli()
    await load(ipsets, "ipset_netlink_10k_s")
    start = time.perf_counter()
    await ipsets.replace(CLUSTER_IP, entries(COUNT // 2))
    print(f"BENCH ipset_replace_5k_s {time.perf_counter() - start:.3f} s", flush=True)


def main() -> None:
    with fresh_netns():
        asyncio.run(run())


if __name__ == "__main__":
    main()
