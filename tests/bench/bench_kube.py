"""Benchmark: list and cache 10,000 EndpointSlices and 10,000 Services from the test API
server (run in a separate process, as a real API server would be), bytes per cached slice,
and watch events per second through to the listener.

Run: .venv/bin/python tests/bench/bench_kube.py [--count N]
Prints `BENCH <name> <value> <unit>` lines; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import multiprocessing
import statistics
import sys
import tempfile
import time
import tracemalloc
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ipvsproxy import lean_import

# As the proxy's entry point does, before anything imports its big dependencies.
lean_import.install_dependencies()

from ipvsproxy.core.model import Family, ServiceKey
from ipvsproxy.kube.cache import ClusterCache
from ipvsproxy.kube.client import make_api_client
from ipvsproxy.kube.objects import trim_endpoint_slice, trim_service
from ipvsproxy.kube.reflector import Reflector
from ipvsproxy.kube.watcher import PROXY_LABEL_SELECTOR
from tests.support import proxy_node


def trigger(gen: int) -> str:
    # Each generation a distinct time, so every change is a real change to the proxy.
    when = datetime.datetime(2024, 3, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=gen)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_slice(i: int, gen: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{i}-abcde",
            "namespace": f"ns-{i % 50}",
            "labels": {
                "kubernetes.io/service-name": f"svc-{i}",
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": trigger(gen)},
            "generateName": f"svc-{i}-",
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Service", "name": f"svc-{i}", "uid": "x"}
            ],
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [f"10.{(i >> 8) & 255}.{i & 255}.{j + 10 + gen % 100}"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"node-{(i + j) % 100}",
                "zone": f"zone-{(i + j) % 3}",
                "targetRef": {
                    "kind": "Pod",
                    "name": f"pod-{i}-{j}",
                    "namespace": f"ns-{i % 50}",
                    "uid": f"{i}-{j}",
                },
            }
            for j in range(5)
        ],
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    }


def make_service(i: int) -> dict[str, Any]:
    ip = f"10.96.{(i >> 8) & 255}.{i & 255}"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"svc-{i}",
            "namespace": f"ns-{i % 50}",
            "labels": {"app": f"svc-{i}"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "selector": {"app": f"svc-{i}"},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            "sessionAffinity": "None",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    }


def serve(count: int, conn: Connection) -> None:
    """The API server process: load the objects, report the port, churn on request."""
    from tests.apiserver import ApiServer

    async def main() -> None:
        server = ApiServer(bookmark_interval=5.0)
        for i in range(count):
            server.put(make_service(i))
            server.put(make_slice(i))
        await server.start()
        conn.send(server.url)
        loop = asyncio.get_running_loop()
        while True:
            n = await loop.run_in_executor(None, conn.recv)
            if n == 0:
                break
            for k in range(n):
                server.put(make_slice(k % count, gen=k + 1))
                if k % 200 == 199:
                    await asyncio.sleep(0)  # let the watch stream flush
            conn.send("done")
        await server.stop()

    asyncio.run(main())


class Counter:
    def __init__(self) -> None:
        self.endpoints = 0
        self.target = 0
        self.done = asyncio.Event()

    def service_changed(self, key: ServiceKey) -> None:
        pass

    def endpoints_changed(
        self, key: ServiceKey, trigger_time: float | None, family: Family | None = None
    ) -> None:
        self.endpoints += 1
        if self.target and self.endpoints >= self.target:
            self.done.set()

    def node_changed(self) -> None:
        pass


async def list_once(api: Any, kind: str, cache: ClusterCache) -> tuple[float, Reflector]:
    from kubernetes_asyncio import client

    if kind == "slices":
        fn = client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces
        r = Reflector(
            kind, fn, trim_endpoint_slice, cache.slice_store, label_selector=PROXY_LABEL_SELECTOR
        )
    else:
        fn = client.CoreV1Api(api).list_service_for_all_namespaces
        r = Reflector(
            kind, fn, trim_service, cache.service_store, label_selector=PROXY_LABEL_SELECTOR
        )
    start = time.perf_counter()
    await r._list()
    return time.perf_counter() - start, r


async def bench(kubeconfig: Path, count: int, conn: Connection) -> None:
    api = await make_api_client(str(kubeconfig))
    try:
        for kind, name in (
            ("slices", "list_10k_endpointslices_s"),
            ("services", "list_10k_services_s"),
        ):
            times = []
            for _ in range(3):
                t, _r = await list_once(api, kind, ClusterCache())
                times.append(t)
            runs = ", ".join(f"{t:.3f}" for t in times)
            print(
                f"BENCH {name} {statistics.median(times):.3f} s"
                f"  (median; runs: {runs}; {count} objects)"
            )

        # Memory: what the cache retains, measured with tracemalloc after the list completes.
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        cache = ClusterCache()
        _, r = await list_once(api, "slices", cache)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        assert cache.slice_count == count
        print(
            f"BENCH bytes_per_cached_endpointslice {held / count:.0f} bytes"
            "  (5 endpoints each, tracemalloc)"
        )
        del cache, r

        # Watch: the server applies N slice changes; count them arriving at the listener.
        counter = Counter()
        cache = ClusterCache(counter)
        _, r = await list_once(api, "slices", cache)
        counter.endpoints = 0
        watch = asyncio.create_task(r._watch())
        await asyncio.sleep(0.5)  # the watch is open
        n = count
        counter.target = n
        start = time.perf_counter()
        conn.send(n)
        try:
            await asyncio.wait_for(counter.done.wait(), 120)
        except TimeoutError:
            print("watch timed out:", counter.endpoints, watch)
            raise
        elapsed = time.perf_counter() - start
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)
        watch.cancel()
        print(
            f"BENCH watch_events_per_s {n / elapsed:.0f} events/s"
            f"  ({n} MODIFIED slices, server included)"
        )
    finally:
        await api.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=10_000)
    args = p.parse_args()
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.Process(target=serve, args=(args.count, child), daemon=True)
    proc.start()
    url = parent.recv()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(bench(proxy_node.kubeconfig(url, Path(tmp)), args.count, parent))
    finally:
        parent.send(0)
        proc.join(10)


if __name__ == "__main__":
    main()
