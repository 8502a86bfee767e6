"""apply_ops: what a list of diff operations does to a DataplaneState, as a value.

Strict on purpose: an operation that would be a no-op or an error in the
kernel (adding what exists, deleting what does not, a real server on a missing
virtual server) raises InvalidOp, so tests catch a diff that is not minimal or
not well ordered. The property tests take it as their oracle; the reconciler keeps
its picture of the kernel with it (``mirror``) instead of re-reading the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable

from ipvsproxy.core import ipset_catalog
from ipvsproxy.core.model import RealServerKey, RealServerStatus, VirtualServer, VirtualServerKey
from ipvsproxy.core.ops import (
    AddIpsetEntries,
    AddRealServer,
    AddVirtualServer,
    BindAddresses,
    DeleteIpsetEntries,
    DeleteRealServer,
    DeleteVirtualServer,
    FlushUdpConntrack,
    Op,
    UnbindAddresses,
    UpdateRealServer,
    UpdateVirtualServer,
)
from ipvsproxy.core.state import DataplaneState


class InvalidOp(ValueError):
    """The operation does not fit the state it is applied to."""


def apply_ops(state: DataplaneState, ops: Iterable[Op]) -> DataplaneState:
    virtual: dict[VirtualServerKey, VirtualServer] = dict(state.virtual_servers)
    real: dict[VirtualServerKey, dict[RealServerKey, RealServerStatus]] = {
        key: dict(state.servers_of(key)) for key in virtual
    }
    bound = set(state.bound)
    sets = {name: set(entries) for name, entries in state.ipsets.items()}

    def need_vs(key: VirtualServerKey, op: Op) -> dict[RealServerKey, RealServerStatus]:
        if key not in virtual:
            raise InvalidOp(f"{op}: no such virtual server")
        return real[key]

    for op in ops:
        match op:
            case AddVirtualServer(server=vs):
                if vs.key in virtual:
                    raise InvalidOp(f"{op}: exists")
                virtual[vs.key] = vs
                real[vs.key] = {}
            case UpdateVirtualServer(server=vs):
                need_vs(vs.key, op)
                if virtual[vs.key] == vs:
                    raise InvalidOp(f"{op}: nothing changes")
                virtual[vs.key] = vs
            case DeleteVirtualServer(key=key):
                need_vs(key, op)
                del virtual[key], real[key]
            case AddRealServer(virtual=key, server=rs):
                servers = need_vs(key, op)
                if rs.key in servers:
                    raise InvalidOp(f"{op}: exists")
                servers[rs.key] = RealServerStatus(rs)
            case UpdateRealServer(virtual=key, server=rs):
                servers = need_vs(key, op)
                if rs.key not in servers or servers[rs.key].server == rs:
                    raise InvalidOp(f"{op}: missing or unchanged")
                servers[rs.key] = servers[rs.key]._replace(server=rs)
            case DeleteRealServer(virtual=key, key=rkey):
                servers = need_vs(key, op)
                if rkey not in servers:
                    raise InvalidOp(f"{op}: missing")
                del servers[rkey]
            case BindAddresses(addresses=addresses):
                if not addresses or bound & set(addresses):
                    raise InvalidOp(f"{op}: empty or already bound")
                bound.update(addresses)
            case UnbindAddresses(addresses=addresses):
                if not addresses or not set(addresses) <= bound:
                    raise InvalidOp(f"{op}: empty or not bound")
                bound.difference_update(addresses)
            case AddIpsetEntries(set=name, entries=entries):
                current = sets.setdefault(name, set())
                if not entries or current & entries:
                    raise InvalidOp(f"{op}: empty or present")
                if ipset_catalog.is_marked_set(name):  # the kernel replaces a key's mark
                    keys = {ipset_catalog.entry_key(e) for e in entries}
                    current.difference_update(
                        [e for e in current if ipset_catalog.entry_key(e) in keys]
                    )
                current.update(entries)
            case DeleteIpsetEntries(set=name, entries=entries):
                current = sets.get(name, set())
                if not entries or not entries <= current:
                    raise InvalidOp(f"{op}: empty or absent")
                current.difference_update(entries)
            case FlushUdpConntrack():
                pass
            case _:
                raise InvalidOp(f"unknown operation {op!r}")
    return DataplaneState(
        virtual_servers=virtual,
        real_servers=real,
        bound=frozenset(bound),
        ipsets={name: frozenset(entries) for name, entries in sets.items() if entries},
    )
