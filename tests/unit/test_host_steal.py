"""The benchmarks' note of the host's steal: read from /proc/stat, printed after each
measurement the runner's output ends."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.bench import host_steal

STAT = """cpu  2970380 0 2116562 5354819 12968 0 8848 379772 0 0
cpu0 1485190 0 1058281 2677409 6484 0 4424 189886 0 0
intr 0
"""


def test_cpu_times_are_the_aggregate_line_s_first_eight_columns(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    assert host_steal.cpu_times(stat) == [2970380, 0, 2116562, 5354819, 12968, 0, 8848, 379772]
    stat.write_text("intr 0\n")
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        host_steal.cpu_times(stat)


def test_this_machine_s_stat_is_read() -> None:
    assert sum(host_steal.cpu_times()) > 0


def test_stolen_percent_is_steal_over_the_time_the_cpus_had_work() -> None:
    before = [100, 0, 100, 100, 0, 0, 0, 100]
    # 30 user, 70 system and 40 stolen: 140 ticks wanted; the 60 idle and 20 waiting
    # for I/O are not.
    after = [130, 0, 170, 160, 20, 0, 0, 140]
    assert host_steal.stolen_percent(before, after) == pytest.approx(100 * 40 / 140)
    assert host_steal.stolen_percent(before, before) == 0.0


def test_relay_passes_the_output_through_and_notes_the_steal_after_each_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A fake clock, read at the start, at "--- a" and at its end: 100 busy or stolen
    # ticks apart, of which 10, then 30, stolen.
    readings = iter([[0] * 7 + [0], [90] + [0] * 6 + [10], [160] + [0] * 6 + [40]])
    script = "print('--- a'); print('BENCH x 1 s'); print('--- a done in 1 s'); print('tail')"
    status = host_steal.relay(
        [sys.executable, "-c", script],
        Path.cwd(),
        ends=lambda line: " done in " in line,
        starts=lambda line: line == "--- a\n",
        clock=lambda: next(readings),
    )
    assert status == 0
    assert capsys.readouterr().out.splitlines() == [
        "--- a",
        "BENCH x 1 s",
        "--- a done in 1 s",
        host_steal.steal_note(30.0),  # from "--- a" on: 70 busy, 30 stolen
        "tail",
    ]
    assert host_steal.steal_note(30.0) == (
        "    (host: 30 % of the CPU time it needed was stolen by the hypervisor)"
    )


def test_relay_returns_the_command_s_status() -> None:
    assert host_steal.relay([sys.executable, "-c", "raise SystemExit(3)"], Path.cwd(), bool) == 3
