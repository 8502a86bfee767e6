"""Prometheus metrics: kube-proxy's names and meanings, and our own under ``ipvsproxy_``.

Everything hangs off one ``Metrics`` object with its own CollectorRegistry
(never the process-global one), so each test and each proxy instance starts
from zero. Names, help strings, buckets and labels follow kube-proxy's
``pkg/proxy/metrics`` so existing dashboards and alerts keep working.

``ip_family`` ("IPv4", "IPv6"; kube-proxy 1.33+) is on every sync metric kube-proxy labels
with it. kube-proxy runs one proxier per family, each syncing and observing on its own;
here one sync serves every family, so a sync is observed once under each family it served,
a network programming latency under its EndpointSlice's family, and an iptables-restore
failure under the family whose restore failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

# From the modules, not the package: its __init__ imports the exposition code as well
# (see lean_import), which the first scrape loads (http/metrics_server.py).
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics import Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from ipvsproxy import __version__
from ipvsproxy.core.model import Family, ServiceKey, Stats, VirtualServerKey


def _linear(start: float, width: float, count: int) -> list[float]:
    return [start + i * width for i in range(count)]


# kube-proxy: ExponentialBuckets(0.001, 2, 15), 1 ms to about 16 s.
SYNC_BUCKETS = tuple(0.001 * 2**i for i in range(15))
# kube-proxy: 0 (its merge() starts from a zero), 0.25 s, 0.5 s, 1..59 s,
# 60..115 s by 5 s, 120..300 s by 30 s.
NETWORK_PROGRAMMING_BUCKETS = (
    0.0,
    *_linear(0.25, 0.25, 2),
    *_linear(1, 1, 59),
    *_linear(60, 5, 12),
    *_linear(120, 30, 7),
)

# Keys of the per-service statistics snapshot: which service a virtual server serves.
StatsSnapshot = Mapping[tuple[ServiceKey, VirtualServerKey], Stats]


# Stats fields and what each counts: one counter family each, named after the field.
_SERVICE_COUNTERS = (
    ("connections", "Connections scheduled by the IPVS virtual server"),
    ("packets_in", "Packets received by the virtual server"),
    ("packets_out", "Packets sent by the virtual server"),
    ("bytes_in", "Bytes received by the virtual server"),
    ("bytes_out", "Bytes sent by the virtual server"),
)


class ServiceStatsCollector(Collector):
    """Per-virtual-server IPVS counters, labelled with the Service they belong to.

    The reconciler calls ``update`` with a fresh snapshot after it reads the
    kernel's statistics, at a full resync, and only if someone scraped since the last
    snapshot (``wanted``): reading every virtual server's counters costs as much as the
    rest of an idle resync. A scrape renders whatever was last given. The counters
    are the kernel's cumulative ones, so they restart from zero when a virtual
    server is re-created (Prometheus' rate() handles a reset).
    """

    # fwmark: empty for an address virtual server (address and port say which); the mark,
    # in hex, for a firewall-mark one (#115931: in-cluster traffic to an ETP Local LB IP).
    _LABELS = ("namespace", "service", "protocol", "address", "port", "fwmark")

    def __init__(self) -> None:
        self._snapshot: StatsSnapshot = {}
        self._taken = False  # a snapshot was given
        self._scraped = False  # collected since the last snapshot

    def update(self, snapshot: StatsSnapshot) -> None:
        self._snapshot = dict(snapshot)
        self._taken, self._scraped = True, False

    def wanted(self) -> bool:
        """Whether a new snapshot would be read by anyone: the first one, then one after
        each scrape."""
        return self._scraped or not self._taken

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        self._scraped = True
        return self._families(self._snapshot)

    def _families(self, snapshot: StatsSnapshot | None = None) -> Iterator[Metric]:
        fams = {
            field: CounterMetricFamily(
                f"ipvsproxy_service_{field}", description, labels=self._LABELS
            )
            for field, description in _SERVICE_COUNTERS
        }
        for (svc, vs), stats in sorted((snapshot or {}).items()):
            mark = f"{vs.fwmark:#x}" if vs.fwmark else ""
            labels = [svc.namespace, svc.name, vs.protocol.value, vs.address, str(vs.port), mark]
            for field, family in fams.items():
                family.add_metric(labels, float(getattr(stats, field)))
        yield from fams.values()


class Metrics:
    """Every metric the proxy exports, on a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # kube-proxy exports no *_created series; leave them out for the same
        # scrape output (a process-wide switch in prometheus_client).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # --- kube-proxy's (pkg/proxy/metrics/metrics.go)
        self.sync_duration = Histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            ["ip_family"],
            buckets=SYNC_BUCKETS,
            registry=r,
        )
        self.sync_last_timestamp = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            ["ip_family"],
            registry=r,
        )
        self.sync_last_queued_timestamp = Gauge(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            ["ip_family"],
            registry=r,
        )
        self.network_programming_duration = Histogram(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            ["ip_family"],
            buckets=NETWORK_PROGRAMMING_BUCKETS,
            registry=r,
        )
        self.endpoint_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            registry=r,
        )
        self.endpoint_changes_total = Counter(
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
            registry=r,
        )
        self.service_changes_pending = Gauge(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            registry=r,
        )
        self.service_changes_total = Counter(
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
            registry=r,
        )
        # A gauge despite the name, as in kube-proxy: services whose traffic
        # policy is Local and that have no local endpoint, by "internal"/"external".
        self.no_local_endpoints = Gauge(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            ["ip_family", "traffic_policy"],
            registry=r,
        )
        self.iptables_restore_failures_total = Counter(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
            ["ip_family"],
            registry=r,
        )
        self.healthz_total = Counter(
            "kubeproxy_proxy_healthz_total",
            "Cumulative proxy healthz HTTP status",
            ["code"],
            registry=r,
        )
        self.livez_total = Counter(
            "kubeproxy_proxy_livez_total",
            "Cumulative proxy livez HTTP status",
            ["code"],
            registry=r,
        )
        # --- ours
        self.virtual_servers = Gauge(
            "ipvsproxy_virtual_servers", "IPVS virtual servers programmed by the proxy", registry=r
        )
        self.real_servers = Gauge(
            "ipvsproxy_real_servers", "IPVS real servers programmed by the proxy", registry=r
        )
        self.sync_failures_total = Counter(
            "ipvsproxy_sync_failures_total",
            "Failed kernel operations during syncs, by subsystem",
            ["subsystem"],
            registry=r,
        )
        self.sync_failing = Gauge(
            "ipvsproxy_sync_failing",
            "1 while syncs keep failing (the kernel is not being programmed), else 0",
            registry=r,
        )
        self.build_info = Gauge(
            "ipvsproxy_build_info",
            "Always 1; the version label is the running proxy's version",
            ["version"],
            registry=r,
        )
        self.build_info.labels(__version__).set(1)
        self.service_stats = ServiceStatsCollector()
        r.register(self.service_stats)
        # --- the process: process_* (memory, CPU, file descriptors, start time), python_info
        # and python_gc_*, as prometheus_client's default registry has them.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    # Small helpers so the reconciler states facts, not metric arithmetic.

    def sync_succeeded(self, duration: float, now: float, families: Iterable[Family]) -> None:
        """A sync finished without error: its duration, and when (wall clock, seconds)."""
        for family in families:
            self.sync_duration.labels(family.k8s_name).observe(duration)
            self.sync_last_timestamp.labels(family.k8s_name).set(now)
            # Exported at zero from the first sync on, before any EndpointSlice change is
            # observed: rate() needs the series before its first increase.
            self.network_programming_duration.labels(family.k8s_name)

    def sync_queued(self, now: float, families: Iterable[Family]) -> None:
        for family in families:
            self.sync_last_queued_timestamp.labels(family.k8s_name).set(now)

    def programmed(self, trigger_times: Iterable[tuple[Family, float]], now: float) -> None:
        """Observe network programming latency for each EndpointSlice trigger time.

        Trigger times come from the ``endpoints.kubernetes.io/last-change-trigger-time``
        annotation, with the slice's family; a time in the future (clock skew) is skipped,
        not recorded as 0.
        """
        for family, t in trigger_times:
            if t <= now:
                self.network_programming_duration.labels(family.k8s_name).observe(now - t)

    def set_pending(self, services: int, endpoints: int) -> None:
        self.service_changes_pending.set(services)
        self.endpoint_changes_pending.set(endpoints)

    def set_no_local_endpoints(self, counts: Mapping[Family, tuple[int, int]]) -> None:
        """Per family: (internal, external) Services with a Local policy and no endpoint."""
        for family, (internal, external) in counts.items():
            self.no_local_endpoints.labels(family.k8s_name, "internal").set(internal)
            self.no_local_endpoints.labels(family.k8s_name, "external").set(external)

    def set_table_size(self, virtual_servers: int, real_servers: int) -> None:
        self.virtual_servers.set(virtual_servers)
        self.real_servers.set(real_servers)

    def sync_failed(self, subsystem: str, families: Iterable[Family] = ()) -> None:
        """One failed operation in ``subsystem`` (ipvs, ipset, iptables, address, ...);
        ``families``: those an iptables-restore failed for."""
        self.sync_failures_total.labels(subsystem).inc()
        for family in families:
            self.iptables_restore_failures_total.labels(family.k8s_name).inc()
