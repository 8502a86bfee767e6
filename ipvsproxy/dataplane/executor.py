"""Carry out diff's operations on the dataplane, batching each subsystem's run of them.

Consecutive IPVS operations go to the kernel as one batch; consecutive ipset
changes as one ipset update. Diff's order is kept between runs. A failing
run does not stop the ones after it (a failed real server must not keep an
address from being bound): every failure is collected and raised together,
by subsystem, once all operations were attempted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import structlog

from ipvsproxy.core import ipset_catalog
from ipvsproxy.core.ops import (
    IPVS_OPS,
    AddIpsetEntries,
    BindAddresses,
    DeleteIpsetEntries,
    FlushUdpConntrack,
    Op,
    UnbindAddresses,
)
from ipvsproxy.core.ownership import Network, owned_state
from ipvsproxy.core.state import DataplaneState
from ipvsproxy.dataplane.interfaces import (
    Addresses,
    Conntrack,
    Ipsets,
    Iptables,
    Ipvs,
    Nftables,
    Sysctls,
)

log = structlog.get_logger(__name__)


@dataclass
class Dataplane:
    """The node's kernel, one interface per subsystem (real ones, or fakes in tests)."""

    ipvs: Ipvs
    addresses: Addresses
    ipsets: Ipsets
    iptables: Iptables
    conntrack: Conntrack
    sysctls: Sysctls
    nftables: Nftables

    async def close(self) -> None:
        await self.ipvs.close()
        await self.addresses.close()
        await self.conntrack.close()


async def read_owned(dataplane: Dataplane, exclude: Sequence[Network]) -> DataplaneState:
    """What the kernel holds of the proxy's own (see ipvsproxy.core.ownership), in four reads."""
    table = await dataplane.ipvs.dump()
    bound = await dataplane.addresses.bound()
    saved = await dataplane.ipsets.save_all()
    entries = {name: found for name, found in saved.items() if ipset_catalog.kind_of(name)}
    return owned_state(table, bound, entries, exclude)


class SyncError(Exception):
    """Some operations failed; ``failures`` maps a subsystem to its error."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        text = "; ".join(f"{name}: {err}" for name, err in failures.items())
        super().__init__(text)


async def _run_ipvs(dataplane: Dataplane, run: Sequence[Op]) -> None:
    await dataplane.ipvs.apply([op for op in run if isinstance(op, IPVS_OPS)])


async def _run_ipsets(dataplane: Dataplane, run: Sequence[Op]) -> None:
    changes: dict[str, tuple[set[str], set[str]]] = {}
    for op in run:
        if isinstance(op, AddIpsetEntries | DeleteIpsetEntries):
            adds, deletes = changes.setdefault(op.set, (set(), set()))
            if _keys(op.set, op.entries) & _keys(op.set, adds):
                # One update() deletes before it adds, and adds in no given order: a key
                # added earlier in this run and now deleted, or added again with another
                # mark, would end otherwise than in order. What came before goes first.
                await dataplane.ipsets.update(changes)
                changes = {}
                adds, deletes = changes.setdefault(op.set, (set(), set()))
            (adds if isinstance(op, AddIpsetEntries) else deletes).update(op.entries)
    await dataplane.ipsets.update(changes)


def _keys(name: str, entries: Iterable[str]) -> set[str]:
    """Entries as the kernel keys them: a marked set's mark is data, not key."""
    if ipset_catalog.is_marked_set(name):
        return {ipset_catalog.entry_key(e) for e in entries}
    return set(entries)


async def _run_binds(dataplane: Dataplane, run: Sequence[Op]) -> None:
    for op in run:
        if isinstance(op, BindAddresses):
            await dataplane.addresses.bind(op.addresses)


async def _run_unbinds(dataplane: Dataplane, run: Sequence[Op]) -> None:
    for op in run:
        if isinstance(op, UnbindAddresses):
            await dataplane.addresses.unbind(op.addresses)


async def _run_conntrack(dataplane: Dataplane, run: Sequence[Op]) -> None:
    for op in run:
        if not isinstance(op, FlushUdpConntrack):
            continue
        if op.real is None:
            await dataplane.conntrack.delete_udp_to_service(op.address, op.port, op.keep)
        else:
            await dataplane.conntrack.delete_udp_to_real_server(op.address, op.port, op.real)


class _Runner(NamedTuple):
    subsystem: str  # as failures and metrics name it
    run: Callable[[Dataplane, Sequence[Op]], Awaitable[None]]


_IPVS = _Runner("ipvs", _run_ipvs)
_IPSETS = _Runner("ipset", _run_ipsets)
# Binds and unbinds are separate runners: a run of one kind is one call.
_BINDS = _Runner("address", _run_binds)
_UNBINDS = _Runner("address", _run_unbinds)
_CONNTRACK = _Runner("conntrack", _run_conntrack)

# Which runner carries each operation type; consecutive ops of one runner form one run.
RUNNERS: Mapping[type[Any], _Runner] = {
    **dict.fromkeys(IPVS_OPS, _IPVS),
    AddIpsetEntries: _IPSETS,
    DeleteIpsetEntries: _IPSETS,
    BindAddresses: _BINDS,
    UnbindAddresses: _UNBINDS,
    FlushUdpConntrack: _CONNTRACK,
}


def _runs(ops: Sequence[Op]) -> list[tuple[_Runner, list[Op]]]:
    """Split ``ops`` into maximal runs that one subsystem call can carry."""
    runs: list[tuple[_Runner, list[Op]]] = []
    for op in ops:
        runner = RUNNERS[type(op)]
        if runs and runs[-1][0] is runner:
            runs[-1][1].append(op)
        else:
            runs.append((runner, [op]))
    return runs


async def execute(dataplane: Dataplane, ops: Sequence[Op]) -> None:
    """Apply ``ops`` in order; raise SyncError naming each subsystem that failed."""
    failures: dict[str, BaseException] = {}
    for runner, run in _runs(ops):
        try:
            await runner.run(dataplane, run)
        except Exception as exc:
            log.warning("dataplane operation failed", subsystem=runner.subsystem, error=str(exc))
            failures.setdefault(runner.subsystem, exc)
    if failures:
        raise SyncError(failures)
