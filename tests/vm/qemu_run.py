#!/usr/bin/env python3
"""Boot Debian's Linux 6.12 cloud kernel under qemu once and run one command in it, as root.

    python3 tests/vm/qemu_run.py [--mem 1536M] [--timeout SECONDS] [--rw PATH] -- COMMAND ARGS...

Why: the project's user-mode-linux kernel (uml_run.py) is Linux 6.1 without
nf_tables, so it can only test the iptables-legacy backend. Debian 12 also
ships ``linux-image-6.12-cloud-amd64``, a current kernel with IPVS and
nf_tables, as modules. It needs a (virtual) machine: qemu-system-x86_64 with
software emulation (TCG), since /dev/kvm cannot be relied on (on some hosts
it serves only PVM guests and hangs a stock kernel).

The guest's root file system is the host's ``/``, shared through virtio-fs
(the host's ``virtiofsd`` from qemu-system-common; this kernel has virtio-fs,
virtio-pci and virtio-console built in, but no 9p, so no initramfs is needed).
As under uml_run.py, every top-level directory is an overlay whose writes
vanish at power-off, except the current directory and each ``--rw`` path,
which are written through to the host (so junit and coverage files come
back). ``/lib/modules`` is the host's, where the 6.12 kernel's modules are
installed, so ``modprobe`` works. The host's exported environment is passed
in, stdin is /dev/null, and the command's stdout and stderr stream to ours as
it runs (two virtio-serial ports). The guest has loopback only.

Needs root on the host (virtiofsd chroots into ``/``).

Exit status: the command's own; 124 on timeout; 125 if the VM failed before
the command finished (the kernel log is printed); 2 on usage errors and
missing prerequisites (the Debian packages to install are named).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from uml_run import command_script

KERNEL_PACKAGE = "linux-image-6.12-cloud-amd64"
KERNEL_GLOB = "vmlinuz-6.12.*-cloud-amd64"
QEMU = "qemu-system-x86_64"
VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")

# (what must exist, the Debian package that provides it)
PREREQUISITES = [
    (QEMU, "qemu-system-x86"),
    (str(VIRTIOFSD), "qemu-system-x86"),
    ("modprobe", "kmod"),
    ("ip", "iproute2"),
    ("mount", "mount"),
]

# PID 1 of the guest, run by /bin/sh from the host's root. @RUN@ is the host
# directory holding this run's files (mounted at /run/qemu).
INIT_TEMPLATE = r"""#!/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/host /run/overlay /run/qemu /run/ports
# The host's root as it is, read-only: the source of the paths written through.
mount --bind / /run/host
mount -o remount,bind,ro /run/host
mount --bind "/run/host@RUN@" /run/qemu
mount -o remount,bind,rw /run/qemu
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
# Give every top-level directory a tmpfs upper layer, so the guest may write
# anywhere without touching the host.
if modprobe overlay 2>/dev/null; then
  for dir in /*; do
    [ -d "$dir" ] && [ ! -L "$dir" ] || continue
    case "$dir" in /proc|/sys|/dev|/run|/lost+found) continue ;; esac
    name=${dir#/}
    mkdir -p "/run/overlay/$name/upper" "/run/overlay/$name/work"
    layers="lowerdir=$dir,upperdir=/run/overlay/$name/upper,workdir=/run/overlay/$name/work"
    mount -t overlay -o "$layers" "overlay-$name" "$dir"
  done
else
  echo "qemu init: no overlayfs; only /tmp, /var and /root are writable" >&2
  for dir in /tmp /var/tmp /var/log /var/lib /root; do mount -t tmpfs tmpfs "$dir"; done
fi
chmod 1777 /tmp
# Paths the command may write on the host (the current directory, --rw).
while IFS= read -r path; do
  [ -n "$path" ] && [ -d "$path" ] || continue
  mount --bind "/run/host$path" "$path" && mount -o remount,bind,rw "$path"
done < /run/qemu/rw-paths
mount -o remount,bind,ro /
# The virtio-serial ports by name (there is no udev to make /dev/virtio-ports).
for port in /sys/class/virtio-ports/*; do
  [ -r "$port/name" ] && ln -s "/dev/${port##*/}" "/run/ports/$(cat "$port/name")"
done
mkdir -p /run/netns /var/run
echo qemu > /proc/sys/kernel/hostname
ip link set lo up
/bin/bash /run/qemu/command </dev/null >/run/ports/stdout 2>/run/ports/stderr
echo $? > /run/qemu/exit-status
sync
poweroff -f >/dev/null 2>&1
echo o > /proc/sysrq-trigger
sleep 10
"""


def _version_key(release: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.+~-]", release)]


def find_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> Path | None:
    """The newest installed 6.12 cloud kernel whose modules are installed too."""
    found = [
        k for k in boot.glob(KERNEL_GLOB) if (modules / k.name.removeprefix("vmlinuz-")).is_dir()
    ]
    return max(found, key=lambda k: _version_key(k.name), default=None)


def missing_packages(kernel: Path | None) -> list[str]:
    missing = []
    for need, package in PREREQUISITES:
        present = Path(need).exists() if need.startswith("/") else shutil.which(need)
        if not present and package not in missing:
            missing.append(package)
    if kernel is None:
        missing.append(KERNEL_PACKAGE)
    return missing


def mebibytes(size: str) -> int:
    """'1536M', '2G', '1536' (MiB) -> MiB."""
    match = re.fullmatch(r"(\d+)([KMGkmg]?)i?[Bb]?", size.strip())
    if not match:
        raise ValueError(f"bad memory size {size!r}")
    number, unit = int(match.group(1)), match.group(2).upper()
    return {"K": number // 1024, "": number, "M": number, "G": number * 1024}[unit]


def write_run_files(run: Path, command: list[str], cwd: Path, rw_paths: list[Path]) -> None:
    (run / "command").write_text(command_script(command, cwd))
    (run / "rw-paths").write_text("".join(f"{p}\n" for p in rw_paths))
    (run / "init").write_text(INIT_TEMPLATE.replace("@RUN@", str(run)))
    (run / "init").chmod(0o755)


def start_virtiofsd(run: Path) -> subprocess.Popen[bytes]:
    socket = run / "fs.sock"
    log = open(run / "virtiofsd.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            str(VIRTIOFSD),
            f"--socket-path={socket}",
            "-o",
            "source=/",
            "-o",
            "cache=always",
            # chroot: the namespace sandbox cannot pivot_root when the source is "/".
            "-o",
            "sandbox=chroot",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 10
    while not socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("virtiofsd did not start: " + (run / "virtiofsd.log").read_text())
        time.sleep(0.01)
    return proc


def qemu_argv(
    run: Path, kernel: Path, mem_mib: int, cpus: int, out_fd: int, err_fd: int
) -> list[str]:
    accel = "tcg,thread=multi" if cpus > 1 else "tcg"
    cmdline = [
        "root=host",
        "rootfstype=virtiofs",
        "rw",
        f"init={run / 'init'}",
        "console=ttyS0",
        "panic=-1",
        "mitigations=off",
        "random.trust_cpu=on",
    ]
    return [
        QEMU,
        "-accel",
        accel,
        "-cpu",
        "max",
        "-smp",
        str(cpus),
        "-m",
        f"{mem_mib}M",
        # virtio-fs needs guest RAM the host's virtiofsd can map.
        "-object",
        f"memory-backend-memfd,id=mem,size={mem_mib}M,share=on",
        "-machine",
        "pc,memory-backend=mem",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-chardev",
        f"file,id=kernel,path={run / 'kernel.log'}",
        "-serial",
        "chardev:kernel",
        "-chardev",
        f"socket,id=fs,path={run / 'fs.sock'}",
        "-device",
        "vhost-user-fs-pci,chardev=fs,tag=host",
        "-device",
        "virtio-serial-pci",
        "-chardev",
        f"file,id=out,path=/dev/fd/{out_fd}",
        "-device",
        "virtserialport,chardev=out,name=stdout",
        "-chardev",
        f"file,id=err,path=/dev/fd/{err_fd}",
        "-device",
        "virtserialport,chardev=err,name=stderr",
        "-kernel",
        str(kernel),
        "-append",
        " ".join(cmdline),
    ]


def _relay(source: int, target: int) -> None:
    """Copy a pipe to one of our file descriptors until the writer closes it."""
    with contextlib.suppress(OSError):
        while chunk := os.read(source, 65536):
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view) :]
    os.close(source)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def boot(run: Path, kernel: Path, mem_mib: int, cpus: int, timeout: float) -> int:
    try:
        virtiofsd = start_virtiofsd(run)
    except (RuntimeError, OSError) as error:
        print(f"qemu_run: {error}", file=sys.stderr)
        return 125
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    relays = [
        threading.Thread(target=_relay, args=(out_r, sys.stdout.fileno()), daemon=True),
        threading.Thread(target=_relay, args=(err_r, sys.stderr.fileno()), daemon=True),
    ]
    qemu_log = open(run / "qemu.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            qemu_argv(run, kernel, mem_mib, cpus, out_w, err_w),
            stdin=subprocess.DEVNULL,
            stdout=qemu_log,
            stderr=qemu_log,
            start_new_session=True,
            pass_fds=(out_w, err_w),
        )
    except OSError:
        _kill(virtiofsd)
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
        qemu_log.close()
    for relay in relays:
        relay.start()
    deadline = time.monotonic() + timeout if timeout > 0 else None
    try:
        while proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                print(f"qemu_run: timed out after {timeout:g}s", file=sys.stderr)
                return 124
            time.sleep(0.1)
    finally:
        _kill(proc)
        _kill(virtiofsd)
        for relay in relays:
            relay.join(timeout=5)
    status_file = run / "exit-status"
    if status_file.exists():
        return int(status_file.read_text().strip() or "125")
    print("qemu_run: the VM stopped before the command finished", file=sys.stderr)
    for log, limit in (("qemu.log", 20), ("virtiofsd.log", 10), ("kernel.log", 60)):
        path = run / log
        lines = path.read_bytes().decode(errors="replace").splitlines() if path.exists() else []
        if lines:
            print(f"qemu_run: {log} (last {limit} lines):", file=sys.stderr)
            print("\n".join(lines[-limit:]), file=sys.stderr)
    return 125


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a command as root under Debian's Linux 6.12 cloud kernel in qemu (TCG).",
        usage="%(prog)s [--mem 1536M] [--timeout S] [--rw PATH] -- COMMAND ARGS...",
    )
    parser.add_argument("--mem", default="1536M", help="guest memory (default 1536M)")
    parser.add_argument("--timeout", type=float, default=0, help="kill the VM after S seconds")
    parser.add_argument("--rw", action="append", default=[], help="also writable in the guest")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the guest kernel log here")
    parser.add_argument("--cpus", type=int, default=2, help="virtual CPUs (default 2)")
    parser.add_argument("--kernel", type=Path, help="vmlinuz to boot (default: newest 6.12 cloud)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    try:
        mem_mib = mebibytes(args.mem)
    except ValueError as error:
        parser.error(str(error))

    if args.kernel is not None and not args.kernel.is_file():
        parser.error(f"no kernel image at {args.kernel}")
    kernel = args.kernel or find_kernel()
    missing = missing_packages(kernel)
    if missing:
        print(
            "qemu_run: missing Debian packages: "
            + " ".join(missing)
            + "\nqemu_run: install them with: apt-get install -y "
            + " ".join(missing)
            + " (or: bash scripts/setup.sh)",
            file=sys.stderr,
        )
        return 2
    assert kernel is not None
    if os.geteuid() != 0:
        print("qemu_run: must run as root (virtiofsd shares / with the guest)", file=sys.stderr)
        return 2

    cwd = Path.cwd().resolve()
    rw_paths = [cwd, *(Path(p).resolve() for p in args.rw)]
    run = Path(tempfile.mkdtemp(prefix="qemu-run-"))
    try:
        write_run_files(run, command, cwd, rw_paths)
        sys.stdout.flush()
        sys.stderr.flush()
        return boot(run, kernel, mem_mib, args.cpus, args.timeout)
    finally:
        if args.keep_log and (run / "kernel.log").exists():
            shutil.copyfile(run / "kernel.log", args.keep_log)
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
