"""Start and stop an aiohttp application on one port (shared by the HTTP servers)."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from ipvsproxy.config import parse_host_port


class Server:
    """A running aiohttp application. ``port`` is the bound port (useful with port 0)."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self.runner = runner
        self.port = port

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_app(app: web.Application, hosts: str | Sequence[str], port: int) -> Server:
    """Listen on ``port`` at each host (an empty host, or none, means every address).

    Raises OSError if an address cannot be bound (port in use, address not
    local), after releasing whatever was already set up.
    """
    host_list = [hosts] if isinstance(hosts, str) else list(hosts)
    # No access log: a probe every few seconds would drown the sync events.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        for host in host_list or [""]:
            site = web.TCPSite(runner, host or None, port, reuse_address=True)
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
