"""The systemd unit (packaging/systemd/ipvsproxy.service) and the example config."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ipvsproxy.cli import parse_command_line
from ipvsproxy.config import Config, FileReport, load_config_file

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "systemd" / "ipvsproxy.service"
EXAMPLE = ROOT / "packaging" / "config.yaml"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def exec_start() -> list[str]:
    return shlex.split(unit()["Service"]["ExecStart"])


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: apt-get install systemd"
    # verify also checks that ExecStart's binary exists: point it at this
    # environment's ipvsproxy script, leaving everything else as shipped.
    script = Path(sys.executable).parent / "ipvsproxy"
    assert script.exists(), "install the package (pip install -e .) first"
    copy = tmp_path / "ipvsproxy.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/ipvsproxy", str(script)))
    done = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    # verify exits 0 on unknown keys and bad values, only warning: require silence.
    assert done.stderr.strip() == ""


def test_verify_would_report_a_broken_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool
    copy = tmp_path / "broken.service"
    text = UNIT.read_text().replace("/usr/local/bin/ipvsproxy", sys.executable)
    copy.write_text(text.replace("Restart=always", "Restart=always\nRestartt=no"))
    done = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=120, check=False
    )
    assert "Restartt" in done.stderr


def test_exec_start_parses_with_the_real_cli() -> None:
    argv = exec_start()
    assert argv[0] == "/usr/local/bin/ipvsproxy"
    assert argv[1:] == ["--config=/etc/ipvsproxy/config.yaml"]
    # The config file is installed from packaging/config.yaml.
    args = [a.replace("/etc/ipvsproxy/config.yaml", str(EXAMPLE)) for a in argv[1:]]
    inv = parse_command_line(args)
    assert inv.command == "run"
    assert inv.notices == ()  # no flag that --config would make kube-proxy ignore
    assert inv.config.kubeconfig == "/var/lib/ipvsproxy/kubeconfig"


def test_the_privileged_node_set_up_runs_first() -> None:
    """kube-proxy's --init-only, as an ExecStartPre with full privileges ("+")."""
    pre = unit()["Service"]["ExecStartPre"]
    assert pre.startswith("+/usr/local/bin/ipvsproxy ")
    argv = shlex.split(pre[1:])
    args = [a.replace("/etc/ipvsproxy/config.yaml", str(EXAMPLE)) for a in argv[1:]]
    inv = parse_command_line(args)
    assert inv.command == "init-only"
    assert inv.notices == ()


@pytest.mark.overrides_default("min_sync_period", reason="states the value the file ships")
def test_example_config_loads() -> None:
    config, report = load_config_file(str(EXAMPLE))
    assert report == FileReport()
    assert parse_command_line(["--config", str(EXAMPLE)]).config == config
    assert config == Config(
        kubeconfig="/var/lib/ipvsproxy/kubeconfig",
        cluster_cidrs=("10.244.0.0/16",),
        log_format="json",
        ipvs_min_sync_period=0.0,  # shipped: a change is synced at once (issue 16)
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Restart", "always"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW"),
        ("AmbientCapabilities", "CAP_NET_ADMIN CAP_NET_RAW"),
    ],
)
def test_service_settings(key: str, value: str) -> None:
    assert unit()["Service"][key] == value


def test_netlink_is_not_blocked() -> None:
    service = unit()["Service"]
    assert "AF_NETLINK" in service["RestrictAddressFamilies"].split()
    assert "PrivateNetwork" not in service  # the proxy programs the host's network
    assert "ProtectKernelTunables" not in service  # it writes net sysctls


def test_ordered_after_the_network() -> None:
    section = unit()["Unit"]
    assert "network-online.target" in section["After"].split()
    assert "network-online.target" in section["Wants"].split()
    assert unit()["Install"]["WantedBy"] == "multi-user.target"
