"""Sysctls under /proc/sys, module parameters and kernel modules, as kube-proxy needs them.

/proc/sys/net is per network namespace, resolved for the thread that opens the file, so
the files are read and written directly in the calling thread (they are tiny), never in a
worker thread that could sit in another namespace. A few are global and writable only from
the initial namespace (net/netfilter/nf_conntrack_max, nf_conntrack's hashsize parameter):
elsewhere they read fine and refuse writes (SysctlWriteError).
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence

from ipvsproxy.dataplane.errors import (
    CommandError,
    InvalidValueError,
    KernelModuleError,
    SysctlWriteError,
)
from ipvsproxy.dataplane.interfaces import Sysctls
from ipvsproxy.dataplane.ipsets import run_command

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")

VS_CONNTRACK = "net/ipv4/vs/conntrack"
VS_CONN_REUSE_MODE = "net/ipv4/vs/conn_reuse_mode"
VS_EXPIRE_NODEST_CONN = "net/ipv4/vs/expire_nodest_conn"
VS_EXPIRE_QUIESCENT_TEMPLATE = "net/ipv4/vs/expire_quiescent_template"
IP_FORWARD = "net/ipv4/ip_forward"
ARP_IGNORE = "net/ipv4/conf/all/arp_ignore"
ARP_ANNOUNCE = "net/ipv4/conf/all/arp_announce"

# kube-proxy's list (pkg/proxy/ipvs/README.md); nf_conntrack_ipv4 merged into nf_conntrack.
IPVS_MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack")


def _path(root: str, name: str) -> str:
    if not _NAME.match(name) or ".." in name.split("/"):
        raise InvalidValueError("sysctl name", name)
    return os.path.join(root, name)


def _read(path: str) -> str:
    # Synchronous on purpose: see the module docstring (the calling thread's namespace).
    with open(path) as f:
        return f.read().strip()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _is_file(path: str) -> bool:
    return os.path.isfile(path)


def _write_checked(path: str, value: str, what: str, missing: InvalidValueError) -> None:
    try:
        _write(path, value)
    except FileNotFoundError:
        raise missing from None
    except OSError as err:
        reason = err.strerror or str(err)
        if err.errno == errno.EINVAL:
            raise InvalidValueError(what, value, reason) from None
        # EACCES, EROFS, EPERM, EOPNOTSUPP: the setting is fine, this place may not write it.
        raise SysctlWriteError(what, value, reason) from None


class ProcSysctls:
    """The real Sysctls over /proc/sys, /sys/module, /proc/sys/kernel/osrelease and modprobe."""

    def __init__(
        self, root: str = "/proc/sys", modprobe: str = "modprobe", sys_module: str = "/sys/module"
    ) -> None:
        self._root = root
        self._modprobe = modprobe
        self._sys_module = sys_module

    async def get(self, name: str) -> str:
        try:
            return _read(_path(self._root, name))
        except FileNotFoundError:
            raise InvalidValueError("sysctl name", name, "no such sysctl") from None

    async def set(self, name: str, value: str) -> None:
        missing = InvalidValueError("sysctl name", name, "no such sysctl")
        _write_checked(_path(self._root, name), value, f"sysctl {name}", missing)

    def _parameter(self, module: str, name: str) -> str:
        return _path(self._sys_module, f"{module}/parameters/{name}")

    async def get_parameter(self, module: str, name: str) -> str:
        try:
            return _read(self._parameter(module, name))
        except FileNotFoundError:
            raise InvalidValueError("module parameter", f"{module}.{name}", "none such") from None

    async def set_parameter(self, module: str, name: str, value: str) -> None:
        missing = InvalidValueError("module parameter", f"{module}.{name}", "none such")
        path = self._parameter(module, name)
        if not _is_file(path):
            raise missing  # sysfs says EACCES for a file that is not there
        _write_checked(path, value, f"module parameter {module}.{name}", missing)

    async def kernel_release(self) -> str:
        return await self.get("kernel/osrelease")

    async def ensure_modules(self, names: Sequence[str]) -> None:
        for name in names:
            if module_loaded(name):
                continue
            try:
                await run_command([self._modprobe, "--", name])
            except (CommandError, OSError) as err:
                raise KernelModuleError(name, str(err)) from None


def module_loaded(name: str, sys_module: str = "/sys/module", proc: str = "/proc/modules") -> bool:
    """Loaded as a module, or built in (built-ins with parameters appear in /sys/module)."""
    if os.path.isdir(os.path.join(sys_module, name)):
        return True
    try:
        with open(proc) as f:
            return any(line.split(" ", 1)[0] == name for line in f)
    except OSError:
        return False


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a release string such as ``6.1.0-18-amd64``."""
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m:
        raise InvalidValueError("kernel release", release)
    return int(m.group(1)), int(m.group(2))


def ipvs_sysctls(kernel_release: str, strict_arp: bool) -> dict[str, str]:
    """What kube-proxy's IPVS proxier sets (``NewProxier``), for this kernel (pure)."""
    wanted = {VS_CONNTRACK: "1"}
    # conn_reuse_mode=0 works around #70747; on >= 5.9 the kernel fixed it (#93297), and
    # 0 would bring back #81775, so it is left as it is there.
    if kernel_version(kernel_release) < (5, 9):
        wanted[VS_CONN_REUSE_MODE] = "0"
    wanted[VS_EXPIRE_NODEST_CONN] = "1"
    wanted[VS_EXPIRE_QUIESCENT_TEMPLATE] = "1"
    wanted[IP_FORWARD] = "1"
    if strict_arp:
        wanted[ARP_IGNORE] = "1"
        wanted[ARP_ANNOUNCE] = "2"
    return wanted


async def apply_ipvs_sysctls(
    sysctls: Sysctls, kernel_release: str, strict_arp: bool
) -> dict[str, str]:
    """Set what differs; return {name: new value} of what was changed."""
    changed = {}
    for name, value in ipvs_sysctls(kernel_release, strict_arp).items():
        if await sysctls.get(name) != value:
            await sysctls.set(name, value)
            changed[name] = value
    return changed
