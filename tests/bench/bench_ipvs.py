"""Benchmark: program 10,000 IPVS virtual servers with 2 real servers each.

Run under a kernel with IPVS, as root (each phase in a fresh network namespace):

    python3 tests/vm/uml_run.py -- /work/main/.venv/bin/python tests/bench/bench_ipvs.py

Prints ``BENCH <name> <value> <unit>`` lines and asserts nothing about the numbers:
our add and delete rates through ``NetlinkIpvs.apply`` and, for comparison, the
rate of ``ipvsadm -R`` loading the same table (its one process start included,
as that is what using it costs). Both count 30,000 operations per table:
10,000 virtual servers plus 20,000 real servers.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ipvsproxy import lean_import

# As the proxy's entry point does, before anything imports its big dependencies.
lean_import.install_dependencies()

from ipvsproxy.core.model import (
    IpProtocol,
    RealServer,
    RealServerKey,
    VirtualServer,
    VirtualServerKey,
)
from ipvsproxy.core.ops import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    IpvsOp,
)
from ipvsproxy.dataplane.ipvs import NetlinkIpvs
from tests.support.netns import fresh_netns

NEEDS_KERNEL = True


def table(services: int) -> list[tuple[VirtualServer, list[RealServer]]]:
    out = []
    for i in range(services):
        key = VirtualServerKey(f"10.96.{i // 250}.{i % 250 + 1}", 80, IpProtocol.TCP)
        pods = [
            RealServer(RealServerKey(f"10.244.{i // 125}.{2 * (i % 125) + n + 1}", 8080), 1)
            for n in range(2)
        ]
        out.append((VirtualServer(key, "rr"), pods))
    return out


def add_ops(rows: list[tuple[VirtualServer, list[RealServer]]]) -> list[IpvsOp]:
    ops: list[IpvsOp] = []
    for server, pods in rows:
        ops.append(AddVirtualServer(server))
        ops.extend(AddRealServer(server.key, pod) for pod in pods)
    return ops


def delete_ops(rows: list[tuple[VirtualServer, list[RealServer]]]) -> list[IpvsOp]:
    ops: list[IpvsOp] = []
    for server, pods in rows:
        ops.extend(DeleteRealServer(server.key, pod.key) for pod in pods)
        ops.append(DeleteVirtualServer(server.key))
    return ops


def restore_text(rows: list[tuple[VirtualServer, list[RealServer]]]) -> str:
    lines = []
    for server, pods in rows:
        vip = f"{server.key.address}:{server.key.port}"
        lines.append(f"-A -t {vip} -s {server.scheduler}")
        lines.extend(f"-a -t {vip} -r {p.key.address}:{p.key.port} -m -w {p.weight}" for p in pods)
    return "\n".join(lines) + "\n"


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.6g} {unit}", flush=True)


async def ours(rows: list[tuple[VirtualServer, list[RealServer]]]) -> tuple[float, float]:
    """Seconds to add the table, seconds to delete it."""
    ipvs = await NetlinkIpvs.open()
    try:
        # Warm up: ip_vs and ip_vs_rr loaded, caches filled, before the clock runs.
        warm = table(1)
        await ipvs.apply(add_ops(warm))
        await ipvs.apply(delete_ops(warm))

        ops = add_ops(rows)
        start = time.perf_counter()
        await ipvs.apply(ops)
        added = time.perf_counter() - start

        start = time.perf_counter()
        snapshot = await ipvs.dump()
        bench("ipvs_dump_10k_s", time.perf_counter() - start, "s")
        listed = sum(len(v) for v in snapshot.real_servers.values())
        if len(snapshot.virtual_servers) != len(rows) or listed != 2 * len(rows):
            raise SystemExit(f"table incomplete: {len(snapshot.virtual_servers)} services")

        ops = delete_ops(rows)
        start = time.perf_counter()
        await ipvs.apply(ops)
        deleted = time.perf_counter() - start
        if (await ipvs.dump()).virtual_servers:
            raise SystemExit("table not empty after delete")
        return added, deleted
    finally:
        await ipvs.close()


async def count_services() -> int:
    ipvs = await NetlinkIpvs.open()
    try:
        return len((await ipvs.dump()).virtual_servers)
    finally:
        await ipvs.close()


def ipvsadm_restore(rows: list[tuple[VirtualServer, list[RealServer]]]) -> float:
    """Seconds for ``ipvsadm -R`` to load the table into the current namespace."""
    text = restore_text(rows).encode()
    start = time.perf_counter()
    subprocess.run(["ipvsadm", "-R"], input=text, check=True)
    took = time.perf_counter() - start
    if (n := asyncio.run(count_services())) != len(rows):
        raise SystemExit(f"ipvsadm -R loaded {n} services of {len(rows)}")
    return took


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    args = parser.parse_args(argv)
    rows = table(args.services)
    total = 3 * args.services  # services + 2 real servers each

    with fresh_netns():
        added, deleted = asyncio.run(ours(rows))
    with fresh_netns():
        restored = ipvsadm_restore(rows)

    bench("ipvs_add_ops_per_s", total / added, "ops/s")
    bench("ipvs_del_ops_per_s", total / deleted, "ops/s")
    bench("ipvsadm_restore_ops_per_s", total / restored, "ops/s")
    bench("ipvs_vs_ipvsadm_speed_ratio", restored / added, "x")


if __name__ == "__main__":
    main()
