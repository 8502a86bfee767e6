#!/usr/bin/env python3
"""Run the benchmarks: host ones directly, kernel ones together in one boot.

    python tests/bench/run.py [NAME ...]      (NAME: bench_ipvs, bench_kube, ...)

A benchmark is a module tests/bench/bench_*.py with a ``main()`` that prints
``BENCH <name> <value> <unit>`` lines. One that needs a kernel with IPVS says
``NEEDS_KERNEL = True``; those all run in a single user-mode-linux boot (or on
this host with IPVSPROXY_KERNEL=host). Benchmarks never fail on a number: the
figures are read from the output. Each benchmark runs in a process of its own,
and its lines are followed by the share of the host's CPU time the hypervisor took
meanwhile (``host_steal``). This exits non-zero only if one crashed.
"""

from __future__ import annotations

import compileall
import importlib
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent.parent
sys.path.insert(0, str(ROOT))
from tests.bench.host_steal import relay


def discover(names: list[str]) -> tuple[list[str], list[str]]:
    host, kernel = [], []
    for path in sorted(BENCH_DIR.glob("bench_*.py")):
        if names and path.stem not in names:
            continue
        needs_kernel = re.search(r"^NEEDS_KERNEL = True$", path.read_text(), re.M)
        (kernel if needs_kernel else host).append(path.stem)
    return host, kernel


def run_one(name: str) -> None:
    # Each benchmark is also a script that may parse its own command line.
    sys.argv = [f"{name}.py"]
    importlib.import_module(f"tests.bench.{name}").main()


def run_each(names: list[str]) -> int:
    """Each benchmark in a process of its own (memory figures must not inherit another's
    heap), one after the other; a crash is reported and the others still run."""
    failed = 0
    for name in names:
        print(f"--- {name}", flush=True)
        started = time.monotonic()
        if subprocess.call([sys.executable, __file__, "--one", name], cwd=ROOT) != 0:
            failed += 1
            print(f"--- {name} FAILED", flush=True)
        else:
            print(f"--- {name} done in {time.monotonic() - started:.1f} s", flush=True)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        run_one(argv[1])
        return 0
    if argv[:1] == ["--inside"]:
        return run_each(argv[1:])
    host, kernel = discover(argv)
    # The proxy's bytecode compiled, as an install leaves it: with PYTHONDONTWRITEBYTECODE
    # (set on this project's machines) every start would compile it again, and the
    # start-up figures would count that.
    compileall.compile_dir(ROOT / "ipvsproxy", quiet=1)
    status = 0
    if host:
        status |= _with_steal([sys.executable, __file__, "--inside", *host])
    if kernel:
        command = [sys.executable, str(BENCH_DIR / "run.py"), "--inside", *kernel]
        in_kernel = [sys.executable, str(ROOT / "tests/vm/in_kernel.py"), "--mem", "2G"]
        status |= _with_steal([*in_kernel, "--", *command])
    return status


def _with_steal(command: list[str]) -> int:
    """``command`` run, each benchmark's lines followed by the host's steal during it."""
    return relay(command, ROOT, ends=_ended, starts=lambda line: line.startswith("--- "))


def _ended(line: str) -> bool:
    """``run_each``'s last line for a benchmark."""
    return line.startswith("--- ") and (" done in " in line or line.rstrip().endswith(" FAILED"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
