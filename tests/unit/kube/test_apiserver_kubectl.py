"""The test API server, driven by a real client nobody here wrote: kubectl.

kubectl comes from Debian's `kubernetes-client` package or the `kubectl` package; the tests
skip, saying so, only when neither is installed.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.apiserver import ApiServer
from tests.apiserver.store import Resource, find_resource
from tests.unit.kube.conftest import endpoint_slice, node, service

KUBECTL = shutil.which("kubectl") or next(
    (p for p in ("/usr/bin/kubectl", "/usr/lib/kubernetes-client/kubectl") if Path(p).exists()),
    None,
)


def _client_minor() -> int:
    if KUBECTL is None:
        return 0
    out = subprocess.run(
        [KUBECTL, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
    ).stdout
    try:
        return int(re.sub(r"\D", "", json.loads(out)["clientVersion"]["minor"]) or 0)
    except (ValueError, KeyError):
        return 0


# kubectl >= 1.27 leaves validation to the server when OpenAPI v3 says PATCH takes
# fieldValidation (the test server says so). Older ones (Debian bookworm's
# kubernetes-client is 1.20) validate against protobuf OpenAPI v2, which the server lacks.
APPLY_FLAGS = [] if _client_minor() >= 27 else ["--validate=false"]

pytestmark = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not installed (apt-get install kubernetes-client or kubectl)"
)


async def kubectl(kubeconfig: Path, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    assert KUBECTL is not None
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        f"--kubeconfig={kubeconfig}",
        "--request-timeout=10s",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(kubeconfig.parent), "PATH": "/usr/bin:/bin"},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


async def test_get_services_table(apiserver: ApiServer, kubeconfig: Path) -> None:
    apiserver.put(service("web", ip="10.96.0.10"))
    svc = service("np", ip="10.96.0.11")
    svc["spec"]["type"] = "NodePort"
    svc["spec"]["ports"][0]["nodePort"] = 30080
    apiserver.put(svc)
    apiserver.put(service("other", ns="kube-system", ip="10.96.0.12"))
    rc, out, err = await kubectl(kubeconfig, "get", "services")
    assert rc == 0, err
    table = rows(out)
    assert table[0] == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert [r[:5] for r in table[1:]] == [
        ["np", "NodePort", "10.96.0.11", "<none>", "80:30080/TCP"],
        ["web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP"],
    ]
    rc, out, err = await kubectl(kubeconfig, "get", "svc", "-A", "-o", "name")
    assert rc == 0, err
    assert out.split() == ["service/np", "service/web", "service/other"]


async def test_get_json_and_selectors(apiserver: ApiServer, kubeconfig: Path) -> None:
    apiserver.put(service("a", labels={"tier": "front"}))
    apiserver.put(service("b", labels={"tier": "back"}))
    apiserver.put(service("c", labels={"service.kubernetes.io/headless": ""}))
    apiserver.put(endpoint_slice("a-1", "a", ips=["10.0.0.1", "10.0.0.2"]))
    apiserver.put(node("node-a"))
    rc, out, err = await kubectl(
        kubeconfig, "get", "svc", "-o", "json", "-l", "tier in (front,middle)"
    )
    assert rc == 0, err
    doc = json.loads(out)
    assert [i["metadata"]["name"] for i in doc["items"]] == ["a"]
    assert doc["items"][0]["spec"]["clusterIP"] == "10.96.0.1"
    rc, out, err = await kubectl(
        kubeconfig, "get", "svc", "-o", "name", "-l", "!service.kubernetes.io/headless,tier!=back"
    )
    assert rc == 0, err
    assert out.split() == ["service/a"]
    rc, out, err = await kubectl(kubeconfig, "get", "endpointslices.discovery.k8s.io", "-o", "json")
    assert rc == 0, err
    assert json.loads(out)["items"][0]["endpoints"][1]["addresses"] == ["10.0.0.2"]
    rc, out, err = await kubectl(
        kubeconfig, "get", "nodes", "--field-selector", "metadata.name=node-a", "-o", "name"
    )
    assert rc == 0, err
    assert out.split() == ["node/node-a"]
    rc, out, err = await kubectl(kubeconfig, "get", "svc", "missing")
    assert rc == 1
    assert 'services "missing" not found' in err


async def test_get_paginates_with_chunk_size(apiserver: ApiServer, kubeconfig: Path) -> None:
    for i in range(7):
        apiserver.put(service(f"s{i}"))
    rc, out, err = await kubectl(kubeconfig, "get", "svc", "-o", "name", "--chunk-size=2")
    assert rc == 0, err
    assert out.split() == [f"service/s{i}" for i in range(7)]
    assert sum("continue=" in p for _, p in apiserver.requests) == 3


async def test_apply_then_delete(apiserver: ApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "svc.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: api\n  namespace: default\n"
        "spec:\n  clusterIP: 10.96.3.3\n  ports:\n  - {name: http, port: 80, targetPort: 8080}\n"
        "  - {name: https, port: 443, targetPort: 8443}\n"
    )
    rc, out, err = await kubectl(kubeconfig, "apply", *APPLY_FLAGS, "-f", str(manifest))
    assert rc == 0, err
    assert out.strip() == "service/api created"
    stored = apiserver.store.get(*_svc(apiserver), "default", "api")
    assert [p["port"] for p in stored["spec"]["ports"]] == [80, 443]
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]

    manifest.write_text(
        manifest.read_text().replace("port: 443, targetPort: 8443", "port: 8443, targetPort: 8443")
    )
    rc, out, err = await kubectl(kubeconfig, "apply", *APPLY_FLAGS, "-f", str(manifest))
    assert rc == 0, err
    assert out.strip() == "service/api configured"
    stored = apiserver.store.get(*_svc(apiserver), "default", "api")
    assert sorted(p["port"] for p in stored["spec"]["ports"]) == [80, 8443]

    rc, out, err = await kubectl(kubeconfig, "apply", *APPLY_FLAGS, "-f", str(manifest))
    assert rc == 0, err
    assert out.strip() == "service/api unchanged"

    rc, out, err = await kubectl(kubeconfig, "delete", "-f", str(manifest))
    assert rc == 0, err
    assert out.strip() == 'service "api" deleted'
    rc, out, err = await kubectl(kubeconfig, "get", "svc", "-o", "name")
    assert (rc, out.strip()) == (0, "")


async def test_watch_prints_changes(apiserver: ApiServer, kubeconfig: Path) -> None:
    apiserver.put(service("first", ip="10.96.0.1"))
    assert KUBECTL is not None
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        f"--kubeconfig={kubeconfig}",
        "get",
        "svc",
        "-w",
        "-o",
        "name",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"HOME": str(kubeconfig.parent), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(20):
            assert (await proc.stdout.readline()).decode().strip() == "service/first"
            while not any("watch=true" in p.lower() for _, p in apiserver.requests):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            apiserver.put(service("second", ip="10.96.0.2"))
            assert (await proc.stdout.readline()).decode().strip() == "service/second"
            apiserver.remove("v1", "Service", "default", "first")
            assert (await proc.stdout.readline()).decode().strip() == "service/first"
    finally:
        proc.kill()
        await proc.wait()
    watch = next(p for _, p in apiserver.requests if "watch=true" in p.lower())
    assert "resourceVersion=" in watch


def _svc(server: ApiServer) -> tuple[Resource]:
    res = find_resource("", "v1", "services")
    assert res is not None
    return (res,)
