"""kube-ipvs0 and its addresses, over rtnetlink (our own messages; binding in batches).

pyroute2's AsyncIPRoute did this before; it is not used here any more because importing
it took 0.15-0.3 s of every start under user-mode-linux, for three requests (find, add
and delete a link) that are a few lines each.

The dummy link is created down, as kube-proxy leaves it: the kernel treats an address on
any link as local regardless of the link's state, which is all IPVS needs, and a down link
adds no routes beyond the local table's. IPv6 addresses are added with IFA_F_NODAD so they
are usable at once (no duplicate address detection on a link that never sends).

``node_addresses`` follows kube-proxy's NodePort address logic (``GetAllLocalAddressesExcept``
with ``isValidForSet``): every address of every link but kube-ipvs0, except loopback
addresses and IPv6 link-local ones (a NodePort on fe80:: would need a zone); IPv4
link-local addresses are kept, as kube-proxy keeps them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import zlib
from collections.abc import Sequence
from typing import NamedTuple

from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.interfaces import DUMMY_INTERFACE
from ipvsproxy.dataplane.netlink import (
    NETLINK_ROUTE,
    NLA_F_NESTED,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLMSGHDR,
    attrs,
    dump,
    nla,
    request_all,
)

IFA_F_NODAD = 0x02
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
IFLA_IFNAME, IFLA_LINKINFO, IFLA_INFO_KIND = 3, 18, 1
_EEXIST, _EADDRNOTAVAIL, _ENODEV = 17, 99, 19
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, link index
_IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change mask


def _ifaddr(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, index: int) -> bytes:
    """An RTM_NEWADDR/RTM_DELADDR payload: ip as /32 or /128 on link ``index``; IPv6
    without duplicate address detection, so it is usable at once."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    flags = IFA_F_NODAD if ip.version == 6 else 0
    header = _IFADDRMSG.pack(family, ip.max_prefixlen, flags, 0, index)
    return header + nla(IFA_LOCAL, ip.packed) + nla(IFA_ADDRESS, ip.packed)


def parse_addresses(
    addresses: Sequence[str],
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Validate all first: a bad address fails the call before anything is changed."""
    out = []
    for text in addresses:
        try:
            out.append(ipaddress.ip_address(text))
        except ValueError:
            raise InvalidValueError("address", text, "not an IP address") from None
    return out


_ADDRESS_ATTRS = frozenset({IFA_ADDRESS, IFA_LOCAL})


class ListedAddress(NamedTuple):
    family: int
    prefix: int
    link: int  # the link's index
    address: bytes  # IFA_ADDRESS, packed (IFA_LOCAL where there is no IFA_ADDRESS)


async def list_addresses() -> list[ListedAddress]:
    """Every address of every link, from one rtnetlink dump decoded by hand: pyroute2
    decodes every attribute of every message, 1 s for 10,000 addresses under
    user-mode-linux; this reads the two it needs."""
    request = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    listed = []
    for message in await dump(NETLINK_ROUTE, RTM_GETADDR, request):
        if message.kind != RTM_NEWADDR:
            continue
        family, prefix, _flags, _scope, index = _IFADDRMSG.unpack_from(message.data, NLMSGHDR.size)
        found = attrs(message.data, NLMSGHDR.size + _IFADDRMSG.size, wanted=_ADDRESS_ATTRS)
        address = found.get(IFA_ADDRESS) or found.get(IFA_LOCAL)
        if address:
            listed.append(ListedAddress(family, prefix, index, address))
    return listed


async def address_checksum() -> int:
    """A CRC-32 of every address of every link (family, prefix length, link index and the
    address): lifetimes and flags, which change by themselves, are left out."""
    crc = 0
    for listed in await list_addresses():
        crc = zlib.crc32(
            bytes((listed.family, listed.prefix))
            + listed.link.to_bytes(4, "little")
            + listed.address,
            crc,
        )
    return crc


def is_node_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not ip.is_loopback and not (ip.version == 6 and ip.is_link_local)


def _load_ipv6() -> None:
    """Where IPv6 is a module not yet loaded, rtnetlink refuses IPv6 addresses (EOPNOTSUPP)
    without loading it; opening an AF_INET6 socket makes the kernel load it."""
    with contextlib.suppress(OSError):
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).close()


def _link(index: int = 0, name: str | None = None, kind: str | None = None) -> bytes:
    """An RTM_*LINK payload naming a link by index or name, with a kind to create."""
    payload = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)
    if name is not None:
        payload += nla(IFLA_IFNAME, name.encode() + b"\0")
    if kind is not None:
        payload += nla(IFLA_LINKINFO | NLA_F_NESTED, nla(IFLA_INFO_KIND, kind.encode()))
    return payload


async def _link_request(kind: int, payload: bytes, flags: int = 0) -> tuple[int, bytes | None]:
    """(errno, the first RTM_NEWLINK reply or None) of one rtnetlink link request."""
    [(code, replies)] = await request_all(NETLINK_ROUTE, [(kind, payload)], flags=[flags])
    for reply in replies:
        if reply.kind == RTM_NEWLINK:
            return code, reply.data
    return code, None


class NetlinkAddresses:
    """The real Addresses. Create it inside the network namespace it should manage."""

    def __init__(self, interface: str = DUMMY_INTERFACE) -> None:
        self._interface = interface
        self._index: int | None = None

    async def _lookup(self) -> int | None:
        code, reply = await _link_request(RTM_GETLINK, _link(name=self._interface))
        if code == _ENODEV:
            self._index = None
        elif code:
            raise OSError(code, f"look up {self._interface}: {os.strerror(code)}")
        elif reply is not None:
            self._index = _IFINFOMSG.unpack_from(reply, NLMSGHDR.size)[2]
        return self._index

    async def ensure_dummy(self) -> None:
        if await self._lookup() is not None:
            return
        # Created down, as kube-proxy leaves it (see the module doc). EEXIST: someone
        # made it meanwhile.
        payload = _link(name=self._interface, kind="dummy")
        code, _ = await _link_request(RTM_NEWLINK, payload, NLM_F_CREATE | NLM_F_EXCL)
        if code and code != _EEXIST:
            raise OSError(code, f"add dummy link {self._interface}: {os.strerror(code)}")
        await self._lookup()

    async def delete_dummy(self) -> None:
        index = await self._lookup()
        if index is None:
            return
        code, _ = await _link_request(RTM_DELLINK, _link(index=index))
        if code and code != _ENODEV:
            raise OSError(code, f"delete link {self._interface}: {os.strerror(code)}")
        self._index = None

    async def _dump(self) -> list[tuple[int, str]]:
        return [(a.link, str(ipaddress.ip_address(a.address))) for a in await list_addresses()]

    async def bound(self) -> set[str]:
        index = await self._lookup()
        if index is None:
            return set()
        return {addr for i, addr in await self._dump() if i == index}

    async def _each(self, cmd: str, addresses: Sequence[str], ignore: int) -> None:
        ips = parse_addresses(addresses)
        if any(ip.version == 6 for ip in ips):
            _load_ipv6()
        index = self._index if self._index is not None else await self._lookup()
        if index is None:
            if cmd == "del":
                return
            raise InvalidValueError("interface", self._interface, "does not exist")

        # All in as few sendmsg calls as the buffers allow: binding 10,000 VIPs one
        # request at a time through pyroute2 took 16 s under user-mode-linux.
        kind, flags = (RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL) if cmd == "add" else (RTM_DELADDR, 0)
        requests = [(kind, _ifaddr(ip, index)) for ip in ips]
        results = await request_all(NETLINK_ROUTE, requests, flags=[flags] * len(requests))
        for ip, (code, _) in zip(ips, results, strict=True):
            if code and code != ignore:
                raise OSError(code, f"{cmd} address {ip} on {self._interface}: {os.strerror(code)}")

    async def bind(self, addresses: Sequence[str]) -> None:
        await self._each("add", addresses, _EEXIST)

    async def unbind(self, addresses: Sequence[str]) -> None:
        await self._each("del", addresses, _EADDRNOTAVAIL)

    async def node_addresses(self) -> set[str]:
        index = await self._lookup()
        return {addr for i, addr in await self._dump() if i != index and is_node_address(addr)}

    async def fingerprint(self) -> int:
        return await address_checksum()

    async def close(self) -> None:
        pass  # every request opens and closes its own socket
