"""nf_tables tables over nfnetlink (NFNL_SUBSYS_NFTABLES): list them, delete them.

The proxy writes no nftables rule of its own. It only removes what kube-proxy's
nftables mode leaves when a node switches from it: the tables ``ip kube-proxy`` and
``ip6 kube-proxy``, which hold everything that mode programs (kube-proxy's own
cleanup deletes exactly those two, pkg/proxy/nftables/cleanup.go). Any other table,
an operator's or another component's, is never named.

Over netlink rather than the ``nft`` tool: no extra program in the image and no
process start. Listing is one NFT_MSG_GETTABLE dump, the ruleset's generation one
NFT_MSG_GETGEN request; deleting is one batch (NFNL_MSG_BATCH_BEGIN, an NFT_MSG_DELTABLE
per table, NFNL_MSG_BATCH_END), which the kernel applies as one transaction. A kernel
without nf_tables (no subsystem to answer the dump) has no tables. A batch without its
end is only checked, then aborted (``batch(commit=False)``): iptables backend detection
asks that way whether the kernel takes iptables-nft's tables at all.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Sequence

from ipvsproxy.dataplane.errors import DataplaneError
from ipvsproxy.dataplane.netlink import (
    NETLINK_NETFILTER,
    NLM_F_ACK,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    NLMSGHDR,
    DumpError,
    attrs,
    dump,
    error_code,
    frame,
    nla,
    open_socket,
    receive,
    request_all,
    send,
    split,
)

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 16
NFNL_MSG_BATCH_END = 17
NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NFT_MSG_DELTABLE = 2
NFT_MSG_GETGEN = 16
NFTA_TABLE_NAME = 1
NFTA_GEN_ID = 1

FAMILIES = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}
_FAMILY_NAMES = {number: name for name, number in FAMILIES.items()}
# Answers of a kernel without nf_tables (nfnetlink finds no subsystem 10).
_NO_NF_TABLES = {errno.EINVAL, errno.EOPNOTSUPP, errno.EPROTONOSUPPORT, errno.ENOENT}

_NFGENMSG = struct.Struct("=BB2s")  # family, version, resource id (big-endian u16)

# kube-proxy's nftables mode: everything it programs lives in these (kubeProxyTable).
KUBE_PROXY_TABLES = (("ip", "kube-proxy"), ("ip6", "kube-proxy"))

Table = tuple[str, str]  # (family, name), as nft names them: ("ip6", "kube-proxy")


class NftablesError(DataplaneError):
    """The kernel refused an nf_tables request."""


async def generation() -> int:
    """The nf_tables ruleset's generation id: every commit of any table of any family
    (iptables-nft's included) changes it. One small request (NFT_MSG_GETGEN)."""
    request = (nft_kind(NFT_MSG_GETGEN), nfgen_head(0))
    [(code, replies)] = await request_all(NETLINK_NETFILTER, [request])
    if code:
        raise NftablesError(f"nf_tables generation: errno {code}")
    for message in replies:
        found = attrs(message.data, NLMSGHDR.size + _NFGENMSG.size)
        if NFTA_GEN_ID in found:
            return int.from_bytes(found[NFTA_GEN_ID][:4], "big")
    raise NftablesError("nf_tables generation: no NFTA_GEN_ID in the answer")


def nft_kind(message: int) -> int:
    return (NFNL_SUBSYS_NFTABLES << 8) | message


def nfgen_head(family: int, res_id: int = 0) -> bytes:
    return _NFGENMSG.pack(family, 0, res_id.to_bytes(2, "big"))


def _table_of(data: bytes) -> Table | None:
    family = data[NLMSGHDR.size]
    name = attrs(data, NLMSGHDR.size + _NFGENMSG.size).get(NFTA_TABLE_NAME)
    if name is None or family not in _FAMILY_NAMES:
        return None
    return _FAMILY_NAMES[family], name.rstrip(b"\0").decode()


class NetlinkNftables:
    """The real Nftables of the calling thread's network namespace."""

    async def tables(self) -> set[Table]:
        try:
            messages = await dump(NETLINK_NETFILTER, nft_kind(NFT_MSG_GETTABLE), nfgen_head(0))
        except DumpError as err:
            if err.errno in _NO_NF_TABLES:
                return set()
            raise NftablesError(f"listing nf_tables tables: errno {err.errno}") from err
        found = (_table_of(m.data) for m in messages if m.kind == nft_kind(NFT_MSG_NEWTABLE))
        return {table for table in found if table is not None}

    async def delete_tables(self, tables: Sequence[Table]) -> None:
        """Delete ``tables`` in one transaction; a missing one is fine."""
        present = await self.tables()
        doomed = [t for t in tables if t in present]
        if not doomed:
            return
        requests = [
            (
                nft_kind(NFT_MSG_DELTABLE),
                0,
                nfgen_head(FAMILIES[family]) + nla(NFTA_TABLE_NAME, name.encode() + b"\0"),
            )
            for family, name in doomed
        ]
        for table, code in zip(doomed, await batch(requests, commit=True), strict=True):
            if code and code != errno.ENOENT:
                raise NftablesError(f"deleting nf_tables table {' '.join(table)}: errno {code}")


async def batch(requests: Sequence[tuple[int, int, bytes]], *, commit: bool) -> list[int]:
    """Send (message type, extra NLM_F_* flags, payload) requests as one transaction; the
    errno of each (0: accepted). Without ``commit`` the batch has no end, so the kernel
    checks every request and then aborts the transaction (what ``nft --check`` does):
    nothing is committed. NftablesError if the batch itself is refused."""
    # A batch's begin and end name the subsystem whose transaction it is.
    subsystem = nfgen_head(0, NFNL_SUBSYS_NFTABLES)
    messages = [frame(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, subsystem)]
    for seq, (kind, flags, payload) in enumerate(requests, start=2):
        messages.append(frame(kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, payload))
    end = len(requests) + 2
    if commit:
        messages.append(frame(NFNL_MSG_BATCH_END, NLM_F_REQUEST, end, subsystem))
    codes = [0] * len(requests)
    waiting = set(range(2, end))
    sock = open_socket(NETLINK_NETFILTER)
    try:
        await send(sock, b"".join(messages))
        while waiting:
            for message in split(await receive(sock)):
                if message.kind != NLMSG_ERROR:
                    continue
                code = error_code(message)
                if message.seq not in waiting:  # the batch itself was refused
                    raise NftablesError(f"nf_tables batch refused: errno {code}")
                codes[message.seq - 2] = code
                waiting.discard(message.seq)
    finally:
        sock.close()
    return codes
