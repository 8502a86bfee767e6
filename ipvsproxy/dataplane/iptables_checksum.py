"""A cheap check that iptables rules have not changed, with no process and no parsing.

Why: verifying the rules at every resync took an ``iptables-save`` per family (0.5-1 s a
process under user-mode-linux, tens of ms on a busy host), every 30 s, on every node, to
find nothing to do. The kernel answers "did anything change" much more cheaply:

- nft backend: the nf_tables ruleset's generation id (``nftables.generation``), which
  every commit of any table of any family changes. One small netlink request.
- legacy backend: each x_tables table's rule blob, read as ``iptables-save`` itself reads
  it (``xtables.read_table``), with each rule's packet and byte counters zeroed: they
  change with traffic, not with the rules. A CRC-32 of the blobs of the tables the proxy
  writes.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.xtables import ENTRY_OFFSETS, read_table

_COUNTERS_SIZE = 16
_U16 = struct.Struct("=H")


def without_counters(blob: bytes, family: Family) -> bytes:
    """The table's entries with every packet and byte counter set to zero."""
    target_at, counters_at = ENTRY_OFFSETS[family]
    out = bytearray(blob)
    pos = 0
    while pos + counters_at + _COUNTERS_SIZE <= len(out):
        step = _U16.unpack_from(out, pos + target_at + 2)[0]  # next_offset
        out[pos + counters_at : pos + counters_at + _COUNTERS_SIZE] = bytes(_COUNTERS_SIZE)
        if step <= 0:
            break
        pos += step
    return bytes(out)


def legacy_table(family: Family, table: str) -> bytes:
    """``table``'s rule blob without counters; empty while x_tables has no such table (the
    kernel loads the table's module if it can, as ``iptables-legacy-save -t`` does)."""
    read = read_table(family, table)
    if read is None:
        return b""
    info, blob = read
    return info + without_counters(blob, family)


def legacy_checksum(family: Family, tables: Sequence[str]) -> int:
    crc = 0
    for table in tables:
        crc = zlib.crc32(legacy_table(family, table), crc)
    return crc
