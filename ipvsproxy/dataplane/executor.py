"""Carry out diff's operations on the dataplane, batching each subsystem's run of them.

Consecutive IPVS operations go to the kernel as one batch; consecutive ipset
changes as one ``ipset restore``. Diff's order is kept between runs. A failing
run does not stop the ones after it (a failed real server must not keep an
address from being bound): every failure is collected and raised together,
by subsystem, once all operations were attempted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from ipvsproxy import ipsetnames
from ipvsproxy.dataplane.interfaces import (
    Addresses,
    Conntrack,
    Ipsets,
    Iptables,
    Ipvs,
    IpvsOp,
    Sysctls,
)
from ipvsproxy.diff import (
    AddIpsetEntries,
    BindAddresses,
    DeleteIpsetEntries,
    FlushUdpConntrack,
    Op,
    UnbindAddresses,
)
from ipvsproxy.observe import Network, owned_state
from ipvsproxy.state import DataplaneState

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

    async def close(self) -> None:
        await self.ipvs.close()
        await self.addresses.close()
        await self.conntrack.close()


async def read_owned(dataplane: Dataplane, exclude: Sequence[Network]) -> DataplaneState:
    """What the kernel holds of the proxy's own (see ipvsproxy.observe), in four reads."""
    table = await dataplane.ipvs.dump()
    bound = await dataplane.addresses.bound()
    saved = await dataplane.ipsets.save_all()
    entries = {name: found for name, found in saved.items() if ipsetnames.kind_of(name)}
    return owned_state(table, bound, entries, exclude)


class SyncError(Exception):
    """Some operations failed; ``failures`` maps a subsystem to its error."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        text = "; ".join(f"{name}: {err}" for name, err in failures.items())
        super().__init__(text)


_IPSET_OPS = (AddIpsetEntries, DeleteIpsetEntries)


def _runs(ops: Sequence[Op]) -> list[list[Op]]:
    """Split ``ops`` into maximal runs that one subsystem call can carry."""
    runs: list[list[Op]] = []
    for op in ops:
        if runs and _kind(runs[-1][0]) == _kind(op):
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _kind(op: Op) -> str:
    if isinstance(op, _IPSET_OPS):
        return "ipset"
    if isinstance(op, BindAddresses | UnbindAddresses):
        return f"address-{type(op).__name__}"
    if isinstance(op, FlushUdpConntrack):
        return "conntrack"
    return "ipvs"


async def execute(dataplane: Dataplane, ops: Sequence[Op]) -> None:
    """Apply ``ops`` in order; raise SyncError naming each subsystem that failed."""
    failures: dict[str, BaseException] = {}
    for run in _runs(ops):
        kind = _kind(run[0])
        try:
            await _execute_run(dataplane, kind, run)
        except Exception as exc:
            subsystem = kind.split("-")[0]
            log.warning("dataplane operation failed", subsystem=subsystem, error=str(exc))
            failures.setdefault(subsystem, exc)
    if failures:
        raise SyncError(failures)


async def _execute_run(dataplane: Dataplane, kind: str, run: list[Op]) -> None:
    if kind == "ipvs":
        ipvs_ops: list[IpvsOp] = [op for op in run if not isinstance(op, _NON_IPVS)]
        await dataplane.ipvs.apply(ipvs_ops)
    elif kind == "ipset":
        changes: dict[str, tuple[set[str], set[str]]] = {}
        for op in run:
            assert isinstance(op, _IPSET_OPS)
            adds, deletes = changes.setdefault(op.set, (set(), set()))
            (adds if isinstance(op, AddIpsetEntries) else deletes).update(op.entries)
        await dataplane.ipsets.update(changes)
    elif kind == "conntrack":
        for op in run:
            assert isinstance(op, FlushUdpConntrack)
            if op.real is None:
                await dataplane.conntrack.delete_udp_to_service(op.address, op.port)
            else:
                await dataplane.conntrack.delete_udp_to_real_server(op.address, op.port, op.real)
    else:
        for op in run:
            if isinstance(op, BindAddresses):
                await dataplane.addresses.bind(op.addresses)
            elif isinstance(op, UnbindAddresses):
                await dataplane.addresses.unbind(op.addresses)


_NON_IPVS = (AddIpsetEntries, DeleteIpsetEntries, BindAddresses, UnbindAddresses, FlushUdpConntrack)
