"""Fixtures: an in-process test API server, a kubeconfig for it, and API clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from ipvsproxy.kube.client import make_api_client
from ipvsproxy.model import ServiceKey
from tests.apiserver import ApiServer


def write_kubeconfig(path: Path, url: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{name: test, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: test, user: {token: test-token}}]\n"
        "contexts: [{name: test, context: {cluster: test, user: test, namespace: default}}]\n"
        "current-context: test\n"
    )
    return path


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    server = ApiServer(bookmark_interval=0.2)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def kubeconfig(apiserver: ApiServer, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", apiserver.url)


@pytest.fixture
async def api(kubeconfig: Path) -> AsyncIterator[client.ApiClient]:
    c = await make_api_client(str(kubeconfig))
    yield c
    await c.close()


class Recorder:
    """A ChangeListener that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def service_changed(self, key: ServiceKey) -> None:
        self.calls.append(("service", key))

    def endpoints_changed(self, key: ServiceKey, trigger_time: float | None) -> None:
        self.calls.append(("endpoints", key, trigger_time))

    def node_changed(self) -> None:
        self.calls.append(("node",))

    def clear(self) -> None:
        self.calls.clear()


def service(
    name: str,
    ns: str = "default",
    *,
    ip: str = "10.96.0.1",
    labels: dict[str, str] | None = None,
    port: int = 80,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "selector": {"app": name},
            "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": 8080}],
            "sessionAffinity": "None",
        },
    }


def endpoint_slice(
    name: str,
    svc: str,
    ns: str = "default",
    *,
    ips: list[str] | None = None,
    ready: bool = True,
    trigger: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ns,
        "labels": {
            "kubernetes.io/service-name": svc,
            "endpointslice.kubernetes.io/managed-by": "x",
            **(labels or {}),
        },
    }
    if trigger:
        meta["annotations"] = {"endpoints.kubernetes.io/last-change-trigger-time": trigger}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": ready, "terminating": False},
                "nodeName": "node-a",
                "zone": "zone-1",
                "targetRef": {"kind": "Pod", "name": f"pod-{ip}", "namespace": ns, "uid": "u"},
            }
            for ip in (ips or ["10.0.0.1"])
        ],
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080, "appProtocol": "http"}],
    }


def node(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.10"}]},
    }
