"""One node for the process-level tests: pods in network namespaces, the project's test API
server holding this Node, and what a test reads from the real proxy's HTTP servers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.apiserver.server import ApiServer
from tests.support import builders
from tests.support.pods import Pod, PodNetwork

NODE = builders.NODE
PORT = 80  # every pod serves its name on it
HEALTHZ = "http://127.0.0.1:10256"  # the addresses shipped_config() gives the proxy
METRICS = "http://127.0.0.1:10249"
IPV4 = (("ip_family", "IPv4"),)  # the labels of kube-proxy's sync metrics on this node


def kubeconfig(url: str, directory: Path) -> Path:
    path = directory / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: demo\n"
        f"clusters: [{{name: demo, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: demo, user: {}}]\n"
        "contexts: [{name: demo, context: {cluster: demo, user: demo}}]\n"
    )
    return path


@dataclass
class ProxyNode:
    pods: list[Pod]
    client: Pod
    server: ApiServer
    workdir: Path

    @property
    def ip(self) -> str:
        """The node's InternalIP: its end of the client pod's link."""
        return self.client.gateway

    def put_service(self, name: str, cluster_ip: str, **spec: Any) -> None:
        node_port = spec.pop("node_port", None)
        self.server.put(
            builders.service(
                name,
                cluster_ips=(cluster_ip,),
                ports=[builders.port(PORT, "p80", node_port=node_port)],
                **spec,
            )
        )

    def put_endpoints(self, name: str, *pods: Pod, remote: tuple[Pod, ...] = ()) -> None:
        """The Service's EndpointSlice: ``pods`` on this node, ``remote`` on another."""
        located = [(p, NODE) for p in pods] + [(p, "node-b") for p in remote]
        self.server.put(
            builders.endpoint_slice(
                [builders.endpoint(p.ip, node) for p, node in located],
                [("p80", PORT)],
                service=name,
                address_type="IPv4",
            )
        )

    def delete_service(self, name: str) -> None:
        self.server.remove("v1", "Service", "default", name)
        self.server.remove("discovery.k8s.io/v1", "EndpointSlice", "default", f"{name}-1")

    def wanted(self, *pods: Pod) -> dict[str, int]:
        """Real servers as ``ipvs_table()`` shows them, weight 1 each."""
        return {f"{p.ip}:{PORT}": 1 for p in pods}


@contextlib.asynccontextmanager
async def proxy_node(workdir: Path, pods: int = 3) -> AsyncIterator[ProxyNode]:
    """``pods`` pods (pod1, pod2, ...) answering on PORT, a client pod, and the API server."""
    network = PodNetwork()
    try:
        members = [await network.add_pod(f"pod{i}", i) for i in range(1, pods + 1)]
        client = await network.add_pod("client", 9)
        for pod in members:
            await pod.serve_tcp(PORT)
        server = ApiServer()
        server.put(builders.node(NODE, addresses=[("InternalIP", client.gateway)]))
        await server.start("127.0.0.1", 0)
        try:
            yield ProxyNode(members, client, server, workdir)
        finally:
            await server.stop()
    finally:
        network.close()


async def http_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The proxy's /metrics as {(sample name, sorted labels): value}."""
    status, text = await http_get(f"{METRICS}/metrics")
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
