"""A real Prometheus scrapes the real ipvsproxy; every dashboard query and alert answers.

The demo's flow, reduced (tests/support/demo.py): the test API server with the demo's
Services, pods in network namespaces, the real ``ipvsproxy`` process with the shipped
defaults but a 10 s resync period (its per-Service IPVS counters are read at each full
resync), traffic, an endpoint change stamped as the EndpointSlice controller stamps it, the
kubelet's /healthz probe, and at the end the Node tainted as the cluster autoscaler taints a
node it removes (/healthz answers 503). Debian's ``prometheus`` runs in the same network
namespace with a configuration generated here: it scrapes 127.0.0.1:10249 every second as
the job the chart's ServiceMonitor makes, with the node label the ServiceMonitor adds, plus
a second target of the job where nothing listens (a node whose proxy is down), and loads the
chart's PrometheusRule as its rule file.

Then every panel's and variable's query of the chart's dashboard and every alert expression
(rendered with the default thresholds, and with thresholds at zero) goes to Prometheus'
HTTP API: each must return data, except those this run expects to be empty (no sync fails
here, nothing stalls, a young process predicts no memory trouble), and every metric a query
names must be one the proxy exports.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.apiserver.server import ApiServer
from tests.support.cluster import NODE, slice_object
from tests.support.demo import API, WEB, objects, programmed_vips, waited
from tests.support.observability import (
    Query,
    alert_queries,
    dashboard_queries,
    exported_names,
    load_dashboard,
    metric_names,
    rule_groups,
    substitute,
    with_hair_trigger,
)
from tests.support.pods import PodNetwork, tcp_ask
from tests.support.proxy_node import kubeconfig

JOB = "ipvsproxy-metrics"  # the ServiceMonitor's job: the chart's <fullname>-metrics Service
METRICS = "127.0.0.1:10249"
HEALTHZ = "http://127.0.0.1:10256/healthz"
DOWN_TARGET = "127.0.0.1:10299"  # nothing listens here: a node whose proxy is down
DOWN_NODE = "node-down"
PROMETHEUS = "http://127.0.0.1:9090"
TAINT = {"key": "ToBeDeletedByClusterAutoscaler", "value": "1", "effect": "NoSchedule"}

# Queries this run expects to return nothing; every other one must return data.
EMPTY = {
    # No kernel operation fails here.
    "panel 'Sync failures by subsystem' A",
    "panel 'Nodes whose /healthz fails' B",
    "alert IpvsproxySyncFailing",
    # Nothing waits: each change is synced within the min sync period.
    "alert IpvsproxyStalled",
}
# With the default thresholds, a healthy run fires only IpvsproxyDown (the target without a
# proxy); with thresholds at zero the others fire too.
EMPTY_WITH_DEFAULTS = EMPTY | {
    "alert IpvsproxyUnhealthy",
    "alert IpvsproxyNetworkProgrammingSlow",
    "alert IpvsproxyMemoryGrowth",
}


def prometheus_config(directory: Path, rules: Path) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "static_configs": [
                    {"targets": [METRICS], "labels": {"node": NODE}},
                    {"targets": [DOWN_TARGET], "labels": {"node": DOWN_NODE}},
                ],
            }
        ],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(PROMETHEUS + path, params=params) as response:
            body = await response.json()
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        async with self.session.post(
            PROMETHEUS + "/api/v1/query", data={"query": expr}
        ) as response:
            body = await response.json()
        assert body["status"] == "success", f"{expr}: {body}"
        assert body["data"]["resultType"] == "vector", expr
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def has(self, expr: str) -> bool:
        return bool(await self.query(expr))

    async def ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with self.session.get(PROMETHEUS + "/-/ready") as response:
                    if response.status == 200:
                        return True
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.3)
        return False

    async def wait(self, expr: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.has(expr):
                return True
            await asyncio.sleep(0.5)
        return await self.has(expr)


def masq_lines() -> int:
    """Real servers in /proc/net/ip_vs (no process start, unlike ipvsadm)."""
    with open("/proc/net/ip_vs") as table:
        return sum(1 for line in table if line.strip().startswith("->") and "Masq" in line)


async def probe_healthz(session: aiohttp.ClientSession, answers: list[int]) -> None:
    """As the kubelet's readiness probe (every 5 s in the chart; faster here)."""
    while True:
        try:
            async with session.get(HEALTHZ) as response:
                answers.append(response.status)
        except aiohttp.ClientError:
            answers.append(0)
        await asyncio.sleep(0.3)


@pytest.mark.overrides_default(
    "sync_period", reason="the dashboard's resync panels need a full resync within the run"
)
async def test_prometheus_answers_every_dashboard_query_and_alert(netns: int) -> None:
    prometheus_binary = shutil.which("prometheus")
    if prometheus_binary is None:
        pytest.fail("prometheus is missing: install Debian's prometheus package (scripts/setup.sh)")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="ipvsproxy-prometheus-"))
    groups = rule_groups({})
    rules = workdir / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    hair_trigger = alert_queries(rule_groups(with_hair_trigger({})))

    timeline: list[str] = []

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - started:5.1f} s  {what}")

    mark("chart rendered")
    network = PodNetwork()
    web = [await network.add_pod(f"web-{i}", i) for i in (1, 2)]
    api = [await network.add_pod(f"api-{i}", i) for i in (3, 4)]
    client = await network.add_pod("client", 100)
    for pod in web + api:
        await pod.serve_tcp(8080)
    server = ApiServer()
    cluster = objects(web, api)
    for obj in cluster:
        server.put(obj)
    await server.start("127.0.0.1", 0)

    prometheus_log = (workdir / "prometheus.log").open("w")
    prometheus = await asyncio.create_subprocess_exec(
        prometheus_binary,
        f"--config.file={prometheus_config(workdir, rules)}",
        f"--storage.tsdb.path={workdir / 'data'}",
        "--web.listen-address=127.0.0.1:9090",
        stdout=prometheus_log,
        stderr=prometheus_log,
    )
    proxy_log = (workdir / "proxy.log").open("w")
    proxy = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ipvsproxy",
        f"--kubeconfig={kubeconfig(server.url, workdir)}",
        f"--hostname-override={NODE}",
        "--healthz-bind-address=127.0.0.1:10256",
        f"--metrics-bind-address={METRICS}",
        "--ipvs-sync-period=10s",
        # The test's node is a network namespace: the global nf_conntrack_max cannot be
        # raised there (kube-proxy would stop too).
        "--conntrack-max-per-core=0",
        stdout=proxy_log,
        stderr=proxy_log,
    )
    lines: list[str] = []
    probes: list[int] = []
    passed = False
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    prom = Prometheus(session)
    prober: asyncio.Task[None] | None = None
    try:
        mark("Prometheus and the proxy started")
        assert await waited(lambda: API in programmed_vips(), 60) is not None, (
            "the proxy programmed nothing"
        )
        mark("the proxy programmed the Services")
        assert await prom.ready(30), "Prometheus did not start"
        prober = asyncio.create_task(probe_healthz(session, probes))
        # Prometheus sees the counters before the traffic, so that their rates show it.
        scraped = f'ipvsproxy_service_connections_total{{job="{JOB}", node="{NODE}"}}'
        assert await prom.wait(scraped, 30), "Prometheus did not scrape the proxy"
        mark("Prometheus scraped the proxy")
        for _ in range(6):
            assert await tcp_ask(WEB, 80, client) in ("web-1", "web-2")
            assert await tcp_ask(API, 80, client) in ("api-3", "api-4")

        # web-2 leaves, stamped as the EndpointSlice controller stamps a change.
        change = slice_object("web", [(web[0].ip, True)], [("p80", 8080, "TCP")])
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        change["metadata"]["annotations"] = {
            "endpoints.kubernetes.io/last-change-trigger-time": stamp
        }
        before = masq_lines()
        server.put(change)
        assert await waited(lambda: masq_lines() < before, 20) is not None, "web-2 stayed in IPVS"
        assert [await tcp_ask(WEB, 80, client) for _ in range(3)] == ["web-1"] * 3

        mark("traffic sent, web-2 removed")
        # Prometheus has what the queries need: counters read at a full resync after the
        # traffic, the programming latency observed, every series with a few samples.
        ready = {
            f'sum(ipvsproxy_service_connections_total{{job="{JOB}", service="web"}}) > 0': 30,
            f'kubeproxy_network_programming_duration_seconds_count{{job="{JOB}"}} > 0': 20,
            f'up{{job="{JOB}", node="{DOWN_NODE}"}} == 0': 20,
            f'count_over_time(up{{job="{JOB}", node="{NODE}"}}[1m]) >= 5': 20,
        }
        for expr, timeout in ready.items():
            assert await prom.wait(expr, timeout), f"Prometheus never had {expr}"

        mark("Prometheus has the counters and the latency")
        # The Node is being removed: /healthz answers 503 from the next sync on.
        node = next(o for o in cluster if o["kind"] == "Node")
        server.put({**node, "spec": {"taints": [TAINT]}})
        assert await waited(lambda: probes.count(503) >= 3, 20) is not None, probes[-10:]
        healthz_503 = f'kubeproxy_proxy_healthz_total{{job="{JOB}", code="503"}}'
        assert await prom.wait(f"increase({healthz_503}[1m]) > 0", 20)

        mark("/healthz answered 503")
        async with session.get(f"http://{METRICS}/metrics") as response:
            exported = exported_names(text_string_to_metric_families(await response.text()))

        variables = {"job": JOB, "node": ".*", "__rate_interval": "2m"}
        panel_queries = [
            Query(q.where, substitute(q.expr, variables))
            for q in dashboard_queries(load_dashboard())
        ]
        checks = [(q, q.where not in EMPTY) for q in panel_queries]
        checks += [(q, q.where not in EMPTY_WITH_DEFAULTS) for q in alert_queries(groups)]
        checks += [
            (Query(q.where + " (thresholds at zero)", q.expr), q.where not in EMPTY)
            for q in hair_trigger
        ]
        problems = []
        for query, wanted in checks:
            names = metric_names(query.expr)
            if not names or not names <= exported:
                problems.append(f"{query.where}: names {sorted(names - exported) or 'no metric'}")
            result = await prom.query(query.expr)
            values = [float(r["value"][1]) for r in result]
            lines.append(f"{query.where}: {len(result)} series {values[:4]}")
            if wanted and not any(not math.isnan(v) for v in values):
                problems.append(f"{query.where}: no data ({query.expr})")
            if not wanted and result:
                problems.append(f"{query.where}: expected no data, got {result}")
        assert not problems, "\n".join([*problems, "", *lines])

        # What some answers say, beyond being there.
        (connections,) = [q for q in panel_queries if "connections" in q.expr]
        top = await prom.query(connections.expr)
        assert {r["metric"]["service"] for r in top if float(r["value"][1]) > 0} >= {"web", "api"}
        (down_alert,) = [q for q in alert_queries(groups) if q.where == "alert IpvsproxyDown"]
        down = await prom.query(down_alert.expr)
        assert [r["metric"].get("node") for r in down] == [DOWN_NODE]

        # Prometheus itself evaluates the rules it loaded from the chart, without errors.
        loaded = await prom.get("/api/v1/rules")
        evaluated = [r for g in loaded["groups"] for r in g["rules"]]
        assert sorted(r["name"] for r in evaluated) == sorted(
            r["alert"] for g in groups for r in g["rules"]
        )
        for rule in evaluated:
            assert rule["health"] == "ok", rule
        alerts = (await prom.get("/api/v1/alerts"))["alerts"]
        assert [
            (a["labels"]["alertname"], a["labels"].get("node"), a["state"]) for a in alerts
        ] == [("IpvsproxyDown", DOWN_NODE, "pending")]
        mark(f"{len(checks)} queries answered, rules and alerts checked")
        print("\n".join(["", *timeline, *lines]))
        passed = True
    finally:
        if prober is not None:
            prober.cancel()
        await session.close()
        for process in (proxy, prometheus):
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 10)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        proxy_log.close()
        prometheus_log.close()
        await server.stop()
        network.close()
        if not passed:
            print("--- proxy log\n" + (workdir / "proxy.log").read_text()[-4000:])
            print("--- prometheus log\n" + (workdir / "prometheus.log").read_text()[-4000:])
        else:
            shutil.rmtree(workdir, ignore_errors=True)
