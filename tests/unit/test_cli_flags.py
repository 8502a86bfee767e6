"""Every kube-proxy flag parses through the real CLI parser: the current release's --help
(1.36), the legacy klog flags, and the removed flags command lines still carry.

The lists are written here from the research notes (/work/research/kubeproxy-config-flags.md
§5), not taken from ipvsproxy/config/flags.py, so that the two check each other.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ipvsproxy import cli
from ipvsproxy.config.flags import KUBE_PROXY_FLAGS, Role

KUBEADM_FILE = str(Path(__file__).parent / "fixtures" / "kube_proxy" / "kubeadm-1.36.yaml")
BARE = None  # a boolean flag given without a value

# kube-proxy 1.36 --help (§5.1), each with a representative value.
CURRENT: dict[str, str | None] = {
    "--config": KUBEADM_FILE,
    "--write-config-to": "/tmp/kube-proxy-config.yaml",
    "--cleanup": BARE,
    "--init-only": BARE,
    "--feature-gates": "WatchList=true,AllBeta=false",
    "--kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf",
    "--master": "https://10.0.0.1:6443",
    "--kube-api-content-type": "application/vnd.kubernetes.protobuf",
    "--kube-api-burst": "10",
    "--kube-api-qps": "5",
    "--hostname-override": "node-a",
    "--bind-address": "0.0.0.0",
    "--healthz-bind-address": "0.0.0.0:10256",
    "--metrics-bind-address": "127.0.0.1:10249",
    "--bind-address-hard-fail": BARE,
    "--profiling": BARE,
    "--show-hidden-metrics-for-version": "1.35",
    "--proxy-mode": "ipvs",
    "--iptables-masquerade-bit": "14",
    "--masquerade-all": BARE,
    "--iptables-localhost-nodeports": "false",
    "--iptables-sync-period": "30s",
    "--iptables-min-sync-period": "1s",
    "--ipvs-sync-period": "30s",
    "--ipvs-min-sync-period": "1s",
    "--ipvs-scheduler": "lc",
    "--ipvs-exclude-cidrs": "10.200.0.0/16,fd00:200::/64",
    "--ipvs-strict-arp": BARE,
    "--ipvs-tcp-timeout": "15m",
    "--ipvs-tcpfin-timeout": "30s",
    "--ipvs-udp-timeout": "5s",
    "--detect-local-mode": "ClusterCIDR",
    "--pod-bridge-interface": "cbr0",
    "--pod-interface-name-prefix": "veth",
    "--cluster-cidr": "10.244.0.0/16,fd00:10:244::/56",
    "--nodeport-addresses": "primary",
    "--oom-score-adj": "-999",
    "--conntrack-max-per-core": "32768",
    "--conntrack-min": "131072",
    "--conntrack-tcp-timeout-established": "24h0m0s",
    "--conntrack-tcp-timeout-close-wait": "1h0m0s",
    "--conntrack-tcp-be-liberal": BARE,
    "--conntrack-udp-timeout": "30s",
    "--conntrack-udp-timeout-stream": "2m",
    "--config-sync-period": "15m0s",
    "--healthz-port": "10256",
    "--metrics-port": "10249",
    "--logging-format": "json",
    "--log-flush-frequency": "5s",
    "-v": "2",
    "--v": "2",
    "--vmodule": "proxier*=4",
    "--log-text-split-stream": BARE,
    "--log-text-info-buffer-size": "64Ki",
    "--log-json-split-stream": BARE,
    "--log-json-info-buffer-size": "0",
    "--boot-id-file": "/proc/sys/kernel/random/boot_id",
    "--machine-id-file": "/etc/machine-id,/var/lib/dbus/machine-id",
    # Windows-only, all releases (rootHnsEndpointName and forward-healthcheck-vip 1.24+).
    "--windows-service": BARE,
    "--source-vip": "10.0.0.99",
    "--network-name": "vxlan0",
    "--enable-dsr": BARE,
    "--root-hnsendpoint-name": "cbr0",
    "--forward-healthcheck-vip": BARE,
}

# klog's flags, accepted by kube-proxy 1.19-1.25 (§5.2), as kubeadm-era manifests pass them.
LEGACY_KLOG: dict[str, str | None] = {
    "--add-dir-header": BARE,
    "--alsologtostderr": BARE,
    "--log-backtrace-at": "proxier.go:100",
    "--log-dir": "/var/log/kube-proxy",
    "--log-file": "/var/log/kube-proxy.log",
    "--log-file-max-size": "1800",
    "--logtostderr": "true",
    "--skip-headers": BARE,
    "--skip-log-headers": BARE,
    "--stderrthreshold": "2",
    "--one-output": BARE,
    # The underscore spellings (Go flag names; pflag normalises them).
    "--log_dir": "/var/log/kube-proxy",
    "--log_file": "/var/log/kube-proxy.log",
    "--skip_headers": BARE,
    "--log_file_max_size": "100",
}

# Flags of older releases that kube-proxy removed, still on some command lines (§5.2).
REMOVED: dict[str, str | None] = {
    "--cleanup-ipvs": "true",
    "--udp-timeout": "250ms",
    "--proxy-port-range": "30000-32767",
    "--azure-container-registry-config": "/etc/kubernetes/azure.json",
    "--cloud-provider-gce-lb-src-cidrs": "130.211.0.0/22,35.191.0.0/16",
    "--cloud-provider-gce-l7lb-src-cidrs": "130.211.0.0/22,35.191.0.0/16",
}

# kube-proxy 1.19's AddFlags (§5.2), names only: all must still be accepted.
RELEASE_1_19 = (  # noqa: SIM905 (the names as the research notes list them)
    "config write-config-to kubeconfig cluster-cidr kube-api-content-type master"
    " hostname-override ipvs-scheduler show-hidden-metrics-for-version ipvs-exclude-cidrs"
    " nodeport-addresses cleanup cleanup-ipvs bind-address healthz-bind-address"
    " metrics-bind-address bind-address-hard-fail proxy-port-range proxy-mode feature-gates"
    " healthz-port metrics-port oom-score-adj iptables-masquerade-bit conntrack-max-per-core"
    " conntrack-min kube-api-burst iptables-sync-period iptables-min-sync-period"
    " ipvs-sync-period ipvs-min-sync-period ipvs-tcp-timeout ipvs-tcpfin-timeout"
    " ipvs-udp-timeout conntrack-tcp-timeout-established conntrack-tcp-timeout-close-wait"
    " config-sync-period udp-timeout ipvs-strict-arp masquerade-all profiling kube-api-qps"
    " detect-local-mode log-flush-frequency"
).split()


def argv_of(flags: dict[str, str | None]) -> list[str]:
    return [name if value is None else f"{name}={value}" for name, value in flags.items()]


@pytest.mark.parametrize(
    ("name", "value"), [*CURRENT.items(), *LEGACY_KLOG.items(), *REMOVED.items()]
)
def test_each_flag_parses_alone(name: str, value: str | None) -> None:
    cli.parse_command_line(argv_of({name: value}))


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, v in CURRENT.items() if v is not None])
def test_each_valued_flag_also_parses_as_two_words(name: str, value: str) -> None:
    cli.parse_command_line([name, value])


def test_all_of_them_together_with_and_without_a_config_file() -> None:
    everything = argv_of(CURRENT | LEGACY_KLOG | REMOVED)
    with_file = cli.parse_command_line(everything)
    assert with_file.command == "write-config"
    without = cli.parse_command_line([a for a in everything if not a.startswith("--config=")])
    assert without.config.ipvs_scheduler == "lc"
    assert with_file.config.ipvs_scheduler == "rr"  # the file's: kube-proxy's precedence


def test_every_1_19_flag_is_accepted() -> None:
    known = {a.split("=")[0] for a in argv_of(CURRENT | LEGACY_KLOG | REMOVED)}
    assert {f"--{name}" for name in RELEASE_1_19} <= known
    for name in RELEASE_1_19:
        assert f"--{name}" in cli.build_parser().format_help()


def test_the_flag_table_holds_nothing_unexplained() -> None:
    listed = set(CURRENT) | set(LEGACY_KLOG) | set(REMOVED)
    ours = {"--log-format"}  # ipvsproxy's own spelling, kept from before
    table = {flag.name for flag in KUBE_PROXY_FLAGS}
    assert table - listed == ours
    assert listed - table - {"--config", "--write-config-to", "--cleanup", "-v"} == {
        name for name in LEGACY_KLOG if "_" in name
    }


def test_flags_meaning_nothing_here_are_named_in_the_warning() -> None:
    ignored = [flag.name for flag in KUBE_PROXY_FLAGS if flag.role is Role.IGNORED]
    everything = CURRENT | LEGACY_KLOG | REMOVED
    given = {name: everything[name] for name in ignored}
    notices = cli.parse_command_line(argv_of(given)).notices
    (notice,) = [n for n in notices if n.event.endswith("mean nothing to an IPVS proxy")]
    # Given values that are what this proxy does anyway: --logtostderr=true,
    # --cleanup-ipvs=true, --log-json-info-buffer-size=0.
    harmless = {"--logtostderr", "--cleanup-ipvs", "--log-json-info-buffer-size"}
    assert set(notice.names) == set(ignored) - harmless


def test_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in KUBE_PROXY_FLAGS:
        assert flag.name in out
