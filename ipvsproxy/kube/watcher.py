"""Runs the three reflectors (Services, EndpointSlices, this Node) into one ClusterCache."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from ipvsproxy.kube.cache import ChangeListener, ClusterCache
from ipvsproxy.kube.calls import ENDPOINT_SLICES, NODES, SERVICES, list_call
from ipvsproxy.kube.client import EventPoster
from ipvsproxy.kube.objects import Obj, trim_endpoint_slice, trim_node, trim_service
from ipvsproxy.kube.reflector import Reflector, ReflectorSettings
from ipvsproxy.kube.server_probe import ServerProbe

# kube-proxy's selector: headless services and those claimed by another proxy are not ours.
PROXY_LABEL_SELECTOR = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"


class ClusterWatcher:
    """Keeps `cache` in step with the cluster and tells `listener` of each change.

    Usage:
        watcher = ClusterWatcher(api, node_name, listener)
        watcher.start()
        await watcher.wait_synced()
        ...
        await watcher.stop()
    """

    def __init__(
        self,
        api: client.ApiClient,
        node_name: str,
        listener: ChangeListener | None = None,
        *,
        settings: ReflectorSettings | None = None,
        events: EventPoster | None = None,
        cache: ClusterCache | None = None,
    ) -> None:
        self.cache = cache or ClusterCache(listener)
        if listener is not None:
            self.cache.listener = listener
        self.node_name = node_name
        self.events = events
        # One probe for the three watches (see ServerProbe); none through an HTTP proxy,
        # where a connection to the proxy says nothing of the server.
        configuration = api.configuration
        probe = None if configuration.proxy else ServerProbe.for_url(configuration.host or "")
        self.reflectors = [
            Reflector(
                "services",
                list_call(api, SERVICES),
                trim_service,
                self.cache.service_store,
                label_selector=PROXY_LABEL_SELECTOR,
                settings=settings,
                probe=probe,
                on_malformed=self._reporter("Service", "v1"),
            ),
            Reflector(
                "endpointslices",
                list_call(api, ENDPOINT_SLICES),
                trim_endpoint_slice,
                self.cache.slice_store,
                label_selector=PROXY_LABEL_SELECTOR,
                settings=settings,
                probe=probe,
                on_malformed=self._reporter("EndpointSlice", "discovery.k8s.io/v1"),
            ),
            Reflector(
                "node",
                list_call(api, NODES),
                trim_node,
                self.cache.node_store,
                field_selector=f"metadata.name={node_name}",
                settings=settings,
                probe=probe,
                on_malformed=self._reporter("Node", "v1"),
            ),
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def _reporter(self, kind: str, api_version: str) -> Callable[[Any, str], None]:
        def report(raw: Any, why: str) -> None:
            if self.events is not None and isinstance(raw, dict):
                self.events.post(
                    raw,
                    kind=kind,
                    api_version=api_version,
                    reason="MalformedObject",
                    message=f"ipvsproxy ignores this {kind}: {why}",
                )

        return report

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(r.run(), name=f"reflector-{r.name}") for r in self.reflectors
            ]

    @property
    def synced(self) -> bool:
        """True once every reflector has completed its first list."""
        return all(r.synced.is_set() for r in self.reflectors)

    async def wait_synced(self) -> None:
        """Return once every reflector has completed its first list (bound it with
        asyncio.timeout); the reconciler deletes nothing before that."""
        for r in self.reflectors:
            await r.synced.wait()

    @property
    def node(self) -> Obj | None:
        return self.cache.node

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.events is not None:
            await self.events.flush()

    async def __aenter__(self) -> ClusterWatcher:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
