"""ipset over nfnetlink (NFNL_SUBSYS_IPSET): add and delete entries with no process.

Why: every start of the ``ipset`` program costs a few ms on a host and 0.5-1 s under
user-mode-linux, and one EndpointSlice change needs one or two small updates. Here
an update is one ``sendmsg`` on a netlink socket of the calling thread's network
namespace.

The messages are the ones ``ipset restore`` itself sends (the kernel's
include/uapi/linux/netfilter/ipset/ip_set.h, net/netfilter/ipset/ip_set_core.c):
per set, an IPSET_CMD_DEL and then an IPSET_CMD_ADD, each carrying its entries as
IPSET_ATTR_DATA nests inside one IPSET_ATTR_ADT nest. Without NLM_F_EXCL the kernel
applies ``-exist`` (``flag_exist``): adding a present entry or deleting a missing
one is not an error. It works through one message's entries in order and stops at
the first failure, as ``ipset restore`` stops at its first failing line. All
messages go out in one buffer; the kernel's netlink input runs them in order, in
the sender's context, and answers each (every one asks for an ACK) before
``sendmsg`` returns.

Entries arrive here already parsed and checked (``ipset_specs.parse_entry``). An add
carries an entry's firewall mark as IPSET_ATTR_SKBMARK (a u64 in network byte order,
``mark << 32 | mask``, as ipset's own ``skbmark`` option sends it); without NLM_F_EXCL an
add of a present key overwrites its mark. A delete carries the key alone: the kernel
would refuse a mark on a set without skbinfo even for a delete, and ignores it otherwise.

Which sets exist, of what type and family and with which create options (maxelem, the
bitmap's range, extensions such as comment and skbinfo), comes from one header-only
IPSET_CMD_LIST dump (``ipset list -t``, no entries), again with no process.

Sets are created as ``ipset create -exist`` creates them (IPSET_CMD_CREATE without
NLM_F_EXCL): creating a set that exists with the same type and options is no error, one
with another type or other options is EEXIST. The message carries the set type's
revision, which decides what the set can do and how it lists (a hash set of the type's
newest revision lists ``bucketsize`` and ``initval``); the tool asks the kernel which
revisions it supports (IPSET_CMD_TYPE) and takes the highest it knows itself, and so
does :func:`create` (``ipset_specs.create_revision``), asking once per type and family.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from ipvsproxy.core.ipset_catalog import BITMAP_PORT, IpsetSpec
from ipvsproxy.core.model import Family, IpProtocol
from ipvsproxy.dataplane.errors import DataplaneError
from ipvsproxy.dataplane.ipset_specs import (
    KUBE_PROXY_HASHSIZE,
    EntryParts,
    IpAddress,
    SetOptions,
    create_revision,
)
from ipvsproxy.dataplane.netlink import (
    NETLINK_NETFILTER,
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLM_F_CREATE,
    NLMSGHDR,
    DumpError,
    Message,
    attrs,
    dump,
    each_attr,
    nla,
    payload_checksum,
    request_all,
)

NFNL_SUBSYS_IPSET = 6
NFNETLINK_V0 = 0
NFPROTO_UNSPEC = 0
NFPROTO_IPV4 = 2
NFPROTO_IPV6 = 10
# Every kernel since 3.x takes protocol 6 (newer ones take 6..7, IPSET_PROTOCOL_MIN = 6).
PROTOCOL = 6

CMD_CREATE = 2
CMD_LIST = 7
CMD_ADD = 9
CMD_DEL = 10
CMD_TYPE = 13

# command level attributes
ATTR_PROTOCOL = 1
ATTR_SETNAME = 2
ATTR_TYPENAME = 3
ATTR_REVISION = 4
ATTR_FAMILY = 5
ATTR_FLAGS = 6
ATTR_DATA = 7
ATTR_ADT = 8
ATTR_LINENO = 9
ATTR_REVISION_MIN = 10
# entry attributes (inside IPSET_ATTR_DATA)
ATTR_IP = 1
ATTR_PORT = 4
ATTR_PORT_TO = 5
ATTR_TIMEOUT = 6
ATTR_PROTO = 7
ATTR_CADT_FLAGS = 8  # inside a set's IPSET_ATTR_DATA (create, list): its extensions
ATTR_HASHSIZE = 18
ATTR_MAXELEM = 19
ATTR_IP2 = 20
ATTR_CIDR2 = 21
ATTR_SKBMARK = 27
ATTR_IPADDR_IPV4 = 1
ATTR_IPADDR_IPV6 = 2
_PROTOCOLS = {protocol.number: protocol for protocol in IpProtocol}
# IPSET_ATTR_FLAGS of a list: headers only, no entries.
FLAG_LIST_HEADER = 1 << 2
# IPSET_ATTR_CADT_FLAGS of a set created with these extensions.
FLAG_WITH_COUNTERS = 1 << 3
FLAG_WITH_COMMENT = 1 << 4
FLAG_WITH_FORCEADD = 1 << 5
FLAG_WITH_SKBINFO = 1 << 6

# ipset's own error numbers (answered as negative errnos)
_ERRORS = {
    4097: "protocol error",
    4098: "set type not supported",
    4102: "type or family mismatch",
    4103: "element exists or is missing",
    4104: "invalid CIDR",
    4106: "invalid family",
    4109: "invalid IPv4 address",
    4110: "invalid IPv6 address",
    4114: "set was created without skbinfo",
    4352: "hash is full / out of bitmap range",
}

# What an errno means for one command.
_COMMAND_ERRORS = {
    ("create", errno.EEXIST): "a set of this name exists with another type or other options",
}

_NFGENMSG = struct.Struct("=BBH")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")

# An ADT nest's length is a u16: keep each message's entries well below 64 KiB.
MAX_ADT_BYTES = 60_000
# Requests per sendmsg: their answers (header replies, errors, the last one's ACK; at
# worst an answer for each) must fit in the receive buffer, and the buffer in the send
# buffer (without CAP_NET_ADMIN the buffers stop at net.core.[rw]mem_max, 208 KiB by
# default).
MAX_IN_FLIGHT = 16
MAX_SEND_BYTES = 128 * 1024


class IpsetNetlinkError(DataplaneError):
    """The kernel refused an ipset request; ``code`` is the (positive) error number."""

    def __init__(self, command: str, name: str, code: int) -> None:
        self.command = command
        self.name = name
        self.code = code
        text = _COMMAND_ERRORS.get((command, code)) or _ERRORS.get(code) or os.strerror(code)
        super().__init__(f"ipset {command} {name}: {text} ({code})")


# ------------------------------------------------------------------ encoding


def _ip(kind: int, address: IpAddress) -> bytes:
    inner = ATTR_IPADDR_IPV4 if address.version == 4 else ATTR_IPADDR_IPV6
    return nla(kind | NLA_F_NESTED, nla(inner | NLA_F_NET_BYTEORDER, address.packed))


def entry_data(parts: EntryParts, with_mark: bool = True) -> bytes:
    """One entry as an IPSET_ATTR_DATA nest (the attributes its set type reads); its
    mark too unless ``with_mark`` is False (deletes)."""
    out = b""
    if parts.address is not None:
        out += _ip(ATTR_IP, parts.address)
    if parts.port is not None:
        out += nla(ATTR_PORT | NLA_F_NET_BYTEORDER, _BE16.pack(parts.port))
    if parts.protocol is not None:
        out += nla(ATTR_PROTO, bytes([parts.protocol.number]))
    if parts.address2 is not None:
        out += _ip(ATTR_IP2, parts.address2)
    if parts.prefix is not None:
        out += nla(ATTR_CIDR2, bytes([parts.prefix]))
    if with_mark and parts.mark is not None and parts.mask is not None:
        skbmark = _BE64.pack(parts.mark << 32 | parts.mask)
        out += nla(ATTR_SKBMARK | NLA_F_NET_BYTEORDER, skbmark)
    return nla(ATTR_DATA | NLA_F_NESTED, out)


def _command_head(nfgen_family: int = NFPROTO_UNSPEC) -> bytes:
    """The nfgenmsg and IPSET_ATTR_PROTOCOL every ipset command starts with."""
    return _NFGENMSG.pack(nfgen_family, NFNETLINK_V0, 0) + nla(ATTR_PROTOCOL, bytes([PROTOCOL]))


def _head(name: str) -> bytes:
    # nfgen_family is not read by add/del/header; the set decides the family.
    return _command_head() + nla(ATTR_SETNAME, name.encode() + b"\0")


def adt_payloads(name: str, entries: Iterable[EntryParts], with_mark: bool = True) -> list[bytes]:
    """Add or delete payloads for ``entries`` of set ``name``, as few as the nest allows.

    LINENO must accompany an ADT nest; entries carry no line number of their own, so a
    failure comes back as a plain error ACK (not ipset's rewritten "line N" message).
    """
    head = _head(name) + nla(ATTR_LINENO, _BE32.pack(0))
    payloads: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for parts in entries:
        data = entry_data(parts, with_mark)
        if chunk and size + len(data) > MAX_ADT_BYTES:
            payloads.append(head + nla(ATTR_ADT | NLA_F_NESTED, b"".join(chunk)))
            chunk, size = [], 0
        chunk.append(data)
        size += len(data)
    if chunk:
        payloads.append(head + nla(ATTR_ADT | NLA_F_NESTED, b"".join(chunk)))
    return payloads


# -------------------------------------------------------------------- socket


class Request(NamedTuple):
    command: int
    name: str  # the set, for error messages
    payload: bytes  # nfgenmsg and attributes


async def exchange(requests: Sequence[Request], flags: int = 0) -> list[tuple[int, list[Message]]]:
    """Send ``requests`` in order and return (errno, replies) for each; 0 = done.

    Every request is attempted, each with NLM_F_* ``flags`` added. The socket is opened
    for the call, in the network namespace of the calling thread, and closed after it.
    """
    return await request_all(
        NETLINK_NETFILTER,
        [((NFNL_SUBSYS_IPSET << 8) | r.command, r.payload) for r in requests],
        flags=[flags] * len(requests),
        in_flight=MAX_IN_FLIGHT,
        max_bytes=MAX_SEND_BYTES,
    )


# ---------------------------------------------------------------- operations


class SetChange(NamedTuple):
    name: str
    delete: Iterable[EntryParts]
    add: Iterable[EntryParts]


async def apply(changes: Sequence[SetChange]) -> None:
    """Per set, in order: delete, then add (``-exist``). IpsetNetlinkError on the first
    failure (ENOENT: no such set); the other requests were still attempted."""
    requests: list[Request] = []
    for change in changes:
        for cmd, entries in ((CMD_DEL, change.delete), (CMD_ADD, change.add)):
            payloads = adt_payloads(change.name, entries, with_mark=cmd == CMD_ADD)
            requests += [Request(cmd, change.name, p) for p in payloads]
    for request, (code, _) in zip(requests, await exchange(requests), strict=True):
        if code:
            verb = "add" if request.command == CMD_ADD else "del"
            raise IpsetNetlinkError(verb, request.name, code)


# ------------------------------------------------------------ creating sets


# The nfgen_family ``ipset create`` and its type query send (AF_INET); the kernel takes
# the set's family from IPSET_ATTR_FAMILY.
_TOOL_NFGEN_FAMILY = NFPROTO_IPV4


def nfproto(spec: IpsetSpec) -> int:
    """The family a set is created with: a bitmap:port set has none (its entries are ports;
    ``ipset create`` sends NFPROTO_UNSPEC for it)."""
    if spec.type == BITMAP_PORT:
        return NFPROTO_UNSPEC
    return NFPROTO_IPV6 if spec.family is Family.V6 else NFPROTO_IPV4


def type_payload(typename: str, family: int) -> bytes:
    """IPSET_CMD_TYPE: which revisions of ``typename`` the kernel supports for ``family``."""
    return (
        _command_head(_TOOL_NFGEN_FAMILY)
        + nla(ATTR_TYPENAME, typename.encode() + b"\0")
        + nla(ATTR_FAMILY, bytes([family]))
    )


def create_payload(spec: IpsetSpec, revision: int, options: SetOptions) -> bytes:
    """IPSET_CMD_CREATE of ``spec``'s set with ``options``, attribute for attribute what
    ``ipset create`` sends for ``create_line(spec, options)`` (but PROTOCOL: the tool
    negotiates 7, which changes no set): the type-specific options in one IPSET_ATTR_DATA
    nest, in attribute order, each u16/u32 in network byte order."""
    data = b""
    if options.port_range is not None:
        low, high = options.port_range
        data += nla(ATTR_PORT | NLA_F_NET_BYTEORDER, _BE16.pack(low))
        data += nla(ATTR_PORT_TO | NLA_F_NET_BYTEORDER, _BE16.pack(high))
    if options.timeout is not None:
        data += nla(ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, _BE32.pack(options.timeout))
    flags = sum(
        flag
        for flag, wanted in (
            (FLAG_WITH_COUNTERS, options.counters),
            (FLAG_WITH_COMMENT, options.comment),
            (FLAG_WITH_FORCEADD, options.forceadd),
            (FLAG_WITH_SKBINFO, options.skbinfo),
        )
        if wanted
    )
    if flags:
        data += nla(ATTR_CADT_FLAGS | NLA_F_NET_BYTEORDER, _BE32.pack(flags))
    if options.maxelem is not None:  # create_line writes kube-proxy's hashsize with it
        data += nla(ATTR_HASHSIZE | NLA_F_NET_BYTEORDER, _BE32.pack(KUBE_PROXY_HASHSIZE))
        data += nla(ATTR_MAXELEM | NLA_F_NET_BYTEORDER, _BE32.pack(options.maxelem))
    return (
        _command_head(_TOOL_NFGEN_FAMILY)
        + nla(ATTR_SETNAME, spec.name.encode() + b"\0")
        + nla(ATTR_TYPENAME, spec.type.encode() + b"\0")
        + nla(ATTR_REVISION, bytes([revision]))
        + nla(ATTR_FAMILY, bytes([nfproto(spec)]))
        + nla(ATTR_DATA | NLA_F_NESTED, data)
    )


def type_revisions(replies: Sequence[Message]) -> tuple[int, int] | None:
    """(lowest, highest) revision from the kernel's answer to IPSET_CMD_TYPE; a kernel that
    does not say its lowest supports only the highest (as the tool reads it)."""
    for message in replies:
        got = attrs(message.data, NLMSGHDR.size + _NFGENMSG.size)
        if ATTR_REVISION in got:
            highest = got[ATTR_REVISION][0]
            return got.get(ATTR_REVISION_MIN, bytes([highest]))[0], highest
    return None


# (type, family): the kernel's (lowest, highest) revision. Set types are the kernel's, not
# a network namespace's, and a type module cannot be unloaded while a set of it exists, so
# one answer holds for the process.
_revisions: dict[tuple[str, int], tuple[int, int]] = {}


def forget_revisions() -> None:
    """Ask the kernel again next time (tests and benchmarks: a cold start)."""
    _revisions.clear()


async def kernel_revisions(
    kinds: Sequence[tuple[str, int]],
) -> dict[tuple[str, int], tuple[int, int]]:
    """The kernel's (lowest, highest) revision of each (type, family), asked once per
    process; IpsetNetlinkError if the kernel has no such type (its module missing)."""
    unknown = sorted(set(kinds) - _revisions.keys())
    requests = [Request(CMD_TYPE, name, type_payload(name, family)) for name, family in unknown]
    answers = await exchange(requests)
    for kind, (code, replies) in zip(unknown, answers, strict=True):
        found = type_revisions(replies)
        if code or found is None:
            raise IpsetNetlinkError("type", kind[0], code or errno.EPROTO)
        _revisions[kind] = found
    return {kind: _revisions[kind] for kind in kinds}


async def create(sets: Sequence[tuple[IpsetSpec, SetOptions]]) -> None:
    """Create each set with its options, as ``ipset create -exist`` would (same revision,
    same attributes): a set that already exists alike is left as it is. Every set is
    attempted; IpsetNetlinkError on the first failure (EEXIST: it exists otherwise)."""
    kinds = [(spec.type, nfproto(spec)) for spec, _ in sets]
    revisions = await kernel_revisions(kinds)
    requests = [
        Request(
            CMD_CREATE,
            spec.name,
            create_payload(spec, create_revision(spec.type, *revisions[kind]), options),
        )
        for (spec, options), kind in zip(sets, kinds, strict=True)
    ]
    # NLM_F_CREATE as the tool sends it; no NLM_F_EXCL: -exist.
    for request, (code, _) in zip(requests, await exchange(requests, NLM_F_CREATE), strict=True):
        if code:
            raise IpsetNetlinkError("create", request.name, code)


class SetHeader(NamedTuple):
    type: str  # "hash:ip,port", ...
    family: int  # NFPROTO_*; NFPROTO_UNSPEC for bitmap:port
    options: SetOptions  # what ``create -exist`` compares (skbinfo: entries may carry a mark)


def _list_payload(flags: int) -> bytes:
    return _command_head() + nla(ATTR_FLAGS | NLA_F_NET_BYTEORDER, _BE32.pack(flags))


async def _list(flags: int, name: str | None = None) -> list[Message]:
    """One IPSET_CMD_LIST dump: every set, or ``name`` only."""
    payload = _list_payload(flags)
    if name is not None:
        payload += nla(ATTR_SETNAME, name.encode() + b"\0")
    try:
        return await dump(NETLINK_NETFILTER, (NFNL_SUBSYS_IPSET << 8) | CMD_LIST, payload)
    except DumpError as err:
        raise IpsetNetlinkError("list", name or "", err.errno or 0) from err


async def list_headers() -> dict[str, SetHeader]:
    """Every set of this network namespace: {name: its header}, from one dump."""
    found: dict[str, SetHeader] = {}
    for message in await _list(FLAG_LIST_HEADER):
        name, header = _header(message)
        if name:
            found[name] = header
    return found


async def list_entries(name: str | None = None) -> dict[str, set[str]]:
    """Every set's entries (or ``name``'s), each as ``ipset save`` prints it, from one dump:
    what ``ipset save`` does, with no process (at 10,000 Services it took 12 s under
    user-mode-linux, mostly starting and parsing)."""
    found: dict[str, set[str]] = {}
    for message in await _list(0, name):
        got = attrs(message.data, NLMSGHDR.size + _NFGENMSG.size, wanted=_LISTED)
        if ATTR_SETNAME not in got:
            continue
        entries = found.setdefault(got[ATTR_SETNAME].rstrip(b"\0").decode(), set())
        for kind, data in each_attr(got.get(ATTR_ADT, b"")):
            if kind == ATTR_DATA:
                entries.add(listed_entry(attrs(data)).text())
    return found


_LISTED = frozenset({ATTR_SETNAME, ATTR_ADT})


def _address(nest: bytes | None) -> IpAddress | None:
    if nest is None:
        return None
    got = attrs(nest)
    if ATTR_IPADDR_IPV4 in got:
        return ipaddress.IPv4Address(got[ATTR_IPADDR_IPV4][:4])
    if ATTR_IPADDR_IPV6 in got:
        return ipaddress.IPv6Address(got[ATTR_IPADDR_IPV6][:16])
    return None


def listed_entry(data: dict[int, bytes]) -> EntryParts:
    """One listed entry (the attributes of its IPSET_ATTR_DATA nest): the reverse of
    ``entry_data``."""
    port = _BE16.unpack(data[ATTR_PORT][:2])[0] if ATTR_PORT in data else None
    protocol = _PROTOCOLS.get(data[ATTR_PROTO][0]) if ATTR_PROTO in data else None
    mark = mask = None
    if ATTR_SKBMARK in data:
        both = _BE64.unpack(data[ATTR_SKBMARK][:8])[0]
        mark, mask = both >> 32, both & 0xFFFFFFFF
    return EntryParts(
        address=_address(data.get(ATTR_IP)),
        protocol=protocol,
        port=port,
        address2=_address(data.get(ATTR_IP2)),
        prefix=data[ATTR_CIDR2][0] if ATTR_CIDR2 in data else None,
        mark=mark,
        mask=mask,
    )


async def checksum() -> int:
    """A CRC-32 of every set with its entries, as the kernel lists them (``ipset list``
    with no process and no decoding): equal while no set, option or entry changes."""
    return payload_checksum(await _list(0))


def _header(message: Message) -> tuple[str, SetHeader]:
    """One listed set's name and header ("" if the message is not one)."""
    got = attrs(message.data, NLMSGHDR.size + _NFGENMSG.size)
    if not {ATTR_SETNAME, ATTR_TYPENAME, ATTR_FAMILY} <= got.keys():
        return "", SetHeader("", NFPROTO_UNSPEC, SetOptions())
    return got[ATTR_SETNAME].rstrip(b"\0").decode(), SetHeader(
        got[ATTR_TYPENAME].rstrip(b"\0").decode(),
        got[ATTR_FAMILY][0],
        _options(attrs(got.get(ATTR_DATA, b""))),
    )


def _options(data: dict[int, bytes]) -> SetOptions:
    """The create options in a listed set's IPSET_ATTR_DATA (all in network byte order)."""

    def be32(kind: int) -> int | None:
        raw = data.get(kind)
        return None if raw is None else int(_BE32.unpack(raw[:4])[0])

    flags = be32(ATTR_CADT_FLAGS) or 0
    port_range = None
    if ATTR_PORT in data and ATTR_PORT_TO in data:
        port_range = (_BE16.unpack(data[ATTR_PORT][:2])[0], _BE16.unpack(data[ATTR_PORT_TO][:2])[0])
    return SetOptions(
        maxelem=be32(ATTR_MAXELEM),
        port_range=port_range,
        timeout=be32(ATTR_TIMEOUT),
        comment=bool(flags & FLAG_WITH_COMMENT),
        counters=bool(flags & FLAG_WITH_COUNTERS),
        skbinfo=bool(flags & FLAG_WITH_SKBINFO),
        forceadd=bool(flags & FLAG_WITH_FORCEADD),
    )
