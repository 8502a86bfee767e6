#!/usr/bin/env python3
"""Boot Debian's user-mode-linux kernel once and run one command in it, as root.

    python3 tests/vm/uml_run.py [--mem 1G] [--timeout SECONDS] [--rw PATH] -- COMMAND ARGS...

Why: the kernel tests need IPVS and dummy links, which many build and CI
machines lack. Debian's ``user-mode-linux`` package ships a 6.1 kernel that
has both, runs as an ordinary process and needs no KVM.

The guest sees the host's file system through hostfs: every top-level
directory is an overlay whose writes vanish at power-off, except the current
directory and each ``--rw`` path, which are written through to the host (so
junit and coverage files come back). ``/lib/modules`` is the UML kernel's own,
so ``modprobe`` works. The host's exported environment is passed in, stdin
is /dev/null, and the command's stdout and stderr stream to ours as it runs.
The guest has one CPU and no network link to the host.

Exit status: the command's own; 124 on timeout; 125 if the VM failed before
the command finished (the kernel log is printed); 2 on usage errors and
missing prerequisites (the Debian packages to install are named).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
UML_KERNEL = Path("/usr/bin/linux.uml")
UML_MODULES = Path("/usr/lib/uml/modules")

# (what must exist, the Debian package that provides it)
PREREQUISITES = [
    (str(UML_KERNEL), "user-mode-linux"),
    ("gcc", "gcc"),
    ("/usr/include/stdio.h", "libc6-dev"),
    ("modprobe", "kmod"),
    ("ip", "iproute2"),
    ("mount", "mount"),
]

# Environment variables that describe the host session, not the command.
HOST_ONLY_ENV = {
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "LD_PRELOAD",
    "TMPDIR",
    "HOSTNAME",
    "DISPLAY",
    "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS",
    "XDG_RUNTIME_DIR",
}

# PID 1 of the guest. It runs under the kernel's default shell environment;
# @RUN@ is the host directory holding this run's files (mounted at /run/uml).
INIT_TEMPLATE = r"""#!/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# The guest's own device nodes: the host's /dev through hostfs would not work.
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/uml /run/overlay
mount -t hostfs -o "@RUN@" hostfs /run/uml
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
# Give every top-level directory a tmpfs upper layer, so the guest may write
# anywhere without touching the host. overlay.ko is loaded by path: the
# host may have no /lib/modules for modprobe to search yet.
overlay_ko=$(find @MODULES@/"$(uname -r)" -name 'overlay.ko*' 2>/dev/null | head -n 1)
if [ -n "$overlay_ko" ] && insmod "$overlay_ko" 2>/dev/null; then
  for dir in /*; do
    [ -d "$dir" ] && [ ! -L "$dir" ] || continue
    case "$dir" in /proc|/sys|/dev|/run|/lost+found) continue ;; esac
    name=${dir#/}
    mkdir -p "/run/overlay/$name/upper" "/run/overlay/$name/work"
    layers="lowerdir=$dir,upperdir=/run/overlay/$name/upper,workdir=/run/overlay/$name/work"
    mount -t overlay -o "$layers" "overlay-$name" "$dir"
  done
else
  echo "uml init: no overlayfs; only /tmp, /var and /root are writable" >&2
  for dir in /tmp /var/tmp /var/log /var/lib /root; do mount -t tmpfs tmpfs "$dir"; done
fi
# The UML kernel's modules, where modprobe looks for them.
mkdir -p /lib/modules 2>/dev/null
mount --bind @MODULES@ /lib/modules
chmod 1777 /tmp
# Paths the command may write on the host (the current directory, --rw).
while IFS= read -r path; do
  [ -n "$path" ] && [ -d "$path" ] && mount -t hostfs -o "$path" hostfs "$path"
done < /run/uml/rw-paths
mkdir -p /run/netns /var/run
hostname uml
ip link set lo up
stty -F /dev/tty0 -opost -echo 2>/dev/null
stty -F /dev/tty1 -opost -echo 2>/dev/null
/bin/bash /run/uml/command </dev/null >/dev/tty0 2>/dev/tty1
echo $? > /run/uml/exit-status
sync
poweroff -f >/dev/null 2>&1
echo o > /proc/sysrq-trigger
"""


def missing_packages() -> list[str]:
    missing = []
    for need, package in PREREQUISITES:
        present = Path(need).exists() if need.startswith("/") else shutil.which(need)
        if not present:
            missing.append(package)
    return missing


def build_shim() -> Path:
    """Compile the xstate shim once per source version into the user's cache."""
    source = (HERE / "xstate_shim.c").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ipvsproxy-uml"
    shim = cache / f"xstate-shim-{digest}.so"
    if shim.exists():
        return shim
    cache.mkdir(parents=True, exist_ok=True)
    partial = shim.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        ["gcc", "-O2", "-shared", "-fPIC", "-o", str(partial), str(HERE / "xstate_shim.c"), "-ldl"],
        check=True,
    )
    partial.replace(shim)
    return shim


def command_script(command: list[str], cwd: Path) -> str:
    """A bash script that runs ``command`` in ``cwd`` with the host's exported environment."""
    env_lines = [
        f"export {name}={shlex.quote(value)}"
        for name, value in os.environ.items()
        if name not in HOST_ONLY_ENV and name.isidentifier()
    ]
    script = [
        "#!/bin/bash",
        *env_lines,
        "export HOME=/root",
        f"cd {shlex.quote(str(cwd))} || exit 125",
        "exec " + shlex.join(command),
    ]
    return "\n".join(script) + "\n"


def write_run_files(run: Path, command: list[str], cwd: Path, rw_paths: list[Path]) -> None:
    (run / "command").write_text(command_script(command, cwd))
    (run / "rw-paths").write_text("".join(f"{p}\n" for p in rw_paths))
    init = INIT_TEMPLATE.replace("@RUN@", str(run)).replace("@MODULES@", str(UML_MODULES))
    (run / "init").write_text(init)
    (run / "init").chmod(0o755)


def memory_dir() -> str:
    # Guest RAM is a file under TMPDIR; keep it on tmpfs, touched lazily.
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else tempfile.gettempdir()


def boot(run: Path, shim: Path, mem: str, timeout: float) -> int:
    kernel_log = open(run / "kernel.log", "ab")  # noqa: SIM115 - handed to the child
    argv = [
        str(UML_KERNEL),
        f"mem={mem}",
        "rootfstype=hostfs",
        "rootflags=/",
        "ro",
        f"init={run / 'init'}",
        f"uml_dir={run / 'uml'}",
        "umid=ipvsproxy-test",
        "con=null",
        "ssl=null",
        # console 0 -> our stdout (fd 3), console 1 -> our stderr (fd 4),
        # the kernel's own console -> kernel.log (fd 5)
        "con0=null,fd:3",
        "con1=null,fd:4",
        "con2=null,fd:5",
        "console=tty2",
    ]
    env = dict(os.environ, TMPDIR=memory_dir(), LD_PRELOAD=str(shim))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=kernel_log,
        stderr=kernel_log,
        env=env,
        start_new_session=True,
        pass_fds=(3, 4, 5),
    )
    deadline = time.monotonic() + timeout if timeout > 0 else None
    try:
        while proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                print(f"uml_run: timed out after {timeout:g}s", file=sys.stderr)
                return 124
            time.sleep(0.1)
    finally:
        # UML leaves helper processes in its session; reap them all.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kernel_log.close()
    status_file = run / "exit-status"
    if status_file.exists():
        return int(status_file.read_text().strip() or "125")
    print("uml_run: the VM stopped before the command finished; kernel log:", file=sys.stderr)
    tail = (run / "kernel.log").read_bytes().decode(errors="replace").splitlines()[-60:]
    print("\n".join(tail), file=sys.stderr)
    return 125


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a command as root under Debian's user-mode-linux kernel.",
        usage="%(prog)s [--mem 1G] [--timeout S] [--rw PATH] -- COMMAND ARGS...",
    )
    parser.add_argument("--mem", default="1G", help="guest memory (default 1G)")
    parser.add_argument("--timeout", type=float, default=0, help="kill the VM after S seconds")
    parser.add_argument("--rw", action="append", default=[], help="also writable in the guest")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the guest kernel log here")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")

    missing = missing_packages()
    if missing:
        print(
            "uml_run: missing Debian packages: "
            + " ".join(missing)
            + "\numl_run: install them with: apt-get install -y "
            + " ".join(missing),
            file=sys.stderr,
        )
        return 2

    shim = build_shim()
    cwd = Path.cwd().resolve()
    rw_paths = [cwd, *(Path(p).resolve() for p in args.rw)]
    run = Path(tempfile.mkdtemp(prefix="uml-run-"))
    # The console file descriptors the kernel writes the command's output to.
    os.dup2(sys.stdout.fileno(), 3)
    os.dup2(sys.stderr.fileno(), 4)
    log_fd = os.open(run / "kernel.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 5)
    os.close(log_fd)
    try:
        write_run_files(run, command, cwd, rw_paths)
        (run / "uml").mkdir()
        sys.stdout.flush()
        return boot(run, shim, args.mem, args.timeout)
    finally:
        if args.keep_log:
            shutil.copyfile(run / "kernel.log", args.keep_log)
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
