"""The reconciler on the contract-tested fakes: incremental syncs, adoption, draining, drift."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ipvsproxy.core import fwmark
from ipvsproxy.core.ipset_catalog import IpsetSpec
from ipvsproxy.core.model import (
    Family,
    IpProtocol,
    RealServer,
    RealServerKey,
    ServiceKey,
    VirtualServer,
    VirtualServerKey,
    fwmark_key,
)
from ipvsproxy.core.ops import (
    AddRealServer,
    AddVirtualServer,
    DeleteVirtualServer,
    UpdateRealServer,
)
from ipvsproxy.dataplane.errors import KernelModuleError
from ipvsproxy.dataplane.fake_ipvs import FakeIpvs
from ipvsproxy.dataplane.ipset_specs import SetOptions
from ipvsproxy.kube.cache import ClusterCache
from ipvsproxy.reconciler import Reconciler, Settings
from tests.support.builders import NODE_V4, endpoint, endpoint_slice, port, service
from tests.support.clock import FakeClock
from tests.support.fake_dataplane import fake_dataplane
from tests.support.kube_proxy_state import default_values, fixture
from tests.support.strategies import colliding_ips


def slice_for(name: str, ips: list[str], target: int = 8080, proto: str = "TCP") -> dict[str, Any]:
    return endpoint_slice([endpoint(ip) for ip in ips], [("", target, proto)], service=name)


class World:
    """A cluster cache, the fakes, and a reconciler wired together as in the proxy."""

    def __init__(
        self,
        ipvs: FakeIpvs | None = None,
        clock: Callable[[], float] | None = None,
        **settings: Any,
    ) -> None:
        self.dataplane = fake_dataplane(ipvs=ipvs)
        self.ipvs = self.dataplane.ipvs
        self.addresses = self.dataplane.addresses
        self.ipsets = self.dataplane.ipsets
        self.iptables = self.dataplane.iptables
        self.conntrack = self.dataplane.conntrack
        defaults: dict[str, Any] = {"node_name": "node-a"}
        self.reconciler = Reconciler(
            ClusterCache(),
            self.dataplane,
            Settings(**(defaults | settings)),
            clock=clock or time.monotonic,
        )
        self.cache = ClusterCache(listener=self.reconciler)
        self.reconciler.cluster = self.cache

    def add_service(self, name: str, ip: str, ips: list[str], proto: str = "TCP") -> None:
        svc = service(name, cluster_ips=(ip,), ports=[port(80, protocol=proto)])
        svc["spec"]["ports"][0]["targetPort"] = 8080
        self.cache.service_store.upsert(svc)
        self.cache.slice_store.upsert(slice_for(name, ips, proto=proto))

    def set_endpoints(self, name: str, ips: list[str], proto: str = "TCP") -> None:
        self.cache.slice_store.upsert(slice_for(name, ips, proto=proto))

    async def table(self) -> dict[VirtualServerKey, set[tuple[str, int]]]:
        dump = await self.ipvs.dump()
        return {
            key: {(s.server.key.address, s.server.weight) for s in dump.real_servers[key]}
            for key in dump.virtual_servers
        }


def vs(ip: str, proto: IpProtocol = IpProtocol.TCP) -> VirtualServerKey:
    return VirtualServerKey(ip, 80, proto)


async def test_first_sync_programs_services_and_binds_their_addresses() -> None:
    world = World()
    world.add_service("web", "10.96.0.10", ["10.244.1.2", "10.244.2.2"])
    result = await world.reconciler.sync_once()
    assert result is not None
    assert result.full
    assert await world.table() == {vs("10.96.0.10"): {("10.244.1.2", 1), ("10.244.2.2", 1)}}
    assert await world.addresses.bound() == {"10.96.0.10"}
    assert await world.ipsets.entries("KUBE-CLUSTER-IP") == {"10.96.0.10,tcp:80"}
    assert "KUBE-SERVICES" in await world.iptables.save(Family.V4, "nat")


async def test_the_masquerade_mark_follows_the_masquerade_bit() -> None:
    # --iptables-masquerade-bit reaches the rules through Settings (kube-proxy: 14 = 0x4000).
    world = World(masquerade_bit=16)
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    await world.reconciler.sync_once()
    nat = await world.iptables.save(Family.V4, "nat")
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x10000" in nat
    assert "0x4000" not in nat


async def test_a_change_touches_only_its_own_services_kernel_objects() -> None:
    world = World()
    for i in range(50):
        world.add_service(f"svc{i}", f"10.96.0.{i + 1}", [f"10.244.{i}.2"])
    await world.reconciler.sync_once()
    world.ipvs.applied.clear()

    world.set_endpoints("svc7", ["10.244.7.2", "10.244.7.3"])
    result = await world.reconciler.sync_once()
    assert result is not None
    assert not result.full
    assert result.services == 1
    assert world.ipvs.applied == [
        AddRealServer(vs("10.96.0.8"), RealServer(RealServerKey("10.244.7.3", 8080)))
    ]


async def test_graceful_termination_drains_tcp_then_deletes() -> None:
    world = World(drain_period=0.0)
    world.add_service("web", "10.96.0.10", ["10.244.1.2", "10.244.2.2"])
    await world.reconciler.sync_once()
    world.ipvs.set_connections(vs("10.96.0.10"), RealServerKey("10.244.2.2", 8080), 1)

    world.set_endpoints("web", ["10.244.1.2"])
    await world.reconciler.sync_once()
    assert await world.table() == {vs("10.96.0.10"): {("10.244.1.2", 1), ("10.244.2.2", 0)}}

    # Still connected: the drain check keeps it at weight 0.
    await world.reconciler.sync_once()
    assert ("10.244.2.2", 0) in (await world.table())[vs("10.96.0.10")]

    world.ipvs.set_connections(vs("10.96.0.10"), RealServerKey("10.244.2.2", 8080), 0)
    await world.reconciler.sync_once()
    assert await world.table() == {vs("10.96.0.10"): {("10.244.1.2", 1)}}


async def test_udp_real_servers_go_at_once_and_their_conntrack_entries_too() -> None:
    world = World()
    world.add_service("dns", "10.96.0.53", ["10.244.1.2", "10.244.2.2"], proto="UDP")
    await world.reconciler.sync_once()
    key = vs("10.96.0.53", IpProtocol.UDP)
    world.ipvs.set_connections(key, RealServerKey("10.244.2.2", 8080), 3)
    world.conntrack.add_udp_entry("10.0.0.1", 4000, "10.96.0.53", 80, "10.244.2.2", 8080)
    world.conntrack.add_udp_entry("10.0.0.1", 4001, "10.96.0.53", 80, "10.244.1.2", 8080)

    world.set_endpoints("dns", ["10.244.1.2"], proto="UDP")
    await world.reconciler.sync_once()
    assert await world.table() == {key: {("10.244.1.2", 1)}}
    gone, kept = RealServerKey("10.244.2.2", 8080), RealServerKey("10.244.1.2", 8080)
    assert await world.conntrack.delete_udp_to_real_server("10.96.0.53", 80, gone) == 0
    assert await world.conntrack.delete_udp_to_real_server("10.96.0.53", 80, kept) == 1


async def test_start_up_adopts_the_kernel_and_restores_weights_left_at_zero() -> None:
    """A restart mid-termination left a desired real server at weight 0 (upstream #92019)."""
    ipvs = FakeIpvs()
    key = vs("10.96.0.10")
    await ipvs.apply(
        [
            AddVirtualServer(VirtualServer(key)),
            AddRealServer(key, RealServer(RealServerKey("10.244.1.2", 8080), weight=0)),
        ]
    )
    ipvs.set_connections(key, RealServerKey("10.244.1.2", 8080), 5)
    world = World(ipvs)
    await world.addresses.ensure_dummy()
    await world.addresses.bind(["10.96.0.10"])
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    await world.reconciler.sync_once()
    assert world.ipvs.applied[-1] == UpdateRealServer(
        key, RealServer(RealServerKey("10.244.1.2", 8080), weight=1)
    )
    # Adopted, not re-created: the connections it carried are still counted.
    (status,) = await world.ipvs.list_real_servers(key)
    assert status.active_connections == 5


async def test_full_resync_heals_drift_and_spares_what_is_not_ours() -> None:
    world = World()
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    await world.reconciler.sync_once()
    operator = VirtualServerKey(NODE_V4, 8443, IpProtocol.TCP)
    await world.ipvs.apply(
        [AddVirtualServer(VirtualServer(operator)), DeleteVirtualServer(vs("10.96.0.10"))]
    )
    world.reconciler._full_due = True
    await world.reconciler.sync_once()
    table = await world.table()
    assert table[vs("10.96.0.10")] == {("10.244.1.2", 1)}
    assert operator in table


async def resync(world: World) -> None:
    world.reconciler._full_due = True
    assert await world.reconciler.sync_once() is not None


async def test_an_idle_resync_trusts_an_unchanged_kernel_and_reads_a_changed_one() -> None:
    """The periodic full sync reads the kernel (dump, addresses, sets) and saves the rules
    only when a fingerprint moved or the proxy changed the kernel since it last matched."""
    world = World()
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    await world.reconciler.sync_once()  # the first sync: programs, so nothing is verified yet
    await resync(world)  # reads, finds nothing to do: verified
    reads, restores = world.reconciler.full_reads, world.iptables.restores
    await resync(world)
    await resync(world)
    assert (world.reconciler.full_reads, world.iptables.restores) == (reads, restores)
    # Traffic counts are not a change.
    world.ipvs.set_connections(vs("10.96.0.10"), RealServerKey("10.244.1.2", 8080), 3)
    await resync(world)
    assert world.reconciler.full_reads == reads
    # A change of the proxy's own: the next resync reads again, then trusts again.
    world.set_endpoints("web", ["10.244.1.3"])
    await world.reconciler.sync_once()
    await resync(world)
    assert world.reconciler.full_reads == reads + 1
    await resync(world)
    assert world.reconciler.full_reads == reads + 1
    # Drift in each subsystem is read and healed by the next resync.
    drifts: list[Callable[[], Awaitable[None]]] = [
        lambda: world.ipvs.apply([DeleteVirtualServer(vs("10.96.0.10"))]),
        lambda: world.addresses.unbind(["10.96.0.10"]),
        lambda: world.ipsets.update({"KUBE-CLUSTER-IP": (set(), {"10.96.0.10,tcp:80"})}),
    ]
    for drift in drifts:
        await drift()
        before = world.reconciler.full_reads
        await resync(world)
        assert world.reconciler.full_reads == before + 1
        assert (await world.table())[vs("10.96.0.10")] == {("10.244.1.3", 1)}
        assert await world.addresses.bound() == {"10.96.0.10"}
        assert await world.ipsets.entries("KUBE-CLUSTER-IP") == {"10.96.0.10,tcp:80"}
    # The rules: a flushed chain is rewritten, untouched ones are not.
    restores = world.iptables.restores
    await world.iptables.restore(Family.V4, "*nat\n-F KUBE-SERVICES\nCOMMIT\n")
    await resync(world)
    assert world.iptables.restores == restores + 2  # the flush, then the proxy's rewrite
    assert "KUBE-SERVICES -m set" in await world.iptables.save(Family.V4, "nat")
    await resync(world)
    assert world.iptables.restores == restores + 2


async def test_a_deleted_service_leaves_the_kernel() -> None:
    world = World()
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    await world.reconciler.sync_once()
    svc = world.cache.services[ServiceKey("default", "web")]
    world.cache.service_store.delete(svc)
    await world.reconciler.sync_once()
    assert await world.table() == {}
    assert await world.addresses.bound() == set()
    assert await world.ipsets.entries("KUBE-CLUSTER-IP") == set()


async def test_a_failed_sync_makes_the_next_one_full() -> None:
    world = World()
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    await world.reconciler.sync_once()
    world.ipvs.available_schedulers.discard("lc")
    svc = world.cache.services[ServiceKey("default", "web")]
    broken = {
        **svc,
        "metadata": {**svc["metadata"], "annotations": {"ipvsproxy.io/scheduler": "lc"}},
    }
    world.cache.service_store.upsert(broken)
    assert await world.reconciler.sync_once() is None
    world.ipvs.available_schedulers.add("lc")
    world.reconciler._last_sync_start = -1e9
    result = await world.reconciler.sync_once()
    assert result is not None
    assert result.full
    (server,) = (await world.ipvs.dump()).virtual_servers.values()
    assert server.scheduler == "lc"


@pytest.mark.overrides_default("min_sync_period", reason="pacing coalesces bursts: its subject")
async def test_bursts_coalesce_and_nothing_happens_before_the_watches_synced() -> None:
    world = World(min_sync_period=0.2)
    synced = asyncio.Event()
    task = asyncio.create_task(world.reconciler.run(synced.wait))
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    await asyncio.sleep(0.05)
    assert world.reconciler.syncs == 0
    assert await world.table() == {}
    synced.set()
    await asyncio.sleep(0.05)
    for i in range(30):
        world.set_endpoints("web", ["10.244.1.2", f"10.244.9.{i + 1}"])
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 2 <= world.reconciler.syncs <= 4
    assert await world.table() == {vs("10.96.0.10"): {("10.244.1.2", 1), ("10.244.9.30", 1)}}


async def test_a_kernel_error_outside_the_ops_is_retried_not_fatal() -> None:
    world = World()
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])

    async def broken() -> None:
        raise KernelModuleError("dummy")

    world.addresses.ensure_dummy = broken  # type: ignore[method-assign]
    assert await world.reconciler.sync_once() is None
    del world.addresses.ensure_dummy  # the instance attribute; the class method is back
    world.reconciler._last_sync_start = -1e9
    result = await world.reconciler.sync_once()
    assert result is not None
    assert await world.addresses.bound() == {"10.96.0.10"}


def _etp_local_lb(name: str, lb_ip: str, cluster_ip: str) -> dict[str, Any]:
    svc = service(
        name,
        type="LoadBalancer",
        cluster_ips=(cluster_ip,),
        ports=[port(80, "", "TCP", 30000 + int(cluster_ip.rsplit(".", 1)[1]))],
        lb_ingress=[{"ip": lb_ip}],
        externalTrafficPolicy="Local",
    )
    svc["spec"]["ports"][0]["targetPort"] = 8080
    return svc


async def test_a_shared_firewall_mark_serves_one_service_then_passes_on() -> None:
    """#115931's marks are hashes: when two Services' LB IPs get one mark, in-cluster
    traffic of the second stays local (and it is told why) until the first goes."""
    first, second = colliding_ips(80)
    mark = fwmark.mark_for(first, IpProtocol.TCP, 80)
    world = World()
    world.cache.service_store.upsert(_etp_local_lb("a", first, "10.96.0.1"))
    world.cache.slice_store.upsert(slice_for("a", ["10.244.1.2"]))
    world.cache.service_store.upsert(_etp_local_lb("b", second, "10.96.0.2"))
    world.cache.slice_store.upsert(slice_for("b", ["10.244.2.2"]))
    result = await world.reconciler.sync_once()
    assert result is not None
    marked = fwmark_key(Family.V4, mark, IpProtocol.TCP)
    assert (await world.table())[marked] == {("10.244.1.2", 1)}
    entries = {f"{first},tcp:80 skbmark {fwmark.stamp(mark):#x}/0x3fff"}
    assert await world.ipsets.entries("KUBE-EXTERNAL-LOCAL-FWMARK") == entries
    plan_b = result.plans[ServiceKey("default", "b")]
    assert plan_b is not None
    assert any(f"firewall mark {mark:#x}" in problem for problem in plan_b.problems)

    world.cache.service_store.delete(world.cache.services[ServiceKey("default", "a")])
    result = await world.reconciler.sync_once()
    assert result is not None
    assert not result.full
    assert (await world.table())[marked] == {("10.244.2.2", 1)}
    entries = {f"{second},tcp:80 skbmark {fwmark.stamp(mark):#x}/0x3fff"}
    assert await world.ipsets.entries("KUBE-EXTERNAL-LOCAL-FWMARK") == entries


async def test_a_set_that_cannot_be_made_right_stops_no_virtual_server() -> None:
    """A KUBE-* set of another type (someone else's) fails the sync loudly, but every
    Service is still programmed in IPVS; the rules wait until everything succeeded."""
    world = World()
    world.ipsets.create_existing(
        IpsetSpec("KUBE-CLUSTER-IP", "hash:ip", Family.V4, ""), SetOptions(maxelem=65536)
    )
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    assert await world.reconciler.sync_once() is None
    assert await world.table() == {vs("10.96.0.10"): {("10.244.1.2", 1)}}
    assert await world.addresses.bound() == {"10.96.0.10"}
    assert world.iptables.restores == 0


async def test_taking_over_replaces_other_modes_only_once_ours_is_in_place() -> None:
    """From kube-proxy's iptables and nftables modes: IPVS first, then one iptables
    restore per family that writes ours and removes theirs, then their nftables tables."""
    world = World()
    values = default_values(("10.244.1.2", "10.244.2.2", "10.244.3.2"))
    await world.iptables.restore(Family.V4, fixture("iptables-mode-1.33.save", **values))
    world.dataplane.nftables.add_table("ip", "kube-proxy")
    world.dataplane.nftables.add_table("inet", "operator")
    order: list[str] = []

    def recorded(name: str, method: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            order.append(name)
            return await method(*args, **kwargs)

        return call

    world.ipvs.apply = recorded("ipvs", world.ipvs.apply)  # type: ignore[method-assign]
    world.iptables.restore = recorded("iptables", world.iptables.restore)  # type: ignore[method-assign]
    nft = world.dataplane.nftables
    nft.delete_tables = recorded("nftables", nft.delete_tables)  # type: ignore[method-assign]
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    assert await world.reconciler.sync_once() is not None
    # IPVS twice: virtual servers, then (once their VIPs are bound) real servers. A V4-only
    # node: one restore.
    assert order == ["ipvs", "ipvs", "iptables", "nftables"]
    nat = await world.iptables.save(Family.V4, "nat")
    assert "KUBE-SVC-" not in nat
    assert "KUBE-SEP-" not in nat
    assert "has no endpoints" not in await world.iptables.save(Family.V4, "filter")
    assert await nft.tables() == {("inet", "operator")}


async def test_a_storm_is_programmed_in_bounded_batches_as_it_comes() -> None:
    """Settings.max_batch bounds an incremental sync; the rest stays dirty for the next."""
    world = World(max_batch=100)
    await world.reconciler.sync_once()  # the first, full sync of an empty cluster
    for i in range(250):
        world.add_service(f"s{i}", f"10.96.1.{i + 1}", [f"10.244.1.{i + 1}"])
    sizes = []
    while world.reconciler._dirty:
        result = await world.reconciler.sync_once()
        assert result is not None
        assert not result.full
        sizes.append(result.services)
        if len(sizes) == 1:  # oldest first: the first 100 Services made, no later one
            assert set(await world.table()) == {vs(f"10.96.1.{i + 1}") for i in range(100)}
            world.add_service("s0", "10.96.1.1", ["10.244.9.9"])  # changed: after the rest
        if len(sizes) == 2:
            assert (await world.table())[vs("10.96.1.1")] == {("10.244.1.1", 1)}
    assert sizes == [100, 100, 51]
    assert (await world.table())[vs("10.96.1.1")] == {("10.244.9.9", 1)}
    assert len(await world.table()) == 250


@pytest.mark.overrides_default("min_sync_period", reason="the pacer with and without a period")
async def test_a_lone_change_and_back_to_back_changes_are_synced_at_once() -> None:
    """Shipped default (min_sync_period 0): the loop never waits; with a period, a burst of
    two goes at once, as kube-proxy's runner."""
    for period, expected_waits in ((0.0, 0), (0.5, 1)):
        world = World(min_sync_period=period)
        synced = asyncio.Event()
        synced.set()
        task = asyncio.create_task(world.reconciler.run(synced.wait))
        world.add_service("web", "10.96.0.10", ["10.244.1.2"])
        await asyncio.sleep(0.05)  # the first (full) sync
        started = asyncio.get_running_loop().time()
        for i in range(3):
            world.set_endpoints("web", [f"10.244.9.{i + 1}"])
            await _programmed(world, vs("10.96.0.10"), f"10.244.9.{i + 1}")
        took = asyncio.get_running_loop().time() - started
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Waits of the pacer: none at 0; at 0.5 s the third change waits for a token.
        assert (took > 0.3) == bool(expected_waits), (period, took)


async def _programmed(world: World, key: VirtualServerKey, address: str) -> None:
    for _ in range(5000):
        if (address, 1) in (await world.table()).get(key, ()):
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{address} not programmed")


async def test_a_resync_due_under_a_storm_waits_for_the_queued_changes() -> None:
    """The periodic resync runs after the queued Services are programmed, batch by batch,
    or one period late at the most."""
    clock = FakeClock()
    world = World(max_batch=100, clock=clock)
    period = world.reconciler.settings.sync_period
    await world.reconciler.sync_once()  # the first, full sync of an empty cluster
    for i in range(250):
        world.add_service(f"s{i}", f"10.96.1.{i + 1}", [f"10.244.1.{i + 1}"])
    clock.now += period + 1  # the resync is due
    kinds = []
    for _ in range(4):
        result = await world.reconciler.sync_once()
        assert result is not None
        kinds.append((result.full, result.services))
    assert kinds == [(False, 100), (False, 100), (False, 50), (True, 0)]

    for i in range(250, 500):
        world.add_service(f"s{i}", f"10.96.2.{i - 249}", [f"10.244.2.{i - 249}"])
    clock.now += 2 * period + 1  # a period late: it waits no longer
    result = await world.reconciler.sync_once()
    assert result is not None
    assert (result.full, result.services) == (True, 250)
