"""The cyclic collector is paused around syncs and list parsing, and always comes back."""

from __future__ import annotations

import gc

import pytest

from ipvsproxy import gc_pause
from tests.bench.reconcile_common import Load
from tests.support.fake_dataplane import fake_dataplane


def test_a_pause_restores_what_it_found() -> None:
    assert gc.isenabled()
    with gc_pause.paused():
        assert not gc.isenabled()
        with gc_pause.paused():  # overlapping: the inner one leaves it to the outer
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_pause.paused():
        raise RuntimeError("a failed sync")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_pause.paused():
            pass
        assert not gc.isenabled()  # someone else's pause is not ended by ours
    finally:
        gc.enable()


async def test_a_sync_runs_with_the_collector_paused() -> None:
    load = Load(3, fake_dataplane())
    load.load()
    seen: list[bool] = []
    apply = load.dataplane.ipvs.apply

    async def watched(ops: object) -> None:
        seen.append(gc.isenabled())
        await apply(ops)  # type: ignore[arg-type]

    load.dataplane.ipvs.apply = watched  # type: ignore[method-assign]
    await load.initial_sync()
    assert seen
    assert not any(seen)
    assert gc.isenabled()
