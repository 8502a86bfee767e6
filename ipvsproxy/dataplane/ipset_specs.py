"""How the dataplane writes the KUBE-* ipsets: the ``create`` line and entries (pure).

The sets themselves (names, types, comments, the ``KUBE-6-`` names of IPv6) are
:mod:`ipvsproxy.core.ipset_catalog`'s. This module checks what is about to reach the kernel: entries
are brought to the exact text ``ipset save`` prints, so that a desired entry compares equal
to one read back from the kernel (addresses compressed, a net masked to its prefix and
printed without ``/32`` or ``/128``, ports numeric, protocols lower case), and anything
malformed is an InvalidValueError before ``ipset restore`` half-applies a batch.

An entry of a set created with ``skbinfo`` may end in a firewall mark for ``-j SET
--map-mark``: `` skbmark 0xM`` (mask 0xffffffff) or `` skbmark 0xM/0xMASK``, printed as
ipset prints it (lower-case hex; no ``skbmark`` at all for 0x0/0x0, which the kernel keeps
as "no mark"). The mark is data, not key: the kernel holds one entry per key and adding
it again (``-exist``) overwrites the mark; deleting needs only the key.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from ipvsproxy.core import ipset_catalog
from ipvsproxy.core.ipset_catalog import (
    BITMAP_PORT,
    HASH_IP,
    HASH_IP_PORT,
    HASH_IP_PORT_IP,
    HASH_IP_PORT_NET,
    MAX_NAME_LENGTH,
    TYPES,
    IpsetSpec,
)
from ipvsproxy.core.model import Family, IpProtocol, ip_address, packed_ipv4
from ipvsproxy.dataplane.errors import InvalidValueError

_PROTOCOLS = {ipset_catalog.protocol_text(p): p for p in IpProtocol}


def is_owned(name: str) -> bool:
    return name.startswith(ipset_catalog.OWNED_PREFIX)


class SetOptions(NamedTuple):
    """A set's create options that ``ipset create -exist`` compares with an existing set's.

    The kernel accepts ``create -exist`` on an existing set only when the type, maxelem,
    default timeout, the bitmap's port range and the extensions (comment, counters,
    skbinfo, forceadd) are all the same (``ip_set_create`` and the type's ``same_set`` in
    net/netfilter/ipset); hashsize and, for hash types, the family are not compared.
    kube-proxy's IPVS mode runs ``ipset create NAME TYPE family F hashsize 1024 maxelem
    65536 -exist`` (``bitmap:port range 0-65535``) for every set on every sync and gives up
    the whole sync if one fails, so a shared set must have exactly these options.
    """

    maxelem: int | None = None  # hash types
    port_range: tuple[int, int] | None = None  # bitmap:port
    timeout: int | None = None  # a default timeout: kube-proxy's sets have none
    comment: bool = False
    counters: bool = False
    skbinfo: bool = False
    forceadd: bool = False


KUBE_PROXY_MAXELEM = 65536
KUBE_PROXY_HASHSIZE = 1024
KUBE_PROXY_PORT_RANGE = (0, 65535)


def wanted_options(spec: IpsetSpec) -> SetOptions:
    """The options ``spec``'s set is created with: kube-proxy's, plus ``skbinfo`` for the
    marked sets only this proxy has."""
    if spec.type == BITMAP_PORT:
        return SetOptions(port_range=KUBE_PROXY_PORT_RANGE, skbinfo=spec.skbinfo)
    return SetOptions(maxelem=KUBE_PROXY_MAXELEM, skbinfo=spec.skbinfo)


def options_text(options: SetOptions) -> str:
    """The options as ``ipset create`` takes them, after the type and family."""
    words = []
    if options.port_range is not None:
        words.append(f"range {options.port_range[0]}-{options.port_range[1]}")
    if options.maxelem is not None:
        words.append(f"hashsize {KUBE_PROXY_HASHSIZE} maxelem {options.maxelem}")
    if options.timeout is not None:
        words.append(f"timeout {options.timeout}")
    words += [
        flag
        for flag, wanted in (
            ("counters", options.counters),
            ("comment", options.comment),
            ("skbinfo", options.skbinfo),
            ("forceadd", options.forceadd),
        )
        if wanted
    ]
    return " ".join(words)


def option_differences(have: SetOptions, want: SetOptions) -> list[str]:
    """What differs, as ``field have (want)`` texts; empty when ``create -exist`` would pass."""
    return [
        f"{field} {got} (want {wanted})"
        for field, got, wanted in zip(SetOptions._fields, have, want, strict=True)
        if got != wanted
    ]


def check_spec(spec: IpsetSpec) -> None:
    """InvalidValueError unless ``spec`` names a set type the proxy uses and a name the
    kernel takes: checked before any set is created, whichever way."""
    if spec.type not in TYPES:
        raise InvalidValueError("ipset type", spec.type, f"expected one of {', '.join(TYPES)}")
    if len(spec.name) > MAX_NAME_LENGTH or not spec.name:
        raise InvalidValueError("ipset name", spec.name, f"1 to {MAX_NAME_LENGTH} characters")


# The highest revision of each set type that Debian 12's ipset (v7.17, ``ipset --help``)
# knows. The tool creates a set with the highest revision both it and the kernel support,
# and cannot list or save a set of a revision it does not know; kube-proxy's ``ipset
# list``/``save`` after a switch back would fail on such a set. Measured: under Linux 6.1
# (UML) the kernel's highest are 5, 6, 6, 8, 3 and under 6.12 6, 7, 6, 8, 3 (in this
# order), all at or below these, so the tool and the proxy both take the kernel's highest.
TOOL_REVISIONS = {
    HASH_IP: 6,
    HASH_IP_PORT: 7,
    HASH_IP_PORT_IP: 6,
    HASH_IP_PORT_NET: 8,
    BITMAP_PORT: 3,
}


def create_revision(kind: str, kernel_min: int, kernel_max: int) -> int:
    """The revision ``ipset create`` would give a set of type ``kind`` on a kernel that
    supports ``kernel_min``..``kernel_max``: the highest both the kernel and the tool know.
    A kernel that has dropped every revision the tool knows (the tool refuses to work
    with it) gets its lowest: the nearest to what the tool would make."""
    return max(kernel_min, min(kernel_max, TOOL_REVISIONS[kind]))


def create_line(spec: IpsetSpec, options: SetOptions | None = None) -> str:
    """The ``ipset restore`` line creating ``spec``: kube-proxy's exact options (so that
    kube-proxy, run instead of this proxy, accepts the set), or ``options`` if given."""
    check_spec(spec)
    text = options_text(options if options is not None else wanted_options(spec))
    if spec.type == BITMAP_PORT:
        return f"create {spec.name} {spec.type} {text}"
    inet = "inet6" if spec.family is Family.V6 else "inet"
    return f"create {spec.name} {spec.type} family {inet} {text}"


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EntryParts(NamedTuple):
    """One entry's fields, as the kernel takes them; None where the set type has none."""

    address: IpAddress | None = None  # the first field (every hash type)
    protocol: IpProtocol | None = None
    port: int | None = None
    address2: IpAddress | None = None  # the third field: an address, or a net's (masked) one
    prefix: int | None = None  # hash:ip,port,net: the third field's prefix length
    mark: int | None = None  # skbmark: None, or both set (never 0x0/0x0)
    mask: int | None = None

    def text(self) -> str:
        """The entry in the exact form ``ipset save`` prints it."""
        out = self.key_text()
        if self.mark is not None and self.mask is not None:
            out += f" skbmark {self.mark:#x}"
            if self.mask != FULL_MASK:
                out += f"/{self.mask:#x}"
        return out

    def key_text(self) -> str:
        """The entry without its mark: what a delete names."""
        if self.address is None:  # bitmap:port
            return str(self.port)
        out = str(self.address)
        if self.protocol is not None:
            out += f",{ipset_catalog.protocol_text(self.protocol)}:{self.port}"
        if self.address2 is not None:
            if self.prefix is None:
                out += f",{self.address2}"
            else:
                net = ipaddress.ip_network(f"{self.address2}/{self.prefix}")
                out += f",{ipset_catalog.network_text(net)}"
        return out


def _ip(text: str, family: Family, field: str) -> IpAddress:
    # An address made from the four bytes skips parsing the text a second time: a sync
    # of 500 new Services checks some 3,500 entries. Anything else: the general path
    # says what it is.
    if family is Family.V4 and (packed := packed_ipv4(text)) is not None:
        return ipaddress.IPv4Address(packed)
    try:
        addr = ip_address(text)
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


def _proto_port(text: str) -> tuple[IpProtocol, int]:
    proto, sep, port = text.partition(":")
    protocol = _PROTOCOLS.get(proto.lower())
    if not sep or protocol is None:
        raise InvalidValueError("ipset entry protocol:port", text, "expected tcp|udp|sctp:PORT")
    return protocol, _port(port)


FULL_MASK = 0xFFFFFFFF
_MARK_WORD = " skbmark"


def _hex32(text: str, field: str) -> int:
    # ipset reads "0x%x": the prefix is required, the digits are hex of either case.
    digits = text[2:] if text.startswith("0x") else ""
    if not digits or len(digits) > 8 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise InvalidValueError(field, text, "expected 0x and 1-8 hex digits")
    return int(digits, 16)


def _skbmark(text: str) -> tuple[int | None, int | None]:
    """``0xM`` or ``0xM/0xMASK`` as (mark, mask); (None, None) for 0x0/0x0 (no mark)."""
    mark_text, sep, mask_text = text.strip().partition("/")
    mark = _hex32(mark_text, "ipset entry skbmark")
    mask = _hex32(mask_text, "ipset entry skbmark mask") if sep else FULL_MASK
    if mark == 0 and mask == 0:
        return None, None
    return mark, mask


_ARITY = {HASH_IP: 1, HASH_IP_PORT: 2, HASH_IP_PORT_IP: 3, HASH_IP_PORT_NET: 3}


def parse_entry(kind: str, family: Family, entry: str) -> EntryParts:
    """``entry`` of a set of type ``kind`` taken apart and checked, or InvalidValueError.

    The one parser of entries: the ``ipset restore`` path writes ``.text()``, the netlink
    path encodes the parts, so the two cannot disagree on what an entry means. A mark is
    taken whatever the set; whether the set can hold one is :func:`check_mark`'s question.
    """
    key, sep, mark_text = entry.strip().partition(_MARK_WORD)
    if sep and mark_text[:1].strip():  # "skbmarkX": not the option
        key, sep = entry, ""
    parts = _parse_key(kind, family, key)
    if sep:
        mark, mask = _skbmark(mark_text)
        parts = parts._replace(mark=mark, mask=mask)
    return parts


def check_mark(parts: EntryParts, name: str, skbinfo: bool) -> EntryParts:
    """``parts``, or InvalidValueError if it has a mark and set ``name`` has no skbinfo
    (the kernel would refuse it, after applying the entries before it)."""
    if parts.mark is not None and not skbinfo:
        raise InvalidValueError(
            "ipset entry skbmark", parts.text(), f"set {name} was created without skbinfo"
        )
    return parts


def _parse_key(kind: str, family: Family, entry: str) -> EntryParts:
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
