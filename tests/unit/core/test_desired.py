"""DesiredIndex: two Services whose addresses hash to one firewall mark (#115931)."""

from __future__ import annotations

from ipvsproxy.core import fwmark
from ipvsproxy.core.desired import DesiredIndex
from ipvsproxy.core.model import IpProtocol, ServiceKey
from ipvsproxy.core.plan.service import plan_service
from ipvsproxy.core.state import ServicePlan
from tests.support.builders import NODE, endpoint, endpoint_slice, port, service
from tests.support.strategies import CONFIG, colliding_ips

SET = "KUBE-EXTERNAL-LOCAL-FWMARK"


def _plan(name: str, external_ip: str, pod: str) -> ServicePlan:
    svc = service(
        name,
        type="LoadBalancer",
        lb_ingress=[],
        cluster_ips=(f"10.96.0.{len(name)}",),
        externalTrafficPolicy="Local",
        externalIPs=[external_ip],
        ports=[port(80, "", "TCP", 30000 + len(name))],
    )
    slices = [endpoint_slice([endpoint(pod, NODE), endpoint(pod.replace(".1.", ".2."))], name=name)]
    return plan_service(svc, slices, None, CONFIG)


FIRST, SECOND = colliding_ips(80)
MARK = fwmark.mark_for(FIRST, IpProtocol.TCP, 80)
A, B = ServiceKey("default", "a"), ServiceKey("default", "bb")


def test_the_first_claim_keeps_the_mark_and_the_other_service_gets_no_entry() -> None:
    index = DesiredIndex()
    index.set_plan(A, _plan("a", FIRST, "10.244.1.5"))
    index.set_plan(B, _plan("bb", SECOND, "10.244.1.6"))
    desired = index.desired()
    marked = [key for key in desired.virtual_servers if key.fwmark]
    assert [key.fwmark for key in marked] == [MARK]
    assert sorted(str(k) for k in desired.servers_of(marked[0])) == [
        "10.244.1.5:8080",
        "10.244.2.5:8080",
    ]
    assert desired.ipsets[SET] == {f"{FIRST},tcp:80 skbmark {fwmark.stamp(MARK):#x}/0x3fff"}
    # B's own address virtual server still carries its external traffic.
    assert any(key.address == SECOND for key in desired.virtual_servers)


def test_when_the_holder_goes_the_other_service_takes_the_mark_in_the_same_scope() -> None:
    index = DesiredIndex()
    index.set_plan(A, _plan("a", FIRST, "10.244.1.5"))
    index.set_plan(B, _plan("bb", SECOND, "10.244.1.6"))
    scope = index.set_plan(A, None)
    entry = f"{SECOND},tcp:80 skbmark {fwmark.stamp(MARK):#x}/0x3fff"
    assert (SET, entry) in scope.entries
    desired = index.desired(scope)
    assert desired.ipsets[SET] == {entry}
    marked = next(key for key in desired.virtual_servers if key.fwmark)
    assert sorted(str(k) for k in desired.servers_of(marked)) == [
        "10.244.1.6:8080",
        "10.244.2.6:8080",
    ]
    assert index.desired().ipsets[SET] == {entry}


def test_the_service_that_lost_a_claim_is_told_why() -> None:
    index = DesiredIndex()
    index.set_plan(A, _plan("a", FIRST, "10.244.1.5"))
    index.set_plan(B, _plan("bb", SECOND, "10.244.1.6"))
    assert index.lost_claims(A) == []
    (reason,) = index.lost_claims(B)
    assert f"firewall mark {MARK:#x}" in reason
    assert "Service default/a's" in reason
    # Two Services on one external IP and port: the address itself is the first's.
    index.set_plan(B, _plan("bb", FIRST, "10.244.1.6"))
    reasons = index.lost_claims(B)
    assert f"TCP {FIRST}:80 is Service default/a's, which claimed it first" in reasons


def test_replace_plan_leaves_the_index_as_set_plan_does() -> None:
    # The same history both ways, colliding marks included: a full sync records plans
    # with replace_plan, a partial one with set_plan, and both read the same index.
    steps: list[tuple[ServiceKey, ServicePlan | None]] = [
        (A, _plan("a", FIRST, "10.244.1.5")),
        (B, _plan("bb", SECOND, "10.244.1.6")),
        (A, _plan("a", FIRST, "10.244.1.7")),
        (A, None),
        (A, _plan("a", FIRST, "10.244.1.5")),
    ]
    scoped, unscoped = DesiredIndex(), DesiredIndex()
    for key, plan in steps:
        scoped.set_plan(key, plan)
        unscoped.replace_plan(key, plan)
        assert unscoped.plans == scoped.plans
        assert unscoped.desired() == scoped.desired()
        assert [unscoped.lost_claims(k) for k in (A, B)] == [scoped.lost_claims(k) for k in (A, B)]
