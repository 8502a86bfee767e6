"""ObservedMirror: the proxy's picture of what the kernel holds of its own objects (pure).

Filled from a full read of the kernel at each resync and kept current by writing back
what each applied diff did (``ipvsproxy.core.apply``), so that a sync between resyncs
reads nothing from the kernel. It keeps the objects it already holds when a read lists
them unchanged, so the proxy does not keep every address and entry twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ipvsproxy.core.model import RealServerKey, RealServerStatus, VirtualServer, VirtualServerKey
from ipvsproxy.core.scope import Scope
from ipvsproxy.core.state import FLAT_SERVERS, DataplaneState, PlannedServers, RealServers


class ObservedMirror:
    """What the proxy knows the kernel holds of its own objects, mutable and indexed.

    Filled from a full dump at each resync and kept current by writing back the
    result of every applied diff, so a sync reads the kernel only at resyncs and
    when draining real servers.
    """

    def __init__(self, state: DataplaneState | None = None) -> None:
        self.virtual_servers: dict[VirtualServerKey, VirtualServer] = {}
        self.real_servers: dict[VirtualServerKey, Mapping[RealServerKey, RealServerStatus]] = {}
        self.bound: set[str] = set()
        self.entries: dict[str, set[str]] = {}
        if state is not None:
            self.reset(state)

    def reset(self, state: DataplaneState) -> None:
        # A resync lists every object anew. Whatever did not change keeps the object
        # the mirror holds (mostly the very one a plan holds), so the listing's copies
        # are dropped: otherwise the proxy would keep every address and entry twice.
        old_virtual, old_real = self.virtual_servers, self.real_servers
        virtual: dict[VirtualServerKey, VirtualServer] = {}
        real: dict[VirtualServerKey, Mapping[RealServerKey, RealServerStatus]] = {}
        for key, vs in state.virtual_servers.items():
            held = old_virtual.get(key)
            if held is not None and held == vs and held.key == key:
                key, vs = held.key, held
            virtual[key] = vs
            real[key] = _kept_servers(old_real.get(key), state.servers_of(key))
        self.virtual_servers, self.real_servers = virtual, real
        self.bound = _kept_items(self.bound, state.bound)
        self.entries = {
            name: _kept_items(self.entries.get(name, set()), entries)
            for name, entries in state.ipsets.items()
        }

    def state(self, scope: Scope | None = None) -> DataplaneState:
        """The observed state, restricted to ``scope`` (None: everything)."""
        if scope is None:
            vs_keys: Iterable[VirtualServerKey] = self.virtual_servers
            addresses: Iterable[str] = self.bound
            sets = {name: frozenset(entries) for name, entries in self.entries.items()}
        else:
            vs_keys = [vs for vs in scope.virtual_servers if vs in self.virtual_servers]
            addresses = [a for a in scope.addresses if a in self.bound]
            found: dict[str, set[str]] = {}
            for name, entry in scope.entries:
                if entry in self.entries.get(name, ()):
                    found.setdefault(name, set()).add(entry)
            sets = {name: frozenset(entries) for name, entries in found.items()}
        return DataplaneState(
            virtual_servers={vs: self.virtual_servers[vs] for vs in vs_keys},
            real_servers={vs: self.real_servers.get(vs, {}) for vs in vs_keys},
            bound=frozenset(addresses),
            ipsets=sets,
        )

    def write_back(self, scope: Scope, state: DataplaneState) -> None:
        """Replace what the mirror holds inside ``scope`` with ``state``."""
        for vs in scope.virtual_servers:
            if vs in state.virtual_servers:
                self.virtual_servers[vs] = state.virtual_servers[vs]
                held = self.real_servers.get(vs)
                self.real_servers[vs] = _kept_servers(held, state.servers_of(vs))
            else:
                self.virtual_servers.pop(vs, None)
                self.real_servers.pop(vs, None)
        for address in scope.addresses:
            if address in state.bound:
                self.bound.add(address)
            else:
                self.bound.discard(address)
        for name, entry in scope.entries:
            if entry in state.entries(name):
                self.entries.setdefault(name, set()).add(entry)
            else:
                self.entries.get(name, set()).discard(entry)


def _kept_servers(held: RealServers | None, servers: RealServers) -> RealServers:
    """What the mirror stores for a virtual server's real servers, now ``servers``.

    ``held`` if equal (shares its objects); flat as a plan's when every server is
    at weight 1 without connections, as most are (a fifth of the bytes of a dict);
    else a copy (the caller's mapping may change).
    """
    if held is not None and len(held) == len(servers) and held == servers:
        return held
    if isinstance(servers, PlannedServers):
        return servers
    if len(servers) <= FLAT_SERVERS and all(
        s.server.weight == 1
        and s.active_connections == 0
        and s.inactive_connections == 0
        and s.server.key == key
        for key, s in servers.items()
    ):
        return PlannedServers(servers)
    return dict(servers)


def _kept_items(held: set[str], items: Iterable[str]) -> set[str]:
    """``items`` as a new set, holding the objects of ``held`` for the equal ones."""
    fresh = set(items)
    kept = {item for item in held if item in fresh}
    if len(kept) < len(fresh):
        kept.update(fresh - kept)
    return kept
