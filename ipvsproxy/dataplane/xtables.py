"""x_tables (iptables' legacy backend) tables read from the kernel as ``iptables-legacy-save``
reads them: with no process.

A table's rules are one blob, read with two getsockopt calls on a raw socket:
IPT_SO_GET_INFO (its size, hooks and policies), then IPT_SO_GET_ENTRIES (the entries);
IP6T_* for IPv6, same numbers. Python's ``socket.getsockopt`` cannot pass the table's name
in (the kernel reads the request from the same buffer it writes the answer to), so libc's
is called through ctypes. ``walk`` and ``policy_offsets`` parse the answers (pure).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

from ipvsproxy.core.model import Family

# linux/netfilter_ipv4/ip_tables.h and linux/netfilter_ipv6/ip6_tables.h
SO_GET_INFO, SO_GET_ENTRIES = 64, 65
_SOL = {Family.V4: socket.IPPROTO_IP, Family.V6: socket.IPPROTO_IPV6}
_AF = {Family.V4: socket.AF_INET, Family.V6: socket.AF_INET6}
TABLE_NAME_SIZE = 32
HOOKS = 5  # NF_INET_NUMHOOKS
# struct ipt_getinfo / ip6t_getinfo: name, valid_hooks, hook_entry[5], underflow[5],
# num_entries, size.
GETINFO = struct.Struct("=32sI5I5III")
# struct ipt_get_entries: name, size, then the entries (8-byte aligned: they hold u64s).
_GET_ENTRIES_HEAD = 40
# Where struct ipt_entry / ip6t_entry keep target_offset (then next_offset) and the
# counters: after struct ipt_ip (84 bytes) / ip6t_ip6 (136), nfcache (u32), the two
# offsets (u16), comefrom (u32), then struct xt_counters (two u64, 8-aligned).
ENTRY_OFFSETS = {Family.V4: (88, 96), Family.V6: (140, 152)}  # target_offset, counters
_OFFSET_PAIR = struct.Struct("=HH")  # target_offset, next_offset
# struct xt_entry_target: target_size (u16), name (29 bytes), revision (u8), then data.
_TARGET_HEAD = struct.Struct("=H29sB")
# /proc/net/ip_tables_names of the calling thread's namespace (/proc/net is the process's).
_NAMES = {
    Family.V4: "/proc/thread-self/net/ip_tables_names",
    Family.V6: "/proc/thread-self/net/ip6_tables_names",
}

# IPT_SO_GET_ENTRIES again after EAGAIN, as libiptc does (it retries without limit).
_ATTEMPTS = 5

_libc = ctypes.CDLL(None, use_errno=True)


class Entry(NamedTuple):
    """One entry (rule) of a table blob: where it starts, its target's name and data."""

    offset: int
    target: str  # "" for the standard target (ACCEPT, DROP, jumps, RETURN), "ERROR", ...
    data: bytes


def walk(blob: bytes, family: Family) -> Iterator[Entry]:
    """The entries of an IPT_SO_GET_ENTRIES answer (without its head), in order."""
    at = ENTRY_OFFSETS[family][0]
    pos = 0
    while pos + at + _OFFSET_PAIR.size <= len(blob):
        target_offset, next_offset = _OFFSET_PAIR.unpack_from(blob, pos + at)
        start, end = pos + target_offset, pos + next_offset
        if not start + _TARGET_HEAD.size <= end <= len(blob):
            return  # a malformed or truncated entry
        size, name, _revision = _TARGET_HEAD.unpack_from(blob, start)
        data = blob[start + _TARGET_HEAD.size : min(start + size, end)]
        yield Entry(pos, name.split(b"\0", 1)[0].decode(errors="replace"), data)
        pos = end


def policy_offsets(info: bytes) -> frozenset[int]:
    """Where the built-in chains' policies are (the underflows of the table's hooks),
    from an IPT_SO_GET_INFO answer."""
    fields = GETINFO.unpack(info)
    valid, underflows = fields[1], fields[2 + HOOKS : 2 + 2 * HOOKS]
    return frozenset(u for hook, u in enumerate(underflows) if valid & (1 << hook))


def table_names(family: Family) -> list[str]:
    """The tables x_tables holds in this namespace; none while ip_tables (ip6_tables) is
    not loaded. Only these may be opened: opening another would create it."""
    try:
        with open(_NAMES[family], encoding="ascii") as names:
            return names.read().split()
    except FileNotFoundError:
        return []


def read_tables(family: Family) -> Iterator[tuple[str, bytes, bytes]]:
    """(name, IPT_SO_GET_INFO answer, entries) of each table x_tables holds in this
    namespace; a table gone since it was listed is skipped."""
    for table in table_names(family):
        read = read_table(family, table)
        if read is not None:
            yield table, *read


def _getsockopt(sock: socket.socket, level: int, option: int, request: bytes, size: int) -> bytes:
    buffer = ctypes.create_string_buffer(request, size)
    length = ctypes.c_uint32(size)
    if _libc.getsockopt(sock.fileno(), level, option, buffer, ctypes.byref(length)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"getsockopt {option}: {os.strerror(err)}")
    return buffer.raw[: length.value]


def read_table(family: Family, table: str) -> tuple[bytes, bytes] | None:
    """``table``'s IPT_SO_GET_INFO answer and its entries; None while x_tables has no such
    table. The kernel loads and creates the table if it can, as ``iptables-legacy-save
    -t`` does."""
    name = table.encode().ljust(TABLE_NAME_SIZE, b"\0")
    with socket.socket(_AF[family], socket.SOCK_RAW, socket.IPPROTO_RAW) as sock:
        for _ in range(_ATTEMPTS - 1):
            try:
                return _read(sock, family, name)
            except OSError as err:
                # EAGAIN: a writer replaced the table between the two calls (a new size).
                if err.errno != errno.EAGAIN:
                    raise
        return _read(sock, family, name)


def _read(sock: socket.socket, family: Family, name: bytes) -> tuple[bytes, bytes] | None:
    try:
        info = _getsockopt(sock, _SOL[family], SO_GET_INFO, name, GETINFO.size)
    except OSError as err:
        # ENOPROTOOPT: ip_tables (ip6_tables) is not loaded; ENOENT: no such table.
        if err.errno in (errno.ENOPROTOOPT, errno.ENOENT):
            return None
        raise
    size = GETINFO.unpack(info)[-1]
    request = name + struct.pack("=I", size)
    raw = _getsockopt(sock, _SOL[family], SO_GET_ENTRIES, request, _GET_ENTRIES_HEAD + size)
    return info, raw[_GET_ENTRIES_HEAD:]
