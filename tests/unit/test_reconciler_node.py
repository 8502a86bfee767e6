"""The reconciler follows its Node: --nodeport-addresses=primary, --detect-local-mode=NodeCIDR
and the health-check node ports' addresses, re-evaluated without a restart."""

from __future__ import annotations

from ipvsproxy.core.model import Family, IpProtocol, VirtualServerKey
from tests.support.builders import NODE_V4, node, port, service
from tests.unit.test_reconciler import World, slice_for

OTHER = "10.0.0.5"  # another address of the node


def node_port_service(world: World) -> None:
    svc = service("web", type="NodePort", ports=[port(80, node_port=30080, target=8080)])
    world.cache.service_store.upsert(svc)
    world.cache.slice_store.upsert(slice_for("web", ["10.244.1.2"]))


async def node_ports(world: World) -> set[str]:
    table = await world.ipvs.dump()
    return {key.address for key in table.virtual_servers if key.port == 30080}


async def test_primary_node_ports_follow_the_nodes_primary_ip() -> None:
    world = World(nodeport_addresses=("primary",))
    world.addresses.add_node_address(OTHER)
    node_port_service(world)
    world.cache.node_store.upsert(node(addresses=[("InternalIP", NODE_V4)]))
    assert await world.reconciler.sync_once() is not None
    assert await node_ports(world) == {NODE_V4}
    assert world.reconciler.health_check_hosts == (NODE_V4,)
    # The Node's IP changes: the NodePort moves with it, at the next (partial) sync.
    world.cache.node_store.upsert(node(addresses=[("InternalIP", OTHER)]))
    result = await world.reconciler.sync_once()
    assert result is not None
    assert not result.full
    assert await node_ports(world) == {OTHER}
    assert world.reconciler.health_check_hosts == (OTHER,)


async def test_primary_without_a_known_ip_means_every_address_as_kube_proxy() -> None:
    world = World(nodeport_addresses=("primary",))
    world.addresses.add_node_address(OTHER)
    node_port_service(world)
    await world.reconciler.sync_once()
    assert await node_ports(world) == {NODE_V4, OTHER}
    assert world.reconciler.health_check_hosts == ()


async def test_bind_address_names_the_primary_ip() -> None:
    world = World(nodeport_addresses=("primary",), bind_address=OTHER)
    world.addresses.add_node_address(OTHER)
    node_port_service(world)
    world.cache.node_store.upsert(node(addresses=[("InternalIP", NODE_V4)]))
    await world.reconciler.sync_once()
    assert await node_ports(world) == {OTHER}


async def test_node_cidr_rules_follow_the_nodes_pod_cidrs() -> None:
    world = World(detect_local_mode="NodeCIDR", cluster_cidrs=("10.244.0.0/16",))
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    world.cache.node_store.upsert(node())  # no pod CIDRs yet
    await world.reconciler.sync_once()
    nat = await world.iptables.save(Family.V4, "nat")
    assert "KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ" in nat  # nothing detected yet
    pod_cidrs = ["10.244.3.0/24", "fd00:10:244:3::/64"]
    world.cache.node_store.upsert(node(pod_cidrs=pod_cidrs))
    result = await world.reconciler.sync_once()
    assert result is not None
    assert not result.full
    nat = await world.iptables.save(Family.V4, "nat")
    assert "KUBE-CLUSTER-IP dst,dst ! -s 10.244.3.0/24 -j KUBE-MARK-MASQ" in nat
    mangle = await world.iptables.save(Family.V4, "mangle")
    assert "-A KUBE-IN-CLUSTER-FWMARK -s 10.244.3.0/24 " in mangle
    # Another Node change that leaves the pod CIDRs alone rewrites no rule.
    restores = world.iptables.restores  # type: ignore[attr-defined]
    world.cache.node_store.upsert(node(pod_cidrs=pod_cidrs, labels={"a": "b"}))
    await world.reconciler.sync_once()
    assert world.iptables.restores == restores  # type: ignore[attr-defined]


async def test_interface_detectors_reach_the_rules() -> None:
    world = World(detect_local_mode="InterfaceNamePrefix", pod_interface_name_prefix="cali")
    world.add_service("web", "10.96.0.10", ["10.244.1.2"])
    await world.reconciler.sync_once()
    nat = await world.iptables.save(Family.V4, "nat")
    assert "KUBE-CLUSTER-IP dst,dst ! -i cali+ -j KUBE-MARK-MASQ" in nat
    assert world.reconciler.plan_config.pod_traffic_families == frozenset(Family)
    assert (
        VirtualServerKey("10.96.0.10", 80, IpProtocol.TCP)
        in (await world.ipvs.dump()).virtual_servers
    )
