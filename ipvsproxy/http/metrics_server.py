"""The metrics address (default 127.0.0.1:10249): /metrics, /proxyMode, /healthz, /configz.

As kube-proxy's metrics server: /proxyMode names the mode as plain text,
and /healthz here is the generic "the process serves HTTP" check that
answers ``ok``; the proxy's real health is on the health address. /configz
serves the effective configuration as component-base's configz does: JSON,
``{"kubeproxy.config.k8s.io": <config>}`` (``ipvsproxy.config.configz``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import cast

from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse

from ipvsproxy.http.routes import Handler, Routes
from ipvsproxy.metrics import Metrics

PROXY_MODE = "ipvs"


CONFIGZ_NAME = "kubeproxy.config.k8s.io"


def metrics_routes(metrics: Metrics, configz: Callable[[], object] | None = None) -> Routes:
    """``configz``: the effective configuration, asked for at each request (parts of it,
    such as the primary NodePort addresses, follow the Node)."""

    async def proxy_mode(_request: BaseRequest) -> Response:
        return Response(text=PROXY_MODE)

    async def configz_handler(_request: BaseRequest) -> Response:
        body = {CONFIGZ_NAME: configz() if configz is not None else None}
        return Response(
            text=json.dumps(body),
            content_type="application/json",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def healthz(_request: BaseRequest) -> Response:
        return Response(text="ok")

    exposition: list[Handler] = []

    async def metrics_handler(request: BaseRequest) -> StreamResponse:
        if not exposition:
            # prometheus_client's exposition code (http.server, urllib.request, wsgiref)
            # is loaded by the first scrape: at start-up it cost 0.4 s under
            # user-mode-linux, before the first sync.
            from prometheus_client.aiohttp import make_aiohttp_handler

            # Typed for aiohttp.web's Request: it reads the headers and the query,
            # which the low-level server's requests have.
            exposition.append(cast(Handler, make_aiohttp_handler(metrics.registry)))
        return await exposition[0](request)

    return Routes(
        {
            "/metrics": metrics_handler,
            "/proxyMode": proxy_mode,
            "/healthz": healthz,
            "/configz": configz_handler,
        }
    )
