"""What the proxy tells the world about its syncs: logs, metrics, health, Events, health checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog

from ipvsproxy.dataplane.executor import SyncError
from ipvsproxy.dataplane.interfaces import Ipvs
from ipvsproxy.http.health import ProxyHealth
from ipvsproxy.http.service_health import ServiceHealthServers
from ipvsproxy.metrics import Metrics
from ipvsproxy.model import ServiceKey
from ipvsproxy.reconciler import SyncResult
from ipvsproxy.state import ServicePlan

log = structlog.get_logger("ipvsproxy.sync")


class EventSink(Protocol):
    def post(self, obj: Any, *, kind: str, api_version: str, reason: str, message: str) -> None: ...


class ProxyObserver:
    """Implements the reconciler's SyncObserver for the running proxy."""

    def __init__(
        self,
        metrics: Metrics,
        health: ProxyHealth,
        *,
        ipvs: Ipvs | None = None,
        service_health: ServiceHealthServers | None = None,
        events: EventSink | None = None,
        services: Callable[[], Mapping[ServiceKey, Any]] = dict,
        plans: Callable[[], Mapping[ServiceKey, ServicePlan]] = dict,
        node: Callable[[], Mapping[str, Any] | None] = lambda: None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.health = health
        self.ipvs = ipvs
        self.service_health = service_health
        self.events = events
        self.services = services
        self.plans = plans
        self.node = node
        self.wall = wall
        self._reported: dict[ServiceKey, tuple[str, ...]] = {}
        self._pending_services = 0
        self._pending_endpoints = 0

    def change_queued(self, kind: str, trigger_time: float | None) -> None:
        self.health.queued()
        self.metrics.sync_queued(self.wall())
        if kind == "service":
            self.metrics.service_changes_total.inc()
            self._pending_services += 1
        else:
            self.metrics.endpoint_changes_total.inc()
            self._pending_endpoints += 1
        self.metrics.set_pending(self._pending_services, self._pending_endpoints)

    async def synced(self, result: SyncResult) -> None:
        now = self.wall()
        self.health.updated()
        # A node being deleted (or drained by the autoscaler) fails /healthz.
        self.health.sync_node(self.node())
        self.metrics.sync_succeeded(result.duration, now)
        self.metrics.programmed(result.trigger_times, now)
        self._pending_services = self._pending_endpoints = 0
        self.metrics.set_pending(0, 0)
        self._report_problems(result.plans)
        plans = self.plans()
        if result.full or result.plans:
            self._count_tables(plans)
        if self.service_health is not None:
            await self.service_health.sync(
                {
                    key: (plan.health_check_node_port, plan.local_endpoints)
                    for key, plan in plans.items()
                    if plan.health_check_node_port
                }
            )
        if result.full and self.ipvs is not None:
            await self._export_stats(plans)
        counts = result.counts()
        if counts or result.full:
            log.info(
                "synced",
                full=result.full,
                services=result.services,
                duration_ms=round(result.duration * 1000, 1),
                **counts,
            )
        else:
            log.debug("synced", full=False, services=result.services)

    def sync_failed(self, error: SyncError) -> None:
        for subsystem in error.failures:
            self.metrics.sync_failed(subsystem)

    def _report_problems(self, plans: Mapping[ServiceKey, ServicePlan]) -> None:
        """Log and post an Event once per new set of problems of a Service."""
        services = self.services()
        for key, plan in plans.items():
            problems = plan.problems + ((plan.skip,) if plan.skip else ())
            if self._reported.get(key) == problems:
                continue
            self._reported[key] = problems
            for problem in problems:
                log.warning("service skipped in part", service=str(key), reason=problem)
            service = services.get(key)
            if problems and self.events is not None and service is not None:
                self.events.post(
                    service,
                    kind="Service",
                    api_version="v1",
                    reason="ProxyConfigInvalid",
                    message="; ".join(problems)[:1000],
                )
        for key in [k for k in self._reported if k not in services]:
            del self._reported[key]

    def _count_tables(self, plans: Mapping[ServiceKey, ServicePlan]) -> None:
        virtual = real = internal = external = 0
        for plan in plans.values():
            virtual += len(plan.state.virtual_servers)
            real += sum(len(servers) for servers in plan.state.real_servers.values())
            internal += plan.no_local_internal
            external += plan.no_local_external
        self.metrics.set_table_size(virtual, real)
        self.metrics.set_no_local_endpoints(internal, external)

    async def _export_stats(self, plans: Mapping[ServiceKey, ServicePlan]) -> None:
        assert self.ipvs is not None
        owner = {vs: key for key, plan in plans.items() for vs in plan.state.virtual_servers}
        stats = await self.ipvs.stats()
        self.metrics.service_stats.update(
            {(owner[vs], vs): value for vs, value in stats.items() if vs in owner}
        )
