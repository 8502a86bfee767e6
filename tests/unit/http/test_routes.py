"""Routes answers as aiohttp.web's router answers for the same GET routes."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import RawTestServer, TestClient, TestServer
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response

from ipvsproxy.http.routes import Routes

PATHS = ("/healthz", "/livez")
REQUESTS = [
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/livez?verbose=1"),
    ("POST", "/healthz"),
    ("PUT", "/livez"),
    ("DELETE", "/livez"),
    ("OPTIONS", "/healthz"),
    ("GET", "/healthz/"),
    ("GET", "/"),
    ("POST", "/nowhere"),
    ("GET", "/HEALTHZ"),
    ("GET", "/healthz/../livez"),
]


async def answer(request: BaseRequest) -> Response:
    return Response(text=f"{request.method} {request.path}", headers={"X-Handler": "yes"})


def router_app() -> web.Application:
    app = web.Application()
    for path in PATHS:
        app.router.add_get(path, answer)
    return app


async def responses(client: TestClient) -> list[tuple[int, str, str | None, bool]]:
    got = []
    for method, path in REQUESTS:
        async with client.request(method, path) as resp:
            body = await resp.text()
            got.append((resp.status, body, resp.headers.get("Allow"), "X-Handler" in resp.headers))
    return got


async def test_the_same_answers_as_aiohttp_web_s_router() -> None:
    async with TestClient(TestServer(router_app())) as router:
        expected = await responses(router)
    async with TestClient(RawTestServer(Routes(dict.fromkeys(PATHS, answer)))) as routes:
        got = await responses(routes)
    assert got == expected
    # What that is, so a change on either side shows.
    assert got[0] == (200, "GET /healthz", None, True)
    assert got[1] == (200, "", None, True)  # HEAD: the handler's headers, no body
    assert got[3] == (405, "405: Method Not Allowed", "GET,HEAD", False)
    assert got[7] == (404, "404: Not Found", None, False)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_an_unknown_path_is_a_404_whatever_the_method(method: str) -> None:
    async with (
        TestClient(RawTestServer(Routes({}))) as client,
        client.request(method, "/metrics") as resp,
    ):
        assert resp.status == 404
