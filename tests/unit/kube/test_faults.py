"""Faults between the reflectors and the API server. After each, the cache converges on the
server's state, and no service that still exists is ever reported gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from kubernetes_asyncio import client

from ipvsproxy.core.model import Family, ServiceKey
from ipvsproxy.kube import ClusterWatcher, ReflectorSettings
from tests.apiserver import ApiServer
from tests.unit.kube.conftest import endpoint_slice, node, service
from tests.unit.kube.helpers import converged, eventually, server_services, server_slices

# Each case is a fault and the recovery from it: with the shipped backoff (0.8 s to 30 s)
# and read timeout (120 s) one case would take minutes. Recovery with the shipped values is
# tested end to end in tests/kernel/test_process.py (the API server down and back).
pytestmark = pytest.mark.overrides_default(
    "backoff", "read_timeout", reason="how the reflector recovers from faults is the subject"
)

FAST = ReflectorSettings(
    page_size=3,
    watch_timeout_s=30,
    read_timeout_s=0.5,
    request_timeout_s=2,
    connect_timeout_s=0.5,
    backoff_initial_s=0.05,
    backoff_max_s=0.3,
)


class Guard:
    """A listener that flags any change that drops a service the server still has."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.watcher: ClusterWatcher | None = None
        self.violations: list[str] = []
        self.removed: list[ServiceKey] = []

    def service_changed(self, key: ServiceKey) -> None:
        assert self.watcher is not None
        if key not in self.watcher.cache.services:
            self.removed.append(key)
            if key in server_services(self.server):
                self.violations.append(f"service {key} dropped while it exists")

    def endpoints_changed(
        self, key: ServiceKey, trigger_time: float | None, family: Family | None = None
    ) -> None:
        assert self.watcher is not None
        if not self.watcher.cache.slices_for(key) and any(
            ns == key.namespace and name.startswith(key.name + "-")
            for ns, name in server_slices(self.server)
        ):
            self.violations.append(f"endpoints of {key} dropped while they exist")

    def node_changed(self) -> None:
        pass


@pytest.fixture
async def setup(
    apiserver: ApiServer, api: client.ApiClient
) -> AsyncIterator[tuple[ApiServer, ClusterWatcher, Guard]]:
    for i in range(8):
        apiserver.put(service(f"svc{i}", ip=f"10.96.0.{i + 1}"))
        apiserver.put(endpoint_slice(f"svc{i}-a", f"svc{i}", ips=[f"10.0.0.{i + 1}"]))
    apiserver.put(node("node-a"))
    guard = Guard(apiserver)
    w = ClusterWatcher(api, "node-a", guard, settings=FAST)
    guard.watcher = w
    w.start()
    async with asyncio.timeout(5):
        await w.wait_synced()
    assert converged(apiserver, w)
    await eventually(lambda: len(apiserver.watches) == 3)  # all three watches are open
    yield apiserver, w, guard
    await w.stop()
    assert guard.violations == []


def churn(server: ApiServer, tag: str) -> None:
    """Add, modify and delete a few objects."""
    server.put(service(f"added-{tag}", ip="10.96.5.5"))
    server.put(endpoint_slice(f"added-{tag}-a", f"added-{tag}", ips=["10.0.5.5"]))
    server.put(service("svc1", ip="10.96.0.2", port=81))
    server.put(endpoint_slice("svc2-a", "svc2", ips=["10.0.0.3", "10.0.9.9"]))
    server.remove("v1", "Service", "default", f"svc{3 + len(tag)}")
    server.remove("discovery.k8s.io/v1", "EndpointSlice", "default", f"svc{3 + len(tag)}-a")


def lists(w: ClusterWatcher) -> int:
    return sum(r.lists for r in w.reflectors)


async def test_server_restarted_mid_watch(setup: tuple[ApiServer, ClusterWatcher, Guard]) -> None:
    server, w, guard = setup
    await server.stop()
    churn(server, "r")
    await server.start(server.host, server.port)
    await eventually(lambda: converged(server, w))
    # The history survived the restart: the watches resumed without relisting.
    assert lists(w) == 3
    assert guard.removed == [ServiceKey("default", "svc4")]


async def test_server_restarted_with_history_compacted(
    setup: tuple[ApiServer, ClusterWatcher, Guard],
) -> None:
    server, w, guard = setup
    await server.stop()
    churn(server, "c")
    server.compact()
    await server.start(server.host, server.port)
    await eventually(lambda: converged(server, w))
    assert lists(w) > 3  # the resumed watches got 410 and relisted
    assert guard.removed == [ServiceKey("default", "svc4")]


async def test_stalled_connection(setup: tuple[ApiServer, ClusterWatcher, Guard]) -> None:
    server, w, _ = setup
    server.stall_watches()
    churn(server, "s")
    await asyncio.sleep(0.2)
    assert not converged(server, w)
    # The read timeout (0.5 s) notices the silence; the watch reopens from the last version.
    await eventually(lambda: converged(server, w), timeout=5)
    assert lists(w) == 3
    server.unstall()


async def test_gone_during_watch(setup: tuple[ApiServer, ClusterWatcher, Guard]) -> None:
    server, w, guard = setup
    server.stall_watches()
    churn(server, "g")
    server.compact()
    server.gone_watches()
    server.unstall()
    await eventually(lambda: converged(server, w))
    assert lists(w) >= 6
    assert guard.removed == [ServiceKey("default", "svc4")]


async def test_http_410_on_watch(setup: tuple[ApiServer, ClusterWatcher, Guard]) -> None:
    server, w, _ = setup
    server.fail_next(1, 410, "services?")
    server.drop_connections()
    churn(server, "h")
    await eventually(lambda: converged(server, w))
    assert w.reflectors[0].lists == 2


async def test_gone_on_continue_token(apiserver: ApiServer, api: client.ApiClient) -> None:
    for i in range(10):
        apiserver.put(service(f"svc{i}"))
    seen: list[str] = []

    def expire_once(request: web.Request) -> None:
        if "continue=" in request.path_qs and "/services" in request.path and not seen:
            seen.append(request.path_qs)
            apiserver.put(service("late-arrival"))
            apiserver.expire_continue_tokens()

    apiserver.before_request = expire_once
    w = ClusterWatcher(api, "node-a", settings=FAST)
    w.start()
    try:
        await w.wait_synced()
        assert converged(apiserver, w)
        assert ServiceKey("default", "late-arrival") in w.cache.services
        assert w.reflectors[0].lists == 1
    finally:
        await w.stop()


async def test_continue_token_keeps_expiring_falls_back_to_full_list(
    apiserver: ApiServer, api: client.ApiClient
) -> None:
    for i in range(10):
        apiserver.put(service(f"svc{i}"))

    def always_expire(request: web.Request) -> None:
        if "continue=" in request.path_qs:
            apiserver.expire_continue_tokens()

    apiserver.before_request = always_expire
    w = ClusterWatcher(api, "node-a", settings=FAST)
    w.start()
    try:
        await w.wait_synced()
        assert converged(apiserver, w)
        svc_lists = [p for _, p in apiserver.requests if "/services?" in p and "watch" not in p]
        assert "limit=" not in svc_lists[-1]
    finally:
        await w.stop()


async def test_server_down_for_a_while(setup: tuple[ApiServer, ClusterWatcher, Guard]) -> None:
    server, w, guard = setup
    before = dict(w.cache.services)
    await server.stop()
    churn(server, "d")
    await asyncio.sleep(1.0)  # connections refused, reflectors back off
    assert w.cache.services == before  # the cache holds while the server is away
    server.compact()
    await server.start(server.host, server.port)
    await eventually(lambda: converged(server, w), timeout=5)
    assert guard.removed == [ServiceKey("default", "svc4")]


async def test_injected_errors_back_off_and_recover(
    setup: tuple[ApiServer, ClusterWatcher, Guard],
) -> None:
    server, w, _ = setup
    server.fail_next(5, 500)
    server.drop_connections()
    churn(server, "e")
    await eventually(lambda: converged(server, w), timeout=5)
