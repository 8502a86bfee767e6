"""observe: which virtual servers, addresses and ipset entries are the proxy's own."""

from __future__ import annotations

import ipaddress

import pytest

from ipvsproxy.core.model import (
    Family,
    IpProtocol,
    IpvsTable,
    RealServer,
    RealServerKey,
    RealServerStatus,
    VirtualServer,
    VirtualServerKey,
    fwmark_key,
)
from ipvsproxy.core.ownership import Network, is_owned, owned_state, recorded_keys

TCP, UDP, SCTP = IpProtocol.TCP, IpProtocol.UDP, IpProtocol.SCTP
BOUND = {"10.96.0.10", "fd00::10"}
# As the kernel lists them (ipset save syntax).
ENTRIES: dict[str, set[str]] = {
    "KUBE-CLUSTER-IP": {"10.96.0.10,tcp:80"},
    "KUBE-EXTERNAL-IP": {"192.0.2.7,tcp:8080"},
    "KUBE-LOAD-BALANCER": {"192.0.2.7,udp:5353"},
    "KUBE-6-EXTERNAL-IP": {"2001:db8::7,tcp:8443"},
    "KUBE-NODE-PORT-TCP": {"30080"},
    "KUBE-NODE-PORT-LOCAL-UDP": {"30053"},
    "KUBE-NODE-PORT-SCTP-HASH": {"192.0.2.7,sctp:30090"},
    "KUBE-6-NODE-PORT-TCP": {"30443"},
    "KUBE-6-EXTERNAL-LOCAL-FWMARK": {"2001:db8::7,tcp:443 skbmark 0x2c05/0x3fff"},
    "operator-set": {"192.0.2.7,tcp:22"},
}


def owned(key: VirtualServerKey, exclude: tuple[str, ...] = ()) -> bool:
    nets: list[Network] = [ipaddress.ip_network(c) for c in exclude]
    return is_owned(key, BOUND, recorded_keys(ENTRIES), nets)


@pytest.mark.parametrize(
    "key",
    [
        VirtualServerKey("10.96.0.10", 80, TCP),  # on kube-ipvs0
        VirtualServerKey("fd00::10", 53, UDP),
        VirtualServerKey("192.0.2.7", 30080, TCP),  # node address, port in a NODE-PORT set
        VirtualServerKey("198.51.100.1", 30053, UDP),  # any node address: the local set too
        VirtualServerKey("192.0.2.7", 30090, SCTP),  # SCTP's set holds ip,sctp:port
        VirtualServerKey("2001:db8::7", 30443, TCP),
        VirtualServerKey("192.0.2.7", 8080, TCP),  # ip,proto:port in KUBE-EXTERNAL-IP
        VirtualServerKey("192.0.2.7", 5353, UDP),  # in KUBE-LOAD-BALANCER
        VirtualServerKey("2001:db8::7", 8443, TCP),  # in KUBE-6-EXTERNAL-IP
        fwmark_key(Family.V6, 0x2C05, TCP),  # its mark in KUBE-6-EXTERNAL-LOCAL-FWMARK
    ],
)
def test_owned(key: VirtualServerKey) -> None:
    assert owned(key)


@pytest.mark.parametrize(
    "key",
    [
        VirtualServerKey("192.0.2.7", 22, TCP),  # an operator's, on a node address
        VirtualServerKey("192.0.2.50", 80, TCP),  # an operator's, on another address
        VirtualServerKey("fd00::50", 80, TCP),
        VirtualServerKey("192.0.2.7", 30080, UDP),  # node port of the other protocol
        VirtualServerKey("192.0.2.7", 8080, UDP),
        VirtualServerKey("192.0.2.8", 8080, TCP),  # entry of another address
        VirtualServerKey("2001:db8::7", 8080, TCP),
        fwmark_key(Family.V4, 0x2C05, TCP),  # the mark is recorded for IPv6 only
        fwmark_key(Family.V6, 0x2C09, TCP),  # an operator's mark
    ],
)
def test_not_owned(key: VirtualServerKey) -> None:
    assert not owned(key)


def test_exclude_cidrs_win() -> None:
    exclude = ("10.96.0.0/24", "192.0.2.0/28", "2001:db8::/64")
    for key in (
        VirtualServerKey("10.96.0.10", 80, TCP),  # bound
        VirtualServerKey("192.0.2.7", 30080, TCP),  # node port
        VirtualServerKey("192.0.2.7", 8080, TCP),  # recorded ip,proto:port
        VirtualServerKey("2001:db8::7", 8443, TCP),
    ):
        assert owned(key), key
        assert not owned(key, exclude), key
    # Only addresses inside the CIDRs, of their own family, are excluded.
    assert owned(VirtualServerKey("fd00::10", 53, UDP), exclude)
    assert owned(VirtualServerKey("10.96.0.10", 80, TCP), ("fd00::/8", "10.96.1.0/24"))


def test_owned_state_keeps_only_the_proxys_part() -> None:
    ours = VirtualServerKey("10.96.0.10", 80, TCP)
    operators = VirtualServerKey("192.0.2.50", 80, TCP)
    status = RealServerStatus(RealServer(RealServerKey("10.244.0.5", 8080)), 3, 1)
    other = RealServerStatus(RealServer(RealServerKey("192.0.2.51", 80)))
    table = IpvsTable(
        virtual_servers={ours: VirtualServer(ours), operators: VirtualServer(operators)},
        real_servers={ours: [status], operators: [other]},
    )
    entries = {**ENTRIES, "KUBE-LOOP-BACK": set()}
    state = owned_state(table, BOUND, entries)
    assert dict(state.virtual_servers) == {ours: VirtualServer(ours)}
    assert dict(state.real_servers) == {ours: {status.server.key: status}}
    assert state.bound == frozenset(BOUND)
    # Our sets with entries; not an operator's set, and no empty sets.
    assert set(state.ipsets) == set(ENTRIES) - {"operator-set"}
    assert state.entries("KUBE-CLUSTER-IP") == {"10.96.0.10,tcp:80"}

    excluded = owned_state(table, BOUND, entries, [ipaddress.ip_network("10.96.0.0/16")])
    assert dict(excluded.virtual_servers) == {} == dict(excluded.real_servers)
