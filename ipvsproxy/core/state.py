"""Dataplane state as values: what plan wants and what the kernel holds.

``DataplaneState`` is both sides of ``diff``: a plan's desired state
(connection counters all zero) and the observed, owned part of the kernel.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ipvsproxy.core.model import (
    Family,
    RealServer,
    RealServerKey,
    RealServerStatus,
    ServiceKey,
    VirtualServer,
    VirtualServerKey,
)

RealServers = Mapping[RealServerKey, RealServerStatus]

# Up to this many real servers, a plan keeps them flat (see PlannedServers);
# more are a dict, so that a big Service's lookups stay O(1).
FLAT_SERVERS = 32


class PlannedServers(Mapping[RealServerKey, RealServerStatus]):
    """A plan's real servers (weight 1, no connections), kept as one flat tuple.

    A plan holds every Service's real servers for as long as the Service
    lives: as a dict of RealServerStatus(RealServer(RealServerKey)) values that
    costs about 220 bytes per server, as ``(address, port, address, port, ...)``
    16. It reads as that dict (equal to it, same keys and values); values are
    built on each read. Lookups scan the tuple, so keep it small (FLAT_SERVERS).
    """

    __slots__ = ("_flat",)

    def __init__(self, keys: Iterable[RealServerKey] = ()) -> None:
        flat: list[Any] = []
        for key in dict.fromkeys(keys):
            flat += key
        self._flat: tuple[Any, ...] = tuple(flat)

    def _find(self, key: object) -> int:
        """The index of ``key``'s address in the tuple, or -1."""
        if not isinstance(key, tuple) or len(key) != 2:
            return -1
        address, port = key
        flat, start = self._flat, 0
        while True:
            try:
                # Ports never equal an address (int vs str): only addresses match.
                start = flat.index(address, start)
            except ValueError:
                return -1
            if flat[start + 1] == port:
                return start
            start += 2

    def __getitem__(self, key: RealServerKey) -> RealServerStatus:
        i = self._find(key)
        if i < 0:
            raise KeyError(key)
        rkey = RealServerKey(self._flat[i], self._flat[i + 1])
        return RealServerStatus(RealServer(rkey, 1))

    def __contains__(self, key: object) -> bool:
        return self._find(key) >= 0

    def __iter__(self) -> Iterator[RealServerKey]:
        flat = self._flat
        for i in range(0, len(flat), 2):
            yield RealServerKey(flat[i], flat[i + 1])

    def __len__(self) -> int:
        return len(self._flat) // 2

    def items(self) -> ItemsView[RealServerKey, RealServerStatus]:
        # Mapping's own items() looks each key up again (a scan of the tuple); diff reads
        # every plan's servers this way.
        return _PlannedItems(self)

    def __repr__(self) -> str:
        return repr(dict(self))


class _PlannedItems(ItemsView[RealServerKey, RealServerStatus]):
    _mapping: PlannedServers

    def __iter__(self) -> Iterator[tuple[RealServerKey, RealServerStatus]]:
        flat = self._mapping._flat
        for i in range(0, len(flat), 2):
            key = RealServerKey(flat[i], flat[i + 1])
            yield key, RealServerStatus(RealServer(key, 1))


def planned_servers(keys: Iterable[RealServerKey]) -> RealServers:
    """Real servers at weight 1 for a plan: flat when few, a dict when many."""
    unique = list(dict.fromkeys(keys))
    if len(unique) <= FLAT_SERVERS:
        return PlannedServers(unique)
    return {key: RealServerStatus(RealServer(key, 1)) for key in unique}


class EntrySets(Mapping[str, frozenset[str]]):
    """A plan's ipset entries by set name, kept as tuples; read as frozensets.

    A frozenset costs at least 216 bytes, and a plan holds three or more for
    each Service for its whole life; tuples of the few entries cost a quarter.
    The frozensets are built on each read. Sets without entries are left out.
    """

    __slots__ = ("_flat",)

    def __init__(self, sets: Mapping[str, Iterable[str]] | None = None) -> None:
        flat: list[Any] = []
        for name, entries in (sets or {}).items():
            kept = tuple(set(entries))
            if kept:
                flat += (name, kept)
        self._flat: tuple[Any, ...] = tuple(flat)

    def __getitem__(self, name: str) -> frozenset[str]:
        flat = self._flat
        for i in range(0, len(flat), 2):
            if flat[i] == name:
                return frozenset(flat[i + 1])
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat[::2])

    def __len__(self) -> int:
        return len(self._flat) // 2

    def __repr__(self) -> str:
        return repr(dict(self))


@dataclass(frozen=True, slots=True)
class DataplaneState:
    """Virtual servers, their real servers, addresses on kube-ipvs0, ipset entries.

    ``real_servers`` has a (possibly empty) entry for every virtual server and
    no other keys. ``ipsets`` maps a set name to its entries; a set with no
    entries may be left out (diff treats missing and empty alike).
    """

    virtual_servers: Mapping[VirtualServerKey, VirtualServer] = field(default_factory=dict)
    real_servers: Mapping[VirtualServerKey, RealServers] = field(default_factory=dict)
    bound: frozenset[str] = frozenset()
    ipsets: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def entries(self, name: str) -> frozenset[str]:
        return self.ipsets.get(name, frozenset())

    def servers_of(self, key: VirtualServerKey) -> RealServers:
        return self.real_servers.get(key, {})


def union(states: Iterable[DataplaneState]) -> DataplaneState:
    """Merge the states of several services (a full resync's desired state).

    Addresses and ipset entries are unions. A virtual server claimed by two
    states (two Services on one externalIP:port, which the API server allows)
    keeps the first claim with its real servers; the caller should report it.
    """
    virtual: dict[VirtualServerKey, VirtualServer] = {}
    real: dict[VirtualServerKey, RealServers] = {}
    bound: set[str] = set()
    sets: dict[str, set[str]] = {}
    for state in states:
        for key, vs in state.virtual_servers.items():
            if key not in virtual:
                virtual[key] = vs
                real[key] = state.servers_of(key)
        bound |= state.bound
        for name, entries in state.ipsets.items():
            sets.setdefault(name, set()).update(entries)
    return DataplaneState(
        virtual_servers=virtual,
        real_servers=real,
        bound=frozenset(bound),
        ipsets={name: frozenset(entries) for name, entries in sets.items()},
    )


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """What one Service asks of this node.

    ``skip`` is set when the whole Service is ignored (headless, ExternalName,
    another proxy's, unusable cluster IP); everything else is then empty.
    ``problems`` are reasons for the parts that were left out (a bad port, a
    bad external IP, ...): log them and turn them into Events.
    """

    service: ServiceKey
    state: DataplaneState = field(default_factory=DataplaneState)
    # spec.healthCheckNodePort for a LoadBalancer with externalTrafficPolicy Local; else 0.
    health_check_node_port: int = 0
    # Ready endpoints on this node (distinct ip:port over all ports), for the health check.
    local_endpoints: int = 0
    # The families with a Local traffic policy and no ready endpoint on this node, as
    # kube-proxy's sync_proxy_rules_no_local_endpoints_total{ip_family, traffic_policy=
    # "internal"|"external"} counts them (one proxier per family there).
    no_local_internal: frozenset[Family] = frozenset()
    no_local_external: frozenset[Family] = frozenset()
    problems: tuple[str, ...] = ()
    skip: str | None = None
    # The Service's families this node serves (what it was planned for).
    families: frozenset[Family] = frozenset()
