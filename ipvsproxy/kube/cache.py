"""The cluster as the proxy sees it: Services, EndpointSlices by service, and this Node.

Reflectors feed the three stores; each store tells the listener what changed, synchronously,
and only when a field the proxy keeps really changed. A relist goes through `replace`, which
turns the difference between the new list and the cache into the same change calls, so a
410 Gone never looks like a mass delete and re-add.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import structlog

from ipvsproxy.core.model import Family, ServiceKey
from ipvsproxy.kube.objects import SERVICE_NAME_LABEL, Obj, same_content, trigger_time

log = structlog.get_logger(__name__)


class ChangeListener(Protocol):
    """Told of each change as the cache applies it (called synchronously, must not block)."""

    def service_changed(self, key: ServiceKey) -> None: ...

    def endpoints_changed(
        self, key: ServiceKey, trigger_time: float | None, family: Family | None = None
    ) -> None:
        """trigger_time: epoch seconds from endpoints.kubernetes.io/last-change-trigger-time;
        family: the changed slice's address type (None: unknown, or a slice gone)."""

    def node_changed(self) -> None: ...


class Store(Protocol):
    """What a reflector writes into. Objects are already trimmed."""

    def replace(self, objects: Iterable[Obj]) -> None: ...

    def upsert(self, obj: Obj) -> None: ...

    def delete(self, obj: Obj) -> None: ...


class _NullListener:
    def service_changed(self, key: ServiceKey) -> None:
        pass

    def endpoints_changed(
        self, key: ServiceKey, trigger_time: float | None, family: Family | None = None
    ) -> None:
        pass

    def node_changed(self) -> None:
        pass


_ADDRESS_TYPES = {"IPv4": Family.V4, "IPv6": Family.V6}


def _service_key(obj: Obj) -> ServiceKey:
    meta = obj["metadata"]
    return ServiceKey(meta["namespace"], meta["name"])


class ClusterCache:
    """Read by the planner: `services`, `slices_for(key)`, `node`. Values are read-only."""

    def __init__(self, listener: ChangeListener | None = None) -> None:
        self.listener: ChangeListener = listener or _NullListener()
        self.services: dict[ServiceKey, Obj] = {}
        # Each service's slices: the slice itself when it has one, as most do (a dict
        # by name would cost ~180 bytes a Service), a list when more; and each
        # slice's current service.
        self._slices: dict[ServiceKey, Obj | list[Obj]] = {}
        self._slice_owner: dict[tuple[str, str], ServiceKey] = {}
        self.node: Obj | None = None
        self.service_store: Store = _ServiceStore(self)
        self.slice_store: Store = _SliceStore(self)
        self.node_store: Store = _NodeStore(self)

    def slices_for(self, key: ServiceKey) -> list[Obj]:
        held = self._slices.get(key)
        if held is None:
            return []
        return list(held) if isinstance(held, list) else [held]

    def _slice(self, key: ServiceKey, name: str) -> Obj | None:
        for obj in self.slices_for(key):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def _put_slice(self, key: ServiceKey, name: str, obj: Obj) -> None:
        held = self._slices.get(key)
        if held is None:
            self._slices[key] = obj
            return
        objs = held if isinstance(held, list) else [held]
        for i, other in enumerate(objs):
            if other["metadata"]["name"] == name:
                objs[i] = obj
                break
        else:
            objs.append(obj)
        self._slices[key] = objs if len(objs) > 1 else objs[0]

    def _drop_slice(self, key: ServiceKey, name: str) -> None:
        objs = [o for o in self.slices_for(key) if o["metadata"]["name"] != name]
        if not objs:
            self._slices.pop(key, None)
        else:
            self._slices[key] = objs if len(objs) > 1 else objs[0]

    def service_keys_with_slices(self) -> list[ServiceKey]:
        return list(self._slices)

    @property
    def slice_count(self) -> int:
        return len(self._slice_owner)

    # Listener calls are guarded: a bug downstream must not stop the watch.
    def _tell_service(self, key: ServiceKey) -> None:
        try:
            self.listener.service_changed(key)
        except Exception:
            log.exception("listener failed", change="service", service=str(key))

    def _tell_endpoints(
        self, key: ServiceKey, when: float | None, family: Family | None = None
    ) -> None:
        try:
            self.listener.endpoints_changed(key, when, family)
        except Exception:
            log.exception("listener failed", change="endpoints", service=str(key))

    def _tell_node(self) -> None:
        try:
            self.listener.node_changed()
        except Exception:
            log.exception("listener failed", change="node")


class _ServiceStore:
    def __init__(self, cache: ClusterCache) -> None:
        self.cache = cache

    def upsert(self, obj: Obj) -> None:
        key = _service_key(obj)
        old = self.cache.services.get(key)
        self.cache.services[key] = obj
        if old is None or not same_content(old, obj):
            self.cache._tell_service(key)

    def delete(self, obj: Obj) -> None:
        key = _service_key(obj)
        if self.cache.services.pop(key, None) is not None:
            self.cache._tell_service(key)

    def replace(self, objects: Iterable[Obj]) -> None:
        fresh = {_service_key(o): o for o in objects}
        for o in fresh.values():
            self.upsert(o)
        for key in [k for k in self.cache.services if k not in fresh]:
            del self.cache.services[key]
            self.cache._tell_service(key)


class _SliceStore:
    def __init__(self, cache: ClusterCache) -> None:
        self.cache = cache

    def upsert(self, obj: Obj) -> None:
        meta = obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        owner = ServiceKey(ns, meta["labels"][SERVICE_NAME_LABEL])
        c = self.cache
        before = c._slice_owner.get((ns, name))
        old = c._slice(before, name) if before is not None else None
        if before is not None and before != owner:
            self._remove(before, ns, name)
            c._tell_endpoints(before, None)
        c._put_slice(owner, name, obj)
        c._slice_owner[(ns, name)] = owner
        if old is None or before != owner or not same_content(old, obj):
            family = _ADDRESS_TYPES.get(str(obj.get("addressType")))
            c._tell_endpoints(owner, trigger_time(obj), family)

    def _remove(self, owner: ServiceKey, ns: str, name: str) -> None:
        c = self.cache
        c._drop_slice(owner, name)
        c._slice_owner.pop((ns, name), None)

    def delete(self, obj: Obj) -> None:
        meta = obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        owner = self.cache._slice_owner.get((ns, name))
        if owner is not None:
            self._remove(owner, ns, name)
            self.cache._tell_endpoints(owner, None)

    def replace(self, objects: Iterable[Obj]) -> None:
        seen: set[tuple[str, str]] = set()
        for o in objects:
            meta = o["metadata"]
            seen.add((meta["namespace"], meta["name"]))
            self.upsert(o)
        for ns, name in [k for k in self.cache._slice_owner if k not in seen]:
            owner = self.cache._slice_owner[(ns, name)]
            self._remove(owner, ns, name)
            self.cache._tell_endpoints(owner, None)


class _NodeStore:
    def __init__(self, cache: ClusterCache) -> None:
        self.cache = cache

    def upsert(self, obj: Obj) -> None:
        old = self.cache.node
        self.cache.node = obj
        if old is None or not same_content(old, obj):
            self.cache._tell_node()

    def delete(self, obj: Obj) -> None:
        if self.cache.node is not None:
            self.cache.node = None
            self.cache._tell_node()

    def replace(self, objects: Iterable[Obj]) -> None:
        nodes = list(objects)
        if nodes:
            self.upsert(nodes[0])
        else:
            self.delete({})
