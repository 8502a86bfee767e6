"""Benchmark: the proxy's memory per Service, without the fake dataplane's own copy.

The load of bench_reconcile (N ClusterIP Services x 5 endpoints, one TCP port
each, see reconcile_common.py) is put into the cache and synced once, on a
dataplane that accepts every operation and keeps nothing: in production the
kernel holds that copy, not the proxy, while the fakes would keep their own
(and FakeIpvs a log of every op), which would hide what the proxy keeps.

Each size runs in a fresh child process, so a peak RSS is that size's alone:

- ``rss_mb_<n>_services``: peak RSS of a process that imported the proxy, loaded
  N Services and synced once (as the design's budget: kube-proxy 107 MB at 5k);
- ``kib_per_service``: the growth from 5,000 to 10,000 Services, per Service
  (the fixed cost of the imports cancels out);
- ``bytes_per_service_<part>``: what each part of the proxy keeps at 10,000
  Services, per Service, found by walking its objects (an object two parts
  share counts for the first: cache, plans, index, mirror, in that order);
- ``bytes_per_service_<part>_after_resync``: the same after a second, periodic
  full sync, on fakes whose listings are new objects as a kernel's are (the
  mirror is then refilled from them);
- ``TOP`` lines: the biggest live allocation sites (tracemalloc, by file:line)
  after the sync, in a separate child (tracing inflates the RSS).

Run: .venv/bin/python tests/bench/bench_memory.py   (or tests/bench/run.py bench_memory)
Prints `BENCH <name> <value> <unit>` lines; asserts nothing about the numbers.
"""

from __future__ import annotations

import asyncio
import enum
import gc
import json
import os
import subprocess
import sys
import tracemalloc
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from ipvsproxy import lean_import

# As the proxy's entry point does, before anything imports its big dependencies.
lean_import.install_dependencies()

from ipvsproxy.core.model import IpvsTable, RealServerStatus, VirtualServerKey
from ipvsproxy.core.ops import IpvsOp
from ipvsproxy.dataplane.executor import Dataplane
from ipvsproxy.dataplane.fake_ipvs import FakeIpvs
from ipvsproxy.dataplane.fakes import (
    FakeAddresses,
    FakeIpsets,
)
from ipvsproxy.kube import objects
from tests.bench.reconcile_common import Load, bench, peak_rss_mb
from tests.support.fake_dataplane import NODE_ADDRESSES, fake_dataplane

SIZES = (5_000, 10_000)
TOP_SITES = 25


class NullIpvs(FakeIpvs):
    """Accepts every batch, keeps nothing: the kernel's copy is not the proxy's memory."""

    async def apply(self, ops: Sequence[IpvsOp]) -> None:
        self.apply_calls += 1

    async def dump(self) -> IpvsTable:
        return IpvsTable({}, {})

    async def list_real_servers(self, virtual: VirtualServerKey) -> list[RealServerStatus]:
        return []


class NullAddresses(FakeAddresses):
    async def bind(self, addresses: Sequence[str]) -> None:
        pass


class NullIpsets(FakeIpsets):
    async def update(self, changes: Mapping[str, tuple[set[str], set[str]]]) -> None:
        self.calls += 1


def _fresh(text: str) -> str:
    """A new str object equal to ``text``, as a read from the kernel yields."""
    return (text + " ")[:-1]


class KernelLikeIpvs(FakeIpvs):
    """The fake, but a dump is all new objects, as one parsed from netlink."""

    async def dump(self) -> IpvsTable:
        table = await super().dump()
        servers = {}
        for key, vs in table.virtual_servers.items():
            fresh = key._replace(address=_fresh(key.address))
            servers[fresh] = vs._replace(key=fresh)
        real = {
            key._replace(address=_fresh(key.address)): [
                status._replace(
                    server=status.server._replace(
                        key=status.server.key._replace(address=_fresh(status.server.key.address))
                    )
                )
                for status in statuses
            ]
            for key, statuses in table.real_servers.items()
        }
        return IpvsTable(servers, real)


class KernelLikeAddresses(FakeAddresses):
    async def bound(self) -> set[str]:
        return {_fresh(a) for a in await super().bound()}


class KernelLikeIpsets(FakeIpsets):
    async def save_all(self) -> dict[str, set[str]]:
        saved = await super().save_all()
        return {name: {_fresh(e) for e in entries} for name, entries in saved.items()}


def kernel_like_dataplane() -> Dataplane:
    return fake_dataplane(
        ipvs=KernelLikeIpvs(),
        addresses=KernelLikeAddresses(node_addresses=NODE_ADDRESSES),
        ipsets=KernelLikeIpsets(),
    )


def null_dataplane() -> Dataplane:
    return fake_dataplane(
        ipvs=NullIpvs(), addresses=NullAddresses(node_addresses=NODE_ADDRESSES), ipsets=NullIpsets()
    )


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * 4096 / 2**20


# Shared program-wide objects, not anybody's data: never counted.
_OPAQUE = (bool, type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, enum.Enum)


def deep_sizes(parts: Iterable[tuple[str, Iterable[Any]]]) -> dict[str, int]:
    """Bytes reachable from each part's roots, an object counted once (for its first part)."""
    seen: set[int] = set()
    sizes: dict[str, int] = {}
    for name, roots in parts:
        total = 0
        stack = list(roots)
        while stack:
            obj = stack.pop()
            if id(obj) in seen or obj is None or isinstance(obj, _OPAQUE):
                continue
            seen.add(id(obj))
            total += sys.getsizeof(obj)
            stack.extend(gc.get_referents(obj))
        sizes[name] = sizes.get(name, 0) + total
    return sizes


async def load_and_sync(services: int, resync: bool = False) -> Load:
    load = Load(services, kernel_like_dataplane() if resync else null_dataplane())
    load.load()
    await load.initial_sync()
    if resync:
        # The periodic full sync: the mirror is refilled from what the kernel lists.
        load.reconciler._full_due = True
        await load.sync()
    gc.collect()
    return load


def parts_of(load: Load) -> list[tuple[str, list[Any]]]:
    cache, rec = load.cache, load.reconciler
    index, mirror = rec.index, rec.mirror
    return [
        ("cache", [cache.services, cache._slices, cache._slice_owner]),
        ("shared_values", [objects._shared, objects._conditions]),
        ("plans", [index.plans]),
        ("index", [index._vs_owners, index._address_owners, index._entry_owners]),
        ("mirror", [mirror.virtual_servers, mirror.real_servers, mirror.bound, mirror.entries]),
        # Whatever else the reconciler keeps (draining, dirty set, ...); not the fakes.
        ("reconciler_rest", [v for k, v in vars(rec).items() if k not in ("dataplane", "cluster")]),
    ]


def child_rss(services: int) -> dict[str, Any]:
    before = current_rss_mb()
    load = asyncio.run(load_and_sync(services))
    result: dict[str, Any] = {
        "before_mb": before,
        "after_mb": current_rss_mb(),
        "peak_mb": peak_rss_mb(),
    }
    # The bench's own list of endpoint IPs is not the proxy's.
    load.endpoints = []
    result["parts"] = deep_sizes(parts_of(load))
    return result


def child_resync(services: int) -> dict[str, Any]:
    load = asyncio.run(load_and_sync(services, resync=True))
    load.endpoints = []
    # Walked part by part: the fakes' own copy of the kernel is in none of them.
    return {"parts": deep_sizes(parts_of(load))}


def child_trace(services: int) -> dict[str, Any]:
    tracemalloc.start(1)
    load = asyncio.run(load_and_sync(services))
    load.endpoints = []
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    stats = snapshot.statistics("lineno")
    top = []
    for stat in stats[:TOP_SITES]:
        frame = stat.traceback[0]
        where = f"{os.path.relpath(frame.filename, ROOT)}:{frame.lineno}"
        top.append((where, stat.size, stat.count))
    del load
    return {"top": top, "total": sum(s.size for s in stats)}


def run_child(mode: str, services: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, f"--{mode}", str(services)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def main() -> None:
    rss = {n: run_child("rss", n) for n in SIZES}
    small, big = rss[SIZES[0]], rss[SIZES[1]]
    bench("rss_mb_before_load", big["before_mb"], "MB")
    for n in SIZES:
        bench(f"rss_mb_{n // 1000}k_services", rss[n]["peak_mb"], "MB")
        bench(f"rss_mb_{n // 1000}k_services_after_sync", rss[n]["after_mb"], "MB")
    growth = (big["peak_mb"] - small["peak_mb"]) * 1024 / (SIZES[1] - SIZES[0])
    bench("kib_per_service", growth, "KiB")
    retained = (big["after_mb"] - small["after_mb"]) * 1024 / (SIZES[1] - SIZES[0])
    bench("kib_per_service_retained", retained, "KiB")
    for part, size in big["parts"].items():
        bench(f"bytes_per_service_{part}", size / SIZES[1], "B")
    bench("bytes_per_service_walked", sum(big["parts"].values()) / SIZES[1], "B")
    resynced = run_child("resync", SIZES[1])["parts"]
    for part in ("plans", "index", "mirror"):
        bench(f"bytes_per_service_{part}_after_resync", resynced[part] / SIZES[1], "B")
    bench("bytes_per_service_walked_after_resync", sum(resynced.values()) / SIZES[1], "B")
    trace = run_child("trace", SIZES[1])
    bench("bytes_per_service_traced", trace["total"] / SIZES[1], "B")
    for where, size, count in trace["top"]:
        print(f"TOP {size / SIZES[1]:8.1f} B/service {count:8d} blocks  {where}", flush=True)


if __name__ == "__main__":
    children = {"--rss": child_rss, "--resync": child_resync, "--trace": child_trace}
    if len(sys.argv) == 3 and sys.argv[1] in children:
        print(json.dumps(children[sys.argv[1]](int(sys.argv[2]))))
    else:
        main()
