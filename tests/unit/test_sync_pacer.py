"""The sync pacer: kube-proxy's bounded frequency (a burst, then one per period), as values."""

from __future__ import annotations

import pytest

from ipvsproxy.sync_pacer import SyncPacer


def test_an_idle_proxy_syncs_a_change_at_once() -> None:
    pacer = SyncPacer(1.0, burst=2)
    assert pacer.delay(0.0) == 0
    pacer.started(0.0)
    assert pacer.delay(10.0) == 0  # long idle: the bucket is full again


def test_a_burst_then_one_per_period() -> None:
    pacer = SyncPacer(1.0, burst=2)
    for now in (0.0, 0.01):
        assert pacer.delay(now) == 0
        pacer.started(now)
    assert pacer.delay(0.02) == pytest.approx(0.98)  # a token refills 1 s after the first
    pacer.started(1.0)
    assert pacer.delay(1.0) == pytest.approx(1.0)
    assert pacer.delay(1.5) == pytest.approx(0.5)


def test_zero_never_waits() -> None:
    pacer = SyncPacer(0.0)
    for i in range(100):
        assert pacer.delay(i * 0.001) == 0
        pacer.started(i * 0.001)


def test_a_failed_sync_holds_whatever_the_tokens() -> None:
    pacer = SyncPacer(0.0)
    pacer.hold(5.0)
    assert pacer.delay(1.0) == pytest.approx(4.0)
    assert pacer.delay(5.0) == 0


def test_burst_must_be_positive() -> None:
    with pytest.raises(ValueError, match="burst"):
        SyncPacer(1.0, burst=0)
