"""A list-then-watch loop over one resource, with client-go's reflector semantics.

- The list is paginated (limit/continue). If a continue token expires (410), the list starts
  over; if that happens twice in a row, it falls back to one unpaginated list.
- The watch starts at the list's resourceVersion, asks for bookmarks, carries timeoutSeconds
  (jittered, as client-go does) and a socket read timeout, so a connection that went silent
  is noticed and reopened from the last resourceVersion seen.
- 410 Gone (an ERROR event or an HTTP status) means relist; the store's `replace` turns the
  new list into change events against the cache.
- Other errors back off exponentially with jitter; the cache is kept meanwhile. A backoff
  from a connection failure ends early once the server takes connections again
  (``ServerProbe``), and a 410 right after that relists at once: the server answered.
- Responses are read raw (`_preload_content=False`) and parsed as plain JSON: building
  kubernetes_asyncio's model objects costs five times as much.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
import structlog

from ipvsproxy import gc_pause
from ipvsproxy.kube.cache import Store
from ipvsproxy.kube.list_body import read_list
from ipvsproxy.kube.objects import MalformedObject, Obj
from ipvsproxy.kube.server_probe import ServerProbe

log = structlog.get_logger(__name__)

# A kubernetes_asyncio list_* method (bound), called with _preload_content=False.
ListFunc = Callable[..., Awaitable[Any]]
# Told of an object the trim function rejected: (raw object, why).
MalformedHandler = Callable[[Any, str], None]


@dataclass(frozen=True)
class ReflectorSettings:
    page_size: int = 500
    # Watches end after this long (times 1..2, jittered) and reopen from the last version.
    watch_timeout_s: float = 300.0
    # No byte on a watch for this long: the connection is deemed dead and reopened.
    # kube-apiserver sends a bookmark about every minute, so this must exceed that.
    read_timeout_s: float = 120.0
    # Bound on one list page request, and on connecting.
    request_timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    backoff_initial_s: float = 0.8
    backoff_max_s: float = 30.0


class ApiStatusError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status


class Gone(Exception):
    """410: the resourceVersion or continue token is too old; relist."""


class Backoff:
    """Exponential backoff with full jitter (delay in [d, 2d)), capped."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.failures = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * (2.0**self.failures))
        self.failures += 1
        return min(self.maximum, base * (1.0 + random.random()))

    def reset(self) -> None:
        self.failures = 0


class Reflector:
    """Keeps `store` in step with one resource on the API server. Run `run()` as a task."""

    def __init__(
        self,
        name: str,
        list_func: ListFunc,
        trim: Callable[[Any], Obj],
        store: Store,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        settings: ReflectorSettings | None = None,
        on_malformed: MalformedHandler | None = None,
        probe: ServerProbe | None = None,
    ) -> None:
        self.name = name
        self._probe = probe
        self._list_func = list_func
        self._trim = trim
        self._store = store
        self._selectors: dict[str, str] = {}
        if label_selector:
            self._selectors["label_selector"] = label_selector
        if field_selector:
            self._selectors["field_selector"] = field_selector
        self.settings = settings or ReflectorSettings()
        self._on_malformed = on_malformed
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.lists = 0  # completed lists, for tests and metrics
        self._log = log.bind(resource=name)

    async def run(self) -> None:
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        need_list = True
        gone_before = False  # the last attempt ended in 410 too
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                    backoff.reset()
                gone_before = False
                started = time.monotonic()
                events = await self._watch()
                if events:
                    backoff.reset()
                elif time.monotonic() - started < 1.0:
                    # A watch that ends at once with nothing in it: do not spin.
                    await asyncio.sleep(backoff.next_delay())
            except Gone:
                self._log.info("resource version expired, relisting")
                need_list = True
                # The server answered: relist now, unless that is what just ended in 410.
                if gone_before:
                    await asyncio.sleep(backoff.next_delay())
                gone_before = True
            except (aiohttp.ClientError, TimeoutError, ApiStatusError, OSError, ValueError) as e:
                delay = backoff.next_delay()
                self._log.warning(
                    "list/watch failed",
                    phase="list" if need_list else "watch",
                    error=f"{type(e).__name__}: {e}",
                    retry_in_s=round(delay, 2),
                )
                await self._pause(delay, connection=not isinstance(e, ApiStatusError | ValueError))
            except Exception:
                # A bug must not end the reflector for good: log it, back off, relist.
                delay = backoff.next_delay()
                self._log.exception("reflector failed", retry_in_s=round(delay, 2))
                need_list = True
                await asyncio.sleep(delay)

    async def _pause(self, delay: float, connection: bool) -> None:
        """Back off for ``delay``. After a connection failure, end early once the server,
        found not taking connections during the pause, takes them again: it is back."""
        if not connection or self._probe is None:
            await asyncio.sleep(delay)
            return
        deadline = time.monotonic() + delay
        was_down = False
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(self._probe.interval, left))
            if not await self._probe.accepts():
                was_down = True
            elif was_down:
                self._log.info("the API server takes connections again, retrying now")
                return

    def _timeout(self, *, watch: bool) -> aiohttp.ClientTimeout:
        s = self.settings
        if watch:
            return aiohttp.ClientTimeout(
                sock_connect=s.connect_timeout_s, sock_read=s.read_timeout_s
            )
        return aiohttp.ClientTimeout(total=s.request_timeout_s, sock_connect=s.connect_timeout_s)

    def _accept(self, raw: Any) -> Obj | None:
        try:
            return self._trim(raw)
        except (MalformedObject, TypeError, KeyError, AttributeError) as e:
            # Whatever the shape, a bad object is skipped: it must never stop the watch.
            meta = raw.get("metadata") if isinstance(raw, dict) else None
            self._log.warning(
                "skipping malformed object",
                reason=str(e),
                namespace=meta.get("namespace") if isinstance(meta, dict) else None,
                name=meta.get("name") if isinstance(meta, dict) else None,
            )
            if self._on_malformed is not None:
                self._on_malformed(raw, str(e))
            return None

    def _keep(self, items: list[Obj], raw: Any) -> None:
        obj = self._accept(raw)
        if obj is not None:
            items.append(obj)

    async def _list(self) -> None:
        items: list[Obj] = []
        token: str | None = None
        limit: int | None = self.settings.page_size
        expired = 0
        while True:
            args: dict[str, Any] = dict(self._selectors)
            if limit:
                args["limit"] = limit
            if token:
                args["_continue"] = token
            resp = await self._list_func(
                **args, _preload_content=False, _request_timeout=self._timeout(watch=False)
            )
            try:
                body = await resp.read()
            finally:
                resp.release()
            if resp.status == 410 and token:
                expired += 1
                self._log.info("continue token expired, restarting the list", fallback=expired > 1)
                items.clear()
                token = None
                if expired > 1:
                    limit = None
                continue
            if resp.status != 200:
                raise ApiStatusError(resp.status, body)
            with gc_pause.paused():  # nothing parsed here forms cycles
                page = read_list(body, partial(self._keep, items))
                del body
            meta = page.get("metadata") or {}
            token = meta.get("continue") or None
            if not token:
                self.resource_version = str(meta.get("resourceVersion") or "")
                break
        self._store.replace(items)
        self.lists += 1
        if not self.synced.is_set():
            self._log.info("synced", objects=len(items))
        self.synced.set()

    async def _watch(self) -> int:
        """Watch until the server ends the stream; return the number of events seen."""
        timeout_s = int(self.settings.watch_timeout_s * (1.0 + random.random()))
        resp = await self._list_func(
            **self._selectors,
            watch=True,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=max(1, timeout_s),
            _preload_content=False,
            _request_timeout=self._timeout(watch=True),
        )
        events = 0
        try:
            if resp.status == 410:
                raise Gone()
            if resp.status != 200:
                raise ApiStatusError(resp.status, await resp.read())
            content = resp.content
            while True:
                line = await content.readline()
                if not line:
                    return events
                if line.isspace():
                    continue
                events += 1
                self._event(json.loads(line))
        finally:
            resp.release()

    def _event(self, event: Any) -> None:
        typ = event.get("type") if isinstance(event, dict) else None
        raw = event.get("object") if isinstance(event, dict) else None
        if typ == "ERROR":
            code = raw.get("code") if isinstance(raw, dict) else None
            if code == 410:
                raise Gone()
            raise ApiStatusError(int(code or 0), json.dumps(raw).encode())
        meta = raw.get("metadata") if isinstance(raw, dict) else None
        rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if typ == "BOOKMARK":
            if rv:
                self.resource_version = str(rv)
            return
        if typ not in ("ADDED", "MODIFIED", "DELETED"):
            raise ValueError(f"unknown watch event type {typ!r}")
        obj = self._accept(raw)
        if obj is not None:
            if typ == "DELETED":
                self._store.delete(obj)
            else:
                self._store.upsert(obj)
        if rv:
            self.resource_version = str(rv)
