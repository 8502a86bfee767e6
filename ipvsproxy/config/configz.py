"""``/configz``: the effective configuration, as kube-proxy serves it.

kube-proxy registers its configuration with component-base's configz under
``kubeproxy.config.k8s.io``, and /configz answers ``{"kubeproxy.config.k8s.io": <config>}``.
The object it registers is its *internal* KubeProxyConfiguration (1.31+: sync periods at the
top, ``Linux.Conntrack``, ``DetectLocal.ClusterCIDRs``), which has no JSON tags: the keys
are Go's field names, in declaration order, durations as Go prints them (``30s``,
``24h0m0s``), an unset list or map as null. Only ``Logging`` is a versioned type, with
camelCase keys. ``NodePortAddresses`` is the effective list: kube-proxy rewrites
``primary`` into the primary IPs' CIDRs in the object it registered, so /configz shows
those; here they follow the Node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ipvsproxy.config.file_writer import logging_section
from ipvsproxy.config.model import Config
from ipvsproxy.config.values import format_duration as go


def _number(value: float) -> int | float:
    # Go prints a float32 QPS of 5 as 5, not 5.0.
    return int(value) if float(value).is_integer() else value


def configz_document(c: Config, nodeport_addresses: Sequence[str] | None = None) -> dict[str, Any]:
    """``c`` as kube-proxy's internal KubeProxyConfiguration marshals to JSON;
    ``nodeport_addresses``: the effective ones (``primary`` resolved), if known."""
    nodeport = c.nodeport_addresses if nodeport_addresses is None else nodeport_addresses
    return {
        "Linux": {
            "Conntrack": {
                "MaxPerCore": c.conntrack_max_per_core,
                "Min": c.conntrack_min,
                "TCPEstablishedTimeout": go(c.conntrack_tcp_established_timeout),
                "TCPCloseWaitTimeout": go(c.conntrack_tcp_close_wait_timeout),
                "TCPBeLiberal": c.conntrack_tcp_be_liberal,
                "UDPTimeout": go(c.conntrack_udp_timeout),
                "UDPStreamTimeout": go(c.conntrack_udp_stream_timeout),
            },
            "MasqueradeAll": c.masquerade_all,
            "OOMScoreAdj": c.oom_score_adj,
        },
        "Windows": {"RunAsService": False},
        "FeatureGates": dict(c.feature_gates) or None,
        "ClientConnection": {
            "Kubeconfig": c.kubeconfig or "",
            "AcceptContentTypes": c.api_accept_content_types,
            "ContentType": c.api_content_type,
            "QPS": _number(c.api_qps),
            "Burst": c.api_burst,
        },
        "Logging": logging_section(c),
        "HostnameOverride": c.hostname_override or "",
        "BindAddress": c.bind_address,
        "HealthzBindAddress": c.healthz_bind_address,
        "MetricsBindAddress": c.metrics_bind_address,
        "BindAddressHardFail": c.bind_address_hard_fail,
        "EnableProfiling": False,
        "ShowHiddenMetricsForVersion": "",
        "Mode": "ipvs",
        "IPTables": {"MasqueradeBit": c.masquerade_bit, "LocalhostNodePorts": True},
        "IPVS": {
            "Scheduler": c.ipvs_scheduler,
            "ExcludeCIDRs": list(c.ipvs_exclude_cidrs) or None,
            "StrictARP": c.ipvs_strict_arp,
            "TCPTimeout": go(c.ipvs_tcp_timeout),
            "TCPFinTimeout": go(c.ipvs_tcpfin_timeout),
            "UDPTimeout": go(c.ipvs_udp_timeout),
        },
        "Winkernel": {
            "NetworkName": "",
            "SourceVip": "",
            "EnableDSR": False,
            "RootHnsEndpointName": "",
            "ForwardHealthCheckVip": False,
        },
        "NFTables": {"MasqueradeBit": 14},
        "DetectLocalMode": c.detect_local_mode,
        "DetectLocal": {
            "BridgeInterface": c.detect_local_bridge_interface,
            "ClusterCIDRs": list(c.cluster_cidrs) or None,
            "InterfaceNamePrefix": c.detect_local_interface_name_prefix,
        },
        "NodePortAddresses": list(nodeport) or None,
        "SyncPeriod": go(c.ipvs_sync_period),
        "MinSyncPeriod": go(c.ipvs_min_sync_period),
        "ConfigSyncPeriod": go(c.config_sync_period),
    }
