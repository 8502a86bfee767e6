#!/usr/bin/env python3
"""Run a command where the kernel tests can run: under user-mode-linux, or on this host.

    python3 tests/vm/in_kernel.py [--mem 1G] [--timeout S] -- COMMAND ARGS...

By default the command runs under Debian's user-mode-linux kernel (uml_run.py),
which has IPVS and dummy links whatever the host has. With
``IPVSPROXY_KERNEL=host`` it runs directly on this machine instead: do that
only as root on a host whose kernel has IPVS (``modprobe ip_vs`` works); the
tests then change this machine's network state, though they keep to network
namespaces of their own where they can.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import uml_run


def main(argv: list[str]) -> int:
    where = os.environ.get("IPVSPROXY_KERNEL", "uml")
    if where == "host":
        command = argv[argv.index("--") + 1 :] if "--" in argv else argv
        return subprocess.call(command)
    if where != "uml":
        print(
            f"in_kernel: IPVSPROXY_KERNEL must be 'uml' or 'host', not {where!r}", file=sys.stderr
        )
        return 2
    return uml_run.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
