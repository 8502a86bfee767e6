"""Serve a request handler on one port (shared by the HTTP servers).

An unspecified host (``0.0.0.0``, ``::`` or empty) means every address of both families, as
in kube-proxy: Go's ``net.Listen("tcp", "0.0.0.0:10256")`` takes one socket that accepts
IPv6 too, and probes, load balancers and scrapers of an IPv6 or dual-stack node rely on it.
Here too one IPv6 socket with IPV6_V6ONLY off, or IPv4 alone where the node has no IPv6.
A specific address binds that address only.

``Listener`` is kube-proxy's way to keep a server: an address that cannot be taken (a port
in use) is tried again every 5 s while the proxy goes on, unless ``--bind-address-hard-fail``
asks the proxy to stop instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence

from aiohttp.web_server import Server as HttpServer

from ipvsproxy.config import parse_host_port
from ipvsproxy.http.routes import Handler
from ipvsproxy.logging import get_logger

log = get_logger(__name__)

WILDCARDS = ("", "0.0.0.0", "::")
RETRY_PERIOD = 5.0  # kube-proxy's wait.Until period for its servers


# How long a closing server waits for the requests it is answering (aiohttp's default).
SHUTDOWN_TIMEOUT = 60.0
BACKLOG = 128  # aiohttp's sites' listen backlog


class Server:
    """A handler served on one port, at one or more addresses. ``port`` is the bound port
    (useful with port 0)."""

    def __init__(self, http: HttpServer, listeners: list[asyncio.Server], port: int) -> None:
        self._http = http
        self._listeners = listeners
        self.port = port

    async def close(self) -> None:
        """Stop listening, then close the connections once their requests are answered
        (aiohttp's runner's order)."""
        for listener in self._listeners:
            listener.close()
        # Requests that came in before the close start being handled first.
        await asyncio.sleep(0)
        self._http.pre_shutdown()
        await self._http.shutdown(SHUTDOWN_TIMEOUT)


def _every_address(port: int) -> socket.socket:
    """One listening socket for every address of both families (IPv4 alone without IPv6)."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:  # EAFNOSUPPORT: IPv6 is off in this kernel
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host = "0.0.0.0"
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        host = "::"
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


async def start_app(handler: Handler, hosts: str | Sequence[str], port: int) -> Server:
    """Serve ``handler`` on ``port`` at each host (an empty or unspecified host, or none,
    means every address of both families).

    Raises OSError if an address cannot be bound (port in use, address not
    local), after releasing whatever was already set up.
    """
    host_list = [hosts] if isinstance(hosts, str) else list(hosts)
    loop = asyncio.get_running_loop()
    # No access log: a probe every few seconds would drown the sync events.
    http = HttpServer(handler, access_log=None)
    listeners: list[asyncio.Server] = []
    try:
        for host in host_list or [""]:
            if host in WILDCARDS:
                listener = await loop.create_server(
                    http, sock=_every_address(port), backlog=BACKLOG
                )
            else:
                listener = await loop.create_server(
                    http, host, port, reuse_address=True, backlog=BACKLOG
                )
            listeners.append(listener)
            # With port 0 the kernel picks one: later hosts take the same one.
            if port == 0 and listener.sockets:
                port = int(listener.sockets[0].getsockname()[1])
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return Server(http, listeners, port)


async def start_at(handler: Handler, address: str, setting: str) -> Server:
    """Listen on a ``HOST:PORT`` setting such as ``0.0.0.0:10256``."""
    host, port = parse_host_port(address, setting)
    return await start_app(handler, host, port)


class Listener:
    """A server at a ``HOST:PORT`` setting that keeps trying to listen."""

    def __init__(
        self,
        handler: Handler,
        address: str,
        setting: str,
        retry_period: float = RETRY_PERIOD,
    ) -> None:
        self._handler = handler
        self._host, self._port = parse_host_port(address, setting)
        self.address = address
        self.setting = setting
        self.retry_period = retry_period
        self.server: Server | None = None
        self._retrying: asyncio.Task[None] | None = None

    async def _attempt(self) -> OSError | None:
        try:
            self.server = await start_app(self._handler, self._host, self._port)
        except OSError as err:
            return err
        return None

    async def start(self, retry: bool = True) -> OSError | None:
        """Try once; on failure return the error and, with ``retry``, keep trying every
        ``retry_period`` seconds in the background (each failure logged)."""
        error = await self._attempt()
        if error is not None and retry:
            log.warning(
                "cannot listen; retrying",
                setting=self.setting,
                address=self.address,
                error=str(error),
                retry_in_s=self.retry_period,
            )
            self._retrying = asyncio.create_task(self._retry(), name=f"listen {self.setting}")
        return error

    async def _retry(self) -> None:
        while True:
            await asyncio.sleep(self.retry_period)
            error = await self._attempt()
            if error is None:
                log.info("listening", setting=self.setting, address=self.address)
                return
            log.warning(
                "cannot listen; retrying",
                setting=self.setting,
                address=self.address,
                error=str(error),
                retry_in_s=self.retry_period,
            )

    async def close(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
        if self.server is not None:
            await self.server.close()
            self.server = None
