"""The metrics address (default 127.0.0.1:10249): /metrics, /proxyMode, /healthz.

As kube-proxy's metrics server: /proxyMode names the mode as plain text,
and /healthz here is the generic "the process serves HTTP" check that
answers ``ok``; the proxy's real health is on the health address.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from ipvsproxy.metrics import Metrics

PROXY_MODE = "ipvs"


def make_metrics_app(metrics: Metrics) -> web.Application:
    async def proxy_mode(_request: web.Request) -> web.Response:
        return web.Response(text=PROXY_MODE)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))
    app.router.add_get("/proxyMode", proxy_mode)
    app.router.add_get("/healthz", healthz)
    return app
