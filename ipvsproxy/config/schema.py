"""KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1): every field any release from
1.19 to 1.36 has, its JSON type, and what it becomes here (data).

Research notes: /work/research/kubeproxy-config-flags.md §1. Three kinds of field:

- USED: it sets a ``Config`` field (``target``);
- IGNORED: kube-proxy has it, and it means nothing for an IPVS proxy on Linux (the iptables
  and nftables modes' settings, Windows', profiling, the userspace port range). Read and type
  checked like any field; a value other than its zero or its default is reported;
- OBSOLETE: a field only older releases have (``udpIdleTimeout``, gone in 1.26): dropped
  unread, as kube-proxy's lenient decoding drops it, and reported.

``pointer`` marks Go pointer fields: for those only null means "use the default" and an
explicit zero is kept (conntrack's 0 = leave the kernel alone); for every other field a zero
value means the default too, so kubeadm's files (every field written, zeros for "unset") load
to kube-proxy's defaults.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class Kind(enum.Enum):
    STRING = "a string"
    BOOL = "true or false"
    INT = "an integer"
    FLOAT = "a number"
    DURATION = "a duration string like '30s'"
    FLUSH = "a duration string like '5s' or a number of nanoseconds"  # TimeOrMetaDuration
    STRINGS = "a list of strings"
    GATES = "a mapping of feature-gate names to true or false"
    QUANTITY = "a quantity like '0' or '64Ki'"
    VMODULE = "a list of {filePattern, verbosity}"
    OBJECT = "a mapping"


class Role(enum.Enum):
    USED = "used"
    IGNORED = "ignored"
    OBSOLETE = "obsolete"


@dataclass(frozen=True)
class Field:
    kind: Kind
    target: str | None = None
    pointer: bool = False
    role: Role = Role.USED
    default: Any = None  # kube-proxy's default of an IGNORED field
    children: Mapping[str, Field] | None = None


def _used(kind: Kind, target: str, *, pointer: bool = False) -> Field:
    return Field(kind, target, pointer=pointer)


def _ignored(kind: Kind, default: Any = None, *, pointer: bool = False) -> Field:
    return Field(kind, pointer=pointer, role=Role.IGNORED, default=default)


def _object(role: Role = Role.USED, **children: Field) -> Field:
    return Field(Kind.OBJECT, role=role, children=children)


STR, BOOL, INT, DUR = Kind.STRING, Kind.BOOL, Kind.INT, Kind.DURATION

_LOG_OPTIONS = _object(
    Role.IGNORED,
    splitStream=_ignored(BOOL),
    infoBufferSize=_ignored(Kind.QUANTITY, "0"),
)

KUBE_PROXY_CONFIGURATION: Mapping[str, Field] = {
    "featureGates": _used(Kind.GATES, "feature_gates"),
    "bindAddress": _used(STR, "bind_address"),
    "healthzBindAddress": _used(STR, "healthz_bind_address"),
    "metricsBindAddress": _used(STR, "metrics_bind_address"),
    "bindAddressHardFail": _used(BOOL, "bind_address_hard_fail"),
    "enableProfiling": _ignored(BOOL),
    "showHiddenMetricsForVersion": _ignored(STR),
    "clusterCIDR": _used(STR, "cluster_cidrs"),
    "hostnameOverride": _used(STR, "hostname_override"),
    "clientConnection": _object(
        kubeconfig=_used(STR, "kubeconfig"),
        acceptContentTypes=_used(STR, "api_accept_content_types"),
        contentType=_used(STR, "api_content_type"),
        qps=_used(Kind.FLOAT, "api_qps"),
        burst=_used(INT, "api_burst"),
    ),
    "iptables": _object(
        masqueradeBit=_used(INT, "masquerade_bit", pointer=True),
        masqueradeAll=_used(BOOL, "masquerade_all"),
        localhostNodePorts=_ignored(BOOL, True, pointer=True),  # 1.26+
        syncPeriod=_ignored(DUR, 30.0),
        minSyncPeriod=_ignored(DUR, 1.0),
    ),
    "ipvs": _object(
        syncPeriod=_used(DUR, "ipvs_sync_period"),
        minSyncPeriod=_used(DUR, "ipvs_min_sync_period"),
        scheduler=_used(STR, "ipvs_scheduler"),
        excludeCIDRs=_used(Kind.STRINGS, "ipvs_exclude_cidrs"),
        strictARP=_used(BOOL, "ipvs_strict_arp"),
        tcpTimeout=_used(DUR, "ipvs_tcp_timeout"),
        tcpFinTimeout=_used(DUR, "ipvs_tcpfin_timeout"),
        udpTimeout=_used(DUR, "ipvs_udp_timeout"),
    ),
    "nftables": _object(  # 1.29+
        Role.IGNORED,
        masqueradeBit=_ignored(INT, 14, pointer=True),
        masqueradeAll=_ignored(BOOL),
        syncPeriod=_ignored(DUR, 30.0),
        minSyncPeriod=_ignored(DUR, 1.0),
    ),
    "winkernel": _object(
        Role.IGNORED,
        networkName=_ignored(STR),
        sourceVip=_ignored(STR),
        enableDSR=_ignored(BOOL),
        rootHnsEndpointName=_ignored(STR),  # 1.24+
        forwardHealthCheckVip=_ignored(BOOL),  # 1.24+
    ),
    "mode": _used(STR, "mode"),  # checked by the loader: "" or ipvs
    "detectLocalMode": _used(STR, "detect_local_mode"),
    "detectLocal": _object(  # 1.24+
        bridgeInterface=_used(STR, "detect_local_bridge_interface"),
        interfaceNamePrefix=_used(STR, "detect_local_interface_name_prefix"),
    ),
    "nodePortAddresses": _used(Kind.STRINGS, "nodeport_addresses"),
    "oomScoreAdj": _used(INT, "oom_score_adj", pointer=True),
    "conntrack": _object(
        maxPerCore=_used(INT, "conntrack_max_per_core", pointer=True),
        min=_used(INT, "conntrack_min", pointer=True),
        tcpEstablishedTimeout=_used(DUR, "conntrack_tcp_established_timeout", pointer=True),
        tcpCloseWaitTimeout=_used(DUR, "conntrack_tcp_close_wait_timeout", pointer=True),
        tcpBeLiberal=_used(BOOL, "conntrack_tcp_be_liberal"),  # 1.29+
        udpTimeout=_used(DUR, "conntrack_udp_timeout"),  # 1.29+
        udpStreamTimeout=_used(DUR, "conntrack_udp_stream_timeout"),  # 1.29+
    ),
    "configSyncPeriod": _used(DUR, "config_sync_period"),
    "portRange": _ignored(STR),  # the userspace proxy's; unused since 1.26
    "udpIdleTimeout": Field(DUR, role=Role.OBSOLETE),  # 1.19-1.25, userspace only
    "windowsRunAsService": _ignored(BOOL),  # 1.31+
    "logging": _object(  # 1.28+
        format=_used(STR, "log_format"),
        flushFrequency=_used(Kind.FLUSH, "log_flush_frequency"),
        verbosity=_used(INT, "verbosity"),
        vmodule=_ignored(Kind.VMODULE),
        options=_object(Role.IGNORED, json=_LOG_OPTIONS, text=_LOG_OPTIONS),  # text: 1.30+
    ),
}


def walk(
    fields: Mapping[str, Field] = KUBE_PROXY_CONFIGURATION, prefix: str = ""
) -> Iterator[tuple[str, Field]]:
    """Every field with its dotted path (``ipvs.syncPeriod``), objects before their children."""
    for key, field in fields.items():
        yield prefix + key, field
        if field.children is not None:
            yield from walk(field.children, f"{prefix}{key}.")


# Config field -> the file's dotted path, for messages.
PATH_OF_TARGET = {field.target: path for path, field in walk() if field.target is not None}
