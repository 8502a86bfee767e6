"""The API client (from --kubeconfig or the pod's service account) and the Event poster."""

from __future__ import annotations

import asyncio
import datetime
import os
import time
from collections import OrderedDict
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client, config

# Re-exported (app.py catches it) so that nothing outside ipvsproxy.kube imports
# kubernetes_asyncio before lean_import has run.
from kubernetes_asyncio.config.config_exception import ConfigException as ConfigException

log = structlog.get_logger(__name__)


async def make_api_client(
    kubeconfig: str | None = None, context: str | None = None
) -> client.ApiClient:
    """An ApiClient from `kubeconfig` if given; else in-cluster config inside a pod; else
    the default kubeconfig (~/.kube/config or $KUBECONFIG). Close it with `await c.close()`."""
    cfg = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(
            config_file=kubeconfig, context=context, client_configuration=cfg
        )
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        # Synchronous in kubernetes_asyncio; it reads the token and CA from files.
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        try:
            await config.load_kube_config(context=context, client_configuration=cfg)
        except ConfigException as e:
            raise ConfigException(f"no kubeconfig given, not in a cluster, and {e}") from e
    return client.ApiClient(configuration=cfg)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventPoster:
    """Posts core/v1 Events about objects, in the background, one per object version.

    Posting never blocks or fails the caller: errors are logged and dropped.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        component: str = "ipvsproxy",
        host: str = "",
        remember: int = 1024,
    ) -> None:
        # Any: the generated method is typed to take and return models; we pass dicts.
        self._core: Any = client.CoreV1Api(api)
        self.component = component
        self.host = host
        self._seen: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._remember = remember
        self._tasks: set[asyncio.Task[None]] = set()

    def post(
        self,
        obj: Any,
        *,
        kind: str,
        api_version: str,
        reason: str,
        message: str,
        event_type: str = "Warning",
        once_per_version: bool = True,
    ) -> None:
        """Post an Event about ``obj``; by default at most once per version of the object
        and reason (``once_per_version=False``: every call, e.g. a state that comes back)."""
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        name = meta.get("name") if isinstance(meta.get("name"), str) else None
        namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
        key = (kind, namespace, name, meta.get("uid"), meta.get("resourceVersion"), reason)
        if once_per_version:
            if key in self._seen:
                return  # this version of this object was already reported
            self._seen[key] = None
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        involved = {"kind": kind, "apiVersion": api_version}
        for field in ("name", "namespace", "uid", "resourceVersion"):
            if isinstance(meta.get(field), str):
                involved[field] = meta[field]
        now = _now()
        ev_ns = namespace or "default"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name or 'unnamed'}.{time.time_ns():x}", "namespace": ev_ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        task = asyncio.get_running_loop().create_task(self._send(ev_ns, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, namespace: str, body: dict[str, Any]) -> None:
        try:
            resp = await self._core.create_namespaced_event(
                namespace,
                body,
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(total=10),
            )
            status = resp.status
            text = await resp.read()
            resp.release()
            if status >= 300:
                log.warning(
                    "posting event failed", status=status, body=text[:200].decode(errors="replace")
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.warning("posting event failed", error=f"{type(e).__name__}: {e}")

    async def flush(self) -> None:
        """Wait for the events in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
