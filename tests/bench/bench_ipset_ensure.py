"""Create every KUBE-* set on a fresh node: one ``ipset restore`` (before) against netlink.

Run under a real kernel, as root:
    python3 tests/vm/in_kernel.py -- .venv/bin/python tests/bench/bench_ipset_ensure.py
Prints BENCH ipset_ensure_{restore,netlink}_{v4,dual}_ms: the median of RUNS, each in an
empty network namespace; asserts nothing but that the sets were made.

"restore" is what ``IpsetCli.ensure`` did before it created sets over netlink: one header
dump, then one ``ipset restore -exist`` of every ``create`` line. "netlink" is ``ensure``
itself, from a cold start: the kernel is asked for each type's revisions first, as in a
proxy process that has just started.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ipvsproxy import lean_import

# As the proxy's entry point does, before anything imports its big dependencies.
lean_import.install_dependencies()

from ipvsproxy.core.ipset_catalog import IpsetSpec, all_specs
from ipvsproxy.core.model import Family
from ipvsproxy.dataplane import ipset_netlink
from ipvsproxy.dataplane.ipset_specs import create_line
from ipvsproxy.dataplane.ipsets import IpsetCli, run_command
from tests.support.netns import fresh_netns

NEEDS_KERNEL = True
RUNS = 9
CATALOGS = {"v4": all_specs(Family.V4), "dual": all_specs(Family.V4) + all_specs(Family.V6)}


async def by_restore(specs: Sequence[IpsetSpec]) -> None:
    await ipset_netlink.list_headers()
    lines = "".join(create_line(spec) + "\n" for spec in specs)
    await run_command(["ipset", "restore", "-exist"], lines)


async def by_netlink(specs: Sequence[IpsetSpec]) -> None:
    ipset_netlink.forget_revisions()
    await IpsetCli().ensure(specs)


async def timed(
    how: Callable[[Sequence[IpsetSpec]], Awaitable[None]], specs: Sequence[IpsetSpec]
) -> float:
    """Milliseconds to make ``specs`` in a fresh, empty network namespace."""
    with fresh_netns():
        start = time.perf_counter()
        await how(specs)
        took = (time.perf_counter() - start) * 1000
        made = set(await ipset_netlink.list_headers())
    if made != {spec.name for spec in specs}:
        raise SystemExit(f"{how.__name__}: made {sorted(made)}")
    return took


async def run() -> None:
    # Untimed: the first sets of a boot load the set types' modules, whichever way.
    await timed(by_restore, CATALOGS["dual"])
    await timed(by_netlink, CATALOGS["dual"])
    for catalog, specs in CATALOGS.items():
        times: dict[str, list[float]] = {"restore": [], "netlink": []}
        for _ in range(RUNS):  # alternating, so that both meet the same noise
            times["restore"].append(await timed(by_restore, specs))
            times["netlink"].append(await timed(by_netlink, specs))
        for path, got in times.items():
            runs = " ".join(f"{t:.1f}" for t in got)
            print(
                f"BENCH ipset_ensure_{path}_{catalog}_ms {statistics.median(got):.1f} ms"
                f" ({len(specs)} sets; runs: {runs})",
                flush=True,
            )


def main() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    main()
