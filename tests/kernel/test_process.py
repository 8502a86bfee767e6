"""The product as users run it: the real ``ipvsproxy`` process, shipped defaults.

Each test starts ``python -m ipvsproxy --config=FILE --hostname-override=node`` as the
systemd unit and the chart do, FILE being packaging/config.yaml with only the kubeconfig
and the HTTP addresses (loopback) changed (tests/support/switching.py), against the
project's test API server, with pods in network namespaces. Every change goes through
the API and the watch; what is asserted is read from the kernel, from traffic and from
the process's own HTTP servers. Times are printed (``pytest -s``) and bounded loosely:
they include whatever minSyncPeriod and backoff the shipped file says.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ipvsproxy.core.model import IpProtocol, VirtualServerKey
from ipvsproxy.dataplane.ipsets import run_command
from ipvsproxy.dataplane.iptables import detect_backend
from ipvsproxy.dataplane.ipvs import NetlinkIpvs
from tests.support import builders
from tests.support.pods import tcp_ask
from tests.support.proxy_node import (
    HEALTHZ,
    IPV4,
    METRICS,
    PORT,
    ProxyNode,
    http_get,
    proxy_node,
    scrape,
)
from tests.support.switching import (
    ProxyProcess,
    SteadyClient,
    eventually,
    has_synced,
    ipvs_table,
    log_records,
    run_ipvsproxy,
    serving,
    start_proxy,
    steady,
)

WEB = "172.30.0.41"
WEB_VS = f"TCP {WEB}:{PORT}"
NODE_PORT = 30041
# Generous: a change waits at most one minSyncPeriod (1 s shipped, or 0) plus a sync.
CHANGE_BOUND_S = 5.0
DOWN_S = 5.0  # the API server's outage


@pytest.fixture
async def node(netns: int, tmp_path: Path) -> AsyncIterator[ProxyNode]:
    async with proxy_node(tmp_path) as made:
        yield made


@pytest.fixture
async def ipvs(netns: int) -> AsyncIterator[NetlinkIpvs]:
    """The test's own netlink view of the kernel (per-service counters)."""
    opened = await NetlinkIpvs.open()
    try:
        yield opened
    finally:
        await opened.close()


async def started(node: ProxyNode, name: str = "proxy") -> ProxyProcess:
    """The proxy, started with the shipped config, once its first full sync has ended."""
    workdir = node.workdir / name
    workdir.mkdir()
    proxy = await start_proxy(node.server, workdir, builders.NODE)
    try:
        await eventually(lambda: has_synced(proxy), 90)
    except BaseException:
        await proxy.stop()
        print(proxy.output())
        raise
    print(f"{name}: first full sync {time.monotonic() - proxy.started:.1f} s after exec")
    return proxy


async def answers(node: ProxyNode, address: str, port: int = PORT, times: int = 6) -> set[str]:
    return {await tcp_ask(address, port, node.client, 2.0) for _ in range(times)}


async def timed(write: Callable[[], None], programmed: Callable[[], bool]) -> float:
    """Seconds from an API write until the kernel holds its result."""
    started = time.monotonic()
    write()
    await eventually(programmed, 30, step=0.01)
    return time.monotonic() - started


async def test_services_created_changed_deleted_through_the_api(node: ProxyNode) -> None:
    p1, p2, p3 = node.pods
    proxy = await started(node)
    took: dict[str, float] = {}
    try:

        def create() -> None:
            node.put_service("web", WEB)
            node.put_endpoints("web", p1, p2)

        took["create"] = await timed(
            create, lambda: ipvs_table().get(WEB_VS) == node.wanted(p1, p2)
        )
        assert await answers(node, WEB) == {"pod1", "pod2"}

        took["endpoints"] = await timed(
            lambda: node.put_endpoints("web", p3),
            lambda: serving(WEB_VS) == node.wanted(p3),
        )
        assert await answers(node, WEB) == {"pod3"}

        node_port_vs = f"TCP {node.ip}:{NODE_PORT}"
        took["to NodePort"] = await timed(
            lambda: node.put_service("web", WEB, type="NodePort", node_port=NODE_PORT),
            lambda: ipvs_table().get(node_port_vs) == node.wanted(p3),
        )
        assert await answers(node, node.ip, NODE_PORT) == {"pod3"}

        took["delete"] = await timed(
            lambda: node.delete_service("web"),
            lambda: not {WEB_VS, node_port_vs} & set(ipvs_table()),
        )
        with pytest.raises((OSError, TimeoutError)):
            await tcp_ask(WEB, PORT, node.client, 1.0)
    finally:
        assert await proxy.stop() == 0, proxy.output()
    print("API write -> kernel: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in took.items()))
    assert max(took.values()) < CHANGE_BOUND_S, took


def first_sync_ops(proxy: ProxyProcess) -> dict[str, int]:
    """The kernel operations the proxy's first full sync logged, by kind."""
    record = next(
        r for r in log_records(proxy.output()) if r.get("event") == "synced" and r.get("full")
    )
    return {k: v for k, v in record.items() if k[0].isupper() and isinstance(v, int)}


async def test_sigkill_and_restart_adopt_the_kernel(node: ProxyNode, ipvs: NetlinkIpvs) -> None:
    """A proxy killed mid-flight and started again: not one request fails, and the fresh
    process adopts what the kernel holds (no operation in its first sync, and the virtual
    server's connection counter counts every request: re-created, it would restart from 0)
    and then programs changes itself."""
    p1, p2, p3 = node.pods
    node.put_service("web", WEB)
    node.put_endpoints("web", p1, p2)
    key = VirtualServerKey(WEB, PORT, IpProtocol.TCP)
    first = await started(node, "first")
    assert first_sync_ops(first)  # positive control: this one did program the kernel
    async with steady(SteadyClient(node.client, WEB, PORT)) as client:
        await asyncio.sleep(1.0)
        before = ipvs_table()
        first.process.kill()
        assert await first.process.wait() == -9
        second = await started(node, "second")
        try:
            assert ipvs_table() == before
            adopted = first_sync_ops(second)
            await timed(
                lambda: node.put_endpoints("web", p1, p2, p3),
                lambda: ipvs_table().get(WEB_VS) == node.wanted(p1, p2, p3),
            )
            await asyncio.sleep(0.5)
        finally:
            assert await second.stop() == 0, second.output()
    # The kernel copies its counters out every 2 s (its rate estimator): read after that.
    await asyncio.sleep(2.5)
    connections = (await ipvs.stats())[key].connections
    print(
        f"SIGKILL + restart: {len(client.answers)} requests, {len(client.failures)} failed, "
        f"{connections} connections counted; first sync of the fresh process: {adopted}"
    )
    assert client.failures == [], client.failures
    assert set(client.answers) == {"pod1", "pod2", "pod3"}
    assert len(client.answers) >= 50  # the whole restart under traffic
    assert connections == len(client.answers)
    assert adopted == {}


async def test_api_server_down_and_back(node: ProxyNode) -> None:
    """The API server refuses connections for 5 s and comes back with its history
    compacted (every watch gets 410 and relists). The dataplane serves throughout; the
    change made during the outage, and one written the moment the server is back, reach
    the kernel within a second of it (issue 16): the shipped backoff would have the
    watches wait up to 6.4 s more, but they retry once the server takes connections."""
    p1, p2, p3 = node.pods
    node.put_service("web", WEB)
    node.put_endpoints("web", p1, p2)
    proxy = await started(node)
    try:
        await node.server.stop()
        assert await answers(node, WEB) == {"pod1", "pod2"}
        node.put_endpoints("web", p3)  # in the server's store while it is down
        await asyncio.sleep(DOWN_S)
        assert ipvs_table()[WEB_VS] == node.wanted(p1, p2)
        node.server.compact()
        await node.server.start(node.server.host, node.server.port)
        during = await eventually(lambda: serving(WEB_VS) == node.wanted(p3), 60)
        node.put_endpoints("web", p1)
        after = await eventually(lambda: serving(WEB_VS) == node.wanted(p1), 60)
    finally:
        assert await proxy.stop() == 0, proxy.output()
    print(
        f"API server down {DOWN_S:.0f} s, history compacted; back -> the change made "
        f"meanwhile in the kernel: {during:.2f} s; a change written then: {after:.2f} s"
    )
    assert during < 1.0, during
    assert after < 1.0, after
    assert await answers(node, WEB) == {"pod1"}


async def test_healthz_livez_metrics_of_the_running_process(node: ProxyNode) -> None:
    p1, p2, _ = node.pods
    node.put_service("web", WEB, type="NodePort", node_port=NODE_PORT)
    node.put_endpoints("web", p1, p2)
    begun = time.time()
    proxy = await started(node)
    try:
        # Six connections to the ClusterIP, counted by the kernel in the next 2 s (its
        # estimator copies the counters out), exported at the next full sync.
        assert await answers(node, WEB) == {"pod1", "pod2"}
        status, body = await http_get(f"{HEALTHZ}/healthz")
        assert status == 200, body
        assert json.loads(body)["nodeEligible"] is True
        assert (await http_get(f"{HEALTHZ}/livez"))[0] == 200
        assert await http_get(f"{METRICS}/proxyMode") == (200, "ipvs")

        metrics = await scrape()
        table = ipvs_table()
        assert metrics[("ipvsproxy_virtual_servers", ())] == len(table) >= 2
        assert metrics[("ipvsproxy_real_servers", ())] == sum(map(len, table.values()))
        assert metrics[("kubeproxy_proxy_healthz_total", (("code", "200"),))] == 1
        assert metrics[("kubeproxy_proxy_livez_total", (("code", "200"),))] == 1
        assert metrics[("ipvsproxy_sync_failing", ())] == 0
        last_sync = metrics[("kubeproxy_sync_proxy_rules_last_timestamp_seconds", IPV4)]
        assert begun < last_sync <= time.time()

        # The autoscaler's taint on this Node: /healthz says drain me, /livez stays fine.
        taint = {"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}
        node.server.put(builders.node(addresses=[("InternalIP", node.ip)], taints=[taint]))
        await eventually_status(f"{HEALTHZ}/healthz", 503, 10)
        status, body = await http_get(f"{HEALTHZ}/healthz")
        assert json.loads(body)["nodeEligible"] is False
        assert (await http_get(f"{HEALTHZ}/livez"))[0] == 200
        metrics = await scrape()
        assert metrics[("kubeproxy_proxy_healthz_total", (("code", "503"),))] >= 2
        assert metrics[("kubeproxy_proxy_livez_total", (("code", "200"),))] == 2

        # Per-Service IPVS counters, values: exported by the periodic full sync (the
        # shipped syncPeriod after the first, or sooner).
        labels = {"namespace": "default", "service": "web", "protocol": "TCP", "fwmark": ""}
        web = (*sorted((labels | {"address": WEB, "port": str(PORT)}).items()),)
        node_port = (*sorted((labels | {"address": node.ip, "port": str(NODE_PORT)}).items()),)
        took = await eventually_metric(("ipvsproxy_service_connections_total", web), 6, 45)
        metrics = await scrape()
        assert metrics[("ipvsproxy_service_connections_total", node_port)] == 0
        assert metrics[("ipvsproxy_service_packets_in_total", web)] >= 6 * 3  # SYN, ACK, RST
        assert metrics[("ipvsproxy_service_bytes_out_total", web)] >= 6 * len("pod1\n")
        print(f"per-Service counters exported {took:.1f} s after the taint")
    finally:
        assert await proxy.stop() == 0, proxy.output()


async def eventually_metric(
    sample: tuple[str, tuple[tuple[str, str], ...]], wanted: float, timeout: float
) -> float:
    started_at = time.monotonic()
    while (await scrape()).get(sample) != wanted:
        assert time.monotonic() - started_at < timeout, f"{sample} never {wanted}: {await scrape()}"
        await asyncio.sleep(0.5)
    return time.monotonic() - started_at


async def eventually_status(url: str, wanted: int, timeout: float) -> None:
    started_at = time.monotonic()
    while (await http_get(url))[0] != wanted:
        assert time.monotonic() - started_at < timeout, f"{url} never answered {wanted}"
        await asyncio.sleep(0.1)


async def test_cleanup_on_a_populated_node(node: ProxyNode) -> None:
    """``ipvsproxy --cleanup`` (the CLI, with the shipped config) after the proxy programmed
    a ClusterIP, a NodePort and an externalTrafficPolicy Local load balancer (firewall-mark
    virtual servers, every kind of set): all of it goes; the operator's own IPVS service,
    iptables chain and ipset stay as they were."""
    p1, p2, _ = node.pods
    backend = await detect_backend()
    save = f"iptables-{backend}-save"
    await run_command(["ipvsadm", "-A", "-t", "192.0.2.50:80", "-s", "wlc"])
    await run_command(["ipvsadm", "-a", "-t", "192.0.2.50:80", "-r", "192.0.2.51:80", "-m"])
    for rule in ("-N OPERATOR", "-A OPERATOR -s 192.0.2.9/32 -j ACCEPT", "-A INPUT -j OPERATOR"):
        await run_command([f"iptables-{backend}", "-w", *rule.split()])
    await run_command(["ipset", "create", "operator-set", "hash:ip"])
    await run_command(["ipset", "add", "operator-set", "192.0.2.9"])
    operator_vs = {"TCP 192.0.2.50:80": {"192.0.2.51:80": 1}}
    operator_filter = await run_command([save, "-t", "filter"])

    node.put_service("web", WEB, type="NodePort", node_port=NODE_PORT)
    node.put_endpoints("web", p1, p2)
    lb = {"ip": "203.0.113.7"}
    node.put_service(
        "lb",
        "172.30.0.42",
        type="LoadBalancer",
        node_port=30042,
        lb_ingress=[lb],
        externalTrafficPolicy="Local",
    )
    node.put_endpoints("lb", p1, remote=(p2,))
    proxy = await started(node)
    assert await proxy.stop() == 0, proxy.output()
    table = ipvs_table()
    assert any(k.startswith("FWM") for k in table), table
    assert WEB_VS in table, table
    assert len(table) >= 6, table  # ClusterIPs, NodePorts, LB IP, marks, the operator's
    assert "KUBE-SERVICES" in await run_command([save, "-t", "nat"])

    config = node.workdir / "proxy" / "config.yaml"  # the file the proxy ran with
    status, output = await run_ipvsproxy(f"--config={config}", "--cleanup")
    assert status == 0, output
    assert '"event": "cleaned up"' in output, output

    assert ipvs_table() == operator_vs
    assert "kube-ipvs0" not in await run_command(["ip", "link"])
    assert (await run_command(["ipset", "list", "-n"])).split() == ["operator-set"]
    assert "192.0.2.9" in await run_command(["ipset", "list", "operator-set"])
    assert "KUBE-" not in await run_command([save]) + await run_command([f"ip6{save[2:]}"])
    assert rules(await run_command([save, "-t", "filter"])) == rules(operator_filter)


def rules(saved: str) -> list[str]:
    """An iptables-save table without its comment lines (they carry the time)."""
    return [line for line in saved.splitlines() if not line.startswith("#")]
