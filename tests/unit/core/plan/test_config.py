"""PlanConfig normalises node addresses, or refuses them, so plan never sees a bad one."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ipvsproxy.core.model import Family
from ipvsproxy.core.plan.config import PlanConfig
from ipvsproxy.core.plan.service import plan_service
from tests.support.builders import NODE, port, service
from tests.support.strategies import CONFIG, summary


def test_addresses_are_normalised_and_filed_by_family() -> None:
    config = PlanConfig(
        NODE,
        {
            Family.V4: frozenset({"2001:DB8::10", " 192.168.1.10"}),
            Family.V6: frozenset({"fe80::1%eth0"}),
        },
    )
    assert config.node_addresses == {
        Family.V4: frozenset({"192.168.1.10"}),
        Family.V6: frozenset({"2001:db8::10", "fe80::1"}),
    }
    assert config.served_families == {Family.V4, Family.V6}
    assert config.nodeport_ips == {Family.V4: ("192.168.1.10",), Family.V6: ("2001:db8::10",)}


def test_normalised_input_is_kept_as_is() -> None:
    # The reconciler compares what it read with config.node_addresses to decide on a replan.
    assert PlanConfig(NODE, CONFIG.node_addresses).node_addresses == CONFIG.node_addresses


def test_plan_with_unnormalised_node_addresses() -> None:
    # Once every plan was an internal error (served_families could not parse the
    # address); an upper-case node address also failed to match the LB IP.
    config = PlanConfig(NODE, {Family.V6: frozenset({"2001:DB8::10"})})
    svc = service(
        type="LoadBalancer",
        cluster_ips=("fd00::10",),
        ports=[port(443, "", "TCP", 30443)],
        lb_ingress=[{"ip": "2001:db8::10"}],
    )
    plan = plan_service(svc, [], None, config)
    assert plan.skip is None, plan.skip
    assert set(summary(plan)) == {
        "TCP [fd00::10]:443",
        "TCP [2001:db8::10]:443",
        "TCP [2001:db8::10]:30443",
    }
    assert "2001:db8::10" not in plan.state.bound  # the node's own address is not bound


@pytest.mark.parametrize(
    ("addresses", "field"),
    [
        ({Family.V4: frozenset({"192.168.001.10"})}, "node_addresses[V4]"),
        ({Family.V4: frozenset({"eth0"})}, "node_addresses[V4]"),
        ({Family.V6: frozenset({None})}, "node_addresses[V6]"),
        ({Family.V4: "192.168.1.10"}, "node_addresses[V4]"),
        ({"IPv4": frozenset({"192.168.1.10"})}, "node_addresses"),
        (["192.168.1.10"], "node_addresses"),
    ],
)
def test_bad_node_address_is_refused(addresses: Any, field: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"PlanConfig.{field}")):
        PlanConfig(NODE, addresses)


def test_bad_nodeport_addresses_and_families_are_refused() -> None:
    with pytest.raises(ValueError, match="nodeport_addresses"):
        PlanConfig(NODE, nodeport_addresses=(None,))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="families"):
        PlanConfig(NODE, families=frozenset({"IPv4"}))  # type: ignore[arg-type]


def test_unparseable_nodeport_cidr_matches_nothing() -> None:
    config = PlanConfig(NODE, CONFIG.node_addresses, nodeport_addresses=("nonsense",))
    assert config.nodeport_ips == {Family.V4: (), Family.V6: ()}
