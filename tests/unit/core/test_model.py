from __future__ import annotations

import pytest

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
