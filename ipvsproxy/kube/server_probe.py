"""Is the API server taking connections again? A TCP connect, no TLS, no request.

Why: after a refused connection the reflectors back off (0.8 s, doubling, up to 30 s),
which protects a struggling server from retries. But while the server is *down* (refused,
unreachable) a retry costs it nothing, and waiting out a long delay after it came back
keeps a healthy proxy blind: every change written in that time waits with it (10 s after
a 5 s outage, measured). So while a reflector backs off from a connection failure, it
asks this probe, every ``interval``, whether the server's port accepts connections again,
and retries at once when it does. One probe serves every reflector of the process: one
connection attempt per interval, whatever the number of watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit

PROBE_INTERVAL_S = 0.25
CONNECT_TIMEOUT_S = 0.5


class ServerProbe:
    def __init__(self, host: str, port: int, interval: float = PROBE_INTERVAL_S) -> None:
        self.host, self.port = host, port
        self.interval = interval
        self._checked = -float("inf")
        self._answer = False
        self._lock = asyncio.Lock()

    @classmethod
    def for_url(cls, url: str) -> ServerProbe | None:
        """The probe for an API server URL (``https://10.0.0.1:6443``); None if it names no
        host."""
        parts = urlsplit(url)
        if not parts.hostname:
            return None
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.hostname, port)

    async def accepts(self) -> bool:
        """Whether a TCP connection to the server succeeds now (answered from the last
        attempt if it is less than ``interval`` old)."""
        async with self._lock:
            if time.monotonic() - self._checked < self.interval:
                return self._answer
            self._answer = await self._connect()
            self._checked = time.monotonic()
            return self._answer

    async def _connect(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
