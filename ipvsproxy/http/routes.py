"""Which handler answers a request: the servers' few fixed paths.

The servers answer a handful of fixed paths each, so they are served with aiohttp's
low-level server (``aiohttp.web_server``) and routed here, not with ``aiohttp.web``'s
application and router: those are ten modules more at every start (its URL dispatcher,
static files, which read the system's MIME types, websockets), 0.13 s of each start
under user-mode-linux. The answers are aiohttp's router's: an unknown path is a 404, and
a known one answers GET and HEAD (a HEAD without its body) and refuses any other method
with a 405 that lists them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse

Handler = Callable[[BaseRequest], Awaitable[StreamResponse]]

READ_METHODS = ("GET", "HEAD")


class Routes:
    """A request handler: ``paths`` answer GET and HEAD at exactly that path."""

    def __init__(self, paths: Mapping[str, Handler]) -> None:
        self.paths = dict(paths)

    async def __call__(self, request: BaseRequest) -> StreamResponse:
        handler = self.paths.get(request.path)
        if handler is None:
            return Response(status=404, text="404: Not Found")
        if request.method not in READ_METHODS:
            return Response(
                status=405,
                text="405: Method Not Allowed",
                headers={"Allow": ",".join(READ_METHODS)},
            )
        return await handler(request)
