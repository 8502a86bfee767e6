"""The health and metrics servers at start: a port in use is retried while the proxy goes
on, or with --bind-address-hard-fail stops the start with kube-proxy's Event reason."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsproxy import app
from ipvsproxy.app import ServerFailure, start_servers
from ipvsproxy.config import Config
from ipvsproxy.dataplane.executor import Dataplane
from ipvsproxy.http.health import ProxyHealth
from ipvsproxy.metrics import Metrics
from tests.apiserver.server import ApiServer
from tests.support.fake_dataplane import fake_dataplane
from tests.support.proxy_node import kubeconfig


@pytest.fixture
def held() -> Iterator[int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    yield holder.getsockname()[1]
    holder.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(healthz: str, metrics: str, hard_fail: bool) -> Config:
    return Config(
        healthz_bind_address=healthz, metrics_bind_address=metrics, bind_address_hard_fail=hard_fail
    )


@pytest.mark.parametrize(
    ("which", "reason"),
    [("healthz", "FailedToStartProxierHealthcheck"), ("metrics", "FailedToStartMetricServer")],
)
async def test_hard_fail_stops_with_kube_proxys_reason(held: int, which: str, reason: str) -> None:
    taken, free = f"127.0.0.1:{held}", f"127.0.0.1:{free_port()}"
    c = config(taken, free, True) if which == "healthz" else config(free, taken, True)
    result = await start_servers(c, ProxyHealth(60), Metrics(), dict)
    assert isinstance(result, ServerFailure)
    assert result.reason == reason
    assert "in use" in str(result.error)


async def test_without_hard_fail_the_proxy_goes_on(held: int) -> None:
    c = config(f"127.0.0.1:{held}", f"127.0.0.1:{free_port()}", False)
    result = await start_servers(c, ProxyHealth(60), Metrics(), dict)
    assert isinstance(result, list)
    try:
        healthz, metrics = result
        assert healthz.server is None  # retrying in the background
        assert metrics.server is not None
    finally:
        for listener in result:
            await listener.close()


async def test_no_health_server_with_an_empty_address() -> None:
    result = await start_servers(
        config("", f"127.0.0.1:{free_port()}", False), ProxyHealth(60), Metrics(), dict
    )
    assert isinstance(result, list)
    assert [listener.setting for listener in result] == ["metrics-bind-address"]
    for listener in result:
        await listener.close()


async def test_the_proxy_with_hard_fail_posts_kube_proxys_event_and_exits(
    held: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve() itself, on the fakes and the test API server."""

    async def fakes() -> Dataplane:
        return fake_dataplane()

    monkeypatch.setattr(app, "open_dataplane", fakes)
    monkeypatch.setattr(app, "apply_oom_score_adj", lambda value: None)  # not this process's
    server = ApiServer()
    await server.start()
    try:
        config = Config(
            kubeconfig=str(kubeconfig(server.url, tmp_path)),
            hostname_override="node-a",
            healthz_bind_address=f"127.0.0.1:{held}",
            metrics_bind_address=f"127.0.0.1:{free_port()}",
            bind_address_hard_fail=True,
        )
        assert await app.serve(config) == 1
        table = next(r for r in server.store.tables if r.plural == "events" and not r.group)
        (event,) = [o for (o, _) in server.store.tables[table].objects.values()]
        assert event["reason"] == "FailedToStartProxierHealthcheck"
        assert event["type"] == "Warning"
        assert event["involvedObject"]["kind"] == "Node"
        assert event["involvedObject"]["name"] == "node-a"
        assert "in use" in event["message"]
    finally:
        await server.stop()
