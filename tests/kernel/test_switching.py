"""Switching a live node between kube-proxy and ipvsproxy, either way, under traffic.

The node first holds what a kube-proxy mode leaves (tests/fixtures/kube_proxy, with the
pods' addresses), and its Services answer through that state. A client pod then opens a
new connection every 50 ms while the real ``ipvsproxy`` process (shipped defaults)
takes over; not one may fail, an endpoint change made right after the switch must reach
the kernel within 2 s, and nothing of the old mode may be left. Handing back, a replay
of kube-proxy's IPVS-mode sync (tests/support/kube_proxy_ipvs.py) must succeed on
ipvsproxy's state and nothing ipvsproxy leaves may steer a packet.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.ipsets import run_command
from ipvsproxy.dataplane.iptables import IptablesCli, detect_backend
from ipvsproxy.dataplane.iptables_fixups import is_leftover, saved_chains
from tests.apiserver.server import ApiServer
from tests.support import builders
from tests.support.kube_proxy_ipvs import KubeProxyIpvsMode, Service
from tests.support.kube_proxy_state import SERVICE_PORT, SVC1, SVC3, SVC6, fixture
from tests.support.pods import Pod, PodNetwork, tcp_ask
from tests.support.switching import (
    ProxyProcess,
    SteadyClient,
    eventually,
    first_sync_end,
    has_synced,
    ipvs_table,
    run_ipvsproxy,
    start_proxy,
    steady,
    stopped_after,
)

NODE = builders.NODE
NODE_IP = "10.244.9.1"  # the node's end of the client pod's link
NODE_PORT = 30003
CLUSTER_CIDR = "10.244.0.0/16"  # the pods', as in the shipped config (packaging/config.yaml)
LB_IP, LB_CLUSTER_IP, LB_NODE_PORT = "203.0.113.7", "172.30.0.42", 30042
OPERATOR = "-A INPUT -s 192.0.2.1/32 -j ACCEPT"


@dataclass
class Node:
    pods: list[Pod]
    client: Pod
    server: ApiServer
    workdir: Path
    iptables: IptablesCli

    def values(self) -> dict[str, str]:
        return {
            "POD1": self.pods[0].ip,
            "POD2": self.pods[1].ip,
            "POD3": self.pods[2].ip,
            "CLUSTER_CIDR": CLUSTER_CIDR,
            "NODE_PORT": str(NODE_PORT),
            "NODE_IP": NODE_IP,
        }

    def endpoints(self, *indexes: int) -> tuple[str, ...]:
        return tuple(f"{self.pods[i].ip}:{SERVICE_PORT}" for i in indexes)

    async def save(self, table: str) -> str:
        return await self.iptables.save(Family.V4, table)


@pytest.fixture
async def node(netns: int, tmp_path: Path) -> AsyncIterator[Node]:
    network = PodNetwork()
    pods = [await network.add_pod(f"pod{i}", i) for i in (1, 2, 3)]
    client = await network.add_pod("client", 9)
    for pod in pods:
        await pod.serve_tcp(SERVICE_PORT)
    # A default route, as a node has: traffic to a Service IP kube-proxy's iptables mode
    # does not DNAT is forwarded (and meets its REJECT) rather than unroutable.
    for command in (
        "ip link add uplink type dummy",
        "ip addr add 192.0.2.2/24 dev uplink",
        "ip link set uplink up",
        "ip route add default via 192.0.2.1",
    ):
        await run_command(command.split())
    server = ApiServer()
    server.put(builders.node(NODE, addresses=[("InternalIP", NODE_IP)]))
    await server.start("127.0.0.1", 0)
    iptables = IptablesCli(await detect_backend())
    await iptables.restore(Family.V4, f"*filter\n:OPERATOR - [0:0]\n{OPERATOR}\nCOMMIT\n")
    try:
        yield Node(pods, client, server, tmp_path, iptables)
    finally:
        await server.stop()
        network.close()


def service(namespace: str, name: str, cluster_ip: str, **spec: Any) -> dict[str, Any]:
    node_port = spec.pop("node_port", None)
    return builders.service(
        name,
        namespace=namespace,
        cluster_ips=(cluster_ip,),
        ports=[builders.port(SERVICE_PORT, "p80", node_port=node_port)],
        **spec,
    )


def endpoints(
    namespace: str, name: str, pods: list[Pod], nodes: dict[str, str] | None = None
) -> Any:
    return builders.endpoint_slice(
        [builders.endpoint(p.ip, (nodes or {}).get(p.name, NODE)) for p in pods],
        [("p80", SERVICE_PORT)],
        service=name,
        namespace=namespace,
        address_type="IPv4",
    )


def put_fixture_services(node: Node, *, with_svc3: bool = True) -> None:
    """The fixtures' Services (kube-proxy's test scenario) in the API server."""
    p1, p2, p3 = node.pods
    node.server.put(service("ns1", "svc1", SVC1))
    node.server.put(endpoints("ns1", "svc1", [p1, p2]))
    if with_svc3:
        node.server.put(service("ns3", "svc3", SVC3, type="NodePort", node_port=NODE_PORT))
        node.server.put(endpoints("ns3", "svc3", [p3]))
    node.server.put(service("ns6", "svc6", SVC6))
    node.server.put(endpoints("ns6", "svc6", []))


async def answers(node: Node, address: str, times: int = 6) -> Counter[str]:
    return Counter([await tcp_ask(address, SERVICE_PORT, node.client, 2.0) for _ in range(times)])


async def take_over(node: Node, client: SteadyClient) -> tuple[ProxyProcess, float]:
    """Start ipvsproxy under the steady client; as soon as it has programmed the node, give
    svc6 (no endpoints until now) an endpoint. Returns the process, and when the change was
    in the kernel, counted from the end of the proxy's first sync (its start-up)."""
    proxy = await start_proxy(node.server, node.workdir, NODE)
    try:
        # Its first sync, not only SVC1's two real servers: from IPVS mode those are there
        # before the proxy has even started (found waiting 10 s below for a proxy not up).
        await eventually(lambda: has_synced(proxy), 90)
        assert len(ipvs_table()[f"TCP {SVC1}:80"]) == 2
        node.server.put(endpoints("ns6", "svc6", [node.pods[2]]))
        wanted = {f"{node.pods[2].ip}:80": 1}
        await eventually(lambda: ipvs_table().get(f"TCP {SVC6}:80") == wanted, 10)
        done = time.time()
        await asyncio.sleep(1.0)  # the steady client keeps going on the new state
        return proxy, done - first_sync_end(proxy.output())
    except BaseException:
        await proxy.stop()
        print(proxy.output())
        raise


def no_failures(client: SteadyClient) -> None:
    assert client.failures == [], client.failures
    assert len(client.answers) >= 20
    assert set(client.answers) == {"pod1", "pod2"}


async def test_from_iptables_mode(node: Node) -> None:
    await node.iptables.restore(Family.V4, fixture("iptables-mode-1.33.save", **node.values()))
    assert set(await answers(node, SVC1)) <= {"pod1", "pod2"}  # kube-proxy's random DNAT
    with pytest.raises(ConnectionRefusedError):  # its REJECT: svc6 has no endpoints
        await tcp_ask(SVC6, SERVICE_PORT, node.client, 2.0)
    put_fixture_services(node)
    async with steady(SteadyClient(node.client, SVC1, SERVICE_PORT)) as client:
        proxy, took = await take_over(node, client)
    async with stopped_after(proxy):
        no_failures(client)
        print(f"from iptables mode: {len(client.answers)} requests, 0 failed; change {took:.2f} s")
        assert took < 2.0, took
        assert set(await answers(node, SVC6)) == {"pod3"}, await node.save("filter")  # no REJECT
        for table in ("nat", "filter", "mangle"):
            saved = await node.save(table)
            assert not [c for c in saved_chains(saved) if is_leftover(table, c)], saved
        filt = await node.save("filter")
        assert OPERATOR in filt
        assert "-A INPUT -j KUBE-FIREWALL" in filt  # kubelet's stays


async def test_from_ipvs_mode(node: Node) -> None:
    values = node.values()
    await run_command(["ipset", "restore"], fixture("ipvs-mode-1.30.ipset", **values))
    await node.iptables.restore(Family.V4, fixture("ipvs-mode-1.30.save", **values))
    await run_command(["ip", "link", "add", "kube-ipvs0", "type", "dummy"])
    for vip in (SVC1, SVC3, SVC6):
        await run_command(["ip", "addr", "add", f"{vip}/32", "dev", "kube-ipvs0"])
    await run_command(["ipvsadm", "-R"], fixture("ipvsadm-1.30.rules", **values))
    assert set(await answers(node, SVC1)) == {"pod1", "pod2"}  # kube-proxy's IPVS
    put_fixture_services(node, with_svc3=False)  # svc3 is deleted during the switch
    async with steady(SteadyClient(node.client, SVC1, SERVICE_PORT)) as client:
        proxy, took = await take_over(node, client)
        async with stopped_after(proxy):
            await eventually(lambda: f"TCP {SVC3}:80" not in ipvs_table(), 5)
            no_failures(client)
            print(f"from IPVS mode: {len(client.answers)} requests, 0 failed; change {took:.2f} s")
            assert took < 2.0, took
            assert f"TCP {NODE_IP}:{NODE_PORT}" not in ipvs_table()
            assert SVC3 not in await run_command(["ip", "-4", "addr", "show", "dev", "kube-ipvs0"])
            # kube-proxy's sets are ipvsproxy's as they are: none rebuilt, no sync failed.
            assert "ipset rebuilt" not in proxy.output()
            assert "sync failed" not in proxy.output()
            assert OPERATOR in await node.save("filter")


async def test_back_to_kube_proxy(node: Node) -> None:
    p1, p2, p3 = node.pods
    put_fixture_services(node, with_svc3=False)
    # An externalTrafficPolicy Local load balancer: ipvsproxy's own extras (#115931).
    node.server.put(
        service(
            "ns2",
            "lb",
            LB_CLUSTER_IP,
            type="LoadBalancer",
            node_port=LB_NODE_PORT,
            lb_ingress=[{"ip": LB_IP}],
            externalTrafficPolicy="Local",
        )
    )
    node.server.put(endpoints("ns2", "lb", [p1, p2], nodes={"pod2": "node-b"}))
    proxy = await start_proxy(node.server, node.workdir, NODE)
    try:
        await eventually(lambda: has_synced(proxy), 90)  # rules come after IPVS
        assert any(k.startswith("FWM") for k in ipvs_table()), (ipvs_table(), proxy.output())
        # In-cluster clients of the LB IP reach every endpoint (ipvsproxy's fwmark path).
        assert set(await answers(node, LB_IP, 8)) == {"pod1", "pod2"}
    finally:
        assert await proxy.stop() == 0, proxy.output()
    kube_proxy = KubeProxyIpvsMode([NODE_IP], CLUSTER_CIDR, node.iptables.backend)
    services = [
        Service(SVC1, SERVICE_PORT, node.endpoints(0, 1)),
        Service(SVC6, SERVICE_PORT, ()),
        Service(
            LB_CLUSTER_IP,
            SERVICE_PORT,
            node.endpoints(0, 1),
            node_port=LB_NODE_PORT,
            lb_ip=LB_IP,
            local_endpoints=node.endpoints(0),
        ),
    ]
    async with steady(SteadyClient(node.client, SVC1, SERVICE_PORT)) as client:
        await kube_proxy.sync(services)  # every `ipset create -exist` succeeds
        # kube-proxy's meaning now, though ipvsproxy's firewall-mark server is still there
        # with both endpoints: its stamps are never made a virtual server's mark any more.
        assert any(k.startswith("FWM") for k in ipvs_table()), (ipvs_table(), proxy.output())
        assert kube_proxy.errors  # it cannot delete them: "Failed to delete service"
        assert set(await answers(node, LB_IP, 8)) == {"pod1"}
        assert "in-cluster fwmark" not in await node.save("nat")
        # An endpoint change, by kube-proxy.
        services[0] = Service(SVC1, SERVICE_PORT, node.endpoints(0, 1, 2))
        await kube_proxy.sync(services)
        assert set(ipvs_table()[f"TCP {SVC1}:80"]) == {f"{p.ip}:80" for p in (p1, p2, p3)}
        # The documented last step: what only ipvsproxy made goes, traffic flows on.
        status, output = await run_ipvsproxy("hand-back", "--log-format=json")
        assert status == 0, output
        assert '"event": "handed back"' in output
        assert not [k for k in ipvs_table() if k.startswith("FWM")]
        assert "KUBE-IN-CLUSTER-FWMARK" not in await node.save("mangle")
        assert "KUBE-EXTERNAL-LOCAL-FWMARK" not in await run_command(["ipset", "list", "-n"])
        kube_proxy.errors.clear()
        await kube_proxy.sync(services)
        assert kube_proxy.errors == []
        await asyncio.sleep(1.0)
    assert client.failures == [], client.failures
    assert len(client.answers) >= 20
    assert OPERATOR in await node.save("filter")


async def test_kube_proxy_takes_ipvsproxys_sets_as_they_are(node: Node) -> None:
    """The handing-back contract for every set, in both families, without traffic: what
    ipvsproxy created, kube-proxy's `ipset create ... -exist` accepts."""
    put_fixture_services(node)
    proxy = await start_proxy(node.server, node.workdir, NODE)
    try:
        await eventually(lambda: has_synced(proxy), 90)
    finally:
        assert await proxy.stop() == 0, proxy.output()
    saved = await run_command(["ipset", "save"])
    created = [line.split()[1:3] for line in saved.splitlines() if line.startswith("create ")]
    assert len(created) >= 18
    for name, kind in created:
        family = "inet6" if name.startswith("KUBE-6-") else "inet"
        options = (
            ["range", "0-65535"]
            if kind == "bitmap:port"
            else ["family", family, "hashsize", "1024", "maxelem", "65536"]
        )
        if name.endswith("EXTERNAL-LOCAL-FWMARK"):
            continue  # ipvsproxy's own: kube-proxy never names it
        await run_command(["ipset", "create", name, kind, *options, "-exist"])
