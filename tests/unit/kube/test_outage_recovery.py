"""After an API server outage, with the shipped reflector settings: a change written once
the server is back reaches the cache within a second (issue 16), and a server that stays
down costs it only connection attempts, not requests."""

from __future__ import annotations

import asyncio
import time

from kubernetes_asyncio import client

from ipvsproxy.kube import ClusterWatcher
from ipvsproxy.kube.server_probe import ServerProbe
from tests.apiserver import ApiServer
from tests.unit.kube.conftest import endpoint_slice, node, service
from tests.unit.kube.helpers import converged, eventually


async def test_a_change_after_a_refused_then_compacted_server_arrives_within_a_second(
    apiserver: ApiServer, api: client.ApiClient
) -> None:
    apiserver.put(service("web", ip="10.96.0.10"))
    apiserver.put(endpoint_slice("web-a", "web", ips=["10.0.0.1"]))
    apiserver.put(node("node-a"))
    w = ClusterWatcher(api, "node-a")  # the shipped settings: backoff 0.8 s doubling to 30 s
    w.start()
    try:
        async with asyncio.timeout(5):
            await w.wait_synced()
        await eventually(lambda: len(apiserver.watches) == 3)
        await apiserver.stop()  # refused for 5 s: the watches back off (0.8, 1.6, 3.2 s...)
        await asyncio.sleep(5)
        apiserver.compact()  # its history is gone: every watch gets 410 and relists
        await apiserver.start(apiserver.host, apiserver.port)
        apiserver.put(endpoint_slice("web-a", "web", ips=["10.0.0.2"]))
        written = time.monotonic()
        await eventually(lambda: converged(apiserver, w), timeout=10)
        took = time.monotonic() - written
        print(f"change after the outage in the cache after {took:.2f} s")
        assert took < 1.0
    finally:
        await w.stop()


async def test_the_probe_says_whether_the_port_takes_connections(apiserver: ApiServer) -> None:
    probe = ServerProbe.for_url(apiserver.url)
    assert probe is not None
    assert await probe.accepts()
    await apiserver.stop()
    probe = ServerProbe(apiserver.host, apiserver.port)  # no answer cached
    assert not await probe.accepts()
    await apiserver.start(apiserver.host, apiserver.port)
    await asyncio.sleep(probe.interval)
    assert await probe.accepts()
    assert ServerProbe.for_url("https://10.0.0.1").port == 443  # type: ignore[union-attr]
    assert ServerProbe.for_url("") is None
