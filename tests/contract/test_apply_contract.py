"""apply_ops against the dataplanes: after the same generated operations, the fake
(default) or the kernel (``--dataplane=real``) holds what ``apply_ops`` says.

``apply_ops`` is the oracle of every diff and plan property test and the reconciler's
picture of the kernel between full syncs (``mirror``); this holds it to what the
dataplane really does with the operations (IPVS, kube-ipvs0's addresses, ipset entries,
marked entries replacing each other), through the proxy's own executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings

from ipvsproxy.core.apply import apply_ops
from ipvsproxy.core.ipset_catalog import all_specs
from ipvsproxy.core.model import Family
from ipvsproxy.core.ops import Op
from ipvsproxy.core.state import DataplaneState
from ipvsproxy.dataplane.addresses import NetlinkAddresses
from ipvsproxy.dataplane.executor import Dataplane, execute
from ipvsproxy.dataplane.ipsets import IpsetCli
from ipvsproxy.dataplane.ipvs import NetlinkIpvs
from tests.support.fake_dataplane import fake_dataplane
from tests.support.netns import fresh_netns
from tests.support.strategies import OP_SETS, op_sequences


def as_compared(state: DataplaneState) -> tuple[Any, ...]:
    return (
        dict(state.virtual_servers),
        {key: dict(state.servers_of(key)) for key in state.virtual_servers},
        set(state.bound),
        {name: set(entries) for name, entries in state.ipsets.items() if entries},
    )


async def held(dataplane: Dataplane) -> tuple[Any, ...]:
    """Everything the dataplane holds (not only what the proxy would call its own)."""
    table = await dataplane.ipvs.dump()
    saved = await dataplane.ipsets.save_all()
    return (
        dict(table.virtual_servers),
        {
            key: {s.server.key: s for s in table.real_servers.get(key, ())}
            for key in table.virtual_servers
        },
        await dataplane.addresses.bound(),
        {name: entries for name, entries in saved.items() if name in OP_SETS and entries},
    )


async def run(ops: Sequence[Op], real: bool) -> tuple[Any, ...]:
    if real:
        dataplane = fake_dataplane(
            ipvs=await NetlinkIpvs.open(), addresses=NetlinkAddresses(), ipsets=IpsetCli()
        )
    else:
        dataplane = fake_dataplane()
    try:
        await dataplane.addresses.ensure_dummy()
        await dataplane.ipsets.ensure(
            [s for f in Family for s in all_specs(f) if s.name in OP_SETS]
        )
        await execute(dataplane, ops)
        return await held(dataplane)
    finally:
        await dataplane.close()


def check(ops: Sequence[Op], real: bool) -> None:
    expected = as_compared(apply_ops(DataplaneState({}, {}, frozenset(), {}), ops))
    if real:
        with fresh_netns():  # every example on an empty kernel of its own
            got = asyncio.run(run(ops, real))
    else:
        got = asyncio.run(run(ops, real))
    assert got == expected, ops


def test_apply_ops_agrees_with_the_dataplane(real: bool) -> None:
    # Each kernel example starts processes (ipset) and a namespace: fewer of them there.
    @settings(
        max_examples=25 if real else 200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(op_sequences())
    def agree(ops: list[Op]) -> None:
        check(ops, real)

    agree()
