"""The proxy's main job, shown whole: a test API server, pods, the real ``ipvsproxy``, traffic.

Runs inside a kernel with IPVS (scripts/demo.sh boots one). Everything but the
proxy lives in this one process: the Kubernetes-API-compatible test server
(tests/apiserver) holding three sample Services, and pods as network
namespaces answering with their names. The proxy is the real command, started
as its own process with a kubeconfig pointing at the test server, exactly as
on a node. Then requests go to each Service and the demo prints who answered,
the IPVS table, and what happens when a pod goes away and when the proxy
stops (the dataplane stays) and cleans up (it goes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.apiserver.server import ApiServer
from tests.support.cluster import NODE, service_object, slice_object
from tests.support.pods import Pod, PodNetwork, tcp_ask, tcp_open
from tests.support.proxy_node import HEALTHZ, IPV4, http_get, kubeconfig, scrape
from tests.support.switching import eventually, serving
from tests.support.switching import ipvs_table as proc_ipvs_table

WEB, API, NODEPORT = "10.96.0.10", "10.96.0.20", 30080
Say = Callable[[str], None]


@dataclass
class DemoResult:
    """What the demo saw; each check is (description, passed)."""

    checks: list[tuple[str, bool]] = field(default_factory=list)

    def check(self, what: str, passed: bool, say: Say) -> None:
        self.checks.append((what, passed))
        say(f"  [{'ok' if passed else 'FAILED'}] {what}")

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)


def objects(web: list[Pod], api: list[Pod]) -> list[dict[str, Any]]:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {}}}
    return [
        node,
        service_object("web", WEB, [(80, 8080, "TCP")], type="NodePort", nodePorts=[NODEPORT]),
        slice_object("web", [(p.ip, True) for p in web], [("p80", 8080, "TCP")]),
        service_object(
            "api", API, [(80, 8080, "TCP")], annotations={"ipvsproxy.io/scheduler": "lc"}
        ),
        slice_object("api", [(p.ip, True) for p in api], [("p80", 8080, "TCP")]),
    ]


def ipvs_table() -> str:
    return subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True).stdout


async def waited(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until ``condition()`` held, or None if it did not within ``timeout``."""
    with contextlib.suppress(AssertionError):
        return await eventually(condition, timeout)
    return None


def seconds(took: float | None) -> str:
    return "never" if took is None else f"{took:.2f} s"


async def check_health_and_metrics(result: DemoResult, say: Say) -> None:
    """What a kubelet probe and a Prometheus scrape of the running proxy see."""
    status, body = await http_get(f"{HEALTHZ}/healthz")
    eligible = status == 200 and json.loads(body).get("nodeEligible") is True
    result.check(f"/healthz: {status} {body}", eligible, say)
    wanted = len(proc_ipvs_table())
    deadline = time.monotonic() + 5.0  # the gauge is set when the first sync ends
    while True:
        metrics = await scrape()
        programmed = metrics.get(("ipvsproxy_virtual_servers", ()))
        if programmed == wanted or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    result.check(
        f"/metrics: ipvsproxy_virtual_servers {programmed} = {wanted} in the kernel",
        programmed == wanted,
        say,
    )
    last = metrics.get(("kubeproxy_sync_proxy_rules_last_timestamp_seconds", IPV4), 0.0)
    result.check(
        f"/metrics: last successful sync {time.time() - last:.1f} s ago",
        0 <= time.time() - last < 60,
        say,
    )


async def run_demo(say: Say = print, proxy: list[str] | None = None) -> DemoResult:
    """The whole demo; ``proxy`` is the command that starts ipvsproxy."""
    result = DemoResult()
    network = PodNetwork()
    web = [await network.add_pod(f"web-{i}", i) for i in (1, 2)]
    api = [await network.add_pod(f"api-{i}", i) for i in (3, 4)]
    client = await network.add_pod("client", 100)
    for pod in web + api:
        await pod.serve_tcp(8080)
    server = ApiServer()
    for obj in objects(web, api):
        server.put(obj)
    await server.start("127.0.0.1", 0)
    say(
        f"test API server on {server.url}: Services web ({WEB}, rr, NodePort {NODEPORT}), "
        f"api ({API}, lc)"
    )
    workdir = Path(tempfile.mkdtemp(prefix="ipvsproxy-demo-"))
    base = proxy or [sys.executable, "-m", "ipvsproxy"]
    command = [
        *base,
        f"--kubeconfig={kubeconfig(server.url, workdir)}",
        f"--hostname-override={NODE}",
        "--healthz-bind-address=127.0.0.1:10256",
        "--metrics-bind-address=127.0.0.1:10249",
        # The node may be a network namespace, where the global nf_conntrack_max cannot
        # be raised: leave it (and its hash size) as they are.
        "--conntrack-max-per-core=0",
        "--log-format=json",
        "-v",
    ]
    say("starting: " + " ".join(command))
    log = (workdir / "proxy.log").open("w")
    process = await asyncio.create_subprocess_exec(*command, stdout=log, stderr=log)
    try:
        took = await waited(lambda: API in programmed_vips(), 60)
        result.check(
            f"the proxy programmed the Services ({seconds(took)} after its start)",
            took is not None,
            say,
        )
        if took is None:
            return result
        say(ipvs_table())
        await check_health_and_metrics(result, say)

        answers = [await tcp_ask(WEB, 80, client) for _ in range(6)]
        say(f"client -> web {WEB}:80      : {' '.join(answers)}")
        result.check("rr spreads web evenly", Counter(answers) == {"web-1": 3, "web-2": 3}, say)

        node_ip = client.gateway
        answers = [await tcp_ask(node_ip, NODEPORT, client) for _ in range(4)]
        say(f"client -> NodePort {node_ip}:{NODEPORT}: {' '.join(answers)}")
        result.check("the NodePort reaches web", set(answers) == {"web-1", "web-2"}, say)

        held = await tcp_open(API, 80, client)
        busy = await held.name()
        answers = [await tcp_ask(API, 80, client) for _ in range(3)]
        say(f"client holds a connection to {busy}; new ones to api {API}:80: {' '.join(answers)}")
        result.check("lc avoids the busy pod", busy not in answers, say)
        held.close()

        server.put(slice_object("web", [(web[0].ip, True)], [("p80", 8080, "TCP")]))
        say("web-2 leaves the web EndpointSlice")
        # It stays at weight 0 while connections to it live (graceful termination).
        only_web1 = {f"{web[0].ip}:8080": 1}
        took = await waited(lambda: serving(f"TCP {WEB}:80") == only_web1, 10)
        result.check(
            f"web-2 takes no new connections ({seconds(took)} after the API write)",
            took is not None,
            say,
        )
        answers = [await tcp_ask(WEB, 80, client) for _ in range(4)]
        say(f"client -> web {WEB}:80      : {' '.join(answers)}")
        result.check("only web-1 answers now", answers == ["web-1"] * 4, say)

        asked_to_stop = time.monotonic()
        process.terminate()
        stopped = await asyncio.wait_for(process.wait(), 10) == 0
        took = time.monotonic() - asked_to_stop
        answer = await tcp_ask(WEB, 80, client)
        say(f"proxy stopped (SIGTERM) in {took:.2f} s; client -> web: {answer}")
        result.check(
            "traffic still flows with the proxy stopped", stopped and answer == "web-1", say
        )

        cleanup = await asyncio.create_subprocess_exec(*base, "--cleanup", stderr=log)
        cleaned = await cleanup.wait()
        left = ipvs_table()
        say("ipvsproxy --cleanup; the IPVS table is now:\n" + left)
        result.check(
            "--cleanup removed the proxy's services",
            cleaned == 0 and not proc_ipvs_table(),
            say,
        )
    finally:
        if not result.passed:
            say("--- the proxy's log (last lines):")
            say("\n".join((workdir / "proxy.log").read_text().splitlines()[-60:]))
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
        await server.stop()
        network.close()
    return result


def programmed_vips() -> set[str]:
    """The IPv4 virtual addresses in /proc/net/ip_vs with a real server taking connections
    (no process start, unlike ipvsadm). Not a virtual server alone: diff binds its VIP
    only after adding it, so until a real server follows, the VIP may be unreachable."""
    return {
        key.split()[1].rpartition(":")[0]
        for key, servers in proc_ipvs_table().items()
        if key[:3] != "FWM" and any(servers.values())
    }
