"""kubernetes_asyncio, pyroute2 and prometheus_client through lazy stand-ins: only what is
used is imported."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsproxy import lean_import
from tests.support.proxy_node import kubeconfig
from tests.support.python_process import run_python


@pytest.fixture
def on_path(tmp_path: Path) -> Iterator[Path]:
    """A directory first on sys.path for a test's own modules; afterwards neither it nor
    any module named after what the test put in it (stand-ins included) is left."""
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        tops = {entry.stem for entry in tmp_path.iterdir()}
        for name in [m for m in sys.modules if m.split(".")[0] in tops]:
            del sys.modules[name]


def _run(code: str, env: dict[str, str] | None = None) -> str:
    return run_python(code, env).stdout.strip()


def test_the_proxy_loads_no_model_and_a_model_still_loads_when_asked_for() -> None:
    out = _run(
        "import sys\n"
        "from ipvsproxy import lean_import\n"
        "lean_import.install_dependencies()\n"
        "import ipvsproxy.app\n"
        "from kubernetes_asyncio import client\n"
        "count = lambda: sum(m.startswith('kubernetes_asyncio.') for m in sys.modules)\n"
        "before = count()\n"
        "models = sys.modules['kubernetes_asyncio.client.models']\n"
        "unread = '_init_names' not in vars(models)\n"
        "pod = client.ApiClient.__new__(client.ApiClient)\n"
        "value = pod._ApiClient__deserialize({'metadata': {'name': 'p'}}, 'V1Pod')\n"
        "print(before, count(), type(value).__name__, value.metadata.name, unread)\n"
    )
    before, after, kind, name, unread = out.split()
    assert unread == "True"  # nor were the models' 768 names read
    # 859 modules with the package's own __init__; a few dozen here.
    assert int(before) < 40
    assert int(after) <= int(before) + 10  # V1Pod and the models it refers to
    assert (kind, name) == ("V1Pod", "p")


def test_names_the_real_init_exports_resolve() -> None:
    out = _run(
        "from ipvsproxy import lean_import\n"
        "lean_import.install_dependencies()\n"
        "import kubernetes_asyncio\n"
        "from kubernetes_asyncio import client, config, watch\n"
        "print(type(kubernetes_asyncio).__name__, client.CoreV1Api.__name__,"
        " client.DiscoveryV1Api.__name__, config.load_kube_config.__name__,"
        " watch.Watch.__name__, kubernetes_asyncio.__version__)\n"
    )
    assert out.split() == [
        "LazyPackage",
        "CoreV1Api",
        "DiscoveryV1Api",
        "load_kube_config",
        "Watch",
        importlib.metadata.version("kubernetes_asyncio"),  # a constant of its __init__
    ]


def _init_source(package: str) -> str:
    init = importlib.import_module(package).__file__  # a stand-in has the real one's
    assert init is not None
    return Path(init).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "package",
    [
        "kubernetes_asyncio",
        "kubernetes_asyncio.client",
        "kubernetes_asyncio.client.api",
        "kubernetes_asyncio.client.models",
    ],
)
def test_kubernetes_client_inits_are_read_without_a_parse_and_to_the_same_names(
    package: str,
) -> None:
    source = _init_source(package)
    read = lean_import._read_generated(source)
    assert read is not None  # the generator's form: no AST built at start
    assert read == lean_import._read_any(source, package)
    assert "__all__" in read.constants


GENERATED = """# coding: utf-8

\"\"\"
    A docstring, with "quotes" and from x import y
\"\"\"
\"\"\"One line.\"\"\"
from __future__ import absolute_import
from pkg.sub import Thing
from pkg.other import Thing as Alias  # a comment
import pkg.more as more
__version__ = "1.2.3"
NAME = 'name'
__all__ = ["Thing", 'Alias',
    "more",
]
SHORT = ["a", "b"]
EMPTY = []
TAIL = [
    "x", "y]"]
"""


def test_the_generated_form_reads_as_the_parse_does() -> None:
    read = lean_import._read_generated(GENERATED)
    assert read is not None
    assert read == lean_import._read_any(GENERATED, "pkg")
    assert read.exports["Alias"] == ("pkg.other", "Thing")
    assert read.constants["__all__"] == ["Thing", "Alias", "more"]
    assert read.constants["TAIL"] == ["x", "y]"]


@pytest.mark.parametrize(
    "source",
    [
        "from pkg import (\n    Thing,\n)\n",  # parenthesized
        "from .sub import Thing\n",  # relative
        "from pkg import a, b\n",  # several names
        "try:\n    from pkg import Thing\nexcept ImportError:\n    pass\n",
        'X = "with \\" escape"\n',
        "X = 1\n",  # a literal, but not a string
        '__all__ = ["a", b]\n',  # not only strings
        '__all__ = [\n    "a",\n',  # never closed
        '"""never closed\n',
        '"""doc""" + X\n',
        '"""doc\n""" + X\n',
        '"""a \\ backslash"""\n',
    ],
)
def test_any_other_form_is_left_to_the_parse(source: str) -> None:
    assert lean_import._read_generated(source) is None


def test_pyroute2_loads_what_the_dataplane_uses_and_the_rest_on_demand() -> None:
    out = _run(
        "import sys\n"
        "from ipvsproxy import lean_import\n"
        "lean_import.install_dependencies()\n"
        "import ipvsproxy.app\n"
        "import pyroute2\n"
        "loaded = lambda: sum(m.startswith('pyroute2.') for m in sys.modules)\n"
        "before = loaded()\n"
        "print(type(pyroute2).__name__, 'pyroute2.ndb.main' in sys.modules, before,"
        " pyroute2.IPVSService.__name__, loaded() > before)\n"
    )
    kind, ndb, before, service, more = out.split()
    assert (kind, ndb, service, more) == ("LazyPackage", "False", "IPVSService", "True")
    assert int(before) < 140  # 163 with the package's own __init__


def test_prometheus_exposition_loads_at_the_first_scrape_only() -> None:
    out = _run(
        "import asyncio, sys\n"
        "from ipvsproxy import lean_import\n"
        "lean_import.install_dependencies()\n"
        "import ipvsproxy.app\n"
        "import prometheus_client\n"
        "from aiohttp.test_utils import RawTestServer, TestClient\n"
        "from ipvsproxy.http.metrics_server import metrics_routes\n"
        "from ipvsproxy.metrics import Metrics\n"
        "loaded = lambda: 'prometheus_client.exposition' in sys.modules\n"
        "before = loaded()\n"
        "async def scrape():\n"
        "    async with TestClient(RawTestServer(metrics_routes(Metrics()))) as client:\n"
        "        return (await (await client.get('/metrics')).text()).count('kubeproxy_')\n"
        "found = asyncio.run(scrape())\n"
        # A name the real __init__ imports relatively (from .exposition import ...).
        "print(type(prometheus_client).__name__, before, found > 0, loaded(),"
        " prometheus_client.generate_latest.__name__)\n"
    )
    assert out.split() == ["LazyPackage", "False", "True", "True", "generate_latest"]


def test_the_client_s_unused_libraries_load_when_first_used_and_not_before() -> None:
    out = _run(
        "import asyncio, sys\n"
        "from ipvsproxy import lean_import\n"
        "lean_import.install_dependencies()\n"
        "import ipvsproxy.app\n"
        "from kubernetes_asyncio.client import api_client, configuration\n"
        "names = ('urllib3', 'dateutil.parser', 'multiprocessing.pool')\n"
        "loaded = lambda: ','.join(str(n in sys.modules) for n in names)\n"
        "print(loaded())\n"
        "config = configuration.Configuration()\n"
        "config.username, config.password = 'a', 'b'\n"
        "print(config.get_basic_auth_token(), loaded())\n"
        "print(api_client.parse('2020-01-02T03:04:05Z').isoformat(), loaded())\n"
        "async def pool():\n"
        "    client = api_client.ApiClient()\n"
        "    kind = type(client.pool).__name__\n"
        "    await client.close()\n"
        "    return kind\n"
        "print(asyncio.run(pool()), loaded())\n"
        # An import made elsewhere gets the real module, not a stand-in.
        "import urllib3, dateutil.parser, multiprocessing.pool\n"
        "print(type(urllib3).__name__, configuration.urllib3.util is urllib3.util)\n"
    )
    lines = out.splitlines()
    assert lines[0] == "False,False,False"
    assert lines[1] == "Basic YTpi True,False,False"
    assert lines[2] == "2020-01-02T03:04:05+00:00 True,True,False"
    assert lines[3] == "ThreadPool True,True,True"
    assert lines[4] == "module True"


def test_a_deferred_module_leaves_sys_modules_once_the_library_has_imported(
    on_path: Path,
) -> None:
    (on_path / "heavy.py").write_text("LOADS = []\ndef work(x):\n    return x * 2\n")
    package = on_path / "user"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('not run')\n")
    (package / "part.py").write_text("import heavy as h\nfrom heavy import work\n")
    deferred = (lean_import.Deferred("heavy", ("work",)),)
    assert lean_import.install("user", ("user",), ("user.part",), deferred) is None
    part = sys.modules["user.part"]
    assert "heavy" not in sys.modules  # bound in user.part, gone from sys.modules
    assert type(part.h).__name__ == "DeferredModule"
    assert part.work(21) == 42  # the first call imports the real module
    assert "heavy" in sys.modules
    assert part.h.LOADS is sys.modules["heavy"].LOADS  # attributes read through


def test_an_imported_package_is_left_alone() -> None:
    assert type(sys.modules["email"]).__name__ == "module"  # imported for real (aiohttp)
    assert lean_import.install("email", ("email",), ()) == "imported already"


def test_installing_again_changes_nothing() -> None:
    # tests/conftest.py installed the stand-ins, as the entry point does.
    before = {name: sys.modules[name] for name in ("structlog", "kubernetes_asyncio")}
    assert {type(module).__name__ for module in before.values()} == {"LazyPackage"}
    assert lean_import.install_logging() is None
    for library in lean_import.DEPENDENCIES:
        assert lean_import.install(*library) is None
    assert {name: sys.modules[name] for name in before} == before


def test_structlog_loads_its_logger_and_its_helpers_on_demand() -> None:
    done = run_python(
        "import sys\n"
        "from ipvsproxy import lean_import\n"
        "print(lean_import.install_logging())\n"
        "from ipvsproxy import logging as plog\n"
        "plog.configure('json', 0)\n"
        "plog.get_logger('test').info('logged', n=1)\n"
        "helpers = ('structlog.testing', 'structlog.threadlocal', 'structlog.twisted')\n"
        "loaded = lambda: [h in sys.modules for h in helpers]\n"
        "print(type(sys.modules['structlog']).__name__, loaded())\n"
        "import structlog\n"
        # Its __init__ imports these as submodules (from structlog import testing, ...).
        "with structlog.testing.capture_logs() as logs:\n"
        "    structlog.get_logger().warning('captured')\n"
        "print(logs[0]['event'], structlog.dev.ConsoleRenderer.__name__, loaded())\n"
    )
    assert done.stdout.splitlines() == [
        "None",
        "LazyPackage [False, False, False]",
        "captured ConsoleRenderer [True, False, False]",
    ]
    logged = json.loads(done.stderr)
    assert (logged["logger"], logged["event"], logged["n"]) == ("test", "logged", 1)


def test_an_api_request_loads_none_of_the_deferred_modules(tmp_path: Path) -> None:
    # The API client's session trusts the environment: each request reads the proxy
    # settings (urllib.request, which imports tempfile), so neither is deferred; these
    # four stay out. The server's port is known once it listens, in the child.
    config = kubeconfig("http://127.0.0.1:PORT", tmp_path)
    out = _run(
        "import asyncio, sys\n"
        "from ipvsproxy import lean_import\n"
        "lean_import.install_logging()\n"
        "lean_import.install_dependencies()\n"
        "import ipvsproxy.app\n"
        "from ipvsproxy.kube.client import make_api_client\n"
        "from kubernetes_asyncio.client import CoreV1Api\n"
        'BODY = b\'{"kind": "NodeList", "metadata": {}, "items": []}\'\n'
        "async def answer(reader, writer):\n"  # one plain HTTP answer: no aiohttp server
        "    await reader.readuntil(b'\\r\\n\\r\\n')\n"
        "    writer.write(b'HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n'\n"
        "                 b'Content-Length: %d\\r\\n\\r\\n%s' % (len(BODY), BODY))\n"
        "    await writer.drain()\n"
        "    writer.close()\n"
        "async def main():\n"
        "    server = await asyncio.start_server(answer, '127.0.0.1', 0)\n"
        "    port = server.sockets[0].getsockname()[1]\n"
        f"    path = {str(config)!r}\n"
        "    text = open(path).read().replace('PORT', str(port))\n"
        "    open(path, 'w').write(text)\n"
        "    api = await make_api_client(path)\n"
        "    nodes = await CoreV1Api(api).list_node()\n"
        "    await api.close()\n"
        "    server.close()\n"
        "    names = ('html', 'idna', 'mimetypes', 'uuid')\n"
        "    print(len(nodes.items), [n for n in names if n in sys.modules])\n"
        "asyncio.run(main())\n"
    )
    assert out == "0 []"


def test_aiohttp_s_unused_standard_modules_load_when_first_used_and_not_before() -> None:
    out = _run(
        "import io, sys\n"
        "from ipvsproxy import lean_import\n"
        "lean_import.install_logging()\n"
        "lean_import.install_dependencies()\n"
        "import ipvsproxy.app\n"
        "names = ('html', 'idna', 'mimetypes', 'uuid')\n"
        "loaded = lambda: ''.join('1' if n in sys.modules else '.' for n in names)\n"
        "print(loaded())\n"
        "from aiohttp import multipart, payload, web_protocol\n"
        "from yarl import URL\n"
        "print(web_protocol.html_escape('<b>'), loaded())\n"
        "print(URL('http://b\u00fccher.example/').raw_host, loaded())\n"
        "sent = payload.IOBasePayload(io.BytesIO(b''), filename='a.json')\n"
        "print(sent.content_type, loaded())\n"
        "print(len(multipart.MultipartWriter().boundary), loaded())\n"
        # An import made elsewhere gets the real module, not a stand-in.
        "import html, uuid\n"
        "print(type(html).__name__, web_protocol.html_escape is not html.escape)\n"
    )
    assert out.splitlines() == [
        "....",
        "&lt;b&gt; 1...",
        "xn--bcher-kva.example 11..",
        "application/json 111.",
        "32 1111",
        "module True",
    ]


def test_a_needed_module_that_fails_leaves_the_normal_import(on_path: Path) -> None:
    package = on_path / "bulky"
    package.mkdir()
    (package / "__init__.py").write_text("from bulky.part import Thing\nLOADED = True\n")
    (package / "part.py").write_text("class Thing:\n    pass\n")
    reason = lean_import.install("bulky", ("bulky",), needed=("bulky.missing",))
    assert reason == "ModuleNotFoundError: No module named 'bulky.missing'"
    assert "bulky" not in sys.modules
    assert lean_import.install("bulky", ("bulky",), needed=("bulky.part",)) is None
    import bulky  # type: ignore[import-not-found]

    assert type(bulky).__name__ == "LazyPackage"
    assert bulky.LOADED is True  # a literal constant of its __init__
    assert bulky.Thing.__name__ == "Thing"  # an export, imported on first use


SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def _run_with_ca_environment(env: dict[str, str], code: str) -> str:
    """_run, with OpenSSL's CA variables as ``env`` says (absent unless in it)."""
    ours = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    return _run(code, ours | env)


@pytest.mark.skipif(not SYSTEM_BUNDLE.is_file(), reason="no system CA bundle to leave out")
@pytest.mark.parametrize("environment", [{}, {"SSL_CERT_FILE": str(SYSTEM_BUNDLE)}])
def test_aiohttp_s_default_contexts_trust_nothing_and_the_rest_of_the_process_is_as_before(
    environment: dict[str, str],
) -> None:
    # Unset, the system's default location applies; set, it is kept as it was.
    env = {"SSL_CERT_DIR": "/nonexistent", **environment}
    out = _run_with_ca_environment(
        env,
        "import os, ssl\n"
        "from ipvsproxy import lean_import\n"
        "print(lean_import.install_dependencies())\n"
        "import aiohttp.connector as c\n"
        "print(c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'],"
        " c._SSL_CONTEXT_UNVERIFIED.cert_store_stats()['x509_ca'])\n"
        "print(ssl.create_default_context().cert_store_stats()['x509_ca'] > 0)\n"
        "print(os.environ.get('SSL_CERT_FILE'), os.environ.get('SSL_CERT_DIR'))\n",
    )
    assert out.splitlines() == [
        "{}",
        "0 0",  # aiohttp's: no certificate, so no verification passes through them
        "True",  # any other default context: the system's bundle, as ever
        f"{environment.get('SSL_CERT_FILE')} /nonexistent",
    ]


@pytest.mark.skipif(not SYSTEM_BUNDLE.is_file(), reason="no certificate to use as a CA")
def test_the_api_client_brings_its_own_context_so_aiohttp_s_are_never_used(
    tmp_path: Path,
) -> None:
    # One certificate of the system's bundle stands for a cluster's CA.
    bundle = SYSTEM_BUNDLE.read_text()
    end = "-----END CERTIFICATE-----"
    (tmp_path / "ca.crt").write_text(bundle[bundle.index("-----BEGIN") : bundle.index(end)] + end)
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:1',"
        f" certificate-authority: '{tmp_path / 'ca.crt'}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    out = _run(
        "import asyncio, ssl\n"
        "from ipvsproxy import lean_import\n"
        "lean_import.install_dependencies()\n"
        "from ipvsproxy.kube.client import make_api_client\n"
        "async def main():\n"
        f"    api = await make_api_client({str(tmp_path / 'kubeconfig')!r})\n"
        "    context = api.rest_client.pool_manager.connector._ssl\n"
        "    print(isinstance(context, ssl.SSLContext), context.cert_store_stats()['x509_ca'])\n"
        "    await api.close()\n"
        "asyncio.run(main())\n"
    )
    assert out.split() == ["True", "1"]  # the kubeconfig's CA, and only it


def test_importing_the_package_installs_nothing() -> None:
    # Only the entry points install the stand-ins: importing any module is no side effect.
    out = _run(
        "import ipvsproxy.app, ipvsproxy.kube, ipvsproxy.dataplane, sys\n"
        "print(type(sys.modules['kubernetes_asyncio']).__name__,"
        " type(sys.modules['pyroute2']).__name__)\n"
    )
    assert out.split() == ["module", "module"]


def test_the_entry_point_says_why_a_library_keeps_its_own_import(tmp_path: Path) -> None:
    # pyroute2 imported before the entry point runs: its normal import stands, logged at debug.
    code = (
        "import pyroute2, sys\n"
        "from ipvsproxy import cli, app\n"
        "app.run = lambda config: 0\n"
        "sys.exit(cli.main(['--v=1', '--log-format=json', '--kubeconfig=x']))\n"
    )
    done = run_python(code)
    assert '"library": "pyroute2"' in done.stderr + done.stdout
    assert "imported already" in done.stderr + done.stdout


def test_the_plan_command_loads_no_pyroute2_and_no_kubernetes_client(tmp_path: Path) -> None:
    manifest = tmp_path / "sample.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n"
        "spec: {clusterIP: 10.96.0.10, ports: [{port: 80, protocol: TCP}]}\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ipvsproxy", "plan", "-f", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "TCP  10.96.0.10:80 rr" in done.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "ipvsproxy.core.plan.service" in imported  # importtime's output was read
    assert not [m for m in imported if m.startswith(("pyroute2", "kubernetes_asyncio"))]
