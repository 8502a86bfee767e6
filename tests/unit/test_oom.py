"""--oom-score-adj: written to /proc/self/oom_score_adj at start; a failure only warns."""

from __future__ import annotations

from pathlib import Path

from ipvsproxy.oom import apply_oom_score_adj


def test_the_value_is_written(tmp_path: Path) -> None:
    target = tmp_path / "oom_score_adj"
    assert apply_oom_score_adj(-999, target) is None
    assert target.read_text() == "-999\n"


def test_a_failure_is_reported_not_raised(tmp_path: Path) -> None:
    failed = apply_oom_score_adj(-999, tmp_path / "no" / "such" / "file")
    assert failed is not None
    assert failed.startswith("FileNotFoundError")
