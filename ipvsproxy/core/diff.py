"""Diff: observed and desired dataplane state -> the minimal ordered operations.

Pure. ``observed`` must hold only what the proxy owns: diff deletes whatever
in it is not desired. The order keeps traffic flowing, and never makes a real
server schedulable before what its traffic needs is in place:

1. ipset entries added (before a VIP is bound, so KUBE-IPVS-FILTER never
   rejects a new VIP:port for want of its set entry);
2. virtual servers added or updated in place (scheduler, flags, timeout);
3. addresses bound. IPVS sees only packets to local addresses: a real server
   added behind an unbound VIP would be listed in IPVS while the node still
   routes its traffic away (and a datagram sent then leaves a conntrack entry
   that black-holes its flow). A packet to a bound VIP whose virtual server has
   no real server yet is refused at once and leaves no entry (issue 19);
4. UDP conntrack flushed for a virtual server that had no live real server and
   gets some, while it still has none: stale entries (from packets the node
   routed before the VIP was local) black-hole their flows, as kube-proxy knows,
   and none can form anew now that the VIP is bound. Entries answered by a real
   server it keeps (found at weight 0, or DNATed by kube-proxy's iptables mode
   before a takeover) are live flows and stay;
5. real servers added, weights restored (a desired real server found at weight
   0, e.g. left so by a restart mid-termination: upstream #92019), and removed:
   TCP/SCTP ones with connections go to weight 0 and stay (graceful
   termination; a later diff deletes them once their connections reach 0),
   others are deleted; then virtual servers deleted. All in one IPVS batch, so
   endpoints that all change at once are swapped without a moment with none;
6. UDP conntrack flushed for each removed UDP real server (the entries it
   answered, by address and port) and each deleted UDP virtual server;
7. addresses unbound;
8. ipset entries deleted.
"""

from __future__ import annotations

from ipvsproxy.core import ipset_catalog
from ipvsproxy.core.model import IpProtocol, RealServer, RealServerStatus, VirtualServerKey
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


def diff(observed: DataplaneState, desired: DataplaneState) -> list[Op]:
    """The operations that turn ``observed`` into ``desired`` (see the module doc for order)."""
    ops: list[Op] = []
    for name in sorted(desired.ipsets):
        added = desired.ipsets[name] - observed.entries(name)
        if added:
            ops.append(AddIpsetEntries(name, added))

    wanted = sorted(desired.virtual_servers)
    for key in wanted:
        want = desired.virtual_servers[key]
        have = observed.virtual_servers.get(key)
        if have is None:
            ops.append(AddVirtualServer(want))
        elif have != want:
            ops.append(UpdateVirtualServer(want))

    bind = desired.bound - observed.bound
    if bind:
        ops.append(BindAddresses(tuple(sorted(bind))))

    servers: list[Op] = []
    removals: list[Op] = []
    flushes: list[Op] = []
    for key in wanted:
        want_rs = desired.servers_of(key)
        have_rs = observed.servers_of(key) if key in observed.virtual_servers else {}
        if _flushable(key):
            live = frozenset(rkey for rkey, s in want_rs.items() if s.server.weight > 0)
            if live and not any(s.server.weight > 0 for s in have_rs.values()):
                ops.append(FlushUdpConntrack(key.address, key.port, keep=live))
        # Items, not keys then lookups: a plan's servers are a flat tuple (state.py).
        for rkey, status in sorted(want_rs.items()):
            target = status.server
            current = have_rs.get(rkey)
            if current is None:
                servers.append(AddRealServer(key, target))
            elif current.server.weight != target.weight:
                servers.append(UpdateRealServer(key, target))
        for rkey in sorted(have_rs.keys() - want_rs.keys()):
            removals.extend(_remove_real_server(key, have_rs[rkey]))
            if _flushable(key):
                flushes.append(FlushUdpConntrack(key.address, key.port, rkey))

    for key in sorted(observed.virtual_servers.keys() - desired.virtual_servers.keys()):
        removals.append(DeleteVirtualServer(key))
        if _flushable(key):
            flushes.append(FlushUdpConntrack(key.address, key.port))
    ops.extend(servers)
    ops.extend(removals)
    ops.extend(flushes)

    unbind = observed.bound - desired.bound
    if unbind:
        ops.append(UnbindAddresses(tuple(sorted(unbind))))
    for name in sorted(observed.ipsets):
        removed = observed.ipsets[name] - desired.entries(name)
        if removed and ipset_catalog.is_marked_set(name):
            # A mark changes by adding the entry again: a delete, by key, would undo it.
            readded = {ipset_catalog.entry_key(e) for e in desired.entries(name)}
            removed = frozenset(e for e in removed if ipset_catalog.entry_key(e) not in readded)
        if removed:
            ops.append(DeleteIpsetEntries(name, removed))
    return ops


def _flushable(key: VirtualServerKey) -> bool:
    """Whether UDP conntrack entries of ``key`` can be named: by its address and port.

    A firewall-mark virtual server has neither. Its flows' entries carry the address of
    the LB IP or external IP whose address virtual server is its sibling: deleting that
    one flushes them all. A real server leaving only the mark's virtual server (a remote
    endpoint) is deleted without a flush; IPVS (expire_nodest_conn) drops its flows.
    """
    return key.protocol is IpProtocol.UDP and not key.fwmark


def _remove_real_server(key: VirtualServerKey, status: RealServerStatus) -> list[Op]:
    """The IPVS operations for a real server that is no longer desired (diff adds the
    conntrack flush of a UDP one, after the batch)."""
    server = status.server
    if key.protocol is IpProtocol.UDP:
        return [DeleteRealServer(key, server.key)]
    if status.connections > 0:
        # Graceful termination: no new connections, the open ones finish.
        if server.weight != 0:
            return [UpdateRealServer(key, server._replace(weight=0))]
        return []
    return [DeleteRealServer(key, server.key)]


def lingering(
    observed: DataplaneState, desired: DataplaneState
) -> dict[VirtualServerKey, list[RealServer]]:
    """Real servers that diff keeps at weight 0 rather than deleting: not desired,
    TCP or SCTP, with connections, on a virtual server that stays."""
    result: dict[VirtualServerKey, list[RealServer]] = {}
    for key in desired.virtual_servers.keys() & observed.virtual_servers.keys():
        if key.protocol is IpProtocol.UDP:
            continue
        want = desired.servers_of(key)
        kept = [
            status.server._replace(weight=0)
            for rkey, status in observed.servers_of(key).items()
            if rkey not in want and status.connections > 0
        ]
        if kept:
            result[key] = sorted(kept)
    return result
