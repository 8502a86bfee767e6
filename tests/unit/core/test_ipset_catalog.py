"""ipset_catalog: kube-proxy's set names, the IPv6 names, and entry syntax."""

from __future__ import annotations

import pytest

from ipvsproxy.core import ipset_catalog as sets
from ipvsproxy.core.model import Family, IpProtocol


@pytest.mark.parametrize(
    ("kind", "v4", "v6"),
    [
        (sets.CLUSTER_IP, "KUBE-CLUSTER-IP", "KUBE-6-CLUSTER-IP"),
        (sets.NODE_PORT_TCP, "KUBE-NODE-PORT-TCP", "KUBE-6-NODE-PORT-TCP"),
        (
            sets.LOAD_BALANCER_SOURCE_CIDR,
            "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            "KUBE-6-LOAD-BALANCER-SOURCE-CID",
        ),
        (
            sets.NODE_PORT_LOCAL_SCTP,
            "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
            "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS",
        ),
        (sets.IPVS_IPS, "KUBE-IPVS-IPS", "KUBE-6-IPVS-IPS"),
    ],
)
def test_names(kind: sets.SetKind, v4: str, v6: str) -> None:
    assert sets.set_name(kind, Family.V4) == v4
    assert sets.set_name(kind, Family.V6) == v6
    assert sets.kind_of(v6) == (kind, Family.V6)


def test_every_name_fits_and_is_unique() -> None:
    names = [spec.name for family in Family for spec in sets.all_specs(family)]
    assert len(names) == len(set(names)) == 2 * len(sets.ALL_KINDS)
    assert all(len(n) <= 31 and n.startswith("KUBE-") for n in names)
    assert all(kind.type in sets.TYPES for kind in sets.ALL_KINDS)
    assert sets.kind_of("KUBE-SOMETHING-ELSE") is None


def test_entries() -> None:
    assert sets.ip_port_entry("10.96.0.10", IpProtocol.UDP, 53) == "10.96.0.10,udp:53"
    assert (
        sets.ip_port_ip_entry("fd00::5", IpProtocol.SCTP, 9, "fd00::5") == "fd00::5,sctp:9,fd00::5"
    )
    assert (
        sets.ip_port_net_entry("10.0.0.1", IpProtocol.TCP, 443, "10.0.0.0/8")
        == "10.0.0.1,tcp:443,10.0.0.0/8"
    )
    assert sets.port_entry(30080) == "30080"


@pytest.mark.parametrize(
    ("text", "saved"),
    [
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("192.0.2.1/32", "192.0.2.1"),
        ("192.0.2.1", "192.0.2.1"),
        (" fd00:0::1/64 ", "fd00::/64"),
        ("fd00::1/128", "fd00::1"),
    ],
)
def test_cidrs_as_ipset_saves_them(text: str, saved: str) -> None:
    assert sets.normalise_cidr(text) == saved


@pytest.mark.parametrize("text", ["10.0.0.0/33", "nonsense", "", "10.0.0.0/-1"])
def test_bad_cidrs(text: str) -> None:
    with pytest.raises(ValueError, match="does not appear to be"):
        sets.normalise_cidr(text)
