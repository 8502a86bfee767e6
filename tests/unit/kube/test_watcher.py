"""ClusterWatcher against the test API server: sync, changes, selectors, malformed objects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

import pytest
from kubernetes_asyncio import client

from ipvsproxy.core.model import ServiceKey
from ipvsproxy.kube import ClusterWatcher, EventPoster, ReflectorSettings
from tests.apiserver import ApiServer
from tests.unit.kube.conftest import Recorder, endpoint_slice, node, service
from tests.unit.kube.helpers import converged, eventually

# Short timeouts and backoff: watches that end, stall and fail are what these tests drive;
# shipped values would make each case wait minutes (see tests/unit/kube/test_faults.py).
pytestmark = pytest.mark.overrides_default(
    "backoff", "read_timeout", reason="the watch's timeouts and retries are the subject"
)

FAST = ReflectorSettings(
    page_size=3, watch_timeout_s=2, read_timeout_s=1, backoff_initial_s=0.05, backoff_max_s=0.2
)


@pytest.fixture
async def watcher(
    apiserver: ApiServer, api: client.ApiClient
) -> AsyncIterator[tuple[ClusterWatcher, Recorder]]:
    rec = Recorder()
    w = ClusterWatcher(api, "node-a", rec, settings=FAST, events=EventPoster(api, host="node-a"))
    yield w, rec
    await w.stop()


def seed(server: ApiServer, n: int = 5) -> None:
    for i in range(n):
        server.put(service(f"svc{i}", ip=f"10.96.0.{i + 1}"))
        server.put(endpoint_slice(f"svc{i}-abc", f"svc{i}", ips=[f"10.0.0.{i + 1}"]))
    server.put(node("node-a", {"topology.kubernetes.io/zone": "z1"}))
    server.put(node("node-b"))


async def test_initial_sync_pages_and_trims(
    apiserver: ApiServer, watcher: tuple[ClusterWatcher, Recorder]
) -> None:
    seed(apiserver, 7)
    w, rec = watcher
    assert not w.synced
    w.start()
    async with asyncio.timeout(5):
        await w.wait_synced()
    assert w.synced
    assert converged(apiserver, w)
    # 7 services at 3 per page: the list took 3 requests, all with the proxy's selector.
    lists = [p for m, p in apiserver.requests if "/services?" in p and "watch" not in p]
    assert len(lists) == 3
    assert all("!service.kubernetes.io/headless" in unquote(p) for p in lists)
    svc = w.cache.services[ServiceKey("default", "svc3")]
    assert svc["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
    ]
    assert "selector" not in svc["spec"]
    (sl,) = w.cache.slices_for(ServiceKey("default", "svc3"))
    assert sl["endpoints"][0] == {
        "addresses": ["10.0.0.4"],
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "nodeName": "node-a",
        "zone": "zone-1",
    }
    assert w.node is not None
    assert w.node["metadata"]["name"] == "node-a"
    assert w.node["metadata"]["labels"] == {"topology.kubernetes.io/zone": "z1"}
    assert ("service", ServiceKey("default", "svc0")) in rec.calls
    assert ("node",) in rec.calls


async def test_watch_delivers_changes(
    apiserver: ApiServer, watcher: tuple[ClusterWatcher, Recorder]
) -> None:
    seed(apiserver, 2)
    w, rec = watcher
    w.start()
    await w.wait_synced()
    rec.clear()
    key = ServiceKey("default", "svc0")
    apiserver.put(
        endpoint_slice("svc0-abc", "svc0", ips=["10.0.0.9"], trigger="2024-03-01T12:00:00.5Z")
    )
    await eventually(lambda: ("endpoints", key, 1709294400.5) in rec.calls)
    assert w.cache.slices_for(key)[0]["endpoints"][0]["addresses"] == ["10.0.0.9"]
    apiserver.put(service("new", ip="10.96.1.1"))
    await eventually(lambda: ("service", ServiceKey("default", "new")) in rec.calls)
    apiserver.remove("v1", "Service", "default", "svc1")
    await eventually(lambda: ServiceKey("default", "svc1") not in w.cache.services)
    apiserver.put(node("node-a", {"topology.kubernetes.io/zone": "z2"}))
    await eventually(
        lambda: (
            w.node is not None
            and w.node["metadata"]["labels"].get("topology.kubernetes.io/zone") == "z2"
        )
    )
    # Another node's change does not reach us.
    n = len(rec.calls)
    apiserver.put(node("node-b", {"x": "y"}))
    await asyncio.sleep(0.3)
    assert [c for c in rec.calls[n:] if c == ("node",)] == []
    assert converged(apiserver, w)


async def test_unchanged_fields_do_not_notify(
    apiserver: ApiServer, watcher: tuple[ClusterWatcher, Recorder]
) -> None:
    seed(apiserver, 1)
    w, rec = watcher
    w.start()
    await w.wait_synced()
    rec.clear()
    svc: dict[str, Any] = service("svc0", ip="10.96.0.1")
    svc["metadata"]["annotations"] = {"unrelated.example.com/x": "1"}
    svc["spec"]["selector"] = {"app": "other"}
    apiserver.put(svc)
    await eventually(
        lambda: (
            w.cache.services[ServiceKey("default", "svc0")]["metadata"]["resourceVersion"]
            == apiserver.store.tables[next(iter(apiserver.store.tables))].objects[
                ("default", "svc0")
            ][0]["metadata"]["resourceVersion"]
        )
    )
    assert rec.calls == []
    svc["metadata"]["annotations"] = {"ipvsproxy.io/scheduler": "lc"}
    apiserver.put(svc)
    await eventually(lambda: rec.calls == [("service", ServiceKey("default", "svc0"))])
    assert w.cache.services[ServiceKey("default", "svc0")]["metadata"]["annotations"] == {
        "ipvsproxy.io/scheduler": "lc"
    }


async def test_label_selector_excludes_headless_and_other_proxies(
    apiserver: ApiServer, watcher: tuple[ClusterWatcher, Recorder]
) -> None:
    apiserver.put(service("mine"))
    apiserver.put(service("headless", labels={"service.kubernetes.io/headless": ""}))
    apiserver.put(service("theirs", labels={"service.kubernetes.io/service-proxy-name": "other"}))
    w, rec = watcher
    w.start()
    await w.wait_synced()
    assert set(w.cache.services) == {ServiceKey("default", "mine")}
    rec.clear()
    # Gaining the label makes the server send DELETED: the proxy lets go of the service.
    apiserver.put(service("mine", labels={"service.kubernetes.io/service-proxy-name": "other"}))
    await eventually(lambda: not w.cache.services)
    assert rec.calls == [("service", ServiceKey("default", "mine"))]


async def test_malformed_object_is_skipped_and_reported(
    apiserver: ApiServer, watcher: tuple[ClusterWatcher, Recorder]
) -> None:
    seed(apiserver, 1)
    bad = endpoint_slice("orphan", "x")
    del bad["metadata"]["labels"]["kubernetes.io/service-name"]
    apiserver.put(bad)
    w, _ = watcher
    w.start()
    await w.wait_synced()
    bad2: dict[str, Any] = service("weird")
    bad2["spec"]["ports"] = "not-a-list"
    apiserver.put(bad2)
    # An unhashable port value trips the trimmer's sharing (TypeError): still just skipped.
    bad3 = endpoint_slice("odd-1", "fine")
    bad3["ports"][0]["port"] = {"x": 1}
    apiserver.put(bad3)
    apiserver.put(service("fine", ip="10.96.9.9"))
    apiserver.put(endpoint_slice("fine-1", "fine"))
    await eventually(lambda: ServiceKey("default", "fine") in w.cache.services)
    await eventually(lambda: bool(w.cache.slices_for(ServiceKey("default", "fine"))))
    assert ServiceKey("default", "weird") not in w.cache.services
    assert w.events is not None
    await w.events.flush()
    table = next(r for r in apiserver.store.tables if r.plural == "events" and not r.group)
    events = [o for (o, _) in apiserver.store.tables[table].objects.values()]
    reasons = {
        (e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"]) for e in events
    }
    assert reasons == {
        ("EndpointSlice", "orphan", "MalformedObject"),
        ("EndpointSlice", "odd-1", "MalformedObject"),
        ("Service", "weird", "MalformedObject"),
    }
    assert all(e["type"] == "Warning" and e["source"]["component"] == "ipvsproxy" for e in events)
