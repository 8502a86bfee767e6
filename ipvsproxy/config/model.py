"""``Config``: every setting of the proxy, after kube-proxy's defaulting, and its validation.

The defaults are kube-proxy's (the newest release, 1.36) for a proxy configured by flags
alone. A config file starts from the file defaults instead, which differ in one place:
``ipvs.minSyncPeriod`` has no default in KubeProxyConfiguration, so a file that leaves it
out or writes ``0s`` gets 0, while a flags-only kube-proxy gets 1s (``FILE_DEFAULTS``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable

from ipvsproxy.config.errors import ConfigError
from ipvsproxy.config.feature_gates import REMOVED_PROXY_GATES, check_gates
from ipvsproxy.config.flags import flag_of_field
from ipvsproxy.config.values import parse_cidr, parse_host_port, parse_ip
from ipvsproxy.core import fwmark
from ipvsproxy.core.local_traffic import MODES as DETECT_LOCAL_MODES
from ipvsproxy.core.model import SCHEDULERS
from ipvsproxy.core.node_ips import PRIMARY  # nodePortAddresses' keyword: the primary IPs

LOG_FORMATS = ("auto", "json", "console")
PROTOBUF = "application/vnd.kubernetes.protobuf"
# What iptables' -i takes: a name of at most 15 bytes (IFNAMSIZ), no blank, '/', quote or
# '!'; the prefix gets iptables' '+' after it. kube-proxy checks only that it is not empty,
# and iptables-restore would then refuse every sync: here the start is refused instead.
INTERFACE_NAME = re.compile(r"^[^\s/\\\"'!+]{1,15}$")

# Mark bits this proxy uses besides the masquerade bit: the firewall marks of
# externalTrafficPolicy Local (core/fwmark.py, bits 0-13) and the mark of node traffic to a
# source-ranged load balancer (RulesConfig.no_node_access_bit, 15). kube-proxy allows any bit
# 0-31; here a masquerade bit among these would be read as one of those marks.
NO_NODE_ACCESS_BIT = 15
RESERVED_MARK_BITS = frozenset(
    {bit for bit in range(32) if fwmark.MASK >> bit & 1} | {NO_NODE_ACCESS_BIT}
)


@dataclasses.dataclass(frozen=True)
class Config:
    """The proxy's settings, defaulted. Durations are in seconds; a 0 timeout means
    "leave the kernel's value as it is", as in kube-proxy."""

    # The cluster connection (clientConnection; --master).
    kubeconfig: str | None = None
    master: str | None = None
    # client-go's rules: 0 means its defaults (5, 10), a negative qps no client-side limit.
    api_qps: float = 5.0
    api_burst: int = 10
    api_content_type: str = PROTOBUF  # kube-proxy's default; the client speaks JSON
    api_accept_content_types: str = ""
    config_sync_period: float = 900.0
    # This node.
    hostname_override: str | None = None
    bind_address: str = "0.0.0.0"  # the node IP hint, as kube-proxy uses it
    bind_address_hard_fail: bool = False
    oom_score_adj: int = -999
    # Which traffic is local, and what is masqueraded.
    cluster_cidrs: tuple[str, ...] = ()
    masquerade_all: bool = False
    masquerade_bit: int = 14
    nodeport_addresses: tuple[str, ...] = ()
    detect_local_mode: str = "ClusterCIDR"
    detect_local_bridge_interface: str = ""
    detect_local_interface_name_prefix: str = ""
    # IPVS.
    ipvs_scheduler: str = "rr"
    ipvs_sync_period: float = 30.0
    ipvs_min_sync_period: float = 1.0
    ipvs_strict_arp: bool = False
    ipvs_tcp_timeout: float = 0.0
    ipvs_tcpfin_timeout: float = 0.0
    ipvs_udp_timeout: float = 0.0
    ipvs_exclude_cidrs: tuple[str, ...] = ()
    # Conntrack sysctls. maxPerCore 0 leaves nf_conntrack_max alone (and min is then unused);
    # a 0 timeout leaves that timeout alone.
    conntrack_max_per_core: int = 32768
    conntrack_min: int = 131072
    conntrack_tcp_established_timeout: float = 86400.0
    conntrack_tcp_close_wait_timeout: float = 3600.0
    conntrack_tcp_be_liberal: bool = False
    conntrack_udp_timeout: float = 0.0
    conntrack_udp_stream_timeout: float = 0.0
    # HTTP servers. An empty healthz address (only from --healthz-port=0) means no server.
    healthz_bind_address: str = "0.0.0.0:10256"
    metrics_bind_address: str = "127.0.0.1:10249"
    # (name, enabled), sorted by name.
    feature_gates: tuple[tuple[str, bool], ...] = ()
    # Logs. "auto": JSON unless stderr is a terminal (the file's "text" is "console").
    log_format: str = "auto"
    verbosity: int = 0
    log_flush_frequency: float = 5.0
    # --init-only: do the privileged node set-up, then exit.
    init_only: bool = False

    @property
    def health_timeout(self) -> float:
        """How long a queued change may wait before /healthz fails (kube-proxy: 2 x sync)."""
        return 2 * self.ipvs_sync_period

    @property
    def removed_feature_gates(self) -> tuple[str, ...]:
        """Gates of older kube-proxy releases, accepted without effect (see feature_gates)."""
        return tuple(name for name, _ in self.feature_gates if name in REMOVED_PROXY_GATES)

    def validate(self, name: Callable[[str], str] | None = None) -> Config:
        """Return self, or raise ConfigError naming the first bad setting.

        ``name`` turns a field name into what the user wrote: a flag (the default) or a
        config-file field.
        """
        _Validator(self, name or flag_of_field).run()
        return self


FIELDS = frozenset(f.name for f in dataclasses.fields(Config))
# The defaults of a config file, where they differ from the flags' (module docstring).
FILE_DEFAULTS = {"ipvs_min_sync_period": 0.0}


class _Validator:
    """kube-proxy's validation (pkg/proxy/apis/config/validation), field by field."""

    def __init__(self, config: Config, name: Callable[[str], str]) -> None:
        self.c = config
        self.name = name

    def fail(self, field: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.name(field)}: {problem}")

    def run(self) -> None:
        self.ipvs()
        self.numbers()
        self.addresses()
        self.cidrs()
        self.detect_local()
        self.logging()
        check_gates(self.c.feature_gates, self.name("feature_gates"))

    def at_least(self, field: str, floor: float) -> None:
        if getattr(self.c, field) < floor:
            raise self.fail(field, f"must be greater than or equal to {floor:g}")

    def positive(self, field: str) -> None:
        if getattr(self.c, field) <= 0:
            raise self.fail(field, "must be greater than 0")

    def ipvs(self) -> None:
        c = self.c
        if c.ipvs_scheduler not in SCHEDULERS:
            raise self.fail(
                "ipvs_scheduler",
                f"unknown scheduler {c.ipvs_scheduler!r} (one of {', '.join(SCHEDULERS)})",
            )
        self.positive("ipvs_sync_period")
        self.at_least("ipvs_min_sync_period", 0)
        if c.ipvs_min_sync_period > c.ipvs_sync_period:
            raise self.fail(
                "ipvs_min_sync_period",
                f"must not be greater than {self.name('ipvs_sync_period')}",
            )
        for field in ("ipvs_tcp_timeout", "ipvs_tcpfin_timeout", "ipvs_udp_timeout"):
            self.at_least(field, 0)

    def numbers(self) -> None:
        c = self.c
        if not 0 <= c.masquerade_bit <= 31:
            raise self.fail("masquerade_bit", "must be within the range [0, 31]")
        if c.masquerade_bit in RESERVED_MARK_BITS:
            raise self.fail(
                "masquerade_bit",
                f"bit {c.masquerade_bit} is taken by this proxy's own marks (bits 0-13:"
                " externalTrafficPolicy Local firewall marks, 15: load balancer source"
                " ranges); use 14 (the default) or 16-31",
            )
        for field in (
            "conntrack_max_per_core",
            "conntrack_min",
            "conntrack_tcp_established_timeout",
            "conntrack_tcp_close_wait_timeout",
            "conntrack_udp_timeout",
            "conntrack_udp_stream_timeout",
            "api_burst",
        ):
            self.at_least(field, 0)
        if not -1000 <= c.oom_score_adj <= 1000:
            raise self.fail("oom_score_adj", "must be within the range [-1000, 1000]")
        self.positive("config_sync_period")

    def addresses(self) -> None:
        c = self.c
        try:
            parse_ip(c.bind_address)
        except ValueError:
            raise self.fail("bind_address", f"not an IP address: {c.bind_address!r}") from None
        if c.healthz_bind_address:
            parse_host_port(c.healthz_bind_address, self.name("healthz_bind_address"))
        parse_host_port(c.metrics_bind_address, self.name("metrics_bind_address"))

    def cidrs(self) -> None:
        c = self.c
        for field in ("cluster_cidrs", "ipvs_exclude_cidrs"):
            for cidr in getattr(c, field):
                parse_cidr(cidr, self.name(field))
        if len(c.cluster_cidrs) > 2 or (
            len(c.cluster_cidrs) == 2
            and len({ipaddress.ip_network(n, strict=False).version for n in c.cluster_cidrs}) == 1
        ):
            raise self.fail(
                "cluster_cidrs",
                "must be a single CIDR or a dual-stack pair (e.g. 10.100.0.0/16,fde4:8dba::/48)",
            )
        if PRIMARY in c.nodeport_addresses:
            if len(c.nodeport_addresses) > 1:
                raise self.fail("nodeport_addresses", "can't use both 'primary' and CIDRs")
        else:
            for cidr in c.nodeport_addresses:
                parse_cidr(cidr, self.name("nodeport_addresses"))

    def detect_local(self) -> None:
        c = self.c
        if c.detect_local_mode not in DETECT_LOCAL_MODES:
            raise self.fail(
                "detect_local_mode",
                f"unsupported value {c.detect_local_mode!r}"
                f" (one of {', '.join(DETECT_LOCAL_MODES)})",
            )
        for mode, field, longest in (
            ("BridgeInterface", "detect_local_bridge_interface", 15),
            ("InterfaceNamePrefix", "detect_local_interface_name_prefix", 14),
        ):
            name = getattr(c, field)
            if c.detect_local_mode != mode:
                continue  # unused: kube-proxy does not look at it either
            if not name:
                raise self.fail(field, "must not be empty")
            if not INTERFACE_NAME.match(name) or len(name.encode()) > longest:
                raise self.fail(field, f"not an interface name{' prefix' * (longest == 14)}")

    def logging(self) -> None:
        c = self.c
        if c.log_format not in LOG_FORMATS:
            raise self.fail("log_format", f"must be one of {', '.join(LOG_FORMATS)}")
        self.at_least("verbosity", 0)
        self.positive("log_flush_frequency")
