"""The chart's Grafana dashboard and PrometheusRule, checked with the real tools on this host.

- the dashboard ConfigMap and the PrometheusRule render only when switched on, and as the
  Grafana sidecar and the Prometheus Operator expect them;
- every query names only metrics the proxy exports (a fresh ``Metrics()`` registry, which
  lists every family, also those with no sample yet) or Prometheus' ``up``;
- ``promtool check rules`` parses the rendered rules and, as recording rules, every panel's
  and variable's query; ``promtool test rules`` runs tests/chart/alerts_test.yaml, series for
  each alert firing and not firing;
- the ServiceMonitor and the PrometheusRule validate against the Prometheus Operator's CRD
  schemas, as the PyPI package ``cloudcoil-models-prometheus-operator`` carries them;
- the README names every panel and alert.

tests/kernel/test_prometheus.py evaluates the same queries in a real Prometheus scraping the
real proxy.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ipvsproxy.metrics import Metrics
from tests.support.observability import (
    DASHBOARD,
    ROOT,
    alert_queries,
    dashboard_queries,
    exported_names,
    load_dashboard,
    metric_names,
    panels,
    render,
    rule_groups,
    substitute,
    with_hair_trigger,
)

HERE = Path(__file__).resolve().parent
VARIABLES = {"job": "ipvsproxy-metrics", "node": ".*", "__rate_interval": "1m"}
ALERTS = [
    "IpvsproxyDown",
    "IpvsproxyUnhealthy",
    "IpvsproxySyncFailing",
    "IpvsproxyNetworkProgrammingSlow",
    "IpvsproxyStalled",
    "IpvsproxyMemoryGrowth",
]
# What issue 17 asks the dashboard to show, each by a panel of this title.
PANELS = [
    "Sync duration (p50, p99)",
    "Sync rate",
    "Network programming latency (p50, p99)",
    "Pending changes",
    "Sync failures by subsystem",
    "Virtual servers per node",
    "Real servers per node",
    "Top Services by new connections",
    "Top Services by bytes",
    "Nodes whose /healthz fails",
    "Memory",
    "CPU",
]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (scripts/setup.sh)")
    return path


def check_rules(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)


def kind(docs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == name]


# --- rendering


def test_both_are_off_by_default() -> None:
    docs = render({})
    assert kind(docs, "PrometheusRule") == []
    assert [d["metadata"]["name"] for d in kind(docs, "ConfigMap")] == ["ipvsproxy"]


def test_the_dashboard_configmap_is_what_the_grafana_sidecar_loads() -> None:
    docs = render({"grafanaDashboard": {"enabled": True}})
    (cm,) = [d for d in kind(docs, "ConfigMap") if d["metadata"]["name"] == "ipvsproxy-dashboard"]
    assert cm["metadata"]["namespace"] == "kube-system"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    # The file, unchanged: Helm does not template it ({{node}} legends stay as they are).
    assert json.loads(cm["data"]["ipvsproxy.json"]) == load_dashboard()
    assert "{{node}}" in cm["data"]["ipvsproxy.json"]
    # Under what kubectl apply keeps in its last-applied annotation (256 KiB).
    assert len(cm["data"]["ipvsproxy.json"]) < 200_000

    docs = render(
        {
            "grafanaDashboard": {
                "enabled": True,
                "label": "dashboards",
                "labelValue": "ipvs",
                "namespace": "monitoring",
                "annotations": {"grafana_folder": "Networking"},
            }
        }
    )
    (cm,) = [d for d in kind(docs, "ConfigMap") if d["metadata"]["name"] == "ipvsproxy-dashboard"]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["dashboards"] == "ipvs"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Networking"}


def test_the_prometheus_rule_has_every_alert() -> None:
    docs = render({"prometheusRule": {"enabled": True, "labels": {"release": "prom"}}})
    (rule,) = kind(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert [r["alert"] for r in rules] == ALERTS
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning")
        assert r["annotations"]["summary"]
        assert "{{ $labels.node }}" in r["annotations"]["description"]
        assert 'job="ipvsproxy-metrics"' in r["expr"]
        assert "runbook_url" not in r["annotations"]


def test_the_rule_follows_the_values() -> None:
    values = {
        "syncPeriod": "5m",
        "resources": {"limits": {"memory": "1Gi"}},
        "prometheusRule": {
            "job": "kube-proxy",
            "alertLabels": {"team": "net"},
            "runbookURL": "https://docs.example/ipvsproxy/README.md",
            "down": {"for": "1m", "severity": "page"},
            "networkProgrammingSlow": {"p99Seconds": 2.5, "window": "10m"},
        },
    }
    rules = {r["alert"]: r for g in rule_groups(values) for r in g["rules"]}
    down = rules["IpvsproxyDown"]
    assert down["for"] == "1m"
    assert down["labels"] == {"severity": "page", "team": "net"}
    assert down["annotations"]["runbook_url"] == (
        "https://docs.example/ipvsproxy/README.md#ipvsproxydown"
    )
    assert 'up{job="kube-proxy"} == 0' in down["expr"]
    # 3 x the sync period (5m)
    assert rules["IpvsproxyUnhealthy"]["expr"].endswith("> 900")
    slow = rules["IpvsproxyNetworkProgrammingSlow"]["expr"]
    assert "[10m]" in slow
    assert slow.endswith("> 2.5")
    memory = rules["IpvsproxyMemoryGrowth"]["expr"]
    assert "> 1073741824" in memory  # resources.limits.memory
    assert "[6h], 43200)" in memory

    rules = {r["alert"]: r for g in rule_groups({"syncPeriod": "10s"}) for r in g["rules"]}
    assert rules["IpvsproxyUnhealthy"]["expr"].endswith("> 120")  # at least 2 minutes
    values = {"prometheusRule": {"memoryGrowth": {"limitBytes": 300000000}}}
    rules = {r["alert"]: r for g in rule_groups(values) for r in g["rules"]}
    assert "> 300000000" in rules["IpvsproxyMemoryGrowth"]["expr"]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"prometheusRule": {"down": {"for": "5 minutes"}}}, "for"),
        ({"prometheusRule": {"unhealthy": {"lastSyncAgeSeconds": -1}}}, "lastSyncAgeSeconds"),
        ({"prometheusRule": {"networkProgrammingSlow": {"p99": 1}}}, "p99"),
        ({"prometheusRule": {"memoryGrowth": {"limitBytes": "1Gi"}}}, "limitBytes"),
        ({"grafanaDashboard": {"enabled": "yes"}}, "enabled"),
    ],
)
def test_the_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    import helm_python

    with pytest.raises(helm_python.HelmValuesError, match=complaint):
        render(values)


# --- the dashboard


def test_dashboard_layout() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "ipvsproxy"
    every = dashboard["panels"]
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in every:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
    titles = [p["title"] for p in panels(dashboard)]
    assert len(titles) == len(set(titles))
    assert set(PANELS) <= set(titles)
    for panel in panels(dashboard):
        # The data source is the dashboard's variable: the sidecar's dashboards have no inputs.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["legendFormat"]
            # Every query follows the job and node the viewer picked.
            assert 'job=~"$job"' in target["expr"], target["expr"]
            assert 'node=~"$node"' in target["expr"], target["expr"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "job", "node"}
    assert variables["datasource"]["query"] == "prometheus"


def test_every_query_names_only_metrics_the_proxy_exports() -> None:
    exported = exported_names(Metrics().registry.collect())
    queries = dashboard_queries(load_dashboard()) + alert_queries(rule_groups({}))
    used: set[str] = set()
    for query in queries:
        names = metric_names(query.expr)
        assert names, f"{query.where}: names no metric"
        assert names <= exported, f"{query.where}: {sorted(names - exported)} are not exported"
        used |= names
    # The checker itself sees a wrong name.
    assert metric_names("rate(kubeproxy_sync_proxy_rules_duration_secs_count[1m])") - exported
    assert "up" in used
    assert "process_resident_memory_bytes" in used


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    queries = dashboard_queries(load_dashboard())
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substitute(q.expr, VARIABLES)}
        for i, q in enumerate(queries)
    ]
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = check_rules(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_a_broken_query_fails_promtool(tmp_path: Path) -> None:
    path = tmp_path / "bad.rules.yaml"
    bad = {"record": "x:y", "expr": "sum by (node) (rate(ipvsproxy_real_servers[1m])"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [bad]}]}))
    result = check_rules(path)
    assert result.returncode != 0


# --- the alert rules


@pytest.mark.parametrize(
    "values",
    [{}, with_hair_trigger({}), {"syncPeriod": "1m30s", "prometheusRule": {"job": "kube-proxy"}}],
    ids=["default", "hair-trigger", "other"],
)
def test_promtool_checks_the_rules(tmp_path: Path, values: dict[str, Any]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(values)}))
    result = check_rules(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_each_alert_firing_and_not(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups({})}))
    tests = HERE / "alerts_test.yaml"
    shutil.copy(tests, tmp_path / tests.name)
    cases = yaml.safe_load(tests.read_text())["tests"]
    covered = {t["alertname"] for case in cases for t in case["alert_rule_test"]}
    assert covered == set(ALERTS)
    result = subprocess.run(
        [promtool(), "test", "rules", tests.name], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


# --- the Prometheus Operator's CRD schemas


def _go_regex(schema: Any) -> Any:
    """Go's RE2 takes (?i) anywhere; Python only at the start."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str) and value.startswith("^(?i)"):
                schema[key] = "(?i)^" + value[len("^(?i)") :]
            else:
                _go_regex(value)
    elif isinstance(schema, list):
        for item in schema:
            _go_regex(item)
    return schema


def _closed(schema: Any) -> Any:
    """Unknown fields are errors, as with kubectl's strict field validation: the CRDs'
    structural schemas would otherwise prune them silently."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            _closed(value)
    elif isinstance(schema, list):
        for item in schema:
            _closed(item)
    return schema


def crd_validator(kind_name: str) -> jsonschema.protocols.Validator:
    """The CRD's openAPIV3Schema as cloudcoil's models carry it (generated from the Prometheus
    Operator's published CRDs, v0.80.1), as JSON Schema."""
    from cloudcoil.models.prometheus_operator import v1

    model = {"ServiceMonitor": v1.ServiceMonitor, "PrometheusRule": v1.PrometheusRule}[kind_name]
    schema = _closed(_go_regex(model.model_json_schema(by_alias=True, mode="validation")))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)  # type: ignore[no-any-return]


ALL_ON = {
    "metricsBindAddress": "0.0.0.0:10249",
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}, "runbookURL": "https://x/"},
    "grafanaDashboard": {"enabled": True},
}


@pytest.mark.parametrize("kind_name", ["ServiceMonitor", "PrometheusRule"])
def test_custom_resources_validate_against_the_crd_schema(kind_name: str) -> None:
    validator = crd_validator(kind_name)
    (doc,) = kind(render(ALL_ON), kind_name)
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []

    # The check has teeth: a misspelt field, and a duration the operator refuses.
    bad = copy.deepcopy(doc)
    if kind_name == "ServiceMonitor":
        bad["spec"]["endpoints"][0]["intervall"] = bad["spec"]["endpoints"][0].pop("interval")
        worse = copy.deepcopy(doc)
        worse["spec"]["endpoints"][0]["interval"] = "30 s"
    else:
        bad["spec"]["groups"][0]["rules"][0]["fro"] = "5m"
        worse = copy.deepcopy(doc)
        worse["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert not validator.is_valid(bad)
    assert not validator.is_valid(worse)


# --- the README


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Dashboards and alerts\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, "the README has no 'Dashboards and alerts' section"
    return match.group(1)


def test_the_readme_names_every_panel_and_alert() -> None:
    section = readme_section()
    for title in [p["title"] for p in panels(load_dashboard())]:
        assert title in section, title
    for alert in ALERTS:
        # A runbook line each, under an anchor the rules' runbook_url points at.
        assert f'<a id="{alert.lower()}"></a>' in section, alert
        (item,) = [i for i in re.split(r"\n(?=- |\n)", section) if f"**{alert}**" in i]
        assert "Runbook: " in item, alert
    assert "![" not in section  # no screenshots
    assert DASHBOARD.relative_to(ROOT).as_posix() in section
