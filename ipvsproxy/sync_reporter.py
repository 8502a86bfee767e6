"""What the proxy tells the world about its syncs: logs, metrics, health, Events, health checks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from ipvsproxy.core.model import Family, ServiceKey
from ipvsproxy.core.state import ServicePlan
from ipvsproxy.dataplane.executor import SyncError
from ipvsproxy.dataplane.interfaces import Ipvs
from ipvsproxy.http.health import ProxyHealth
from ipvsproxy.http.service_health import ServiceHealthServers
from ipvsproxy.metrics import Metrics
from ipvsproxy.reconciler import RulesError, SyncResult

log = structlog.get_logger("ipvsproxy.sync")


class EventSink(Protocol):
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
    ) -> None: ...


# Failed syncs in a row that make the proxy unhealthy, log an error and post an Event on
# the Node. With the retry backoff (2, 4, 8 s) that is some 14 s of failing; one failure
# (a tool that lost a race for the xtables lock) is retried quietly.
FAILING_AFTER = 3
# Per Service, the footprint counts: virtual servers, real servers, then for each family
# its (internal, external) "no local endpoint".
FAMILIES = (Family.V4, Family.V6)


class SyncReporter:
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
        health_check_hosts: Callable[[], Sequence[str]] = tuple,
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
        self.health_check_hosts = health_check_hosts
        self.wall = wall
        # Per Service: its problems last reported (only when it has some), its share of
        # the table counts, and its health-check node port with local endpoints.
        self._reported: dict[ServiceKey, tuple[str, ...]] = {}
        self._footprints: dict[ServiceKey, tuple[int, ...]] = {}
        self._totals: tuple[int, ...] = (0,) * (2 + 2 * len(FAMILIES))
        self._health_checks: dict[ServiceKey, tuple[int, int]] = {}
        self._pending_services = 0
        self._pending_endpoints = 0
        # Changes queued since they were last written to the metrics (change_queued).
        self._queued_services = self._queued_endpoints = 0
        self._queued_families: frozenset[Family] = frozenset()
        self._queued_written = True
        self._failed_in_a_row = 0

    def change_queued(
        self, kind: str, trigger_time: float | None, families: frozenset[Family]
    ) -> None:
        # Counted here, written to the metrics once per turn of the event loop: a watch
        # delivers changes in bursts (thousands a second under a storm, all read in one
        # turn), and each metric write takes a lock and each timestamp the clock: cheap on
        # a host (8 us a change), but under user-mode-linux each lock or clock read costs
        # some 27 us, and per change they took 0.19 ms, 17% of the proxy's CPU while
        # 10,000 objects arrived.
        self.health.queued()
        if kind == "service":
            self._pending_services += 1
            self._queued_services += 1
        else:
            self._pending_endpoints += 1
            self._queued_endpoints += 1
        self._queued_families |= families
        if self._queued_written:
            self._queued_written = False
            try:
                asyncio.get_running_loop().call_soon(self._write_queued)
            except RuntimeError:  # no event loop (a synchronous caller): at once
                self._write_queued()

    def _write_queued(self) -> None:
        """The changes queued since the last write, into the metrics (with the time now
        as the families' last-queued timestamp)."""
        self._queued_written = True
        self.metrics.sync_queued(self.wall(), self._queued_families)
        self.metrics.service_changes_total.inc(self._queued_services)
        self.metrics.endpoint_changes_total.inc(self._queued_endpoints)
        self.metrics.set_pending(self._pending_services, self._pending_endpoints)
        self._queued_services = self._queued_endpoints = 0
        self._queued_families = frozenset()

    async def synced(self, result: SyncResult) -> None:
        now = self.wall()
        if self._failed_in_a_row >= FAILING_AFTER:
            log.info("syncs succeed again", failed_before=self._failed_in_a_row)
            self._post_on_node("Normal", "ProxySyncRecovered", "syncs succeed again")
        self._failed_in_a_row = 0
        self.metrics.sync_failing.set(0)
        self.health.sync_failing(None)
        self.health.updated()
        # A node being deleted (or drained by the autoscaler) fails /healthz.
        self.health.sync_node(self.node())
        self.metrics.sync_succeeded(result.duration, now, result.families)
        self.metrics.programmed(result.trigger_times, now)
        self._pending_services = self._pending_endpoints = 0
        self.metrics.set_pending(0, 0)
        self._take(result.plans, result.families)
        if self.service_health is not None:
            await self.service_health.set_hosts(self.health_check_hosts())
            await self.service_health.sync(self._health_checks)
        if result.full and self.ipvs is not None and self.metrics.service_stats.wanted():
            await self._export_stats(self.plans())
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
        for subsystem, cause in error.failures.items():
            families = cause.families if isinstance(cause, RulesError) else ()
            self.metrics.sync_failed(subsystem, families)
        self._failed_in_a_row += 1
        if self._failed_in_a_row < FAILING_AFTER:
            return
        reason = str(error)
        self.metrics.sync_failing.set(1)
        if self.health.failing != reason:
            # Said once per streak and again whenever the reason changes, not at every retry.
            log.error(
                "syncs keep failing: the kernel is not being programmed",
                failed_in_a_row=self._failed_in_a_row,
                error=reason,
            )
            message = f"{self._failed_in_a_row} syncs in a row failed: {reason}"
            self._post_on_node("Warning", "ProxySyncFailing", message)
        self.health.sync_failing(reason)

    def _post_on_node(self, event_type: str, reason: str, message: str) -> None:
        node = self.node()
        if self.events is None or not node:
            return
        self.events.post(
            node,
            kind="Node",
            api_version="v1",
            reason=reason,
            message=message[:1000],
            event_type=event_type,
            once_per_version=False,
        )

    def _take(
        self, plans: Mapping[ServiceKey, ServicePlan | None], families: frozenset[Family]
    ) -> None:
        """Account for the Services a sync planned anew (None: gone), and only those:
        what a sync costs must not grow with the number of Services."""
        for key, plan in plans.items():
            old = self._footprints.pop(key, None)
            if old is not None:
                self._totals = tuple(t - o for t, o in zip(self._totals, old, strict=True))
            self._health_checks.pop(key, None)
            if plan is None:
                self._reported.pop(key, None)
                continue
            new = (
                len(plan.state.virtual_servers),
                sum(len(servers) for servers in plan.state.real_servers.values()),
                *(
                    int(family in policy)
                    for family in FAMILIES
                    for policy in (plan.no_local_internal, plan.no_local_external)
                ),
            )
            self._footprints[key] = new
            self._totals = tuple(t + n for t, n in zip(self._totals, new, strict=True))
            if plan.health_check_node_port:
                self._health_checks[key] = (plan.health_check_node_port, plan.local_endpoints)
            self._report_problems(key, plan)
        virtual, real, *no_local = self._totals
        self.metrics.set_table_size(virtual, real)
        counts = {f: (no_local[2 * i], no_local[2 * i + 1]) for i, f in enumerate(FAMILIES)}
        self.metrics.set_no_local_endpoints({f: counts[f] for f in FAMILIES if f in families})

    def _report_problems(self, key: ServiceKey, plan: ServicePlan) -> None:
        """Log and post an Event once per new set of problems of a Service."""
        problems = plan.problems + ((plan.skip,) if plan.skip else ())
        if self._reported.get(key, ()) == problems:
            return
        if problems:
            self._reported[key] = problems
        else:
            self._reported.pop(key, None)
        for problem in problems:
            log.warning("service skipped in part", service=str(key), reason=problem)
        service = self.services().get(key)
        if problems and self.events is not None and service is not None:
            self.events.post(
                service,
                kind="Service",
                api_version="v1",
                reason="ProxyConfigInvalid",
                message="; ".join(problems)[:1000],
            )

    async def _export_stats(self, plans: Mapping[ServiceKey, ServicePlan]) -> None:
        assert self.ipvs is not None
        owner = {vs: key for key, plan in plans.items() for vs in plan.state.virtual_servers}
        stats = await self.ipvs.stats()
        self.metrics.service_stats.update(
            {(owner[vs], vs): value for vs, value in stats.items() if vs in owner}
        )
