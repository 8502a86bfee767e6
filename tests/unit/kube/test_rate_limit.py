"""The client-side rate limit (--kube-api-qps/--kube-api-burst): client-go's token bucket, on
every list, watch and Event; the pages of one list count once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ipvsproxy.kube import ClusterWatcher, ReflectorSettings
from ipvsproxy.kube.client import (
    EventPoster,
    RateLimit,
    RateLimitedApiClient,
    TokenBucket,
    continues_a_list,
    make_api_client,
)
from tests.apiserver import ApiServer
from tests.unit.kube.conftest import endpoint_slice, node, service
from tests.unit.kube.helpers import eventually


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(round(seconds, 6))


def bucket(qps: float, burst: int, time: FakeTime) -> TokenBucket:
    return TokenBucket(qps, burst, clock=time.clock, sleep=time.sleep)


async def test_burst_goes_at_once_then_qps() -> None:
    time = FakeTime()
    limiter = bucket(5, 10, time)  # kube-proxy's defaults
    for _ in range(10):
        await limiter.take()
    assert time.waits == []
    # Waiting requests reserve their token: the 11th waits 0.2 s, the 12th 0.4 s.
    await limiter.take()
    await limiter.take()
    assert time.waits == [0.2, 0.4]


async def test_tokens_come_back_with_time_up_to_the_burst() -> None:
    time = FakeTime()
    limiter = bucket(5, 10, time)
    for _ in range(10):
        await limiter.take()
    time.now = 1.0  # five tokens back
    for _ in range(5):
        await limiter.take()
    assert time.waits == []
    time.now = 100.0  # never more than the burst
    for _ in range(11):
        await limiter.take()
    assert time.waits == [0.2]


def test_continuation_pages_are_part_of_their_list() -> None:
    assert continues_a_list([("limit", 500), ("continue", "abc")])
    assert not continues_a_list([("limit", 500)])
    assert not continues_a_list(None)


class CountingBucket(TokenBucket):
    def __init__(self) -> None:
        super().__init__(1000.0, 1000)
        self.taken = 0

    async def take(self) -> None:
        self.taken += 1
        await super().take()


async def test_lists_watches_and_events_take_tokens(apiserver: ApiServer, kubeconfig: Path) -> None:
    for i in range(7):  # page size 3: the Service list takes 3 pages, as does the slices'
        apiserver.put(service(f"svc{i}", ip=f"10.96.0.{i + 1}"))
        apiserver.put(endpoint_slice(f"svc{i}-a", f"svc{i}", ips=[f"10.0.0.{i + 1}"]))
    apiserver.put(node("node-a"))
    api = await make_api_client(str(kubeconfig), rate_limit=RateLimit(1000.0, 1000))
    assert isinstance(api, RateLimitedApiClient)
    counting = CountingBucket()
    api.limiter = counting
    watcher = ClusterWatcher(api, "node-a", settings=ReflectorSettings(page_size=3))
    try:
        watcher.start()
        async with asyncio.timeout(5):
            await watcher.wait_synced()
        await eventually(lambda: len(apiserver.watches) == 3)
        lists = [p for m, p in apiserver.requests if m == "GET" and "watch=" not in p]
        assert len(lists) == 3 + 3 + 1  # pages
        assert counting.taken == 3 + 3  # one per list, one per watch
        events = EventPoster(api, host="node-a")
        events.post(
            {"metadata": {"name": "svc0", "namespace": "default", "uid": "u"}},
            kind="Service",
            api_version="v1",
            reason="Test",
            message="m",
        )
        await events.flush()
        assert counting.taken == 7
    finally:
        await watcher.stop()
        await api.close()


def test_zero_means_client_gos_defaults_and_a_negative_qps_no_limit() -> None:
    assert RateLimit(0, 0).effective() == RateLimit(5.0, 10)
    assert RateLimit(20, 40).effective() == RateLimit(20, 40)
    assert RateLimit(-1, 10).effective() is None


async def test_make_api_client_limits_only_when_asked(kubeconfig: Path) -> None:
    for rate_limit, limited in ((None, False), (RateLimit(-1, 10), False), (RateLimit(0, 0), True)):
        api = await make_api_client(str(kubeconfig), rate_limit=rate_limit)
        assert isinstance(api, RateLimitedApiClient) is limited
        if limited:
            assert (api.limiter.qps, api.limiter.burst) == (5.0, 10)
        await api.close()


async def test_master_replaces_the_server(kubeconfig: Path) -> None:
    api = await make_api_client(str(kubeconfig), master="https://10.0.0.1:6443/")
    assert api.configuration.host == "https://10.0.0.1:6443"
    await api.close()
    # Without a kubeconfig, --master is the whole configuration (client-go's rule).
    api = await make_api_client(master="http://127.0.0.1:8080")
    assert api.configuration.host == "http://127.0.0.1:8080"
    await api.close()
