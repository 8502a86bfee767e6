"""diff: table-driven cases, each with the exact operations in their order."""

from __future__ import annotations

from ipvsproxy.core.apply import apply_ops
from ipvsproxy.core.diff import diff
from ipvsproxy.core.model import (
    FLAG_PERSISTENT,
    IpProtocol,
    RealServer,
    RealServerKey,
    RealServerStatus,
    VirtualServer,
    VirtualServerKey,
)
from ipvsproxy.core.ops import (
    AddIpsetEntries,
    AddRealServer,
    AddVirtualServer,
    BindAddresses,
    DeleteIpsetEntries,
    DeleteRealServer,
    DeleteVirtualServer,
    FlushUdpConntrack,
    UnbindAddresses,
    UpdateRealServer,
    UpdateVirtualServer,
)
from ipvsproxy.core.state import DataplaneState

TCP = VirtualServerKey("10.96.0.10", 80, IpProtocol.TCP)
UDP = VirtualServerKey("10.96.0.10", 53, IpProtocol.UDP)
SCTP = VirtualServerKey("10.96.0.11", 9, IpProtocol.SCTP)
A = RealServerKey("10.244.1.1", 8080)
B = RealServerKey("10.244.1.2", 8080)


def rs(key: RealServerKey, weight: int = 1, active: int = 0, inactive: int = 0) -> RealServerStatus:
    return RealServerStatus(RealServer(key, weight), active, inactive)


def state(
    servers: dict[VirtualServerKey, list[RealServerStatus]],
    *,
    scheduler: str = "rr",
    bound: set[str] | None = None,
    ipsets: dict[str, set[str]] | None = None,
) -> DataplaneState:
    return DataplaneState(
        virtual_servers={k: VirtualServer(k, scheduler) for k in servers},
        real_servers={k: {s.server.key: s for s in v} for k, v in servers.items()},
        bound=frozenset(bound or set()),
        ipsets={n: frozenset(e) for n, e in (ipsets or {}).items()},
    )


def test_equal_states_need_nothing() -> None:
    s = state(
        {TCP: [rs(A), rs(B)]},
        bound={"10.96.0.10"},
        ipsets={"KUBE-CLUSTER-IP": {"10.96.0.10,tcp:80"}},
    )
    assert diff(s, s) == []


def test_new_service_in_order_sets_then_server_then_bind_then_reals() -> None:
    # Issue 19: a real server listed in IPVS behind a VIP not yet bound is not reachable
    # (IPVS sees only packets to local addresses), so the VIP is bound first.
    desired = state(
        {TCP: [rs(A), rs(B)]},
        bound={"10.96.0.10"},
        ipsets={"KUBE-CLUSTER-IP": {"10.96.0.10,tcp:80"}},
    )
    assert diff(DataplaneState(), desired) == [
        AddIpsetEntries("KUBE-CLUSTER-IP", frozenset({"10.96.0.10,tcp:80"})),
        AddVirtualServer(VirtualServer(TCP)),
        BindAddresses(("10.96.0.10",)),
        AddRealServer(TCP, RealServer(A, 1)),
        AddRealServer(TCP, RealServer(B, 1)),
    ]


def test_new_udp_service_is_flushed_once_bound_and_before_its_real_servers() -> None:
    desired = state({UDP: [rs(A), rs(B)]}, bound={"10.96.0.10"})
    assert diff(DataplaneState(), desired) == [
        AddVirtualServer(VirtualServer(UDP)),
        BindAddresses(("10.96.0.10",)),
        FlushUdpConntrack("10.96.0.10", 53, keep=frozenset({A, B})),
        AddRealServer(UDP, RealServer(A, 1)),
        AddRealServer(UDP, RealServer(B, 1)),
    ]


def test_deleted_service_in_order_server_then_unbind_then_sets() -> None:
    observed = state(
        {TCP: [rs(A, active=3)]},
        bound={"10.96.0.10"},
        ipsets={"KUBE-CLUSTER-IP": {"10.96.0.10,tcp:80"}},
    )
    assert diff(observed, DataplaneState()) == [
        DeleteVirtualServer(TCP),
        UnbindAddresses(("10.96.0.10",)),
        DeleteIpsetEntries("KUBE-CLUSTER-IP", frozenset({"10.96.0.10,tcp:80"})),
    ]


def test_deleted_udp_service_flushes_its_conntrack_entries() -> None:
    assert diff(state({UDP: [rs(A)]}), DataplaneState()) == [
        DeleteVirtualServer(UDP),
        FlushUdpConntrack("10.96.0.10", 53),
    ]


def test_changed_scheduler_flags_or_timeout_is_an_update() -> None:
    observed = state({TCP: [rs(A)]})
    desired = state({TCP: [rs(A)]}, scheduler="lc")
    assert diff(observed, desired) == [UpdateVirtualServer(VirtualServer(TCP, "lc"))]
    sticky = DataplaneState({TCP: VirtualServer(TCP, "rr", FLAG_PERSISTENT, 60)}, {TCP: {A: rs(A)}})
    assert diff(observed, sticky) == [
        UpdateVirtualServer(VirtualServer(TCP, "rr", FLAG_PERSISTENT, 60))
    ]


def test_changed_weight_is_an_update() -> None:
    assert diff(state({TCP: [rs(A, 3)]}), state({TCP: [rs(A, 1)]})) == [
        UpdateRealServer(TCP, RealServer(A, 1))
    ]


def test_weight_left_at_zero_is_restored() -> None:
    # #92019: a restart during graceful termination must not leave weight 0 behind.
    observed = state({TCP: [rs(A, 0, active=2)]})
    assert diff(observed, state({TCP: [rs(A)]})) == [UpdateRealServer(TCP, RealServer(A, 1))]


def test_removed_tcp_and_sctp_real_servers_with_connections_drain_at_weight_zero() -> None:
    for key in (TCP, SCTP):
        observed = state({key: [rs(A), rs(B, active=1)]})
        assert diff(observed, state({key: [rs(A)]})) == [UpdateRealServer(key, RealServer(B, 0))]
        inactive_only = state({key: [rs(A), rs(B, inactive=1)]})
        assert diff(inactive_only, state({key: [rs(A)]})) == [
            UpdateRealServer(key, RealServer(B, 0))
        ]


def test_draining_real_server_is_left_alone_until_its_connections_end() -> None:
    draining = state({TCP: [rs(A), rs(B, 0, active=1)]})
    assert diff(draining, state({TCP: [rs(A)]})) == []
    drained = state({TCP: [rs(A), rs(B, 0)]})
    assert diff(drained, state({TCP: [rs(A)]})) == [DeleteRealServer(TCP, B)]


def test_removed_udp_real_server_is_deleted_at_once_and_its_entries_flushed() -> None:
    observed = state({UDP: [rs(A), rs(B, active=5)]})
    assert diff(observed, state({UDP: [rs(A)]})) == [
        DeleteRealServer(UDP, B),
        FlushUdpConntrack("10.96.0.10", 53, B),
    ]


def test_udp_server_going_from_none_to_some_real_servers_flushes_stale_entries() -> None:
    # Flushed while it still has none: no entry of a flow to its new servers exists yet.
    assert diff(state({UDP: []}), state({UDP: [rs(A)]})) == [
        FlushUdpConntrack("10.96.0.10", 53, keep=frozenset({A})),
        AddRealServer(UDP, RealServer(A, 1)),
    ]
    # Only weight-0 servers before counts as none; the flows B still serves are kept.
    assert diff(state({UDP: [rs(B, 0, active=1)]}), state({UDP: [rs(A), rs(B)]})) == [
        FlushUdpConntrack("10.96.0.10", 53, keep=frozenset({A, B})),
        AddRealServer(UDP, RealServer(A, 1)),
        UpdateRealServer(UDP, RealServer(B, 1)),
    ]
    # A weight-0 server that goes is not kept: its entries are flushed.
    assert diff(state({UDP: [rs(B, 0)]}), state({UDP: [rs(A)]})) == [
        FlushUdpConntrack("10.96.0.10", 53, keep=frozenset({A})),
        AddRealServer(UDP, RealServer(A, 1)),
        DeleteRealServer(UDP, B),
        FlushUdpConntrack("10.96.0.10", 53, B),
    ]
    # A new UDP virtual server with real servers too (kube-proxy: "newly active").
    assert FlushUdpConntrack("10.96.0.10", 53, keep=frozenset({A})) in diff(
        DataplaneState(), state({UDP: [rs(A)]})
    )
    # Not for TCP, and not when it already had some.
    assert diff(state({TCP: []}), state({TCP: [rs(A)]})) == [AddRealServer(TCP, RealServer(A, 1))]
    assert diff(state({UDP: [rs(B)]}), state({UDP: [rs(A), rs(B)]})) == [
        AddRealServer(UDP, RealServer(A, 1))
    ]


def test_endpoint_replaced_adds_before_it_removes() -> None:
    ops = diff(state({TCP: [rs(A)]}), state({TCP: [rs(B)]}))
    assert ops == [AddRealServer(TCP, RealServer(B, 1)), DeleteRealServer(TCP, A)]


def test_udp_target_port_change_flushes_only_the_old_ports_entries() -> None:
    # The same pod is the old real server and the new one: a flush by its address alone
    # would delete the entries of its new flows too.
    moved = RealServerKey(A.address, 8081)
    assert diff(state({UDP: [rs(A)]}), state({UDP: [rs(moved)]})) == [
        AddRealServer(UDP, RealServer(moved, 1)),
        DeleteRealServer(UDP, A),
        FlushUdpConntrack("10.96.0.10", 53, A),
    ]


def test_udp_endpoints_all_replaced_in_one_batch_then_the_old_ones_flushed() -> None:
    c, d = RealServerKey("10.244.3.1", 8080), RealServerKey("10.244.4.1", 8080)
    ops = diff(state({UDP: [rs(A), rs(B)]}), state({UDP: [rs(c), rs(d)]}))
    # No flush of the whole service (it never has none), no IPVS op between the adds and
    # the deletes: the executor sends them as one batch.
    assert ops == [
        AddRealServer(UDP, RealServer(c, 1)),
        AddRealServer(UDP, RealServer(d, 1)),
        DeleteRealServer(UDP, A),
        DeleteRealServer(UDP, B),
        FlushUdpConntrack("10.96.0.10", 53, A),
        FlushUdpConntrack("10.96.0.10", 53, B),
    ]


def test_cluster_ip_change_moves_everything() -> None:
    new = VirtualServerKey("10.96.0.20", 80, IpProtocol.TCP)
    observed = state({TCP: [rs(A)]}, bound={"10.96.0.10"}, ipsets={"KUBE-IPVS-IPS": {"10.96.0.10"}})
    desired = state({new: [rs(A)]}, bound={"10.96.0.20"}, ipsets={"KUBE-IPVS-IPS": {"10.96.0.20"}})
    assert diff(observed, desired) == [
        AddIpsetEntries("KUBE-IPVS-IPS", frozenset({"10.96.0.20"})),
        AddVirtualServer(VirtualServer(new)),
        BindAddresses(("10.96.0.20",)),
        AddRealServer(new, RealServer(A, 1)),
        DeleteVirtualServer(TCP),
        UnbindAddresses(("10.96.0.10",)),
        DeleteIpsetEntries("KUBE-IPVS-IPS", frozenset({"10.96.0.10"})),
    ]


def test_only_observed_objects_are_deleted() -> None:
    # Whatever is not in observed (not owned) is never named in a delete.
    desired = state({TCP: [rs(A)]})
    ops = diff(DataplaneState(), desired)
    assert not any(
        isinstance(op, DeleteVirtualServer | DeleteRealServer | UnbindAddresses) for op in ops
    )


def test_a_changed_mark_is_an_add_alone_for_a_delete_would_go_by_key() -> None:
    """The kernel keys a marked entry by ip,proto:port; adding it anew replaces the mark."""
    name = "KUBE-EXTERNAL-LOCAL-FWMARK"
    old, new = (
        "203.0.113.7,tcp:80 skbmark 0x2c05/0x3fff",
        "203.0.113.7,tcp:80 skbmark 0x2c09/0x3fff",
    )
    gone = "203.0.113.8,tcp:80 skbmark 0x2d01/0x3fff"
    observed = DataplaneState(ipsets={name: frozenset({old, gone})})
    desired = DataplaneState(ipsets={name: frozenset({new})})
    ops = diff(observed, desired)
    assert ops == [
        AddIpsetEntries(name, frozenset({new})),
        DeleteIpsetEntries(name, frozenset({gone})),
    ]
    assert apply_ops(observed, ops).ipsets == {name: frozenset({new})}
