"""IPVS generic netlink: message encoding, decoding and a batching asyncio socket.

Why not pyroute2's ``IPVS`` socket: it sends one request and waits for its
answer, and encoding one message through its ``ipvsmsg`` class costs ~150 us.
A resync of thousands of services needs both to be cheap. The layouts here are
the kernel's (include/uapi/linux/ip_vs.h) and the same as pyroute2's
``pyroute2.netlink.generic.ipvs.ipvsmsg``; the contract suite decodes our
messages with that class (and ours with it) to keep the two honest.

Batching: the kernel's netlink input (``netlink_rcv_skb``) runs every message
of one ``sendmsg`` in order, in the sender's context, and answers a message
only if it asked for an ACK or failed. So a batch goes out as one buffer in
which only the last message asks for an ACK: when that ACK arrives, every
error of the batch has already been queued before it. Success costs no reply.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterable, Sequence

from ipvsproxy.dataplane.netlink import (
    BE16,
    NETLINK_GENERIC,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    RECV_SIZE,
    SNDBUF,
    U16,
    U32,
    Message,
    attrs,
    error_code,
    frame,
    nla,
    open_socket,
    receive,
    send,
    split,
    u16,
    u32,
    u64,
)

# generic netlink's controller
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2

# IPVS commands
GENL_NAME = "IPVS"
GENL_VERSION = 1
CMD_NEW_SERVICE = 1
CMD_SET_SERVICE = 2
CMD_DEL_SERVICE = 3
CMD_GET_SERVICE = 4
CMD_NEW_DEST = 5
CMD_SET_DEST = 6
CMD_DEL_DEST = 7
CMD_GET_DEST = 8
CMD_SET_CONFIG = 12
CMD_GET_CONFIG = 13

CMD_ATTR_SERVICE = 1
CMD_ATTR_DEST = 2
CMD_ATTR_TIMEOUT_TCP = 4
CMD_ATTR_TIMEOUT_TCP_FIN = 5
CMD_ATTR_TIMEOUT_UDP = 6

SVC_AF = 1
SVC_PROTOCOL = 2
SVC_ADDR = 3
SVC_PORT = 4
SVC_FWMARK = 5
SVC_SCHED_NAME = 6
SVC_FLAGS = 7
SVC_TIMEOUT = 8
SVC_NETMASK = 9
SVC_STATS = 10
SVC_STATS64 = 12

DEST_ADDR = 1
DEST_PORT = 2
DEST_FWD_METHOD = 3
DEST_WEIGHT = 4
DEST_U_THRESH = 5
DEST_L_THRESH = 6
DEST_ACTIVE_CONNS = 7
DEST_INACT_CONNS = 8
DEST_ADDR_FAMILY = 11

STATS_CONNS = 1
STATS_INPKTS = 2
STATS_OUTPKTS = 3
STATS_INBYTES = 4
STATS_OUTBYTES = 5

FWD_MASQ = 0  # IP_VS_CONN_F_MASQ
FWD_MASK = 0x7

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6

_GENLHDR = struct.Struct("=BBH")

# Batches: bounded so that even if every op fails, its error ACKs fit in the
# receive buffer (an error ACK skb costs well under 2 KiB of it).
MAX_BATCH_MESSAGES = 1024
MAX_BATCH_BYTES = SNDBUF // 2  # the send buffer holds two batches
# Dumps in flight at once: each answer skb may take ~33 KiB of the receive buffer.
MAX_DUMPS_IN_FLIGHT = 128


# ------------------------------------------------------------------ encoding


def pack_addr(address: str, family: int) -> bytes:
    return socket.inet_pton(family, address)


def service_key_attrs(family: int, protocol: int, address: str, port: int) -> bytes:
    return (
        nla(SVC_AF, U16.pack(family))
        + nla(SVC_PROTOCOL, U16.pack(protocol))
        + nla(SVC_ADDR, pack_addr(address, family))
        + nla(SVC_PORT, BE16.pack(port))
    )


def fwmark_key_attrs(family: int, mark: int) -> bytes:
    """A firewall-mark service's key: the kernel finds it by (af, mark) alone and
    ignores protocol, address and port when FWMARK is present, so none is sent."""
    return nla(SVC_AF, U16.pack(family)) + nla(SVC_FWMARK, U32.pack(mark))


def service_settings(family: int, sched: str, flags: int, timeout: int) -> bytes:
    """What a full service entry adds to its key (NEW and SET need all four)."""
    # The kernel reads the netmask raw: for IPv4 a be32 mask, for IPv6 a prefix
    # length in host order (pyroute2 encodes it as an IPv4 address: wrong byte
    # order on little-endian hosts, and omitted altogether for IPv6 services).
    # Firewall-mark services need it just the same (persistence masks the client).
    netmask = b"\xff\xff\xff\xff" if family == AF_INET else U32.pack(128)
    return (
        nla(SVC_SCHED_NAME, sched.encode() + b"\0")
        + nla(SVC_FLAGS, struct.pack("=II", flags, 0xFFFFFFFF))
        + nla(SVC_TIMEOUT, U32.pack(timeout))
        + nla(SVC_NETMASK, netmask)
    )


def dest_attrs(family: int, address: str, port: int, weight: int | None) -> bytes:
    attrs = nla(DEST_ADDR, pack_addr(address, family)) + nla(DEST_PORT, BE16.pack(port))
    if weight is not None:  # a full entry: the kernel wants all four
        attrs += (
            nla(DEST_FWD_METHOD, U32.pack(FWD_MASQ))
            + nla(DEST_WEIGHT, U32.pack(weight))
            + nla(DEST_U_THRESH, U32.pack(0))
            + nla(DEST_L_THRESH, U32.pack(0))
        )
    return attrs + nla(DEST_ADDR_FAMILY, U16.pack(family))


def genl(cmd: int, attrs: bytes) -> bytes:
    """A generic netlink payload (no nlmsghdr yet: the socket adds it with a sequence)."""
    return _GENLHDR.pack(cmd, GENL_VERSION, 0) + attrs


def service_message(cmd: int, svc_attrs: bytes) -> bytes:
    return genl(cmd, nla(CMD_ATTR_SERVICE, svc_attrs))


def dest_message(cmd: int, svc_key: bytes, dst: bytes) -> bytes:
    return genl(cmd, nla(CMD_ATTR_SERVICE, svc_key) + nla(CMD_ATTR_DEST, dst))


def config_message(tcp: int, tcpfin: int, udp: int) -> bytes:
    # The kernel starts from the current timeouts and changes only those sent
    # (and only when non-zero), which is ipvsadm --set's "0 = unchanged".
    attrs = b""
    for kind, value in (
        (CMD_ATTR_TIMEOUT_TCP, tcp),
        (CMD_ATTR_TIMEOUT_TCP_FIN, tcpfin),
        (CMD_ATTR_TIMEOUT_UDP, udp),
    ):
        if value:
            attrs += nla(kind, U32.pack(value))
    return genl(CMD_SET_CONFIG, attrs)


# ------------------------------------------------------------------ decoding


def genl_attrs(message: bytes, wanted: frozenset[int] | None = None) -> dict[int, bytes]:
    """Top-level attributes of one generic netlink message (nlmsghdr included)."""
    return attrs(message, NLMSGHDR.size + _GENLHDR.size, None, wanted)


def unpack_addr(raw: bytes, family: int) -> str:
    size = 4 if family == AF_INET else 16
    return socket.inet_ntop(family, raw[:size])


def flags_of(raw: bytes) -> int:
    return int(U32.unpack_from(raw)[0])


def stats_of(svc: dict[int, bytes]) -> tuple[int, int, int, int, int]:
    """conns, inpkts, outpkts, inbytes, outbytes; 64-bit counters when the kernel has them."""
    if SVC_STATS64 in svc:
        s = attrs(svc[SVC_STATS64])
        get = u64
    else:
        s = attrs(svc.get(SVC_STATS, b""))
        get = u32
    inbytes = s.get(STATS_INBYTES)
    outbytes = s.get(STATS_OUTBYTES)
    return (
        get(s[STATS_CONNS]) if STATS_CONNS in s else 0,
        get(s[STATS_INPKTS]) if STATS_INPKTS in s else 0,
        get(s[STATS_OUTPKTS]) if STATS_OUTPKTS in s else 0,
        u64(inbytes) if inbytes else 0,  # 64-bit in both nests
        u64(outbytes) if outbytes else 0,
    )


class GenlSocket:
    """A non-blocking generic netlink socket driven by the running asyncio loop.

    The socket lives in the network namespace of the thread that creates it.
    """

    def __init__(self) -> None:
        sock = open_socket(NETLINK_GENERIC)
        self.sock = sock
        self._seq = 0
        self.family = 0  # the IPVS family id, set by resolve()

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _frame(self, kind: int, flags: int, seq: int, payload: bytes) -> bytes:
        return frame(kind, flags, seq, payload)

    async def _send(self, buffer: bytes) -> None:
        await send(self.sock, buffer)

    async def _recv(self) -> bytes:
        return await receive(self.sock)

    async def resolve(self, name: str = GENL_NAME) -> int | None:
        """Look up a generic netlink family id; None when the kernel has no such family."""
        payload = _GENLHDR.pack(CTRL_CMD_GETFAMILY, 1, 0) + nla(
            CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0"
        )
        [(code, replies)] = await self.requests([payload], kind=GENL_ID_CTRL, dump=False)
        if code == errno.ENOENT:
            return None
        if code:
            raise OSError(code, f"resolving generic netlink family {name}: {errno.errorcode[code]}")
        return u16(genl_attrs(replies[0].data)[CTRL_ATTR_FAMILY_ID])

    async def execute(self, payloads: Iterable[bytes]) -> list[int]:
        """Run commands in order, in as few sendmsg calls as the limits allow.

        Returns one errno per command (0 = done). Every command is attempted. The
        payloads are taken one batch at a time: a first sync at 1,000 Services encodes
        6,000 commands, and they need not all be in memory at once.
        """
        results: list[int] = []
        batch: list[bytes] = []
        size = 0
        for payload in payloads:
            length = len(payload) + NLMSGHDR.size
            if batch and (len(batch) == MAX_BATCH_MESSAGES or size + length > MAX_BATCH_BYTES):
                results += await self._execute_batch(batch)
                batch, size = [], 0
            batch.append(payload)
            size += length
        if batch:
            results += await self._execute_batch(batch)
        return results

    async def _execute_batch(self, payloads: Sequence[bytes]) -> list[int]:
        """Send ``payloads`` in one sendmsg; the errno of each."""
        count = len(payloads)
        results = [0] * count
        first = self._next_seq()
        parts = []
        for i, payload in enumerate(payloads):
            seq = first if i == 0 else self._next_seq()
            flags = NLM_F_REQUEST | (NLM_F_ACK if i == count - 1 else 0)
            parts.append(self._frame(self.family, flags, seq, payload))
        last = self._seq
        index = {(first + k) & 0xFFFFFFFF or 1: k for k in range(count)}
        # Sequence numbers of this batch are contiguous unless they wrapped; map them.
        if len(index) != count:  # pragma: no cover - wraps once per 4G messages
            raise RuntimeError("netlink sequence wrapped inside a batch")
        await self._send(b"".join(parts))
        while True:
            try:
                datagram = await self._recv()
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                # Some error ACKs were dropped: we no longer know which ops failed.
                # Report the whole batch as failed; a re-read of the kernel heals it.
                await self._drain()
                return [code or errno.ENOBUFS for code in results]
            for message in split(datagram):
                if message.kind != NLMSG_ERROR or message.seq not in index:
                    continue  # a leftover of an earlier, abandoned exchange
                code = error_code(message)
                if code:
                    results[index[message.seq]] = code
                if message.seq == last:
                    return results

    async def _drain(self) -> None:
        while True:
            try:
                self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return
            except OSError:
                continue

    async def requests(
        self, payloads: Sequence[bytes], *, kind: int | None = None, dump: bool = True
    ) -> list[tuple[int, list[Message]]]:
        """Send get/dump requests, pipelined, and collect each one's replies.

        Returns (errno, reply messages) per request. The kernel runs one dump per
        socket at a time; a dump whose answer fits one buffer is finished before
        the next message is read, and a longer one makes the following requests
        fail with EBUSY: those are sent again afterwards, one at a time.
        """
        kind = self.family if kind is None else kind
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        results: list[tuple[int, list[Message]]] = [(0, []) for _ in payloads]
        pending = list(range(len(payloads)))
        in_flight = MAX_DUMPS_IN_FLIGHT
        while pending:
            busy: list[int] = []
            for chunk_start in range(0, len(pending), in_flight):
                chunk = pending[chunk_start : chunk_start + in_flight]
                by_seq: dict[int, int] = {}
                parts = []
                for i in chunk:
                    seq = self._next_seq()
                    by_seq[seq] = i
                    parts.append(self._frame(kind, flags, seq, payloads[i]))
                await self._send(b"".join(parts))
                while by_seq:
                    for message in split(await self._recv()):
                        i = by_seq.get(message.seq, -1)
                        if i < 0:
                            continue
                        if message.kind == NLMSG_DONE:
                            del by_seq[message.seq]
                        elif message.kind == NLMSG_ERROR:
                            code = error_code(message)
                            del by_seq[message.seq]
                            if code == errno.EBUSY and dump:
                                busy.append(i)
                            elif code:
                                results[i] = (code, [])
                        else:
                            results[i][1].append(message)
            pending = sorted(busy)
            in_flight = 1  # the long dumps again, one at a time: no more EBUSY
            for i in pending:
                results[i] = (0, [])
        return results
