"""plan: ClusterIP services, families, skips, scheduler and session affinity."""

from __future__ import annotations

from typing import Any

import pytest

from ipvsproxy.core.model import FLAG_PERSISTENT, FLAG_SCHED_MH_PORT, Family
from ipvsproxy.core.plan.config import PlanConfig
from ipvsproxy.core.plan.service import plan_service
from tests.support.builders import NODE, endpoint, endpoint_slice, port, service
from tests.support.strategies import CONFIG, V4_ONLY, summary, virtual

EPS = [endpoint_slice([endpoint("10.244.1.5"), endpoint("10.244.2.6")], [("", 8080)])]


def test_clusterip_gets_a_virtual_server_with_every_endpoint() -> None:
    plan = plan_service(service(), EPS, None, CONFIG)
    assert plan.skip is None
    assert plan.problems == ()
    assert summary(plan) == {"TCP 10.96.0.10:80": ["10.244.1.5:8080", "10.244.2.6:8080"]}
    assert plan.state.bound == {"10.96.0.10"}
    assert plan.state.ipsets == {
        "KUBE-CLUSTER-IP": {"10.96.0.10,tcp:80"},
        "KUBE-IPVS-IPS": {"10.96.0.10"},
    }
    assert all(
        s.server.weight == 1
        for s in plan.state.servers_of(next(iter(plan.state.real_servers))).values()
    )


@pytest.mark.parametrize(("protocol", "entry"), [("TCP", "tcp"), ("UDP", "udp"), ("SCTP", "sctp")])
def test_every_protocol(protocol: str, entry: str) -> None:
    svc = service(ports=[port(53, "dns", protocol)])
    eps = [endpoint_slice([endpoint("10.244.1.5")], [("dns", 5353, protocol)])]
    plan = plan_service(svc, eps, None, CONFIG)
    assert summary(plan) == {f"{protocol} 10.96.0.10:53": ["10.244.1.5:5353"]}
    assert plan.state.ipsets["KUBE-CLUSTER-IP"] == {f"10.96.0.10,{entry}:53"}


def test_every_port_matched_to_its_slice_port_by_name_and_protocol() -> None:
    svc = service(ports=[port(80, "http"), port(53, "dns", "UDP"), port(53, "dns-tcp", "TCP")])
    eps = [
        endpoint_slice(
            [endpoint("10.244.1.5")],
            [
                ("http", 8080, "TCP"),
                ("dns", 5353, "UDP"),
                ("dns-tcp", 5354, "TCP"),
                ("dns", 9999, "TCP"),
            ],
        )
    ]
    assert summary(plan_service(svc, eps, None, CONFIG)) == {
        "TCP 10.96.0.10:53": ["10.244.1.5:5354"],
        "TCP 10.96.0.10:80": ["10.244.1.5:8080"],
        "UDP 10.96.0.10:53": ["10.244.1.5:5353"],
    }


def test_ipv6_single_stack_uses_the_kube_6_sets() -> None:
    svc = service(cluster_ips=("fd00::a",), ipFamilies=["IPv6"])
    eps = [endpoint_slice([endpoint("fd00:1::5")], [("", 8080)], address_type="IPv6")]
    plan = plan_service(svc, eps, None, CONFIG)
    assert summary(plan) == {"TCP [fd00::a]:80": ["[fd00:1::5]:8080"]}
    assert plan.state.ipsets == {
        "KUBE-6-CLUSTER-IP": {"fd00::a,tcp:80"},
        "KUBE-6-IPVS-IPS": {"fd00::a"},
    }


def test_dual_stack_gets_one_virtual_server_per_family_with_that_familys_endpoints() -> None:
    svc = service(cluster_ips=("10.96.0.10", "fd00::a"), ipFamilies=["IPv4", "IPv6"])
    eps = [
        endpoint_slice([endpoint("10.244.1.5")], name="v4"),
        endpoint_slice([endpoint("fd00:1::5")], name="v6", address_type="IPv6"),
    ]
    plan = plan_service(svc, eps, None, CONFIG)
    assert summary(plan) == {
        "TCP 10.96.0.10:80": ["10.244.1.5:8080"],
        "TCP [fd00::a]:80": ["[fd00:1::5]:8080"],
    }
    assert plan.state.bound == {"10.96.0.10", "fd00::a"}


def test_dual_stack_on_a_node_without_ipv6_gets_only_ipv4() -> None:
    svc = service(cluster_ips=("fd00::a", "10.96.0.10"), ipFamilies=["IPv6", "IPv4"])
    plan = plan_service(svc, EPS, None, V4_ONLY)  # only ::1: loopback does not count
    assert list(summary(plan)) == ["TCP 10.96.0.10:80"]


def test_ipv6_only_service_on_an_ipv4_node_is_skipped_with_a_reason() -> None:
    plan = plan_service(service(cluster_ips=("fd00::a",)), [], None, V4_ONLY)
    assert plan.skip is not None
    assert "IPv6" in plan.skip
    assert plan.state.virtual_servers == {}


def test_families_can_be_given_explicitly() -> None:
    config = PlanConfig(
        NODE, {Family.V4: frozenset({"192.168.1.10"})}, families=frozenset({Family.V6})
    )
    plan = plan_service(service(cluster_ips=("10.96.0.10", "fd00::a")), [], None, config)
    assert list(summary(plan)) == ["TCP [fd00::a]:80"]


@pytest.mark.parametrize(
    ("svc", "reason"),
    [
        (service(cluster_ips=("None",)), "headless"),
        (service(type="ExternalName", cluster_ips=(), externalName="example.com"), "ExternalName"),
        (
            service(labels={"service.kubernetes.io/service-proxy-name": "other"}),
            "service-proxy-name",
        ),
        (service(cluster_ips=("",)), "no valid cluster IP"),
    ],
)
def test_skipped_services(svc: dict[str, Any], reason: str) -> None:
    plan = plan_service(svc, EPS, None, CONFIG)
    assert plan.skip is not None
    assert reason in plan.skip
    assert plan.state.virtual_servers == {}
    assert plan.state.bound == frozenset()


def test_service_without_endpoints_keeps_its_virtual_server_with_no_real_servers() -> None:
    plan = plan_service(service(), [], None, CONFIG)
    assert summary(plan) == {"TCP 10.96.0.10:80": []}
    assert plan.state.bound == {"10.96.0.10"}


@pytest.mark.parametrize(
    ("default", "annotation", "scheduler", "flags", "problem"),
    [
        ("rr", None, "rr", 0, False),
        ("lc", None, "lc", 0, False),
        ("rr", "lc", "lc", 0, False),
        ("rr", "mh", "mh", FLAG_SCHED_MH_PORT, False),
        ("mh", None, "mh", FLAG_SCHED_MH_PORT, False),
        ("lc", "fastest", "lc", 0, True),
        ("rr", "", "rr", 0, True),
    ],
)
def test_scheduler_default_and_annotation(
    default: str, annotation: str | None, scheduler: str, flags: int, problem: bool
) -> None:
    config = PlanConfig(NODE, CONFIG.node_addresses, scheduler=default)
    annotations = {} if annotation is None else {"ipvsproxy.io/scheduler": annotation}
    plan = plan_service(service(annotations=annotations), [], None, config)
    vs = virtual(plan, "TCP 10.96.0.10:80")
    assert (vs.scheduler, vs.flags) == (scheduler, flags)
    assert bool(plan.problems) == problem
    if problem:
        assert "ipvsproxy.io/scheduler" in plan.problems[0]


@pytest.mark.parametrize(
    ("config", "timeout", "problem"),
    [
        ({}, 10800, False),
        ({"clientIP": {"timeoutSeconds": 60}}, 60, False),
        ({"clientIP": {"timeoutSeconds": 0}}, 10800, True),
    ],
)
def test_client_ip_affinity_is_a_persistent_virtual_server(
    config: dict[str, Any], timeout: int, problem: bool
) -> None:
    svc = service(sessionAffinity="ClientIP", sessionAffinityConfig=config)
    plan = plan_service(svc, [], None, CONFIG)
    vs = virtual(plan, "TCP 10.96.0.10:80")
    assert (vs.flags & FLAG_PERSISTENT, vs.timeout) == (FLAG_PERSISTENT, timeout)
    assert bool(plan.problems) == problem


def test_no_affinity_means_no_persistence() -> None:
    vs = virtual(
        plan_service(service(sessionAffinity="None"), [], None, CONFIG), "TCP 10.96.0.10:80"
    )
    assert (vs.flags, vs.timeout) == (0, 0)


def test_plan_is_deterministic_whatever_the_slice_order() -> None:
    a = endpoint_slice([endpoint("10.244.1.5")], name="a")
    b = endpoint_slice([endpoint("10.244.2.6")], name="b")
    assert plan_service(service(), [a, b], None, CONFIG) == plan_service(
        service(), [b, a], None, CONFIG
    )


def test_plans_share_their_sets_of_families() -> None:
    one = plan_service(service("a"), EPS, None, CONFIG)
    other = plan_service(service("b", cluster_ips=("10.96.0.11",)), EPS, None, CONFIG)
    assert one.families == {Family.V4}
    assert one.no_local_internal == one.no_local_external == frozenset()
    # The same objects, not equal copies: each plan keeps them for its life.
    assert one.families is other.families
    assert one.no_local_internal is other.no_local_external
