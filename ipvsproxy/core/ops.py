"""The operations the core asks of the kernel: the vocabulary between diff and the dataplane.

``diff`` produces them, ``apply`` computes their effect on a state as a value, and the
dataplane's executor carries them out, each kind by the subsystem it belongs to. They
are plain values: nothing here knows how a subsystem does its work.
"""

from __future__ import annotations

from typing import NamedTuple

from ipvsproxy.core.model import RealServer, RealServerKey, VirtualServer, VirtualServerKey

# ----------------------------------------------------------------- IPVS


class AddVirtualServer(NamedTuple):
    server: VirtualServer


class UpdateVirtualServer(NamedTuple):
    """Change scheduler, flags or persistence timeout in place (no delete+add)."""

    server: VirtualServer


class DeleteVirtualServer(NamedTuple):
    key: VirtualServerKey


class AddRealServer(NamedTuple):
    virtual: VirtualServerKey
    server: RealServer


class UpdateRealServer(NamedTuple):
    """Change the weight of an existing real server."""

    virtual: VirtualServerKey
    server: RealServer


class DeleteRealServer(NamedTuple):
    virtual: VirtualServerKey
    key: RealServerKey


IpvsOp = (
    AddVirtualServer
    | UpdateVirtualServer
    | DeleteVirtualServer
    | AddRealServer
    | UpdateRealServer
    | DeleteRealServer
)
IPVS_OPS = (
    AddVirtualServer,
    UpdateVirtualServer,
    DeleteVirtualServer,
    AddRealServer,
    UpdateRealServer,
    DeleteRealServer,
)

# ------------------------------------------------------------ addresses


class BindAddresses(NamedTuple):
    """Bind each address to kube-ipvs0 (sorted)."""

    addresses: tuple[str, ...]


class UnbindAddresses(NamedTuple):
    addresses: tuple[str, ...]


# --------------------------------------------------------------- ipsets


class AddIpsetEntries(NamedTuple):
    set: str
    entries: frozenset[str]


class DeleteIpsetEntries(NamedTuple):
    set: str
    entries: frozenset[str]


# ------------------------------------------------------------ conntrack


class FlushUdpConntrack(NamedTuple):
    """Delete UDP conntrack entries to address:port; only those answered by ``real`` (its
    address and port) if given.

    Without ``real``, entries answered by a real server in ``keep`` stay: they belong to
    live flows to ready endpoints, and deleting one loses the reply in flight when the flow
    is masqueraded or was DNATed by iptables (its NAT binding goes with the entry). For the
    same reason ``real`` names a port too: a pod whose target port changed is the old real
    server and a new one, and only the old one's flows are stale.
    """

    address: str
    port: int
    real: RealServerKey | None = None
    keep: frozenset[RealServerKey] = frozenset()


Op = (
    IpvsOp
    | BindAddresses
    | UnbindAddresses
    | AddIpsetEntries
    | DeleteIpsetEntries
    | FlushUdpConntrack
)
