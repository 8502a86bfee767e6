"""Reading KubeProxyConfiguration files as kube-proxy reads them: every field of 1.19..1.36,
defaulting of zeros and nulls, a lenient read instead of a fatal one, errors naming the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from ipvsproxy.config import (
    FILE_DEFAULTS,
    Config,
    ConfigError,
    FileReport,
    load_config_file,
    read_config_document,
)
from ipvsproxy.config.schema import KUBE_PROXY_CONFIGURATION, Role, walk

FIXTURES = Path(__file__).parents[1] / "fixtures" / "kube_proxy"
# kube-proxy's defaults for a config file (ipvs.minSyncPeriod has none: 0).
FILE_DEFAULT = Config(**FILE_DEFAULTS)
KUBEADM_KUBECONFIG = "/var/lib/kube-proxy/kubeconfig.conf"


def read(doc: Any) -> tuple[Config, FileReport]:
    return read_config_document(doc, source="test.yaml")


@pytest.mark.parametrize(
    ("fixture", "expected", "obsolete"),
    [
        (
            "kubeadm-1.19.yaml",
            dataclasses.replace(
                FILE_DEFAULT, kubeconfig=KUBEADM_KUBECONFIG, cluster_cidrs=("10.244.0.0/16",)
            ),
            ("udpIdleTimeout",),
        ),
        (
            "kubeadm-1.36.yaml",
            dataclasses.replace(
                FILE_DEFAULT,
                kubeconfig=KUBEADM_KUBECONFIG,
                cluster_cidrs=("10.244.0.0/16", "fd00:10:244::/56"),
            ),
            (),
        ),
        ("kube-proxy-1.19-written.yaml", FILE_DEFAULT, ("udpIdleTimeout",)),
    ],
)
def test_kubeadm_files_load_to_kube_proxys_defaults(
    fixture: str, expected: Config, obsolete: tuple[str, ...]
) -> None:
    config, report = load_config_file(str(FIXTURES / fixture))
    assert config == expected
    assert report == FileReport(obsolete=obsolete)
    # Spelled out, the defaults the issue names:
    assert (config.ipvs_scheduler, config.ipvs_sync_period) == ("rr", 30.0)
    assert (config.healthz_bind_address, config.metrics_bind_address) == (
        "0.0.0.0:10256",
        "127.0.0.1:10249",
    )
    assert (config.conntrack_max_per_core, config.conntrack_min) == (32768, 131072)
    assert (config.masquerade_bit, config.oom_score_adj, config.config_sync_period) == (
        14,
        -999,
        900.0,
    )
    assert (config.api_qps, config.api_burst, config.log_flush_frequency) == (5.0, 10, 5.0)


def test_every_field_of_every_release_is_understood() -> None:
    # kube-proxy's v1alpha1 type, 1.19 to 1.36 (research notes §1.1): none may be unknown.
    paths = {path for path, _ in walk()}
    for path in (
        "bindAddressHardFail",
        "clientConnection.acceptContentTypes",
        "conntrack.tcpBeLiberal",
        "conntrack.udpStreamTimeout",
        "detectLocal.interfaceNamePrefix",
        "iptables.localhostNodePorts",
        "logging.options.text.infoBufferSize",
        "nftables.masqueradeBit",
        "portRange",
        "udpIdleTimeout",
        "windowsRunAsService",
        "winkernel.forwardHealthCheckVip",
        "winkernel.rootHnsEndpointName",
    ):
        assert path in paths
    assert [p for p, f in walk() if f.role is Role.OBSOLETE] == ["udpIdleTimeout"]
    # The top level: the union of the releases' fields (apiVersion and kind aside).
    assert set(KUBE_PROXY_CONFIGURATION) == {
        *("featureGates", "clientConnection", "logging", "hostnameOverride", "bindAddress"),
        *("healthzBindAddress", "metricsBindAddress", "bindAddressHardFail", "enableProfiling"),
        *("showHiddenMetricsForVersion", "clusterCIDR", "mode", "iptables", "ipvs", "nftables"),
        *("winkernel", "detectLocalMode", "detectLocal", "nodePortAddresses", "oomScoreAdj"),
        *("conntrack", "configSyncPeriod", "portRange", "udpIdleTimeout", "windowsRunAsService"),
    }


@pytest.mark.parametrize(
    ("doc", "changes"),
    [
        # Pointer fields: null is the default, an explicit zero is kept.
        ({"conntrack": {"maxPerCore": 0}}, {"conntrack_max_per_core": 0}),
        ({"conntrack": {"maxPerCore": None}}, {}),
        ({"conntrack": {"tcpEstablishedTimeout": "0s"}}, {"conntrack_tcp_established_timeout": 0}),
        ({"oomScoreAdj": 0}, {"oom_score_adj": 0}),
        ({"iptables": {"masqueradeBit": None}}, {}),
        ({"iptables": {"masqueradeBit": 16}}, {"masquerade_bit": 16}),
        # Other fields: zero is the default too.
        ({"ipvs": {"syncPeriod": "0s", "scheduler": ""}}, {}),
        ({"clientConnection": {"qps": 0, "burst": 0, "contentType": ""}}, {}),
        ({"configSyncPeriod": "0s", "detectLocalMode": ""}, {}),
        ({"logging": {"flushFrequency": 0}}, {}),
        ({"logging": {"flushFrequency": 2_000_000_000}}, {"log_flush_frequency": 2.0}),
        (
            {"logging": {"flushFrequency": "2s", "format": "text"}},
            {"log_flush_frequency": 2.0, "log_format": "console"},
        ),
        ({"logging": {"format": "json", "verbosity": 3}}, {"log_format": "json", "verbosity": 3}),
        ({"ipvs": {"minSyncPeriod": "1s"}}, {"ipvs_min_sync_period": 1.0}),
        (
            {"conntrack": {"udpTimeout": "30s", "tcpBeLiberal": True}},
            {"conntrack_udp_timeout": 30.0, "conntrack_tcp_be_liberal": True},
        ),
        (
            {
                "detectLocalMode": "InterfaceNamePrefix",
                "detectLocal": {"interfaceNamePrefix": "veth"},
            },
            {
                "detect_local_mode": "InterfaceNamePrefix",
                "detect_local_interface_name_prefix": "veth",
            },
        ),
        ({"featureGates": {"WatchList": False}}, {"feature_gates": (("WatchList", False),)}),
        ({"hostnameOverride": "Node-A", "mode": "ipvs"}, {"hostname_override": "Node-A"}),
        ({"nodePortAddresses": ["primary"]}, {"nodeport_addresses": ("primary",)}),
    ],
)
def test_defaulting_is_kube_proxys(doc: dict[str, Any], changes: dict[str, Any]) -> None:
    config, report = read(doc)
    assert config == dataclasses.replace(FILE_DEFAULT, **changes)
    assert report == FileReport()


@pytest.mark.parametrize(
    ("doc", "healthz", "metrics"),
    [
        ({"bindAddress": "::"}, "[::]:10256", "[::1]:10249"),
        ({"bindAddress": "fd00::5"}, "[::]:10256", "[::1]:10249"),
        ({"bindAddress": "10.0.0.5"}, "0.0.0.0:10256", "127.0.0.1:10249"),
        (
            {"healthzBindAddress": "10.0.0.5", "metricsBindAddress": "::1"},
            "10.0.0.5:10256",
            "[::1]:10249",
        ),
        (
            {"healthzBindAddress": "0.0.0.0:1", "metricsBindAddress": "[::]:2"},
            "0.0.0.0:1",
            "[::]:2",
        ),
    ],
)
def test_http_addresses_default_from_the_bind_address(
    doc: dict[str, Any], healthz: str, metrics: str
) -> None:
    config, _ = read(doc)
    assert (config.healthz_bind_address, config.metrics_bind_address) == (healthz, metrics)


def test_unknown_fields_are_dropped_and_reported_not_fatal() -> None:
    config, report = read(
        {"ipvs": {"schedular": "lc", "scheduler": "sh"}, "bogus": 1, "Mode": "x", "linux": {}}
    )
    assert config.ipvs_scheduler == "sh"
    assert report.unknown == ("ipvs.schedular", "bogus", "Mode", "linux")
    assert report.lenient


def test_duplicate_keys_are_reported_and_the_last_counts(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("ipvs:\n  scheduler: lc\n  scheduler: sh\n")
    config, report = load_config_file(str(path))
    assert config.ipvs_scheduler == "sh"
    assert report.duplicates == ("scheduler (line 3)",)


def test_fields_without_meaning_here_are_reported_only_when_set() -> None:
    zeros = {
        "winkernel": {"enableDSR": False, "networkName": "", "rootHnsEndpointName": ""},
        "iptables": {"syncPeriod": "0s", "minSyncPeriod": "1s", "localhostNodePorts": True},
        "nftables": {"masqueradeBit": 14, "syncPeriod": "30s"},
        "portRange": "",
        "enableProfiling": False,
        "logging": {"vmodule": [], "options": {"json": {"infoBufferSize": "0"}}},
    }
    assert read(zeros)[1] == FileReport()
    _, report = read(
        {
            "winkernel": {"enableDSR": True},
            "iptables": {"syncPeriod": "10s", "localhostNodePorts": False},
            "nftables": {"masqueradeBit": 0},
            "portRange": "30000-32767",
            "enableProfiling": True,
            "logging": {"vmodule": [{"filePattern": "proxier*", "verbosity": 4}]},
        }
    )
    assert report.ignored == (
        "winkernel.enableDSR",
        "iptables.syncPeriod",
        "iptables.localhostNodePorts",
        "nftables.masqueradeBit",
        "portRange",
        "enableProfiling",
        "logging.vmodule",
    )
    assert not report.lenient


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"ipvs": {"syncPeriod": 30}}, "ipvs.syncPeriod: expected a duration string"),
        ({"ipvs": {"syncPeriod": "30"}}, "ipvs.syncPeriod: invalid duration '30'"),
        ({"ipvs": {"strictARP": "yes"}}, "ipvs.strictARP: expected true or false"),
        ({"ipvs": ["a"]}, "ipvs: expected a mapping"),
        ({"nodePortAddresses": [1]}, "nodePortAddresses: expected a list of strings"),
        ({"clusterCIDR": ["10.0.0.0/8"]}, "clusterCIDR: expected a string"),
        ({"logging": {"format": "xml"}}, "logging.format: unsupported log format 'xml'"),
        ({"featureGates": {"A": "yes"}}, "featureGates: expected a mapping of feature-gate"),
        ({"conntrack": {"maxPerCore": "x"}}, "conntrack.maxPerCore: expected an integer"),
        ({"oomScoreAdj": 2**31}, "oomScoreAdj: expected an integer"),
        ({"clientConnection": {"qps": "fast"}}, "clientConnection.qps: expected a number"),
        ({"winkernel": {"enableDSR": "yes"}}, "winkernel.enableDSR: expected true or false"),
        ({"mode": "iptables"}, "mode: this proxy implements only ipvs, got 'iptables'"),
        ({"mode": "nftables"}, "mode: this proxy implements only ipvs"),
        ({"apiVersion": "v1"}, "apiVersion: expected kubeproxy.config.k8s.io/v1alpha1"),
        ({"apiVersion": "kubeproxy.config.k8s.io/v1alpha2"}, "apiVersion: expected"),
        ({"kind": "Pod"}, "kind: expected KubeProxyConfiguration"),
        ([1, 2], "expected a mapping"),
        # Validation, named by the file's field.
        ({"ipvs": {"syncPeriod": "-1s"}}, "ipvs.syncPeriod: must be greater than 0"),
        ({"ipvs": {"scheduler": "nope"}}, "ipvs.scheduler: unknown scheduler 'nope'"),
        (
            {"ipvs": {"minSyncPeriod": "1m"}},
            "ipvs.minSyncPeriod: must not be greater than ipvs.syncPeriod",
        ),
        ({"featureGates": {"Foo": True}}, "featureGates: unrecognized feature gate: Foo"),
        ({"conntrack": {"min": -1}}, "conntrack.min: must be greater than or equal to 0"),
        ({"iptables": {"masqueradeBit": 0}}, "iptables.masqueradeBit: bit 0 is taken"),
        ({"clusterCIDR": "10.0.0.0/8,11.0.0.0/8"}, "clusterCIDR: must be a single CIDR"),
        ({"healthzBindAddress": "localhost"}, "healthzBindAddress: want HOST:PORT"),
        ({"bindAddress": "node-a"}, "bindAddress: not an IP address"),
        ({"detectLocalMode": "BridgeInterface"}, "detectLocal.bridgeInterface: must not be"),
        ({"oomScoreAdj": -1001}, "oomScoreAdj: must be within the range [-1000, 1000]"),
    ],
)
def test_errors_name_the_file_and_the_field(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        read(doc)
    assert str(caught.value) == f"config test.yaml: {message}" or str(caught.value).startswith(
        f"config test.yaml: {message}"
    )


def test_empty_document_means_the_file_defaults() -> None:
    assert read(None) == (FILE_DEFAULT, FileReport())
    assert read({}) == (FILE_DEFAULT, FileReport())


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ipvs: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config: .*bad.yaml is not valid YAML"):
        load_config_file(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(str(tmp_path / "missing.yaml"))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("ipvs:\n  scheduler: nope\n")
    with pytest.raises(ConfigError, match=rf"^config {wrong}: ipvs.scheduler: unknown scheduler"):
        load_config_file(str(wrong))


FULL = {
    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
    "kind": "KubeProxyConfiguration",
    "mode": "ipvs",
    "bindAddress": "10.0.0.5",
    "bindAddressHardFail": True,
    "clusterCIDR": "10.244.0.0/16,fd00:10:244::/56",
    "configSyncPeriod": "5m",
    "hostnameOverride": "node-a",
    "healthzBindAddress": "0.0.0.0:10256",
    "metricsBindAddress": "0.0.0.0:10249",
    "nodePortAddresses": ["10.0.0.0/24"],
    "oomScoreAdj": -500,
    "featureGates": {"WatchList": True},
    "detectLocalMode": "NodeCIDR",
    "clientConnection": {
        "kubeconfig": "/var/lib/ipvsproxy/kubeconfig",
        "qps": 20.5,
        "burst": 40,
        "contentType": "application/json",
        "acceptContentTypes": "application/json",
    },
    "iptables": {"masqueradeAll": True, "masqueradeBit": 20},
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
    "conntrack": {
        "maxPerCore": 0,
        "min": 1000,
        "tcpEstablishedTimeout": "1h",
        "tcpCloseWaitTimeout": "0s",
        "tcpBeLiberal": True,
        "udpTimeout": "10s",
        "udpStreamTimeout": "2m",
    },
    "logging": {"format": "json", "verbosity": 2, "flushFrequency": "1s"},
}


def test_config_document_maps_every_field() -> None:
    config, report = read(FULL)
    assert report == FileReport()
    assert config == Config(
        kubeconfig="/var/lib/ipvsproxy/kubeconfig",
        api_qps=20.5,
        api_burst=40,
        api_content_type="application/json",
        api_accept_content_types="application/json",
        config_sync_period=300.0,
        hostname_override="node-a",
        bind_address="10.0.0.5",
        bind_address_hard_fail=True,
        oom_score_adj=-500,
        cluster_cidrs=("10.244.0.0/16", "fd00:10:244::/56"),
        masquerade_all=True,
        masquerade_bit=20,
        nodeport_addresses=("10.0.0.0/24",),
        detect_local_mode="NodeCIDR",
        ipvs_scheduler="lc",
        ipvs_sync_period=60.0,
        ipvs_min_sync_period=0.5,
        ipvs_strict_arp=True,
        ipvs_tcp_timeout=900.0,
        ipvs_tcpfin_timeout=30.0,
        ipvs_udp_timeout=5.0,
        ipvs_exclude_cidrs=("192.168.100.0/24",),
        conntrack_max_per_core=0,
        conntrack_min=1000,
        conntrack_tcp_established_timeout=3600.0,
        conntrack_tcp_close_wait_timeout=0.0,
        conntrack_tcp_be_liberal=True,
        conntrack_udp_timeout=10.0,
        conntrack_udp_stream_timeout=120.0,
        healthz_bind_address="0.0.0.0:10256",
        metrics_bind_address="0.0.0.0:10249",
        feature_gates=(("WatchList", True),),
        log_format="json",
        verbosity=2,
        log_flush_frequency=1.0,
    )
