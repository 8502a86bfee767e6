"""Discovery documents (/api, /apis, /api/v1, ...), /version, and server-side Table printing,
shaped like kube-apiserver's so kubectl finds its resources and prints its usual columns."""

from __future__ import annotations

import datetime
from typing import Any

from tests.apiserver.store import RESOURCES, Obj, Resource

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def version() -> Obj:
    return {
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-ipvsproxy-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def api_versions(host: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for r in RESOURCES:
        if r.group and r.version not in groups.setdefault(r.group, []):
            groups[r.group].append(r.version)
    return groups


def api_group_list() -> Obj:
    items = []
    for group, versions in _groups().items():
        gv = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        items.append({"name": group, "versions": gv, "preferredVersion": gv[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": items}


def api_group(group: str) -> Obj | None:
    versions = _groups().get(group)
    if not versions:
        return None
    gv = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": gv,
        "preferredVersion": gv[0],
    }


def resource_list(group: str, ver: str) -> Obj | None:
    rs = [r for r in RESOURCES if r.group == group and r.version == ver]
    if not rs:
        return None
    items: list[Obj] = []
    for r in rs:
        items.append(
            {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": VERBS,
                "shortNames": list(r.short_names),
            }
        )
        if r.kind in ("Service", "Node", "Namespace"):
            items.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    gv = f"{group}/{ver}" if group else ver
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}


# ---- Table printing (what `kubectl get` shows) ----------------------------------------------


def _age(obj: Obj) -> str:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    created = datetime.datetime.fromisoformat(ts)
    secs = int((datetime.datetime.now(datetime.UTC) - created).total_seconds())
    if secs < 120:
        return f"{max(secs, 0)}s"
    if secs < 7200:
        return f"{secs // 60}m"
    return f"{secs // 3600}h"


def _service_cells(obj: Obj) -> list[Any]:
    spec = obj.get("spec") or {}
    typ = spec.get("type") or "ClusterIP"
    ext = list(spec.get("externalIPs") or [])
    ext += [
        i.get("ip") or i.get("hostname")
        for i in obj.get("status", {}).get("loadBalancer", {}).get("ingress") or []
    ]
    if not ext:
        ext_s = "<pending>" if typ == "LoadBalancer" else "<none>"
    else:
        ext_s = ",".join(str(e) for e in ext)
    ports = []
    for p in spec.get("ports") or []:
        s = f"{p.get('port')}"
        if p.get("nodePort"):
            s += f":{p['nodePort']}"
        ports.append(f"{s}/{p.get('protocol', 'TCP')}")
    return [
        obj["metadata"]["name"],
        typ,
        spec.get("clusterIP") or "<none>",
        ext_s,
        ",".join(ports) or "<none>",
        _age(obj),
        ",".join(f"{k}={v}" for k, v in sorted((spec.get("selector") or {}).items())) or "<none>",
    ]


def _slice_cells(obj: Obj) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in obj.get("ports") or []) or "<unset>"
    addrs = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [
        obj["metadata"]["name"],
        obj.get("addressType", ""),
        ports,
        shown or "<unset>",
        _age(obj),
    ]


def _col(name: str, typ: str = "string", priority: int = 0, fmt: str = "") -> Obj:
    return {"name": name, "type": typ, "format": fmt, "description": "", "priority": priority}


def table_columns(res: Resource) -> list[Obj]:
    if res.kind == "Service":
        return [
            _col("Name", fmt="name"),
            _col("Type"),
            _col("Cluster-IP"),
            _col("External-IP"),
            _col("Port(s)"),
            _col("Age"),
            _col("Selector", priority=1),
        ]
    if res.kind == "EndpointSlice":
        return [
            _col("Name", fmt="name"),
            _col("AddressType"),
            _col("Ports"),
            _col("Endpoints"),
            _col("Age"),
        ]
    return [_col("Name", fmt="name"), _col("Age")]


def table_cells(res: Resource, obj: Obj) -> list[Any]:
    if res.kind == "Service":
        return _service_cells(obj)
    if res.kind == "EndpointSlice":
        return _slice_cells(obj)
    return [obj["metadata"]["name"], _age(obj)]


def table_row(res: Resource, obj: Obj, include: str) -> Obj:
    row: Obj = {"cells": table_cells(res, obj)}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata", {}),
        }
    return row


def table(res: Resource, objs: list[Obj], meta: Obj, include: str) -> Obj:
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": table_columns(res),
        "rows": [table_row(res, o, include) for o in objs],
    }


# ---- OpenAPI v3: just enough for kubectl to see that PATCH takes fieldValidation, so it
# leaves validation to the server (as it does with kube-apiserver >= 1.27) -------------------


def openapi_v3(gv_path: str) -> Obj | None:
    gvs = {(f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}") for r in RESOURCES}
    if not gv_path:
        return {
            "paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash=0"} for gv in sorted(gvs)}
        }
    if gv_path not in gvs:
        return None
    paths: Obj = {}
    for r in RESOURCES:
        base = f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}"
        if base != gv_path:
            continue
        ns = "/namespaces/{namespace}" if r.namespaced else ""
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        paths[f"/{base}{ns}/{r.plural}/{{name}}"] = {
            "patch": {
                "operationId": f"patch{r.kind}",
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                ],
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
    }
