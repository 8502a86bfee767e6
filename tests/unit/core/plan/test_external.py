"""plan: NodePort, LoadBalancer, externalIPs, source ranges and traffic policies."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ipvsproxy.core import fwmark
from ipvsproxy.core.model import Family, IpProtocol
from ipvsproxy.core.plan.config import PlanConfig
from ipvsproxy.core.plan.service import plan_service
from tests.support.builders import NODE, NODE_V4, endpoint, endpoint_slice, port, service
from tests.support.strategies import CONFIG, colliding_ips, summary

LOCAL, REMOTE = "10.244.1.5", "10.244.2.6"
EPS = [endpoint_slice([endpoint(LOCAL, NODE), endpoint(REMOTE, "node-b")])]
BOTH = [f"{LOCAL}:8080", f"{REMOTE}:8080"]


def nodeport(protocol: str = "TCP", **spec: Any) -> dict[str, Any]:
    return service(type="NodePort", ports=[port(80, "", protocol, 30080)], **spec)


def test_nodeport_on_every_node_address_but_loopback_and_link_local() -> None:
    plan = plan_service(nodeport(), EPS, None, CONFIG)
    assert summary(plan) == {
        "TCP 10.96.0.10:80": BOTH,
        f"TCP {NODE_V4}:30080": BOTH,
    }
    assert plan.state.bound == {"10.96.0.10"}  # node addresses are never bound
    assert plan.state.ipsets["KUBE-NODE-PORT-TCP"] == {"30080"}
    assert "KUBE-NODE-PORT-LOCAL-TCP" not in plan.state.ipsets


def test_dual_stack_nodeport_uses_each_familys_node_addresses() -> None:
    svc = service(
        type="NodePort", cluster_ips=("10.96.0.10", "fd00::a"), ports=[port(80, "", "UDP", 30053)]
    )
    plan = plan_service(svc, [], None, CONFIG)
    assert set(summary(plan)) == {
        "UDP 10.96.0.10:80",
        f"UDP {NODE_V4}:30053",
        "UDP [fd00::a]:80",
        "UDP [2001:db8::10]:30053",
    }
    assert plan.state.ipsets["KUBE-NODE-PORT-UDP"] == {"30053"}
    assert plan.state.ipsets["KUBE-6-NODE-PORT-UDP"] == {"30053"}


def test_sctp_nodeport_set_holds_node_ip_and_port() -> None:
    plan = plan_service(nodeport("SCTP"), [], None, CONFIG)
    assert plan.state.ipsets["KUBE-NODE-PORT-SCTP-HASH"] == {f"{NODE_V4},sctp:30080"}


@pytest.mark.parametrize(
    ("cidrs", "addresses"),
    [
        ((), ["10.0.0.5", NODE_V4]),
        (("10.0.0.0/8",), ["10.0.0.5"]),
        (("192.168.0.0/16", "10.0.0.5/32"), ["10.0.0.5", NODE_V4]),
        (("127.0.0.0/8",), []),
        (("172.16.0.0/12",), []),
    ],
)
def test_nodeport_addresses(cidrs: tuple[str, ...], addresses: list[str]) -> None:
    config = PlanConfig(
        NODE, {Family.V4: frozenset({NODE_V4, "10.0.0.5", "127.0.0.1"})}, nodeport_addresses=cidrs
    )
    plan = plan_service(nodeport(), [], None, config)
    got = sorted(k.address for k in plan.state.virtual_servers if k.port == 30080)
    assert got == addresses
    assert ("KUBE-NODE-PORT-TCP" in plan.state.ipsets) == bool(addresses)


def test_external_ips_get_bound_virtual_servers_unless_the_node_owns_them() -> None:
    svc = service(externalIPs=["203.0.113.7", NODE_V4, "2001:db8::99"])
    plan = plan_service(svc, EPS, None, CONFIG)
    assert summary(plan) == {
        "TCP 10.96.0.10:80": BOTH,
        f"TCP {NODE_V4}:80": BOTH,
        "TCP 203.0.113.7:80": BOTH,
    }  # the IPv6 external IP has no IPv6 cluster IP, so no IPv6 family here
    assert plan.state.bound == {"10.96.0.10", "203.0.113.7"}
    assert plan.state.ipsets["KUBE-EXTERNAL-IP"] == {"203.0.113.7,tcp:80", f"{NODE_V4},tcp:80"}
    assert plan.state.ipsets["KUBE-IPVS-IPS"] == {"10.96.0.10", "203.0.113.7"}


def lb(**spec: Any) -> dict[str, Any]:
    ingress = spec.pop("ingress", [{"ip": "203.0.113.7", "ipMode": "VIP"}])
    return service(
        type="LoadBalancer", ports=[port(443, "", "TCP", 30443)], lb_ingress=ingress, **spec
    )


def test_load_balancer_ingress_ips() -> None:
    plan = plan_service(lb(), EPS, None, CONFIG)
    assert summary(plan)["TCP 203.0.113.7:443"] == BOTH
    assert plan.state.bound == {"10.96.0.10", "203.0.113.7"}
    assert plan.state.ipsets["KUBE-LOAD-BALANCER"] == {"203.0.113.7,tcp:443"}
    assert "KUBE-LOAD-BALANCER-FW" not in plan.state.ipsets


@pytest.mark.parametrize(
    ("ingress", "vips"),
    [
        ([{"ip": "203.0.113.7"}], ["203.0.113.7"]),
        ([{"ip": "203.0.113.7", "ipMode": "Proxy"}], []),
        ([{"hostname": "lb.example.com"}], []),
        (
            [{"ip": "203.0.113.7"}, {"ip": "203.0.113.8", "ipMode": "VIP"}],
            ["203.0.113.7", "203.0.113.8"],
        ),
    ],
)
def test_ingress_ip_mode(ingress: list[dict[str, Any]], vips: list[str]) -> None:
    plan = plan_service(lb(ingress=ingress), [], None, CONFIG)
    assert (
        sorted(
            k.address
            for k in plan.state.virtual_servers
            if k.port == 443 and k.address.startswith("203")
        )
        == vips
    )


def test_ingress_of_a_service_that_is_not_a_load_balancer_is_ignored() -> None:
    svc = service(
        type="NodePort", lb_ingress=[{"ip": "203.0.113.7"}], ports=[port(443, "", "TCP", 30443)]
    )
    assert "TCP 203.0.113.7:443" not in summary(plan_service(svc, [], None, CONFIG))


def test_source_ranges_fill_the_firewall_sets() -> None:
    plan = plan_service(
        lb(loadBalancerSourceRanges=["198.51.100.0/24", "10.1.2.3/8", "192.0.2.1/32"]),
        [],
        None,
        CONFIG,
    )
    sets = plan.state.ipsets
    assert sets["KUBE-LOAD-BALANCER-FW"] == {"203.0.113.7,tcp:443"}
    assert sets["KUBE-LOAD-BALANCER-SOURCE-CIDR"] == {
        "203.0.113.7,tcp:443,198.51.100.0/24",
        "203.0.113.7,tcp:443,10.0.0.0/8",
        "203.0.113.7,tcp:443,192.0.2.1",
    }
    assert "KUBE-LOAD-BALANCER-SOURCE-IP" not in sets  # no range covers the node: it is blocked too


def test_a_range_covering_the_node_lets_the_node_reach_the_lb_ip() -> None:
    plan = plan_service(lb(loadBalancerSourceRanges=["192.168.0.0/16"]), [], None, CONFIG)
    assert plan.state.ipsets["KUBE-LOAD-BALANCER-SOURCE-IP"] == {"203.0.113.7,tcp:443,203.0.113.7"}


def test_allow_all_range_means_no_firewall() -> None:
    plan = plan_service(lb(loadBalancerSourceRanges=["0.0.0.0/0"]), [], None, CONFIG)
    assert not any(name.startswith("KUBE-LOAD-BALANCER-") for name in plan.state.ipsets)


def test_ranges_of_the_other_family_only_block_everything_of_this_family() -> None:
    plan = plan_service(lb(loadBalancerSourceRanges=["fd00::/8"]), [], None, CONFIG)
    assert plan.state.ipsets["KUBE-LOAD-BALANCER-FW"] == {"203.0.113.7,tcp:443"}
    assert "KUBE-LOAD-BALANCER-SOURCE-CIDR" not in plan.state.ipsets


def test_ipv6_source_cidr_set_name_is_truncated_like_kube_proxy() -> None:
    svc = lb(
        cluster_ips=("fd00::a",),
        ingress=[{"ip": "2001:db8:f::7"}],
        loadBalancerSourceRanges=["2001:db8::/32"],
    )
    plan = plan_service(svc, [], None, CONFIG)
    assert plan.state.ipsets["KUBE-6-LOAD-BALANCER-SOURCE-CID"] == {
        "2001:db8:f::7,tcp:443,2001:db8::/32"
    }
    assert plan.state.ipsets["KUBE-6-LOAD-BALANCER-SOURCE-IP"] == {
        "2001:db8:f::7,tcp:443,2001:db8:f::7"
    }


# ------------------------------------------------------------- traffic policy


def test_external_policy_local_sends_external_traffic_to_local_endpoints_only() -> None:
    svc = lb(externalTrafficPolicy="Local", healthCheckNodePort=32000, externalIPs=["198.51.100.9"])
    plan = plan_service(svc, EPS, None, CONFIG)
    external_mark = fwmark.mark_for("198.51.100.9", IpProtocol.TCP, 443)
    lb_mark = fwmark.mark_for("203.0.113.7", IpProtocol.TCP, 443)
    assert summary(plan) == {
        "TCP 10.96.0.10:443": BOTH,
        f"TCP {NODE_V4}:30443": [f"{LOCAL}:8080"],
        "TCP 198.51.100.9:443": [f"{LOCAL}:8080"],
        "TCP 203.0.113.7:443": [f"{LOCAL}:8080"],
        # #115931: in-cluster clients of the LB IP and external IP reach every endpoint.
        f"TCP FWM {external_mark:#x}": BOTH,
        f"TCP FWM {lb_mark:#x}": BOTH,
    }
    sets = plan.state.ipsets
    assert sets["KUBE-EXTERNAL-LOCAL-FWMARK"] == {
        f"198.51.100.9,tcp:443 skbmark {fwmark.stamp(external_mark):#x}/0x3fff",
        f"203.0.113.7,tcp:443 skbmark {fwmark.stamp(lb_mark):#x}/0x3fff",
    }
    assert sets["KUBE-LOAD-BALANCER-LOCAL"] == {"203.0.113.7,tcp:443"}
    assert sets["KUBE-EXTERNAL-IP-LOCAL"] == {"198.51.100.9,tcp:443"}
    assert "KUBE-EXTERNAL-IP" not in sets
    assert sets["KUBE-NODE-PORT-LOCAL-TCP"] == {"30443"}
    assert sets["KUBE-NODE-PORT-TCP"] == {"30443"}
    assert sets["KUBE-HEALTH-CHECK-NODE-PORT"] == {"32000"}
    assert (plan.health_check_node_port, plan.local_endpoints) == (32000, 1)


def test_in_cluster_marks_carry_protocol_and_family() -> None:
    svc = service(
        type="LoadBalancer",
        externalTrafficPolicy="Local",
        internalTrafficPolicy="Local",  # in-cluster traffic to an LB IP is not "internal"
        ports=[port(53, "", "UDP", 30053)],
        cluster_ips=("fd00::a",),
        lb_ingress=[{"ip": "2001:db8:7::7"}],
    )
    eps = [
        endpoint_slice(
            [endpoint("fd00:244::5", NODE), endpoint("fd00:244::6", "node-b")],
            [("", 5353, "UDP")],
            address_type="IPv6",
        )
    ]
    plan = plan_service(svc, eps, None, CONFIG)
    mark = fwmark.mark_for("2001:db8:7::7", IpProtocol.UDP, 53)
    assert fwmark.protocol_of(mark) is IpProtocol.UDP
    found = summary(plan)
    assert found[f"UDP FWM {mark:#x} IPv6"] == ["[fd00:244::5]:5353", "[fd00:244::6]:5353"]
    assert found["UDP [2001:db8:7::7]:53"] == ["[fd00:244::5]:5353"]
    assert found["UDP [fd00::a]:53"] == ["[fd00:244::5]:5353"]
    assert plan.state.ipsets["KUBE-6-EXTERNAL-LOCAL-FWMARK"] == {
        f"2001:db8:7::7,udp:53 skbmark {fwmark.stamp(mark):#x}/0x3fff"
    }


def test_no_mark_without_external_policy_local_or_external_addresses() -> None:
    for svc in (lb(), nodeport(externalTrafficPolicy="Local")):
        plan = plan_service(svc, EPS, None, CONFIG)
        assert not any(key.fwmark for key in plan.state.virtual_servers)
        assert "KUBE-EXTERNAL-LOCAL-FWMARK" not in plan.state.ipsets
    # Positive control: the same load balancer with the policy has its mark.
    plan = plan_service(lb(externalTrafficPolicy="Local"), EPS, None, CONFIG)
    assert [key.fwmark for key in plan.state.virtual_servers if key.fwmark] == [
        fwmark.mark_for("203.0.113.7", IpProtocol.TCP, 443)
    ]


def test_a_mark_taken_by_another_port_of_the_service_is_reported_not_shared() -> None:
    first, second = colliding_ips(443)
    svc = lb(externalTrafficPolicy="Local", externalIPs=[first, second], ingress=[])
    plan = plan_service(svc, EPS, None, CONFIG)
    mark = fwmark.mark_for(first, IpProtocol.TCP, 443)
    assert summary(plan)[f"TCP FWM {mark:#x}"] == BOTH
    assert plan.state.ipsets["KUBE-EXTERNAL-LOCAL-FWMARK"] == {
        f"{first},tcp:443 skbmark {fwmark.stamp(mark):#x}/0x3fff"
    }
    assert any(f"{second}:443: its firewall mark" in p for p in plan.problems)
    assert summary(plan)[f"TCP {second}:443"] == [f"{LOCAL}:8080"]


def test_external_policy_local_without_local_endpoints_falls_back_to_all() -> None:
    """Without a cluster CIDR the node's pods cannot be told from outside clients."""
    eps = [endpoint_slice([endpoint(REMOTE, "node-b")])]
    svc = lb(externalTrafficPolicy="Local", healthCheckNodePort=32000)
    plan = plan_service(svc, eps, None, CONFIG)
    assert summary(plan)["TCP 203.0.113.7:443"] == [f"{REMOTE}:8080"]
    assert plan.local_endpoints == 0


def test_with_a_cluster_cidr_external_clients_get_no_remote_endpoint() -> None:
    """Pods are recognised by the cluster CIDR and use the mark: no fallback for the LB IP
    and external IP, which outside clients reach only through local endpoints. NodePorts
    get no mark, so they keep kube-proxy's fallback."""
    eps = [endpoint_slice([endpoint(REMOTE, "node-b")])]
    svc = lb(externalTrafficPolicy="Local", externalIPs=["198.51.100.9"])
    config = dataclasses.replace(CONFIG, cluster_cidrs=("10.244.0.0/16",))
    found = summary(plan_service(svc, eps, None, config))
    mark = fwmark.mark_for("203.0.113.7", IpProtocol.TCP, 443)
    assert found["TCP 203.0.113.7:443"] == []
    assert found["TCP 198.51.100.9:443"] == []
    assert found[f"TCP FWM {mark:#x}"] == [f"{REMOTE}:8080"]
    assert found[f"TCP {NODE_V4}:30443"] == [f"{REMOTE}:8080"]
    # A cluster CIDR of the other family changes nothing for this one.
    config = dataclasses.replace(CONFIG, cluster_cidrs=("fd00:244::/56",))
    assert summary(plan_service(svc, eps, None, config))["TCP 203.0.113.7:443"] == [
        f"{REMOTE}:8080"
    ]


def test_external_policy_local_is_ignored_for_a_cluster_ip_service() -> None:
    plan = plan_service(service(externalTrafficPolicy="Local"), EPS, None, CONFIG)
    assert summary(plan) == {"TCP 10.96.0.10:80": BOTH}
    # Positive control: on a NodePort Service the same policy keeps the node port local.
    plan = plan_service(nodeport(externalTrafficPolicy="Local"), EPS, None, CONFIG)
    assert summary(plan)[f"TCP {NODE_V4}:30080"] == [f"{LOCAL}:8080"]


def test_internal_policy_local_sends_cluster_ip_traffic_to_local_endpoints_only() -> None:
    plan = plan_service(nodeport(internalTrafficPolicy="Local"), EPS, None, CONFIG)
    assert summary(plan) == {"TCP 10.96.0.10:80": [f"{LOCAL}:8080"], f"TCP {NODE_V4}:30080": BOTH}


def test_internal_policy_local_without_local_endpoints_has_no_real_servers() -> None:
    eps = [endpoint_slice([endpoint(REMOTE, "node-b")])]
    plan = plan_service(service(internalTrafficPolicy="Local"), eps, None, CONFIG)
    assert summary(plan) == {"TCP 10.96.0.10:80": []}


def test_loop_back_set_holds_local_endpoints() -> None:
    plan = plan_service(
        service(ports=[port(53, "", "UDP")]),
        [endpoint_slice([endpoint(LOCAL, NODE), endpoint(REMOTE)], [("", 5353, "UDP")])],
        None,
        CONFIG,
    )
    assert plan.state.ipsets["KUBE-LOOP-BACK"] == {f"{LOCAL},udp:5353,{LOCAL}"}


def test_health_check_port_only_for_load_balancer_with_local_policy() -> None:
    plan = plan_service(lb(healthCheckNodePort=32000), EPS, None, CONFIG)
    assert plan.health_check_node_port == 0
    assert "KUBE-HEALTH-CHECK-NODE-PORT" not in plan.state.ipsets
    # Positive control: with the Local policy the same port is served.
    plan = plan_service(
        lb(healthCheckNodePort=32000, externalTrafficPolicy="Local"), EPS, None, CONFIG
    )
    assert plan.health_check_node_port == 32000
    assert plan.state.ipsets["KUBE-HEALTH-CHECK-NODE-PORT"] == {"32000"}


def test_one_mark_in_both_families_is_no_collision() -> None:
    """IPVS keys a firewall-mark service by family and mark: an IPv4 and an IPv6 address
    of one dual-stack Service may share a mark."""
    v4 = "198.51.100.9"
    mark = fwmark.mark_for(v4, IpProtocol.TCP, 443)
    v6 = next(
        ip
        for ip in (f"2001:db8:9::{n:x}" for n in range(1, 65536))
        if fwmark.mark_for(ip, IpProtocol.TCP, 443) == mark
    )
    svc = lb(
        externalTrafficPolicy="Local",
        healthCheckNodePort=32000,
        externalIPs=[v4, v6],
        ingress=[],
        cluster_ips=("10.96.0.10", "fd00::a"),
    )
    eps = [
        endpoint_slice([endpoint(LOCAL, NODE)]),
        endpoint_slice([endpoint("fd00:244::5", NODE)], name="web-6", address_type="IPv6"),
    ]
    plan = plan_service(svc, eps, None, CONFIG)
    assert plan.problems == ()
    found = summary(plan)
    assert found[f"TCP FWM {mark:#x}"] == [f"{LOCAL}:8080"]
    assert found[f"TCP FWM {mark:#x} IPv6"] == ["[fd00:244::5]:8080"]
