"""Typed errors of the dataplane: each names what went wrong and with which value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DataplaneError(Exception):
    """Base of every error the dataplane raises."""


class InvalidValueError(DataplaneError, ValueError):
    """A field holds a value the kernel cannot take. Nothing was changed."""

    def __init__(self, field: str, value: object, reason: str = "") -> None:
        self.field = field
        self.value = value
        self.reason = reason
        detail = f": {reason}" if reason else ""
        super().__init__(f"invalid {field} {value!r}{detail}")


class SysctlWriteError(DataplaneError):
    """A kernel setting exists but cannot be written here: /proc/sys or /sys mounted
    read-only (a container), no permission, or a global setting written from a network
    namespace other than the initial one. Nothing was changed."""

    def __init__(self, name: str, value: object, reason: str) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        super().__init__(f"cannot set {name} to {value}: {reason}")


class SchedulerUnavailableError(DataplaneError):
    """The kernel has no IPVS scheduler of this name (module ip_vs_<name> missing)."""

    def __init__(self, scheduler: str) -> None:
        self.scheduler = scheduler
        super().__init__(
            f"IPVS scheduler {scheduler!r} is not available in this kernel "
            f"(module ip_vs_{scheduler} could not be loaded)"
        )


class KernelModuleError(DataplaneError):
    """A kernel module the proxy needs is missing and cannot be loaded."""

    def __init__(self, module: str, detail: str = "") -> None:
        self.module = module
        extra = f": {detail}" if detail else ""
        super().__init__(f"kernel module {module!r} is not loaded and cannot be loaded{extra}")


class IpvsBatchError(DataplaneError):
    """Some operations of a batch failed; the others were applied."""

    def __init__(self, failures: Sequence[tuple[Any, BaseException]]) -> None:
        self.failures = list(failures)
        first_op, first_err = self.failures[0]
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        super().__init__(f"{type(first_op).__name__} {first_op}: {first_err}{more}")


class CommandError(DataplaneError):
    """A system tool (ipset, iptables-restore, ...) exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(self.argv)} exited {returncode}: {stderr.strip()}")
