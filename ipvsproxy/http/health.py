"""The proxy's own health: kube-proxy's /healthz and /livez semantics.

The reconciler reports two facts: ``queued()`` when a Service or
EndpointSlice change arrives, and ``updated()`` after a successful sync.
The proxy is healthy at start, and becomes unhealthy when a queued change
has waited ``health_timeout`` (2 x the sync period) without a successful sync,
as kube-proxy's, or (ours) while syncs keep failing (``sync_failing``): a proxy
that cannot program the kernel must not look fine because nothing changed.
``/healthz`` is also 503 while this Node is being deleted (a deletionTimestamp,
or the cluster autoscaler's ToBeDeletedByClusterAutoscaler taint), so load
balancers drain it first; ``/livez`` ignores the node, so the kubelet does
not restart a proxy that is fine.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response

from ipvsproxy.http.routes import Routes
from ipvsproxy.metrics import Metrics

TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"


def node_eligible(node: Mapping[str, Any] | None) -> bool:
    """False if the Node (a plain API dict) is being deleted or drained by the autoscaler."""
    if not node:
        return True
    if (node.get("metadata") or {}).get("deletionTimestamp"):
        return False
    taints = (node.get("spec") or {}).get("taints") or []
    return not any(t.get("key") == TO_BE_DELETED_TAINT for t in taints)


def go_time(ts: float | None) -> str:
    """A wall-clock time as Go's time.Time.String() prints it in UTC.

    kube-proxy fills lastUpdated and currentTime this way; tools that parse
    the body expect it. ``None`` is Go's zero time.
    """
    if ts is None:
        return "0001-01-01 00:00:00 +0000 UTC"
    t = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    frac = f"{t.microsecond:06d}".rstrip("0")
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


class HealthStatus(NamedTuple):
    healthy: bool  # the proxy is syncing (ignores the node)
    node_eligible: bool
    last_updated: float | None
    current_time: float


class ProxyHealth:
    """Health state shared by the reconciler (writer) and the HTTP handlers (readers).

    ``clock`` returns wall-clock seconds; tests pass a fake one.
    """

    def __init__(self, health_timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.health_timeout = health_timeout
        self._clock = clock
        self._last_updated: float | None = None
        self._oldest_pending: float | None = None
        self._node_eligible = True
        self._failing: str | None = None

    def queued(self) -> None:
        """A change is waiting for a sync (keeps the oldest waiting time)."""
        if self._oldest_pending is None:
            self._oldest_pending = self._clock()

    def updated(self) -> None:
        """A sync succeeded: nothing is pending any more."""
        self._oldest_pending = None
        self._last_updated = self._clock()

    def sync_failing(self, reason: str | None) -> None:
        """Syncs keep failing, for ``reason`` (None: they succeed again)."""
        self._failing = reason

    @property
    def failing(self) -> str | None:
        return self._failing

    def set_node_eligible(self, eligible: bool) -> None:
        self._node_eligible = eligible

    def sync_node(self, node: Mapping[str, Any] | None) -> None:
        """Take eligibility from this proxy's Node object (a plain API dict)."""
        self._node_eligible = node_eligible(node)

    @property
    def node_eligible(self) -> bool:
        return self._node_eligible

    def is_healthy(self) -> bool:
        """Syncing fine (what /livez and the service health checks use)."""
        if self._failing is not None:
            return False
        if self._oldest_pending is None:
            return True
        return self._clock() - self._oldest_pending < self.health_timeout

    def status(self) -> HealthStatus:
        return HealthStatus(
            self.is_healthy(), self._node_eligible, self._last_updated, self._clock()
        )


def _respond(status: HealthStatus, healthy: bool) -> Response:
    # As kube-proxy: a healthy answer reports lastUpdated as now (older releases
    # updated it on every loop, and clients came to expect a recent value).
    last = status.current_time if healthy else status.last_updated
    body = {
        "lastUpdated": go_time(last),
        "currentTime": go_time(status.current_time),
        "nodeEligible": status.node_eligible,
    }
    return Response(
        status=200 if healthy else 503,
        text=json.dumps(body),
        content_type="application/json",
        headers={"X-Content-Type-Options": "nosniff"},
    )


def health_routes(health: ProxyHealth, metrics: Metrics | None = None) -> Routes:
    """/healthz (sync health and node eligibility) and /livez (sync health only)."""

    async def healthz(_request: BaseRequest) -> Response:
        status = health.status()
        ok = status.healthy and status.node_eligible
        if metrics is not None:
            metrics.healthz_total.labels("200" if ok else "503").inc()
        return _respond(status, ok)

    async def livez(_request: BaseRequest) -> Response:
        status = health.status()
        if metrics is not None:
            metrics.livez_total.labels("200" if status.healthy else "503").inc()
        return _respond(status, status.healthy)

    return Routes({"/healthz": healthz, "/livez": livez})
