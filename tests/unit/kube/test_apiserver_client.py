"""The test API server, driven by kubernetes_asyncio's own models and Watch, plus selector
parsing and the server's list/watch rules checked directly."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from ipvsproxy.kube.client import make_api_client
from tests.apiserver import ApiServer
from tests.apiserver.selectors import SelectorError, parse_field_selector, parse_label_selector
from tests.support import proxy_node
from tests.unit.kube.conftest import endpoint_slice, service

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("a", {"a": ""}, True),
        ("a", {}, False),
        ("!a", {}, True),
        ("!a", {"a": "x"}, False),
        ("a=x", {"a": "x"}, True),
        ("a==x", {"a": "y"}, False),
        ("a!=x", {}, True),
        ("a!=x", {"a": "x"}, False),
        ("a in (x, y)", {"a": "y"}, True),
        ("a in (x,y)", {}, False),
        ("a notin (x,y)", {}, True),
        ("a notin (x,y)", {"a": "x"}, False),
        ("!k8s.io/x,b=1", {"b": "1"}, True),
        ("!k8s.io/x,b=1", {"b": "1", "k8s.io/x": ""}, False),
        ("n>3", {"n": "4"}, True),
        ("n<3", {"n": "4"}, False),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(selector)(labels) is expected


def test_bad_selectors() -> None:
    with pytest.raises(SelectorError):
        parse_label_selector("a in x")
    with pytest.raises(SelectorError):
        parse_field_selector("spec.foo=1", frozenset({"metadata.name"}))
    pred = parse_field_selector(
        "metadata.name=a,metadata.namespace!=b", frozenset({"metadata.name", "metadata.namespace"})
    )
    assert pred({"metadata": {"name": "a", "namespace": "c"}})
    assert not pred({"metadata": {"name": "a", "namespace": "b"}})


async def test_models_round_trip(apiserver: ApiServer, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    body = client.V1Service(
        metadata=client.V1ObjectMeta(name="m", labels={"x": "1"}),
        spec=client.V1ServiceSpec(
            cluster_ip="10.96.7.7", ports=[client.V1ServicePort(port=53, protocol="UDP")]
        ),
    )
    created = await core.create_namespaced_service("ns1", body)
    assert created.metadata.namespace == "ns1"
    assert created.metadata.uid
    with pytest.raises(ApiException) as e:
        await core.create_namespaced_service("ns1", body)
    assert e.value.status == 409
    got = await core.read_namespaced_service("m", "ns1")
    assert got.spec.ports[0].protocol == "UDP"
    patched = await core.patch_namespaced_service(
        "m", "ns1", {"metadata": {"labels": {"x": None, "y": "2"}}}
    )
    assert patched.metadata.labels == {"y": "2"}
    got.metadata.resource_version = "1"
    with pytest.raises(ApiException) as e:
        await core.replace_namespaced_service("m", "ns1", got)
    assert e.value.status == 409
    lst = await core.list_service_for_all_namespaces(label_selector="y=2")
    assert [s.metadata.name for s in lst.items] == ["m"]
    assert int(lst.metadata.resource_version) >= int(patched.metadata.resource_version)
    await core.delete_namespaced_service("m", "ns1")
    with pytest.raises(ApiException) as e:
        await core.read_namespaced_service("m", "ns1")
    assert e.value.status == 404


async def test_pagination_is_a_consistent_snapshot(
    apiserver: ApiServer, api: client.ApiClient
) -> None:
    for i in range(5):
        apiserver.put(service(f"s{i}"))
    core = client.CoreV1Api(api)
    page1 = await core.list_service_for_all_namespaces(limit=2)
    assert [s.metadata.name for s in page1.items] == ["s0", "s1"]
    apiserver.remove("v1", "Service", "default", "s3")
    apiserver.put(service("s2", ip="10.96.9.9"))
    rest = await core.list_service_for_all_namespaces(limit=10, _continue=page1.metadata._continue)
    # The pages show the state at the first page's resourceVersion.
    assert [s.metadata.name for s in rest.items] == ["s2", "s3", "s4"]
    assert rest.items[0].spec.cluster_ip == "10.96.0.1"
    assert rest.metadata.resource_version == page1.metadata.resource_version
    apiserver.expire_continue_tokens()
    with pytest.raises(ApiException) as e:
        await core.list_service_for_all_namespaces(limit=2, _continue=page1.metadata._continue)
    assert e.value.status == 410


async def test_watch_with_models_and_bookmarks(apiserver: ApiServer, api: client.ApiClient) -> None:
    apiserver.put(service("a"))
    disc = client.DiscoveryV1Api(api)
    lst = await disc.list_endpoint_slice_for_all_namespaces()
    w = watch.Watch()
    seen: list[tuple[str, str]] = []

    async def produce() -> None:
        await asyncio.sleep(0.1)
        apiserver.put(endpoint_slice("a-1", "a"))
        apiserver.put(endpoint_slice("a-1", "a", ips=["10.0.0.2"]))
        apiserver.remove("discovery.k8s.io/v1", "EndpointSlice", "default", "a-1")

    task = asyncio.create_task(produce())
    async with asyncio.timeout(10):
        async for ev in w.stream(
            disc.list_endpoint_slice_for_all_namespaces,
            resource_version=lst.metadata.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=1,
        ):
            name = ev["object"].metadata.name if ev["type"] != "BOOKMARK" else ""
            seen.append((ev["type"], name))
    await task
    assert seen[:3] == [("ADDED", "a-1"), ("MODIFIED", "a-1"), ("DELETED", "a-1")]
    assert ("BOOKMARK", "") in seen
    assert w.resource_version == str(apiserver.store.rv)


async def test_watch_from_compacted_version_is_gone(
    apiserver: ApiServer, api: client.ApiClient
) -> None:
    apiserver.put(service("a"))
    apiserver.put(service("b"))
    apiserver.compact()
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as e:
        async for _ in watch.Watch().stream(
            core.list_service_for_all_namespaces, resource_version="2", timeout_seconds=1
        ):
            pass
    assert e.value.status == 410
    # Without a resourceVersion the watch starts with the current objects as ADDED.
    names = []
    async for ev in watch.Watch().stream(core.list_service_for_all_namespaces, timeout_seconds=1):
        names.append((ev["type"], ev["object"].metadata.name))
    assert names == [("ADDED", "a"), ("ADDED", "b")]


async def test_watch_follows_selector_transitions(
    apiserver: ApiServer, api: client.ApiClient
) -> None:
    apiserver.put(service("a"))
    rv = str(apiserver.store.rv)
    apiserver.put(service("a", labels={"service.kubernetes.io/headless": ""}))
    apiserver.put(service("a"))
    core = client.CoreV1Api(api)
    seen = []
    async for ev in watch.Watch().stream(
        core.list_service_for_all_namespaces,
        resource_version=rv,
        label_selector="!service.kubernetes.io/headless",
        timeout_seconds=1,
    ):
        seen.append(ev["type"])
    assert seen == ["DELETED", "ADDED"]


async def test_booleans_and_namespaced_paths(apiserver: ApiServer, api: client.ApiClient) -> None:
    apiserver.put(service("a", ns="x"))
    apiserver.put(service("b", ns="y"))
    core = client.CoreV1Api(api)
    lst = await core.list_namespaced_service("y")
    assert [s.metadata.name for s in lst.items] == ["b"]
    for value in ("true", "True", "1"):
        resp = await core.api_client.rest_client.pool_manager.get(
            f"{apiserver.url}/api/v1/namespaces/x/services?watch={value}&timeoutSeconds=1"
        )
        body = await resp.text()
        assert body.startswith('{"type":"ADDED"'), (value, body)
    resp = await core.api_client.rest_client.pool_manager.get(
        f"{apiserver.url}/api/v1/namespaces/x/services?watch=false"
    )
    assert (await resp.json())["kind"] == "ServiceList"


async def test_runs_as_a_process_with_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.yaml"
    state.write_text(
        yaml.safe_dump_all(
            [service("from-file", ip="10.96.4.4"), endpoint_slice("from-file-1", "from-file")]
        )
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.apiserver",
        "--port",
        "0",
        "--state",
        str(state),
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        api = await make_api_client(str(proxy_node.kubeconfig(url, tmp_path)))
        try:
            lst = await client.CoreV1Api(api).list_service_for_all_namespaces()
            assert [(s.metadata.name, s.spec.cluster_ip) for s in lst.items] == [
                ("from-file", "10.96.4.4")
            ]
        finally:
            await api.close()
    finally:
        proc.terminate()
        await proc.wait()
