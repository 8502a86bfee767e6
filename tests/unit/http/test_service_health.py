"""Health-check node ports: real listeners on loopback, opened and closed by sync."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ipvsproxy.core.model import ServiceKey
from ipvsproxy.http.health import ProxyHealth
from ipvsproxy.http.service_health import ServiceHealthServers
from tests.support.clock import FakeClock

WEB = ServiceKey("default", "web")
API = ServiceKey("prod", "api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def health(clock: FakeClock) -> ProxyHealth:
    return ProxyHealth(60.0, clock)


@pytest.fixture
async def servers(health: ProxyHealth) -> AsyncIterator[ServiceHealthServers]:
    s = ServiceHealthServers(health, ["127.0.0.1"])
    yield s
    await s.close()


async def probe(port: int, path: str = "/") -> tuple[int, dict[str, Any], Any]:
    url = f"http://127.0.0.1:{port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json(), resp.headers


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_200_with_local_endpoints_503_without(servers: ServiceHealthServers) -> None:
    p1, p2 = free_port(), free_port()
    await servers.sync({WEB: (p1, 2), API: (p2, 0)})
    assert servers.listening == {WEB: p1, API: p2}
    status, body, headers = await probe(p1)
    assert status == 200
    assert body == {
        "service": {"namespace": "default", "name": "web"},
        "localEndpoints": 2,
        "serviceProxyHealthy": True,
    }
    assert headers["X-Load-Balancing-Endpoint-Weight"] == "2"
    assert headers["Content-Type"].startswith("application/json")
    status, body, headers = await probe(p2, "/any/path")
    assert status == 503
    assert body["localEndpoints"] == 0
    assert headers["X-Load-Balancing-Endpoint-Weight"] == "0"


async def test_count_changes_without_reopening(servers: ServiceHealthServers) -> None:
    port = free_port()
    await servers.sync({WEB: (port, 1)})
    before = servers._servers[WEB][1]
    await servers.sync({WEB: (port, 0)})
    assert servers._servers[WEB][1] is before
    assert (await probe(port))[0] == 503
    await servers.sync({WEB: (port, 3)})
    status, body, _ = await probe(port)
    assert (status, body["localEndpoints"]) == (200, 3)


async def test_unhealthy_proxy_fails_every_service(
    servers: ServiceHealthServers, health: ProxyHealth, clock: FakeClock
) -> None:
    port = free_port()
    await servers.sync({WEB: (port, 2)})
    health.queued()
    clock.now += 61
    status, body, _ = await probe(port)
    assert status == 503
    assert body["serviceProxyHealthy"] is False
    assert body["localEndpoints"] == 2


async def test_removed_or_moved_services_close_their_port(servers: ServiceHealthServers) -> None:
    p1, p2, p3 = free_port(), free_port(), free_port()
    await servers.sync({WEB: (p1, 1), API: (p2, 1)})
    await servers.sync({WEB: (p3, 1)})  # web moved, api gone
    assert servers.listening == {WEB: p3}
    assert refused(p1)
    assert refused(p2)
    assert (await probe(p3))[0] == 200
    await servers.sync({})
    assert servers.listening == {}
    assert refused(p3)


async def test_a_busy_port_is_retried_on_the_next_sync(servers: ServiceHealthServers) -> None:
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        await servers.sync({WEB: (port, 1)})
        assert servers.listening == {}
    finally:
        blocker.close()
    await servers.sync({WEB: (port, 1)})
    assert servers.listening == {WEB: port}
    assert (await probe(port))[0] == 200


async def test_two_services_on_one_port_first_wins(servers: ServiceHealthServers) -> None:
    port = free_port()
    await servers.sync({WEB: (port, 1), API: (port, 1)})
    # Sorted by key: ("default", "web") comes before ("prod", "api").
    assert servers.listening == {WEB: port}
    assert (await probe(port))[1]["service"] == {"namespace": "default", "name": "web"}


async def test_port_zero_means_no_listener(servers: ServiceHealthServers) -> None:
    await servers.sync({WEB: (0, 1)})
    assert servers.listening == {}


async def test_the_listeners_follow_the_nodeport_addresses(health: ProxyHealth) -> None:
    """As kube-proxy's: every address by default, else the NodePort addresses only."""
    servers = ServiceHealthServers(health)
    port = free_port()
    try:
        await servers.set_hosts(["127.0.0.2"])
        await servers.sync({WEB: (port, 1)})
        assert refused(port)  # not on 127.0.0.1
        url = f"http://127.0.0.2:{port}/"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
        await servers.set_hosts([])  # every address again: closed now, reopened by sync
        assert servers.listening == {}
        await servers.sync({WEB: (port, 1)})
        assert (await probe(port))[0] == 200
    finally:
        await servers.close()
