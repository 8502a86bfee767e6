"""A cluster for end-to-end tests: objects in a ClusterCache, and the reconciler on the real kernel.

The API objects are built as the API server sends them; the reconciler is the
proxy's own, driven one sync at a time so a test states exactly when the
kernel changes.
"""

from __future__ import annotations

from typing import Any

from ipvsproxy.app import open_dataplane, prepare_kernel
from ipvsproxy.config import Config
from ipvsproxy.dataplane.executor import Dataplane
from ipvsproxy.kube.cache import ClusterCache
from ipvsproxy.model import ServiceKey
from ipvsproxy.reconciler import Reconciler, Settings, SyncResult

NODE = "node-a"


def service_object(
    name: str,
    cluster_ip: str,
    ports: list[tuple[int, int, str]],
    **spec: Any,
) -> dict[str, Any]:
    """``ports``: (port, targetPort, protocol); ``spec``: extra spec fields (camelCase)."""
    annotations = spec.pop("annotations", None)
    status = spec.pop("status", None)
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
        "spec": {
            "type": spec.pop("type", "ClusterIP"),
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": [
                {"name": f"p{port}", "port": port, "targetPort": target, "protocol": proto}
                | ({"nodePort": spec["nodePorts"][i]} if "nodePorts" in spec else {})
                for i, (port, target, proto) in enumerate(ports)
            ],
        },
    }
    spec.pop("nodePorts", None)
    body["spec"].update(spec)
    if annotations:
        body["metadata"]["annotations"] = annotations
    if status:
        body["status"] = status
    return body


def slice_object(
    service: str,
    endpoints: list[tuple[str, bool]],
    ports: list[tuple[str, int, str]],
    *,
    suffix: str = "1",
    nodes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``endpoints``: (ip, ready); ``ports``: (name, port, protocol), the name being the
    service port's (service_object names port N "pN"); ``nodes``: the node of an
    endpoint by its ip, when not this one."""
    family = "IPv6" if endpoints and ":" in endpoints[0][0] else "IPv4"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-{suffix}",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": family,
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": True, "terminating": not ready},
                "nodeName": (nodes or {}).get(ip, NODE),
            }
            for ip, ready in endpoints
        ],
        "ports": [{"name": name, "port": port, "protocol": proto} for name, port, proto in ports],
    }


class Cluster:
    """The proxy's reconciler on the kernel of the calling thread's namespace."""

    def __init__(self, dataplane: Dataplane, **settings: Any) -> None:
        self.dataplane = dataplane
        self.cache = ClusterCache()
        defaults: dict[str, Any] = {"node_name": NODE, "min_sync_period": 0.0, "drain_period": 0.0}
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
