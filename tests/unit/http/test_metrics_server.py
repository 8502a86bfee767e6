"""The metrics address: /metrics with kube-proxy's names, /proxyMode, /healthz, /configz."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import RawTestServer, TestClient
from prometheus_client.parser import text_string_to_metric_families

import ipvsproxy
from ipvsproxy.core.model import Family, IpProtocol, ServiceKey, Stats, VirtualServerKey
from ipvsproxy.http.metrics_server import metrics_routes
from ipvsproxy.http.serve import start_app, start_at
from ipvsproxy.metrics import NETWORK_PROGRAMMING_BUCKETS, Metrics

KUBE_PROXY_NAMES = {
    "kubeproxy_sync_proxy_rules_duration_seconds": "histogram",
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds": "gauge",
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds": "gauge",
    "kubeproxy_network_programming_duration_seconds": "histogram",
    "kubeproxy_sync_proxy_rules_endpoint_changes": "counter",
    "kubeproxy_sync_proxy_rules_endpoint_changes_pending": "gauge",
    "kubeproxy_sync_proxy_rules_service_changes": "counter",
    "kubeproxy_sync_proxy_rules_service_changes_pending": "gauge",
    "kubeproxy_sync_proxy_rules_no_local_endpoints_total": "gauge",
    "kubeproxy_sync_proxy_rules_iptables_restore_failures": "counter",
    "kubeproxy_proxy_healthz": "counter",
    "kubeproxy_proxy_livez": "counter",
}


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(metrics: Metrics) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with TestClient(RawTestServer(metrics_routes(metrics))) as c:
        yield c


async def scrape(client: TestClient) -> dict[str, object]:  # type: ignore[type-arg]
    resp = await client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    return {f.name: f for f in text_string_to_metric_families(text)}


async def test_proxy_mode_and_healthz(client: TestClient) -> None:  # type: ignore[type-arg]
    resp = await client.get("/proxyMode")
    assert (resp.status, await resp.text()) == (200, "ipvs")
    resp = await client.get("/healthz")
    assert (resp.status, await resp.text()) == (200, "ok")


async def test_kube_proxy_metric_names_and_types(client: TestClient) -> None:  # type: ignore[type-arg]
    families = await scrape(client)
    for name, kind in KUBE_PROXY_NAMES.items():
        assert name in families, name
        assert families[name].type == kind, name  # type: ignore[attr-defined]
    assert not [n for n in families if n.endswith("_created")]


async def test_configz_serves_the_configuration_as_component_base() -> None:
    asked = []

    def configz() -> dict[str, object]:
        asked.append(True)
        return {"Mode": "ipvs", "NodePortAddresses": ["192.168.1.10/32"]}

    async with TestClient(RawTestServer(metrics_routes(Metrics(), configz))) as c:
        resp = await c.get("/configz")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        body = await resp.json()
        await c.get("/configz")
    assert body == {
        "kubeproxy.config.k8s.io": {"Mode": "ipvs", "NodePortAddresses": ["192.168.1.10/32"]}
    }
    assert len(asked) == 2  # asked at every request: parts of it follow the Node


# kube-proxy's labels (pkg/proxy/metrics, 1.33+: ip_family), by metric.
KUBE_PROXY_LABELS = {
    "kubeproxy_sync_proxy_rules_duration_seconds": {"ip_family"},
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds": {"ip_family"},
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds": {"ip_family"},
    "kubeproxy_network_programming_duration_seconds": {"ip_family"},
    "kubeproxy_sync_proxy_rules_no_local_endpoints_total": {"ip_family", "traffic_policy"},
    "kubeproxy_sync_proxy_rules_iptables_restore_failures": {"ip_family"},
    "kubeproxy_sync_proxy_rules_endpoint_changes": set(),
    "kubeproxy_sync_proxy_rules_endpoint_changes_pending": set(),
    "kubeproxy_sync_proxy_rules_service_changes": set(),
    "kubeproxy_sync_proxy_rules_service_changes_pending": set(),
    "kubeproxy_proxy_healthz": {"code"},
    "kubeproxy_proxy_livez": {"code"},
}


async def test_kube_proxy_labels(client: TestClient, metrics: Metrics) -> None:  # type: ignore[type-arg]
    metrics.sync_queued(1.0, [Family.V6])
    metrics.sync_succeeded(0.1, 2.0, [Family.V6])
    metrics.programmed([(Family.V6, 1.5)], 2.0)
    metrics.set_no_local_endpoints({Family.V6: (0, 0)})
    metrics.sync_failed("iptables", [Family.V6])
    metrics.endpoint_changes_total.inc()
    metrics.service_changes_total.inc()
    metrics.set_pending(0, 0)
    metrics.healthz_total.labels("200").inc()
    metrics.livez_total.labels("200").inc()
    families = await scrape(client)
    assert set(KUBE_PROXY_LABELS) == set(KUBE_PROXY_NAMES)
    for name, labels in KUBE_PROXY_LABELS.items():
        samples = families[name].samples  # type: ignore[attr-defined]
        assert samples, name
        for sample in samples:
            assert set(sample.labels) - {"le"} == labels, (name, sample)
            if "ip_family" in labels:
                assert sample.labels["ip_family"] == "IPv6", name


async def test_build_info_and_the_process(client: TestClient) -> None:  # type: ignore[type-arg]
    families = await scrape(client)
    (info,) = families["ipvsproxy_build_info"].samples  # type: ignore[attr-defined]
    assert (info.labels, info.value) == ({"version": ipvsproxy.__version__}, 1.0)
    # The dashboard's memory and CPU panels and the memory alert read these.
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds",
        "process_start_time_seconds",
        "process_open_fds",
    ):
        (sample,) = families[name].samples  # type: ignore[attr-defined]
        assert sample.value > 0, name
    assert families["python_info"].samples  # type: ignore[attr-defined]
    assert families["python_gc_collections"].samples  # type: ignore[attr-defined]


def test_network_programming_buckets_are_kube_proxys() -> None:
    b = NETWORK_PROGRAMMING_BUCKETS
    assert b[:4] == (0.0, 0.25, 0.5, 1.0)
    assert 59.0 in b
    assert 60.0 in b
    assert 115.0 in b
    assert 120.0 in b
    assert b[-1] == 300.0
    assert len(b) == 1 + 2 + 59 + 12 + 7
    assert list(b) == sorted(set(b))


async def test_metrics_after_syncs(client: TestClient, metrics: Metrics) -> None:  # type: ignore[type-arg]
    v4, both = [Family.V4], [Family.V4, Family.V6]
    metrics.sync_queued(now=1000.0, families=both)
    metrics.service_changes_total.inc(2)
    metrics.endpoint_changes_total.inc(5)
    metrics.set_pending(services=1, endpoints=4)
    metrics.sync_succeeded(duration=0.003, now=1001.0, families=v4)
    metrics.sync_succeeded(duration=0.020, now=1031.0, families=both)
    programmed = [(Family.V4, 1030.0), (Family.V4, 1029.0), (Family.V6, 1040.0)]
    metrics.programmed(programmed, now=1031.0)  # 1040: skew, skipped
    metrics.set_no_local_endpoints({Family.V4: (1, 2), Family.V6: (0, 1)})
    metrics.set_table_size(virtual_servers=7, real_servers=13)
    metrics.sync_failed("ipvs")
    metrics.sync_failed("iptables", [Family.V4])
    metrics.sync_failed("iptables", [Family.V4, Family.V6])
    svc = ServiceKey("default", "web")
    vs = VirtualServerKey("10.96.0.5", 80, IpProtocol.TCP)
    metrics.service_stats.update({(svc, vs): Stats(4, 40, 30, 4000, 9000)})

    families = await scrape(client)

    def value(name: str, labels: dict[str, str] | None = None, sample: str | None = None) -> float:
        for s in families[name].samples:  # type: ignore[attr-defined]
            if s.name == (sample or name) and s.labels == (labels or {}):
                return float(s.value)
        raise AssertionError(f"no sample {sample or name} {labels}")

    ipv4, ipv6 = {"ip_family": "IPv4"}, {"ip_family": "IPv6"}
    dur = "kubeproxy_sync_proxy_rules_duration_seconds"
    assert value(dur, ipv4, f"{dur}_count") == 2
    assert value(dur, ipv6, f"{dur}_count") == 1
    assert value(dur, ipv4 | {"le": "0.004"}, f"{dur}_bucket") == 1
    assert value("kubeproxy_sync_proxy_rules_last_timestamp_seconds", ipv4) == 1031.0
    assert value("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", ipv6) == 1000.0
    npd = "kubeproxy_network_programming_duration_seconds"
    assert value(npd, ipv4, f"{npd}_count") == 2
    assert value(npd, ipv4 | {"le": "1.0"}, f"{npd}_bucket") == 1
    assert value(npd, ipv4 | {"le": "2.0"}, f"{npd}_bucket") == 2
    assert value(npd, ipv6, f"{npd}_count") == 0  # exported from the first sync on
    ch = "kubeproxy_sync_proxy_rules_service_changes"
    assert value(ch, sample=f"{ch}_total") == 2
    assert value("kubeproxy_sync_proxy_rules_endpoint_changes_pending") == 4
    nle = "kubeproxy_sync_proxy_rules_no_local_endpoints_total"
    assert value(nle, ipv4 | {"traffic_policy": "external"}) == 2
    assert value(nle, ipv6 | {"traffic_policy": "internal"}) == 0
    ipt = "kubeproxy_sync_proxy_rules_iptables_restore_failures"
    assert value(ipt, ipv4, f"{ipt}_total") == 2
    assert value(ipt, ipv6, f"{ipt}_total") == 1
    fails = "ipvsproxy_sync_failures"
    assert value(fails, {"subsystem": "ipvs"}, f"{fails}_total") == 1
    assert value("ipvsproxy_virtual_servers") == 7
    assert value("ipvsproxy_real_servers") == 13
    labels = {
        "namespace": "default",
        "service": "web",
        "protocol": "TCP",
        "address": "10.96.0.5",
        "port": "80",
        "fwmark": "",
    }
    conns = "ipvsproxy_service_connections"
    assert value(conns, labels, f"{conns}_total") == 4
    assert value("ipvsproxy_service_bytes_out", labels, "ipvsproxy_service_bytes_out_total") == 9000

    # A new snapshot replaces the old one: a removed service disappears.
    metrics.service_stats.update({})
    assert (await scrape(client))[conns].samples == []  # type: ignore[attr-defined]


def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.service_changes_total.inc()
    assert b.registry.get_sample_value("kubeproxy_sync_proxy_rules_service_changes_total") == 0


async def test_served_on_a_real_socket(metrics: Metrics) -> None:
    server = await start_app(metrics_routes(metrics), "127.0.0.1", 0)
    try:
        async with ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{server.port}/proxyMode") as resp:
                assert await resp.text() == "ipvs"
            async with session.get(
                f"http://127.0.0.1:{server.port}/metrics", headers={"Accept-Encoding": "gzip"}
            ) as resp:
                assert resp.status == 200
                assert "kubeproxy_sync_proxy_rules_duration_seconds" in await resp.text()
    finally:
        await server.close()


async def test_bind_failure_raises_oserror(metrics: Metrics) -> None:
    server = await start_app(metrics_routes(metrics), "127.0.0.1", 0)
    try:
        # reuse_address does not allow two listeners on one port.
        with pytest.raises(OSError, match="address already in use"):
            await start_at(metrics_routes(metrics), f"127.0.0.1:{server.port}", "x")
        # An address that is not local (TEST-NET-1).
        with pytest.raises(OSError, match="assign requested address"):
            await start_at(metrics_routes(metrics), "192.0.2.1:10249", "x")
    finally:
        await server.close()
