"""The reconciler: turns cluster changes into kernel changes, one dirty Service at a time.

The watchers call ``service_changed``/``endpoints_changed``/``node_changed``
as changes arrive; each marks work and wakes the loop. The loop:

* waits until every watcher has delivered its first complete list, then does a
  first full sync that adopts what the kernel holds (no flush: real servers
  keep their connections across a restart of the proxy);
* paces syncs as kube-proxy's bounded-frequency runner does (``SyncPacer``: a burst
  of ``sync_burst`` at once, then one per ``min_sync_period``; 0, the shipped default,
  syncs every change at once), so a change that finds the proxy idle is synced at
  once and what comes while a sync runs is coalesced into the next; a sync plans and
  diffs only the dirty Services (``DesiredIndex`` gives the scope), at most
  ``max_batch`` of them, so its cost does not grow with the cluster, and under a storm
  Services are programmed as they come, batch after batch;
* every ``sync_period`` runs a full sync: re-reads the kernel and heals drift
  (a virtual server deleted behind the proxy's back comes back); one that falls due
  while changes are queued waits until they are synced (one period at most). When
  nothing changed the read is skipped: each subsystem's fingerprint
  (``kernel_fingerprint``) equal to the one seen when the kernel last matched the
  mirror, and no op applied since, means the mirror is the kernel; the iptables rules
  likewise. A full sync makes
  kube-ipvs0 and the sets exist first (rebuilding a set with other options in place),
  programs IPVS, addresses and set entries, and only then, once all of that succeeded,
  rewrites the constant iptables rules and removes what kube-proxy's other modes left
  (iptables mode's chains, nftables mode's tables): the node switches from their state
  to ours without a moment in which a Service has neither;
* every ``drain_period`` re-reads the real servers left at weight 0 by graceful
  termination and deletes those whose connections have reached 0;
* when its Node changes, re-evaluates what depends on it: the primary IPs behind
  ``--nodeport-addresses=primary`` and the pod CIDRs of ``--detect-local-mode=NodeCIDR``.
  kube-proxy exits on either change and lets its restart pick them up; here the plans
  and the (constant) rules follow at the next sync, with no restart and no gap.

A failed sync leaves the mirror of the kernel in doubt, so the next sync after
one is a full one, retried with backoff; the observer makes a streak of them loud
(health, log, an Event on the Node).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ipvsproxy import gc_pause
from ipvsproxy.core import ipset_catalog
from ipvsproxy.core.apply import apply_ops
from ipvsproxy.core.desired import DesiredIndex
from ipvsproxy.core.diff import diff
from ipvsproxy.core.local_traffic import LocalDetector, local_detectors, node_pod_cidrs
from ipvsproxy.core.mirror import ObservedMirror
from ipvsproxy.core.model import (
    Family,
    IpProtocol,
    RealServerKey,
    RealServerStatus,
    ServiceKey,
    VirtualServerKey,
    family_of,
)
from ipvsproxy.core.node_ips import nodeport_addresses
from ipvsproxy.core.ops import Op
from ipvsproxy.core.plan.config import PlanConfig
from ipvsproxy.core.plan.service import plan_service
from ipvsproxy.core.scope import Scope
from ipvsproxy.core.state import DataplaneState, ServicePlan
from ipvsproxy.dataplane.errors import DataplaneError
from ipvsproxy.dataplane.executor import Dataplane, SyncError, execute, read_owned
from ipvsproxy.dataplane.iptables import RulesSyncer
from ipvsproxy.dataplane.iptables_rules import RulesConfig
from ipvsproxy.dataplane.nftables import KUBE_PROXY_TABLES
from ipvsproxy.kernel_fingerprint import StateFingerprint, state_fingerprint
from ipvsproxy.sync_pacer import SyncPacer

log = structlog.get_logger(__name__)

Obj = dict[str, Any]


class RulesError(Exception):
    """The rules of these families could not be written (iptables-restore failed)."""

    def __init__(self, failed: Mapping[Family, BaseException]) -> None:
        self.families = frozenset(failed)
        super().__init__("; ".join(f"{f.k8s_name}: {e}" for f, e in sorted(failed.items())))


class ClusterView(Protocol):
    """What the reconciler reads of the cluster (the watchers' cache)."""

    @property
    def services(self) -> Mapping[ServiceKey, Obj]: ...

    def slices_for(self, key: ServiceKey) -> list[Obj]: ...

    @property
    def node(self) -> Obj | None: ...


class SyncObserver(Protocol):
    """Told about syncs: metrics, health, events, the health-check servers."""

    def change_queued(
        self, kind: str, trigger_time: float | None, families: frozenset[Family]
    ) -> None:
        """``families``: those the change concerns (an EndpointSlice's own; a Service's,
        every family served), as each of kube-proxy's per-family proxiers hears of it."""

    async def synced(self, result: SyncResult) -> None: ...

    def sync_failed(self, error: SyncError) -> None: ...


@dataclass(frozen=True)
class Settings:
    node_name: str
    scheduler: str = "rr"
    min_sync_period: float = 0.0
    sync_burst: int = 2  # kube-proxy's BoundedFrequencyRunner burst
    # Services planned by one incremental sync at most: under a storm each sync stays
    # short and the rest follow in the next ones (UML: ~1.3 ms a Service).
    max_batch: int = 500
    sync_period: float = 30.0
    drain_period: float = 2.0
    nodeport_addresses: tuple[str, ...] = ()  # CIDRs, or ("primary",)
    bind_address: str = ""  # the node IP hint for "primary" (kube-proxy's --bind-address)
    cluster_cidrs: tuple[str, ...] = ()
    detect_local_mode: str = "ClusterCIDR"
    pod_bridge_interface: str = ""
    pod_interface_name_prefix: str = ""
    masquerade_all: bool = False
    masquerade_bit: int = 14  # --iptables-masquerade-bit: the mark KUBE-MARK-MASQ sets
    exclude_cidrs: tuple[str, ...] = ()
    families: frozenset[Family] | None = None


@dataclass
class SyncResult:
    """What one sync did, for logs, metrics and health."""

    full: bool
    services: int
    ops: Sequence[Op]
    duration: float
    # (the EndpointSlice's family, its last-change-trigger-time) of each change programmed.
    trigger_times: list[tuple[Family, float]] = field(default_factory=list)
    # The Services this sync planned anew; None for those that are gone.
    plans: Mapping[ServiceKey, ServicePlan | None] = field(default_factory=dict)
    # The families this node serves: the sync was each one's.
    families: frozenset[Family] = frozenset()

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.ops:
            name = type(op).__name__
            counts[name] = counts.get(name, 0) + 1
        return counts


class Reconciler:
    def __init__(
        self,
        cluster: ClusterView,
        dataplane: Dataplane,
        settings: Settings,
        observer: SyncObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.dataplane = dataplane
        self.settings = settings
        self.observer = observer
        self.clock = clock
        self.index = DesiredIndex()
        self.mirror = ObservedMirror()
        self._node_addresses: Mapping[Family, frozenset[str]] = {}
        self.nodeport_addresses, self.local = self._from_node()
        self.plan_config = self._plan_config()
        self._exclude = [ipaddress.ip_network(c, strict=False) for c in settings.exclude_cidrs]
        # Oldest change first (a dict keeps insertion order; marking a dirty key again
        # keeps its place): under a storm no Service waits behind later ones.
        self._dirty: dict[ServiceKey, None] = {}
        self._trigger_times: dict[ServiceKey, list[tuple[Family, float]]] = {}
        self._replan_all = False
        self._full_due = True
        self._draining: set[VirtualServerKey] = set()
        self._wake = asyncio.Event()
        self._last_sync_start = -float("inf")
        self._pacer = SyncPacer(settings.min_sync_period, settings.sync_burst)
        self._next_full = 0.0
        self._failures = 0
        self._rules: dict[Family, RulesSyncer] = {}
        # The kernel's fingerprint when it last matched the mirror (None: unknown, or the
        # proxy changed it since), and per family the rules written with the fingerprint
        # of the tables right after.
        self._verified: StateFingerprint | None = None
        self._rules_verified: dict[Family, tuple[RulesConfig, int]] = {}
        self.full_reads = 0  # full syncs that re-read the kernel (the others trusted it)
        self._rules_due = False
        self._last_drain_check = -float("inf")
        self.syncs = 0

    # ---------------------------------------------------------------- listener
    def service_changed(self, key: ServiceKey) -> None:
        self._mark(key, "service", None, None)

    def endpoints_changed(
        self, key: ServiceKey, trigger_time: float | None, family: Family | None = None
    ) -> None:
        self._mark(key, "endpoints", trigger_time, family)

    def node_changed(self) -> None:
        # Zone labels (topology) and eligibility: every plan may change.
        self._replan_all = True
        nodeport, local = self._from_node()
        if local != self.local:
            log.info("local traffic detection changed", detectors=_describe(local))
            self._rules_due = True
        if nodeport != self.nodeport_addresses:
            log.info("nodeport addresses changed", addresses=list(nodeport) or "all")
        self.nodeport_addresses, self.local = nodeport, local
        self.plan_config = self._plan_config()
        self._wake.set()

    def _from_node(self) -> tuple[tuple[str, ...], dict[Family, LocalDetector]]:
        """What follows the Node: the NodePort CIDRs (for "primary") and the detectors (for
        NodeCIDR). Until the Node has its pod CIDRs, NodeCIDR detects nothing: traffic to
        ClusterIPs is then masqueraded (kube-proxy would wait, proxying nothing)."""
        s, node = self.settings, self.cluster.node
        nodeport = nodeport_addresses(s.nodeport_addresses, node, s.bind_address)
        local = local_detectors(
            s.detect_local_mode,
            cluster_cidrs=s.cluster_cidrs,
            pod_cidrs=node_pod_cidrs(node),
            bridge_interface=s.pod_bridge_interface,
            interface_name_prefix=s.pod_interface_name_prefix,
        )
        return nodeport, local

    def _mark(
        self, key: ServiceKey, kind: str, trigger_time: float | None, family: Family | None
    ) -> None:
        self._dirty.setdefault(key)
        if trigger_time is not None and family is not None:
            self._trigger_times.setdefault(key, []).append((family, trigger_time))
        if self.observer is not None:
            served = self.plan_config.served_families
            families = frozenset({family}) & served if family else served
            self.observer.change_queued(kind, trigger_time, families)
        self._wake.set()

    # --------------------------------------------------------------- the loop
    async def run(self, synced: Callable[[], Any]) -> None:
        """Sync forever. ``synced`` is awaited first: the watchers' first complete lists."""
        await synced()
        while True:
            await self._wait_for_work()
            await self.sync_once()

    async def _wait_for_work(self) -> None:
        while True:
            now = self.clock()
            if self._full_due or now >= self._next_full:
                break
            if self._dirty or self._replan_all or self._rules_due:
                break
            deadline = self._next_full
            if self._draining:
                deadline = min(deadline, self._last_sync_start + self.settings.drain_period)
                if now >= deadline:
                    break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, deadline - now))
        # Bounded frequency: changes that come while waiting coalesce into this sync.
        wait = self._pacer.delay(self.clock())
        if wait > 0:
            await asyncio.sleep(wait)

    async def _ensure_fixed_parts(self) -> dict[str, BaseException]:
        """kube-ipvs0 and every KUBE-* set with kube-proxy's options (a set someone made
        otherwise is rebuilt in place). Failures are returned, not raised: the sync goes on
        programming IPVS, which needs neither."""
        failures: dict[str, BaseException] = {}
        try:
            await self.dataplane.addresses.ensure_dummy()
        except (DataplaneError, OSError) as err:
            failures["address"] = err
        families = sorted(self.plan_config.served_families)
        specs = [spec for family in families for spec in ipset_catalog.all_specs(family)]
        try:
            rebuilt = await self.dataplane.ipsets.ensure(specs)
        except (DataplaneError, OSError) as err:
            failures["ipset"] = err
        else:
            for name, differences in rebuilt.items():
                log.warning("ipset rebuilt with kube-proxy's options", set=name, had=differences)
        return failures

    async def _sync_rules(self, full: bool = False) -> dict[str, BaseException]:
        """The constant iptables rules, rewritten and verified (which heals drift), with
        what kube-proxy's other modes left removed in the same restore; then kube-proxy's
        nftables tables. Only once everything of ours is in place: removing the old state
        first would leave Services without any. A full sync skips a family whose rules
        and tables are as it last wrote them (same config, same fingerprint)."""
        failures: dict[str, BaseException] = {}
        self._rules_due = False
        rules = RulesConfig(
            masquerade_all=self.settings.masquerade_all,
            local=self.local,
            masquerade_bit=self.settings.masquerade_bit,
        )
        failed: dict[Family, BaseException] = {}
        iptables = self.dataplane.iptables
        for family in sorted(self.plan_config.served_families):
            syncer = self._rules.setdefault(family, RulesSyncer(iptables, family))
            try:
                recorded = self._rules_verified.get(family)
                if (
                    full
                    and recorded is not None
                    and recorded == (rules, await iptables.fingerprint(family))
                ):
                    continue
                self._rules_verified.pop(family, None)
                await syncer.sync(rules, verify=True)
                # Taken right after the restore: a change made by someone else in between
                # (a millisecond) would wait for the next change of those tables.
                self._rules_verified[family] = (rules, await iptables.fingerprint(family))
            except Exception as err:
                failed[family] = err
        if failed:
            failures["iptables"] = RulesError(failed)
        if not failures:
            try:
                await self._remove_nftables_mode()
            except (DataplaneError, OSError) as err:
                failures["nftables"] = err
        if failures:
            self._rules_due = True
        return failures

    async def _remove_nftables_mode(self) -> None:
        present = await self.dataplane.nftables.tables()
        doomed = [table for table in KUBE_PROXY_TABLES if table in present]
        if doomed:
            await self.dataplane.nftables.delete_tables(doomed)
            log.info("removed kube-proxy's nftables mode", tables=[" ".join(t) for t in doomed])

    async def sync_once(self) -> SyncResult | None:
        """One sync: full if due, else the dirty Services, else draining real servers."""
        self._last_sync_start = now = self.clock()
        self._pacer.started(now)
        full = self._full_due or (now >= self._next_full and not self._resync_waits(now))
        try:
            try:
                # A sync's objects form no cycles, and collections walked the whole
                # cache: a third of a first sync's time (gc_pause).
                with gc_pause.paused():
                    result = await (self._full_sync() if full else self._partial_sync())
            except (DataplaneError, OSError) as err:
                # A kernel or tool failure outside the batched ops (creating kube-ipvs0,
                # reading the kernel): the same retry as for a failed operation.
                raise SyncError({"dataplane": err}) from err
        except SyncError as err:
            self._failures += 1
            self._full_due = True
            self._verified = None
            self._rules_verified.clear()
            backoff = min(self.settings.sync_period, 2.0 ** min(self._failures, 5))
            self._pacer.hold(self.clock() + backoff)
            log.warning("sync failed", error=str(err), retry_in_s=backoff)
            if self.observer is not None:
                self.observer.sync_failed(err)
            return None
        self._failures = 0
        self.syncs += 1
        if self.observer is not None:
            await self.observer.synced(result)
        return result

    def _resync_waits(self, now: float) -> bool:
        """Whether a periodic resync that is due waits for the changes queued before it.

        Under a storm it would plan every queued Service at once and, the proxy having
        changed the kernel, read the whole kernel back (5-13 s at 5,000-10,000 Services
        under user-mode-linux), while the changes users wait for wait behind it. It runs
        once they are synced, batch after batch, or one more period late at the most:
        drift is still healed within two periods under any load.
        """
        return bool(self._dirty) and now < self._next_full + self.settings.sync_period

    async def _read_node_addresses(self) -> None:
        found: dict[Family, set[str]] = {}
        for address in await self.dataplane.addresses.node_addresses():
            found.setdefault(family_of(address), set()).add(address)
        node_addresses = {family: frozenset(a) for family, a in found.items()}
        if node_addresses != self.plan_config.node_addresses:
            self._node_addresses = node_addresses
            self.plan_config = self._plan_config()
            self._replan_all = True

    def _plan_config(self) -> PlanConfig:
        s = self.settings
        return PlanConfig(
            node_name=s.node_name,
            node_addresses=self._node_addresses,
            nodeport_addresses=self.nodeport_addresses,
            scheduler=s.scheduler,
            cluster_cidrs=s.cluster_cidrs,
            masquerade_all=s.masquerade_all,
            families=s.families,
            pod_families=frozenset(self.local),
        )

    @property
    def health_check_hosts(self) -> tuple[str, ...]:
        """Where the health-check node ports listen, as kube-proxy's: every address when
        NodePorts take every address, else the node addresses NodePorts use."""
        if not self.nodeport_addresses:
            return ()
        ips = self.plan_config.nodeport_ips
        return tuple(a for family in sorted(ips) for a in ips[family])

    async def _observe(self) -> None:
        self.mirror.reset(await read_owned(self.dataplane, self._exclude))

    def _replan(
        self, keys: set[ServiceKey], scoped: bool = True
    ) -> tuple[Scope, dict[ServiceKey, ServicePlan | None]]:
        """Plan ``keys``; the plans, and with ``scoped`` what they touched."""
        scope = Scope()
        plans: dict[ServiceKey, ServicePlan | None] = {}
        node = self.cluster.node
        # Sorted: where two Services claim one virtual server the first claim wins, and
        # a full sync (a restart) must pick the same one whatever the sets' order.
        for key in sorted(keys):
            service = self.cluster.services.get(key)
            plan = None
            if service is not None:
                plan = plan_service(service, self.cluster.slices_for(key), node, self.plan_config)
            if scoped:
                scope.update(self.index.set_plan(key, plan))
            else:
                self.index.replace_plan(key, plan)
            lost = self.index.lost_claims(key)
            if plan is not None and lost:
                # Reported like the plan's own problems (a log line and an Event).
                plan = dataclasses.replace(plan, problems=plan.problems + tuple(lost))
            plans[key] = plan
        return scope, plans

    def _served(self) -> frozenset[Family]:
        return self.plan_config.served_families

    def _take_dirty(
        self, limit: int | None = None
    ) -> tuple[set[ServiceKey], list[tuple[Family, float]]]:
        """The Services to plan now (at most ``limit``; the others stay dirty, and the loop
        comes back for them) and the trigger times of their changes."""
        if self._replan_all:
            self._replan_all = False
            self._dirty.update(dict.fromkeys(self.cluster.services))
            self._dirty.update(dict.fromkeys(self.index.plans))
        if limit is None or len(self._dirty) <= limit:
            keys, self._dirty = set(self._dirty), {}
        else:
            keys = set(itertools.islice(self._dirty, limit))
            for key in keys:
                del self._dirty[key]
        times = [t for key in keys for t in self._trigger_times.pop(key, ())]
        return keys, times

    async def _full_sync(self) -> SyncResult:
        started = self.clock()
        self._full_due = False
        seen = await state_fingerprint(self.dataplane)
        trusted = seen == self._verified
        if not trusted:
            await self._read_node_addresses()
        failures = await self._ensure_fixed_parts()
        keys, times = self._take_dirty()
        # Services that vanished while the proxy was down or behind are planned as gone.
        keys |= set(self.cluster.services) ^ set(self.index.plans)
        _, plans = self._replan(keys, scoped=False)  # the diff below compares everything
        ops: list[Op] = []
        if not trusted:
            self.full_reads += 1
            await self._observe()
        # Trusted with no plan replanned, there is nothing to diff: the kernel is as it
        # was when it last matched the mirror, and so are the plans (a sync that changed
        # the kernel leaves it untrusted). At 10,000 Services that saves 1.5 s a resync.
        if not trusted or keys:
            observed = self.mirror.state()
            ops = diff(observed, self.index.desired())
            try:
                await self._apply(Scope(), observed, ops, whole=True)
            except SyncError as err:
                failures |= err.failures
        # The kernel matched the mirror when ``seen`` was taken: trusted from then on,
        # until it or the proxy changes it.
        self._verified = seen if not ops and not failures else None
        if not failures:
            failures = await self._sync_rules(full=True)
        # Counted from the end: a resync slower than the period must not run back to back.
        self._next_full = self.clock() + self.settings.sync_period
        if failures:
            raise SyncError(failures)
        duration = self.clock() - started
        return SyncResult(True, len(keys), ops, duration, times, plans, self._served())

    async def _partial_sync(self) -> SyncResult:
        started = self.clock()
        keys, times = self._take_dirty(self.settings.max_batch)
        scope, plans = self._replan(keys)
        if self._draining and started >= self._last_drain_check + self.settings.drain_period:
            self._last_drain_check = started
            scope.virtual_servers |= self._draining
        desired = self.index.desired(scope)
        await self._refresh_removals(scope, desired)
        observed = self.mirror.state(scope)
        ops = diff(observed, desired)
        await self._apply(scope, observed, ops, whole=False)
        if self._rules_due and (failures := await self._sync_rules()):
            raise SyncError(failures)
        duration = self.clock() - started
        return SyncResult(False, len(keys), ops, duration, times, plans, self._served())

    async def _refresh_removals(self, scope: Scope, desired: DataplaneState) -> None:
        """Re-read the live connection counts wherever a TCP or SCTP real server is about
        to go: graceful termination decides on the kernel's counts, not the mirror's."""
        for key in scope.virtual_servers:
            held = self.mirror.real_servers.get(key)
            if not held or key.protocol is IpProtocol.UDP:
                continue
            wanted = desired.servers_of(key)
            if any(rkey not in wanted for rkey in held):
                statuses = await self.dataplane.ipvs.list_real_servers(key)
                self.mirror.real_servers[key] = {s.server.key: s for s in statuses}

    async def _apply(
        self, scope: Scope, observed: DataplaneState, ops: Sequence[Op], whole: bool
    ) -> None:
        # On a SyncError the mirror is left as it was: the kernel may hold part of the
        # ops, so the next sync (a full one) re-reads it.
        if ops:
            self._verified = None
        await execute(self.dataplane, ops)
        after = apply_ops(observed, ops)
        if whole:
            self.mirror.reset(after)
        else:
            self.mirror.write_back(scope, after)
        self._track_draining(after.real_servers, scope if not whole else None)

    def _track_draining(
        self,
        real_servers: Mapping[VirtualServerKey, Mapping[RealServerKey, RealServerStatus]],
        scope: Scope | None,
    ) -> None:
        """Remember the virtual servers that keep real servers the plans no longer want
        (at weight 0, draining), so they are re-checked every drain_period."""
        if scope is None:
            self._draining = set()
        else:
            self._draining -= scope.virtual_servers
        desired = self.index.desired(
            Scope(virtual_servers=set(real_servers)) if scope is not None else None
        )
        for key, servers in real_servers.items():
            wanted = desired.servers_of(key)
            if any(rkey not in wanted for rkey in servers):
                self._draining.add(key)


def _describe(local: Mapping[Family, LocalDetector]) -> dict[str, str]:
    return {
        family.k8s_name: detector.source or f"-i {detector.interface}"
        for family, detector in sorted(local.items())
    }
