"""A Kubernetes-API-compatible HTTP server for tests (aiohttp).

Serves Services, EndpointSlices, Nodes, Namespaces and Events the way kube-apiserver does for
the calls a reflector and kubectl make: discovery, list with limit/continue and selectors,
streaming watch with bookmarks and 410 Gone, create/update/patch/delete. Tests turn knobs to
drop or stall connections, compact history, expire continue tokens and fail requests.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.apiserver import discovery
from tests.apiserver.patch import json_patch, merge_patch, strategic_merge_patch
from tests.apiserver.selectors import SelectorError, parse_field_selector, parse_label_selector
from tests.apiserver.store import ApiError, Obj, Resource, Store, dump, find_resource


def _true(v: str | None) -> bool:
    # kube-apiserver parses booleans with strconv.ParseBool: 1, t, T, TRUE, true, True.
    return v is not None and v in ("1", "t", "T", "TRUE", "true", "True")


def status_body(code: int, reason: str, message: str) -> Obj:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


@dataclass(eq=False)
class WatchConn:
    request: web.Request
    stalled: asyncio.Event = field(default_factory=asyncio.Event)  # set = stalled
    gone: bool = False  # send ERROR 410 and end


@dataclass
class Target:
    res: Resource
    namespace: str
    name: str | None
    subresource: str | None


class ApiServer:
    """The server. `start()` binds (port 0 picks a free one); `url` is its address."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        bookmark_interval: float = 1.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        self.store = store or Store()
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.watches: set[WatchConn] = set()
        self.requests: list[tuple[str, str]] = []
        self._fail: list[tuple[int, str]] = []
        # Called with each API request before it is served (tests use it to act mid-list).
        self.before_request: Callable[[web.Request], None] | None = None
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    # ---- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.5, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port or self.port, reuse_address=True)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.drop_connections()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            # A fresh app for the next start: aiohttp freezes an application once run.
            self.app = web.Application(client_max_size=64 * 1024 * 1024)
            self.app.router.add_route("*", "/{tail:.*}", self._handle)

    async def restart(self, down_for: float = 0.0) -> None:
        """Stop, stay down for a while, start again on the same port with the same state."""
        await self.stop()
        await asyncio.sleep(down_for)
        await self.start(self.host, self.port)

    # ---- knobs ---------------------------------------------------------------------------

    def drop_connections(self) -> None:
        """Abort every open watch connection (the client sees a reset)."""
        for w in list(self.watches):
            if w.request.transport is not None:
                w.request.transport.abort()

    def stall_watches(self) -> None:
        """Open watches stop sending anything, but their connections stay open."""
        for w in self.watches:
            w.stalled.set()

    def unstall(self) -> None:
        for w in self.watches:
            w.stalled.clear()

    def gone_watches(self) -> None:
        """Every open watch gets an ERROR event with 410 Gone and ends."""
        for w in self.watches:
            w.gone = True
        self.store._wakeup.set()

    def compact(self, rv: int | None = None) -> None:
        self.store.compact(rv)

    def expire_continue_tokens(self) -> None:
        self.store.expire_continue_tokens()

    def fail_next(self, count: int, status: int = 500, path_contains: str = "") -> None:
        """The next `count` API requests (not discovery) whose path and query contain
        `path_contains` fail with `status`."""
        self._fail.extend([(status, path_contains)] * count)

    # ---- direct state access for tests ---------------------------------------------------

    def put(self, obj: Obj) -> Obj:
        return self.store.apply_object(obj)

    def remove(self, api_version: str, kind: str, namespace: str, name: str) -> Obj:
        from tests.apiserver.store import by_kind

        res = by_kind(api_version, kind)
        assert res is not None
        return self.store.delete(res, namespace, name)

    # ---- HTTP ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        try:
            return await self._route(request)
        except ApiError as e:
            return web.json_response(status_body(e.code, e.reason, e.message), status=e.code)
        except SelectorError as e:
            return web.json_response(status_body(400, "BadRequest", str(e)), status=400)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if request.path in ("/version", "/version/"):
            return web.json_response(discovery.version())
        if request.path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if parts == ["api"]:
            return web.json_response(discovery.api_versions(f"{self.host}:{self.port}"))
        if parts == ["apis"]:
            return web.json_response(discovery.api_group_list())
        if parts[:2] == ["openapi", "v3"]:
            doc = discovery.openapi_v3("/".join(parts[2:]))
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return web.json_response(doc)
        if parts and parts[0] == "openapi":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(parts[1])
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return web.json_response(doc)
        if len(parts) == 2 and parts[0] == "api":
            doc = discovery.resource_list("", parts[1])
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return web.json_response(doc)
        if len(parts) == 3 and parts[0] == "apis":
            doc = discovery.resource_list(parts[1], parts[2])
            if doc is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return web.json_response(doc)
        target = self._target(parts)
        if self.before_request is not None:
            self.before_request(request)
        for i, (code, needle) in enumerate(self._fail):
            if needle in request.path_qs:
                del self._fail[i]
                reason = "Expired" if code == 410 else "InternalError"
                raise ApiError(code, reason, "injected failure")
        method = request.method
        if target.name is None:
            if method == "GET":
                if _true(request.query.get("watch")):
                    return await self._watch(request, target)
                return self._list(request, target)
            if method == "POST":
                obj = self.store.create(target.res, target.namespace, await _body(request))
                return _json(obj, 201)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")
        if method == "GET":
            return _json(self.store.get(target.res, target.namespace, target.name))
        if method == "PUT":
            return _json(self._update(target, await _body(request)))
        if method == "PATCH":
            return _json(await self._patch(request, target))
        if method == "DELETE":
            return _json(self.store.delete(target.res, target.namespace, target.name))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _target(self, parts: list[str]) -> Target:
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, ver, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, ver, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        res = find_resource(group, ver, rest[0])
        if res is None or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not res.namespaced and ns:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return Target(
            res, ns, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
        )

    def _update(self, target: Target, body: Obj) -> Obj:
        assert target.name is not None
        if target.subresource == "status":
            # Only status changes through the status subresource.
            old = self.store.get(target.res, target.namespace, target.name)
            body = {**old, "status": body.get("status"), "metadata": body.get("metadata", {})}
        return self.store.update(target.res, target.namespace, target.name, body)

    async def _patch(self, request: web.Request, target: Target) -> Obj:
        assert target.name is not None
        old = self.store.get(target.res, target.namespace, target.name)
        patch = await _body(request)
        ctype = request.content_type
        if ctype == "application/json-patch+json":
            new = json_patch(old, patch)
        elif ctype == "application/strategic-merge-patch+json":
            new = strategic_merge_patch(old, patch)
        elif ctype == "application/merge-patch+json":
            new = merge_patch(old, patch)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: {ctype}",
            )
        if not isinstance(new.get("metadata"), dict):
            raise ApiError(422, "Invalid", "metadata must be an object")
        # A patch's resourceVersion, when given, is a precondition.
        return self._update(target, new)

    def _list(self, request: web.Request, target: Target) -> web.Response:
        q = request.query
        store = self.store
        labels = parse_label_selector(q.get("labelSelector"))
        fields = parse_field_selector(q.get("fieldSelector"), target.res.fields)
        limit = int(q.get("limit") or 0)
        token = q.get("continue")
        start: tuple[str, str] | None = None
        if token:
            try:
                data = json.loads(base64.urlsafe_b64decode(token))
                list_rv, start = int(data["rv"]), (data["start"][0], data["start"][1])
            except (ValueError, KeyError, TypeError) as e:
                raise ApiError(400, "BadRequest", "continue key is not valid") from e
            if list_rv < store.continue_min_rv or list_rv < store.compacted_rv:
                raise ApiError(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter.",
                )
        elif q.get("resourceVersionMatch") == "Exact" and q.get("resourceVersion"):
            list_rv = int(q["resourceVersion"])
        else:
            list_rv = store.rv
        state = store.state_at(target.res, list_rv)
        keys = (
            store.tables[target.res].sorted_keys()
            if state is store.tables[target.res].objects
            else sorted(state)
        )
        lo = 0
        if start is not None:
            lo = bisect.bisect_right(keys, start)
        elif target.namespace:
            lo = bisect.bisect_left(keys, (target.namespace, ""))
        raws: list[bytes] = []
        objs: list[Obj] = []
        next_token = ""
        for i in range(lo, len(keys)):
            key = keys[i]
            if target.namespace and key[0] != target.namespace:
                if key[0] > target.namespace:
                    break
                continue
            obj, raw = state[key]
            meta = obj["metadata"]
            if not labels(meta.get("labels") or {}) or not fields(obj):
                continue
            if limit and len(raws) == limit:
                prev = keys[i - 1]
                blob = json.dumps({"rv": list_rv, "start": list(prev)}).encode()
                next_token = base64.urlsafe_b64encode(blob).decode()
                break
            raws.append(raw)
            objs.append(obj)
        meta_out: Obj = {"resourceVersion": str(list_rv)}
        if next_token:
            meta_out["continue"] = next_token
        if "as=Table" in request.headers.get("Accept", ""):
            include = q.get("includeObject", "Metadata")
            return _json(discovery.table(target.res, objs, meta_out, include))
        head = {
            "kind": f"{target.res.kind}List",
            "apiVersion": target.res.api_version,
            "metadata": meta_out,
        }
        body = dump(head)[:-1] + b',"items":[' + b",".join(raws) + b"]}"
        return web.Response(body=body, content_type="application/json")

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        q = request.query
        store = self.store
        res = target.res
        labels = parse_label_selector(q.get("labelSelector"))
        fields = parse_field_selector(q.get("fieldSelector"), res.fields)
        bookmarks = _true(q.get("allowWatchBookmarks"))
        timeout = float(q.get("timeoutSeconds") or self.default_watch_timeout)
        as_table = "as=Table" in request.headers.get("Accept", "")
        include = q.get("includeObject", "Metadata")
        rv_param = q.get("resourceVersion") or ""
        initial = _true(q.get("sendInitialEvents")) or rv_param in ("", "0")

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            if target.namespace and obj["metadata"].get("namespace") != target.namespace:
                return False
            return labels(obj["metadata"].get("labels") or {}) and fields(obj)

        def line(typ: str, obj: Obj, raw: bytes | None) -> bytes:
            if as_table and typ != "BOOKMARK" and typ != "ERROR":
                payload = dump(
                    discovery.table(
                        res, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]}, include
                    )
                )
            else:
                payload = raw if raw is not None else dump(obj)
            return b'{"type":"' + typ.encode() + b'","object":' + payload + b"}\n"

        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        conn = WatchConn(request)
        self.watches.add(conn)
        deadline = time.monotonic() + timeout
        try:
            if initial:
                cursor = store.rv
                out = [
                    line("ADDED", o, r) for o, r in store.tables[res].objects.values() if matches(o)
                ]
                if _true(q.get("sendInitialEvents")) and bookmarks:
                    mark = {
                        "kind": res.kind,
                        "apiVersion": res.api_version,
                        "metadata": {
                            "resourceVersion": str(cursor),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    }
                    out.append(line("BOOKMARK", mark, None))
                if out:
                    await resp.write(b"".join(out))
            else:
                cursor = int(rv_param)
                if cursor < store.compacted_rv:
                    await self._gone(resp, line, cursor)
                    return resp
            last_bookmark = time.monotonic()
            while True:
                while conn.stalled.is_set():
                    if request.transport is None or request.transport.is_closing():
                        return resp
                    await asyncio.sleep(0.05)
                if conn.gone or cursor < store.compacted_rv:
                    await self._gone(resp, line, cursor)
                    return resp
                out = []
                for ch in store.changes_after(store.log_index_after(cursor)):
                    cursor = ch.rv
                    if ch.resource != res:
                        continue
                    was, now = matches(ch.prev), matches(ch.obj)
                    if ch.type == "DELETED":
                        if was:
                            out.append(line("DELETED", ch.obj, ch.raw))
                    elif now:
                        out.append(line("MODIFIED" if was else "ADDED", ch.obj, ch.raw))
                    elif was:
                        out.append(line("DELETED", ch.obj, ch.raw))
                cursor = max(cursor, store.rv)
                if out:
                    await resp.write(b"".join(out))
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if bookmarks and time.monotonic() - last_bookmark >= self.bookmark_interval:
                    mark = {
                        "kind": res.kind,
                        "apiVersion": res.api_version,
                        "metadata": {"resourceVersion": str(cursor)},
                    }
                    await resp.write(line("BOOKMARK", mark, None))
                    last_bookmark = time.monotonic()
                await store.wait_change(
                    min(left, self.bookmark_interval if bookmarks else left, 0.5)
                )
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError, RuntimeError):
            pass
        finally:
            self.watches.discard(conn)
        return resp

    async def _gone(self, resp: web.StreamResponse, line: Any, cursor: int) -> None:
        body = status_body(
            410, "Expired", f"too old resource version: {cursor} ({self.store.compacted_rv})"
        )
        await resp.write(line("ERROR", body, None))
        await resp.write_eof()


async def _body(request: web.Request) -> Obj:
    try:
        data = await request.json(loads=json.loads)
    except ValueError as e:
        raise ApiError(400, "BadRequest", f"invalid JSON body: {e}") from e
    if not isinstance(data, (dict, list)):
        raise ApiError(400, "BadRequest", "body must be a JSON object")
    return data  # type: ignore[return-value]


def _json(obj: Obj, status: int = 200) -> web.Response:
    return web.Response(body=dump(obj), status=status, content_type="application/json")
