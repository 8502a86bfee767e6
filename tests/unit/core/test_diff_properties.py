"""diff, property-based: applying diff(observed, desired) to observed yields desired.

The one exception, stated precisely: a real server that is in ``observed`` and
not in ``desired``, on a TCP or SCTP virtual server present in both, with
connections (active + inactive) > 0, stays, at weight 0 (graceful termination;
``ipvsproxy.core.diff.lingering`` lists them). Connection counters are not part of
the comparison: the simulator cannot know them.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ipvsproxy.core.apply import InvalidOp, apply_ops
from ipvsproxy.core.diff import diff, lingering
from ipvsproxy.core.model import IpProtocol, RealServer, VirtualServerKey
from ipvsproxy.core.ops import (
    AddRealServer,
    AddVirtualServer,
    BindAddresses,
    DeleteVirtualServer,
    FlushUdpConntrack,
    UnbindAddresses,
    UpdateRealServer,
)
from ipvsproxy.core.state import DataplaneState
from tests.support.strategies import dataplane_states

EXAMPLES = settings(max_examples=150, deadline=None)


def servers(state: DataplaneState) -> dict[VirtualServerKey, list[RealServer]]:
    return {
        k: sorted(s.server for s in state.servers_of(k).values()) for k in state.virtual_servers
    }


def expected_servers(
    observed: DataplaneState, desired: DataplaneState
) -> dict[VirtualServerKey, list[RealServer]]:
    result = servers(desired)
    for key, kept in lingering(observed, desired).items():
        result[key] = sorted(result[key] + kept)
    return result


@EXAMPLES
@given(dataplane_states(), dataplane_states(with_connections=False))
def test_applying_the_diff_yields_desired(
    observed: DataplaneState, desired: DataplaneState
) -> None:
    result = apply_ops(observed, diff(observed, desired))  # strict: raises on a useless op
    assert result.virtual_servers == desired.virtual_servers
    assert servers(result) == expected_servers(observed, desired)
    assert result.bound == desired.bound
    assert result.ipsets == {n: e for n, e in desired.ipsets.items() if e}


@EXAMPLES
@given(dataplane_states(), dataplane_states(with_connections=False))
def test_diff_is_idempotent(observed: DataplaneState, desired: DataplaneState) -> None:
    after = apply_ops(observed, diff(observed, desired))
    # apply_ops keeps the counters of servers it does not add, as the kernel does, so
    # lingering servers still count as having connections.
    assert diff(after, desired) == []


@EXAMPLES
@given(dataplane_states())
def test_equal_states_have_an_empty_diff(state: DataplaneState) -> None:
    assert diff(state, state) == []


@EXAMPLES
@given(dataplane_states(), dataplane_states(with_connections=False))
def test_order_keeps_traffic_flowing(observed: DataplaneState, desired: DataplaneState) -> None:
    ops = diff(observed, desired)
    index = {op: i for i, op in enumerate(ops)}
    binds = [i for i, op in enumerate(ops) if isinstance(op, BindAddresses)]
    unbinds = [i for i, op in enumerate(ops) if isinstance(op, UnbindAddresses)]
    adds = [i for i, op in enumerate(ops) if isinstance(op, AddRealServer)]
    deletes = [i for i, op in enumerate(ops) if isinstance(op, DeleteVirtualServer)]
    # Addresses are bound before any real server is added (issue 19: IPVS sees only
    # packets to local addresses) and after the virtual servers; unbound after every delete.
    assert all(b < a for b in binds for a in adds)
    assert all(b > i for b in binds for op, i in index.items() if isinstance(op, AddVirtualServer))
    assert all(u > d for u in unbinds for d in deletes)
    assert len(binds) <= 1
    assert len(unbinds) <= 1
    # Real servers are added before any is drained.
    drains = [
        i
        for op, i in index.items()
        if isinstance(op, UpdateRealServer) and op.server.key not in desired.servers_of(op.virtual)
    ]
    assert all(d > a for d in drains for a in adds)


@EXAMPLES
@given(dataplane_states(), dataplane_states(with_connections=False))
def test_a_udp_flush_never_meets_a_live_flow(
    observed: DataplaneState, desired: DataplaneState
) -> None:
    """A whole-service flush (none -> some live real servers) comes once the addresses are
    bound and before any real server of that virtual server gets weight, and keeps the
    entries of every real server it will have; a real server's flush names one that goes."""
    ops = diff(observed, desired)
    binds = [i for i, op in enumerate(ops) if isinstance(op, BindAddresses)]
    for i, op in enumerate(ops):
        if not isinstance(op, FlushUdpConntrack):
            continue
        key = next(
            k
            for k in (desired.virtual_servers.keys() | observed.virtual_servers.keys())
            if (k.address, k.port, k.protocol, k.fwmark) == (op.address, op.port, IpProtocol.UDP, 0)
        )
        if key not in desired.virtual_servers:
            continue  # the virtual server is deleted: nothing of it is live
        if op.real is not None:
            assert op.real in observed.servers_of(key)
            assert op.real not in desired.servers_of(key)
            continue
        assert all(b < i for b in binds)
        assert all(
            s.server.weight == 0 for s in apply_ops(observed, ops[:i]).servers_of(key).values()
        )
        live = {k for k, s in desired.servers_of(key).items() if s.server.weight > 0}
        assert op.keep == live


@EXAMPLES
@given(dataplane_states(), dataplane_states(with_connections=False))
def test_deletes_name_only_observed_objects(
    observed: DataplaneState, desired: DataplaneState
) -> None:
    try:
        apply_ops(observed, diff(observed, desired))
    except InvalidOp as err:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"diff named something it should not: {err}") from err


@settings(max_examples=50, deadline=None)
@given(dataplane_states(), st.sampled_from(list(IpProtocol)))
def test_udp_never_lingers(observed: DataplaneState, protocol: IpProtocol) -> None:
    desired = DataplaneState(
        observed.virtual_servers,
        {k: {} for k in observed.virtual_servers},
        observed.bound,
        observed.ipsets,
    )
    result = apply_ops(observed, diff(observed, desired))
    for key in result.virtual_servers:
        if key.protocol is IpProtocol.UDP:
            assert result.servers_of(key) == {}
        else:
            assert all(s.server.weight == 0 for s in result.servers_of(key).values())
