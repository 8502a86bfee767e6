"""Which part of what the kernel holds is the proxy's own (pure).

The proxy owns the addresses on kube-ipvs0, every KUBE-* ipset entry, and the
virtual servers it made: those on an address bound to kube-ipvs0, and those on
another local address (NodePorts, an external or load-balancer IP the node
already has) whose port the proxy recorded in its own ipsets. The record is
the kernel's, so ownership survives a restart of the proxy, and an operator's
own virtual server on a node address (say 192.0.2.10:80, with no KUBE-*
entry) is never touched. Firewall-mark virtual servers are the proxy's when
their mark appears in one of its marked sets (KUBE-EXTERNAL-LOCAL-FWMARK).
``--ipvs-exclude-cidrs`` removes address virtual servers from ownership whatever
else holds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from ipvsproxy.core import fwmark, ipset_catalog
from ipvsproxy.core.model import (
    Family,
    IpProtocol,
    IpvsTable,
    RealServerKey,
    RealServerStatus,
    VirtualServerKey,
    ip_address,
)
from ipvsproxy.core.state import DataplaneState

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Sets whose hash:ip,port entries record a virtual server on a local address.
_ADDRESS_PORT_KINDS = (
    ipset_catalog.CLUSTER_IP,
    ipset_catalog.EXTERNAL_IP,
    ipset_catalog.LOAD_BALANCER,
)


class Recorded(NamedTuple):
    """What the proxy's ipsets say its virtual servers are."""

    # ``ip,proto:port`` entries: virtual servers on those addresses.
    address_ports: set[str]
    # (protocol, port) of NodePorts (bitmap sets hold bare ports; SCTP's ip,sctp:port).
    node_ports: set[tuple[IpProtocol, int]]
    # (family, mark) of firewall-mark virtual servers.
    marks: set[tuple[Family, int]]


def recorded_keys(entries: Mapping[str, Iterable[str]]) -> Recorded:
    """What the proxy's ipsets (by name, their entries) record of its virtual servers."""
    address_ports: set[str] = set()
    node_ports: set[tuple[IpProtocol, int]] = set()
    marks: set[tuple[Family, int]] = set()
    for family in Family:
        for kind in ipset_catalog.MARKED_KINDS:
            for entry in entries.get(ipset_catalog.set_name(kind, family), ()):
                # The entry's stamp stands for its mark; releases before 0.2 stamped the
                # mark itself, and the virtual servers they made are ours too.
                stamp = ipset_catalog.entry_mark(entry)
                if stamp:
                    marks.update({(family, stamp), (family, fwmark.unstamped(stamp))})
        for kind in _ADDRESS_PORT_KINDS:
            address_ports.update(entries.get(ipset_catalog.set_name(kind, family), ()))
        for protocol, kinds in ipset_catalog.NODE_PORT_SETS.items():
            for kind in kinds:
                for entry in entries.get(ipset_catalog.set_name(kind, family), ()):
                    port = entry.rsplit(":", 1)[-1]
                    if port.isdigit():
                        node_ports.add((protocol, int(port)))
    return Recorded(address_ports, node_ports, marks)


def is_owned(
    key: VirtualServerKey,
    bound: Iterable[str] | set[str],
    recorded: Recorded,
    exclude: Sequence[Network] = (),
) -> bool:
    if key.fwmark:
        return (key.family, key.fwmark) in recorded.marks
    if exclude:
        ip = ip_address(key.address)
        if any(ip in net for net in exclude):
            return False
    if key.address in bound:
        return True
    if (key.protocol, key.port) in recorded.node_ports:
        return True
    entry = ipset_catalog.ip_port_entry(key.address, key.protocol, key.port)
    return entry in recorded.address_ports


def owned_state(
    table: IpvsTable,
    bound: set[str],
    entries: Mapping[str, set[str]],
    exclude: Sequence[Network] = (),
) -> DataplaneState:
    """The proxy's own part of the kernel, as diff's ``observed``."""
    recorded = recorded_keys(entries)
    virtual = {
        key: vs
        for key, vs in table.virtual_servers.items()
        if is_owned(key, bound, recorded, exclude)
    }
    real: dict[VirtualServerKey, dict[RealServerKey, RealServerStatus]] = {
        key: {status.server.key: status for status in table.real_servers.get(key, ())}
        for key in virtual
    }
    sets = {
        name: frozenset(found)
        for name, found in entries.items()
        if found and ipset_catalog.kind_of(name) is not None
    }
    return DataplaneState(
        virtual_servers=virtual, real_servers=real, bound=frozenset(bound), ipsets=sets
    )
