"""The command line: kube-proxy's flags and forms, its precedence, one-line errors, the run
seam. (Every kube-proxy flag, one by one: test_cli_flags.py.)"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipvsproxy import __version__, app, cli
from ipvsproxy.config import Config, FileReport, load_config_file
from tests.support.python_process import run_python

KUBE_PROXY_FIXTURES = Path(__file__).parent / "fixtures" / "kube_proxy"

pytestmark = pytest.mark.usefixtures("restore_logging")


def parse(*argv: str) -> cli.Invocation:
    return cli.parse_command_line(list(argv))


def test_no_flags_gives_kube_proxy_defaults() -> None:
    inv = parse()
    assert inv.command == "run"
    assert inv.config == Config()


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["--kubeconfig", "/k"], "kubeconfig", "/k"),
        (["--kubeconfig=/k"], "kubeconfig", "/k"),
        (["--hostname-override", "n1"], "hostname_override", "n1"),
        (["--bind-address", "10.0.0.1"], "bind_address", "10.0.0.1"),
        (
            ["--cluster-cidr", "10.244.0.0/16,fd00::/56"],
            "cluster_cidrs",
            ("10.244.0.0/16", "fd00::/56"),
        ),
        (["--masquerade-all"], "masquerade_all", True),
        (["--masquerade-all=true"], "masquerade_all", True),
        (["--masquerade-all=false"], "masquerade_all", False),
        (
            ["--nodeport-addresses=10.0.0.0/8,192.168.0.0/16"],
            "nodeport_addresses",
            ("10.0.0.0/8", "192.168.0.0/16"),
        ),
        (["--ipvs-scheduler", "lc"], "ipvs_scheduler", "lc"),
        (["--ipvs-sync-period", "1m"], "ipvs_sync_period", 60.0),
        (["--ipvs-sync-period=1h30m"], "ipvs_sync_period", 5400.0),
        (["--ipvs-min-sync-period", "500ms"], "ipvs_min_sync_period", 0.5),
        (["--ipvs-strict-arp"], "ipvs_strict_arp", True),
        (["--ipvs-strict-arp=false"], "ipvs_strict_arp", False),
        (["--ipvs-tcp-timeout", "15m"], "ipvs_tcp_timeout", 900.0),
        (["--ipvs-tcpfin-timeout", "30s"], "ipvs_tcpfin_timeout", 30.0),
        (["--ipvs-udp-timeout", "5s"], "ipvs_udp_timeout", 5.0),
        (["--ipvs-exclude-cidrs", "192.168.1.0/24"], "ipvs_exclude_cidrs", ("192.168.1.0/24",)),
        (["--healthz-bind-address", "[::]:10256"], "healthz_bind_address", "[::]:10256"),
        (["--metrics-bind-address", "0.0.0.0:10249"], "metrics_bind_address", "0.0.0.0:10249"),
        (["--log-format", "console"], "log_format", "console"),
        (["--log-format=json"], "log_format", "json"),
        (["-v"], "verbosity", 1),
        (["-v", "3"], "verbosity", 3),
        (["-v=2"], "verbosity", 2),
        (["--v=4"], "verbosity", 4),
        (["-v2"], "verbosity", 2),
        (["--logging-format=text"], "log_format", "console"),
        (["--logging-format", "json"], "log_format", "json"),
        (["--log-flush-frequency=1s"], "log_flush_frequency", 1.0),
        (["--master=https://10.0.0.1:6443"], "master", "https://10.0.0.1:6443"),
        (["--kube-api-qps=20"], "api_qps", 20.0),
        (["--kube-api-qps=-1"], "api_qps", -1.0),
        (["--kube-api-burst=0x20"], "api_burst", 32),
        (["--kube-api-content-type=application/json"], "api_content_type", "application/json"),
        (["--config-sync-period=5m"], "config_sync_period", 300.0),
        (["--bind-address-hard-fail"], "bind_address_hard_fail", True),
        (["--bind-address="], "bind_address", "0.0.0.0"),  # pflag: empty changes nothing
        (["--bind-address=010.0.0.1"], "bind_address", "10.0.0.1"),
        (["--oom-score-adj=-500"], "oom_score_adj", -500),
        (["--iptables-masquerade-bit=16"], "masquerade_bit", 16),
        (["--init-only"], "init_only", True),
        (
            ["--feature-gates=WatchList=true,AllBeta=false"],
            "feature_gates",
            (("AllBeta", False), ("WatchList", True)),
        ),
        (["--detect-local-mode=NodeCIDR"], "detect_local_mode", "NodeCIDR"),
        (
            ["--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cbr0"],
            "detect_local_bridge_interface",
            "cbr0",
        ),
        (["--pod-interface-name-prefix=veth"], "detect_local_interface_name_prefix", "veth"),
        (["--conntrack-max-per-core=0"], "conntrack_max_per_core", 0),
        (["--conntrack-min=1000"], "conntrack_min", 1000),
        (["--conntrack-tcp-timeout-established=0s"], "conntrack_tcp_established_timeout", 0.0),
        (["--conntrack-tcp-timeout-close-wait=30m"], "conntrack_tcp_close_wait_timeout", 1800.0),
        (["--conntrack-tcp-be-liberal"], "conntrack_tcp_be_liberal", True),
        (["--conntrack-udp-timeout=30s"], "conntrack_udp_timeout", 30.0),
        (["--conntrack-udp-timeout-stream=2m"], "conntrack_udp_stream_timeout", 120.0),
        (["--nodeport-addresses=primary"], "nodeport_addresses", ("primary",)),
        # pflag's repeatable flags: later uses add.
        (
            ["--nodeport-addresses=10.0.0.0/8", "--nodeport-addresses", "192.168.0.0/16"],
            "nodeport_addresses",
            ("10.0.0.0/8", "192.168.0.0/16"),
        ),
        (
            ["--feature-gates=WatchList=true", "--feature-gates=AllBeta=true"],
            "feature_gates",
            (("AllBeta", True), ("WatchList", True)),
        ),
        # The deprecated port flags: only a port-less address takes them; 0 is off.
        (["--healthz-bind-address=10.0.0.5"], "healthz_bind_address", "10.0.0.5:10256"),
        (["--healthz-bind-address=::1", "--healthz-port=9"], "healthz_bind_address", "[::1]:9"),
        (["--healthz-port=9"], "healthz_bind_address", "0.0.0.0:10256"),
        (["--healthz-port=0"], "healthz_bind_address", ""),
        (["--metrics-bind-address=127.0.0.1"], "metrics_bind_address", "127.0.0.1:10249"),
        # pflag's word separators: _ is -.
        (["--ipvs_scheduler=lc"], "ipvs_scheduler", "lc"),
        (["--hostname-override=Node_A"], "hostname_override", "node_a"),
        (["--hostname-override", "  Node-B "], "hostname_override", "node-b"),
        (["--hostname-override="], "hostname_override", None),
    ],
)
def test_each_flag_sets_its_setting(argv: list[str], field: str, value: Any) -> None:
    assert getattr(parse(*argv).config, field) == value


def test_proxy_mode_ipvs_is_accepted_for_compatibility() -> None:
    assert parse("--proxy-mode=ipvs").config == Config()


def test_cleanup_selects_the_cleanup_command() -> None:
    assert parse("--cleanup").command == "cleanup"
    assert parse("--cleanup=false").command == "run"


def config_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n" + body
    )
    return str(path)


def test_the_config_file_wins_over_setting_flags_as_in_kube_proxy(tmp_path: Path) -> None:
    path = config_file(
        tmp_path, "ipvs:\n  scheduler: lc\n  syncPeriod: 10s\niptables:\n  masqueradeAll: true\n"
    )
    inv = parse(
        "--config", path, "--ipvs-scheduler=wrr", "--masquerade-all=false", "--feature-gates=Foo=1"
    )
    # kube-proxy replaces the flag-built configuration with the file's, wholesale.
    assert inv.config == load_config_file(path)[0]
    assert (inv.config.ipvs_scheduler, inv.config.masquerade_all) == ("lc", True)
    # ... silently; here one warning line names the flags it ignores.
    (notice,) = inv.notices
    assert notice.event.startswith("flags ignored: --config is given")
    assert notice.names == ("--feature-gates", "--ipvs-scheduler", "--masquerade-all")


def test_hostname_master_init_only_and_logging_flags_apply_over_the_file(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        "hostnameOverride: from-file\nclientConnection:\n  kubeconfig: /k\n"
        "logging:\n  format: json\n  verbosity: 1\n",
    )
    inv = parse(
        "--config",
        path,
        "--hostname-override=From-Flag",
        "--master=https://api:6443",
        "--logging-format=text",
        "-v=4",
        "--log-flush-frequency=1s",
        "--init-only",
    )
    c = inv.config
    assert (c.hostname_override, c.master, c.kubeconfig) == ("from-flag", "https://api:6443", "/k")
    assert (c.log_format, c.verbosity, c.log_flush_frequency) == ("console", 4, 1.0)
    assert inv.command == "init-only"
    assert inv.notices == ()


def test_kubeadms_daemonset_command_line_parses(tmp_path: Path) -> None:
    # kubeadm's kube-proxy DaemonSet: command, after the kubelet expands $(NODE_NAME).
    command = [
        "/usr/local/bin/kube-proxy",
        "--config=/var/lib/kube-proxy/config.conf",
        "--hostname-override=$(NODE_NAME)",
    ]
    for fixture, notices in (("kubeadm-1.36.yaml", 0), ("kubeadm-1.19.yaml", 1)):
        argv = [
            a.replace(
                "/var/lib/kube-proxy/config.conf", str(KUBE_PROXY_FIXTURES / fixture)
            ).replace("$(NODE_NAME)", "Worker-1")
            for a in command[1:]
        ]
        inv = parse(*argv)
        assert inv.command == "run"
        expected = load_config_file(str(KUBE_PROXY_FIXTURES / fixture))[0]
        assert inv.config == dataclasses.replace(expected, hostname_override="worker-1")
        assert len(inv.notices) == notices  # 1.19: udpIdleTimeout, dropped


def test_flags_alone_follow_kube_proxys_flag_defaults() -> None:
    # Without --config, ipvs.minSyncPeriod is 1s (kube-proxy 1.31+); a file's default is 0.
    assert parse().config.ipvs_min_sync_period == 1.0
    assert parse("--proxy-mode=ipvs").config == parse("--proxy-mode=").config == Config()


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (
            ["--iptables-sync-period=10s", "--enable-dsr", "--log-dir=/var/log"],
            ("--enable-dsr", "--iptables-sync-period", "--log-dir"),
        ),
        (["--log_dir=/var/log", "--logtostderr"], ("--log-dir",)),
        (["--cleanup-ipvs=false", "--profiling=false"], ("--cleanup-ipvs",)),
    ],
)
def test_ignored_flags_are_named_in_one_warning(argv: list[str], names: tuple[str, ...]) -> None:
    (notice,) = parse(*argv).notices
    assert notice.event == "flags ignored: they mean nothing to an IPVS proxy"
    assert notice.names == names


def test_harmless_values_of_ignored_flags_say_nothing() -> None:
    assert parse("--logtostderr=true", "--profiling=false", "--vmodule=").notices == ()


def test_protobuf_and_old_gates_are_accepted_with_a_warning() -> None:
    inv = parse(
        "--kube-api-content-type=application/vnd.kubernetes.protobuf",
        "--feature-gates=IPv6DualStack=true",
    )
    events = [n.event for n in inv.notices]
    assert events[0].startswith("--kube-api-content-type: the API client speaks JSON")
    assert inv.notices[1].names == ("IPv6DualStack",)


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--no-such-flag"], "--no-such-flag"),
        (["--ipvs-sync-period", "30"], "--ipvs-sync-period"),
        (["--ipvs-sync-period=fast"], "'fast'"),
        (["--masquerade-all=maybe"], "--masquerade-all"),
        (["--ipvs-scheduler", "fastest"], "ipvs-scheduler"),
        (["--ipvs-min-sync-period=2m"], "ipvs-min-sync-period"),
        (["--cluster-cidr", "10.0.0.0/99"], "cluster-cidr"),
        (["--healthz-bind-address", "10256"], "healthz-bind-address"),
        (["--healthz-bind-address", "host:80"], "--healthz-bind-address"),
        (["--metrics-port=0"], "--metrics-bind-address: want HOST:PORT"),
        (["--healthz-bind-address=10.0.0.5", "--write-config-to=/x"], "healthz-bind-address"),
        (["--feature-gates=Foo=true"], "--feature-gates: unrecognized feature gate: Foo"),
        (["--feature-gates=Foo"], "malformed pair"),
        (["--feature-gates=NFTablesProxyMode=false"], "locked to true"),
        (["--iptables-masquerade-bit=40"], "--iptables-masquerade-bit: must be within"),
        (["--iptables-masquerade-bit=0"], "--iptables-masquerade-bit: bit 0 is taken"),
        (["--oom-score-adj=-2000"], "--oom-score-adj"),
        (["--kube-api-burst=-1"], "--kube-api-burst"),
        (["--kube-api-qps=fast"], "--kube-api-qps"),
        (["--conntrack-min=x"], "--conntrack-min"),
        (["--iptables-sync-period=fast"], "--iptables-sync-period"),
        (["--bind-address=node-a"], "--bind-address"),
        (["--hostname-override=  "], "--hostname-override: empty hostname-override is invalid"),
        (["--detect-local-mode=Magic"], "--detect-local-mode: unsupported value 'Magic'"),
        (["--detect-local-mode=BridgeInterface"], "--pod-bridge-interface: must not be empty"),
        (["--logging-format=xml"], "--logging-format"),
        (["--log-format", "xml"], "--log-format"),
        (["--proxy-mode", "iptables"], "--proxy-mode"),
        (["-v", "loud"], "-v"),
        (["--config", "/nonexistent/c.yaml"], "/nonexistent/c.yaml"),
        (["--ipvs-sched", "lc"], "--ipvs-sched"),  # no abbreviations, as kube-proxy
        (["stray"], "stray"),
    ],
)
def test_a_wrong_flag_or_value_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], names: str
) -> None:
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("ipvsproxy: error: ")
    assert names in err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    for flag in ("--ipvs-scheduler", "--healthz-bind-address", "--cleanup", "--config"):
        assert flag in out
    for version in ("--version", "--version=raw", "--version=true"):
        code, out, _ = run_main(capsys, version)
        assert (code, out.strip()) == (0, f"ipvsproxy {__version__}")
    code, out, _ = run_main(capsys, "plan", "--help")
    assert code == 0
    assert "--node" in out


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Config]]:
    calls: list[tuple[str, Config]] = []
    monkeypatch.setattr(app, "run", lambda config: calls.append(("run", config)) or 0)
    monkeypatch.setattr(app, "cleanup", lambda config: calls.append(("cleanup", config)) or 3)
    return calls


def test_main_hands_the_validated_config_to_app_run(
    capsys: pytest.CaptureFixture[str], fake_app: list[tuple[str, Config]]
) -> None:
    code, _, _ = run_main(capsys, "--ipvs-scheduler=lc", "--log-format=json")
    assert code == 0
    assert fake_app == [("run", Config(ipvs_scheduler="lc", log_format="json"))]


def test_main_cleanup_returns_app_cleanup_code(
    capsys: pytest.CaptureFixture[str], fake_app: list[tuple[str, Config]]
) -> None:
    code, _, _ = run_main(capsys, "--cleanup", "--log-format=json")
    assert code == 3
    assert [c for c, _ in fake_app] == ["cleanup"]


def test_the_proxy_runs_with_what_it_imported_frozen_out_of_collections() -> None:
    # In a process of its own: freezing this session's objects would outlive the test.
    code = (
        "import gc, sys\n"
        "from ipvsproxy import app, cli\n"
        "async def serve(config):\n"
        "    print(gc.get_freeze_count() > 20_000, 'ipvsproxy.reconciler' in sys.modules)\n"
        "    return 0\n"
        "app.serve = serve\n"
        "sys.exit(cli.main(['--log-format=json']))\n"
    )
    assert run_python(code).stdout.split() == ["True", "True"]


def warnings(err: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines()]
    return [line for line in lines if line["level"] == "warning"]


def test_a_file_with_an_unknown_field_starts_with_one_warning_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_app: list[tuple[str, Config]]
) -> None:
    path = config_file(tmp_path, "conntrack:\n  maxPerCore: 0\nipvs:\n  schedular: lc\n")
    code, _, err = run_main(capsys, "--config", path, "--log-format=json")
    assert code == 0
    (warning,) = warnings(err)
    assert warning["event"].startswith("config file read leniently, as kube-proxy reads it")
    assert warning["names"] == ["ipvs.schedular"]
    assert fake_app[0][1].conntrack_max_per_core == 0  # node settings are no warning


def test_a_kubeadm_file_of_1_19_starts_with_one_warning_for_its_obsolete_field(
    capsys: pytest.CaptureFixture[str], fake_app: list[tuple[str, Config]]
) -> None:
    path = str(KUBE_PROXY_FIXTURES / "kubeadm-1.19.yaml")
    code, _, err = run_main(capsys, "--config", path, "--log-format=json")
    assert code == 0
    (warning,) = warnings(err)
    assert warning["names"] == ["udpIdleTimeout (obsolete)"]
    assert [c for c, _ in fake_app] == ["run"]


@pytest.mark.parametrize("fixture", ["kubeadm-1.19.yaml", "kubeadm-1.36.yaml"])
def test_write_config_to_writes_the_effective_config_and_exits_0(
    fixture: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fake_app: list[tuple[str, Config]],
) -> None:
    source = str(KUBE_PROXY_FIXTURES / fixture)
    out = tmp_path / "out.yaml"
    code, _, _ = run_main(
        capsys, f"--config={source}", f"--write-config-to={out}", "--log-format=json"
    )
    assert code == 0
    assert fake_app == []  # nothing ran
    written = yaml.safe_load(out.read_text())
    assert written["ipvs"]["scheduler"] == "rr"
    assert written["ipvs"]["syncPeriod"] == "30s"
    assert written["healthzBindAddress"] == "0.0.0.0:10256"
    assert written["metricsBindAddress"] == "127.0.0.1:10249"
    assert written["conntrack"]["maxPerCore"] == 32768
    assert written["iptables"]["masqueradeBit"] == 14
    assert written["mode"] == "ipvs"
    # ... and it loads back to the same Config, without a warning.
    effective = parse(f"--config={source}", "--log-format=json").config
    assert load_config_file(str(out)) == (effective, FileReport())


def test_write_config_to_from_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.yaml"
    argv = ["--ipvs-scheduler=lc", "--cluster-cidr=10.244.0.0/16", "--log-format=json"]
    code, _, _ = run_main(capsys, *argv, f"--write-config-to={out}")
    assert code == 0
    assert load_config_file(str(out))[0] == parse(*argv).config


def test_write_config_to_an_unwritable_place_is_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(capsys, f"--write-config-to={tmp_path}/no/such/dir/x.yaml")
    assert code == 1
    assert "--write-config-to" in err.splitlines()[-1]


def test_main_init_only_hands_over_to_app(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Config] = []
    monkeypatch.setattr(app, "init_only", lambda config: calls.append(config) or 0)
    code, _, _ = run_main(capsys, "--init-only", "--log-format=json")
    assert code == 0
    assert calls[0].init_only


def test_module_entry_point_runs() -> None:
    # One real process: `python -m ipvsproxy` is wired to cli.main.
    done = subprocess.run(
        [sys.executable, "-m", "ipvsproxy", "--ipvs-udp-timeout=soon"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "ipvsproxy: error: argument --ipvs-udp-timeout: invalid duration 'soon'"
        " (use Go syntax: 30s, 1m, 500ms, 1h30m)"
    )


FIXTURES = Path(__file__).parent / "fixtures" / "plan"


def test_plan_prints_the_table_addresses_and_ipsets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(
        capsys, "plan", "-f", str(FIXTURES / "sample.yaml"), "--node", "node-a", "--log-format=json"
    )
    assert code == 0
    blocks = out.split("\n\n")
    assert blocks[0].splitlines()[2:] == [
        "TCP  10.96.0.10:53 rr",
        "  -> 10.244.1.5:53                Masq    1      0          0",
        "  -> 10.244.2.7:53                Masq    1      0          0",
        "UDP  10.96.0.10:53 rr",
        "  -> 10.244.1.5:53                Masq    1      0          0",
        "  -> 10.244.2.7:53                Masq    1      0          0",
        "TCP  10.96.5.5:80 lc",
        "  -> 10.244.1.20:8080             Masq    1      0          0",
        "TCP  192.168.1.10:30080 lc",
        "  -> 10.244.1.20:8080             Masq    1      0          0",
    ]
    assert blocks[1] == "kube-ipvs0 addresses:\n  10.96.0.10\n  10.96.5.5"
    assert "  KUBE-NODE-PORT-TCP\n    30080\n" in blocks[2]
    assert "  KUBE-CLUSTER-IP\n    10.96.0.10,tcp:53\n    10.96.0.10,udp:53\n" in blocks[2]


def test_plan_flags_change_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    sample = str(FIXTURES / "sample.yaml")
    code, out, _ = run_main(
        capsys, "plan", "-f", sample, "--ipvs-scheduler=wrr", "--nodeport-addresses=10.0.0.0/8"
    )
    assert code == 0
    assert "TCP  10.96.0.10:53 wrr" in out
    assert "30080" not in out.split("\n\n")[0]  # no node address matches the CIDR


def test_plan_skips_malformed_objects_and_keeps_the_rest(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_main(
        capsys, "plan", "-f", str(FIXTURES / "broken.yaml"), "--log-format=json"
    )
    assert code == 0
    assert "TCP  10.96.7.7:80 rr" in out
    assert "10.96.999.1" not in out
    assert ":99999" not in out
    warnings = [line for line in err.splitlines() if '"level": "warning"' in line]
    assert any("default/bad-ip" in line for line in warnings)
    assert any("ConfigMap" in line for line in warnings)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan"], "the following arguments are required: -f/--filename"),
        (["plan", "-f", "/nonexistent.yaml"], "-f /nonexistent.yaml: cannot read"),
        (["plan", "-f", "{bad}", "--node", "nope"], "--node nope: no Node of that name"),
        (["plan", "-f", "{bad}", "-f", "{bad}", "--ipvs-scheduler=x"], "unknown scheduler 'x'"),
    ],
)
def test_plan_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    argv = [a.replace("{bad}", str(FIXTURES / "broken.yaml")) for a in argv]
    code, out, err = run_main(capsys, *argv, "--log-format=json")
    assert code == 2
    assert out == ""
    assert err.splitlines()[-1].startswith("ipvsproxy: error: ")
    assert message in err.splitlines()[-1]


def test_plan_rejects_invalid_yaml(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("kind: Service\nmetadata: {name: [unclosed\n")
    code, _, err = run_main(capsys, "plan", "-f", str(path), "--log-format=json")
    assert code == 2
    assert err.count("\n") == 1
    assert f"-f {path}: line" in err
    assert "not valid YAML" in err


def test_plan_needs_a_node_name_when_several_are_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = ["-f", str(FIXTURES / "sample.yaml"), "-f", str(FIXTURES / "broken.yaml")]
    code, _, err = run_main(capsys, "plan", *files, "--log-format=json")
    assert code == 2
    assert "several Nodes" in err


def test_hand_back_is_a_subcommand_with_the_proxys_flags() -> None:
    inv = parse("hand-back", "--ipvs-exclude-cidrs=10.0.0.0/8", "--v=2")
    assert inv.command == "hand-back"
    assert inv.config.ipvs_exclude_cidrs == ("10.0.0.0/8",)
    assert parse("--cleanup").command == "cleanup"
