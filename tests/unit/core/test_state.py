"""The compact read-only mappings a plan keeps: they must read as the dicts they replace."""

from __future__ import annotations

import pytest

from ipvsproxy.core.diff import diff
from ipvsproxy.core.model import (
    IpProtocol,
    RealServer,
    RealServerKey,
    RealServerStatus,
    VirtualServer,
)
from ipvsproxy.core.model import VirtualServerKey as VsKey
from ipvsproxy.core.state import (
    FLAT_SERVERS,
    DataplaneState,
    EntrySets,
    PlannedServers,
    planned_servers,
)

A = RealServerKey("10.244.0.1", 8080)
B = RealServerKey("10.244.0.2", 8080)
A_OTHER_PORT = RealServerKey("10.244.0.1", 9090)


def as_dict(*keys: RealServerKey) -> dict[RealServerKey, RealServerStatus]:
    return {k: RealServerStatus(RealServer(k, 1)) for k in keys}


def test_planned_servers_read_as_the_dict() -> None:
    servers = PlannedServers([A, B, A_OTHER_PORT, A])
    expected = as_dict(A, B, A_OTHER_PORT)
    assert servers == expected
    assert expected == servers
    assert list(servers) == [A, B, A_OTHER_PORT]  # order kept, duplicates dropped
    assert len(servers) == 3
    assert servers[A_OTHER_PORT] == RealServerStatus(RealServer(A_OTHER_PORT, 1))
    assert A in servers
    assert ("10.244.0.2", 9090) not in servers
    assert "10.244.0.1" not in servers
    assert 8080 not in servers
    assert servers.get(RealServerKey("10.244.0.9", 8080)) is None
    with pytest.raises(KeyError):
        servers[RealServerKey("10.244.0.2", 1)]
    assert servers.keys() - {A} == {B, A_OTHER_PORT}
    assert list(servers.items()) == list(expected.items())  # its own items(): one scan
    assert (A, expected[A]) in servers.items()
    assert len(servers.items()) == 3
    assert servers.items() == expected.items()
    assert repr(servers) == repr(expected)
    assert PlannedServers() == {}


def test_planned_servers_differ_from_a_dict_with_other_weights() -> None:
    servers = PlannedServers([A])
    assert servers != {A: RealServerStatus(RealServer(A, 0))}
    assert servers != {A: RealServerStatus(RealServer(A, 1), 1, 0)}


def test_many_servers_are_a_dict() -> None:
    keys = [RealServerKey(f"10.244.1.{i}", 80) for i in range(FLAT_SERVERS + 1)]
    assert isinstance(planned_servers(keys), dict)
    assert planned_servers(keys) == as_dict(*keys)
    assert isinstance(planned_servers(keys[:FLAT_SERVERS]), PlannedServers)


def test_entry_sets_read_as_frozensets() -> None:
    sets = EntrySets({"KUBE-CLUSTER-IP": {"10.96.0.1,tcp:80"}, "EMPTY": set(), "X": ["b", "a"]})
    assert sets == {"KUBE-CLUSTER-IP": frozenset({"10.96.0.1,tcp:80"}), "X": frozenset("ab")}
    assert "EMPTY" not in sets
    assert len(sets) == 2
    assert sets["X"] - {"a"} == {"b"}
    with pytest.raises(KeyError):
        sets["EMPTY"]


def test_diff_reads_compact_state_as_plain_state() -> None:
    vs = VirtualServer(VsKey("10.96.0.1", 80, IpProtocol.TCP))
    plain = DataplaneState(
        {vs.key: vs}, {vs.key: as_dict(A, B)}, frozenset({"10.96.0.1"}), {"S": frozenset({"e"})}
    )
    compact = DataplaneState(
        {vs.key: vs}, {vs.key: PlannedServers([A, B])}, plain.bound, EntrySets({"S": {"e"}})
    )
    assert compact == plain
    assert diff(DataplaneState(), compact) == diff(DataplaneState(), plain)
    assert diff(compact, plain) == []
    assert diff(plain, compact) == []
