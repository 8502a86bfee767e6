"""Trimming API objects, and the cache's change rules (pure, no server)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ipvsproxy.core.model import Family, ServiceKey
from ipvsproxy.kube.cache import ClusterCache
from ipvsproxy.kube.objects import (
    MalformedObject,
    trigger_time,
    trim_endpoint_slice,
    trim_node,
    trim_service,
)
from tests.unit.kube.conftest import Recorder, endpoint_slice, node, service


def full_service() -> dict[str, Any]:
    s = service("web", ip="10.96.0.10")
    s["metadata"].update(
        resourceVersion="7",
        uid="u1",
        annotations={
            "ipvsproxy.io/scheduler": "lc",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
        },
        managedFields=[{"manager": "kubectl"}],
    )
    s["spec"].update(
        type="LoadBalancer",
        externalTrafficPolicy="Local",
        healthCheckNodePort=31000,
        loadBalancerSourceRanges=["1.2.3.0/24"],
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
        externalIPs=["192.0.2.1"],
        publishNotReadyAddresses=True,
    )
    s["spec"]["ports"][0]["nodePort"] = 30080
    s["status"] = {
        "loadBalancer": {
            "ingress": [{"ip": "203.0.113.1", "ipMode": "VIP", "ports": [{"port": 80}]}]
        }
    }
    return s


def test_trim_service_keeps_proxy_fields_only() -> None:
    t = trim_service(full_service())
    assert t["metadata"] == {
        "name": "web",
        "namespace": "default",
        "uid": "u1",
        "resourceVersion": "7",
        "annotations": {"ipvsproxy.io/scheduler": "lc"},
    }
    assert t["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}
    ]
    assert t["spec"]["healthCheckNodePort"] == 31000
    assert t["spec"]["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 60}}
    assert "selector" not in t["spec"]
    assert "publishNotReadyAddresses" not in t["spec"]
    assert t["status"] == {"loadBalancer": {"ingress": [{"ip": "203.0.113.1", "ipMode": "VIP"}]}}


def test_trim_slice_and_node() -> None:
    s = trim_endpoint_slice(
        endpoint_slice("a-1", "a", ips=["10.0.0.1", "10.0.0.2"], trigger="2024-01-01T00:00:00Z")
    )
    assert s["metadata"]["labels"] == {"kubernetes.io/service-name": "a"}
    assert trigger_time(s) == 1704067200.0
    assert s["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert "targetRef" not in s["endpoints"][0]
    # Equal conditions are one shared object.
    assert s["endpoints"][0]["conditions"] is s["endpoints"][1]["conditions"]
    n = node("n1", {"zone": "z"})
    n["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    n["spec"]["taints"] = [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]
    tn = trim_node(n)
    assert tn["metadata"]["deletionTimestamp"] == "2024-01-01T00:00:00Z"
    assert tn["spec"]["taints"][0]["key"] == "ToBeDeletedByClusterAutoscaler"
    assert tn["status"]["addresses"] == [{"type": "InternalIP", "address": "192.168.0.10"}]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda o: "not a dict",
        lambda o: {**o, "metadata": {"namespace": "default"}},
        lambda o: {**o, "metadata": None},
        lambda o: {**o, "spec": {**o["spec"], "ports": [1]}},
        lambda o: {**o, "spec": []},
    ],
)
def test_malformed_services(mutate: Any) -> None:
    with pytest.raises(MalformedObject):
        trim_service(mutate(service("x")))


def test_malformed_slices() -> None:
    bad: dict[str, Any] = endpoint_slice("a-1", "a")
    bad["endpoints"][0]["conditions"]["ready"] = "yes"
    with pytest.raises(MalformedObject):
        trim_endpoint_slice(bad)
    bad = endpoint_slice("a-1", "a")
    bad["endpoints"] = {"not": "a list"}
    with pytest.raises(MalformedObject):
        trim_endpoint_slice(bad)


def test_bad_trigger_time_is_none() -> None:
    assert (
        trigger_time(trim_endpoint_slice(endpoint_slice("a-1", "a", trigger="yesterday"))) is None
    )
    assert trigger_time(trim_endpoint_slice(endpoint_slice("a-1", "a"))) is None


def test_replace_reports_only_differences() -> None:
    rec = Recorder()
    cache = ClusterCache(rec)
    a, b = trim_service(service("a")), trim_service(service("b"))
    cache.service_store.replace([a, b])
    assert sorted(rec.calls) == [
        ("service", ServiceKey("default", "a")),
        ("service", ServiceKey("default", "b")),
    ]
    rec.clear()
    b2 = copy.deepcopy(b)
    b2["metadata"]["resourceVersion"] = "99"  # only the version changed: no call
    c = trim_service(service("c"))
    cache.service_store.replace([b2, c])
    assert sorted(rec.calls) == [
        ("service", ServiceKey("default", "a")),
        ("service", ServiceKey("default", "c")),
    ]
    assert set(cache.services) == {ServiceKey("default", "b"), ServiceKey("default", "c")}


def test_slices_indexed_by_service_and_moves() -> None:
    rec = Recorder()
    cache = ClusterCache(rec)
    s1 = trim_endpoint_slice(endpoint_slice("x-1", "x"))
    s2 = trim_endpoint_slice(endpoint_slice("x-2", "x", ips=["10.0.0.2"]))
    cache.slice_store.replace([s1, s2])
    assert len(cache.slices_for(ServiceKey("default", "x"))) == 2
    rec.clear()
    moved = trim_endpoint_slice(endpoint_slice("x-2", "y", ips=["10.0.0.2"]))
    cache.slice_store.upsert(moved)
    assert rec.calls == [
        ("endpoints", ServiceKey("default", "x"), None),
        ("endpoints", ServiceKey("default", "y"), None),
    ]
    rec.clear()
    cache.slice_store.replace([moved])
    assert rec.calls == [("endpoints", ServiceKey("default", "x"), None)]
    assert cache.slices_for(ServiceKey("default", "x")) == []
    assert cache.slice_count == 1


def test_a_changed_slice_is_told_with_its_family() -> None:
    """For kube-proxy's ip_family label on network programming latency."""
    told: list[tuple[Any, ...]] = []

    class Listener(Recorder):
        def endpoints_changed(
            self, key: ServiceKey, trigger_time: float | None, family: Family | None = None
        ) -> None:
            told.append((key.name, family))

    cache = ClusterCache(Listener())
    v6 = endpoint_slice("x-2", "x", ips=["fd00::2"])
    v6["addressType"] = "IPv6"
    cache.slice_store.replace([trim_endpoint_slice(endpoint_slice("x-1", "x"))])
    cache.slice_store.upsert(trim_endpoint_slice(v6))
    cache.slice_store.delete(trim_endpoint_slice(v6))
    assert told == [("x", Family.V4), ("x", Family.V6), ("x", None)]


def test_listener_errors_do_not_escape() -> None:
    class Broken(Recorder):
        def service_changed(self, key: ServiceKey) -> None:
            raise RuntimeError("boom")

    cache = ClusterCache(Broken())
    cache.service_store.upsert(trim_service(service("a")))
    assert ServiceKey("default", "a") in cache.services


def test_node_store() -> None:
    rec = Recorder()
    cache = ClusterCache(rec)
    cache.node_store.replace([trim_node(node("n"))])
    cache.node_store.replace([trim_node(node("n"))])
    cache.node_store.replace([])
    assert rec.calls == [("node",), ("node",)]
    assert cache.node is None
