"""The running proxy: kernel checks, HTTP servers, watchers and the reconciler, wired together.

``run`` and ``cleanup`` are the CLI's entry points. Stopping (SIGTERM, SIGINT)
leaves the dataplane in place, so traffic keeps flowing while the proxy is
restarted; only ``--cleanup`` removes what the proxy owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

import structlog

from ipvsproxy import __version__
from ipvsproxy.config import Config
from ipvsproxy.config.configz import configz_document
from ipvsproxy.core import ipset_catalog
from ipvsproxy.core.model import Family
from ipvsproxy.core.ops import DeleteVirtualServer
from ipvsproxy.dataplane.addresses import NetlinkAddresses
from ipvsproxy.dataplane.conntrack import NetlinkConntrack
from ipvsproxy.dataplane.errors import DataplaneError
from ipvsproxy.dataplane.executor import Dataplane, read_owned
from ipvsproxy.dataplane.ipsets import IpsetCli
from ipvsproxy.dataplane.iptables import IptablesCli, detect_backend
from ipvsproxy.dataplane.ipvs import NetlinkIpvs
from ipvsproxy.dataplane.nftables import KUBE_PROXY_TABLES, NetlinkNftables
from ipvsproxy.dataplane.sysctl import ProcSysctls
from ipvsproxy.http.health import ProxyHealth, health_routes
from ipvsproxy.http.metrics_server import metrics_routes
from ipvsproxy.http.serve import Listener
from ipvsproxy.http.service_health import ServiceHealthServers
from ipvsproxy.kube.cache import ClusterCache
from ipvsproxy.kube.client import ConfigException, EventPoster, RateLimit, make_api_client
from ipvsproxy.kube.watcher import ClusterWatcher
from ipvsproxy.metrics import Metrics
from ipvsproxy.node_setup import setup_node
from ipvsproxy.oom import apply_oom_score_adj
from ipvsproxy.reconciler import Reconciler, Settings
from ipvsproxy.sync_reporter import SyncReporter

log = structlog.get_logger("ipvsproxy")


def node_name(config: Config) -> str:
    return (config.hostname_override or socket.gethostname()).strip().lower()


async def open_dataplane() -> Dataplane:
    """The real dataplane of the calling thread's network namespace."""
    return Dataplane(
        ipvs=await NetlinkIpvs.open(),
        addresses=NetlinkAddresses(),
        ipsets=IpsetCli(),
        iptables=IptablesCli(await detect_backend()),
        conntrack=NetlinkConntrack(),
        sysctls=ProcSysctls(),
        nftables=NetlinkNftables(),
    )


def settings_from(config: Config) -> Settings:
    return Settings(
        node_name=node_name(config),
        scheduler=config.ipvs_scheduler,
        min_sync_period=config.ipvs_min_sync_period,
        sync_period=config.ipvs_sync_period,
        nodeport_addresses=config.nodeport_addresses,
        bind_address=config.bind_address,
        cluster_cidrs=config.cluster_cidrs,
        detect_local_mode=config.detect_local_mode,
        pod_bridge_interface=config.detect_local_bridge_interface,
        pod_interface_name_prefix=config.detect_local_interface_name_prefix,
        masquerade_all=config.masquerade_all,
        masquerade_bit=config.masquerade_bit,
        exclude_cidrs=config.ipvs_exclude_cidrs,
    )


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


class ServerFailure(NamedTuple):
    reason: str  # kube-proxy's Event reason
    error: OSError


async def start_servers(
    config: Config, health: ProxyHealth, metrics: Metrics, configz: Callable[[], object]
) -> list[Listener] | ServerFailure:
    """The health and metrics servers, as kube-proxy runs them: one that cannot listen is
    retried every 5 s while the proxy goes on, or with --bind-address-hard-fail ends the
    start. An empty address (--healthz-port=0, --metrics-port=0) means no server."""
    wanted = [
        (config.healthz_bind_address, "healthz-bind-address", "FailedToStartProxierHealthcheck",
         health_routes(health, metrics)),
        (config.metrics_bind_address, "metrics-bind-address", "FailedToStartMetricServer",
         metrics_routes(metrics, configz)),
    ]  # fmt: skip
    started: list[Listener] = []
    for address, setting, reason, routes in wanted:
        if not address:
            continue
        listener = Listener(routes, address, setting)
        error = await listener.start(retry=not config.bind_address_hard_fail)
        if error is not None and config.bind_address_hard_fail:
            log.error("cannot listen", setting=setting, address=address, error=str(error))
            for other in started:
                await other.close()
            return ServerFailure(reason, error)
        started.append(listener)
    return started


async def serve(config: Config) -> int:
    if (failed := apply_oom_score_adj(config.oom_score_adj)) is not None:
        log.warning("cannot set oom_score_adj", value=config.oom_score_adj, error=failed)
    try:
        dataplane = await open_dataplane()
        await setup_node(dataplane, config)
    except DataplaneError as err:
        log.error("cannot program this kernel", error=str(err))
        return 1
    try:
        api = await make_api_client(
            config.kubeconfig,
            master=config.master,
            rate_limit=RateLimit(config.api_qps, config.api_burst),
        )
    except (ConfigException, OSError) as err:
        log.error("cannot reach the cluster's configuration", error=str(err))
        await dataplane.close()
        return 1
    metrics = Metrics()
    health = ProxyHealth(config.health_timeout)
    name = node_name(config)
    events = EventPoster(api, host=name)
    cache = ClusterCache()
    reconciler = Reconciler(cache, dataplane, settings_from(config))
    service_health = ServiceHealthServers(health)
    reconciler.observer = SyncReporter(
        metrics,
        health,
        ipvs=dataplane.ipvs,
        service_health=service_health,
        events=events,
        services=lambda: cache.services,
        plans=lambda: reconciler.index.plans,
        node=lambda: cache.node,
        health_check_hosts=lambda: reconciler.health_check_hosts,
    )
    cache.listener = reconciler

    def configz() -> object:  # the effective configuration: "primary" follows the Node
        return configz_document(config, reconciler.nodeport_addresses)

    servers = await start_servers(config, health, metrics, configz)
    if isinstance(servers, ServerFailure):
        # --bind-address-hard-fail: kube-proxy's Event on the Node, then exit.
        node = {"metadata": {"name": name}}
        events.post(node, kind="Node", api_version="v1", reason=servers.reason,
                    message=str(servers.error), once_per_version=False)  # fmt: skip
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await events.flush()
        await api.close()
        await dataplane.close()
        return 1
    watcher = ClusterWatcher(api, name, reconciler, events=events, cache=cache)
    log.info("starting", node=name, scheduler=config.ipvs_scheduler, version=__version__)
    async with stop_signals() as stop:
        watcher.start()
        sync_task = asyncio.create_task(reconciler.run(watcher.wait_synced), name="reconciler")
        stop_task = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait({sync_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        for task in (sync_task, stop_task):
            task.cancel()
        await asyncio.gather(sync_task, stop_task, return_exceptions=True)
    status = 0
    if sync_task in done and not sync_task.cancelled() and sync_task.exception() is not None:
        log.error("reconciler stopped", error=repr(sync_task.exception()))
        status = 1
    # Stop watching and serving; the kernel keeps what was programmed. Events still in
    # flight get a moment, not more: a pod being replaced must stop within a second.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(0.5):
            await watcher.stop()
    await service_health.close()
    for server in servers:
        await server.close()
    await api.close()
    await dataplane.close()
    log.info("stopped; the dataplane stays in place (ipvsproxy --cleanup removes it)")
    return status


async def remove_everything(dataplane: Dataplane, config: Config) -> dict[str, int]:
    """Delete what the proxy owns, and nothing else: its virtual servers, kube-ipvs0, its
    iptables chains (and those kube-proxy's other modes left), then its ipsets (rules that
    use a set must go before the set), and kube-proxy's nftables tables."""
    exclude = [ipaddress.ip_network(c, strict=False) for c in config.ipvs_exclude_cidrs]
    owned = await read_owned(dataplane, exclude)
    await dataplane.ipvs.apply([DeleteVirtualServer(key) for key in owned.virtual_servers])
    await dataplane.addresses.delete_dummy()
    for family in Family:
        with contextlib.suppress(DataplaneError):
            await dataplane.iptables.cleanup(family)
    ours = sorted(n for n in await dataplane.ipsets.list_names() if ipset_catalog.kind_of(n))
    await dataplane.ipsets.destroy(ours)
    await dataplane.nftables.delete_tables(KUBE_PROXY_TABLES)
    return {"virtual_servers": len(owned.virtual_servers), "ipsets": len(ours)}


async def remove_extras(dataplane: Dataplane, config: Config) -> dict[str, int]:
    """Delete what only this proxy makes, and keep everything kube-proxy's IPVS mode shares
    with it, so Service traffic goes on flowing when kube-proxy takes the node back: the
    firewall-mark virtual servers, the mangle chain that stamps in-cluster marks, and the
    sets of those marks (the chain uses them: it goes first)."""
    exclude = [ipaddress.ip_network(c, strict=False) for c in config.ipvs_exclude_cidrs]
    owned = await read_owned(dataplane, exclude)
    marked = [key for key in owned.virtual_servers if key.fwmark]
    await dataplane.ipvs.apply([DeleteVirtualServer(key) for key in marked])
    for family in Family:
        with contextlib.suppress(DataplaneError):
            await dataplane.iptables.cleanup(family, ["mangle"])
    present = await dataplane.ipsets.list_names()
    sets = sorted(n for n in present if ipset_catalog.is_marked_set(n))
    await dataplane.ipsets.destroy(sets)
    return {"virtual_servers": len(marked), "ipsets": len(sets)}


async def _run_on_dataplane(
    action: Callable[[Dataplane, Config], Awaitable[dict[str, int]]],
    config: Config,
    name: str,
    done: str,
) -> int:
    try:
        dataplane = await open_dataplane()
        removed = await action(dataplane, config)
    except DataplaneError as err:
        log.error(f"{name} failed", error=str(err))
        return 1
    await dataplane.close()
    log.info(done, **removed)
    return 0


def run(config: Config) -> int:
    # What was imported lives as long as the proxy: in the collector's permanent
    # generation, no collection walks it again. A start's first full collection (during
    # the lists or the first sync) walked those 45,000 objects: on a host 20-25 ms, and
    # each young collection after it a little more; freezing costs nothing, and leaves
    # only the few garbage cycles the imports made and no collection had found yet (29
    # objects, 6 KB).
    gc.freeze()
    return asyncio.run(serve(config))


def cleanup(config: Config) -> int:
    return asyncio.run(_run_on_dataplane(remove_everything, config, "cleanup", "cleaned up"))


def hand_back(config: Config) -> int:
    return asyncio.run(_run_on_dataplane(remove_extras, config, "hand-back", "handed back"))


def init_only(config: Config) -> int:
    """kube-proxy's --init-only: the privileged node set-up (modules, conntrack, the IPVS
    sysctls), then exit 0, for an init container; the proxy itself then needs only
    NET_ADMIN and NET_RAW, and finds every value already set. Unlike kube-proxy's, it
    needs no API server: nothing it sets depends on the cluster."""
    return asyncio.run(init_node(config))


async def init_node(config: Config) -> int:
    """--init-only in the running event loop; the exit code."""
    try:
        dataplane = await open_dataplane()
        try:
            await setup_node(dataplane, config)
        finally:
            await dataplane.close()
    except DataplaneError as err:
        log.error("node set-up failed", error=str(err))
        return 1
    log.info("node set up (--init-only): exiting")
    return 0
