"""UDP conntrack cleanup over ctnetlink (pyroute2's AsyncConntrack): no process per entry.

When a UDP service's endpoints change, clients keep sending into conntrack entries that
still point at a dead real server (UDP has no close). As kube-proxy does, the proxy deletes
the entries of the service VIP:port, or just those IPVS sent to one removed real server
(answered from its address and port).
With ``net/ipv4/vs/conntrack=1`` an IPVS-NATed flow has an entry whose original tuple is
client -> VIP:port and whose reply tuple comes from the real server; a stale entry, made by
a packet the node routed while the VIP was not local, has the VIP itself as reply source.
So the entries of live flows to ready endpoints can be told apart and kept (``keep``):
deleting one drops the reply in flight when the flow is masqueraded or DNATed by iptables.

The kernel filters the dump by protocol and port (CTA_FILTER, Linux >= 5.8); addresses are
compared here, because pyroute2 0.9.7 encodes an IPv6 address filter the kernel never
matches.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from ipvsproxy.core.model import RealServerKey
from ipvsproxy.dataplane.errors import InvalidValueError

_ENOENT = 2


def parse_target(address: str, port: int) -> tuple[str, int]:
    """(normalised address, AF_*), or InvalidValueError naming the bad field."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise InvalidValueError("address", address, "not an IP address") from None
    if not 0 < port < 65536:
        raise InvalidValueError("port", port, "expected 1-65535")
    return str(ip), socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def parse_real(real: RealServerKey) -> RealServerKey:
    """``real`` with its address normalised (as entries are compared), or InvalidValueError."""
    return RealServerKey(parse_target(real.address, real.port)[0], real.port)


def _norm(address: object) -> str:
    return str(ipaddress.ip_address(str(address)))


def _answered_by(entry: Any) -> RealServerKey:
    """Where an entry's replies come from: the real server IPVS sent its flow to (the VIP
    itself for an entry of a packet that was never NATed)."""
    return RealServerKey(_norm(entry.tuple_reply.saddr), entry.tuple_reply.sport)


class NetlinkConntrack:
    """The real Conntrack. Create it inside the network namespace it should manage."""

    def __init__(self) -> None:
        self._sockets: dict[int, Any] = {}

    def _socket(self, family: int) -> Any:
        if family not in self._sockets:
            # Imported when first needed (a UDP Service's endpoints change): pyroute2's
            # ctnetlink socket and its message classes cost every start 0.1-0.2 s under
            # user-mode-linux, and many nodes never flush a UDP entry.
            from pyroute2 import AsyncConntrack

            self._sockets[family] = AsyncConntrack(nfgen_family=family)
        return self._sockets[family]

    async def _delete(
        self,
        address: str,
        port: int,
        real: RealServerKey | None,
        keep: Collection[RealServerKey] = (),
    ) -> int:
        vip, family = parse_target(address, port)
        kept = {parse_real(k) for k in keep}
        only = parse_real(real) if real is not None else None
        ct = self._socket(family)
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple  # as _socket's

        wanted = NFCTAttrTuple(family=family, proto=socket.IPPROTO_UDP, dport=port)
        doomed = [
            entry
            async for entry in await ct.dump_entries(tuple_orig=wanted)
            if _norm(entry.tuple_orig.daddr) == vip
            and entry.tuple_orig.dport == port
            and (only is None or _answered_by(entry) == only)
            and _answered_by(entry) not in kept
        ]
        deleted = 0
        for entry in doomed:
            try:
                await ct.delete(entry)
                deleted += 1
            except NetlinkError as err:
                if err.code != _ENOENT:  # expired meanwhile: fine
                    raise
        return deleted

    async def delete_udp_to_service(
        self, address: str, port: int, keep: Collection[RealServerKey] = ()
    ) -> int:
        return await self._delete(address, port, None, keep)

    async def delete_udp_to_real_server(self, virtual: str, port: int, real: RealServerKey) -> int:
        return await self._delete(virtual, port, real)

    async def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


async def insert_udp_entry(
    client: str,
    client_port: int,
    vip: str,
    port: int,
    real: str,
    real_port: int,
    lifetime: int = 120,
) -> None:
    """Create one UDP entry client:cport -> vip:port answered by real:rport (for tests:
    the contract suite seeds the kernel with it)."""
    from pyroute2 import AsyncConntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    _, family = parse_target(vip, port)
    ct: Any = AsyncConntrack(nfgen_family=family)
    try:
        await ct.entry(
            "add",
            timeout=lifetime,
            tuple_orig=NFCTAttrTuple(
                family=family,
                saddr=client,
                daddr=vip,
                proto=socket.IPPROTO_UDP,
                sport=client_port,
                dport=port,
            ),
            tuple_reply=NFCTAttrTuple(
                family=family,
                saddr=real,
                daddr=client,
                proto=socket.IPPROTO_UDP,
                sport=real_port,
                dport=client_port,
            ),
        )
    finally:
        ct.close()
