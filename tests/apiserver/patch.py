"""PATCH bodies: JSON merge patch (RFC 7386), a strategic merge patch good enough for
kubectl apply on the kinds served here, and JSON patch (RFC 6902) add/remove/replace."""

from __future__ import annotations

import copy
from typing import Any

from tests.apiserver.store import ApiError

# patchMergeKey of the list fields kubectl may patch on these kinds (from the Go types).
MERGE_KEYS = {
    "ports": "port",
    "conditions": "type",
    "taints": "key",
    "addresses": "type",
    "containers": "name",
    "env": "name",
}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            result[name] = [x for x in result.get(name) or [] if x not in v]
            continue
        if k.startswith("$"):
            continue
        if v is None:
            result.pop(k, None)
        elif (
            isinstance(v, list) and k in MERGE_KEYS and _dict_list(v) and _dict_list(result.get(k))
        ):
            result[k] = _merge_list(result.get(k) or [], v, MERGE_KEYS[k])
        else:
            result[k] = strategic_merge_patch(result.get(k), v)
    for name, order in orders.items():
        mk = MERGE_KEYS.get(name)
        if mk and isinstance(result.get(name), list):
            wanted = [o.get(mk) for o in order if isinstance(o, dict)]
            items = result[name]
            result[name] = sorted(
                items,
                key=lambda x: wanted.index(x.get(mk)) if x.get(mk) in wanted else len(wanted),
            )
    return result


def _dict_list(v: Any) -> bool:
    return v is None or (isinstance(v, list) and all(isinstance(x, dict) for x in v))


def _merge_list(old: list[Any], patch: list[Any], mk: str) -> list[Any]:
    out = [dict(x) for x in old]
    for item in patch:
        idx = next((i for i, x in enumerate(out) if x.get(mk) == item.get(mk)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append({k: v for k, v in item.items() if not k.startswith("$")})
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def json_patch(target: Any, ops: Any) -> Any:
    doc = copy.deepcopy(target)
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "json patch must be a list")
    for op in ops:
        path = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in path[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = path[-1]
        kind = op["op"]
        if kind == "test":
            cur = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if cur != op["value"]:
                raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last)
        else:
            raise ApiError(400, "BadRequest", f"unsupported json patch op {kind}")
    return doc
