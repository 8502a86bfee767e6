"""Trim API objects (plain dicts from JSON) to the fields a service proxy needs.

The trimmed objects keep the Kubernetes JSON shape and names (service["spec"]["ports"],
slice["endpoints"][i]["conditions"]["ready"], ...), so the planner reads them like the API
documents. Everything else is dropped to save memory: a cluster holds tens of thousands.

Cached objects are shared, read-only values: small sub-dicts that repeat (endpoint conditions,
ports) are deduplicated, so a consumer must never mutate what it gets from the cache.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

Obj = dict[str, Any]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
OWN_ANNOTATION_PREFIX = "ipvsproxy.io/"


class MalformedObject(ValueError):
    """An object whose shape the proxy cannot use; it is skipped and reported."""


_SERVICE_SPEC_FIELDS = (
    "type",
    "clusterIP",
    "clusterIPs",
    "ipFamilies",
    "externalIPs",
    "sessionAffinity",
    "sessionAffinityConfig",
    "externalTrafficPolicy",
    "internalTrafficPolicy",
    "healthCheckNodePort",
    "loadBalancerSourceRanges",
    "trafficDistribution",
    "allocateLoadBalancerNodePorts",
)
_PORT_FIELDS = ("name", "protocol", "port", "targetPort", "nodePort")
_SLICE_PORT_FIELDS = ("name", "protocol", "port")

# Deduplicated read-only values: many endpoints share the same conditions, ports, zones.
_shared: dict[Any, Any] = {}
_SHARED_LIMIT = 100_000


def _share(key: Any, value: Any) -> Any:
    got = _shared.get(key)
    if got is not None:
        return got
    if len(_shared) < _SHARED_LIMIT:
        _shared[key] = value
    return value


def _str(v: Any) -> Any:
    """Intern short strings: names, zones and protocols repeat across thousands of objects."""
    return sys.intern(v) if isinstance(v, str) and len(v) < 64 else v


def _dict(obj: Any, what: str) -> Obj:
    if not isinstance(obj, dict):
        raise MalformedObject(f"{what} is not an object")
    return obj


def _or_empty(v: Any) -> Any:
    return {} if v is None else v


def _list(v: Any, what: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise MalformedObject(f"{what} is not a list")
    return v


def _metadata(obj: Any, namespaced: bool) -> Obj:
    meta = _dict(_dict(obj, "object").get("metadata"), "metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise MalformedObject("metadata.name is missing")
    out: Obj = {"name": name}
    if namespaced:
        ns = meta.get("namespace")
        if not isinstance(ns, str) or not ns:
            raise MalformedObject("metadata.namespace is missing")
        out["namespace"] = _str(ns)
    for k in ("uid", "resourceVersion", "deletionTimestamp"):
        if meta.get(k) is not None:
            out[k] = meta[k]
    return out


def _labels(meta: Obj) -> Obj:
    labels = meta.get("labels")
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise MalformedObject("metadata.labels is not an object")
    return labels


def _string_map(m: Obj) -> Obj:
    return {_str(k): _str(v) for k, v in m.items()}


def trim_service(obj: Any) -> Obj:
    meta = _metadata(obj, namespaced=True)
    raw_meta = obj["metadata"]
    labels = _labels(raw_meta)
    if labels:
        meta["labels"] = _string_map(labels)
    ann = raw_meta.get("annotations")
    if isinstance(ann, dict):
        ours = {k: v for k, v in ann.items() if k.startswith(OWN_ANNOTATION_PREFIX)}
        if ours:
            meta["annotations"] = ours
    spec_in = _dict(_or_empty(obj.get("spec")), "spec")
    spec: Obj = {}
    for k in _SERVICE_SPEC_FIELDS:
        v = spec_in.get(k)
        if v is not None:
            # A Service's own addresses are not interned: nothing else repeats them.
            spec[k] = v if k == "clusterIP" else _str(v)
    ports = []
    for p in _list(spec_in.get("ports"), "spec.ports"):
        p = _dict(p, "spec.ports[]")
        kept = tuple((k, _str(p[k])) for k in _PORT_FIELDS if p.get(k) is not None)
        ports.append(_share(("svcport", kept), dict(kept)))
    spec["ports"] = ports
    out: Obj = {"metadata": meta, "spec": spec}
    status = obj.get("status")
    if isinstance(status, dict):
        lb = status.get("loadBalancer")
        ingress = (
            _list(lb.get("ingress"), "status.loadBalancer.ingress") if isinstance(lb, dict) else []
        )
        kept_ingress = []
        for i in ingress:
            i = _dict(i, "status.loadBalancer.ingress[]")
            entry = {k: i[k] for k in ("ip", "ipMode") if i.get(k) is not None}
            if entry:
                kept_ingress.append(entry)
        if kept_ingress:
            out["status"] = {"loadBalancer": {"ingress": kept_ingress}}
    return out


_conditions: dict[Any, Obj] = {}


def _endpoint(e: Any) -> Obj:
    # The hot loop of a big list (five or more per slice): plain type checks, no helpers.
    if type(e) is not dict:
        raise MalformedObject("endpoints[] is not an object")
    addrs = e.get("addresses")
    if type(addrs) is not list:
        if addrs is not None:
            raise MalformedObject("endpoints[].addresses is not a list")
        addrs = []
    cond = e.get("conditions")
    if cond is None:
        ckey: Any = None
    elif type(cond) is dict:
        ckey = (cond.get("ready"), cond.get("serving"), cond.get("terminating"))
        if not all(v is None or type(v) is bool for v in ckey):
            raise MalformedObject("endpoints[].conditions are not booleans")
    else:
        raise MalformedObject("endpoints[].conditions is not an object")
    shared = _conditions.get(ckey)
    if shared is None:
        # At most 27 combinations: each is one shared, read-only dict.
        names = ("ready", "serving", "terminating")
        pairs = zip(names, ckey, strict=True) if ckey is not None else ()
        shared = {k: v for k, v in pairs if v is not None}
        _conditions[ckey] = shared
    out: Obj = {"addresses": addrs[:], "conditions": shared}
    node = e.get("nodeName")
    if node is not None:
        out["nodeName"] = _str(node)
    zone = e.get("zone")
    if zone is not None:
        out["zone"] = _str(zone)
    hints = e.get("hints")
    if hints:
        out["hints"] = hints
    return out


def trim_endpoint_slice(obj: Any) -> Obj:
    meta = _metadata(obj, namespaced=True)
    meta.pop("uid", None)  # 85 bytes a slice, and nothing downstream needs it
    raw_meta = obj["metadata"]
    svc = _labels(raw_meta).get(SERVICE_NAME_LABEL)
    if not isinstance(svc, str) or not svc:
        raise MalformedObject(f"label {SERVICE_NAME_LABEL} is missing")
    # Not shared nor interned: a Service has one slice per family as a rule, so a
    # table entry per Service would cost more than the copies it saves.
    meta["labels"] = {SERVICE_NAME_LABEL: svc}
    ann = raw_meta.get("annotations")
    if isinstance(ann, dict) and isinstance(ann.get(TRIGGER_TIME_ANNOTATION), str):
        meta["annotations"] = {TRIGGER_TIME_ANNOTATION: ann[TRIGGER_TIME_ANNOTATION]}
    ports = []
    for p in _list(obj.get("ports"), "ports"):
        p = _dict(p, "ports[]")
        kept = tuple((k, _str(p[k])) for k in _SLICE_PORT_FIELDS if p.get(k) is not None)
        ports.append(_share(("sliceport", kept), dict(kept)))
    return {
        "metadata": meta,
        "addressType": _str(obj.get("addressType")),
        "endpoints": [_endpoint(e) for e in _list(obj.get("endpoints"), "endpoints")],
        "ports": ports,
    }


def trim_node(obj: Any) -> Obj:
    meta = _metadata(obj, namespaced=False)
    raw_meta = obj["metadata"]
    meta["labels"] = dict(_labels(raw_meta))
    spec_in = _dict(_or_empty(obj.get("spec")), "spec")
    spec = {
        k: spec_in[k] for k in ("taints", "podCIDR", "podCIDRs", "unschedulable") if k in spec_in
    }
    status_in = _dict(_or_empty(obj.get("status")), "status")
    status: Obj = {}
    if "addresses" in status_in:
        status["addresses"] = _list(status_in["addresses"], "status.addresses")
    if "conditions" in status_in:
        status["conditions"] = [
            {"type": c.get("type"), "status": c.get("status")}
            for c in _list(status_in["conditions"], "status.conditions")
            if isinstance(c, dict)
        ]
    return {"metadata": meta, "spec": spec, "status": status}


def same_content(a: Obj, b: Obj) -> bool:
    """Equal apart from resourceVersion (an unrelated field change bumps it)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        if k == "metadata":
            ma, mb = a[k], b[k]
            if {x: y for x, y in ma.items() if x != "resourceVersion"} != {
                x: y for x, y in mb.items() if x != "resourceVersion"
            }:
                return False
        elif a[k] != b[k]:
            return False
    return True


def trigger_time(slice_: Obj) -> float | None:
    """Epoch seconds of the slice's last-change-trigger-time annotation, if any and valid."""
    text = slice_["metadata"].get("annotations", {}).get(TRIGGER_TIME_ANNOTATION)
    if not text:
        return None
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()
