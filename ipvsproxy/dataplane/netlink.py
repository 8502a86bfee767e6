"""Netlink plumbing shared by IPVS (generic netlink), ipset (nfnetlink) and addresses
(rtnetlink): message framing, attribute parsing, a non-blocking socket, pipelined requests.

Why not pyroute2's sockets: they send one request and wait for its answer, and encode
each message through a class (~150 us a message). A resync of thousands of entries needs
many requests per ``sendmsg`` and cheap messages; pyroute2 stays for the rest.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

NETLINK_ROUTE = 0
NETLINK_NETFILTER = 12
NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # error ACKs carry only the failed header, not the whole message
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLMSG_ERROR = 2
NLMSG_DONE = 3

NLMSGHDR = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
U16 = struct.Struct("=H")
BE16 = struct.Struct(">H")
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
_I32 = struct.Struct("=i")
NLA_TYPE_MASK = 0x3FFF

RCVBUF = 32 * 1024 * 1024
SNDBUF = 512 * 1024  # two of IPVS's largest batches (ipvs_netlink.MAX_BATCH_BYTES)
RECV_SIZE = 64 * 1024


def nla(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return _NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def attrs(
    data: bytes, start: int = 0, end: int | None = None, wanted: frozenset[int] | None = None
) -> dict[int, bytes]:
    """The attributes in ``data[start:end]`` by type (last one wins); only ``wanted`` if given.

    This loop is most of the cost of a dump, so it copies only what is asked for.
    """
    out: dict[int, bytes] = {}
    end = len(data) if end is None else end
    unpack = _NLA.unpack_from
    pos = start
    while pos + 4 <= end:
        size, kind = unpack(data, pos)
        if size < 4:
            break
        kind &= NLA_TYPE_MASK
        if wanted is None or kind in wanted:
            out[kind] = data[pos + 4 : pos + size]
        pos += (size + 3) & ~3
    return out


def each_attr(data: bytes, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """Every attribute in ``data[start:]``, in order (a nest's repeated ones included)."""
    unpack = _NLA.unpack_from
    pos, end = start, len(data)
    while pos + 4 <= end:
        size, kind = unpack(data, pos)
        if size < 4:
            break
        yield kind & NLA_TYPE_MASK, data[pos + 4 : pos + size]
        pos += (size + 3) & ~3


def u16(raw: bytes) -> int:
    return int(U16.unpack(raw)[0])


def be16(raw: bytes) -> int:
    return int(BE16.unpack(raw)[0])


def u32(raw: bytes) -> int:
    return int(U32.unpack(raw)[0])


def u64(raw: bytes) -> int:
    return int(U64.unpack(raw)[0])


class Message(NamedTuple):
    kind: int
    flags: int
    seq: int
    data: bytes  # the whole message, header included


def split(datagram: bytes) -> Iterator[Message]:
    pos = 0
    while pos + NLMSGHDR.size <= len(datagram):
        length, kind, flags, seq, _pid = NLMSGHDR.unpack_from(datagram, pos)
        if length < NLMSGHDR.size:
            break
        yield Message(kind, flags, seq, datagram[pos : pos + length])
        pos += (length + 3) & ~3


def error_code(message: Message) -> int:
    """The positive errno of an NLMSG_ERROR (0 for an ACK)."""
    return -int(_I32.unpack_from(message.data, NLMSGHDR.size)[0])


# -------------------------------------------------------------------- socket


def open_socket(protocol: int) -> socket.socket:
    """A non-blocking netlink socket of ``protocol`` in the calling thread's namespace,
    with buffers large enough for a batch's replies and only error headers echoed."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, protocol)
    try:
        sock.bind((0, 0))
        for force, plain, size in (
            (SO_RCVBUFFORCE, socket.SO_RCVBUF, RCVBUF),
            (SO_SNDBUFFORCE, socket.SO_SNDBUF, SNDBUF),
        ):
            try:  # FORCE (CAP_NET_ADMIN) may exceed net.core.rmem_max
                sock.setsockopt(socket.SOL_SOCKET, force, size)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def frame(kind: int, flags: int, seq: int, payload: bytes) -> bytes:
    """One netlink message: header, payload, padding to 4 bytes."""
    size = NLMSGHDR.size + len(payload)
    return NLMSGHDR.pack(size, kind, flags, seq, 0) + payload + b"\0" * (-size % 4)


async def send(sock: socket.socket, buffer: bytes) -> None:
    try:
        sock.send(buffer)
    except BlockingIOError:
        await asyncio.get_running_loop().sock_sendall(sock, buffer)


async def receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(RECV_SIZE)
    except BlockingIOError:
        return await asyncio.get_running_loop().sock_recv(sock, RECV_SIZE)


async def request_all(
    protocol: int,
    requests: Sequence[tuple[int, bytes]],
    *,
    flags: Sequence[int] | None = None,
    in_flight: int = 16,
    max_bytes: int = 128 * 1024,
) -> list[tuple[int, list[Message]]]:
    """Send (message type, payload) requests in order, several per sendmsg; return
    (errno, replies) per request, 0 = done. Every request is attempted. ``flags`` adds
    NLM_F_* flags per request. The socket is opened for the call, in the calling thread's
    network namespace, and closed after it; the event loop runs other tasks between sends
    (the kernel does a send's work inside sendmsg).

    Only the last request of a sendmsg asks for an ACK. The kernel handles a sendmsg's
    requests in order and answers a failed one whether asked or not, so that ACK means
    every request before it is done, and each failure has come with its errno: one
    receive per sendmsg instead of one per request (each answer is a datagram of its
    own), which is most of the system calls of binding a thousand addresses."""
    results: list[tuple[int, list[Message]]] = [(0, []) for _ in requests]
    if not requests:
        return results
    sock = open_socket(protocol)
    try:
        seq = start = 0
        while start < len(requests):
            by_seq: dict[int, int] = {}
            frames: list[bytes] = []
            size = 0
            for i in range(start, min(start + in_flight, len(requests))):
                kind, payload = requests[i]
                extra = flags[i] if flags is not None else 0
                framed = frame(kind, NLM_F_REQUEST | extra, seq + 1, payload)
                if frames and size + len(framed) > max_bytes:
                    break
                seq += 1
                by_seq[seq] = i
                frames.append(framed)
                size += len(framed)
            start += len(frames)
            frames[-1] = _asking_ack(frames[-1])
            await asyncio.sleep(0)
            await send(sock, b"".join(frames))
            await _answers(sock, by_seq, seq, results)
    finally:
        sock.close()
    return results


def _asking_ack(framed: bytes) -> bytes:
    length, kind, flags, seq, pid = NLMSGHDR.unpack_from(framed)
    return NLMSGHDR.pack(length, kind, flags | NLM_F_ACK, seq, pid) + framed[NLMSGHDR.size :]


async def _answers(
    sock: socket.socket,
    by_seq: Mapping[int, int],
    last: int,
    results: list[tuple[int, list[Message]]],
) -> None:
    """Read one sendmsg's answers into ``results`` until the ACK (or error) of ``last``."""
    while True:
        for message in split(await receive(sock)):
            i = by_seq.get(message.seq, -1)
            if i < 0:
                continue
            if message.kind == NLMSG_ERROR:
                results[i] = (error_code(message), results[i][1])
                if message.seq == last:
                    return
            else:
                results[i][1].append(message)


class DumpError(OSError):
    """A netlink dump the kernel ended with an error (``errno``)."""


async def dump(protocol: int, kind: int, payload: bytes) -> list[Message]:
    """Every message of one NLM_F_DUMP request (its replies up to NLMSG_DONE), from a
    socket opened for the call in the calling thread's network namespace."""
    found: list[Message] = []
    sock = open_socket(protocol)
    try:
        await send(sock, frame(kind, NLM_F_REQUEST | NLM_F_DUMP, 1, payload))
        while True:
            for message in split(await receive(sock)):
                if message.seq != 1:
                    continue
                if message.kind in (NLMSG_DONE, NLMSG_ERROR):
                    # A dump ends in NLMSG_DONE; either carries an errno (0: done).
                    if code := error_code(message):
                        raise DumpError(code, f"netlink dump of message type {kind}")
                    return found
                found.append(message)
    finally:
        sock.close()


def payload_checksum(messages: Sequence[Message], start: int = NLMSGHDR.size) -> int:
    """A CRC-32 of the messages' payloads (from ``start``): the header's port id and
    sequence number differ from one socket to the next, the content does not."""
    crc = 0
    for message in messages:
        crc = zlib.crc32(memoryview(message.data)[start:], crc)
    return crc
