"""A cheap check that iptables rules have not changed, with no process and no parsing.

Why: verifying the rules at every resync took an ``iptables-save`` per family (0.5-1 s a
process under user-mode-linux, tens of ms on a busy host), every 30 s, on every node, to
find nothing to do. The kernel answers "did anything change" much more cheaply:

- nft backend: the nf_tables ruleset's generation id (``nftables.generation``), which
  every commit of any table of any family changes. One small netlink request.
- legacy backend: each x_tables table's rule blob, read with the getsockopt calls
  ``iptables-save`` itself uses (IPT_SO_GET_INFO, then IPT_SO_GET_ENTRIES; IP6T_* for
  IPv6), with each rule's packet and byte counters zeroed: they change with traffic, not
  with the rules. A CRC-32 of the blobs of the tables the proxy writes.

Python's ``socket.getsockopt`` cannot pass the table's name in (the kernel reads the
request from the same buffer it writes the answer to), so libc's is called through ctypes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import zlib
from collections.abc import Sequence

from ipvsproxy.core.model import Family

# linux/netfilter_ipv4/ip_tables.h and linux/netfilter_ipv6/ip6_tables.h
SO_GET_INFO, SO_GET_ENTRIES = 64, 65
_SOL = {Family.V4: socket.IPPROTO_IP, Family.V6: socket.IPPROTO_IPV6}
_AF = {Family.V4: socket.AF_INET, Family.V6: socket.AF_INET6}
TABLE_NAME_SIZE = 32
# struct ipt_getinfo / ip6t_getinfo: name, valid_hooks, hook_entry[5], underflow[5],
# num_entries, size.
_GETINFO = struct.Struct("=32sI5I5III")
# struct ipt_get_entries: name, size, then the entries (8-byte aligned: they hold u64s).
_GET_ENTRIES_HEAD = 40
# Where struct ipt_entry / ip6t_entry keep target_offset, next_offset and the counters:
# after struct ipt_ip (84 bytes) / ip6t_ip6 (136), nfcache (u32), the two offsets (u16),
# comefrom (u32), then struct xt_counters (two u64, 8-aligned).
_OFFSETS = {Family.V4: (88, 96), Family.V6: (140, 152)}  # next_offset - 2, counters
_COUNTERS_SIZE = 16
_U16 = struct.Struct("=H")

_libc = ctypes.CDLL(None, use_errno=True)


def _getsockopt(sock: socket.socket, level: int, option: int, request: bytes, size: int) -> bytes:
    buffer = ctypes.create_string_buffer(request, size)
    length = ctypes.c_uint32(size)
    if _libc.getsockopt(sock.fileno(), level, option, buffer, ctypes.byref(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"getsockopt {option}: {os.strerror(err)}")
    return buffer.raw[: length.value]


def without_counters(blob: bytes, family: Family) -> bytes:
    """The table's entries with every packet and byte counter set to zero."""
    next_at, counters_at = _OFFSETS[family]
    out = bytearray(blob)
    pos = 0
    while pos + counters_at + _COUNTERS_SIZE <= len(out):
        step = _U16.unpack_from(out, pos + next_at + 2)[0]
        out[pos + counters_at : pos + counters_at + _COUNTERS_SIZE] = bytes(_COUNTERS_SIZE)
        if step <= 0:
            break
        pos += step
    return bytes(out)


def legacy_table(family: Family, table: str) -> bytes:
    """``table``'s rule blob without counters; empty while x_tables has no such table (the
    kernel loads the table's module if it can, as ``iptables-legacy-save -t`` does)."""
    name = table.encode().ljust(TABLE_NAME_SIZE, b"\0")
    with socket.socket(_AF[family], socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        try:
            info = _getsockopt(sock, _SOL[family], SO_GET_INFO, name, _GETINFO.size)
        except OSError as err:
            # ENOPROTOOPT: ip_tables (ip6_tables) is not loaded; ENOENT: no such table.
            if err.errno in (errno.ENOPROTOOPT, errno.ENOENT):
                return b""
            raise
        size = _GETINFO.unpack(info)[-1]
        request = name + struct.pack("=I", size)
        raw = _getsockopt(sock, _SOL[family], SO_GET_ENTRIES, request, _GET_ENTRIES_HEAD + size)
    return info + without_counters(raw[_GET_ENTRIES_HEAD:], family)


def legacy_checksum(family: Family, tables: Sequence[str]) -> int:
    crc = 0
    for table in tables:
        crc = zlib.crc32(legacy_table(family, table), crc)
    return crc
