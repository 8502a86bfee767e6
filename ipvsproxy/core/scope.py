"""Scope: the kernel objects one sync looks at; everything outside it is left alone (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ipvsproxy.core.model import VirtualServerKey
from ipvsproxy.core.state import DataplaneState

IpsetEntry = tuple[str, str]  # (set name, entry)


@dataclass
class Scope:
    """The kernel objects a sync looks at: everything else is left alone."""

    virtual_servers: set[VirtualServerKey] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    entries: set[IpsetEntry] = field(default_factory=set)

    def add_state(self, state: DataplaneState) -> None:
        self.virtual_servers.update(state.virtual_servers)
        self.addresses.update(state.bound)
        for name, entries in state.ipsets.items():
            self.entries.update((name, entry) for entry in entries)

    def update(self, other: Scope) -> None:
        self.virtual_servers |= other.virtual_servers
        self.addresses |= other.addresses
        self.entries |= other.entries

    def __bool__(self) -> bool:
        return bool(self.virtual_servers or self.addresses or self.entries)
