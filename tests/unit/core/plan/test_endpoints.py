"""plan: endpoint conditions, topology hints, slice ports, de-duplication."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ipvsproxy.core.model import Family
from ipvsproxy.core.plan.service import plan_service
from tests.support.builders import NODE, endpoint, endpoint_slice, node, port, service
from tests.support.strategies import CONFIG, summary

A, B, C = "10.244.1.1", "10.244.1.2", "10.244.1.3"


def real_servers(svc: dict[str, Any], eps: list[dict[str, Any]], node_obj: Any = None) -> list[str]:
    plan = plan_service(svc, [endpoint_slice(eps)], node_obj, CONFIG)
    return [s.split(":")[0] for s in summary(plan)["TCP 10.96.0.10:80"]]


@pytest.mark.parametrize(
    ("eps", "expected"),
    [
        # ready ones only
        ([endpoint(A), endpoint(B, ready=False)], [A]),
        # unset ready counts as ready (the API's rule)
        ([endpoint(A, ready=None)], [A]),
        # no ready one: serving and terminating ones
        (
            [
                endpoint(A, ready=False, serving=True, terminating=True),
                endpoint(B, ready=False, serving=False, terminating=True),
                endpoint(C, ready=False, serving=True, terminating=False),
            ],
            [A],
        ),
        # a ready one exists: terminating ones are not used
        ([endpoint(A), endpoint(B, ready=False, serving=True, terminating=True)], [A]),
        # nothing usable
        ([endpoint(A, ready=False, serving=False, terminating=True)], []),
    ],
)
def test_endpoint_conditions(eps: list[dict[str, Any]], expected: list[str]) -> None:
    assert real_servers(service(), eps) == expected


def test_local_and_cluster_fall_back_separately() -> None:
    # Cluster set has a ready (remote) endpoint; the local set has only a
    # serving+terminating one and falls back to it on its own.
    eps = [endpoint(A, "node-b"), endpoint(B, NODE, ready=False, serving=True, terminating=True)]
    svc = service(
        type="NodePort", ports=[port(80, "", "TCP", 30080)], externalTrafficPolicy="Local"
    )
    plan = plan_service(svc, [endpoint_slice(eps)], None, CONFIG)
    assert summary(plan) == {
        "TCP 10.96.0.10:80": [f"{A}:8080"],
        "TCP 192.168.1.10:30080": [f"{B}:8080"],
    }
    assert plan.local_endpoints == 0  # the health check counts ready ones only


@pytest.mark.parametrize(
    ("eps", "zone", "expected"),
    [
        # every endpoint hinted, some for our zone: only those
        (
            [endpoint(A, zones=["z1"]), endpoint(B, zones=["z2"]), endpoint(C, zones=["z1", "z2"])],
            "z1",
            [A, C],
        ),
        # one ready endpoint without hints: hints ignored
        ([endpoint(A, zones=["z1"]), endpoint(B)], "z1", [A, B]),
        # a not-ready endpoint without hints does not matter
        (
            [endpoint(A, zones=["z1"]), endpoint(B, zones=["z2"]), endpoint(C, ready=False)],
            "z1",
            [A],
        ),
        # no endpoint for our zone: hints ignored
        ([endpoint(A, zones=["z2"]), endpoint(B, zones=["z2"])], "z1", [A, B]),
        # node without a zone label: hints ignored
        ([endpoint(A, zones=["z1"]), endpoint(B, zones=["z2"])], None, [A, B]),
    ],
)
def test_zone_hints(eps: list[dict[str, Any]], zone: str | None, expected: list[str]) -> None:
    svc = service(trafficDistribution="PreferClose")
    assert real_servers(svc, eps, node(zone=zone)) == expected


def test_node_hints_win_over_zone_hints() -> None:
    eps = [
        endpoint(A, NODE, zones=["z1"], nodes=[NODE]),
        endpoint(B, "node-b", zones=["z1"], nodes=["node-b"]),
    ]
    assert real_servers(service(), eps, node(zone="z1")) == [A]


def test_hints_do_not_narrow_local_endpoints() -> None:
    eps = [endpoint(A, NODE, zones=["z2"]), endpoint(B, "node-b", zones=["z1"])]
    svc = service(internalTrafficPolicy="Local")
    assert real_servers(svc, eps, node(zone="z1")) == [A]


def test_endpoints_are_deduplicated_across_slices() -> None:
    s1 = endpoint_slice([endpoint(A), endpoint(B)], name="s1")
    s2 = endpoint_slice([endpoint(B), endpoint(C)], name="s2")
    plan = plan_service(service(), [s1, s2], None, CONFIG)
    assert summary(plan)["TCP 10.96.0.10:80"] == [f"{A}:8080", f"{B}:8080", f"{C}:8080"]


def test_a_local_duplicate_wins() -> None:
    s1 = endpoint_slice([endpoint(A, "node-b")], name="s1")
    s2 = endpoint_slice([endpoint(A, NODE)], name="s2")
    svc = service(internalTrafficPolicy="Local")
    assert summary(plan_service(svc, [s1, s2], None, CONFIG))["TCP 10.96.0.10:80"] == [f"{A}:8080"]


def test_fqdn_slices_are_ignored_without_a_problem() -> None:
    fqdn = endpoint_slice([endpoint("example.com")], address_type="FQDN")
    plan = plan_service(service(), [fqdn], None, CONFIG)
    assert summary(plan) == {"TCP 10.96.0.10:80": []}
    assert plan.problems == ()


def test_slice_port_without_a_number_means_no_real_servers() -> None:
    s = endpoint_slice([endpoint(A)])
    s["ports"] = [{"name": "", "protocol": "TCP", "port": None}]
    assert summary(plan_service(service(), [s], None, CONFIG)) == {"TCP 10.96.0.10:80": []}


def test_named_target_port_resolves_per_slice() -> None:
    # Pods may put a named targetPort on different numbers; each slice says which.
    svc = service(ports=[port(80, "http")])
    s1 = endpoint_slice([endpoint(A)], [("http", 8080)], name="s1")
    s2 = endpoint_slice([endpoint(B)], [("http", 9090)], name="s2")
    assert summary(plan_service(svc, [s1, s2], None, CONFIG)) == {
        "TCP 10.96.0.10:80": [f"{A}:8080", f"{B}:9090"]
    }


def test_only_the_first_address_of_an_endpoint_counts() -> None:
    ep = endpoint(A)
    ep["addresses"] = [A, B]
    assert real_servers(service(), [ep]) == [A]


def test_no_local_endpoints_is_counted_per_family() -> None:
    """kube-proxy's no_local_endpoints gauge has one proxier per family: a dual-stack
    Service with a local endpoint in IPv4 only has none in IPv6."""
    dual = dataclasses.replace(CONFIG, families=frozenset(Family))
    svc = service(
        cluster_ips=("10.96.0.10", "fd00:96::10"),
        ipFamilies=["IPv4", "IPv6"],
        internalTrafficPolicy="Local",
    )
    slices = [
        endpoint_slice([endpoint(A, NODE)]),
        endpoint_slice([endpoint("fd00:244::1", "node-b")], name="web-6"),
    ]
    plan = plan_service(svc, slices, None, dual)
    assert plan.families == frozenset(Family)
    assert plan.no_local_internal == frozenset({Family.V6})
    assert plan.no_local_external == frozenset()
    assert plan.local_endpoints == 1
