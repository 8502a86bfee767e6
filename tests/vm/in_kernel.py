#!/usr/bin/env python3
"""Run a command where the kernel tests can run: under a kernel of the project's own, or here.

    python3 tests/vm/in_kernel.py [--kernel uml|qemu612|host] [--mem 1G] [--timeout S] -- CMD...

Which kernel: ``--kernel``, else the environment variable ``IPVSPROXY_KERNEL``, else ``uml``.

- ``uml``: Debian's user-mode-linux kernel, Linux 6.1 without nf_tables (uml_run.py);
  iptables is tested with its legacy backend there.
- ``qemu612``: Debian's Linux 6.12 cloud kernel in qemu with software emulation
  (qemu_run.py); nf_tables is there, so the proxy detects and uses iptables' nft backend.
- ``host``: directly on this machine. Do that only as root on a host whose kernel has
  IPVS (``modprobe ip_vs`` works); the tests then change this machine's network state,
  though they keep to network namespaces of their own where they can.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import qemu_run
import uml_run

KERNELS = ("uml", "qemu612", "host")


def main(argv: list[str]) -> int:
    where = os.environ.get("IPVSPROXY_KERNEL", "uml")
    head = argv[: argv.index("--")] if "--" in argv else argv
    for i, arg in enumerate(head):
        if arg == "--kernel" and i + 1 < len(head):
            where = head[i + 1]
            argv = argv[:i] + argv[i + 2 :]
            break
        if arg.startswith("--kernel="):
            where = arg.partition("=")[2]
            argv = argv[:i] + argv[i + 1 :]
            break
    if where == "host":
        command = argv[argv.index("--") + 1 :] if "--" in argv else argv
        return subprocess.call(command)
    if where == "uml":
        return uml_run.main(argv)
    if where == "qemu612":
        return qemu_run.main(argv)
    known = ", ".join(KERNELS)
    print(f"in_kernel: the kernel must be one of {known}, not {where!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
