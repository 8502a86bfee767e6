"""Kubernetes objects as the API server sends them, for every test: Services,
EndpointSlices and Nodes. The one place that knows their JSON shape.

Defaults describe a small ClusterIP Service ``default/web`` on ``10.96.0.10:80``
with endpoints on port 8080; keyword arguments change one field at a time.
"""

from __future__ import annotations

from typing import Any

NODE = "node-a"
NODE_V4 = "192.168.1.10"
NODE_V6 = "2001:db8::10"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"


def port(
    number: int = 80,
    name: str = "",
    protocol: str = "TCP",
    node_port: int | None = None,
    target: int | None = None,
) -> dict[str, Any]:
    """A Service port; the target port is the port unless given."""
    p: dict[str, Any] = {
        "name": name,
        "port": number,
        "protocol": protocol,
        "targetPort": number if target is None else target,
    }
    if node_port is not None:
        p["nodePort"] = node_port
    return p


def service(
    name: str = "web",
    *,
    namespace: str = "default",
    type: str = "ClusterIP",
    cluster_ips: tuple[str, ...] = ("10.96.0.10",),
    ports: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    lb_ingress: list[dict[str, Any]] | None = None,
    resource_version: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Service; ``spec`` adds or replaces spec fields (camelCase, as the API has them)."""
    body: dict[str, Any] = {
        "type": type,
        "clusterIP": cluster_ips[0] if cluster_ips else "",
        "clusterIPs": list(cluster_ips),
        "ports": ports if ports is not None else [port()],
    }
    body.update(spec)
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "labels": labels or {},
        "annotations": annotations or {},
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": body,
        "status": {"loadBalancer": {"ingress": lb_ingress or []}},
    }


def endpoint(
    ip: str,
    node: str | None = "node-b",
    *,
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
    zone: str | None = None,
    zones: list[str] | None = None,
    nodes: list[str] | None = None,
    pod: str | None = None,
) -> dict[str, Any]:
    """One endpoint; a condition left None is absent, as the API allows. ``zones`` and
    ``nodes`` are topology hints; ``pod`` adds a targetRef to that Pod."""
    conditions: dict[str, Any] = {}
    for key, value in (("ready", ready), ("serving", serving), ("terminating", terminating)):
        if value is not None:
            conditions[key] = value
    ep: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if node is not None:
        ep["nodeName"] = node
    if zone is not None:
        ep["zone"] = zone
    hints: dict[str, Any] = {}
    if zones is not None:
        hints["forZones"] = [{"name": z} for z in zones]
    if nodes is not None:
        hints["forNodes"] = [{"name": n} for n in nodes]
    if hints:
        ep["hints"] = hints
    if pod is not None:
        ep["targetRef"] = {"kind": "Pod", "name": pod, "uid": f"uid-{pod}"}
    return ep


def endpoint_slice(
    endpoints: list[dict[str, Any]],
    ports: list[tuple[str, int]] | list[tuple[str, int, str]] | None = None,
    *,
    service: str = "web",
    name: str | None = None,
    namespace: str = "default",
    address_type: str | None = None,
    labels: dict[str, str] | None = None,
    trigger_time: str | None = None,
) -> dict[str, Any]:
    """An EndpointSlice of ``service`` (named ``<service>-1`` unless given). ``ports``:
    (name, port[, protocol]), the name being the Service port's; default one unnamed 8080.
    The address type follows the first endpoint's address unless given."""
    port_list = []
    for item in ports if ports is not None else [("", 8080)]:
        protocol = item[2] if len(item) == 3 else "TCP"
        port_list.append({"name": item[0], "port": item[1], "protocol": protocol})
    if address_type is None:
        first = endpoints[0]["addresses"][0] if endpoints and endpoints[0]["addresses"] else ""
        address_type = "IPv6" if ":" in first else "IPv4"
    metadata: dict[str, Any] = {
        "name": name or f"{service}-1",
        "namespace": namespace,
        "labels": {SERVICE_NAME_LABEL: service, **(labels or {})},
    }
    if trigger_time is not None:
        metadata["annotations"] = {TRIGGER_TIME: trigger_time}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": metadata,
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": port_list,
    }


def node(
    name: str = NODE,
    *,
    zone: str | None = None,
    labels: dict[str, str] | None = None,
    pod_cidrs: list[str] | None = None,
    addresses: list[tuple[str, str]] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Node; ``addresses``: (type, address) pairs of its status, e.g. ("InternalIP", ip)."""
    all_labels = dict(labels or {})
    if zone:
        all_labels["topology.kubernetes.io/zone"] = zone
    body: dict[str, Any] = dict(spec)
    if pod_cidrs:
        body["podCIDR"] = pod_cidrs[0]
        body["podCIDRs"] = list(pod_cidrs)
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "spec": body,
    }
    if addresses is not None:
        obj["status"] = {"addresses": [{"type": t, "address": a} for t, a in addresses]}
    return obj
