"""Fixtures: an in-process test API server, a kubeconfig for it, and API clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from ipvsproxy.core.model import Family, ServiceKey
from ipvsproxy.kube.client import make_api_client
from tests.apiserver import ApiServer
from tests.support import builders, proxy_node


@pytest.fixture
async def apiserver() -> AsyncIterator[ApiServer]:
    server = ApiServer(bookmark_interval=0.2)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def kubeconfig(apiserver: ApiServer, tmp_path: Path) -> Path:
    return proxy_node.kubeconfig(apiserver.url, tmp_path)


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

    def endpoints_changed(
        self, key: ServiceKey, trigger_time: float | None, family: Family | None = None
    ) -> None:
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
    return builders.service(
        name,
        namespace=ns,
        cluster_ips=(ip,),
        labels=labels,
        ports=[builders.port(port, "http", target=8080)],
        ipFamilies=["IPv4"],
        selector={"app": name},
        sessionAffinity="None",
    )


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
    """A slice as the EndpointSlice controller writes it: fields the proxy does not read
    (targetRef, zone, appProtocol, managed-by) included, so trimming is exercised."""
    obj = builders.endpoint_slice(
        [
            builders.endpoint(
                ip,
                "node-a",
                ready=ready,
                serving=ready,
                terminating=False,
                zone="zone-1",
                pod=f"pod-{ip}",
            )
            for ip in (ips or ["10.0.0.1"])
        ],
        [("http", 8080, "TCP")],
        service=svc,
        name=name,
        namespace=ns,
        labels={"endpointslice.kubernetes.io/managed-by": "x", **(labels or {})},
        trigger_time=trigger,
    )
    obj["ports"][0]["appProtocol"] = "http"
    return obj


def node(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return builders.node(
        name,
        labels=labels,
        pod_cidrs=["10.244.0.0/24"],
        addresses=[("InternalIP", "192.168.0.10")],
    )
