"""Start and stop an aiohttp application on one port (shared by the HTTP servers).

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
from collections.abc import Callable, Sequence

from aiohttp import web

from ipvsproxy.config import parse_host_port
from ipvsproxy.logging import get_logger

log = get_logger(__name__)

WILDCARDS = ("", "0.0.0.0", "::")
RETRY_PERIOD = 5.0  # kube-proxy's wait.Until period for its servers


class Server:
    """A running aiohttp application. ``port`` is the bound port (useful with port 0)."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port

    async def close(self) -> None:
        await self.runner.cleanup()


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


async def start_app(app: web.Application, hosts: str | Sequence[str], port: int) -> Server:
    """Listen on ``port`` at each host (an empty or unspecified host, or none, means every
    address of both families).

    Raises OSError if an address cannot be bound (port in use, address not
    local), after releasing whatever was already set up.
    """
    host_list = [hosts] if isinstance(hosts, str) else list(hosts)
    # No access log: a probe every few seconds would drown the sync events.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        for host in host_list or [""]:
            site: web.BaseSite
            if host in WILDCARDS:
                site = web.SockSite(runner, _every_address(port))
            else:
                site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
            # With port 0 the kernel picks one: later hosts take the same one.
            if port == 0 and runner.addresses:
                port = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    return Server(runner, bound)


async def start_at(app: web.Application, address: str, setting: str) -> Server:
    """Listen on a ``HOST:PORT`` setting such as ``0.0.0.0:10256``."""
    host, port = parse_host_port(address, setting)
    return await start_app(app, host, port)


class Listener:
    """A server at a ``HOST:PORT`` setting that keeps trying to listen.

    ``make_app`` builds the application afresh for every attempt (an aiohttp application
    serves one runner, and a failed attempt has cleaned its runner up).
    """

    def __init__(
        self,
        make_app: Callable[[], web.Application],
        address: str,
        setting: str,
        retry_period: float = RETRY_PERIOD,
    ) -> None:
        self._make_app = make_app
        self._host, self._port = parse_host_port(address, setting)
        self.address = address
        self.setting = setting
        self.retry_period = retry_period
        self.server: Server | None = None
        self._retrying: asyncio.Task[None] | None = None

    async def _attempt(self) -> OSError | None:
        try:
            self.server = await start_app(self._make_app(), self._host, self._port)
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
