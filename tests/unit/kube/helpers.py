"""Waiting for the cache to converge on the server's state."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ipvsproxy.core.model import ServiceKey
from ipvsproxy.kube.objects import SERVICE_NAME_LABEL
from ipvsproxy.kube.watcher import ClusterWatcher
from tests.apiserver import ApiServer
from tests.apiserver.selectors import parse_label_selector
from tests.apiserver.store import find_resource

SELECTOR = parse_label_selector(
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
)


def server_services(server: ApiServer) -> dict[ServiceKey, str]:
    """The services the proxy should see, with their resourceVersions."""
    res = find_resource("", "v1", "services")
    assert res is not None
    return {
        ServiceKey(ns, name): obj["metadata"]["resourceVersion"]
        for (ns, name), (obj, _) in server.store.tables[res].objects.items()
        if SELECTOR(obj["metadata"].get("labels") or {})
    }


def server_slices(server: ApiServer) -> dict[tuple[str, str], str]:
    res = find_resource("discovery.k8s.io", "v1", "endpointslices")
    assert res is not None
    return {
        key: obj["metadata"]["resourceVersion"]
        for key, (obj, _) in server.store.tables[res].objects.items()
        if SELECTOR(obj["metadata"].get("labels") or {})
    }


def cache_services(w: ClusterWatcher) -> dict[ServiceKey, str]:
    return {k: v["metadata"]["resourceVersion"] for k, v in w.cache.services.items()}


def cache_slices(w: ClusterWatcher) -> dict[tuple[str, str], str]:
    out = {}
    for key in w.cache.service_keys_with_slices():
        for s in w.cache.slices_for(key):
            assert s["metadata"]["labels"][SERVICE_NAME_LABEL] == key.name
            out[(key.namespace, s["metadata"]["name"])] = s["metadata"]["resourceVersion"]
    return out


def converged(server: ApiServer, w: ClusterWatcher) -> bool:
    return cache_services(w) == server_services(server) and cache_slices(w) == server_slices(server)


async def eventually(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - polls state that has no event
            await asyncio.sleep(0.02)
