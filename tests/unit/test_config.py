"""Config: the KubeProxyConfiguration file, layering. (Value forms: config/test_values.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from ipvsproxy.config import (
    Config,
    ConfigError,
    build_config,
    load_config_file,
    parse_config_document,
)


def test_defaults_are_kube_proxys() -> None:
    c = Config().validate()
    assert c.ipvs_scheduler == "rr"
    assert c.ipvs_sync_period == 30.0
    assert c.healthz_bind_address == "0.0.0.0:10256"
    assert c.metrics_bind_address == "127.0.0.1:10249"
    assert c.health_timeout == 60.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ipvs_scheduler": "fastest"}, "ipvs-scheduler: unknown scheduler 'fastest'"),
        ({"ipvs_sync_period": 0.0}, "ipvs-sync-period: must be greater than 0"),
        ({"ipvs_min_sync_period": 60.0}, "ipvs-min-sync-period: must not exceed"),
        ({"ipvs_udp_timeout": -1.0}, "ipvs-udp-timeout: must not be negative"),
        ({"bind_address": "nope"}, "bind-address: not an IP address"),
        ({"cluster_cidrs": ("10.0.0.0/33",)}, "cluster-cidr: not a CIDR"),
        ({"ipvs_exclude_cidrs": ("x",)}, "ipvs-exclude-cidrs: not a CIDR"),
        ({"metrics_bind_address": "localhost:1"}, "metrics-bind-address: not an IP"),
    ],
)
def test_validate_names_the_bad_setting(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config(**changes).validate()  # type: ignore[arg-type]


def test_nodeport_addresses_accepts_primary() -> None:
    Config(nodeport_addresses=("primary",)).validate()


FULL = {
    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
    "kind": "KubeProxyConfiguration",
    "mode": "ipvs",
    "bindAddress": "10.0.0.5",
    "clusterCIDR": "10.244.0.0/16,fd00:10:244::/56",
    "hostnameOverride": "node-a",
    "healthzBindAddress": "0.0.0.0:10256",
    "metricsBindAddress": "0.0.0.0:10249",
    "nodePortAddresses": ["10.0.0.0/24"],
    "clientConnection": {"kubeconfig": "/var/lib/ipvsproxy/kubeconfig", "qps": 5},
    "iptables": {"masqueradeAll": True, "masqueradeBit": 14},
    "ipvs": {
        "scheduler": "lc",
        "syncPeriod": "1m",
        "minSyncPeriod": "500ms",
        "strictARP": True,
        "tcpTimeout": "15m",
        "tcpFinTimeout": "30s",
        "udpTimeout": "5s",
        "excludeCIDRs": ["192.168.100.0/24"],
    },
    "conntrack": {"maxPerCore": 32768},
    "logging": {"format": "json", "verbosity": 2},
}


def test_config_document_maps_every_field() -> None:
    values, ignored = parse_config_document(FULL)
    c = build_config(values)
    assert c == Config(
        kubeconfig="/var/lib/ipvsproxy/kubeconfig",
        hostname_override="node-a",
        bind_address="10.0.0.5",
        cluster_cidrs=("10.244.0.0/16", "fd00:10:244::/56"),
        masquerade_all=True,
        nodeport_addresses=("10.0.0.0/24",),
        ipvs_scheduler="lc",
        ipvs_sync_period=60.0,
        ipvs_min_sync_period=0.5,
        ipvs_strict_arp=True,
        ipvs_tcp_timeout=900.0,
        ipvs_tcpfin_timeout=30.0,
        ipvs_udp_timeout=5.0,
        ipvs_exclude_cidrs=("192.168.100.0/24",),
        healthz_bind_address="0.0.0.0:10256",
        metrics_bind_address="0.0.0.0:10249",
        log_format="json",
        verbosity=2,
    )
    assert sorted(ignored) == ["clientConnection.qps", "conntrack", "iptables.masqueradeBit"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"ipvs": {"schedular": "lc"}}, "ipvs.schedular: unknown field"),
        ({"bogus": 1}, "bogus: unknown field"),
        ({"ipvs": {"syncPeriod": 30}}, "ipvs.syncPeriod: expected a duration string"),
        ({"ipvs": {"syncPeriod": "30"}}, "ipvs.syncPeriod: invalid duration '30'"),
        ({"ipvs": {"strictARP": "yes"}}, "ipvs.strictARP: expected true or false"),
        ({"mode": "iptables"}, "mode: this proxy implements only ipvs"),
        ({"apiVersion": "v1"}, "apiVersion: expected kubeproxy.config.k8s.io/v1alpha1"),
        ({"kind": "Pod"}, "kind: expected KubeProxyConfiguration"),
        ({"ipvs": ["a"]}, "ipvs: expected a mapping"),
        ({"nodePortAddresses": [1]}, "nodePortAddresses: expected a list of strings"),
        ({"logging": {"format": "xml"}}, "logging.format: expected json or text"),
        ([1, 2], "config: expected a mapping"),
    ],
)
def test_config_document_errors_name_the_field(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config_document(doc)


def test_empty_document_means_defaults() -> None:
    values, ignored = parse_config_document(None)
    assert build_config(values) == Config()
    assert ignored == []


def test_flags_win_over_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("ipvs:\n  scheduler: lc\n  syncPeriod: 10s\n")
    values, _ = load_config_file(str(path))
    c = build_config(values, {"ipvs_scheduler": "wrr"})
    assert (c.ipvs_scheduler, c.ipvs_sync_period) == ("wrr", 10.0)


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ipvs: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config: .*bad.yaml is not valid YAML"):
        load_config_file(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(str(tmp_path / "missing.yaml"))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("ipvs:\n  scheduler: nope\n")
    values, _ = load_config_file(str(wrong))
    with pytest.raises(ConfigError, match="unknown scheduler 'nope'"):
        build_config(values)
