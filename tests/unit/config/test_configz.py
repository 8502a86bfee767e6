"""/configz's document: kube-proxy's internal KubeProxyConfiguration as Go marshals it."""

from __future__ import annotations

import json

from ipvsproxy.config import Config
from ipvsproxy.config.configz import configz_document

# The internal type's fields, in declaration order (pkg/proxy/apis/config/types.go).
TOP = [
    "Linux", "Windows", "FeatureGates", "ClientConnection", "Logging", "HostnameOverride",
    "BindAddress", "HealthzBindAddress", "MetricsBindAddress", "BindAddressHardFail",
    "EnableProfiling", "ShowHiddenMetricsForVersion", "Mode", "IPTables", "IPVS", "Winkernel",
    "NFTables", "DetectLocalMode", "DetectLocal", "NodePortAddresses", "SyncPeriod",
    "MinSyncPeriod", "ConfigSyncPeriod",
]  # fmt: skip


def test_defaults_as_kube_proxy_marshals_them() -> None:
    doc = configz_document(Config())
    assert list(doc) == TOP
    assert doc["Linux"]["Conntrack"] == {
        "MaxPerCore": 32768,
        "Min": 131072,
        "TCPEstablishedTimeout": "24h0m0s",
        "TCPCloseWaitTimeout": "1h0m0s",
        "TCPBeLiberal": False,
        "UDPTimeout": "0s",
        "UDPStreamTimeout": "0s",
    }
    assert doc["Linux"]["OOMScoreAdj"] == -999
    assert doc["Mode"] == "ipvs"
    assert doc["ClientConnection"]["QPS"] == 5
    assert json.dumps(doc["ClientConnection"]["QPS"]) == "5"  # Go's float32 5, not 5.0
    assert doc["DetectLocalMode"] == "ClusterCIDR"
    assert doc["DetectLocal"] == {
        "BridgeInterface": "",
        "ClusterCIDRs": None,
        "InterfaceNamePrefix": "",
    }
    assert doc["NodePortAddresses"] is None  # nil: every address
    assert doc["FeatureGates"] is None
    assert doc["IPVS"]["ExcludeCIDRs"] is None
    assert (doc["SyncPeriod"], doc["MinSyncPeriod"], doc["ConfigSyncPeriod"]) == (
        "30s",
        "1s",
        "15m0s",
    )
    assert doc["Logging"]["verbosity"] == 0  # the one versioned (camelCase) part


def test_settings_and_the_effective_nodeport_addresses() -> None:
    config = Config(
        cluster_cidrs=("10.244.0.0/16", "fd00:10:244::/56"),
        detect_local_mode="InterfaceNamePrefix",
        detect_local_interface_name_prefix="cali",
        nodeport_addresses=("primary",),
        conntrack_tcp_be_liberal=True,
        feature_gates=(("AllAlpha", False),),
        api_qps=7.5,
    )
    doc = configz_document(config, ("192.168.1.10/32",))
    assert doc["DetectLocal"]["ClusterCIDRs"] == ["10.244.0.0/16", "fd00:10:244::/56"]
    assert doc["DetectLocal"]["InterfaceNamePrefix"] == "cali"
    assert doc["NodePortAddresses"] == ["192.168.1.10/32"]  # primary, resolved
    assert configz_document(config)["NodePortAddresses"] == ["primary"]
    assert doc["Linux"]["Conntrack"]["TCPBeLiberal"] is True
    assert doc["FeatureGates"] == {"AllAlpha": False}
    assert doc["ClientConnection"]["QPS"] == 7.5
