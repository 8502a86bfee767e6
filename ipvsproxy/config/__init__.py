"""Every setting of the proxy, with kube-proxy's names, forms and defaults.

Settings come from three layers, lowest first: the defaults below, a YAML
file in KubeProxyConfiguration's format (``--config``), and command-line
flags. ``Config`` is the validated result; ``ConfigError`` carries one line
that names the offending setting, which the CLI prints as is.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from typing import Any

import yaml

from ipvsproxy.config.errors import ConfigError
from ipvsproxy.config.values import (
    format_duration,
    parse_bool,
    parse_cidr,
    parse_duration,
    parse_host_port,
    parse_list,
)
from ipvsproxy.core.model import SCHEDULERS

__all__ = [
    "Config",
    "ConfigError",
    "build_config",
    "format_duration",
    "load_config_file",
    "parse_bool",
    "parse_cidr",
    "parse_config_document",
    "parse_duration",
    "parse_host_port",
    "parse_list",
]

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"
LOG_FORMATS = ("auto", "json", "console")


@dataclasses.dataclass(frozen=True)
class Config:
    """The proxy's settings. Durations are in seconds; 0 timeouts mean "leave as is"."""

    kubeconfig: str | None = None
    hostname_override: str | None = None
    bind_address: str = "0.0.0.0"
    cluster_cidrs: tuple[str, ...] = ()
    masquerade_all: bool = False
    nodeport_addresses: tuple[str, ...] = ()
    ipvs_scheduler: str = "rr"
    ipvs_sync_period: float = 30.0
    ipvs_min_sync_period: float = 1.0
    ipvs_strict_arp: bool = False
    ipvs_tcp_timeout: float = 0.0
    ipvs_tcpfin_timeout: float = 0.0
    ipvs_udp_timeout: float = 0.0
    ipvs_exclude_cidrs: tuple[str, ...] = ()
    healthz_bind_address: str = "0.0.0.0:10256"
    metrics_bind_address: str = "127.0.0.1:10249"
    log_format: str = "auto"
    verbosity: int = 0

    @property
    def health_timeout(self) -> float:
        """How long a queued change may wait before /healthz fails (kube-proxy: 2 x sync)."""
        return 2 * self.ipvs_sync_period

    def validate(self) -> Config:
        """Return self, or raise ConfigError naming the first bad setting."""
        if self.ipvs_scheduler not in SCHEDULERS:
            raise ConfigError(
                f"ipvs-scheduler: unknown scheduler {self.ipvs_scheduler!r}"
                f" (one of {', '.join(SCHEDULERS)})"
            )
        if self.ipvs_sync_period <= 0:
            raise ConfigError("ipvs-sync-period: must be greater than 0")
        if self.ipvs_min_sync_period < 0:
            raise ConfigError("ipvs-min-sync-period: must not be negative")
        if self.ipvs_min_sync_period > self.ipvs_sync_period:
            raise ConfigError("ipvs-min-sync-period: must not exceed ipvs-sync-period")
        for name in ("ipvs_tcp_timeout", "ipvs_tcpfin_timeout", "ipvs_udp_timeout"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)}: must not be negative")
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError:
            raise ConfigError(f"bind-address: not an IP address: {self.bind_address!r}") from None
        for name in ("cluster_cidrs", "nodeport_addresses", "ipvs_exclude_cidrs"):
            for cidr in getattr(self, name):
                # kube-proxy >= 1.29 also takes "primary": the node's primary IPs.
                if not (name == "nodeport_addresses" and cidr == "primary"):
                    parse_cidr(cidr, _flag(name))
        parse_host_port(self.healthz_bind_address, "healthz-bind-address")
        parse_host_port(self.metrics_bind_address, "metrics-bind-address")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log-format: must be one of {', '.join(LOG_FORMATS)}")
        if self.verbosity < 0:
            raise ConfigError("v: must not be negative")
        return self


def _flag(field: str) -> str:
    if field == "cluster_cidrs":
        return "cluster-cidr"
    return field.replace("_", "-")


FIELDS = frozenset(f.name for f in dataclasses.fields(Config))

# ------------------------------------------------------------ config file

# Fields of KubeProxyConfiguration that this proxy does not use: accepted and
# reported, so an operator's existing kube-proxy file loads unchanged.
_IGNORED_TOP = frozenset(
    {
        "featureGates",
        "bindAddressHardFail",
        "enableProfiling",
        "showHiddenMetricsForVersion",
        "nftables",
        "winkernel",
        "detectLocalMode",
        "detectLocal",
        "oomScoreAdj",
        "conntrack",
        "configSyncPeriod",
        "portRange",
        "windowsRunAsService",
        "linux",
    }
)
_IGNORED_IPTABLES = frozenset(
    {"masqueradeBit", "localhostNodePorts", "syncPeriod", "minSyncPeriod"}
)
_IGNORED_CLIENT = frozenset({"acceptContentTypes", "contentType", "qps", "burst"})

_TOP = {
    "hostnameOverride": ("hostname_override", "str"),
    "bindAddress": ("bind_address", "str"),
    "healthzBindAddress": ("healthz_bind_address", "str"),
    "metricsBindAddress": ("metrics_bind_address", "str"),
    "clusterCIDR": ("cluster_cidrs", "list"),
    "nodePortAddresses": ("nodeport_addresses", "list"),
}
_IPVS = {
    "scheduler": ("ipvs_scheduler", "str"),
    "syncPeriod": ("ipvs_sync_period", "duration"),
    "minSyncPeriod": ("ipvs_min_sync_period", "duration"),
    "strictARP": ("ipvs_strict_arp", "bool"),
    "tcpTimeout": ("ipvs_tcp_timeout", "duration"),
    "tcpFinTimeout": ("ipvs_tcpfin_timeout", "duration"),
    "udpTimeout": ("ipvs_udp_timeout", "duration"),
    "excludeCIDRs": ("ipvs_exclude_cidrs", "list"),
}
_IPTABLES = {"masqueradeAll": ("masquerade_all", "bool")}
_CLIENT = {"kubeconfig": ("kubeconfig", "str")}
_LOGGING = {"format": ("log_format", "logformat"), "verbosity": ("verbosity", "int")}


def _convert(value: Any, kind: str, where: str) -> Any:
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value or None if where.endswith(("hostnameOverride", "kubeconfig")) else value
    if kind == "list":
        # clusterCIDR is one comma-separated string; the others are YAML lists.
        if isinstance(value, str):
            return parse_list(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value if v.strip())
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    if kind == "duration":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a duration string like '30s', got {value!r}")
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    # logformat: kube-proxy's component-base logging says json or text.
    formats = {"json": "json", "text": "console", "console": "console"}
    if value not in formats:
        raise ConfigError(f"{where}: expected json or text, got {value!r}")
    return formats[value]


def _section(
    doc: Mapping[str, Any],
    prefix: str,
    table: Mapping[str, tuple[str, str]],
    ignored: frozenset[str],
    out: dict[str, Any],
    notes: list[str],
) -> None:
    for key, value in doc.items():
        where = f"{prefix}{key}"
        if key in table:
            if value is None:
                continue
            field, kind = table[key]
            out[field] = _convert(value, kind, where)
        elif key in ignored:
            notes.append(where)
        else:
            raise ConfigError(f"{where}: unknown field")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    return value


def parse_config_document(doc: Any) -> tuple[dict[str, Any], list[str]]:
    """Turn a KubeProxyConfiguration mapping into Config field values.

    Returns (values, ignored) where ignored lists the kube-proxy fields that
    were present but have no meaning here. Unknown fields raise ConfigError.
    """
    top = _mapping(doc, "config")
    if top.get("apiVersion", API_VERSION) != API_VERSION:
        raise ConfigError(f"apiVersion: expected {API_VERSION}, got {top['apiVersion']!r}")
    if top.get("kind", KIND) != KIND:
        raise ConfigError(f"kind: expected {KIND}, got {top['kind']!r}")
    mode = top.get("mode")
    if mode not in (None, "", "ipvs"):
        raise ConfigError(f"mode: this proxy implements only ipvs, got {mode!r}")
    values: dict[str, Any] = {}
    notes: list[str] = []
    nested = {
        "ipvs": (_IPVS, frozenset()),
        "iptables": (_IPTABLES, _IGNORED_IPTABLES),
        "clientConnection": (_CLIENT, _IGNORED_CLIENT),
        "logging": (_LOGGING, frozenset({"flushFrequency", "options", "vmodule"})),
    }
    flat = {
        k: v for k, v in top.items() if k not in nested and k not in ("apiVersion", "kind", "mode")
    }
    _section(flat, "", _TOP, _IGNORED_TOP, values, notes)
    for key, (table, ignored) in nested.items():
        if key in top:
            _section(_mapping(top[key], key), f"{key}.", table, ignored, values, notes)
    return values, notes


def load_config_file(path: str) -> tuple[dict[str, Any], list[str]]:
    """Read and parse a config file; errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    try:
        return parse_config_document(doc)
    except ConfigError as exc:
        raise ConfigError(f"config {path}: {exc}") from None


def build_config(
    file_values: Mapping[str, Any] | None = None, flag_values: Mapping[str, Any] | None = None
) -> Config:
    """Defaults, then the file, then the flags; validated."""
    merged: dict[str, Any] = {}
    merged.update(file_values or {})
    merged.update(flag_values or {})
    unknown = set(merged) - FIELDS
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    return Config(**merged).validate()
