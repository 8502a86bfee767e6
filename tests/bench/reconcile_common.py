"""What bench_reconcile.py (fakes) and bench_reconcile_kernel.py (real kernel) share.

A cluster of N ClusterIP Services (one TCP port each, a unique VIP from
10.96.0.0/16) with 5 ready endpoints each (unique IPs from 10.244.0.0/16) is
loaded into the proxy's ClusterCache, which tells the proxy's Reconciler; a
first, full sync programs the dataplane. Then one change at a time: an
EndpointSlice of a random Service gets one endpoint IP replaced. A change's
latency runs from the ``slice_store.upsert`` call (where a watch event meets the
reconciler: it calls ``endpoints_changed``) to the return of the
``sync_once()`` that follows, i.e. the dataplane has been updated.

Objects go through the reflector's trimming first, so the cache holds what it
holds in the running proxy.
"""

from __future__ import annotations

import gc
import random
import resource
import statistics
import time
from typing import Any

import pytest

from ipvsproxy.dataplane.executor import Dataplane
from ipvsproxy.kube.cache import ClusterCache
from ipvsproxy.kube.objects import trim_endpoint_slice, trim_service
from ipvsproxy.reconciler import Reconciler, Settings, SyncResult
from tests.support.cluster import NODE, service_object, slice_object

# Read by tests/unit/test_shipped_defaults.py (pytest does not collect this module).
pytestmark = pytest.mark.overrides_default(
    "sync_period", reason="the changes measured are incremental syncs, never a full resync"
)

ENDPOINTS = 5
CHANGES = 20
PORT, TARGET = 80, 8080


def bench(name: str, value: float, unit: str) -> None:
    print(f"BENCH {name} {value:.3f} {unit}", flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def _ip(prefix: str, index: int) -> str:
    """The index-th address of a /16 (index 1 .. 65534)."""
    if not 0 < index < 65535:
        raise ValueError(f"{prefix}.0.0/16 has no address number {index}")
    return f"{prefix}.{index >> 8}.{index & 255}"


class Load:
    """N Services with their slices in a ClusterCache wired to a Reconciler."""

    def __init__(self, services: int, dataplane: Dataplane, seed: int = 1) -> None:
        self.services = services
        self.dataplane = dataplane
        # A sync_period far away: the changes measured are incremental syncs, never
        # a periodic full resync that happens to fall due in the middle.
        settings = Settings(node_name=NODE, sync_period=1e9)
        self.cache = ClusterCache()
        self.reconciler = Reconciler(self.cache, dataplane, settings)
        self.cache.listener = self.reconciler
        self.endpoints: list[list[str]] = []
        self._next_ip = 0
        self.rng = random.Random(seed)

    def _new_endpoint_ip(self) -> str:
        self._next_ip += 1
        return _ip("10.244", self._next_ip)

    def _slice(self, i: int) -> dict[str, Any]:
        raw = slice_object(
            f"svc-{i}",
            [(ip, True) for ip in self.endpoints[i]],
            [(f"p{PORT}", TARGET, "TCP")],
        )
        return trim_endpoint_slice(raw)

    def load(self) -> None:
        """Every Service and slice into the cache (the listener marks each dirty)."""
        for i in range(self.services):
            vip = _ip("10.96", i + 1)
            self.cache.service_store.upsert(
                trim_service(service_object(f"svc-{i}", vip, [(PORT, TARGET, "TCP")]))
            )
            self.endpoints.append([self._new_endpoint_ip() for _ in range(ENDPOINTS)])
            self.cache.slice_store.upsert(self._slice(i))

    async def sync(self) -> SyncResult:
        result = await self.reconciler.sync_once()
        if result is None:
            raise RuntimeError("sync failed (see the log above)")
        return result

    async def initial_sync(self) -> float:
        """The first, full sync; returns its wall time in seconds."""
        started = time.perf_counter()
        result = await self.sync()
        elapsed = time.perf_counter() - started
        if not result.full or result.services != self.services:
            raise RuntimeError(f"first sync: full={result.full}, services={result.services}")
        return elapsed

    async def change_latencies(self, changes: int = CHANGES) -> list[float]:
        """Seconds from each slice change reaching the cache to its sync returning."""
        # Nothing measured should pay for collecting the garbage of loading.
        gc.collect()
        latencies = []
        for _ in range(changes):
            i = self.rng.randrange(self.services)
            self.endpoints[i][self.rng.randrange(ENDPOINTS)] = self._new_endpoint_ip()
            changed = self._slice(i)
            started = time.perf_counter()
            self.cache.slice_store.upsert(changed)
            result = await self.sync()
            latencies.append(time.perf_counter() - started)
            # The figure means nothing unless the sync was the incremental one, of this Service.
            if result.full or result.services != 1 or not result.ops:
                raise RuntimeError(
                    f"change to svc-{i}: full={result.full}, services={result.services}, "
                    f"ops={result.counts()}"
                )
        return latencies


def median_ms(latencies: list[float]) -> float:
    return statistics.median(latencies) * 1000
