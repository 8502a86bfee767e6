"""Benchmark: what a user sees, end to end, through the real watch path.

The project's test API server (in this process), the real ``ipvsproxy`` process started
with the shipped defaults (only the node name, the kubeconfig and loopback HTTP addresses
given), and the kernel (this script runs inside the kernel runner, in a fresh network
namespace per size). Each size: N ClusterIP Services x 5 endpoints exist before the proxy
starts. Then:

- ``startup_to_first_sync_s``: exec of the proxy until its first full sync ended (log),
  after one start that is not measured (``warm_up``);
- ``e2e_change_ms_p50/p99_<size>``: an EndpointSlice written to the API server (one
  endpoint of a random Service replaced) until the kernel holds the new real server,
  read over netlink every millisecond; ``_isolated`` with a second of quiet before each
  change, ``_back_to_back`` each written the moment the previous one was in the kernel;
- ``full_resync_ms_<size>``: the first full resync after those changes, as the proxy logs
  it: one that reads the whole kernel (the proxy changed it since it last verified it);
- ``idle_cpu_percent_<size>``: then the proxy's CPU time over 60 s with no change
  (periodic full resyncs included), in percent of one CPU;
- ``idle_resync_ms_<size>``: the median duration of the full resyncs in that minute:
  the kernel's fingerprints unchanged, nothing is re-read;
- ``storm_first_vs_s``, ``storm_max_vs_s``, ``storm_last_vs_after_last_object_s``: 5,000
  Services and slices created as fast as the server takes them while the proxy runs;
  when a sample of their virtual servers appears, from each one's creation.

Run: `python3 tests/bench/run.py bench_e2e` (one kernel boot; 2G for the guest).
Prints `BENCH <name> <value> <unit>` lines; asserts nothing about the numbers.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ipvsproxy import lean_import

# As the proxy's entry point does, before anything imports its big dependencies.
lean_import.install_dependencies()

from pyroute2 import AsyncIPRoute

from ipvsproxy.core.model import IpProtocol, VirtualServerKey
from ipvsproxy.dataplane.ipvs import NetlinkIpvs
from tests.apiserver.server import ApiServer
from tests.bench.reconcile_common import bench
from tests.support import builders
from tests.support.netns import fresh_netns
from tests.support.switching import ProxyProcess, log_records, logged_at, start_proxy

NEEDS_KERNEL = True
NODE_IP = "192.168.1.10"
ENDPOINTS = 5
CHANGES = 20
IDLE_S = 60.0


def vip(i: int) -> str:
    return f"10.96.{i >> 8}.{i & 255}"


def endpoint_ip(i: int, j: int) -> str:
    n = i * ENDPOINTS + j + 1
    return f"10.{64 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def service(i: int) -> dict[str, object]:
    return builders.service(
        f"svc-{i}", cluster_ips=(vip(i),), ports=[builders.port(80, "http", target=8080)]
    )


def endpoints(i: int, ips: list[str]) -> dict[str, object]:
    return builders.endpoint_slice(
        [builders.endpoint(ip, builders.NODE) for ip in ips],
        [("http", 8080)],
        service=f"svc-{i}",
    )


def key(i: int) -> VirtualServerKey:
    return VirtualServerKey(vip(i), 80, IpProtocol.TCP)


async def add_node_address() -> None:
    async with AsyncIPRoute() as ipr:
        await ipr.link("add", ifname="eth0", kind="dummy")
        (index,) = await ipr.link_lookup(ifname="eth0")
        await ipr.addr("add", index=index, address=NODE_IP, prefixlen=24)
        await ipr.link("set", index=index, state="up")


def full_syncs(log: str) -> list[tuple[float, float]]:
    """(end time, duration ms) of each full sync the proxy logged."""
    return [
        (logged_at(record), float(record.get("duration_ms", 0.0)))
        for record in log_records(log)
        if record.get("event") == "synced" and record.get("full")
    ]


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time of ``pid`` (utime and stime), with ``children`` that of the processes it
    waited for too (cutime and cstime): fields 14-17 of proc(5), 11-14 after the name."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def page_faults(pid: int, children: bool = False) -> int:
    """Minor page faults of ``pid``, with ``children`` those of the processes it waited for
    too: fields 10 and 11 of proc(5), 7 and 8 after the name. Under user-mode-linux a
    fault costs about a third of a millisecond, and unlike time, their count does not
    depend on how busy the machine is."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7]) + (int(fields[8]) if children else 0)


async def wait_first_sync(proxy: ProxyProcess, timeout: float = 600) -> float:
    while not full_syncs(proxy.output()):
        if proxy.process.returncode is not None or time.monotonic() - proxy.started > timeout:
            raise RuntimeError(f"the proxy did not sync:\n{proxy.output()[-3000:]}")
        await asyncio.sleep(0.05)
    return full_syncs(proxy.output())[0][0]


async def change_latency(ipvs: NetlinkIpvs, server: ApiServer, services: int) -> float:
    i = random.randrange(services)
    ips = [endpoint_ip(i, j) for j in range(ENDPOINTS)]
    fresh = f"10.{200 + random.randrange(50)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    ips[random.randrange(ENDPOINTS)] = fresh
    written = time.monotonic()
    server.put(endpoints(i, ips))
    while True:
        servers = await ipvs.list_real_servers(key(i))
        if any(s.server.key.address == fresh for s in servers):
            return time.monotonic() - written
        if time.monotonic() - written > 30:
            raise RuntimeError(f"change to svc-{i} not in the kernel after 30 s")
        await asyncio.sleep(0.001)


async def next_full_sync(proxy: ProxyProcess, after: float, timeout: float = 120) -> float:
    """The duration (ms) of the first full sync that ends after ``after`` (wall clock)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [d for when, d in full_syncs(proxy.output()) if when > after]
        if later:
            return later[0]
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no full sync within {timeout} s:\n{proxy.output()[-3000:]}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def loaded_server(services: int) -> ApiServer:
    """The node's address, and the test API server, started, holding this Node and
    ``services`` Services with ENDPOINTS endpoints each."""
    await add_node_address()
    server = ApiServer()
    server.put(builders.node(builders.NODE, addresses=[("InternalIP", NODE_IP)]))
    for i in range(services):
        server.put(service(i))
        server.put(endpoints(i, [endpoint_ip(i, j) for j in range(ENDPOINTS)]))
    await server.start("127.0.0.1", 0)
    return server


async def size_run(services: int, label: str, workdir: Path) -> None:
    server = await loaded_server(services)
    started_wall = time.time()
    proxy = await start_proxy(server, workdir, builders.NODE)
    ipvs = await NetlinkIpvs.open()
    try:
        first = await wait_first_sync(proxy)
        bench(f"startup_to_first_sync_s_{label}", first - started_wall, "s")
        await asyncio.sleep(2.0)
        for mode in ("isolated", "back_to_back"):
            latencies = []
            for _ in range(CHANGES):
                if mode == "isolated":
                    await asyncio.sleep(1.0)
                latencies.append(await change_latency(ipvs, server, services))
            ms = [t * 1000 for t in latencies]
            bench(f"e2e_change_ms_p50_{label}_{mode}", statistics.median(ms), "ms")
            bench(f"e2e_change_ms_p99_{label}_{mode}", percentile(ms, 0.99), "ms")
        # The first resync after those changes reads the whole kernel (the proxy changed
        # it since it last verified it): that is the full resync's cost.
        after_changes = time.time()
        read = await next_full_sync(proxy, after_changes)
        bench(f"full_resync_ms_{label}", read, "ms")
        before_cpu, before = cpu_seconds(proxy.process.pid), time.monotonic()
        window_start = time.time()
        await asyncio.sleep(IDLE_S)
        used = cpu_seconds(proxy.process.pid) - before_cpu
        bench(f"idle_cpu_percent_{label}", 100 * used / (time.monotonic() - before), "%")
        resyncs = [d for when, d in full_syncs(proxy.output()) if when >= window_start]
        if resyncs:
            bench(f"idle_resync_ms_{label}", statistics.median(resyncs), "ms")
    finally:
        await ipvs.close()
        await proxy.stop()
        await server.stop()


async def storm(workdir: Path, services: int = 5_000, sample_every: int = 50) -> None:
    await add_node_address()
    server = ApiServer()
    server.put(builders.node(builders.NODE, addresses=[("InternalIP", NODE_IP)]))
    await server.start("127.0.0.1", 0)
    proxy = await start_proxy(server, workdir, builders.NODE)
    ipvs = await NetlinkIpvs.open()
    created: dict[int, float] = {}
    seen: dict[int, float] = {}
    sample = range(0, services, sample_every)

    async def watch_kernel() -> None:
        while len(seen) < len(sample):
            for i in sample:
                if i in created and i not in seen:
                    servers = await _real_servers(ipvs, key(i))
                    if servers:
                        seen[i] = time.monotonic()
            await asyncio.sleep(0.05)

    try:
        await wait_first_sync(proxy)
        watcher = asyncio.create_task(watch_kernel())
        for i in range(services):
            server.put(service(i))
            server.put(endpoints(i, [endpoint_ip(i, j) for j in range(ENDPOINTS)]))
            created[i] = time.monotonic()
            if i % 20 == 19:
                await asyncio.sleep(0)  # let the server stream its watch events
        last_object = time.monotonic()
        await asyncio.wait_for(watcher, 300)
        delays = [seen[i] - created[i] for i in sample]
        bench("storm_first_vs_s", seen[0] - created[0], "s")
        bench("storm_max_vs_s", max(delays), "s")
        bench("storm_last_vs_after_last_object_s", max(seen.values()) - last_object, "s")
        bench("storm_objects_per_s", 2 * services / (last_object - created[0]), "1/s")
    finally:
        await ipvs.close()
        await proxy.stop()
        await server.stop()


async def _real_servers(ipvs: NetlinkIpvs, vs: VirtualServerKey) -> int:
    try:
        return len(await ipvs.list_real_servers(vs))
    except Exception:
        return 0  # no such virtual server yet


def in_fresh_netns(
    run: Callable[..., Coroutine[Any, Any, None]], workdir: Path, *args: object
) -> None:
    workdir.mkdir(parents=True)
    with fresh_netns():
        asyncio.run(run(*args, workdir))


async def warm_up(workdir: Path) -> None:
    """One start of the proxy on an empty cluster, not measured: the boot's first start
    loads kernel modules (the IPVS schedulers, x_tables' matches, nf_tables) and reads
    Python's files into the guest's page cache, which measures the boot, not the proxy."""
    server = await loaded_server(0)
    proxy = await start_proxy(server, workdir, builders.NODE)
    try:
        await wait_first_sync(proxy)
    finally:
        await proxy.stop()
        await server.stop()


def main() -> None:
    random.seed(1)
    workdir = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    in_fresh_netns(warm_up, workdir / "warm-up")
    for size, label in ((1_000, "1k"), (10_000, "10k")):
        in_fresh_netns(size_run, workdir / label, size, label)
    in_fresh_netns(storm, workdir / "storm")


if __name__ == "__main__":
    main()
