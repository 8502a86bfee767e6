"""The IPVS fingerprint's sum of /proc/net/ip_vs: the same however the text is cut into
reads, blind to connection counts, and moved by everything else (the contract tests
check it on the kernel; this, on texts the kernel prints at sizes tests do not build)."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from ipvsproxy.dataplane.ipvs import _SUM_SIZE, table_checksum

HEAD = (
    b"IP Virtual Server version 1.2.1 (size=4096)\n"
    b"Prot LocalAddress:Port Scheduler Flags\n"
    b"  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
)


def table(services: int, weight: int = 1, active: int = 0, inactive: int = 0) -> bytes:
    """As ip_vs_info_seq_show prints it: a line per virtual server, one per real server."""
    lines = [HEAD]
    for i in range(services):
        lines.append(b"TCP  0A60%04X:0050 rr \n" % i)
        for j in range(5):
            lines.append(
                b"  -> 0A40%04X:1F90      Masq    %-6d %-10d %-10d\n"
                % (i * 5 + j, weight, active, inactive)
            )
    return b"".join(lines)


def cut(text: bytes, size: int) -> list[bytes]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_a_table_larger_than_one_sum_is_summed_whole() -> None:
    text = table(1_000)  # 330 KB: several sums of _SUM_SIZE
    assert len(text) > 4 * _SUM_SIZE
    whole = table_checksum([text])
    assert table_checksum(cut(text, 4096)) == whole  # procfs' page per read
    assert table_checksum(cut(text, 1000)) == whole  # cuts inside lines
    assert table_checksum([]) == table_checksum([b""]) == zlib.crc32(b"")


def test_connection_counts_are_left_out_and_weights_are_not() -> None:
    text = table(1_000)
    quiet = table_checksum(cut(text, 4096))
    assert table_checksum(cut(table(1_000, active=1234567, inactive=2), 4096)) == quiet
    assert table_checksum(cut(table(1_000, weight=0), 4096)) != quiet
    assert table_checksum(cut(table(999), 4096)) != quiet
    # The port of real server 4,000 (of 5,000), far from the first sum.
    changed = text.replace(b"0A400FA0:1F90", b"0A400FA0:1F91")
    assert changed != text
    assert table_checksum(cut(changed, 4096)) != quiet


@given(st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=60))
def test_any_cut_gives_the_same_sum(sizes: list[int]) -> None:
    text = table(300)
    pieces, at = [], 0
    for size in sizes:
        pieces.append(text[at : at + size])
        at += size
    pieces.append(text[at:])
    assert table_checksum(pieces) == table_checksum([text])
