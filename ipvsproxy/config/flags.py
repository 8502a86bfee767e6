"""kube-proxy's command-line flags, and what each one does here (data).

Every flag of kube-proxy 1.36's ``--help`` is here, and the flags of releases back to 1.19
that command lines still carry (the legacy klog flags, ``--cleanup-ipvs``, ``--udp-timeout``,
``--proxy-port-range``, the in-tree cloud providers' globals). Research notes:
/work/research/kubeproxy-config-flags.md §5. The CLI (ipvsproxy/cli.py) builds its parser
from this table, and adds the options that are not settings (``--config``,
``--write-config-to``, ``--cleanup``, ``--version``).

Roles:

- SETTING: sets a ``Config`` field. With ``--config`` kube-proxy throws the flag-built
  configuration away, so such a flag is ignored then (with a warning here).
- OVER_FILE: applies over ``--config`` as well (``--hostname-override``, ``--master``,
  ``--init-only`` and the logging flags, as in kube-proxy 1.28+).
- IGNORED: means nothing for an IPVS proxy on Linux (iptables-, nftables- and Windows-only
  flags, and the removed ones): accepted, its value checked, and named in one warning line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Value(enum.Enum):
    """The value forms of pflag's flag types."""

    STRING = "VALUE"
    BOOL = "BOOL"  # also given bare: --flag means --flag=true
    INT = "INT"  # Go's ParseInt, base 0
    FLOAT = "NUMBER"
    DURATION = "DURATION"
    LIST = "A,B"  # repeatable: later uses add to the list
    IP = "IP"
    IP_PORT = "IP[:PORT]"
    GATES = "NAME=BOOL,..."  # repeatable: later uses add to the map
    LEVEL = "N"  # klog's verbosity: an unsigned integer
    PROXY_MODE = "MODE"
    LOG_FORMAT = "FORMAT"


class Role(enum.Enum):
    SETTING = "setting"
    OVER_FILE = "over-file"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Flag:
    name: str
    value: Value
    role: Role
    # The Config field set (SETTING, OVER_FILE), or one of PSEUDO_SETTINGS.
    field: str | None = None
    help: str = ""
    # IGNORED: a value that is this proxy's behaviour anyway (no warning when given).
    harmless: str | None = None
    shorthand: str | None = None


# Settings that are flags only and become part of another (handled by the CLI).
PSEUDO_SETTINGS = frozenset({"proxy_mode", "healthz_port", "metrics_port"})

V, R = Value, Role


def _setting(name: str, value: Value, field: str | None, help: str) -> Flag:
    return Flag(name, value, R.SETTING, field or name[2:].replace("-", "_"), help)


def _ignored(name: str, value: Value, why: str, harmless: str | None = None) -> Flag:
    return Flag(name, value, R.IGNORED, None, f"ignored: {why}", harmless)


KUBE_PROXY_FLAGS: tuple[Flag, ...] = (
    # The cluster connection.
    _setting("--kubeconfig", V.STRING, None, "path to a kubeconfig (default: in-cluster)"),
    Flag(
        "--master", V.STRING, R.OVER_FILE, "master", "the API server's URL (over the kubeconfig's)"
    ),
    _setting("--kube-api-qps", V.FLOAT, "api_qps", "API requests per second (default 5)"),
    _setting("--kube-api-burst", V.INT, "api_burst", "API request burst (default 10)"),
    _setting(
        "--kube-api-content-type",
        V.STRING,
        "api_content_type",
        "accepted; the client speaks JSON (a protobuf request is warned about)",
    ),
    _setting("--config-sync-period", V.DURATION, None, "informer resync period (default 15m)"),
    # This node.
    Flag(
        "--hostname-override",
        V.STRING,
        R.OVER_FILE,
        "hostname_override",
        "this node's name, if not the hostname (also over --config)",
    ),
    _setting("--bind-address", V.IP, None, "the node's primary IP (0.0.0.0: the Node's)"),
    _setting("--bind-address-hard-fail", V.BOOL, None, "exit if a server cannot listen"),
    _setting("--oom-score-adj", V.INT, None, "this process's oom_score_adj (default -999)"),
    Flag("--init-only", V.BOOL, R.OVER_FILE, "init_only", "do the privileged set-up, then exit"),
    # What is local, what is masqueraded.
    _setting("--cluster-cidr", V.LIST, "cluster_cidrs", "pod CIDRs, comma-separated"),
    _setting("--masquerade-all", V.BOOL, None, "SNAT all traffic sent to service IPs"),
    _setting(
        "--iptables-masquerade-bit", V.INT, "masquerade_bit", "the masquerade mark bit (default 14)"
    ),
    _setting("--nodeport-addresses", V.LIST, None, "CIDRs whose IPs serve NodePorts, or primary"),
    _setting("--detect-local-mode", V.STRING, None, "ClusterCIDR, NodeCIDR, BridgeInterface, ..."),
    _setting(
        "--pod-bridge-interface", V.STRING, "detect_local_bridge_interface", "for BridgeInterface"
    ),
    _setting(
        "--pod-interface-name-prefix",
        V.STRING,
        "detect_local_interface_name_prefix",
        "for InterfaceNamePrefix",
    ),
    _setting("--proxy-mode", V.PROXY_MODE, None, "ipvs (the only mode of this proxy)"),
    # IPVS.
    _setting("--ipvs-scheduler", V.STRING, None, "IPVS scheduler: rr, lc, wrr, sh, mh, ..."),
    _setting("--ipvs-sync-period", V.DURATION, None, "full resync period (default 30s)"),
    _setting("--ipvs-min-sync-period", V.DURATION, None, "least time between syncs (default 1s)"),
    _setting("--ipvs-strict-arp", V.BOOL, None, "set arp_ignore=1 and arp_announce=2"),
    _setting("--ipvs-tcp-timeout", V.DURATION, None, "IPVS TCP timeout (0: unchanged)"),
    _setting("--ipvs-tcpfin-timeout", V.DURATION, None, "IPVS TCP FIN_WAIT timeout (0: unchanged)"),
    _setting("--ipvs-udp-timeout", V.DURATION, None, "IPVS UDP timeout (0: unchanged)"),
    _setting("--ipvs-exclude-cidrs", V.LIST, None, "CIDRs whose IPVS services are not ours"),
    # Conntrack.
    _setting("--conntrack-max-per-core", V.INT, None, "nf_conntrack_max per CPU (0: unchanged)"),
    _setting("--conntrack-min", V.INT, None, "nf_conntrack_max at least (default 131072)"),
    _setting(
        "--conntrack-tcp-timeout-established",
        V.DURATION,
        "conntrack_tcp_established_timeout",
        "(default 24h, 0: unchanged)",
    ),
    _setting(
        "--conntrack-tcp-timeout-close-wait",
        V.DURATION,
        "conntrack_tcp_close_wait_timeout",
        "(default 1h, 0: unchanged)",
    ),
    _setting("--conntrack-tcp-be-liberal", V.BOOL, None, "nf_conntrack_tcp_be_liberal=1"),
    _setting("--conntrack-udp-timeout", V.DURATION, None, "(0: unchanged)"),
    _setting(
        "--conntrack-udp-timeout-stream",
        V.DURATION,
        "conntrack_udp_stream_timeout",
        "(0: unchanged)",
    ),
    # HTTP servers.
    _setting("--healthz-bind-address", V.IP_PORT, None, "IP[:PORT] (default 0.0.0.0:10256)"),
    _setting("--metrics-bind-address", V.IP_PORT, None, "IP[:PORT] (default 127.0.0.1:10249)"),
    _setting("--healthz-port", V.INT, None, "deprecated: the port of a port-less healthz address"),
    _setting("--metrics-port", V.INT, None, "deprecated: the port of a port-less metrics address"),
    _setting("--feature-gates", V.GATES, None, "kube-proxy's feature gates (no effect here)"),
    # Logging (over --config too).
    Flag(
        "--v", V.LEVEL, R.OVER_FILE, "verbosity", "log verbosity (0: info, 1+: debug)", None, "-v"
    ),
    Flag("--logging-format", V.LOG_FORMAT, R.OVER_FILE, "log_format", "text or json"),
    Flag(
        "--log-format",
        V.LOG_FORMAT,
        R.OVER_FILE,
        "log_format",
        "json, console (= text) or auto: JSON unless stderr is a terminal",
    ),
    Flag("--log-flush-frequency", V.DURATION, R.OVER_FILE, "log_flush_frequency", "(default 5s)"),
    _ignored("--vmodule", V.STRING, "klog's per-file verbosity", harmless=""),
    _ignored("--log-text-split-stream", V.BOOL, "logs all go to stderr", harmless="false"),
    _ignored("--log-text-info-buffer-size", V.STRING, "logs are not buffered", harmless="0"),
    _ignored("--log-json-split-stream", V.BOOL, "logs all go to stderr", harmless="false"),
    _ignored("--log-json-info-buffer-size", V.STRING, "logs are not buffered", harmless="0"),
    # Meaningless in IPVS mode.
    _ignored("--profiling", V.BOOL, "no /debug/pprof here", harmless="false"),
    _ignored("--show-hidden-metrics-for-version", V.STRING, "no metric is hidden here", ""),
    _ignored("--iptables-sync-period", V.DURATION, "iptables mode only"),
    _ignored("--iptables-min-sync-period", V.DURATION, "iptables mode only"),
    _ignored("--iptables-localhost-nodeports", V.BOOL, "iptables mode only"),
    _ignored("--boot-id-file", V.STRING, "cadvisor's; no effect in kube-proxy either"),
    _ignored("--machine-id-file", V.STRING, "cadvisor's; no effect in kube-proxy either"),
    _ignored("--windows-service", V.BOOL, "Windows only", harmless="false"),
    _ignored("--source-vip", V.STRING, "Windows only"),
    _ignored("--network-name", V.STRING, "Windows only"),
    _ignored("--enable-dsr", V.BOOL, "Windows only", harmless="false"),
    _ignored("--root-hnsendpoint-name", V.STRING, "Windows only"),
    _ignored("--forward-healthcheck-vip", V.BOOL, "Windows only", harmless="false"),
    # Removed from kube-proxy, still on command lines.
    _ignored("--cleanup-ipvs", V.BOOL, "removed in 1.21; --cleanup removes IPVS", "true"),
    _ignored("--udp-timeout", V.DURATION, "userspace mode, removed in 1.26"),
    _ignored("--proxy-port-range", V.STRING, "userspace mode, removed in 1.31"),
    _ignored("--azure-container-registry-config", V.STRING, "in-tree cloud provider, removed"),
    _ignored("--cloud-provider-gce-lb-src-cidrs", V.LIST, "in-tree cloud provider, removed"),
    _ignored("--cloud-provider-gce-l7lb-src-cidrs", V.LIST, "in-tree cloud provider, removed"),
    # klog's own flags (kube-proxy 1.19-1.25; removed in 1.26). Logs go to stderr here.
    _ignored("--logtostderr", V.BOOL, "klog flag, removed in 1.26", harmless="true"),
    _ignored("--alsologtostderr", V.BOOL, "klog flag, removed in 1.26", harmless="false"),
    _ignored("--log-dir", V.STRING, "klog flag, removed in 1.26", harmless=""),
    _ignored("--log-file", V.STRING, "klog flag, removed in 1.26", harmless=""),
    _ignored("--log-file-max-size", V.INT, "klog flag, removed in 1.26"),
    _ignored("--log-backtrace-at", V.STRING, "klog flag, removed in 1.26", harmless=""),
    _ignored("--add-dir-header", V.BOOL, "klog flag, removed in 1.26", harmless="false"),
    _ignored("--skip-headers", V.BOOL, "klog flag, removed in 1.26", harmless="false"),
    _ignored("--skip-log-headers", V.BOOL, "klog flag, removed in 1.26", harmless="false"),
    _ignored("--stderrthreshold", V.STRING, "klog flag, removed in 1.26"),
    _ignored("--one-output", V.BOOL, "klog flag, removed in 1.26", harmless="false"),
)

FLAGS_BY_NAME = {flag.name: flag for flag in KUBE_PROXY_FLAGS}
_FIRST_FLAG_OF_FIELD: dict[str, str] = {}
for _flag in KUBE_PROXY_FLAGS:
    if _flag.field is not None:
        _FIRST_FLAG_OF_FIELD.setdefault(_flag.field, _flag.shorthand or _flag.name)


def flag_of_field(field: str) -> str:
    """The flag that sets a Config field (for messages); the field's name if none does."""
    return _FIRST_FLAG_OF_FIELD.get(field, field)
