"""The kernel runners' pure parts (tests/vm): which 6.12 kernel qemu_run boots, memory sizes,
the packages named when something is missing, and in_kernel's choice of runner."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "vm"))
import in_kernel
import qemu_run


def test_the_newest_612_cloud_kernel_with_modules_is_chosen(tmp_path: Path) -> None:
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    for release in (
        "6.12.9+deb12-cloud-amd64",
        "6.12.117+deb12-cloud-amd64",
        "6.12.120+deb12-cloud-amd64",
    ):
        (boot / f"vmlinuz-{release}").touch()
    (boot / "vmlinuz-6.1.0-30-cloud-amd64").touch()
    (boot / "vmlinuz-6.12.130+deb12-amd64").touch()  # not the cloud flavour
    for release in ("6.12.9+deb12-cloud-amd64", "6.12.117+deb12-cloud-amd64"):
        (modules / release).mkdir(parents=True)  # 6.12.120 has no modules: not bootable here
    chosen = qemu_run.find_kernel(boot, modules)
    assert chosen == boot / "vmlinuz-6.12.117+deb12-cloud-amd64"
    assert qemu_run.find_kernel(tmp_path / "nothing", modules) is None


def test_a_missing_kernel_is_named_as_its_package() -> None:
    assert qemu_run.KERNEL_PACKAGE in qemu_run.missing_packages(None)


@pytest.mark.parametrize(
    ("size", "mib"), [("1536M", 1536), ("2G", 2048), ("1536", 1536), ("2GiB", 2048), ("1g", 1024)]
)
def test_memory_sizes(size: str, mib: int) -> None:
    assert qemu_run.mebibytes(size) == mib


def test_a_bad_memory_size_is_refused() -> None:
    with pytest.raises(ValueError, match="bad memory size"):
        qemu_run.mebibytes("lots")


def test_in_kernel_refuses_an_unknown_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    assert in_kernel.main(["--kernel", "bogus", "--", "true"]) == 2
    assert "uml, qemu612, host" in capsys.readouterr().err


def test_in_kernel_runs_on_the_host_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IPVSPROXY_KERNEL", "uml")
    assert in_kernel.main(["--kernel=host", "--", sys.executable, "-c", "raise SystemExit(7)"]) == 7
