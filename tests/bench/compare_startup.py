#!/usr/bin/env python3
"""Start-up of this tree against other revisions', in one kernel boot, runs alternated.

    .tox/bench/bin/python tests/bench/compare_startup.py REVISION... [--services N] [--runs K]

``startup_to_first_sync_s`` (bench_e2e) from one run says little on a shared machine:
the same code started 6 s or 13 s apart under user-mode-linux within the hour. This
checks each REVISION out into a temporary worktree, compiles every tree's bytecode (the
images ship it compiled), then in one boot starts each tree's proxy K times, in turn,
against the test API server holding N Services, each in a fresh network namespace, and
prints every time and the medians (the first run of each tree pays the cold caches). The
proxies run from a directory that holds no tree: ``python -m`` puts the working
directory first on sys.path.

With each time come the CPU and the minor page faults of the proxy and the processes it
waited for (a count the machine's load does not move; under user-mode-linux a fault
costs about a third of a millisecond, and they are half of a start), and the share of
the host's CPU time its hypervisor took meanwhile (``host_steal``).

Each run is also split where the proxy's JSON log allows, in seconds from exec: its first
line (the interpreter, the imports and most of the node set-up are before it), "starting"
(the API client and the HTTP servers made), the last list done, and the first full sync's
start and end (its end less its duration).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench.host_steal import relay


def _measure(trees: list[str], services: int, runs: int) -> None:
    """Inside the kernel: alternate the trees' start-ups."""
    from tests.bench import bench_e2e
    from tests.support import builders
    from tests.support.switching import log_records, start_proxy

    os.chdir(tempfile.mkdtemp(prefix="startup-cwd-"))
    workroot = Path(tempfile.mkdtemp(prefix="startup-"))
    times: dict[str, list[float]] = {tree: [] for tree in trees}
    cpu: dict[str, list[float]] = {tree: [] for tree in trees}
    faults: dict[str, list[int]] = {tree: [] for tree in trees}
    steps: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}

    async def once(tree: str, workdir: Path) -> None:
        server = await bench_e2e.loaded_server(services)
        started = time.time()
        proxy = await start_proxy(server, workdir, builders.NODE)
        try:
            times[tree].append(await bench_e2e.wait_first_sync(proxy) - started)
            steps[tree].append(startup_steps(log_records(proxy.output()), started))
            # Less at the mercy of the machine's other load than the wall time: the CPU
            # the proxy and the processes it waited for used until then, and their page
            # faults (the log is read every 50 ms, so a little of what follows the first
            # sync may count).
            cpu[tree].append(bench_e2e.cpu_seconds(proxy.process.pid, children=True))
            faults[tree].append(bench_e2e.page_faults(proxy.process.pid, children=True))
        finally:
            await proxy.stop()
            await server.stop()

    for run in range(runs):
        for i, tree in enumerate(trees):
            os.environ["PYTHONPATH"] = tree
            workdir = workroot / f"{run}-{i}"
            bench_e2e.in_fresh_netns(lambda w, t=tree: once(t, w), workdir)
            took, used, faulted = times[tree][-1], cpu[tree][-1], faults[tree][-1]
            print(f"run {run} {tree}: {took:.2f} s, cpu {used:.2f} s, {faulted} page faults")
            print(f"  {_steps_text(steps[tree][-1])}", flush=True)
    for tree, got in times.items():
        rounded, median = [round(t, 2) for t in got], statistics.median(got)
        print(f"STARTUP {tree} services={services}: {rounded} median {median:.2f} s")
        used = statistics.median(cpu[tree])
        print(f"STARTUP_CPU {tree} services={services}: median {used:.2f} s")
        typical = statistics.median(faults[tree])
        print(f"STARTUP_PAGE_FAULTS {tree} services={services}: median {typical:.0f}")
        names = set.intersection(*(set(s) for s in steps[tree]))
        medians = {n: statistics.median(s[n] for s in steps[tree]) for n in names}
        print(f"STARTUP_STEPS {tree}: medians {_steps_text(medians)}")


STEPS = ("first log line", "starting", "lists done", "first sync starts", "first sync ends")


def startup_steps(records: list[dict[str, Any]], started: float) -> dict[str, float]:
    """Seconds from exec to each of STEPS the proxy's log shows (see the module doc)."""
    from tests.support.switching import logged_at

    def at(record: dict[str, Any]) -> float:
        return logged_at(record) - started

    found: dict[str, float] = {}
    for record in records:
        event = record.get("event")
        if "timestamp" not in record or "first sync ends" in found:
            continue
        found.setdefault("first log line", at(record))
        if event == "starting":
            found["starting"] = at(record)
        elif event == "synced" and "resource" in record:
            found["lists done"] = at(record)  # the last list's line wins
        elif event == "synced" and record.get("full"):
            found["first sync ends"] = at(record)
            found["first sync starts"] = at(record) - float(record["duration_ms"]) / 1000
    return found


def _steps_text(steps: dict[str, float]) -> str:
    return ", ".join(f"{name} {steps[name]:.2f}" for name in STEPS if name in steps)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--inside"]:
        _measure(argv[3:], int(argv[1]), int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "revisions", nargs="+", metavar="revision", help="the revisions to compare with"
    )
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        trees = [stack.enter_context(_worktree(revision)) for revision in args.revisions]
        trees.append(str(ROOT))
        for tree in trees:
            compileall.compile_dir(Path(tree) / "ipvsproxy", quiet=1)
        inside = [sys.executable, __file__, "--inside", str(args.services), str(args.runs)]
        command = [sys.executable, str(ROOT / "tests/vm/in_kernel.py"), "--mem", "2G"]
        command += ["--timeout", str(600 + 60 * len(trees) * args.runs)]
        # Each run's line followed by the host's steal since the previous one.
        return relay(
            [*command, "--", *inside, *trees], ROOT, ends=lambda line: line.startswith("run ")
        )


@contextlib.contextmanager
def _worktree(revision: str) -> Iterator[str]:
    """``revision`` checked out in a temporary directory, for as long as the block runs."""
    with tempfile.TemporaryDirectory(prefix="startup-before-") as tree:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", tree, revision],
            check=True,
            capture_output=True,
        )
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
