"""The server's state: objects, one global resourceVersion, and the change history.

Objects are kept both as dicts and as their JSON bytes, so that a list of 10,000 objects is a
join of bytes rather than 10,000 json.dumps calls.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import datetime
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    fields: frozenset[str] = frozenset({"metadata.name", "metadata.namespace"})

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


_EVENT_FIELDS = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "involvedObject.kind",
        "involvedObject.name",
        "involvedObject.namespace",
        "involvedObject.uid",
        "reason",
        "type",
        "regarding.name",
        "regarding.kind",
        "regarding.namespace",
    }
)

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "services", "Service", True, ("svc",)),
    Resource("", "v1", "nodes", "Node", False, ("no",)),
    Resource("", "v1", "events", "Event", True, ("ev",), _EVENT_FIELDS),
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",)),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    Resource("events.k8s.io", "v1", "events", "Event", True, ("ev",), _EVENT_FIELDS),
)


def find_resource(group: str, version: str, plural: str) -> Resource | None:
    for r in RESOURCES:
        if (r.group, r.version, r.plural) == (group, version, plural):
            return r
    return None


def by_kind(api_version: str, kind: str) -> Resource | None:
    for r in RESOURCES:
        if r.api_version == api_version and r.kind == kind:
            return r
    return None


class ApiError(Exception):
    """An error the server turns into a Status response."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


@dataclass
class Change:
    rv: int
    resource: Resource
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    raw: bytes
    prev: Obj | None
    prev_raw: bytes | None


Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped


@dataclass
class Table:
    resource: Resource
    objects: dict[Key, tuple[Obj, bytes]] = field(default_factory=dict)
    _sorted: list[Key] | None = None

    def sorted_keys(self) -> list[Key]:
        if self._sorted is None:
            self._sorted = sorted(self.objects)
        return self._sorted


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dump(obj: Obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Store:
    """All objects, the change log, and the knobs tests turn (compaction, token expiry)."""

    def __init__(self) -> None:
        self.rv = 1
        self.tables = {r: Table(r) for r in RESOURCES}
        self.log: list[Change] = []
        # Watches from a resourceVersion below this one get 410 Gone.
        self.compacted_rv = 0
        # Continue tokens issued below this resourceVersion get 410 Gone.
        self.continue_min_rv = 0
        self._wakeup = asyncio.Event()

    # ---- reading -------------------------------------------------------------------------

    def get(self, res: Resource, ns: str, name: str) -> Obj:
        entry = self.tables[res].objects.get((ns if res.namespaced else "", name))
        if entry is None:
            group = res.group or ""
            raise ApiError(
                404, "NotFound", f'{res.plural}{"." + group if group else ""} "{name}" not found'
            )
        return entry[0]

    def state_at(self, res: Resource, rv: int) -> dict[Key, tuple[Obj, bytes]]:
        """The table as it was at resourceVersion rv, rebuilt by undoing later changes."""
        table = self.tables[res].objects
        if rv >= self.rv:
            return table
        if rv < self.compacted_rv:
            raise ApiError(410, "Expired", "too old resource version")
        state = dict(table)
        i = len(self.log)
        while i > 0 and self.log[i - 1].rv > rv:
            i -= 1
            ch = self.log[i]
            if ch.resource != res:
                continue
            key = _key(res, ch.obj)
            if ch.prev is None:
                state.pop(key, None)
            else:
                assert ch.prev_raw is not None
                state[key] = (ch.prev, ch.prev_raw)
        return state

    def changes_after(self, index: int) -> list[Change]:
        return self.log[index:]

    def log_index_after(self, rv: int) -> int:
        """Index of the first change with a resourceVersion above rv."""
        return bisect.bisect_right(self.log, rv, key=lambda c: c.rv)

    async def wait_change(self, timeout: float) -> None:
        ev = self._wakeup
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout)

    # ---- writing -------------------------------------------------------------------------

    def _commit(self, res: Resource, typ: str, obj: Obj, prev: tuple[Obj, bytes] | None) -> Obj:
        self.rv += 1
        table = self.tables[res]
        key = _key(res, obj)
        if typ == "DELETED":
            del table.objects[key]
            table._sorted = None
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.rv)
        else:
            obj["metadata"]["resourceVersion"] = str(self.rv)
            if key not in table.objects:
                table._sorted = None
            table.objects[key] = (obj, dump(obj))
        raw = table.objects[key][1] if typ != "DELETED" else dump(obj)
        self.log.append(
            Change(
                self.rv,
                res,
                typ,
                obj,
                raw,
                prev[0] if prev else None,
                prev[1] if prev else None,
            )
        )
        self._wakeup.set()
        self._wakeup = asyncio.Event()
        return obj

    def create(self, res: Resource, ns: str, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, "Invalid", "metadata.name: Required value: name is required")
        if res.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and ns and body_ns != ns:
                raise ApiError(
                    400, "BadRequest", "the namespace of the provided object does not match"
                )
            meta["namespace"] = ns or body_ns or "default"
        else:
            meta.pop("namespace", None)
        if _key(res, obj) in self.tables[res].objects:
            raise ApiError(409, "AlreadyExists", f'{res.plural} "{meta["name"]}" already exists')
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_iso()
        meta.setdefault("generation", 1)
        return self._commit(res, "ADDED", obj, None)

    def update(self, res: Resource, ns: str, name: str, body: Obj) -> Obj:
        old = self.get(res, ns, name)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        want = meta.get("resourceVersion")
        if want and want != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.plural} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the URL")
        for k in ("uid", "creationTimestamp", "name", "namespace"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        if obj.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        prev = self.tables[res].objects[_key(res, old)]
        return self._commit(res, "MODIFIED", obj, prev)

    def delete(self, res: Resource, ns: str, name: str) -> Obj:
        old = self.get(res, ns, name)
        prev = self.tables[res].objects[_key(res, old)]
        return self._commit(res, "DELETED", old, prev)

    def apply_object(self, body: Obj) -> Obj:
        """Create or replace an object given in full (used to load state files)."""
        res = by_kind(str(body.get("apiVersion")), str(body.get("kind")))
        if res is None:
            raise ApiError(400, "BadRequest", f"unknown kind {body.get('kind')}")
        meta = body.get("metadata") or {}
        ns = meta.get("namespace", "default") if res.namespaced else ""
        key = (ns, meta.get("name", ""))
        if key in self.tables[res].objects:
            body = copy.deepcopy(body)
            body["metadata"].pop("resourceVersion", None)
            return self.update(res, ns, key[1], body)
        return self.create(res, ns, body)

    # ---- knobs for tests -----------------------------------------------------------------

    def compact(self, rv: int | None = None) -> None:
        """Forget history up to rv (default: all of it), like etcd compaction."""
        upto = self.rv if rv is None else rv
        self.compacted_rv = max(self.compacted_rv, upto)
        self.continue_min_rv = max(self.continue_min_rv, upto)
        self.log = self.log[self.log_index_after(upto) :]

    def expire_continue_tokens(self) -> None:
        self.continue_min_rv = self.rv + 1


def _key(res: Resource, obj: Obj) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace", "") if res.namespaced else "", meta["name"])
