"""--detect-local-mode under the real kernel, with traffic, for IPv4 and IPv6: what it
recognises as a pod is not masqueraded on its way to a ClusterIP and reaches every endpoint
of an externalTrafficPolicy Local load balancer; anything else is masqueraded (a NodePort
always) and reaches only this node's endpoints through the load balancer.

The node (the test's namespace) has four pods: ``server`` (the endpoint, which answers
with the source address it sees), ``remote`` (an endpoint standing for one on node-b),
``pod`` (the client every mode must recognise: on veth2 in 10.244.2.0/24, or behind the
bridge cbr0 for BridgeInterface) and ``outside`` (a client on the link ext100, in
10.244.100.0/24, that no mode may recognise).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import builders
from tests.support.cluster import Cluster, service_object, slice_object
from tests.support.pods import Pod, PodNetwork, tcp_ask


@dataclass
class Mode:
    settings: dict[str, Any]
    pod_cidrs: list[str] = field(default_factory=list)  # the Node's, for NodeCIDR
    bridge: str = ""  # the pod client's bridge


MODES = {
    "ClusterCIDR": Mode({"cluster_cidrs": ("10.244.0.0/20", "fd00:244::/44")}),
    # A cluster CIDR that covers "outside" too: NodeCIDR must use the Node's, not it.
    "NodeCIDR": Mode(
        {"detect_local_mode": "NodeCIDR", "cluster_cidrs": ("10.244.0.0/16", "fd00:244::/32")},
        pod_cidrs=["10.244.0.0/22", "fd00:244::/46"],
    ),
    "BridgeInterface": Mode(
        {"detect_local_mode": "BridgeInterface", "pod_bridge_interface": "cbr0"}, bridge="cbr0"
    ),
    "InterfaceNamePrefix": Mode(
        {"detect_local_mode": "InterfaceNamePrefix", "pod_interface_name_prefix": "veth"}
    ),
}
ADDRESSES = {  # family: (ClusterIP, ClusterIP of the LB Service, LB IP)
    "IPv4": ("10.96.0.10", "10.96.0.11", "198.51.100.8"),
    "IPv6": ("fd00:96::10", "fd00:96::11", "fd00:198:51::8"),
}


def ip(pod: Pod, family: str) -> str:
    return pod.ip6 if family == "IPv6" else pod.ip


def node_ip(pod: Pod, family: str) -> str:
    """The node's address on the pod's link (or bridge)."""
    return f"fd00:244:{pod.index}::1" if family == "IPv6" else pod.gateway


def services(family: str, server: Pod, remote: Pod) -> list[dict[str, Any]]:
    """A NodePort Service on ``server``, and an ETP Local load balancer on both endpoints."""
    vip, lb_vip, lb = ADDRESSES[family]
    suffix = family[-1]  # web4, lb6, ...
    return [
        service_object(
            f"web{suffix}", vip, [(80, 8080, "TCP")], type="NodePort",
            nodePorts=[30080 + int(suffix)], ipFamilies=[family],
        ),
        slice_object(f"web{suffix}", [(ip(server, family), True)], [("p80", 8080, "TCP")]),
        service_object(
            f"lb{suffix}", lb_vip, [(80, 8081, "TCP")], type="LoadBalancer",
            nodePorts=[30090 + int(suffix)], externalTrafficPolicy="Local",
            healthCheckNodePort=32090 + int(suffix), ipFamilies=[family],
            status={"loadBalancer": {"ingress": [{"ip": lb}]}},
        ),
        slice_object(
            f"lb{suffix}", [(ip(server, family), True), (ip(remote, family), True)],
            [("p80", 8081, "TCP")], nodes={ip(remote, family): "node-b"},
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("name", list(MODES))
async def test_the_detector_decides_masquerade_and_the_in_cluster_path(
    netns: int, name: str
) -> None:
    mode = MODES[name]
    network = PodNetwork()
    cluster = await Cluster.open(**mode.settings)
    try:
        server = await network.add_pod("server", 1)
        remote = await network.add_pod("remote", 3)
        pod = await network.add_pod("pod", 2, bridge=mode.bridge)
        outside = await network.add_pod("outside", 100, host_if="ext100")
        for af in (socket.AF_INET, socket.AF_INET6):
            await server.serve_tcp(8080, af, peer=True)
            for endpoint in (server, remote):
                await endpoint.serve_tcp(8081, af)
        if mode.pod_cidrs:
            cluster.cache.node_store.upsert(builders.node(pod_cidrs=mode.pod_cidrs))
        for family in ADDRESSES:
            cluster.apply(*services(family, server, remote))
        await cluster.sync()
        for family, (vip, _, lb) in ADDRESSES.items():
            nodeport = 30080 + int(family[-1])
            masqueraded = node_ip(server, family)  # the node's address towards the server
            assert await tcp_ask(vip, 80, pod) == ip(pod, family), f"{family}: a pod is not"
            assert await tcp_ask(vip, 80, outside) == masqueraded, f"{family}: outside is"
            assert await tcp_ask(node_ip(outside, family), nodeport, outside) == masqueraded
            assert {await tcp_ask(lb, 80, pod) for _ in range(4)} == {"server", "remote"}
            assert {await tcp_ask(lb, 80, outside) for _ in range(4)} == {"server"}
    finally:
        await cluster.close()
        network.close()
