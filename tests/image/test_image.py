"""The container image, built from the Dockerfile and run with podman.

Run with `tox -e image` (as root, with podman, runc and mmdebstrap: scripts/setup.sh
installs them). The session builds the image once with scripts/build-image.sh, on the
local Debian base that script makes (no registry, no network inside the build), under a
tag of its own, and removes it at the end. Then it reads the image's files (podman image
mount) and runs it (podman run, no network): `kube-proxy --version` and
`ipvsproxy plan -f` on a sample must print what this checkout prints.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsproxy import __version__, cli

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "unit" / "fixtures" / "plan" / "sample.yaml"
KUBEADM = Path(__file__).resolve().parent / "kubeadm"
VENV = "/opt/ipvsproxy"


def _run_flags() -> list[str]:
    """The flags of every podman run here, for hosts like this project's CI machines."""
    # Run as root, podman sets the container's RLIMIT_NOFILE to 1048576 (and RLIMIT_NPROC
    # too, once any --ulimit is given). Above the caller's hard limits that needs
    # CAP_SYS_RESOURCE, which root lacks in some sandboxes, this project's CI among them
    # ("setrlimit `RLIMIT_NOFILE`: Operation not permitted"); these stay below them.
    nofile = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    return [
        # bookworm's crun refuses hosts with hybrid cgroups (see scripts/build-image.sh).
        f"--runtime={os.environ.get('IPVSPROXY_OCI_RUNTIME', 'runc')}",
        "run",
        "--rm",
        "--network=none",
        f"--ulimit=nofile={nofile}:{nofile}",
        f"--ulimit=nproc={nproc}:{nproc}",
    ]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        pytest.fail(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


def run_in(
    image: str, *command: str, entrypoint: str | None = None, volumes: tuple[str, ...] = ()
) -> str:
    """Run the image (its entrypoint, or another) with no network; its standard output."""
    flags = _run_flags()
    if entrypoint is not None:
        flags.append(f"--entrypoint={entrypoint}")
    flags += [f"--volume={v}:ro" for v in volumes]
    return podman(*flags, image, *command).stdout


@pytest.fixture(scope="session")
def image(request: pytest.FixtureRequest) -> Iterator[str]:
    if shutil.which("podman") is None:
        message = "podman is missing: bash scripts/setup.sh installs it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    tag = f"localhost/ipvsproxy:test-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        ["bash", "scripts/build-image.sh", "--tag", tag],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/build-image.sh failed:\n{done.stdout}\n{done.stderr}")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(done.stdout.strip().splitlines()[-1])
    yield tag
    podman("image", "unmount", tag, check=False)
    podman("rmi", tag, check=False)


@pytest.fixture(scope="session")
def rootfs(image: str) -> Path:
    """The image's files, mounted read-only by podman (unmounted with the image)."""
    return Path(podman("image", "mount", image).stdout.strip())


def test_kube_proxy_is_ipvsproxy_at_kubeadms_path(rootfs: Path) -> None:
    for name in ("kube-proxy", "ipvsproxy"):
        link = rootfs / "usr" / "local" / "bin" / name
        assert link.is_symlink(), name
        assert os.readlink(link) == f"{VENV}/bin/ipvsproxy"
    script = (rootfs / VENV.lstrip("/") / "bin" / "ipvsproxy").read_text()
    assert script.startswith(f"#!{VENV}/bin/python")
    assert "from ipvsproxy.__main__ import main" in script  # which installs listed_finder


def test_the_tools_the_proxy_drives_are_there(rootfs: Path) -> None:
    for tool in (
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "ip6tables-legacy-restore",
        "ip6tables-nft-restore",
        "ipset",
        "conntrack",
        "modprobe",
    ):
        assert (rootfs / "usr" / "sbin" / tool).exists(), tool


def test_the_environment_has_no_pip_and_only_the_package_and_its_dependencies(
    rootfs: Path,
) -> None:
    site = rootfs / VENV.lstrip("/") / "lib" / "python3.11" / "site-packages"
    names = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert "ipvsproxy" in names
    assert "pip" not in names
    assert "setuptools" not in names
    assert not (rootfs / "wheels").exists()


def test_image_config(image: str) -> None:
    (info,) = json.loads(podman("image", "inspect", image).stdout)
    config = info["Config"]
    assert config["Entrypoint"] == ["ipvsproxy"]
    assert "PYTHONUNBUFFERED=1" in config["Env"]


def test_kube_proxy_version_is_this_checkouts(
    image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--version"]) == 0
    expected = capsys.readouterr().out
    assert __version__ in expected
    assert run_in(image, "--version", entrypoint="/usr/local/bin/kube-proxy") == expected


def test_kube_proxy_takes_kubeadms_flags(image: str) -> None:
    out = run_in(image, "--help", entrypoint="/usr/local/bin/kube-proxy")
    assert "--config" in out
    assert "--hostname-override" in out


def test_plan_in_the_image_prints_what_this_checkout_prints(
    image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", "-f", "/sample.yaml", "--node", "node-a"]
    assert cli.main([*args[:2], str(SAMPLE), *args[3:]]) == 0
    expected = capsys.readouterr().out
    out = run_in(image, *args, volumes=(f"{SAMPLE}:/sample.yaml",))
    assert out == expected
    assert "TCP  10.96.0.10:53 rr\n" in out
    assert "TCP  192.168.1.10:30080 lc\n" in out


def test_the_runtime_and_the_compiled_dependencies_load_in_the_image(image: str) -> None:
    # The wheels were chosen on the host for the base's Python; a wrong ABI fails here.
    code = (
        "import yaml, multidict._multidict, frozenlist._frozenlist, yarl._quoting_c, "
        "aiohttp._http_parser, ipvsproxy.app; print(yaml.__with_libyaml__)"
    )
    out = run_in(image, "-c", code, entrypoint=f"{VENV}/bin/python")
    assert out == "True\n"


def test_kubeadms_command_line_and_config_reach_the_proxy(image: str) -> None:
    # kubeadm's DaemonSet: /usr/local/bin/kube-proxy --config=/var/lib/kube-proxy/config.conf
    # --hostname-override=$(NODE_NAME). Without a cluster, plan shows the file was read.
    out = run_in(
        image,
        "plan",
        "-f",
        "/sample.yaml",
        "--config=/var/lib/kube-proxy/config.conf",
        "--hostname-override=node-a",
        entrypoint="/usr/local/bin/kube-proxy",
        volumes=(f"{KUBEADM}:/var/lib/kube-proxy", f"{SAMPLE}:/sample.yaml"),
    )
    assert "TCP  10.96.0.10:53 rr\n" in out
