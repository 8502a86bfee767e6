"""A cluster for end-to-end tests: objects in a ClusterCache, and the reconciler on the real kernel.

The API objects are built as the API server sends them; the reconciler is the
proxy's own, driven one sync at a time so a test states exactly when the
kernel changes.
"""

from __future__ import annotations

from typing import Any

from ipvsproxy.app import open_dataplane
from ipvsproxy.config import Config
from ipvsproxy.core.model import ServiceKey
from ipvsproxy.dataplane.executor import Dataplane
from ipvsproxy.kube.cache import ClusterCache
from ipvsproxy.node_setup import prepare_kernel
from ipvsproxy.reconciler import Reconciler, Settings, SyncResult
from tests.support import builders
from tests.support.builders import NODE


def service_object(
    name: str,
    cluster_ip: str,
    ports: list[tuple[int, int, str]],
    **spec: Any,
) -> dict[str, Any]:
    """``ports``: (port, targetPort, protocol), port N named "pN"; ``spec``: extra spec
    fields (camelCase), ``nodePorts`` (one per port), ``annotations`` and ``status``."""
    node_ports = spec.pop("nodePorts", None)
    status = spec.pop("status", None)
    svc = builders.service(
        name,
        cluster_ips=(cluster_ip,),
        ports=[
            builders.port(
                number, f"p{number}", proto, node_ports[i] if node_ports else None, target
            )
            for i, (number, target, proto) in enumerate(ports)
        ],
        annotations=spec.pop("annotations", None),
        resource_version="1",
        **spec,
    )
    if status:
        svc["status"] = status
    return svc


def slice_object(
    service: str,
    endpoints: list[tuple[str, bool]],
    ports: list[tuple[str, int, str]],
    *,
    suffix: str = "1",
    nodes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``endpoints``: (ip, ready), a not-ready one terminating; ``ports``: (name, port,
    protocol), the name being the service port's (service_object names port N "pN");
    ``nodes``: the node of an endpoint by its ip, when not this one."""
    return builders.endpoint_slice(
        [
            builders.endpoint(
                ip, (nodes or {}).get(ip, NODE), ready=ready, serving=True, terminating=not ready
            )
            for ip, ready in endpoints
        ],
        ports,
        service=service,
        name=f"{service}-{suffix}",
    )


class Cluster:
    """The proxy's reconciler on the kernel of the calling thread's namespace."""

    def __init__(self, dataplane: Dataplane, **settings: Any) -> None:
        self.dataplane = dataplane
        self.cache = ClusterCache()
        defaults: dict[str, Any] = {"node_name": NODE, "drain_period": 0.0}
        self.reconciler = Reconciler(self.cache, dataplane, Settings(**(defaults | settings)))
        self.cache.listener = self.reconciler

    @classmethod
    async def open(cls, **settings: Any) -> Cluster:
        """Open the dataplane and prepare the kernel (modules, sysctls) as the proxy does."""
        dataplane = await open_dataplane()
        await prepare_kernel(dataplane, Config())
        return cls(dataplane, **settings)

    def apply(self, *objects: dict[str, Any]) -> None:
        for obj in objects:
            store = self.cache.service_store if obj["kind"] == "Service" else self.cache.slice_store
            store.upsert(obj)

    def delete_service(self, name: str) -> None:
        self.cache.service_store.delete(self.cache.services[ServiceKey("default", name)])

    async def sync(self) -> SyncResult:
        result = await self.reconciler.sync_once()
        assert result is not None, "sync failed"
        return result

    async def close(self) -> None:
        await self.dataplane.close()
