"""The three API calls the proxy makes, through kubernetes_asyncio's ApiClient.call_api.

They are the requests the generated ``CoreV1Api`` and ``DiscoveryV1Api`` methods make
(same paths, query names, Accept header, BearerToken auth, and ApiClient's request
pipeline: configuration, TLS, client certificates, token refresh), made without loading
those classes: ``core_v1_api`` alone is 2.4 MB of bytecode, a fifth of all the proxy
loaded at start, for three of its thousand methods. Responses are not deserialized
(``_preload_content=False``): the reflector reads the JSON itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client

SERVICES = "/api/v1/services"
NODES = "/api/v1/nodes"
ENDPOINT_SLICES = "/apis/discovery.k8s.io/v1/endpointslices"
EVENTS = "/api/v1/namespaces/{namespace}/events"

# The generated methods' keyword arguments, as the API's query parameters.
QUERY_NAMES = {
    "label_selector": "labelSelector",
    "field_selector": "fieldSelector",
    "limit": "limit",
    "_continue": "continue",
    "resource_version": "resourceVersion",
    "watch": "watch",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "timeout_seconds": "timeoutSeconds",
}
# What the generated methods' select_header_accept picks from their lists.
_HEADERS = {"Accept": "application/json"}
_AUTH = ["BearerToken"]

ListCall = Callable[..., Awaitable[Any]]


def list_call(api: client.ApiClient, path: str) -> ListCall:
    """A list-or-watch of the collection at ``path`` for the Reflector: the generated
    method's keyword arguments (``QUERY_NAMES``), ``_request_timeout``, and the raw
    response (any ``_preload_content`` is taken as False)."""

    async def call(
        *, _preload_content: bool = False, _request_timeout: Any = None, **params: Any
    ) -> Any:
        unknown = params.keys() - QUERY_NAMES.keys()
        if unknown:
            raise TypeError(f"unexpected query parameters {sorted(unknown)}")
        query = [(QUERY_NAMES[name], value) for name, value in params.items() if value is not None]
        return await api.call_api(
            path,
            "GET",
            {},
            query,
            dict(_HEADERS),
            auth_settings=_AUTH,
            _preload_content=False,
            _request_timeout=_request_timeout,
        )

    return call


async def create_event(
    api: client.ApiClient, namespace: str, body: dict[str, Any], timeout: Any
) -> Any:
    """POST an Event (a dict) to ``namespace``; the raw response."""
    return await api.call_api(
        EVENTS,
        "POST",
        {"namespace": namespace},
        [],
        dict(_HEADERS),
        body=body,
        auth_settings=_AUTH,
        _preload_content=False,
        _request_timeout=timeout,
    )
