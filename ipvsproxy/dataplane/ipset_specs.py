"""How the dataplane writes the KUBE-* ipsets: the ``create`` line and entries (pure).

The sets themselves (names, types, comments, the ``KUBE-6-`` names of IPv6) are
:mod:`ipvsproxy.ipsetnames`'s. This module checks what is about to reach the kernel: entries
are brought to the exact text ``ipset save`` prints, so that a desired entry compares equal
to one read back from the kernel (addresses compressed, a net masked to its prefix and
printed without ``/32`` or ``/128``, ports numeric, protocols lower case), and anything
malformed is an InvalidValueError before ``ipset restore`` half-applies a batch.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from ipvsproxy import ipsetnames
from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.interfaces import IpsetSpec
from ipvsproxy.ipsetnames import (
    BITMAP_PORT,
    HASH_IP,
    HASH_IP_PORT,
    HASH_IP_PORT_IP,
    HASH_IP_PORT_NET,
    MAX_NAME_LENGTH,
    TYPES,
)
from ipvsproxy.model import Family, Protocol

_PROTOCOLS = {ipsetnames.protocol_text(p): p for p in Protocol}


def is_owned(name: str) -> bool:
    return name.startswith(ipsetnames.OWNED_PREFIX)


def create_line(spec: IpsetSpec) -> str:
    """The ``ipset restore`` line creating ``spec`` (the options kube-proxy uses)."""
    if spec.type not in TYPES:
        raise InvalidValueError("ipset type", spec.type, f"expected one of {', '.join(TYPES)}")
    if len(spec.name) > MAX_NAME_LENGTH or not spec.name:
        raise InvalidValueError("ipset name", spec.name, f"1 to {MAX_NAME_LENGTH} characters")
    if spec.type == BITMAP_PORT:
        return f"create {spec.name} {spec.type} range 0-65535 comment"
    inet = "inet6" if spec.family is Family.V6 else "inet"
    return f"create {spec.name} {spec.type} family {inet} hashsize 1024 maxelem 65536 comment"


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EntryParts(NamedTuple):
    """One entry's fields, as the kernel takes them; None where the set type has none."""

    address: IpAddress | None = None  # the first field (every hash type)
    protocol: Protocol | None = None
    port: int | None = None
    address2: IpAddress | None = None  # the third field: an address, or a net's (masked) one
    prefix: int | None = None  # hash:ip,port,net: the third field's prefix length

    def text(self) -> str:
        """The entry in the exact form ``ipset save`` prints it."""
        if self.address is None:  # bitmap:port
            return str(self.port)
        out = str(self.address)
        if self.protocol is not None:
            out += f",{ipsetnames.protocol_text(self.protocol)}:{self.port}"
        if self.address2 is not None:
            if self.prefix is None:
                out += f",{self.address2}"
            else:
                net = ipaddress.ip_network(f"{self.address2}/{self.prefix}")
                out += f",{ipsetnames.network_text(net)}"
        return out


def _ip(text: str, family: Family, field: str) -> IpAddress:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidValueError(field, text, "not an IP address") from None
    if addr.version != (6 if family is Family.V6 else 4):
        raise InvalidValueError(field, text, f"not an {family.k8s_name} address")
    return addr


def _net(text: str, family: Family) -> tuple[IpAddress, int]:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidValueError("ipset entry net", text, "not a CIDR") from None
    if net.version != (6 if family is Family.V6 else 4):
        raise InvalidValueError("ipset entry net", text, f"not an {family.k8s_name} CIDR")
    if net.prefixlen == 0:
        raise InvalidValueError("ipset entry net", text, "prefix length 0 is not allowed")
    return net.network_address, net.prefixlen


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidValueError("ipset entry port", text, "expected 1-65535")
    return int(text)


def _proto_port(text: str) -> tuple[Protocol, int]:
    proto, sep, port = text.partition(":")
    protocol = _PROTOCOLS.get(proto.lower())
    if not sep or protocol is None:
        raise InvalidValueError("ipset entry protocol:port", text, "expected tcp|udp|sctp:PORT")
    return protocol, _port(port)


_ARITY = {HASH_IP: 1, HASH_IP_PORT: 2, HASH_IP_PORT_IP: 3, HASH_IP_PORT_NET: 3}


def parse_entry(kind: str, family: Family, entry: str) -> EntryParts:
    """``entry`` of a set of type ``kind`` taken apart and checked, or InvalidValueError.

    The one parser of entries: the ``ipset restore`` path writes ``.text()``, the netlink
    path encodes the parts, so the two cannot disagree on what an entry means.
    """
    if kind == BITMAP_PORT:
        return EntryParts(port=_port(entry.strip()))
    arity = _ARITY.get(kind)
    if arity is None:
        raise InvalidValueError("ipset type", kind)
    parts = entry.strip().split(",")
    if len(parts) != arity:
        raise InvalidValueError("ipset entry", entry, f"wrong shape for {kind}")
    address = _ip(parts[0], family, "ipset entry address")
    if arity == 1:
        return EntryParts(address)
    protocol, port = _proto_port(parts[1])
    if kind == HASH_IP_PORT_IP:
        return EntryParts(address, protocol, port, _ip(parts[2], family, "ipset entry address"))
    if kind == HASH_IP_PORT_NET:
        net, prefix = _net(parts[2], family)
        return EntryParts(address, protocol, port, net, prefix)
    return EntryParts(address, protocol, port)


def normalize_entry(kind: str, family: Family, entry: str) -> str:
    """``entry`` in the exact form ``ipset save`` prints it, or InvalidValueError."""
    return parse_entry(kind, family, entry).text()
