"""The chart's dashboard and alert rules as queries, for the tests that check them.

Shared by the host tests (tests/chart/test_observability.py: structure, promtool) and the
real-Prometheus test under the kernel (tests/kernel/test_prometheus.py): both take every
query from the files the chart ships, never from a copy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ipvsproxy"
DASHBOARD = CHART / "dashboards" / "ipvsproxy.json"

# Alert thresholds at which every alert that the end-to-end run can make fire does fire: the
# same expressions as with the defaults, so their label matching is exercised, not only their
# names. (IpvsproxySyncFailing and IpvsproxyStalled need a failing or stuck proxy.)
HAIR_TRIGGER = {
    "unhealthy": {"lastSyncAgeSeconds": 0},
    "networkProgrammingSlow": {"p99Seconds": 0},
    "memoryGrowth": {"window": "5s", "horizon": "0s", "limitBytes": 1},
}

# Metric names Prometheus itself adds for every target.
PROMETHEUS_NAMES = frozenset({"up"})
# What the proxy's own names and the process's start with: a query naming one of these that the
# proxy does not export is a mistake (a name from another exporter would be too).
_NAME = re.compile(
    r"(?<![\w:.$\"])((?:kubeproxy|ipvsproxy|process|python)_[A-Za-z0-9_:]*|up(?=\s*[{\[)]))"
)
_LABEL_VALUES = re.compile(
    r"^label_values\((?P<selector>.+),\s*(?P<label>[A-Za-z_][A-Za-z0-9_]*)\)$"
)


@dataclass(frozen=True)
class Query:
    where: str  # "panel 'Sync rate' A", "variable node", "alert IpvsproxyDown"
    expr: str


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but rows, in the order they appear (rows' nested panels included)."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            out.extend(panel.get("panels", []))
        else:
            out.append(panel)
    return out


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    """Every panel target's expression, and each query variable's as PromQL."""
    out = [
        Query(f"panel {panel['title']!r} {target['refId']}", target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            out.append(Query(f"variable {variable['name']}", label_values_as_promql(text)))
    return out


def label_values_as_promql(text: str) -> str:
    """Grafana's ``label_values(selector, label)`` as the PromQL that finds the same values."""
    match = _LABEL_VALUES.match(text.strip())
    if not match:
        raise ValueError(f"not a label_values() query: {text}")
    return f"count by ({match['label']}) ({match['selector']})"


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's $var and ${var} replaced, longest names first ($__rate_interval before $job)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    if "$" in expr:
        raise ValueError(f"a variable is left in {expr}")
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (the proxy's prefixes, process_*, up)."""
    return set(_NAME.findall(expr))


def exported_names(families: Iterable[Any]) -> set[str]:
    """Every series name a scrape can carry, from prometheus_client metric families (those of a
    registry's collect() or of the text parser), including families that have no sample yet."""
    names = set(PROMETHEUS_NAMES)
    for family in families:
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type in ("histogram", "summary"):
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        names.update(sample.name for sample in family.samples)
    return names


def render(values: dict[str, Any], name: str = "ipvsproxy") -> list[dict[str, Any]]:
    """The chart's manifests for ``values`` (the real Helm library)."""
    import helm_python  # only the tests that render need it

    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values, name=name, namespace="kube-system")
    return [
        doc
        for path, text in rendered.items()
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def rule_groups(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The PrometheusRule's groups, rendered with ``values`` (prometheusRule switched on)."""
    values = {**values, "prometheusRule": {**values.get("prometheusRule", {}), "enabled": True}}
    (rule,) = [d for d in render(values) if d["kind"] == "PrometheusRule"]
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alert_queries(groups: list[dict[str, Any]]) -> list[Query]:
    return [
        Query(f"alert {rule['alert']}", rule["expr"])
        for group in groups
        for rule in group["rules"]
        if "alert" in rule
    ]


def with_hair_trigger(values: dict[str, Any]) -> dict[str, Any]:
    merged = dict(values.get("prometheusRule", {}))
    for key, override in HAIR_TRIGGER.items():
        merged[key] = {**merged.get(key, {}), **override}
    return {**values, "prometheusRule": merged}
