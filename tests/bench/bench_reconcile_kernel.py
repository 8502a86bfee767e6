"""Benchmark: one EndpointSlice change to kernel updated, on the real dataplane.

As bench_reconcile.py, on the real kernel (netlink IPVS and addresses, the ipset
and iptables commands), each size in a fresh network namespace: the median of
20 changes at 10,000 and at 100 Services x 5 endpoints, their ratio, the time of
the first full sync at 10,000 (10,000 virtual servers, 50,000 real servers,
10,000 addresses on kube-ipvs0, 10,000 KUBE-CLUSTER-IP entries) and the peak RSS.

Run (one user-mode-linux boot, 2G for the guest):
    python3 tests/vm/uml_run.py --mem 2G -- \
        /work/main/.venv/bin/python tests/bench/run.py --inside bench_reconcile_kernel
or `python3 tests/bench/run.py bench_reconcile_kernel`.
Prints `BENCH <name> <value> <unit>` lines; asserts nothing about the numbers.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ipvsproxy import lean_import

# As the proxy's entry point does, before anything imports its big dependencies.
lean_import.install_dependencies()

from pyroute2 import AsyncIPRoute

from ipvsproxy.app import open_dataplane
from ipvsproxy.config import Config
from ipvsproxy.node_setup import prepare_kernel
from tests.bench.reconcile_common import Load, bench, median_ms, peak_rss_mb
from tests.support.netns import fresh_netns

NEEDS_KERNEL = True
NODE_IP = "192.168.1.10"


async def add_node_address() -> None:
    """A fresh namespace has only loopback, and a node without an IPv4 address of its
    own serves no IPv4 Service: give it one, on a link of its own as a NIC would be."""
    async with AsyncIPRoute() as ipr:
        await ipr.link("add", ifname="eth0", kind="dummy")
        (index,) = await ipr.link_lookup(ifname="eth0")
        await ipr.addr("add", index=index, address=NODE_IP, prefixlen=24)
        await ipr.link("set", index=index, state="up")


async def run(services: int) -> tuple[list[float], float]:
    await add_node_address()
    dataplane = await open_dataplane()
    try:
        await prepare_kernel(dataplane, Config())
        load = Load(services, dataplane)
        load.load()
        initial = await load.initial_sync()
        print(f"  {services} services: first sync {initial:.1f} s", flush=True)
        return await load.change_latencies(), initial
    finally:
        await dataplane.close()


def in_fresh_netns(services: int) -> tuple[list[float], float]:
    # The dataplane's sockets and the ipset/iptables commands all act in the
    # namespace of this thread, which asyncio.run keeps.
    with fresh_netns():
        return asyncio.run(run(services))


def main() -> None:
    # 100 first: the 10,000 namespace's teardown (in the kernel, after it is left)
    # must not slow the small run down, and the peak RSS read last is that of 10,000.
    small, _ = in_fresh_netns(100)
    # design.md's yardstick: kube-proxy 1.19 took 8 s (plus ~2 min of ipset calls) to
    # program 1,000 services under this same user-mode-linux kernel.
    _, initial_1k = in_fresh_netns(1_000)
    big, initial = in_fresh_netns(10_000)
    rss = peak_rss_mb()
    bench("change_latency_ms_10k_kernel", median_ms(big), "ms")
    bench("change_latency_ms_100_kernel", median_ms(small), "ms")
    bench("change_latency_ratio_kernel", median_ms(big) / median_ms(small), "x")
    bench("change_latency_max_ms_10k_kernel", max(big) * 1000, "ms")
    bench("initial_sync_s_1k_kernel", initial_1k, "s")
    bench("initial_sync_s_10k_kernel", initial, "s")
    bench("peak_rss_mb_10k_kernel", rss, "MB")


if __name__ == "__main__":
    main()
