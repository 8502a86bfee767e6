"""plan, property-based: never raises, on what the API server accepts and on junk,
and what it returns is a consistent desired state."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ipvsproxy.core import ipset_catalog
from ipvsproxy.core.apply import apply_ops
from ipvsproxy.core.diff import diff
from ipvsproxy.core.model import Family, family_of
from ipvsproxy.core.plan.service import plan_service
from ipvsproxy.core.state import DataplaneState, ServicePlan
from tests.support.builders import node
from tests.support.strategies import (
    CONFIG,
    V4_ONLY,
    json_values,
    mutated,
    valid_services,
    valid_slices,
)

configs = st.sampled_from([CONFIG, V4_ONLY])
nodes = st.one_of(st.none(), st.builds(node, st.sampled_from([None, "z1", "z2"])))


def check_consistent(plan: ServicePlan) -> None:
    assert plan.skip is None or not plan.skip.startswith("internal error"), plan.skip
    state = plan.state
    assert set(state.real_servers) == set(state.virtual_servers)
    for key, server in state.virtual_servers.items():
        assert server.key == key
        assert 1 <= key.port <= 65535 or (key.fwmark and key.port == 0)
        for rkey, status in state.real_servers[key].items():
            assert status.server.key == rkey
            assert status.server.weight == 1
            assert family_of(rkey.address) is key.family  # never mixes families
    # No IPv6 zone ("fe80::1%eth0") anywhere: the kernel objects cannot carry one.
    addresses = [k.address for k in state.virtual_servers] + [
        r.address for servers in state.real_servers.values() for r in servers
    ]
    assert not any("%" in text for text in [*addresses, *state.bound]), addresses
    assert not any("%" in e for entries in state.ipsets.values() for e in entries)
    vips = {key.address for key in state.virtual_servers}
    assert state.bound <= vips
    for family in Family:
        bound = {a for a in state.bound if family_of(a) is family}
        assert state.entries(ipset_catalog.set_name(ipset_catalog.IPVS_IPS, family)) == bound
    for name in state.ipsets:
        assert ipset_catalog.kind_of(name) is not None, name
    if plan.skip:
        assert state == DataplaneState()
    # A plan is programmable from nothing, op by op.
    assert apply_ops(DataplaneState(), diff(DataplaneState(), state)) == state


@settings(max_examples=200, deadline=None)
@given(valid_services(), st.lists(valid_slices(), max_size=3), nodes, configs)
def test_plan_of_valid_objects(svc: Any, slices: list[Any], node_obj: Any, config: Any) -> None:
    plan = plan_service(svc, slices, node_obj, config)
    check_consistent(plan)
    assert plan.skip is None or "serves none" in plan.skip
    if plan.skip is None:
        assert plan.state.virtual_servers  # every valid port gets its cluster IP server


@settings(max_examples=200, deadline=None)
@given(
    mutated(valid_services()),
    st.lists(st.one_of(valid_slices(), mutated(valid_slices())), max_size=3),
    st.one_of(nodes, json_values),
    configs,
)
def test_plan_of_malformed_objects(svc: Any, slices: list[Any], node_obj: Any, config: Any) -> None:
    check_consistent(plan_service(svc, slices, node_obj, config))


# Inputs that once crashed plan (internal error): a protocol that is a list or
# a dict is unhashable, and looking it up among Protocol's members raised.
UNHASHABLE_SERVICE_PROTOCOL = {"spec": {"clusterIP": "10.0.0.1", "ports": [{"protocol": ["x"]}]}}
UNHASHABLE_SLICE_PROTOCOL = [{"addressType": "IPv4", "ports": [{"port": 80, "protocol": {"a": 1}}]}]


@settings(max_examples=400, deadline=None)
@given(json_values, st.one_of(st.none(), json_values), json_values)
@example(UNHASHABLE_SERVICE_PROTOCOL, None, None)
@example(
    {"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}}, UNHASHABLE_SLICE_PROTOCOL, None
)
@example({"spec": {"clusterIP": "fe80::1%eth0", "ports": [{"port": 80}]}}, None, None)
def test_plan_of_arbitrary_json(svc: Any, slices: Any, node_obj: Any) -> None:
    check_consistent(plan_service(svc, slices, node_obj, CONFIG))
