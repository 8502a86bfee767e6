"""An in-memory IPVS table that behaves as the kernel does, for the reconciler's tests.

Same validation and the same errors as ``NetlinkIpvs`` (the contract suite runs
against both): a bad field raises InvalidValueError and applies nothing; a
scheduler that is not in ``available_schedulers`` raises SchedulerUnavailableError
and applies nothing; a kernel refusal is an OSError with the kernel's errno
inside IpvsBatchError, after every other op of the batch was applied.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence

from ipvsproxy.core.fwmark import listed_key
from ipvsproxy.core.model import (
    SCHEDULERS,
    IpProtocol,
    IpvsTable,
    RealServer,
    RealServerKey,
    RealServerStatus,
    Stats,
    VirtualServer,
    VirtualServerKey,
)
from ipvsproxy.core.ops import (
    AddRealServer,
    AddVirtualServer,
    DeleteVirtualServer,
    IpvsOp,
    UpdateRealServer,
    UpdateVirtualServer,
)
from ipvsproxy.dataplane.errors import IpvsBatchError, SchedulerUnavailableError
from ipvsproxy.dataplane.fakes import checksum_of
from ipvsproxy.dataplane.ipvs import (
    DEFAULT_TIMEOUTS,
    kernel_error,
    schedulers_of,
    validate_ops,
    validate_timeouts,
    validate_virtual_key,
)


def _norm(key: VirtualServerKey) -> VirtualServerKey:
    """The key as the kernel would list it back.

    A firewall-mark service is one per (family, mark), whatever protocol the key
    names: the kernel keeps none, and lists it with the protocol its mark carries
    (TCP for a mark that is not ours), as ``NetlinkIpvs`` decodes it.
    """
    if key.fwmark:
        return listed_key(key.family, key.fwmark)
    return VirtualServerKey(key.address, key.port, IpProtocol(key.protocol))


class _Dest:
    __slots__ = ("active", "inactive", "weight")

    def __init__(self, weight: int) -> None:
        self.weight = weight
        self.active = 0
        self.inactive = 0


class FakeIpvs:
    """The fake. ``available_schedulers`` may be changed to simulate a missing module."""

    def __init__(self, available_schedulers: Iterable[str] = SCHEDULERS) -> None:
        self.available_schedulers: set[str] = set(available_schedulers)
        self._services: dict[VirtualServerKey, VirtualServer] = {}
        # Newest first, as the kernel lists a service's destinations.
        self._dests: dict[VirtualServerKey, dict[RealServerKey, _Dest]] = {}
        self._stats: dict[VirtualServerKey, Stats] = {}
        self._timeouts = DEFAULT_TIMEOUTS
        self.closed = False
        self.apply_calls = 0
        self.applied: list[IpvsOp] = []  # every op that succeeded, in order

    @classmethod
    async def open(cls) -> FakeIpvs:
        return cls()

    async def close(self) -> None:
        self.closed = True

    async def fingerprint(self) -> int:
        # What /proc/net/ip_vs shows, connection counts left out.
        return checksum_of(
            sorted(
                (
                    repr(key),
                    server,
                    sorted((repr(r), d.weight) for r, d in self._dests[key].items()),
                )
                for key, server in self._services.items()
            )
        )

    # ------------------------------------------------------------ test hooks

    def set_connections(
        self, virtual: VirtualServerKey, real: RealServerKey, active: int, inactive: int = 0
    ) -> None:
        """Pretend ``real`` has these connection counts (graceful termination tests)."""
        dest = self._dests[_norm(virtual)][real]
        dest.active, dest.inactive = active, inactive

    def set_stats(self, virtual: VirtualServerKey, stats: Stats) -> None:
        self._stats[_norm(virtual)] = stats

    # ------------------------------------------------------------ the Ipvs

    async def apply(self, ops: Sequence[IpvsOp]) -> None:
        validate_ops(ops)
        for name in sorted(schedulers_of(ops)):
            if name not in self.available_schedulers:
                raise SchedulerUnavailableError(name)
        self.apply_calls += 1
        failures: list[tuple[IpvsOp, BaseException]] = []
        for op in ops:
            code = self._apply_one(op)
            if code:
                failures.append((op, kernel_error(code)))
            else:
                self.applied.append(op)
        if failures:
            raise IpvsBatchError(failures)

    def _apply_one(self, op: IpvsOp) -> int:
        """Apply one op; return the errno the kernel would give, or 0."""
        if isinstance(op, AddVirtualServer | UpdateVirtualServer):
            key = _norm(op.server.key)
            exists = key in self._services
            if isinstance(op, AddVirtualServer) and exists:
                return errno.EEXIST
            if isinstance(op, UpdateVirtualServer) and not exists:
                return errno.ESRCH
            self._services[key] = op.server._replace(key=key)
            self._dests.setdefault(key, {})
            return 0
        if isinstance(op, DeleteVirtualServer):
            key = _norm(op.key)
            if key not in self._services:
                return errno.ESRCH
            del self._services[key], self._dests[key]
            self._stats.pop(key, None)
            return 0
        dests = self._dests.get(_norm(op.virtual))
        if dests is None:
            return errno.ESRCH
        if isinstance(op, AddRealServer):
            if op.server.key in dests:
                return errno.EEXIST
            items = list(dests.items())
            dests.clear()
            dests[op.server.key] = _Dest(op.server.weight)
            dests.update(items)
            return 0
        if isinstance(op, UpdateRealServer):
            if op.server.key not in dests:
                return errno.ENOENT
            dests[op.server.key].weight = op.server.weight
            return 0
        if op.key not in dests:
            return errno.ENOENT
        del dests[op.key]
        return 0

    async def dump(self) -> IpvsTable:
        servers = dict(self._services)
        return IpvsTable(servers, {key: self._list(key) for key in servers})

    def _list(self, key: VirtualServerKey) -> list[RealServerStatus]:
        return [
            RealServerStatus(RealServer(rkey, d.weight), d.active, d.inactive)
            for rkey, d in self._dests.get(key, {}).items()
        ]

    async def list_real_servers(self, virtual: VirtualServerKey) -> list[RealServerStatus]:
        validate_virtual_key(virtual)
        return self._list(_norm(virtual))  # a missing service lists empty, as the kernel

    async def stats(self) -> dict[VirtualServerKey, Stats]:
        return {key: self._stats.get(key, Stats()) for key in self._services}

    async def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        validate_timeouts(tcp, tcpfin, udp)
        old = self._timeouts
        self._timeouts = (tcp or old[0], tcpfin or old[1], udp or old[2])

    async def get_timeouts(self) -> tuple[int, int, int]:
        return self._timeouts
