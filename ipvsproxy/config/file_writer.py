"""``--write-config-to``: the effective configuration as a KubeProxyConfiguration file.

The document has the shape kube-proxy 1.36 writes: every field of the v1alpha1 type, keys
sorted, durations in Go's form (``15m0s``), ``mode: ipvs``, and the sync periods only in the
ipvs section (kube-proxy 1.31+ writes them only into the active mode's section; the others
read ``0s``). Settings this proxy does not keep (Windows', nftables', profiling) are written
with kube-proxy's defaults. The file loads back to the same ``Config`` here, and loads in
kube-proxy too, which is what a rollback needs.
"""

from __future__ import annotations

from typing import Any

import yaml

from ipvsproxy.config.file_loader import API_VERSION, KIND
from ipvsproxy.config.model import Config
from ipvsproxy.config.values import format_duration as go

# log_format -> logging.format (omitted for "auto", which the file cannot say; it is
# what an absent format means here).
_LOG_FORMATS = {"console": "text", "json": "json"}


def logging_section(c: Config) -> dict[str, Any]:
    """The ``logging`` section (component-base's LoggingConfiguration, camelCase)."""
    logging: dict[str, Any] = {
        "flushFrequency": go(c.log_flush_frequency),
        "options": {"json": {"infoBufferSize": "0"}, "text": {"infoBufferSize": "0"}},
        "verbosity": c.verbosity,
    }
    if c.log_format in _LOG_FORMATS:
        logging["format"] = _LOG_FORMATS[c.log_format]
    return logging


def config_document(c: Config) -> dict[str, Any]:
    """``c`` as a KubeProxyConfiguration mapping."""
    logging = logging_section(c)
    doc: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "bindAddress": c.bind_address,
        "bindAddressHardFail": c.bind_address_hard_fail,
        "clientConnection": {
            "acceptContentTypes": c.api_accept_content_types,
            "burst": c.api_burst,
            "contentType": c.api_content_type,
            "kubeconfig": c.kubeconfig or "",
            "qps": int(c.api_qps) if c.api_qps.is_integer() else c.api_qps,
        },
        "clusterCIDR": ",".join(c.cluster_cidrs),
        "configSyncPeriod": go(c.config_sync_period),
        "conntrack": {
            "maxPerCore": c.conntrack_max_per_core,
            "min": c.conntrack_min,
            "tcpBeLiberal": c.conntrack_tcp_be_liberal,
            "tcpCloseWaitTimeout": go(c.conntrack_tcp_close_wait_timeout),
            "tcpEstablishedTimeout": go(c.conntrack_tcp_established_timeout),
            "udpStreamTimeout": go(c.conntrack_udp_stream_timeout),
            "udpTimeout": go(c.conntrack_udp_timeout),
        },
        "detectLocal": {
            "bridgeInterface": c.detect_local_bridge_interface,
            "interfaceNamePrefix": c.detect_local_interface_name_prefix,
        },
        "detectLocalMode": c.detect_local_mode,
        "enableProfiling": False,
        "healthzBindAddress": c.healthz_bind_address,
        "hostnameOverride": c.hostname_override or "",
        "iptables": {
            "localhostNodePorts": True,
            "masqueradeAll": c.masquerade_all,
            "masqueradeBit": c.masquerade_bit,
            "minSyncPeriod": "0s",
            "syncPeriod": "0s",
        },
        "ipvs": {
            "excludeCIDRs": list(c.ipvs_exclude_cidrs) or None,
            "minSyncPeriod": go(c.ipvs_min_sync_period),
            "scheduler": c.ipvs_scheduler,
            "strictARP": c.ipvs_strict_arp,
            "syncPeriod": go(c.ipvs_sync_period),
            "tcpFinTimeout": go(c.ipvs_tcpfin_timeout),
            "tcpTimeout": go(c.ipvs_tcp_timeout),
            "udpTimeout": go(c.ipvs_udp_timeout),
        },
        "logging": logging,
        "metricsBindAddress": c.metrics_bind_address,
        "mode": "ipvs",
        "nftables": {
            "masqueradeAll": False,
            "masqueradeBit": 14,
            "minSyncPeriod": "0s",
            "syncPeriod": "0s",
        },
        "nodePortAddresses": list(c.nodeport_addresses) or None,
        "oomScoreAdj": c.oom_score_adj,
        "portRange": "",
        "showHiddenMetricsForVersion": "",
        "winkernel": {
            "enableDSR": False,
            "forwardHealthCheckVip": False,
            "networkName": "",
            "rootHnsEndpointName": "",
            "sourceVip": "",
        },
    }
    if c.feature_gates:  # omitempty
        doc["featureGates"] = dict(c.feature_gates)
    return doc


def config_yaml(c: Config) -> str:
    """``c`` as block-style YAML with sorted keys, as kube-proxy writes it."""
    return yaml.safe_dump(config_document(c), default_flow_style=False, sort_keys=True)


def write_config_file(c: Config, path: str) -> None:
    """Create or truncate ``path`` and write ``c`` to it, as kube-proxy does (so that
    ``--write-config-to=/dev/stdout`` works too)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(config_yaml(c))
