"""The firewall marks of in-cluster traffic to externalTrafficPolicy Local IPs (pure).

With ``externalTrafficPolicy: Local`` the virtual server of an LB IP or external IP
holds only this node's endpoints, as it must for traffic from outside the cluster.
Traffic from pods and from the node itself to that IP must still reach every
endpoint (upstream #115931). The proxy gives each such ``ip,proto:port`` a second,
firewall-mark virtual server with every endpoint, and maps the address to its mark
in the KUBE-EXTERNAL-LOCAL-FWMARK ipset; a constant pair of mangle rules stamps the
mark on packets from the cluster CIDR and from the node (``--map-mark``). IPVS
looks a packet up by its mark before its address, so those packets use the mark's
virtual server and every other packet the address's.

The stamp is the mark with the ``PENDING`` bit set, which matches no virtual server
(IPVS compares marks exactly). A rule in nat KUBE-SERVICES clears it on a
connection's first packet, before IPVS schedules it. KUBE-SERVICES is kube-proxy's
chain too, rewritten by its every sync: on a node handed back to kube-proxy the bit
is no longer cleared, and the firewall-mark virtual servers this proxy leaves behind
can route nothing, whatever endpoints they still hold.

Layout of a mark (all within ``MASK``, below kube-proxy's masquerade bit 0x4000 and
its drop bit 0x8000):

- bit 13 (``FLAG``): set in every mark of ours, so one ``-m mark`` rule can tell
  our packets (node-originated ones must be masqueraded: they leave with the VIP
  as source address);
- bit 12 (``PENDING``): set in the stamp only (above);
- bits 2-11: a hash of the address, protocol and port;
- bits 0-1: the protocol (1 TCP, 2 UDP, 3 SCTP), because the kernel keeps no
  protocol for a firewall-mark virtual server and diff needs it (UDP real servers
  are removed at once, with their conntrack entries).

Two addresses whose hashes meet get the same mark; ``DesiredIndex`` then keeps the
mark for the first and leaves the other's in-cluster traffic on its address virtual
server (local endpoints), never on another Service's.
"""

from __future__ import annotations

import zlib

from ipvsproxy.core.model import Family, IpProtocol, VirtualServerKey, fwmark_key

FLAG = 0x2000
PENDING = 0x1000
MASK = 0x3FFF
_HASH_SHIFT = 2
_HASH_VALUES = (PENDING >> _HASH_SHIFT) - 1  # 1023: bits 2-11, below PENDING and FLAG
_CODES = {IpProtocol.TCP: 1, IpProtocol.UDP: 2, IpProtocol.SCTP: 3}
_PROTOCOLS = {code: protocol for protocol, code in _CODES.items()}


def mark_for(address: str, protocol: IpProtocol, port: int) -> int:
    """The mark of ``address``:``port``/``protocol`` (stable across processes and nodes)."""
    digest = zlib.crc32(f"{address},{protocol.value}:{port}".encode())
    bucket = digest % _HASH_VALUES + 1
    return FLAG | bucket << _HASH_SHIFT | _CODES[protocol]


def stamp(mark: int) -> int:
    """What the mangle rule stamps on packets for ``mark`` (an entry's skbmark)."""
    return mark | PENDING


def unstamped(value: int) -> int:
    """The mark a stamp stands for (what IPVS sees once nat cleared PENDING)."""
    return value & ~PENDING


def protocol_of(mark: int) -> IpProtocol | None:
    """The protocol a mark of ours carries, or None if ``mark`` is not one of ours."""
    if mark & ~MASK or not mark & FLAG:
        return None
    return _PROTOCOLS.get(mark & 0x3)


def listed_key(family: Family, mark: int) -> VirtualServerKey:
    """The key of the firewall-mark virtual server ``mark`` as the kernel names it (family
    and mark only): the protocol is the mark's own, TCP for a mark not ours (the kernel
    keeps every firewall-mark service as TCP)."""
    return fwmark_key(family, mark, protocol_of(mark) or IpProtocol.TCP)
