"""plan: a malformed field skips what it breaks, with a reason, and nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from ipvsproxy.core.plan.service import plan_service
from tests.support.builders import endpoint, endpoint_slice, port, service
from tests.support.strategies import CONFIG, summary

GOOD_PORT = port(80, "http")
EPS = [endpoint_slice([endpoint("10.244.1.5")], [("http", 8080), ("bad", 9090)])]


@pytest.mark.parametrize(
    ("bad_port", "reason"),
    [
        (port(0, "bad"), "not in 1-65535"),
        (port(65536, "bad"), "not in 1-65535"),
        (port(-1, "bad"), "not in 1-65535"),
        ({"name": "bad", "port": "80", "protocol": "TCP"}, "not in 1-65535"),
        ({"name": "bad", "port": True, "protocol": "TCP"}, "not in 1-65535"),
        (port(81, "bad", "ICMP"), "unknown protocol"),
        (port(81, "bad", "tcp"), "unknown protocol"),
        (port(80, "bad"), "duplicate"),  # same number and protocol as http
        (port(81, "http"), "duplicate"),  # same name
        ("80", "not an object"),
        # Unhashable protocols once crashed plan (internal error) instead.
        ({"name": "bad", "port": 81, "protocol": ["TCP"]}, "unknown protocol"),
        ({"name": "bad", "port": 81, "protocol": {"TCP": 1}}, "unknown protocol"),
        ({"name": 7, "port": 81}, "name is not a string"),
    ],
)
def test_bad_port_skips_only_that_port(bad_port: Any, reason: str) -> None:
    plan = plan_service(service(ports=[GOOD_PORT, bad_port]), EPS, None, CONFIG)
    assert plan.skip is None
    assert summary(plan) == {"TCP 10.96.0.10:80": ["10.244.1.5:8080"]}
    assert len(plan.problems) == 1, plan.problems
    assert reason in plan.problems[0]


def test_bad_node_port_skips_only_the_node_port() -> None:
    svc = service(type="NodePort", ports=[port(80, "http", "TCP", 70000)])
    plan = plan_service(svc, EPS, None, CONFIG)
    assert list(summary(plan)) == ["TCP 10.96.0.10:80"]
    assert "nodePort" in plan.problems[0]


@pytest.mark.parametrize(
    ("spec", "kept", "reason"),
    [
        ({"externalIPs": ["203.0.113.7", "300.1.1.1"]}, "TCP 203.0.113.7:80", "300.1.1.1"),
        ({"externalIPs": ["203.0.113.7", 5]}, "TCP 203.0.113.7:80", "5"),
        ({"externalIPs": ["203.0.113.7", "10.0.0.0/8"]}, "TCP 203.0.113.7:80", "10.0.0.0/8"),
    ],
)
def test_bad_external_ip_skips_only_that_ip(spec: dict[str, Any], kept: str, reason: str) -> None:
    plan = plan_service(service(ports=[GOOD_PORT], **spec), EPS, None, CONFIG)
    assert set(summary(plan)) == {"TCP 10.96.0.10:80", kept}
    assert len(plan.problems) == 1
    assert reason in plan.problems[0]


def test_bad_cluster_ip_of_one_family_keeps_the_other() -> None:
    plan = plan_service(service(cluster_ips=("10.96.0.10", "fd00::zz")), [], None, CONFIG)
    assert list(summary(plan)) == ["TCP 10.96.0.10:80"]
    assert "fd00::zz" in plan.problems[0]


def test_bad_lb_ingress_and_source_range() -> None:
    svc = service(
        type="LoadBalancer",
        ports=[port(443, "", "TCP", 30443)],
        lb_ingress=[
            {"ip": "203.0.113.7"},
            {"ip": "nonsense"},
            "junk",
            {"ip": "203.0.113.8", "ipMode": "Weird"},
        ],
        loadBalancerSourceRanges=["10.0.0.0/8", "10.0.0.0/33"],
    )
    plan = plan_service(svc, [], None, CONFIG)
    assert sorted(k.address for k in plan.state.virtual_servers if k.port == 443) == [
        "10.96.0.10",
        "203.0.113.7",
    ]
    assert plan.state.ipsets["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == {"203.0.113.7,tcp:443,10.0.0.0/8"}
    assert len(plan.problems) == 3


def test_bad_endpoints_skip_only_themselves() -> None:
    good = endpoint("10.244.1.5")
    eps = [good, endpoint("10.244.1.300"), endpoint("fd00::1"), "junk", {"addresses": "10.244.1.6"}]
    plan = plan_service(
        service(),
        [endpoint_slice(eps), "junk-slice", endpoint_slice([good], address_type="IPv5", name="x")],
        None,
        CONFIG,
    )
    assert summary(plan) == {"TCP 10.96.0.10:80": ["10.244.1.5:8080"]}
    assert len(plan.problems) == 4, plan.problems  # .300, IPv6 in IPv4 slice, "junk", IPv5


@pytest.mark.parametrize(
    "svc",
    [
        None,
        "a string",
        42,
        [],
        {},
        {"spec": []},
        {"metadata": "x", "spec": {}},
        {"spec": {"clusterIP": 10}},
    ],
)
def test_unusable_service_is_skipped_with_a_reason(svc: Any) -> None:
    plan = plan_service(svc, [], None, CONFIG)
    assert plan.skip
    assert not plan.skip.startswith("internal error")
    assert plan.state.virtual_servers == {}


@pytest.mark.parametrize(
    "slices", [None, [None], [1, "x", []], [{"endpoints": 5, "ports": "p", "addressType": "IPv4"}]]
)
def test_junk_slices(slices: Any) -> None:
    plan = plan_service(service(), slices, None, CONFIG)
    assert summary(plan) == {"TCP 10.96.0.10:80": []}


@pytest.mark.parametrize(
    "node_obj", [None, "x", {"metadata": None}, {"metadata": {"labels": ["a"]}}]
)
def test_junk_node(node_obj: Any) -> None:
    assert plan_service(service(), [], node_obj, CONFIG).skip is None


@pytest.mark.parametrize("protocol", [["TCP"], {"TCP": 1}, 6])
def test_slice_port_with_bad_protocol_skips_only_that_port(protocol: Any) -> None:
    eps = endpoint_slice([endpoint("10.244.1.5")], [("http", 8080)])
    eps["ports"].append({"name": "http", "port": 9090, "protocol": protocol})
    plan = plan_service(service(ports=[GOOD_PORT]), [eps], None, CONFIG)
    assert plan.skip is None
    assert summary(plan) == {"TCP 10.96.0.10:80": ["10.244.1.5:8080"]}
    assert len(plan.problems) == 1, plan.problems
    assert "bad port" in plan.problems[0]


# An IPv6 zone: the API server rejects it, and neither ipset nor IPVS can carry it.
ZONED = "fe80::1%eth0"


def test_zoned_cluster_ip_is_bad() -> None:
    plan = plan_service(service(cluster_ips=("10.96.0.10", ZONED)), [], None, CONFIG)
    assert list(summary(plan)) == ["TCP 10.96.0.10:80"]
    assert ZONED in plan.problems[0]


def test_zoned_external_ip_and_lb_ip_are_bad() -> None:
    svc = service(
        type="LoadBalancer",
        ports=[port(443, "", "TCP", 30443)],
        externalIPs=[ZONED],
        lb_ingress=[{"ip": ZONED}, {"ip": "203.0.113.7"}],
        loadBalancerSourceRanges=["fe80::%eth0/64", "10.0.0.0/8"],
    )
    plan = plan_service(svc, [], None, CONFIG)
    assert sorted(k.address for k in plan.state.virtual_servers if k.port == 443) == [
        "10.96.0.10",
        "203.0.113.7",
    ]
    assert plan.state.ipsets["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == {"203.0.113.7,tcp:443,10.0.0.0/8"}
    assert len(plan.problems) == 3, plan.problems
    assert "fe80::%eth0/64" in plan.problems[2]


def test_zoned_endpoint_is_bad() -> None:
    svc = service(cluster_ips=("fd00::10",))
    eps = endpoint_slice([endpoint(ZONED), endpoint("fd00:1::5")], address_type="IPv6")
    plan = plan_service(svc, [eps], None, CONFIG)
    assert summary(plan) == {"TCP [fd00::10]:80": ["[fd00:1::5]:8080"]}
    assert len(plan.problems) == 1, plan.problems
    assert "bad endpoint address" in plan.problems[0]
