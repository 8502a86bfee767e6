"""The IPv4 fast paths of the dataplane's checks (inet_pton) take what the general ones
(ipaddress) take, and refuse what they refuse, with the same words."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipvsproxy.core.ipset_catalog import HASH_IP
from ipvsproxy.core.model import Family, IpProtocol, VirtualServerKey
from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.ipset_specs import parse_entry
from ipvsproxy.dataplane.ipvs import validate_virtual_key

# Dotted strings near the edges of an IPv4 address (leading zeros, 256, signs, spaces,
# hex), multicast and unspecified ones, and IPv6.
_OCTETS = st.sampled_from(
    ["0", "00", "01", "1", "10", "099", "224", "239", "240", "255", "256", "-1", " 1", "0x1"]
)
_TEXTS = (
    st.lists(_OCTETS, min_size=3, max_size=5).map(".".join)
    | st.sampled_from(["::", "fd00::1", "ff02::1", "::ffff:10.0.0.1", "10.0.0.1\0"])
    | st.text(max_size=16)
)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@given(_TEXTS.filter(lambda text: "," not in text and "skbmark" not in text))
def test_an_ipset_entry_address_is_read_as_ipaddress_reads_it(text: str) -> None:
    address = _address(text.strip())  # an entry is read stripped
    if address is None or address.version != 4:
        reason = "not an IP address" if address is None else "not an IPv4 address"
        with pytest.raises(InvalidValueError, match=reason):
            parse_entry(HASH_IP, Family.V4, text)
        return
    assert parse_entry(HASH_IP, Family.V4, text).address == address


@given(_TEXTS)
def test_a_virtual_server_address_is_checked_as_ipaddress_checks_it(text: str) -> None:
    key = VirtualServerKey(text, 80, IpProtocol.TCP)
    address = _address(text)
    if address is None or str(address) != text or address.is_unspecified or address.is_multicast:
        with pytest.raises(InvalidValueError):
            validate_virtual_key(key)
        return
    assert validate_virtual_key(key) == key


def test_the_words_for_a_multicast_or_unspecified_ipv4_address() -> None:
    for text in ("224.0.0.1", "239.255.255.255", "0.0.0.0"):
        with pytest.raises(InvalidValueError, match="not a unicast address"):
            validate_virtual_key(VirtualServerKey(text, 80, IpProtocol.TCP))
    assert validate_virtual_key(VirtualServerKey("240.0.0.1", 80, IpProtocol.TCP))
