"""Config: kube-proxy's defaults and validation; every error names the setting."""

from __future__ import annotations

import dataclasses

import pytest

from ipvsproxy.config import FIELDS, Config, ConfigError
from ipvsproxy.config.flags import KUBE_PROXY_FLAGS, PSEUDO_SETTINGS
from ipvsproxy.config.model import NO_NODE_ACCESS_BIT, RESERVED_MARK_BITS
from ipvsproxy.core import fwmark
from ipvsproxy.dataplane.iptables_rules import RulesConfig


def test_defaults_are_kube_proxys() -> None:
    c = Config().validate()
    assert (c.ipvs_scheduler, c.ipvs_sync_period, c.ipvs_min_sync_period) == ("rr", 30.0, 1.0)
    assert (c.healthz_bind_address, c.metrics_bind_address) == ("0.0.0.0:10256", "127.0.0.1:10249")
    assert (c.api_qps, c.api_burst) == (5.0, 10)
    assert c.api_content_type == "application/vnd.kubernetes.protobuf"
    assert (c.oom_score_adj, c.masquerade_bit, c.config_sync_period) == (-999, 14, 900.0)
    assert (c.conntrack_max_per_core, c.conntrack_min) == (32768, 131072)
    assert (c.conntrack_tcp_established_timeout, c.conntrack_tcp_close_wait_timeout) == (
        86400.0,
        3600.0,
    )
    assert (c.conntrack_udp_timeout, c.conntrack_udp_stream_timeout) == (0.0, 0.0)
    assert c.detect_local_mode == "ClusterCIDR"
    assert c.health_timeout == 60.0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ipvs_scheduler": "fastest"}, "--ipvs-scheduler: unknown scheduler 'fastest'"),
        ({"ipvs_sync_period": 0.0}, "--ipvs-sync-period: must be greater than 0"),
        ({"ipvs_min_sync_period": -1.0}, "--ipvs-min-sync-period: must be greater than or equal"),
        (
            {"ipvs_min_sync_period": 60.0},
            "--ipvs-min-sync-period: must not be greater than --ipvs-sync-period",
        ),
        ({"ipvs_udp_timeout": -1.0}, "--ipvs-udp-timeout: must be greater than or equal to 0"),
        ({"bind_address": "nope"}, "--bind-address: not an IP address"),
        ({"cluster_cidrs": ("10.0.0.0/33",)}, "--cluster-cidr: not a CIDR"),
        ({"cluster_cidrs": ("10.0.0.0/8", "11.0.0.0/8")}, "--cluster-cidr: must be a single"),
        ({"cluster_cidrs": ("10.0.0.0/8", "fd00::/8", "11.0.0.0/8")}, "--cluster-cidr"),
        ({"ipvs_exclude_cidrs": ("x",)}, "--ipvs-exclude-cidrs: not a CIDR"),
        ({"metrics_bind_address": "localhost:1"}, "--metrics-bind-address: not an IP"),
        ({"metrics_bind_address": ""}, "--metrics-bind-address: want HOST:PORT"),
        ({"healthz_bind_address": "1.2.3.4"}, "--healthz-bind-address: want HOST:PORT"),
        ({"nodeport_addresses": ("primary", "10.0.0.0/8")}, "--nodeport-addresses: can't use both"),
        ({"nodeport_addresses": ("ten",)}, "--nodeport-addresses: not a CIDR"),
        ({"masquerade_bit": 32}, "--iptables-masquerade-bit: must be within the range [0, 31]"),
        ({"masquerade_bit": 13}, "--iptables-masquerade-bit: bit 13 is taken"),
        ({"masquerade_bit": 15}, "--iptables-masquerade-bit: bit 15 is taken"),
        ({"conntrack_max_per_core": -1}, "--conntrack-max-per-core: must be greater than or"),
        ({"conntrack_min": -1}, "--conntrack-min: must be greater than or equal to 0"),
        ({"conntrack_udp_stream_timeout": -1.0}, "--conntrack-udp-timeout-stream"),
        ({"conntrack_tcp_established_timeout": -1.0}, "--conntrack-tcp-timeout-established"),
        ({"api_burst": -1}, "--kube-api-burst: must be greater than or equal to 0"),
        ({"oom_score_adj": 1001}, "--oom-score-adj: must be within the range [-1000, 1000]"),
        ({"config_sync_period": 0.0}, "--config-sync-period: must be greater than 0"),
        ({"detect_local_mode": "Magic"}, "--detect-local-mode: unsupported value 'Magic'"),
        ({"detect_local_mode": "BridgeInterface"}, "--pod-bridge-interface: must not be empty"),
        (
            {"detect_local_mode": "InterfaceNamePrefix"},
            "--pod-interface-name-prefix: must not be empty",
        ),
        (
            {"detect_local_mode": "BridgeInterface", "detect_local_bridge_interface": "br 0"},
            "--pod-bridge-interface: not an interface name",
        ),
        (
            {
                "detect_local_mode": "InterfaceNamePrefix",
                "detect_local_interface_name_prefix": "fifteen-letters",
            },
            "--pod-interface-name-prefix: not an interface name prefix",
        ),
        ({"log_format": "xml"}, "--logging-format: must be one of"),
        ({"verbosity": -1}, "-v: must be greater than or equal to 0"),
        ({"log_flush_frequency": 0.0}, "--log-flush-frequency: must be greater than 0"),
        ({"feature_gates": (("NoSuchGate", True),)}, "--feature-gates: unrecognized feature gate"),
    ],
)
def test_validate_names_the_bad_setting(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(**changes).validate()  # type: ignore[arg-type]
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "changes",
    [
        {"nodeport_addresses": ("primary",)},
        {"cluster_cidrs": ("10.244.0.0/16", "fd00:10:244::/56")},
        {"masquerade_bit": 16},
        {"masquerade_bit": 31},
        {"conntrack_max_per_core": 0, "conntrack_tcp_established_timeout": 0.0},
        {"oom_score_adj": -1000},
        {"healthz_bind_address": ""},  # --healthz-port=0: no healthz server
        {"detect_local_mode": "BridgeInterface", "detect_local_bridge_interface": "cbr0"},
        {"feature_gates": (("NFTablesProxyMode", True), ("IPv6DualStack", True))},
        {"ipvs_min_sync_period": 0.0},
    ],
)
def test_validate_accepts(changes: dict[str, object]) -> None:
    Config(**changes).validate()  # type: ignore[arg-type]


def test_validate_names_fields_as_the_caller_says() -> None:
    with pytest.raises(ConfigError, match=r"^ipvs\.syncPeriod: must be greater than 0$"):
        Config(ipvs_sync_period=0).validate({"ipvs_sync_period": "ipvs.syncPeriod"}.__getitem__)


def test_reserved_mark_bits_are_the_proxys_own_marks() -> None:
    # The masquerade bit must stay clear of the fwmark range and the no-node-access mark.
    assert {bit for bit in range(32) if fwmark.MASK >> bit & 1} < RESERVED_MARK_BITS
    assert RulesConfig().no_node_access_bit == NO_NODE_ACCESS_BIT
    assert RulesConfig().masquerade_bit == Config().masquerade_bit not in RESERVED_MARK_BITS


def test_every_flag_names_a_real_setting() -> None:
    for flag in KUBE_PROXY_FLAGS:
        assert flag.field is None or flag.field in FIELDS | PSEUDO_SETTINGS, flag.name


def test_removed_feature_gates_are_reported() -> None:
    c = Config(feature_gates=(("IPv6DualStack", True), ("NFTablesProxyMode", True)))
    assert c.removed_feature_gates == ("IPv6DualStack",)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().ipvs_scheduler = "lc"  # type: ignore[misc]
