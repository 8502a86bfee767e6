"""How much of the host's CPU time its hypervisor took while benchmarks ran.

This project's machines are virtual machines on shared hosts. When a host is
oversubscribed, its hypervisor runs other guests on this one's CPUs, and the kernel
counts that time as "steal" in /proc/stat: a CPU with work to do waits, and the work
takes longer. Seen here: steal was 48 % of the time the CPUs had work, and the same
start of the proxy took 6 s in one run, 26 s in the next.
A benchmark's figure is read with the steal beside it, so that a slow figure can be
told from a slow machine. Only the host sees it: a user-mode-linux guest's /proc/stat
is its own, so the runners that boot one measure from outside, around its output.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

STAT = Path("/proc/stat")
# The first eight columns of the "cpu" line: user, nice, system, idle, iowait, irq,
# softirq, steal. guest and guest_nice, after them, are already counted in user and nice.
IDLE, IOWAIT, STEAL, COLUMNS = 3, 4, 7, 8


def cpu_times(stat: Path = STAT) -> list[int]:
    """All CPUs' times since boot, in clock ticks, by /proc/stat's columns."""
    first = stat.read_text().split("\n", 1)[0].split()
    if first[:1] != ["cpu"]:
        raise ValueError(f"{stat}: no aggregate cpu line")
    return [int(ticks) for ticks in first[1 : 1 + COLUMNS]]


def stolen_percent(before: Sequence[int], after: Sequence[int]) -> float:
    """Between two ``cpu_times``, the share of the time the CPUs had work (busy or stolen:
    an idle CPU is not runnable, and nothing is stolen from it) that was stolen, in
    percent: 50 means the work took twice the CPU time it was given."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    wanted = sum(spent) - spent[IDLE] - spent[IOWAIT]
    return 100.0 * spent[STEAL] / wanted if wanted > 0 else 0.0


def steal_note(percent: float) -> str:
    return f"    (host: {percent:.0f} % of the CPU time it needed was stolen by the hypervisor)"


def relay(
    command: Sequence[str],
    cwd: Path,
    ends: Callable[[str], bool],
    starts: Callable[[str], bool] = lambda line: False,
    clock: Callable[[], list[int]] = cpu_times,
) -> int:
    """Run ``command`` with its output passed through, and after each line that ``ends``
    a measurement print the steal since it began: at the start, at the last line that
    ``starts`` one, or at the previous end. Returns the command's exit status."""
    with subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        since = clock()
        for line in process.stdout:
            sys.stdout.write(line)
            if ends(line):
                now = clock()
                print(steal_note(stolen_percent(since, now)))
                since = now
            elif starts(line):
                since = clock()
            sys.stdout.flush()
    return process.returncode
