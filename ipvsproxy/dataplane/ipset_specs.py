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

_PROTOCOLS = tuple(ipsetnames.protocol_text(p) for p in Protocol)


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


def _ip(text: str, family: Family, field: str) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidValueError(field, text, "not an IP address") from None
    if addr.version != (6 if family is Family.V6 else 4):
        raise InvalidValueError(field, text, f"not an {family.k8s_name} address")
    return str(addr)


def _net(text: str, family: Family) -> str:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidValueError("ipset entry net", text, "not a CIDR") from None
    if net.version != (6 if family is Family.V6 else 4):
        raise InvalidValueError("ipset entry net", text, f"not an {family.k8s_name} CIDR")
    if net.prefixlen == 0:
        raise InvalidValueError("ipset entry net", text, "prefix length 0 is not allowed")
    return ipsetnames.network_text(net)


def _port(text: str) -> str:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidValueError("ipset entry port", text, "expected 1-65535")
    return str(int(text))


def _proto_port(text: str) -> str:
    proto, sep, port = text.partition(":")
    if not sep or proto.lower() not in _PROTOCOLS:
        raise InvalidValueError("ipset entry protocol:port", text, "expected tcp|udp|sctp:PORT")
    return f"{proto.lower()}:{_port(port)}"


def normalize_entry(kind: str, family: Family, entry: str) -> str:
    """``entry`` in the exact form ``ipset save`` prints it, or InvalidValueError."""
    if kind == BITMAP_PORT:
        return _port(entry.strip())
    parts = entry.strip().split(",")
    arity = {HASH_IP: 1, HASH_IP_PORT: 2, HASH_IP_PORT_IP: 3, HASH_IP_PORT_NET: 3}.get(kind)
    if arity is None:
        raise InvalidValueError("ipset type", kind)
    if len(parts) != arity:
        raise InvalidValueError("ipset entry", entry, f"wrong shape for {kind}")
    out = [_ip(parts[0], family, "ipset entry address")]
    if arity >= 2:
        out.append(_proto_port(parts[1]))
    if kind == HASH_IP_PORT_IP:
        out.append(_ip(parts[2], family, "ipset entry address"))
    elif kind == HASH_IP_PORT_NET:
        out.append(_net(parts[2], family))
    return ",".join(out)
