"""The real ipvsproxy process with its health port held by another process: Services are
programmed all the same, /healthz comes up within a retry period once the port is free,
and the metrics address serves /configz and kube-proxy's ip_family labels."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import aiohttp

from tests.apiserver.server import ApiServer
from tests.support import builders
from tests.support.cluster import service_object, slice_object
from tests.support.pods import PodNetwork, tcp_ask
from tests.support.switching import eventually, serving, start_proxy

HEALTHZ, METRICS = "http://127.0.0.1:10256", "http://127.0.0.1:10249"  # start_proxy's


async def get(url: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def test_a_held_health_port_holds_up_healthz_not_the_services(
    netns: int, tmp_path: Path
) -> None:
    network = PodNetwork()
    pod = await network.add_pod("pod1", 1)
    await pod.serve_tcp(8080)
    server = ApiServer()
    server.put(builders.node(builders.NODE, addresses=[("InternalIP", pod.gateway)]))
    server.put(service_object("web", "10.96.0.10", [(80, 8080, "TCP")]))
    server.put(slice_object("web", [(pod.ip, True)], [("p80", 8080, "TCP")]))
    await server.start("127.0.0.1", 0)
    holder = socket.socket()  # another process's listener on the health port
    holder.bind(("127.0.0.1", 10256))
    holder.listen(1)
    proxy = await start_proxy(server, tmp_path, builders.NODE)
    try:
        # The real server, not the virtual server: diff binds the VIP between the two,
        # so a virtual server alone may still be unreachable (ENETUNREACH).
        await eventually(lambda: bool(serving("TCP 10.96.0.10:80")), 60)
        assert await tcp_ask("10.96.0.10", 80) == "pod1"
        assert "cannot listen; retrying" in proxy.output()
        assert proxy.process.returncode is None
        holder.close()
        freed = time.monotonic()
        while True:
            try:
                status, body = await get(f"{HEALTHZ}/healthz")
                break
            except aiohttp.ClientError:
                assert time.monotonic() - freed < 15, proxy.output()[-2000:]
                await asyncio.sleep(0.2)
        assert status == 200, body
        status, body = await get(f"{METRICS}/configz")
        config = json.loads(body)["kubeproxy.config.k8s.io"]
        assert (config["Mode"], config["DetectLocalMode"]) == ("ipvs", "ClusterCIDR")
        assert config["Linux"]["Conntrack"]["MaxPerCore"] == 0  # start_proxy's flag
        # Set when the first sync ends: in a kernel just booted, loading the modules its
        # rules use can keep that sync going after the Service already answers.
        synced = 'kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"}'
        waited = time.monotonic()
        while synced not in (await get(f"{METRICS}/metrics"))[1]:
            assert time.monotonic() - waited < 30, proxy.output()[-2000:]
            await asyncio.sleep(0.2)
    finally:
        holder.close()
        await proxy.stop()
        await server.stop()
        network.close()
