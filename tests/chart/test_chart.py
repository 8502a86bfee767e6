"""The Helm chart, with the real Helm library (helm-python-sdk) and Kubernetes' schemas.

Run with `tox -e chart` (or `pytest tests/chart` with helm-python-sdk and
kubernetes-validate installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from ipvsproxy.cli import parse_command_line
from ipvsproxy.config import FileReport, read_config_document

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ipvsproxy"
KUBE_VERSIONS = ("1.28.0", "1.31.0", "1.37.0")
# Custom resources have no schema in kubernetes-validate (test_observability.py checks them
# against the Prometheus Operator's CRD schemas).
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}

NON_DEFAULT = {
    "image": {"repository": "registry.example/ipvsproxy", "tag": "9.9.9", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "pull"}],
    "scheduler": "lc",
    "syncPeriod": "1m",
    "minSyncPeriod": "500ms",
    "masqueradeAll": True,
    "clusterCIDR": "10.244.0.0/16,fd00:10:244::/56",
    "nodePortAddresses": ["192.168.0.0/16"],
    "strictARP": True,
    "excludeCIDRs": ["10.200.0.0/24"],
    "tcpTimeout": "15m",
    "tcpFinTimeout": "30s",
    "udpTimeout": "5s",
    "healthzBindAddress": "0.0.0.0:20256",
    "metricsBindAddress": "0.0.0.0:20249",
    "logFormat": "console",
    "verbosity": 2,
    "apiServer": {"host": "10.0.0.10", "port": 6443},
    "initOnly": False,
    "detectLocalMode": "InterfaceNamePrefix",
    "detectLocal": {"bridgeInterface": "", "interfaceNamePrefix": "cali"},
    "conntrack": {
        "maxPerCore": 0,
        "min": 1000000,
        "tcpEstablishedTimeout": "2h",
        "tcpCloseWaitTimeout": "0s",
        "tcpBeLiberal": True,
        "udpTimeout": "30s",
        "udpStreamTimeout": "2m",
    },
    "bindAddressHardFail": True,
    # Flags that apply over the config file (kube-proxy's rule): logging, here.
    "extraArgs": ["-v=3", "--log-flush-frequency=1s"],
    "resources": {"requests": {"cpu": "50m"}},
    "nodeSelector": {"node-role.kubernetes.io/worker": ""},
    "podAnnotations": {"a": "b"},
    "podLabels": {"team": "net"},
    "serviceAccount": {"create": False, "name": "existing"},
    "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Networking"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
}


@pytest.fixture(scope="module")
def chart() -> Any:
    return helm_python.Chart.load(str(CHART))


def render(chart: Any, values: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Template path -> the manifests it rendered (NOTES.txt as a one-item raw list)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path, text in chart.render(values, name="ipvsproxy", namespace="kube-system").items():
        if path.endswith("NOTES.txt"):
            out[path] = [{"notes": text}]
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        if docs:
            out[path] = docs
    return out


def manifests(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [d for path, docs in rendered.items() if not path.endswith("NOTES.txt") for d in docs]


def find(rendered: dict[str, list[dict[str, Any]]], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in manifests(rendered) if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_lint_strict_is_clean(kube: str, values: dict[str, Any]) -> None:
    report = helm_python.lint(str(CHART), values, strict=True, kube_version=f"v{kube}")
    assert report["errors"] == []
    # severity 2 is a warning, 3 an error; 1 (info: "icon is recommended") is allowed
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_every_manifest_is_valid_kubernetes(chart: Any, values: dict[str, Any]) -> None:
    docs = manifests(render(chart, values))
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet"]
    if values.get("serviceMonitor", {}).get("enabled"):
        expected += ["Service", "ServiceMonitor"]
    if values.get("grafanaDashboard", {}).get("enabled"):
        expected.append("ConfigMap")
    if values.get("prometheusRule", {}).get("enabled"):
        expected.append("PrometheusRule")
    if values.get("serviceAccount", {}).get("create", True):
        expected.append("ServiceAccount")
    assert kinds == sorted(expected)
    checked = 0
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            continue
        for kube in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, kube, strict=True)
            checked += 1
    assert checked >= 2 * len(KUBE_VERSIONS)


def test_validation_would_catch_a_bad_manifest(chart: Any) -> None:
    ds = find(render(chart, {}), "DaemonSet")
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBE_VERSIONS[0], strict=True)


def test_daemonset_shape(chart: Any) -> None:
    ds = find(render(chart, {}), "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert "/lib/modules" not in {m["mountPath"] for m in container["volumeMounts"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 10256, "metrics": 10249}
    assert "/run/xtables.lock" in {m["mountPath"] for m in container["volumeMounts"]}
    host_paths = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
    assert host_paths["xtables-lock"] == "/run/xtables.lock"
    assert host_paths["lib-modules"] == "/lib/modules"


def test_the_node_set_up_is_a_privileged_init_container(chart: Any, tmp_path: Path) -> None:
    """kube-proxy's --init-only: modules, sysctls and conntrack, privileged, then exit."""
    rendered = render(chart, {})
    spec = find(rendered, "DaemonSet")["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["securityContext"] == {"privileged": True}
    assert init["image"] == spec["containers"][0]["image"]
    mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    assert mounts["/lib/modules"]["readOnly"] is True
    assert mounts["/etc/ipvsproxy"]["readOnly"] is True
    args = [a.replace("$(NODE_NAME)", "node-a") for a in init["args"]]
    config = str(config_from(rendered, tmp_path))
    inv = parse_command_line([a.replace("/etc/ipvsproxy/config.yaml", config) for a in args])
    assert inv.command == "init-only"
    assert inv.notices == ()
    # Without it: no init container, no host path for modules, still not privileged.
    spec = find(render(chart, {"initOnly": False}), "DaemonSet")["spec"]["template"]["spec"]
    assert "initContainers" not in spec
    assert "lib-modules" not in {v["name"] for v in spec["volumes"]}
    assert spec["containers"][0]["securityContext"]["privileged"] is False


def test_rbac_is_minimal(chart: Any) -> None:
    role = find(render(chart, {}), "ClusterRole")
    grants = {
        (group, resource): sorted(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert grants == {
        ("", "services"): ["list", "watch"],
        ("discovery.k8s.io", "endpointslices"): ["list", "watch"],
        ("", "nodes"): ["get", "list", "watch"],
        ("", "events"): ["create", "patch"],
        ("events.k8s.io", "events"): ["create", "patch"],
    }


def config_from(rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    (cm,) = [
        d for d in manifests(rendered) if d["kind"] == "ConfigMap" and "config.yaml" in d["data"]
    ]
    path.write_text(cm["data"]["config.yaml"])
    return path


def container_args(rendered: dict[str, list[dict[str, Any]]], config_path: Path) -> list[str]:
    """The DaemonSet's argv after the kubelet's $(VAR) expansion, config path redirected."""
    (container,) = find(rendered, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["ipvsproxy"]
    args = [a.replace("$(NODE_NAME)", "node-a") for a in container["args"]]
    assert "--config=/etc/ipvsproxy/config.yaml" in args
    return [a.replace("/etc/ipvsproxy/config.yaml", str(config_path)) for a in args]


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["default", "non-default"])
def test_daemonset_args_parse_with_the_real_cli(
    chart: Any, values: dict[str, Any], tmp_path: Path
) -> None:
    rendered = render(chart, values)
    inv = parse_command_line(container_args(rendered, config_from(rendered, tmp_path)))
    assert inv.command == "run"
    assert inv.notices == ()
    c = inv.config
    assert c.hostname_override == "node-a"
    if not values:
        assert (c.ipvs_scheduler, c.ipvs_sync_period, c.ipvs_min_sync_period) == ("rr", 30.0, 0.0)
        assert (c.healthz_bind_address, c.metrics_bind_address) == (
            "0.0.0.0:10256",
            "127.0.0.1:10249",
        )
        assert (c.log_format, c.verbosity) == ("json", 0)
        return
    # The logging flags in extraArgs apply over the config file, as in kube-proxy.
    assert (c.verbosity, c.log_flush_frequency) == (3, 1.0)
    assert c.ipvs_scheduler == "lc"
    assert c.ipvs_sync_period == 60.0
    assert c.ipvs_min_sync_period == 0.5
    assert c.masquerade_all is True
    assert c.cluster_cidrs == ("10.244.0.0/16", "fd00:10:244::/56")
    assert c.nodeport_addresses == ("192.168.0.0/16",)
    assert c.ipvs_strict_arp is True
    assert c.ipvs_exclude_cidrs == ("10.200.0.0/24",)
    assert (c.ipvs_tcp_timeout, c.ipvs_tcpfin_timeout, c.ipvs_udp_timeout) == (900.0, 30.0, 5.0)
    assert c.healthz_bind_address == "0.0.0.0:20256"
    assert c.log_format == "console"
    assert (c.detect_local_mode, c.detect_local_interface_name_prefix) == (
        "InterfaceNamePrefix",
        "cali",
    )
    assert (c.conntrack_max_per_core, c.conntrack_min) == (0, 1000000)
    assert (c.conntrack_tcp_established_timeout, c.conntrack_tcp_close_wait_timeout) == (7200, 0)
    assert (c.conntrack_udp_timeout, c.conntrack_udp_stream_timeout) == (30.0, 120.0)
    assert c.conntrack_tcp_be_liberal is True
    assert c.bind_address_hard_fail is True


def test_a_setting_flag_in_extra_args_is_ignored_with_a_warning(chart: Any, tmp_path: Path) -> None:
    # kube-proxy ignores setting flags next to --config; ipvsproxy does too, and says so.
    rendered = render(chart, {"scheduler": "lc", "extraArgs": ["--ipvs-scheduler=wrr"]})
    inv = parse_command_line(container_args(rendered, config_from(rendered, tmp_path)))
    assert inv.config.ipvs_scheduler == "lc"
    (notice,) = inv.notices
    assert notice.names == ("--ipvs-scheduler",)


def test_probe_and_metrics_ports_follow_the_addresses(chart: Any) -> None:
    rendered = render(chart, NON_DEFAULT)
    container = find(rendered, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "healthz": 20256,
        "metrics": 20249,
    }
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBERNETES_SERVICE_HOST"] == "10.0.0.10"
    assert find(rendered, "Service")["spec"]["ports"][0]["port"] == 20249


def keys(doc: Any, prefix: str = "") -> set[str]:
    if not isinstance(doc, dict):
        return set()
    out = set()
    for k, v in doc.items():
        out.add(prefix + k)
        out |= keys(v, f"{prefix}{k}.")
    return out


def test_configmap_carries_the_packaged_config_format(chart: Any) -> None:
    chart_doc = yaml.safe_load(find(render(chart, {}), "ConfigMap")["data"]["config.yaml"])
    packaged = yaml.safe_load((ROOT / "packaging" / "config.yaml").read_text())
    # Same format: every field the chart writes is one the node-service file has,
    # and both load without unknown or ignored fields.
    assert keys(chart_doc) <= keys(packaged)
    assert read_config_document(chart_doc)[1] == FileReport()
    assert read_config_document(packaged)[1] == FileReport()


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"scheduler": "fastest"}, "/scheduler"),
        ({"syncPeriod": "30"}, "/syncPeriod"),
        ({"minSyncPeriod": "1 second"}, "/minSyncPeriod"),
        ({"udpTimeout": "5d"}, "/udpTimeout"),
        ({"healthzBindAddress": "10256"}, "/healthzBindAddress"),
        ({"schedular": "lc"}, "schedular"),
        ({"masqueradeAll": "yes"}, "/masqueradeAll"),
        ({"detectLocalMode": "PodCIDR"}, "/detectLocalMode"),
        ({"detectLocal": {"interfaceNamePrefix": "veth+"}}, "/detectLocal"),
        ({"conntrack": {"maxPerCore": -1}}, "/conntrack"),
        ({"conntrack": {"tcpEstablishedTimeout": "1d"}}, "/conntrack"),
        ({"privileged": True}, "privileged"),
    ],
)
def test_schema_rejects_bad_values(chart: Any, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm_python.HelmValuesError, match=complaint):
        chart.render(values, name="ipvsproxy", namespace="kube-system")
    report = helm_python.lint(str(CHART), values, strict=True)
    assert report["errors"]


def test_schema_durations_agree_with_the_cli_parser(chart: Any) -> None:
    # Every duration the schema accepts must parse with the proxy's parser.
    from ipvsproxy.config import parse_duration

    for text in ("0", "0s", "30s", "1m", "500ms", "1h30m", "1.5s", "100us"):
        chart.render({"syncPeriod": "2h", "minSyncPeriod": text}, name="x", namespace="y")
        parse_duration(text)


def test_notes_say_how_to_check(chart: Any) -> None:
    notes = render(chart, {})["ipvsproxy/templates/NOTES.txt"][0]["notes"]
    assert "/healthz" in notes
    assert "ipvsadm -Ln" in notes
    assert "--cleanup" in notes
    warned = render(chart, {"serviceMonitor": {"enabled": True}})["ipvsproxy/templates/NOTES.txt"]
    assert "Prometheus cannot reach it" in warned[0]["notes"]
