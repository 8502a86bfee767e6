"""/healthz and /livez: kube-proxy's semantics, driven by a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import RawTestServer, TestClient

from ipvsproxy.http.health import ProxyHealth, go_time, health_routes, node_eligible
from ipvsproxy.metrics import Metrics
from tests.support.clock import FakeClock

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def health(clock: FakeClock) -> ProxyHealth:
    return ProxyHealth(health_timeout=60.0, clock=clock)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def client(health: ProxyHealth, metrics: Metrics) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    async with TestClient(RawTestServer(health_routes(health, metrics))) as c:
        yield c


async def get(client: TestClient, path: str) -> tuple[int, dict[str, object]]:  # type: ignore[type-arg]
    resp = await client.get(path)
    assert resp.content_type == "application/json"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    return resp.status, await resp.json()


def test_go_time_format() -> None:
    assert go_time(T0) == "2023-11-14 22:13:20 +0000 UTC"
    assert go_time(T0 + 0.25) == "2023-11-14 22:13:20.25 +0000 UTC"
    assert go_time(None) == "0001-01-01 00:00:00 +0000 UTC"


def test_state_machine(health: ProxyHealth, clock: FakeClock) -> None:
    assert health.is_healthy()  # healthy at start
    health.queued()
    clock.now += 59.9
    assert health.is_healthy()
    health.queued()  # a second change does not restart the wait
    clock.now += 0.1
    assert not health.is_healthy()  # waited 2 x sync period
    health.updated()
    assert health.is_healthy()
    clock.now += 3600  # idle for an hour with nothing queued: still healthy
    assert health.is_healthy()


async def test_healthy_at_start(client: TestClient, clock: FakeClock) -> None:  # type: ignore[type-arg]
    status, body = await get(client, "/healthz")
    assert status == 200
    # As kube-proxy: a healthy answer reports lastUpdated as the current time.
    assert body == {
        "lastUpdated": go_time(T0),
        "currentTime": go_time(T0),
        "nodeEligible": True,
    }
    assert (await get(client, "/livez"))[0] == 200


async def test_stalled_reconciler_turns_both_unhealthy_then_recovers(
    client: TestClient,  # type: ignore[type-arg]
    health: ProxyHealth,
    clock: FakeClock,
    metrics: Metrics,
) -> None:
    health.updated()  # a first sync at T0
    clock.now += 5
    health.queued()  # a change arrives, and the reconciler never gets to it
    clock.now += 30
    assert (await get(client, "/healthz"))[0] == 200
    clock.now += 30
    status, body = await get(client, "/healthz")
    assert status == 503
    assert body["lastUpdated"] == go_time(T0)
    assert body["currentTime"] == go_time(T0 + 65)
    assert (await get(client, "/livez"))[0] == 503
    health.updated()
    assert (await get(client, "/healthz"))[0] == 200
    assert (await get(client, "/livez"))[0] == 200
    healthz = metrics.registry.get_sample_value
    assert healthz("kubeproxy_proxy_healthz_total", {"code": "200"}) == 2
    assert healthz("kubeproxy_proxy_healthz_total", {"code": "503"}) == 1
    assert healthz("kubeproxy_proxy_livez_total", {"code": "503"}) == 1
    assert healthz("kubeproxy_proxy_livez_total", {"code": "200"}) == 1


NODE = {"metadata": {"name": "n1"}, "spec": {}}


@pytest.mark.parametrize(
    ("node", "eligible"),
    [
        (None, True),
        (NODE, True),
        ({"metadata": {"name": "n1", "deletionTimestamp": "2024-01-01T00:00:00Z"}}, False),
        (
            {
                "metadata": {},
                "spec": {
                    "taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]
                },
            },
            False,
        ),
        ({"metadata": {}, "spec": {"taints": [{"key": "node.kubernetes.io/unschedulable"}]}}, True),
    ],
)
def test_node_eligibility(node: dict[str, object] | None, eligible: bool) -> None:
    assert node_eligible(node) is eligible


async def test_node_being_deleted_fails_healthz_not_livez(
    client: TestClient,  # type: ignore[type-arg]
    health: ProxyHealth,
) -> None:
    health.sync_node({"metadata": {"name": "n1", "deletionTimestamp": "2024-01-01T00:00:00Z"}})
    status, body = await get(client, "/healthz")
    assert status == 503
    assert body["nodeEligible"] is False
    status, body = await get(client, "/livez")
    assert status == 200
    assert body["nodeEligible"] is False
    health.sync_node(NODE)
    assert (await get(client, "/healthz"))[0] == 200
