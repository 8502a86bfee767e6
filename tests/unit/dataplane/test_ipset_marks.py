"""Firewall marks in ipset entries (``skbmark``) and sets' create options: parsing,
printing, encoding (pure).

The texts are the ones ``ipset save`` printed under the kernel (ipset v7.17, Linux 6.1):
``create KUBE-EXTERNAL-LOCAL-FWMARK hash:ip,port family inet hashsize 1024 maxelem 65536
skbinfo bucketsize 12 initval 0x...`` and ``add ... 203.0.113.7,tcp:443 skbmark
0x2c05/0x3fff``; the kernel-side tests are in tests/contract/test_ipsets_contract.py.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from ipvsproxy.core.ipset_catalog import EXTERNAL_LOCAL_FWMARK, IpsetSpec, marked_entry, set_spec
from ipvsproxy.core.model import Family, IpProtocol
from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.ipset_netlink import (
    ATTR_CADT_FLAGS,
    ATTR_DATA,
    ATTR_FAMILY,
    ATTR_SETNAME,
    ATTR_SKBMARK,
    ATTR_TYPENAME,
    NFPROTO_IPV6,
    SetHeader,
    _header,
    adt_payloads,
    entry_data,
)
from ipvsproxy.dataplane.ipset_specs import (
    EntryParts,
    SetOptions,
    check_mark,
    create_line,
    normalize_entry,
    option_differences,
    parse_entry,
    wanted_options,
)
from ipvsproxy.dataplane.ipsets import rebuild_lines, temporary_name
from ipvsproxy.dataplane.netlink import NLA_F_NET_BYTEORDER, Message, attrs, nla
from tests.support.ipset_save import parse_save

HIPP = "hash:ip,port"


@pytest.mark.parametrize(
    ("given", "saved", "mark", "mask"),
    [
        ("203.0.113.7,tcp:443 skbmark 0x2c05/0x3fff", "203.0.113.7,tcp:443 skbmark 0x2c05/0x3fff",
         0x2C05, 0x3FFF),
        ("203.0.113.7,TCP:443 skbmark 0x2C05/0x3FFF", "203.0.113.7,tcp:443 skbmark 0x2c05/0x3fff",
         0x2C05, 0x3FFF),
        ("203.0.113.7,udp:53 skbmark 0x2c06", "203.0.113.7,udp:53 skbmark 0x2c06",
         0x2C06, 0xFFFFFFFF),
        ("203.0.113.7,udp:53 skbmark 0x2c06/0xffffffff", "203.0.113.7,udp:53 skbmark 0x2c06",
         0x2C06, 0xFFFFFFFF),
        ("203.0.113.7,udp:53 skbmark 0x12345/0x3fff", "203.0.113.7,udp:53 skbmark 0x12345/0x3fff",
         0x12345, 0x3FFF),  # bits outside the mask are kept, as the kernel keeps them
        ("203.0.113.7,udp:53 skbmark 0x0/0x0", "203.0.113.7,udp:53", None, None),
        ("203.0.113.7,udp:53 skbmark 0x0", "203.0.113.7,udp:53 skbmark 0x0", 0, 0xFFFFFFFF),
        ("203.0.113.7,udp:53 skbmark 0xffffffff/0xffffffff",
         "203.0.113.7,udp:53 skbmark 0xffffffff", 0xFFFFFFFF, 0xFFFFFFFF),
        ("203.0.113.7,udp:53", "203.0.113.7,udp:53", None, None),
    ],
)  # fmt: skip
def test_marks_parse_and_print_as_ipset_save(
    given: str, saved: str, mark: int | None, mask: int | None
) -> None:
    parts = parse_entry(HIPP, Family.V4, given)
    assert (parts.mark, parts.mask) == (mark, mask)
    assert parts.text() == saved
    assert parts.key_text() == saved.partition(" ")[0]
    assert normalize_entry(HIPP, Family.V4, saved) == saved  # a fixed point


def test_ipv6_entry_with_mark() -> None:
    parts = parse_entry(HIPP, Family.V6, "fd00:0203::0007,tcp:443 skbmark 0x2c05/0x3fff")
    assert parts.text() == "fd00:203::7,tcp:443 skbmark 0x2c05/0x3fff"


@pytest.mark.parametrize(
    ("mark", "field"),
    [
        ("2c05", "ipset entry skbmark"),
        ("0X2c05", "ipset entry skbmark"),  # ipset reads "0x%x": a lower-case x
        ("0x", "ipset entry skbmark"),
        ("0x123456789", "ipset entry skbmark"),
        ("0x-1", "ipset entry skbmark"),
        ("", "ipset entry skbmark"),
        ("0x2c05/", "ipset entry skbmark mask"),
        ("0x2c05/3fff", "ipset entry skbmark mask"),
        ("0x2c05/0x1ffffffff", "ipset entry skbmark mask"),
        ("0x2c05/0x3fff/0x1", "ipset entry skbmark mask"),
    ],
)
def test_malformed_marks_name_their_field(mark: str, field: str) -> None:
    with pytest.raises(InvalidValueError) as info:
        parse_entry(HIPP, Family.V4, f"203.0.113.7,tcp:443 skbmark {mark}")
    assert info.value.field == field


def test_the_key_is_checked_before_the_mark() -> None:
    with pytest.raises(InvalidValueError) as info:
        parse_entry(HIPP, Family.V4, "203.0.113.300,tcp:443 skbmark 0x1")
    assert info.value.field == "ipset entry address"


def test_check_mark_refuses_a_mark_on_a_set_without_skbinfo() -> None:
    marked = parse_entry(HIPP, Family.V4, "203.0.113.7,tcp:443 skbmark 0x1")
    plain = parse_entry(HIPP, Family.V4, "203.0.113.7,tcp:443")
    assert check_mark(marked, "S", True) is marked
    assert check_mark(plain, "S", False) is plain
    with pytest.raises(InvalidValueError, match="set S was created without skbinfo") as info:
        check_mark(marked, "S", False)
    assert info.value.field == "ipset entry skbmark"


def test_marked_entry_is_the_saved_text() -> None:
    tcp = IpProtocol.TCP
    assert marked_entry("203.0.113.7", tcp, 443, 0x2C05, 0x3FFF) == (
        "203.0.113.7,tcp:443 skbmark 0x2c05/0x3fff"
    )
    assert marked_entry("203.0.113.7", tcp, 443, 0x2C05, 0xFFFFFFFF) == (
        "203.0.113.7,tcp:443 skbmark 0x2c05"
    )
    assert marked_entry("203.0.113.7", tcp, 443, 0, 0) == "203.0.113.7,tcp:443"
    for mark, mask in ((0x2C05, 0x3FFF), (0x2C05, 0xFFFFFFFF), (0, 0), (1, 0)):
        text = marked_entry("203.0.113.7", tcp, 443, mark, mask)
        assert normalize_entry(HIPP, Family.V4, text) == text


def test_create_line_is_kube_proxys_with_skbinfo_only_where_marked() -> None:
    # kube-proxy's ensureIPSet: no comment, no other extension (pkg/proxy/ipvs/ipset).
    assert create_line(set_spec(EXTERNAL_LOCAL_FWMARK, Family.V6)) == (
        "create KUBE-6-EXTERNAL-LOCAL-FWMARK hash:ip,port family inet6 hashsize 1024"
        " maxelem 65536 skbinfo"
    )
    plain = IpsetSpec("KUBE-X", HIPP, Family.V4, "")
    assert (
        create_line(plain) == "create KUBE-X hash:ip,port family inet hashsize 1024 maxelem 65536"
    )
    assert create_line(IpsetSpec("KUBE-P", "bitmap:port", Family.V4, "", True)) == (
        "create KUBE-P bitmap:port range 0-65535 skbinfo"
    )
    assert create_line(IpsetSpec("KUBE-P", "bitmap:port", Family.V4, "")) == (
        "create KUBE-P bitmap:port range 0-65535"
    )


def test_create_line_with_other_options_as_ipset_takes_them() -> None:
    options = SetOptions(maxelem=131072, timeout=30, comment=True, counters=True)
    assert create_line(IpsetSpec("KUBE-X", HIPP, Family.V4, ""), options) == (
        "create KUBE-X hash:ip,port family inet hashsize 1024 maxelem 131072 timeout 30"
        " counters comment"
    )


def test_option_differences_name_what_create_exist_would_refuse() -> None:
    want = wanted_options(IpsetSpec("KUBE-X", HIPP, Family.V4, ""))
    assert want == SetOptions(maxelem=65536)
    assert option_differences(want, want) == []
    assert option_differences(want._replace(comment=True), want) == ["comment True (want False)"]
    bitmap = wanted_options(IpsetSpec("KUBE-P", "bitmap:port", Family.V4, ""))
    assert bitmap == SetOptions(port_range=(0, 65535))
    assert option_differences(bitmap._replace(port_range=(1, 65535)), bitmap) == [
        "port_range (1, 65535) (want (0, 65535))"
    ]


def test_parse_save_keeps_marks_and_drops_comments() -> None:
    saved = parse_save(
        "create A hash:ip,port family inet hashsize 1024 maxelem 65536 comment skbinfo"
        " bucketsize 12 initval 0xe7fe2954\n"
        'add A 203.0.113.15,udp:53 comment "hi there" skbmark 0x2c06/0x3fff\n'
        'add A 203.0.113.16,udp:53 comment "a skbmark 0x1 lie"\n'
        'add A 203.0.113.17,udp:53 comment "a skbmark 0x1 lie" skbmark 0x2\n'
        "add A 203.0.113.7,tcp:443 skbmark 0x2c09/0x3fff\n"
        "add A 203.0.113.11,udp:53 skbmark 0x2c06\n"
        "add A 203.0.113.10,udp:53\n"
    )
    assert saved == {
        "A": (
            HIPP,
            {
                "203.0.113.15,udp:53 skbmark 0x2c06/0x3fff",
                "203.0.113.16,udp:53",
                "203.0.113.17,udp:53 skbmark 0x2",
                "203.0.113.7,tcp:443 skbmark 0x2c09/0x3fff",
                "203.0.113.11,udp:53 skbmark 0x2c06",
                "203.0.113.10,udp:53",
            },
        )
    }


def _data_attrs(payload: bytes) -> dict[int, bytes]:
    return attrs(attrs(payload)[ATTR_DATA])


def test_netlink_add_carries_the_mark_as_a_big_endian_u64() -> None:
    parts = parse_entry(HIPP, Family.V4, "203.0.113.7,tcp:443 skbmark 0x2c05/0x3fff")
    raw = entry_data(parts)
    got = _data_attrs(raw)
    assert got[ATTR_SKBMARK] == struct.pack(">Q", 0x2C05 << 32 | 0x3FFF)
    # The attribute is flagged network byte order, as the kernel demands.
    pos = raw.index(struct.pack(">Q", 0x2C05 << 32 | 0x3FFF)) - 4
    size, kind = struct.unpack_from("=HH", raw, pos)
    assert (size, kind) == (12, ATTR_SKBMARK | NLA_F_NET_BYTEORDER)
    assert ATTR_SKBMARK not in _data_attrs(entry_data(parts, with_mark=False))
    assert entry_data(parts, with_mark=False) == entry_data(parts._replace(mark=None, mask=None))
    assert ATTR_SKBMARK not in _data_attrs(entry_data(parse_entry(HIPP, Family.V4, parts.text()
                                                                  .partition(" ")[0])))  # fmt: skip
    payloads = adt_payloads("A", [parts], with_mark=False)
    assert struct.pack(">Q", 0x2C05 << 32 | 0x3FFF) not in payloads[0]


def _listed(
    name: str, kind: str, family: int, cadt_flags: int | None, data: bytes = b""
) -> Message:
    if cadt_flags is not None:
        data += nla(ATTR_CADT_FLAGS, struct.pack(">I", cadt_flags))
    body = (
        bytes(4)  # nfgenmsg
        + nla(ATTR_SETNAME, name.encode() + b"\0")
        + nla(ATTR_TYPENAME, kind.encode() + b"\0")
        + nla(ATTR_FAMILY, bytes([family]))
        + nla(ATTR_DATA, data)
    )
    return Message(0, 0, 1, bytes(16) + body)


def test_listed_header_tells_the_extensions_apart() -> None:
    assert _header(_listed("A", HIPP, NFPROTO_IPV6, 0x50)) == (
        "A", SetHeader(HIPP, NFPROTO_IPV6, SetOptions(comment=True, skbinfo=True))
    )  # fmt: skip
    assert _header(_listed("B", HIPP, 2, 0x10)) == (
        "B",
        SetHeader(HIPP, 2, SetOptions(comment=True)),
    )
    assert _header(_listed("C", HIPP, 2, None)) == ("C", SetHeader(HIPP, 2, SetOptions()))
    assert _header(_listed("D", HIPP, 2, 0x28))[1].options == SetOptions(
        counters=True, forceadd=True
    )


def test_listed_header_reads_maxelem_timeout_and_the_port_range() -> None:
    be32 = struct.Struct(">I").pack
    hashed = nla(19 | 0x4000, be32(65536)) + nla(6 | 0x4000, be32(30))  # MAXELEM, TIMEOUT
    assert _header(_listed("H", HIPP, 2, 0, hashed))[1].options == SetOptions(
        maxelem=65536, timeout=30
    )
    ports = nla(4 | 0x4000, struct.pack(">H", 0)) + nla(5 | 0x4000, struct.pack(">H", 65535))
    assert _header(_listed("P", "bitmap:port", 0, 0, ports))[1].options == SetOptions(
        port_range=(0, 65535)
    )


def test_rebuild_swaps_in_a_fresh_set_and_keeps_the_entries() -> None:
    spec = set_spec(EXTERNAL_LOCAL_FWMARK, Family.V4)
    tmp = temporary_name(spec.name)
    assert rebuild_lines(spec, {"203.0.113.7,tcp:443"}) == [
        f"destroy {tmp}",
        f"create {tmp} hash:ip,port family inet hashsize 1024 maxelem 65536 skbinfo",
        f"add {tmp} 203.0.113.7,tcp:443",
        f"swap {tmp} {spec.name}",
        f"destroy {tmp}",
    ]
    # Back to no skbinfo: marks cannot come along.
    lines = rebuild_lines(spec._replace(skbinfo=False), {"203.0.113.7,tcp:443 skbmark 0x1"})
    assert f"add {tmp} 203.0.113.7,tcp:443" in lines


def test_entry_parts_default_to_no_mark() -> None:
    parts = EntryParts(ipaddress.ip_address("10.0.0.1"))
    assert (parts.mark, parts.mask) == (None, None)
    assert parts.text() == parts.key_text() == "10.0.0.1"
