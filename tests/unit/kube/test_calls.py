"""The proxy's API calls are the requests the generated kubernetes_asyncio methods make."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client

from ipvsproxy.kube.calls import ENDPOINT_SLICES, NODES, SERVICES, create_event, list_call


class Recorder(client.ApiClient):  # type: ignore[misc]
    """An ApiClient that records what call_api is asked for instead of sending it."""

    def __init__(self) -> None:
        super().__init__(configuration=client.Configuration(host="http://127.0.0.1:1"))
        self.calls: list[dict[str, Any]] = []

    async def call_api(self, path: str, method: str, path_params: Any = None,
                       query_params: Any = None, header_params: Any = None,
                       **kw: Any) -> None:  # fmt: skip
        self.calls.append(
            {
                "path": path,
                "method": method,
                "path_params": path_params or {},
                "query": sorted(query_params or []),
                "accept": (header_params or {}).get("Accept"),
                "auth": kw.get("auth_settings"),
                "body": kw.get("body"),
                "preload": kw.get("_preload_content"),
                "timeout": kw.get("_request_timeout"),
            }
        )


WATCH = {
    "label_selector": "!service.kubernetes.io/headless",
    "watch": True,
    "resource_version": "42",
    "allow_watch_bookmarks": True,
    "timeout_seconds": 300,
}
LIST = {"field_selector": "metadata.name=node-a", "limit": 500, "_continue": "tok"}


@pytest.mark.parametrize("params", [WATCH, LIST])
@pytest.mark.parametrize(
    ("path", "generated"),
    [
        (SERVICES, lambda api: client.CoreV1Api(api).list_service_for_all_namespaces),
        (NODES, lambda api: client.CoreV1Api(api).list_node),
        (
            ENDPOINT_SLICES,
            lambda api: client.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces,
        ),
    ],
)
async def test_a_list_or_watch_is_the_generated_methods_request(
    path: str, generated: Any, params: dict[str, Any]
) -> None:
    api = Recorder()
    await generated(api)(**params, _preload_content=False, _request_timeout=7)
    await list_call(api, path)(**params, _preload_content=False, _request_timeout=7)
    theirs, ours = api.calls
    assert ours == theirs
    assert ours["preload"] is False


async def test_an_event_is_posted_as_the_generated_method_posts_it() -> None:
    api = Recorder()
    body = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "x"}}
    await client.CoreV1Api(api).create_namespaced_event(
        "default", body, _preload_content=False, _request_timeout=10
    )
    await create_event(api, "default", body, 10)
    theirs, ours = api.calls
    assert ours == theirs


async def test_an_unknown_query_parameter_is_refused() -> None:
    with pytest.raises(TypeError, match="pretty"):
        await list_call(Recorder(), SERVICES)(pretty="true")
