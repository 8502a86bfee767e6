"""End to end under the real kernel: the proxy's reconciler programs it, pods answer real traffic.

Pods are network namespaces with servers that answer with their name
(tests/support/pods.py); each test runs in a fresh namespace of its own as
the node, so kernel state never leaks between tests.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from ipvsproxy.app import remove_everything
from ipvsproxy.config import Config
from ipvsproxy.core.model import Family, IpProtocol, VirtualServerKey
from ipvsproxy.dataplane.ipsets import run_command
from tests.support.cluster import Cluster, service_object, slice_object
from tests.support.pods import Pod, PodNetwork, tcp_ask, tcp_open, udp_ask

VIP = "10.96.0.10"


@dataclass
class Env:
    cluster: Cluster
    pods: list[Pod]
    client: Pod


@pytest.fixture
async def env(netns: int) -> AsyncIterator[Env]:
    network = PodNetwork()
    pods = [await network.add_pod(f"pod{i}", i) for i in (1, 2)]
    client = await network.add_pod("client", 100)
    for pod in pods:
        await pod.serve_tcp(8080)
        await pod.serve_tcp(8080, socket.AF_INET6)
        await pod.serve_udp(5353)
    cluster = await Cluster.open()
    try:
        yield Env(cluster, pods, client)
    finally:
        await cluster.close()
        network.close()


def web(env: Env, **spec: object) -> None:
    """Service "web": port 80 -> 8080 on both pods."""
    env.cluster.apply(
        service_object("web", VIP, [(80, 8080, "TCP")], **spec),
        slice_object("web", [(p.ip, True) for p in env.pods], [("p80", 8080, "TCP")]),
    )


async def test_round_robin_spreads_evenly_from_a_pod_and_from_the_node(env: Env) -> None:
    web(env)
    await env.cluster.sync()
    answers = [await tcp_ask(VIP, 80, env.client) for _ in range(6)]
    assert Counter(answers) == {"pod1": 3, "pod2": 3}
    assert answers[0] != answers[1]
    from_node = [await tcp_ask(VIP, 80) for _ in range(4)]
    assert Counter(from_node) == {"pod1": 2, "pod2": 2}
    with open("/proc/net/ip_vs") as table:  # noqa: ASYNC230 - procfs, never blocks
        assert "0A60000A:0050 rr" in table.read()


async def test_least_connection_sends_a_new_connection_to_the_idler_pod(env: Env) -> None:
    web(env, annotations={"ipvsproxy.io/scheduler": "lc"})
    await env.cluster.sync()
    held = await tcp_open(VIP, 80, env.client)
    busy = await held.name()
    try:
        for _ in range(3):
            assert await tcp_ask(VIP, 80, env.client) != busy
    finally:
        held.close()


async def test_client_ip_affinity_sticks(env: Env) -> None:
    web(env, sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})
    await env.cluster.sync()
    answers = {await tcp_ask(VIP, 80, env.client) for _ in range(5)}
    assert len(answers) == 1


async def test_a_terminating_pod_keeps_its_connection_but_gets_no_new_one(env: Env) -> None:
    web(env)
    await env.cluster.sync()
    held = await tcp_open(VIP, 80, env.client)
    leaving = await held.name()
    staying = next(p for p in env.pods if p.name != leaving)
    env.cluster.apply(slice_object("web", [(staying.ip, True)], [("p80", 8080, "TCP")]))
    await env.cluster.sync()
    try:
        assert [await tcp_ask(VIP, 80, env.client) for _ in range(4)] == [staying.name] * 4
        assert await held.ask() == leaving  # the old connection still works
    finally:
        held.close()
    # The reset connection stays counted (InActConn) in IPVS's CLOSE state for 10 s;
    # the drain then deletes the server, with no further change to the Service.
    for _ in range(30):
        await env.cluster.sync()
        if len(await env.cluster.dataplane.ipvs.list_real_servers(web_key())) == 1:
            break
        await asyncio.sleep(1)
    (remaining,) = await env.cluster.dataplane.ipvs.list_real_servers(web_key())
    assert remaining.server.key.address == staying.ip


def web_key() -> VirtualServerKey:
    return VirtualServerKey(VIP, 80, IpProtocol.TCP)


async def test_udp_service(env: Env) -> None:
    env.cluster.apply(
        service_object("dns", VIP, [(53, 5353, "UDP")]),
        slice_object("dns", [(p.ip, True) for p in env.pods], [("p53", 5353, "UDP")]),
    )
    await env.cluster.sync()
    answers = [await udp_ask(VIP, 53, env.client) for _ in range(4)]
    assert set(answers) == {"pod1", "pod2"}


async def test_a_deleted_service_stops_answering_and_leaves_kube_ipvs0(env: Env) -> None:
    web(env)
    await env.cluster.sync()
    assert await tcp_ask(VIP, 80, env.client) in {"pod1", "pod2"}
    env.cluster.delete_service("web")
    await env.cluster.sync()
    assert await env.cluster.dataplane.addresses.bound() == set()
    with pytest.raises((OSError, asyncio.TimeoutError)):
        await tcp_ask(VIP, 80, env.client, timeout=1.0)


async def test_node_port_and_external_ip(env: Env) -> None:
    web(env, type="NodePort", nodePorts=[30080], externalIPs=["203.0.113.10"])
    await env.cluster.sync()
    node_ip = env.client.gateway  # the node's address on the client's link
    assert await tcp_ask(node_ip, 30080, env.client) in {"pod1", "pod2"}
    assert await tcp_ask("203.0.113.10", 80, env.client) in {"pod1", "pod2"}


async def test_source_ranges_block_a_client_outside_them(env: Env) -> None:
    lb = "198.51.100.7"
    web(
        env,
        type="LoadBalancer",
        nodePorts=[30081],
        loadBalancerSourceRanges=["10.244.1.0/24"],
        status={"loadBalancer": {"ingress": [{"ip": lb}]}},
    )
    await env.cluster.sync()
    allowed = env.pods[0]
    assert await tcp_ask(lb, 80, allowed) in {"pod1", "pod2"}
    with pytest.raises((OSError, asyncio.TimeoutError)):
        await tcp_ask(lb, 80, env.client, timeout=1.0)


async def test_dual_stack_service_answers_on_both_families(env: Env) -> None:
    vip6 = "fd00:96::10"
    env.cluster.apply(
        service_object(
            "web", VIP, [(80, 8080, "TCP")], clusterIPs=[VIP, vip6], ipFamilies=["IPv4", "IPv6"]
        ),
        slice_object("web", [(p.ip, True) for p in env.pods], [("p80", 8080, "TCP")]),
        slice_object("web", [(p.ip6, True) for p in env.pods], [("p80", 8080, "TCP")], suffix="6"),
    )
    await env.cluster.sync()
    assert await env.cluster.dataplane.addresses.bound() == {VIP, vip6}
    v6 = [await tcp_ask(vip6, 80, env.client) for _ in range(4)]
    v4 = [await tcp_ask(VIP, 80, env.client) for _ in range(4)]
    assert Counter(v6) == {"pod1": 2, "pod2": 2}
    assert Counter(v4) == {"pod1": 2, "pod2": 2}


async def test_a_restarted_proxy_adopts_the_kernel_and_drops_no_connection(env: Env) -> None:
    web(env)
    await env.cluster.sync()
    held = await tcp_open(VIP, 80, env.client)
    serving = await held.name()
    # A new reconciler knows nothing: only the kernel remembers (as after a restart).
    restarted = Cluster(env.cluster.dataplane)
    web(Env(restarted, env.pods, env.client))
    result = await restarted.sync()
    try:
        assert result.full
        assert result.ops == []  # adopted as it is: nothing flushed, nothing re-created
        assert await held.ask() == serving
    finally:
        held.close()


@pytest.mark.parametrize(("ranges", "node_allowed"), [(["10.244.1.2/32"], False),
                                                      (["10.244.100.1/32"], True)])  # fmt: skip
async def test_source_ranges_hold_for_traffic_from_the_node_too(
    env: Env, ranges: list[str], node_allowed: bool
) -> None:
    """Upstream #119656: kube-proxy let the node itself past loadBalancerSourceRanges. The node
    may pass only when a range covers one of its addresses (10.244.100.1 is one)."""
    lb = "198.51.100.7"
    web(
        env,
        type="LoadBalancer",
        nodePorts=[30081],
        loadBalancerSourceRanges=ranges,
        status={"loadBalancer": {"ingress": [{"ip": lb}]}},
    )
    await env.cluster.sync()
    if node_allowed:
        assert await tcp_ask(lb, 80) in {"pod1", "pod2"}
    else:
        with pytest.raises((OSError, asyncio.TimeoutError)):
            await tcp_ask(lb, 80, timeout=1.0)


async def test_external_policy_local_keeps_outside_clients_local_but_not_the_cluster(
    env: Env,
) -> None:
    """Upstream #115931: with externalTrafficPolicy Local, a client outside the cluster
    reaches only this node's endpoint through the LB IP or an external IP, while pods
    (inside --cluster-cidr) and the node itself reach every endpoint."""
    network = PodNetwork()
    inside = await network.add_pod("inside", 3)  # 10.244.3.2: in the cluster CIDR
    outside = env.client  # 10.244.100.2: not in it
    local, remote = env.pods  # pod2 stands for a pod on node-b
    lb, external = "198.51.100.8", "203.0.113.11"
    cluster = Cluster(env.cluster.dataplane, cluster_cidrs=("10.244.0.0/20",))
    cluster.apply(
        service_object(
            "web",
            VIP,
            [(80, 8080, "TCP")],
            type="LoadBalancer",
            nodePorts=[30082],
            externalTrafficPolicy="Local",
            healthCheckNodePort=32082,
            externalIPs=[external],
            status={"loadBalancer": {"ingress": [{"ip": lb}]}},
        ),
        slice_object(
            "web",
            [(local.ip, True), (remote.ip, True)],
            [("p80", 8080, "TCP")],
            nodes={remote.ip: "node-b"},
        ),
    )
    try:
        await cluster.sync()
        for address in (lb, external):
            assert {await tcp_ask(address, 80, outside) for _ in range(4)} == {"pod1"}
            from_pod = [await tcp_ask(address, 80, inside) for _ in range(4)]
            assert Counter(from_pod) == {"pod1": 2, "pod2": 2}, address
            from_node = [await tcp_ask(address, 80) for _ in range(4)]
            assert Counter(from_node) == {"pod1": 2, "pod2": 2}, address
        # The node's connections (the VIP as source) were masqueraded by the mark's rule.
        assert await _packets(env.cluster, "node traffic to an in-cluster fwmark") == 8
        table = await env.cluster.dataplane.ipvs.dump()
        marked = [key for key in table.virtual_servers if key.fwmark]
        assert len(marked) == 2
        for key in marked:
            servers = {s.server.key.address for s in table.real_servers[key]}
            assert servers == {local.ip, remote.ip}
        entries = await env.cluster.dataplane.ipsets.entries("KUBE-EXTERNAL-LOCAL-FWMARK")
        assert {e.split(" ")[0] for e in entries} == {f"{lb},tcp:80", f"{external},tcp:80"}
        # No local endpoint left: outside clients are refused, pods still reach node-b's.
        cluster.apply(
            slice_object(
                "web", [(remote.ip, True)], [("p80", 8080, "TCP")], nodes={remote.ip: "node-b"}
            )
        )
        await cluster.sync()
        for address in (lb, external):
            with pytest.raises((OSError, asyncio.TimeoutError)):
                await tcp_ask(address, 80, outside, timeout=1.0)
            assert {await tcp_ask(address, 80, inside) for _ in range(2)} == {"pod2"}
        # --cleanup knows the mark's virtual servers and the mangle chain for the proxy's.
        await remove_everything(env.cluster.dataplane, Config())
        assert not (await env.cluster.dataplane.ipvs.dump()).virtual_servers
        mangle = await env.cluster.dataplane.iptables.save(Family.V4, "mangle")
        assert "KUBE-IN-CLUSTER-FWMARK" not in mangle
    finally:
        network.close()


async def _packets(cluster: Cluster, comment: str) -> int:
    """Packets counted by the IPv4 nat rule with ``comment`` (``iptables-save -c``)."""
    backend = getattr(cluster.dataplane.iptables, "backend", "legacy")
    saved = await run_command([f"iptables-{backend}-save", "-c", "-t", "nat"])
    (line,) = [rule for rule in saved.splitlines() if f'"{comment}"' in rule]
    return int(line[1:].split(":", 1)[0])
