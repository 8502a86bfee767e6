"""What syncs show the world: metrics, /healthz with a stalled reconciler, Events, health checks."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog
from aiohttp.test_utils import RawTestServer, TestClient
from prometheus_client import generate_latest

from ipvsproxy.core.model import Family, IpProtocol, Stats, VirtualServerKey
from ipvsproxy.dataplane.fake_ipvs import FakeIpvs
from ipvsproxy.http.health import ProxyHealth, health_routes
from ipvsproxy.kube.cache import ClusterCache
from ipvsproxy.metrics import Metrics
from ipvsproxy.reconciler import Reconciler, Settings
from ipvsproxy.sync_reporter import FAILING_AFTER, SyncReporter
from tests.support import builders
from tests.support.builders import TRIGGER_TIME
from tests.support.clock import FakeClock
from tests.support.cluster import service_object, slice_object
from tests.support.fake_dataplane import fake_dataplane


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []
        self.reasons: list[tuple[str, str, str]] = []

    def post(
        self, obj: Any, *, kind: str, api_version: str, reason: str, message: str, **_: Any
    ) -> None:
        self.posted.append((obj["metadata"]["name"], message))
        self.reasons.append((kind, reason, _.get("event_type", "Warning")))


class Proxy:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.metrics = Metrics()
        self.health = ProxyHealth(60.0, clock=self.clock)
        self.events = Events()
        self.ipvs = FakeIpvs()
        dataplane = fake_dataplane(ipvs=self.ipvs)
        self.cache = ClusterCache()
        self.reconciler = Reconciler(self.cache, dataplane, Settings(node_name="node-a"))
        self.reconciler.observer = SyncReporter(
            self.metrics,
            self.health,
            ipvs=self.ipvs,
            events=self.events,
            services=lambda: self.cache.services,
            plans=lambda: self.reconciler.index.plans,
            node=lambda: self.cache.node,
            wall=self.clock,
        )
        self.cache.listener = self.reconciler

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        assert value is not None, name
        return value


def web(ips: list[str], trigger: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    endpoints = slice_object("web", [(ip, True) for ip in ips], [("p80", 8080, "TCP")])
    if trigger:
        endpoints["metadata"]["annotations"] = {TRIGGER_TIME: trigger}
    return service_object("web", "10.96.0.10", [(80, 8080, "TCP")]), endpoints


async def test_metrics_after_syncs() -> None:
    proxy = Proxy()
    service, endpoints = web(["10.244.1.2"])
    proxy.cache.service_store.upsert(service)
    proxy.cache.slice_store.upsert(endpoints)
    await asyncio.sleep(0)  # queued changes are written to the metrics once per loop turn
    assert proxy.metric("kubeproxy_sync_proxy_rules_service_changes_total") == 1
    assert proxy.metric("kubeproxy_sync_proxy_rules_endpoint_changes_pending") == 1
    key = VirtualServerKey("10.96.0.10", 80, IpProtocol.TCP)
    proxy.clock.now += 5
    await proxy.reconciler.sync_once()
    proxy.ipvs.set_stats(key, Stats(connections=7, packets_in=70, bytes_in=7000))
    ipv4 = {"ip_family": "IPv4"}  # the fake node has IPv4 addresses only
    last = proxy.metric("kubeproxy_sync_proxy_rules_last_timestamp_seconds", ipv4)
    assert last == proxy.clock.now
    assert proxy.metric("kubeproxy_sync_proxy_rules_endpoint_changes_pending") == 0
    assert proxy.metric("kubeproxy_sync_proxy_rules_duration_seconds_count", ipv4) == 1
    assert proxy.metrics.registry.get_sample_value(
        "kubeproxy_sync_proxy_rules_duration_seconds_count", {"ip_family": "IPv6"}
    ) is None  # fmt: skip
    assert proxy.metric("ipvsproxy_virtual_servers") == 1
    assert proxy.metric("ipvsproxy_real_servers") == 1
    labels = {"ip_family": "IPv4", "traffic_policy": "internal"}
    assert (
        proxy.metrics.registry.get_sample_value(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total", labels
        )
        == 0
    )

    # internalTrafficPolicy: Local, and no endpoint of the Service is on this node.
    local = service_object(
        "local", "10.96.0.30", [(80, 8080, "TCP")], internalTrafficPolicy="Local"
    )
    proxy.cache.service_store.upsert(local)
    await proxy.reconciler.sync_once()
    assert (
        proxy.metrics.registry.get_sample_value(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total", labels
        )
        == 1
    )

    # An endpoint change stamped 2 s before it is programmed: network programming latency.
    proxy.clock.now += 10
    stamp = "1970-01-12T13:46:53Z"  # 1_000_013 s, as the EndpointSlice controller writes it
    proxy.cache.slice_store.upsert(web(["10.244.1.2", "10.244.2.2"], trigger=stamp)[1])
    await asyncio.sleep(0)
    await proxy.reconciler.sync_once()
    assert proxy.metric("kubeproxy_network_programming_duration_seconds_count", ipv4) == 1
    assert proxy.metric("kubeproxy_network_programming_duration_seconds_sum", ipv4) == 2.0
    queued = proxy.metric("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", ipv4)
    assert queued == proxy.clock.now
    assert proxy.metric("ipvsproxy_real_servers") == 2

    # Per-service IPVS counters are exported at each full resync.
    proxy.reconciler._full_due = True
    await proxy.reconciler.sync_once()
    text = generate_latest(proxy.metrics.registry).decode()
    assert 'ipvsproxy_service_connections_total{address="10.96.0.10"' in text
    assert proxy.metric("kubeproxy_sync_proxy_rules_duration_seconds_count", ipv4) == 4


async def test_a_burst_of_changes_is_written_to_the_metrics_once() -> None:
    proxy = Proxy()
    writes: list[float] = []
    write = proxy.metrics.sync_queued

    def counted(now: float, families: Iterable[Family]) -> None:
        writes.append(now)
        write(now, families)

    proxy.metrics.sync_queued = counted  # type: ignore[method-assign]
    for i in range(50):
        name, vip = f"web-{i}", f"10.96.1.{i + 1}"
        proxy.cache.service_store.upsert(service_object(name, vip, [(80, 8080, "TCP")]))
        proxy.cache.slice_store.upsert(
            slice_object(name, [(f"10.244.1.{i + 1}", True)], [("p80", 8080, "TCP")])
        )
    assert writes == []  # not yet: at the end of this turn of the loop
    await asyncio.sleep(0)
    assert writes == [proxy.clock.now]
    assert proxy.metric("kubeproxy_sync_proxy_rules_service_changes_total") == 50
    assert proxy.metric("kubeproxy_sync_proxy_rules_endpoint_changes_total") == 50
    assert proxy.metric("kubeproxy_sync_proxy_rules_endpoint_changes_pending") == 50
    assert proxy.metric("kubeproxy_sync_proxy_rules_service_changes_pending") == 50


async def test_service_counters_are_read_when_someone_scrapes_them() -> None:
    """Reading every virtual server's counters costs as much as an idle resync: the first
    full sync reads them, later ones only after a scrape."""
    proxy = Proxy()
    service, endpoints = web(["10.244.1.2"])
    proxy.cache.service_store.upsert(service)
    proxy.cache.slice_store.upsert(endpoints)
    key = VirtualServerKey("10.96.0.10", 80, IpProtocol.TCP)
    reads = []
    read = proxy.ipvs.stats

    async def counted() -> dict[VirtualServerKey, Stats]:
        reads.append(proxy.clock.now)
        return await read()

    proxy.ipvs.stats = counted  # type: ignore[method-assign]
    await proxy.reconciler.sync_once()
    assert len(reads) == 1
    proxy.ipvs.set_stats(key, Stats(connections=7))
    for _ in range(2):  # nobody scraped
        proxy.reconciler._full_due = True
        await proxy.reconciler.sync_once()
    assert len(reads) == 1
    generate_latest(proxy.metrics.registry)  # a scrape
    proxy.reconciler._full_due = True
    await proxy.reconciler.sync_once()
    assert len(reads) == 2
    text = generate_latest(proxy.metrics.registry).decode()
    assert 'ipvsproxy_service_connections_total{address="10.96.0.10"' in text
    assert "} 7.0" in text.split("ipvsproxy_service_connections_total{", 1)[1].split("\n")[0]


async def test_healthz_fails_while_the_reconciler_is_stalled_and_recovers() -> None:
    proxy = Proxy()
    client = TestClient(RawTestServer(health_routes(proxy.health, proxy.metrics)))
    await client.start_server()
    try:
        assert (await client.get("/healthz")).status == 200  # healthy at start
        proxy.cache.service_store.upsert(web(["10.244.1.2"])[0])
        proxy.clock.now += 61  # queued for longer than 2 x the sync period, no sync
        response = await client.get("/healthz")
        assert response.status == 503
        assert (await client.get("/livez")).status == 503
        await proxy.reconciler.sync_once()
        response = await client.get("/healthz")
        assert response.status == 200
        body = await response.json()
        assert body["nodeEligible"] is True
        assert set(body) == {"lastUpdated", "currentTime", "nodeEligible"}

        node = {"metadata": {"name": "node-a", "deletionTimestamp": "2026-11-26T00:00:00Z"}}
        proxy.cache.node_store.upsert(node)
        await proxy.reconciler.sync_once()
        assert (await client.get("/healthz")).status == 503  # the node is going away
        assert (await client.get("/livez")).status == 200
    finally:
        await client.close()


async def test_a_malformed_service_gets_one_event_and_the_rest_is_programmed() -> None:
    proxy = Proxy()
    bad = service_object("bad", "10.96.0.20", [(80, 8080, "TCP"), (70000, 8080, "TCP")])
    service, endpoints = web(["10.244.1.2"])
    for obj in (bad, service, endpoints):
        (proxy.cache.service_store if obj["kind"] == "Service" else proxy.cache.slice_store).upsert(
            obj
        )
    await proxy.reconciler.sync_once()
    await proxy.reconciler.sync_once()
    assert len(proxy.events.posted) == 1
    name, message = proxy.events.posted[0]
    assert name == "bad"
    assert "70000" in message
    table = await proxy.ipvs.dump()
    assert {k.address for k in table.virtual_servers} == {"10.96.0.10", "10.96.0.20"}


async def test_syncs_that_keep_failing_are_loud_and_recovery_too() -> None:
    """A frozen node must not look healthy: /healthz and /livez, an error log line and a
    Warning Event on the Node once per streak; all back when a sync succeeds."""
    proxy = Proxy()
    proxy.cache.node_store.upsert(builders.node("node-a"))
    client = TestClient(RawTestServer(health_routes(proxy.health, proxy.metrics)))
    await client.start_server()
    try:
        service, endpoints = web(["10.244.1.2"])
        proxy.cache.service_store.upsert(service)
        proxy.cache.slice_store.upsert(endpoints)
        proxy.ipvs.available_schedulers.discard("rr")  # every sync fails on the scheduler
        for attempt in range(1, FAILING_AFTER + 2):
            with structlog.testing.capture_logs() as logs:
                assert await proxy.reconciler.sync_once() is None
            errors = [e for e in logs if e["log_level"] == "error"]
            # One error line when the streak begins; the retries are warnings.
            assert len(errors) == (attempt == FAILING_AFTER)
            failing = attempt >= FAILING_AFTER
            assert (await client.get("/healthz")).status == (503 if failing else 200)
            assert (await client.get("/livez")).status == (503 if failing else 200)
            assert proxy.metric("ipvsproxy_sync_failing") == (1 if failing else 0)
        node_events = [r for r in proxy.events.reasons if r[0] == "Node"]
        assert node_events == [("Node", "ProxySyncFailing", "Warning")]  # once per streak
        assert "scheduler" in proxy.events.posted[-1][1]
        assert proxy.health.failing is not None
        proxy.ipvs.available_schedulers.add("rr")
        assert await proxy.reconciler.sync_once() is not None
        assert (await client.get("/healthz")).status == 200
        assert proxy.metric("ipvsproxy_sync_failing") == 0
        assert proxy.events.reasons[-1] == ("Node", "ProxySyncRecovered", "Normal")
    finally:
        await client.close()
