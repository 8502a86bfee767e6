"""The API client (from --kubeconfig, --master or the pod's service account), its client-side
rate limit, and the Event poster."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import aiohttp
import structlog
from kubernetes_asyncio import client, config

# Re-exported (app.py catches it) so that nothing outside ipvsproxy.kube imports
# kubernetes_asyncio before lean_import has run.
from kubernetes_asyncio.config.config_exception import ConfigException as ConfigException

from ipvsproxy.kube.calls import create_event

log = structlog.get_logger(__name__)


class RateLimit(NamedTuple):
    """kube-proxy's --kube-api-qps and --kube-api-burst (clientConnection.qps/burst)."""

    qps: float = 5.0
    burst: int = 10

    def effective(self) -> RateLimit | None:
        """client-go's reading: a 0 is its default (5 and 10), a negative qps no limit."""
        if self.qps < 0:
            return None
        return RateLimit(self.qps or 5.0, self.burst or 10)


class TokenBucket:
    """client-go's client-side rate limit: ``burst`` tokens, refilled at ``qps`` per second;
    each request takes one, and waits for it when none is left.

    A request that must wait reserves the next token at once (the count goes below zero),
    so waiting requests go in arrival order and each wakes exactly when its token is due.
    """

    def __init__(
        self,
        qps: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs qps > 0 and burst >= 1, got {qps}, {burst}")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()

    async def take(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        if self._tokens < 0:
            await self._sleep(-self._tokens / self.qps)


def continues_a_list(query_params: Any) -> bool:
    """True for the second and later pages of a paginated list (a ``continue`` token).

    kube-proxy's informers list each resource in one request (served from the API server's
    watch cache); the reflectors here page through it, 500 objects a page. Counting each
    list once, not each page, keeps the limit about the same number of requests.
    """
    return any(key == "continue" for key, _ in query_params or ())


class RateLimitedApiClient(client.ApiClient):
    """An ApiClient whose requests take a token from ``limiter`` first: every list, every
    watch (a watch is one long request: it takes a token when it opens, not while it
    streams) and every Event posted."""

    def __init__(self, configuration: client.Configuration, limiter: TokenBucket) -> None:
        super().__init__(configuration=configuration)
        self.limiter = limiter

    async def request(
        self, method: str, url: str, query_params: Any = None, *a: Any, **kw: Any
    ) -> Any:
        if not continues_a_list(query_params):
            await self.limiter.take()
        return await super().request(method, url, query_params, *a, **kw)


async def make_api_client(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    master: str | None = None,
    rate_limit: RateLimit | None = None,
) -> client.ApiClient:
    """An ApiClient from `kubeconfig` if given; else in-cluster config inside a pod; else
    the default kubeconfig (~/.kube/config or $KUBECONFIG). ``master`` (kube-proxy's
    --master) replaces the server URL; with no kubeconfig it is the whole configuration,
    as in client-go. ``rate_limit`` bounds the requests as ``RateLimit.effective`` reads it
    (None: no limit). Close it with `await c.close()`."""
    cfg = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=cfg
        )
    elif master:
        pass  # client-go's BuildConfigFromFlags: the URL alone, no credentials
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        # Synchronous in kubernetes_asyncio; it reads the token and CA from files.
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        try:
            await config.load_kube_config(context=context, client_configuration=cfg)
        except ConfigException as e:
            raise ConfigException(f"no kubeconfig given, not in a cluster, and {e}") from e
    if master:
        cfg.host = master.rstrip("/")
    limit = rate_limit.effective() if rate_limit is not None else None
    if limit is None:
        return client.ApiClient(configuration=cfg)
    return RateLimitedApiClient(cfg, TokenBucket(limit.qps, max(1, limit.burst)))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventPoster:
    """Posts core/v1 Events about objects, in the background, one per object version.

    Posting never blocks or fails the caller: errors are logged and dropped.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        component: str = "ipvsproxy",
        host: str = "",
        remember: int = 1024,
    ) -> None:
        self._api = api
        self.component = component
        self.host = host
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._remember = remember
        self._tasks: set[asyncio.Task[None]] = set()

    def post(
        self,
        obj: Any,
        *,
        kind: str,
        api_version: str,
        reason: str,
        message: str,
        event_type: str = "Warning",
        once_per_version: bool = True,
    ) -> None:
        """Post an Event about ``obj``; by default at most once per version of the object
        and reason (``once_per_version=False``: every call, e.g. a state that comes back)."""
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        name = meta.get("name") if isinstance(meta.get("name"), str) else None
        namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
        key = (kind, namespace, name, meta.get("uid"), meta.get("resourceVersion"), reason)
        if once_per_version:
            if key in self._seen:
                return  # this version of this object was already reported
            self._seen[key] = None
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        involved = {"kind": kind, "apiVersion": api_version}
        for field in ("name", "namespace", "uid", "resourceVersion"):
            if isinstance(meta.get(field), str):
                involved[field] = meta[field]
        now = _now()
        ev_ns = namespace or "default"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name or 'unnamed'}.{time.time_ns():x}", "namespace": ev_ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        task = asyncio.get_running_loop().create_task(self._send(ev_ns, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            resp = await create_event(self._api, namespace, body, aiohttp.ClientTimeout(total=10))
            status = resp.status
            text = await resp.read()
            resp.release()
            if status >= 300:
                log.warning(
                    "posting event failed", status=status, body=text[:200].decode(errors="replace")
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("posting event failed", error=f"{type(e).__name__}: {e}")

    async def flush(self) -> None:
        """Wait for the events in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
