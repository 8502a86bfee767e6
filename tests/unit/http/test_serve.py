"""Listening as kube-proxy does: every address of both families for 0.0.0.0, and a server
whose port is taken tried again while the proxy goes on."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response

from ipvsproxy.http.routes import Routes
from ipvsproxy.http.serve import Listener, start_app


def app() -> Routes:
    async def hello(_request: BaseRequest) -> Response:
        return Response(text="hello")

    return Routes({"/": hello})


async def get(host: str, port: int) -> str:
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return await resp.text()


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6(), reason="this host has no IPv6 loopback")
@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
async def test_every_address_means_both_families(host: str) -> None:
    server = await start_app(app(), host, 0)
    try:
        assert await get("127.0.0.1", server.port) == "hello"
        assert await get("::1", server.port) == "hello"
    finally:
        await server.close()


@pytest.mark.skipif(not has_ipv6(), reason="this host has no IPv6 loopback")
async def test_a_specific_address_is_that_address_only() -> None:
    server = await start_app(app(), "127.0.0.1", 0)
    try:
        assert await get("127.0.0.1", server.port) == "hello"
        with pytest.raises(aiohttp.ClientConnectionError):
            await get("::1", server.port)
    finally:
        await server.close()


def held_port() -> socket.socket:
    """A port another process would hold: bound and listening."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    return holder


async def test_a_port_in_use_is_tried_again_until_it_is_free() -> None:
    holder = held_port()
    port = holder.getsockname()[1]
    listener = Listener(app(), f"127.0.0.1:{port}", "healthz-bind-address", retry_period=0.05)
    try:
        error = await listener.start()
        assert isinstance(error, OSError)
        await asyncio.sleep(0.2)
        assert listener.server is None  # still held: still trying
        holder.close()
        for _ in range(100):
            if listener.server is not None:
                break
            await asyncio.sleep(0.02)
        assert await get("127.0.0.1", port) == "hello"
    finally:
        holder.close()
        await listener.close()


async def test_without_retry_the_error_is_all() -> None:
    holder = held_port()
    port = holder.getsockname()[1]
    listener = Listener(app(), f"127.0.0.1:{port}", "metrics-bind-address", retry_period=0.01)
    try:
        assert await listener.start(retry=False) is not None
        holder.close()
        await asyncio.sleep(0.1)
        assert listener.server is None
    finally:
        holder.close()
        await listener.close()


async def test_close_stops_the_retries() -> None:
    holder = held_port()
    listener = Listener(app(), f"127.0.0.1:{holder.getsockname()[1]}", "x", retry_period=0.01)
    await listener.start()
    await listener.close()
    holder.close()
    await asyncio.sleep(0.05)
    assert listener.server is None
