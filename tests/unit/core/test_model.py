from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipvsproxy.core.model import (
    Family,
    IpProtocol,
    RealServerKey,
    VirtualServerKey,
    family_of,
    parse_ip,
)


def test_parse_ip_normalises_so_values_from_anywhere_compare_equal() -> None:
    assert parse_ip("fd00:0::0010") == "fd00::10"
    assert parse_ip("10.96.0.10") == "10.96.0.10"
    with pytest.raises(ValueError, match=r"10\.96\.0\.300"):
        parse_ip("10.96.0.300")


# Dotted strings near the edges of what is an IPv4 address: leading zeros, 256, signs,
# spaces, missing or extra octets, hex.
_OCTETS = st.sampled_from(
    ["0", "00", "01", "1", "9", "10", "099", "255", "256", "-1", "+1", " 1", "0x1", ""]
)


@given(st.lists(_OCTETS, min_size=3, max_size=5).map(".".join) | st.text(max_size=20))
def test_parse_ip_takes_and_spells_exactly_what_ipaddress_does(text: str) -> None:
    """The IPv4 fast path (inet_pton) agrees with ipaddress on every string."""
    try:
        expected = str(ipaddress.ip_address(text))
    except ValueError:
        with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
            parse_ip(text)
        return
    assert parse_ip(text) == expected


def test_families_and_protocol_numbers() -> None:
    assert family_of("fd00::10") is Family.V6
    assert family_of("10.0.0.1") is Family.V4
    assert Family.V6.k8s_name == "IPv6"
    assert [p.number for p in IpProtocol] == [6, 17, 132]
    assert IpProtocol.from_number(132) is IpProtocol.SCTP
    with pytest.raises(ValueError, match="99"):
        IpProtocol.from_number(99)


def test_keys_print_as_the_kernel_tools_do() -> None:
    assert str(VirtualServerKey("fd00::10", 80, IpProtocol.TCP)) == "TCP [fd00::10]:80"
    assert str(VirtualServerKey("10.96.0.10", 53, IpProtocol.UDP)) == "UDP 10.96.0.10:53"
    assert str(RealServerKey("10.244.1.5", 53)) == "10.244.1.5:53"
