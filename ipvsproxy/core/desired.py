"""The whole node's desired state, kept up to date one Service at a time (pure).

A sync plans only the Services that changed. ``DesiredIndex`` holds every
Service's last plan and remembers which Services claim each kernel object, so
that a change to one Service yields the ``Scope`` it touches: the objects its
old and new plans name. Diffing the desired and observed states restricted to
that scope costs as much as the Service itself, whatever the cluster's size,
and still respects objects two Services share (an external IP bound for both,
an address in KUBE-IPVS-IPS).

Firewall marks (``ipvsproxy.core.fwmark``) are hashes, so two Services' addresses may
get the same mark. The mark's virtual server goes to the first claim, like any
virtual server; an entry mapping an address to a mark is desired only while one
of the entry's own Services holds that mark's virtual server, so in-cluster
traffic never reaches another Service's endpoints: the other Service's stays on
its address virtual server. A change to a mark's claims brings every claimant's
marked entries into the sync's scope.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from ipvsproxy.core import fwmark, ipset_catalog
from ipvsproxy.core.model import (
    Family,
    RealServerKey,
    RealServerStatus,
    ServiceKey,
    VirtualServer,
    VirtualServerKey,
)
from ipvsproxy.core.scope import IpsetEntry, Scope
from ipvsproxy.core.state import (
    DataplaneState,
    ServicePlan,
)

_Item = TypeVar("_Item")


# Who claims an object: almost always one Service, kept as its key alone (a set
# or list of one would cost some 200 bytes more per object); several in a set,
# or for virtual servers a list in claim order.
Owners = ServiceKey | set[ServiceKey]
VsOwners = ServiceKey | list[ServiceKey]


class DesiredIndex:
    """Every Service's plan, and who claims each virtual server, address and entry."""

    def __init__(self) -> None:
        self.plans: dict[ServiceKey, ServicePlan] = {}
        # Owners in claim order: two Services on one externalIP:port is legal in
        # the API; the first claim wins until it goes away, then the next.
        self._vs_owners: dict[VirtualServerKey, VsOwners] = {}
        self._address_owners: dict[str, Owners] = {}
        # By set name, then entry: no (name, entry) tuple per entry.
        self._entry_owners: dict[str, dict[str, Owners]] = {}

    def set_plan(self, key: ServiceKey, plan: ServicePlan | None) -> Scope:
        """Record ``key``'s new plan (None: the Service is gone); return what it touched."""
        scope = Scope()
        old = self.plans.get(key)
        if old is not None:
            scope.add_state(old.state)
        if plan is not None:
            scope.add_state(plan.state)
        self.replace_plan(key, plan)
        for vs in [vs for vs in scope.virtual_servers if vs.fwmark]:
            for owner in _listed(self._vs_owners.get(vs)):
                scope.entries.update(self._marked_entries(owner, vs))
        return scope

    def replace_plan(self, key: ServiceKey, plan: ServicePlan | None) -> None:
        """``set_plan`` without working out what the change touched: for a full sync, which
        compares everything (at 1,000 Services that scope was 7,000 entries, 0.6 MB)."""
        old = self.plans.pop(key, None)
        if old is not None:
            self._release(key, old.state)
        if plan is not None:
            self.plans[key] = plan
            self._claim(key, plan.state)

    def _marked_entries(self, key: ServiceKey, vs: VirtualServerKey) -> Iterable[IpsetEntry]:
        name = ipset_catalog.set_name(ipset_catalog.EXTERNAL_LOCAL_FWMARK, vs.family)
        for entry in self.plans[key].state.ipsets.get(name, ()):
            stamp = ipset_catalog.entry_mark(entry)
            if stamp is not None and fwmark.unstamped(stamp) == vs.fwmark:
                yield name, entry

    def _mark_is_ours(self, name: str, entry: str) -> bool:
        """Whether a marked entry's mark belongs to one of the entry's own Services."""
        kind = ipset_catalog.kind_of(name)
        stamp = ipset_catalog.entry_mark(entry)
        if kind is None or stamp is None:
            return False
        vs = fwmark.listed_key(kind[1], fwmark.unstamped(stamp))
        held = _listed(self._vs_owners.get(vs))
        return bool(held) and held[0] in _listed(self._entry_owners.get(name, {}).get(entry))

    def _claim(self, key: ServiceKey, state: DataplaneState) -> None:
        vs_owners = self._vs_owners
        for vs in state.virtual_servers:
            held = vs_owners.get(vs)
            if held is None:
                vs_owners[vs] = key
            elif isinstance(held, list):
                held.append(key)
            else:
                vs_owners[vs] = [held, key]
        for address in state.bound:
            _add(self._address_owners, address, key)
        for name, entries in state.ipsets.items():
            owned = self._entry_owners.setdefault(name, {})
            for entry in entries:
                _add(owned, entry, key)

    def _release(self, key: ServiceKey, state: DataplaneState) -> None:
        vs_owners = self._vs_owners
        for vs in state.virtual_servers:
            held = vs_owners[vs]
            if isinstance(held, list):
                held.remove(key)
                if len(held) == 1:
                    vs_owners[vs] = held[0]
            elif held == key:
                del vs_owners[vs]
            else:
                raise ValueError(f"{vs} is not claimed by {key}")
        for address in state.bound:
            _discard(self._address_owners, address, key)
        for name, entries in state.ipsets.items():
            owned = self._entry_owners.get(name)
            if owned is None:
                continue
            for entry in entries:
                _discard(owned, entry, key)
            if not owned:
                del self._entry_owners[name]

    def lost_claims(self, key: ServiceKey) -> list[str]:
        """Why virtual servers ``key``'s plan asks for are another Service's, for its report."""
        plan = self.plans.get(key)
        if plan is None:
            return []
        found = []
        for vs in plan.state.virtual_servers:
            held = self._vs_owners.get(vs)
            if not isinstance(held, list) or held[0] == key:
                continue
            if vs.fwmark:
                found.append(
                    f"firewall mark {vs.fwmark:#x} of one of its addresses is Service"
                    f" {held[0]}'s (hashes meet): in-cluster clients of that address"
                    " reach only this node's endpoints"
                )
            else:
                found.append(f"{vs} is Service {held[0]}'s, which claimed it first")
        return found

    def desired(self, scope: Scope | None = None) -> DataplaneState:
        """The desired state, restricted to ``scope`` (None: everything)."""
        vs_keys = self._vs_owners.keys() if scope is None else scope.virtual_servers
        addresses = self._address_owners.keys() if scope is None else scope.addresses
        virtual: dict[VirtualServerKey, VirtualServer] = {}
        real: dict[VirtualServerKey, Mapping[RealServerKey, RealServerStatus]] = {}
        for vs in vs_keys:
            held = self._vs_owners.get(vs)
            if held is not None:
                state = self.plans[held[0] if isinstance(held, list) else held].state
                virtual[vs] = state.virtual_servers[vs]
                real[vs] = state.servers_of(vs)
        if scope is None:
            ipsets = {
                name: frozenset(owned)
                if name not in _MARKED
                else frozenset(e for e in owned if self._mark_is_ours(name, e))
                for name, owned in self._entry_owners.items()
            }
        else:
            sets: dict[str, set[str]] = {}
            for name, entry in scope.entries:
                if entry in self._entry_owners.get(name, ()) and (
                    name not in _MARKED or self._mark_is_ours(name, entry)
                ):
                    sets.setdefault(name, set()).add(entry)
            ipsets = {name: frozenset(found) for name, found in sets.items()}
        return DataplaneState(
            virtual_servers=virtual,
            real_servers=real,
            bound=frozenset(a for a in addresses if a in self._address_owners),
            ipsets=ipsets,
        )


_MARKED = frozenset(
    ipset_catalog.set_name(kind, family) for kind in ipset_catalog.MARKED_KINDS for family in Family
)


def _listed(held: Owners | VsOwners | None) -> list[ServiceKey]:
    """Owners as a list (a virtual server's in claim order)."""
    if held is None:
        return []
    if isinstance(held, ServiceKey):
        return [held]
    return list(held)


def _add(owners: dict[_Item, Owners], item: _Item, key: ServiceKey) -> None:
    held = owners.get(item)
    if held is None:
        owners[item] = key
    elif isinstance(held, set):
        held.add(key)
    elif held != key:
        owners[item] = {held, key}


def _discard(owners: dict[_Item, Owners], item: _Item, key: ServiceKey) -> None:
    held = owners.get(item)
    if isinstance(held, set):
        held.discard(key)
        if len(held) == 1:
            owners[item] = next(iter(held))
    elif held is not None and held == key:
        del owners[item]
