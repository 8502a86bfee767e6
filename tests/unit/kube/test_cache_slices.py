"""A Service's slices in the cache: one kept alone, several in arrival order, by name."""

from __future__ import annotations

from ipvsproxy.core.model import ServiceKey
from ipvsproxy.kube.cache import ClusterCache
from ipvsproxy.kube.objects import trim_endpoint_slice
from tests.unit.kube.conftest import Recorder, endpoint_slice

X = ServiceKey("default", "x")


def names(cache: ClusterCache) -> list[tuple[str, str]]:
    return [(s["metadata"]["name"], s["endpoints"][0]["addresses"][0]) for s in cache.slices_for(X)]


def test_slices_replaced_in_place_and_removed_by_name() -> None:
    cache = ClusterCache(Recorder())
    for i in (1, 2, 3):
        cache.slice_store.upsert(
            trim_endpoint_slice(endpoint_slice(f"x-{i}", "x", ips=[f"10.0.0.{i}"]))
        )
    cache.slice_store.upsert(trim_endpoint_slice(endpoint_slice("x-2", "x", ips=["10.0.0.9"])))
    assert names(cache) == [("x-1", "10.0.0.1"), ("x-2", "10.0.0.9"), ("x-3", "10.0.0.3")]
    cache.slice_store.delete(trim_endpoint_slice(endpoint_slice("x-1", "x")))
    cache.slice_store.delete(trim_endpoint_slice(endpoint_slice("x-3", "x")))
    assert names(cache) == [("x-2", "10.0.0.9")]
    cache.slice_store.upsert(trim_endpoint_slice(endpoint_slice("x-2", "x", ips=["10.0.0.8"])))
    assert names(cache) == [("x-2", "10.0.0.8")]
    cache.slice_store.delete(trim_endpoint_slice(endpoint_slice("x-2", "x")))
    assert cache.slices_for(X) == []
    assert cache.slice_count == 0
