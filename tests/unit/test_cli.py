"""The command line: kube-proxy's flags and forms, one-line errors, the run seam."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ipvsproxy import __version__, app, cli
from ipvsproxy.config import Config

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
    ],
)
def test_each_flag_sets_its_setting(argv: list[str], field: str, value: Any) -> None:
    assert getattr(parse(*argv).config, field) == value


def test_proxy_mode_ipvs_is_accepted_for_compatibility() -> None:
    assert parse("--proxy-mode=ipvs").config == Config()


def test_cleanup_selects_the_cleanup_command() -> None:
    assert parse("--cleanup").command == "cleanup"
    assert parse("--cleanup=false").command == "run"


def test_flags_win_over_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
        "ipvs:\n  scheduler: lc\n  syncPeriod: 10s\niptables:\n  masqueradeAll: true\n"
    )
    inv = parse("--config", str(path), "--ipvs-scheduler=wrr", "--masquerade-all=false")
    assert inv.config.ipvs_scheduler == "wrr"
    assert inv.config.masquerade_all is False
    assert inv.config.ipvs_sync_period == 10.0


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
    code, out, _ = run_main(capsys, "--version")
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


def test_config_file_warns_about_ignored_kube_proxy_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_app: list[tuple[str, Config]]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("conntrack:\n  maxPerCore: 0\nipvs:\n  scheduler: sh\n")
    code, _, err = run_main(capsys, "--config", str(path), "--log-format=json")
    assert code == 0
    assert '"fields": ["conntrack"]' in err
    assert fake_app[0][1].ipvs_scheduler == "sh"


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
