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
import ipaddress
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


def kubeconfig(url: str, directory: Path) -> Path:
    path = directory / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: demo\n"
        f"clusters: [{{name: demo, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: demo, user: {}}]\n"
        "contexts: [{name: demo, context: {cluster: demo, user: demo}}]\n"
    )
    return path


def ipvs_table() -> str:
    return subprocess.run(["ipvsadm", "-Ln"], capture_output=True, text=True).stdout


async def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.2)
    return condition()


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
        ready = await wait_for(lambda: API in programmed_vips(), 60)
        result.check("the proxy programmed the Services", ready, say)
        if not ready:
            say((workdir / "proxy.log").read_text()[-3000:])
            return result
        say(ipvs_table())

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
        await wait_for(lambda: ipvs_table().count("Masq") == 4, 20)
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
            cleaned == 0 and "TCP" not in left,
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
    """The IPv4 virtual addresses in /proc/net/ip_vs (no process start, unlike ipvsadm)."""
    vips = set()
    with contextlib.suppress(OSError), open("/proc/net/ip_vs") as table:
        for line in table:
            words = line.split()
            if len(words) > 1 and words[0] in ("TCP", "UDP", "SCTP") and len(words[1]) == 13:
                vips.add(str(ipaddress.IPv4Address(int(words[1][:8], 16))))
    return vips
