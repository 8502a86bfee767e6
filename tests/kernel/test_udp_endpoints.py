"""UDP Services under the kernel: no datagram lost when endpoints come, change or come back
(issue 19).

A client pod sends datagrams to a ClusterIP from the first moment /proc/net/ip_vs lists the
Service's real servers (a file read, as anyone watching the table would; no process start),
each from a new socket as a resolver does, and every one must be answered. The node has a
default route, as a real node has: a datagram the node does not hand to IPVS (its VIP not
bound yet) leaves through it and is lost, leaving a conntrack entry behind (without the
route it would draw an ICMP error instead: unanswered either way).

What went wrong before, measured with these tests: when a Service and its endpoints were
synced together, diff added the real servers, then flushed the Service's UDP conntrack
entries, then bound the VIP. A datagram sent once the real servers were listed but before
the VIP was bound never reached IPVS: the first datagram of every such Service was lost
(375 of 400 answered, in each of 6 runs; through the real process, 4 to 10 of 10
Services lost their first datagram, run to run). Services whose EndpointSlice came in a later sync
lost none: their VIP was bound already. And a flush run once real servers are in place
deletes the entries of live flows, which loses the reply in flight of a masqueraded flow
(its SNAT binding goes with the entry).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import AsyncIPRoute

from ipvsproxy.core.model import IpProtocol, RealServer, RealServerKey, VirtualServerKey
from ipvsproxy.core.ops import FlushUdpConntrack, UpdateRealServer
from ipvsproxy.dataplane.conntrack import insert_udp_entry
from tests.apiserver.server import ApiServer
from tests.support import builders
from tests.support.cluster import Cluster, service_object, slice_object
from tests.support.pods import Pod, PodNetwork
from tests.support.switching import eventually, ipvs_table, start_proxy

PORT, TARGET = 53, 5353
PROBES = 8  # datagrams per Service, each from a new socket
ANSWER_WITHIN = 2.0  # seconds; a resolver's first retry comes later than that


@dataclass
class Node:
    pods: list[Pod]  # pod1..pod4, each answering on TARGET with its name
    client: Pod

    def servers(self, *pods: Pod) -> set[str]:
        """The real servers /proc/net/ip_vs lists for ``pods`` (as ipvs_table() spells them)."""
        return {f"{p.ip}:{TARGET}" for p in pods}


@pytest.fixture
async def node(netns: int) -> AsyncIterator[Node]:
    network = PodNetwork()
    pods = [await network.add_pod(f"pod{i}", i) for i in (1, 2, 3, 4)]
    client = await network.add_pod("client", 100)
    for pod in pods:
        await pod.serve_udp(TARGET)
    # A default route, as a node has (over a dummy link: what leaves by it is lost).
    async with AsyncIPRoute() as ipr:
        await ipr.link("add", ifname="uplink", kind="dummy")
        (uplink,) = await ipr.link_lookup(ifname="uplink")
        await ipr.addr("add", index=uplink, address="192.0.2.2", prefixlen=24)
        await ipr.link("set", index=uplink, state="up")
        await ipr.route("add", dst="0.0.0.0/0", gateway="192.0.2.1")
    try:
        yield Node(pods, client)
    finally:
        network.close()


@pytest.fixture
async def cluster(node: Node) -> AsyncIterator[Cluster]:
    cluster = await Cluster.open()
    try:
        yield cluster
    finally:
        await cluster.close()


def dns(name: str, vip: str, pods: list[Pod]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A UDP Service PORT -> TARGET and its EndpointSlice with ``pods``, all ready."""
    return (
        service_object(name, vip, [(PORT, TARGET, "UDP")]),
        slice_object(name, [(p.ip, True) for p in pods], [(f"p{PORT}", TARGET, "UDP")]),
    )


def udp_socket(source: Pod | None) -> socket.socket:
    """A UDP socket in ``source``'s namespace (None: the node's)."""
    sock = (
        source.open_socket(socket.AF_INET, socket.SOCK_DGRAM)
        if source is not None
        else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    sock.setblocking(False)
    return sock


async def exchange(sock: socket.socket, timeout: float = ANSWER_WITHIN) -> str:
    """Send one datagram on a connected socket: the name that answered, else what happened."""
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, b"who")
        return (await asyncio.wait_for(loop.sock_recv(sock, 256), timeout)).decode()
    except TimeoutError:
        return "no answer"
    except OSError as err:
        return f"error: {err.strerror}"


async def ask(client: Pod, vip: str) -> str:
    with udp_socket(client) as sock:
        try:
            sock.connect((vip, PORT))
        except OSError as err:
            return f"error: {err.strerror}"
        return await exchange(sock)


async def probe_from_first_sight(client: Pod, vip: str, servers: set[str]) -> list[str]:
    """Wait until /proc/net/ip_vs lists exactly ``servers`` for vip:PORT, then send PROBES
    datagrams at once, one after another, each from a new socket. Polls without sleeping:
    in-process, the reconciler's sync runs between two reads."""
    key = f"UDP {vip}:{PORT}"
    await eventually(lambda: set(ipvs_table().get(key, {})) == servers, 30, step=0)
    return [await ask(client, vip) for _ in range(PROBES)]


def lost(outcomes: list[tuple[str, list[str]]], names: set[str]) -> list[tuple[str, int, str]]:
    """(service, datagram number, what happened) of every datagram not answered by ``names``."""
    return [
        (service, n, answer)
        for service, answers in outcomes
        for n, answer in enumerate(answers, 1)
        if answer not in names
    ]


async def test_fifty_new_udp_services_answer_every_datagram_from_the_first_moment(
    node: Node, cluster: Cluster
) -> None:
    """50 Services created one after another, their real servers probed the moment IPVS
    lists them: 400 of 400 answered. Even ones arrive with their EndpointSlice in one sync;
    odd ones as separate events (the Service synced first: a virtual server with no real
    server, bound, for a while), as the watches deliver them."""
    pods = node.pods[:2]
    outcomes: list[tuple[str, list[str]]] = []
    for i in range(1, 51):
        name, vip = f"dns{i}", f"10.96.19.{i}"
        service, endpoints = dns(name, vip, pods)
        if i % 2:
            cluster.apply(service)
            await cluster.sync()
            cluster.apply(endpoints)
        else:
            cluster.apply(service, endpoints)
        probe = asyncio.create_task(probe_from_first_sight(node.client, vip, node.servers(*pods)))
        await cluster.sync()
        outcomes.append((f"{name} ({'apart' if i % 2 else 'together'})", await probe))
    missing = lost(outcomes, {"pod1", "pod2"})
    answered = 50 * PROBES - len(missing)
    print(f"answered {answered} of {50 * PROBES}")
    assert not missing, f"answered {answered} of {50 * PROBES}; lost: {missing}"


async def test_new_udp_services_through_the_watches_of_the_real_process(
    node: Node, tmp_path: Path
) -> None:
    """The same, as on a node: the real ipvsproxy process (the shipped config, so a Service
    and its EndpointSlice are synced together or apart as the two watches and the sync
    pacer have it) against the test API server; 10 Services."""
    server = ApiServer()
    server.put(builders.node(builders.NODE, addresses=[("InternalIP", node.client.gateway)]))
    await server.start("127.0.0.1", 0)
    proxy = await start_proxy(server, tmp_path, builders.NODE)
    pods = node.pods[:2]
    outcomes: list[tuple[str, list[str]]] = []
    try:
        await eventually(lambda: '"synced"' in proxy.output(), 90)
        for i in range(1, 11):
            name, vip = f"dns{i}", f"10.96.20.{i}"
            for obj in dns(name, vip, pods):
                server.put(obj)
            answers = await probe_from_first_sight(node.client, vip, node.servers(*pods))
            outcomes.append((name, answers))
    finally:
        await proxy.stop()
        await server.stop()
    missing = lost(outcomes, {"pod1", "pod2"})
    assert not missing, f"lost: {missing}\n{proxy.output()[-3000:]}"


async def test_a_client_that_asked_before_the_service_existed_is_answered_once_it_does(
    node: Node, cluster: Cluster
) -> None:
    """A resolver that sent to a ClusterIP before its Service existed (the node routed the
    datagram away, leaving a conntrack entry: answered by the VIP itself, never NATed) and
    keeps its socket is answered once the Service has endpoints: the flush of a Service
    going from none to some, as kube-proxy does it, removed that stale entry (without it,
    measured: no answer). Conntrack tracks the node's packets once the proxy's rules are
    there, hence the first sync before the datagram."""
    vip = "10.96.0.30"
    pods = node.pods[:2]
    await cluster.sync()  # the node as the proxy keeps it: its rules in place, conntrack on
    with udp_socket(node.client) as early:
        early.connect((vip, PORT))
        assert await exchange(early, 0.5) == "no answer"  # no Service yet: routed away
        cluster.apply(*dns("early", vip, pods))
        result = await cluster.sync()
        live = frozenset(RealServerKey(p.ip, TARGET) for p in pods)
        assert FlushUdpConntrack(vip, PORT, keep=live) in result.ops
        assert await exchange(early) in {"pod1", "pod2"}


async def test_udp_endpoints_that_all_change_at_once(node: Node, cluster: Cluster) -> None:
    """pod1 and pod2 give way to pod3 and pod4 in one EndpointSlice update (the old pods
    still answer, as terminating pods may). From the moment IPVS lists only the new ones,
    every datagram is answered by them; and a client that keeps its socket moves to a new
    pod at its next datagram. That client is the node's own, masqueraded: the conntrack
    entry of its flow to the old pod holds the masquerade's binding, and left in place it
    breaks the flow (measured without the per-real-server flush: the next send fails with
    EPERM, dropped on the way out)."""
    vip = "10.96.0.10"
    old, new = node.pods[:2], node.pods[2:]
    cluster.apply(*dns("dns", vip, old))
    await cluster.sync()
    with udp_socket(None) as kept:
        kept.connect((vip, PORT))
        assert await exchange(kept) in {"pod1", "pod2"}
        cluster.apply(dns("dns", vip, new)[1])
        probe = asyncio.create_task(probe_from_first_sight(node.client, vip, node.servers(*new)))
        result = await cluster.sync()
        answers = await probe
        assert not lost([("dns", answers)], {"pod3", "pod4"}), answers
        # No flush of the whole Service: it never had no endpoint.
        assert [op for op in result.ops if isinstance(op, FlushUdpConntrack)] == [
            FlushUdpConntrack(vip, PORT, RealServerKey(p.ip, TARGET)) for p in old
        ]
        assert await exchange(kept) in {"pod3", "pod4"}


async def test_udp_last_endpoint_gone_and_back_flushes_the_stale_entries(
    node: Node, cluster: Cluster
) -> None:
    """The flush kube-proxy does when a UDP Service's endpoints go from none to some still
    happens: a client whose flow has a stale conntrack entry (the kind a datagram leaves
    when the node routes it because no VIP took it: answered by the VIP itself, never
    NATed) is answered once an endpoint is back, where the stale entry would black-hole
    it. Here the VIP stays bound while the Service has no endpoint (a datagram is refused,
    and leaves no entry), so the entry is made by hand, as the previous test has the node
    make it. And every fresh datagram is answered from the moment IPVS lists the endpoint."""
    vip = "10.96.0.10"
    pod1, pod2 = node.pods[:2]
    cluster.apply(*dns("dns", vip, [pod1]))
    await cluster.sync()
    assert await ask(node.client, vip) == "pod1"
    cluster.apply(dns("dns", vip, [])[1])
    await cluster.sync()
    assert ipvs_table()[f"UDP {vip}:{PORT}"] == {}
    assert (await ask(node.client, vip)).startswith("error")  # refused: no endpoint
    with udp_socket(node.client) as stale:
        stale.connect((vip, PORT))
        client_port = stale.getsockname()[1]
        await insert_udp_entry(node.client.ip, client_port, vip, PORT, vip, PORT)
        cluster.apply(dns("dns", vip, [pod2])[1])
        probe = asyncio.create_task(probe_from_first_sight(node.client, vip, node.servers(pod2)))
        result = await cluster.sync()
        answers = await probe
        flush = FlushUdpConntrack(vip, PORT, keep=frozenset({RealServerKey(pod2.ip, TARGET)}))
        assert flush in result.ops
        assert answers == ["pod2"] * PROBES
        assert await exchange(stale) == "pod2"


async def test_a_udp_flush_keeps_the_flows_of_ready_endpoints(node: Node, cluster: Cluster) -> None:
    """A restart finds a UDP real server at weight 0 (as kube-proxy's graceful termination
    leaves it: upstream #92019) while a flow through it is live: the node's own client,
    masqueraded, waiting for its reply. The new proxy restores the weight, and the flush
    that a server going from none to some live ones brings keeps that flow's entry, so the
    reply (held back by the pod until the sync is over) still reaches the client."""
    vip = "10.96.0.20"
    pod1 = node.pods[0]
    held = pod1.open_socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.bind((pod1.ip, TARGET + 1))
    held.setblocking(False)
    service = service_object("slow", vip, [(PORT, TARGET + 1, "UDP")])
    endpoints = slice_object("slow", [(pod1.ip, True)], [(f"p{PORT}", TARGET + 1, "UDP")])
    cluster.apply(service, endpoints)
    await cluster.sync()
    loop = asyncio.get_running_loop()
    with held, udp_socket(None) as client:
        client.connect((vip, PORT))
        await loop.sock_sendall(client, b"who")
        _, asker = await asyncio.wait_for(loop.sock_recvfrom(held, 256), ANSWER_WITHIN)
        key = VirtualServerKey(vip, PORT, IpProtocol.UDP)
        real = RealServerKey(pod1.ip, TARGET + 1)
        await cluster.dataplane.ipvs.apply([UpdateRealServer(key, RealServer(real, 0))])
        restarted = Cluster(cluster.dataplane)  # knows nothing; reads the kernel
        restarted.apply(service, endpoints)
        result = await restarted.sync()
        assert FlushUdpConntrack(vip, PORT, keep=frozenset({real})) in result.ops
        assert UpdateRealServer(key, RealServer(real, 1)) in result.ops
        await loop.sock_sendto(held, b"pod1", asker)
        reply = await asyncio.wait_for(loop.sock_recv(client, 256), ANSWER_WITHIN)
        assert reply == b"pod1"
