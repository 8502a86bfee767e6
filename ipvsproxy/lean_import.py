"""Import a big library without running its package ``__init__``, which imports it all.

Two of the proxy's dependencies import everything they have as soon as any part of
them is imported: ``kubernetes_asyncio`` (every API class and model, 859 modules,
some 30 MB of resident memory) and ``pyroute2`` (IPDB, NDB and every netlink
family, some 15 MB). The proxy's memory budget is kube-proxy's: no more than its
107 MB of peak RSS at 5,000 Services (kube-proxy 1.19 in IPVS mode, measured under
the same kernel), growing no faster per Service. The imports alone would take half
of that, and the proxy uses a handful of their modules. A third, ``prometheus_client``,
imports its exposition code (http.server, urllib.request, wsgiref) with its metric
classes: 0.4 s of every start under user-mode-linux, for code the first scrape needs.
A fourth, ``structlog``, imports its testing, thread-local, Twisted and greenlet helpers
with its logger. And kubernetes_asyncio's client imports, at its top, three libraries
for code the proxy never runs: ``urllib3`` (for basic-auth headers), ``dateutil.parser``
(to read dates into models) and ``multiprocessing.pool`` (for ``async_req`` calls). With
what only they pull in, that is 78 of the 551 modules a start loaded, and 1,150 of its
7,730 system calls; under user-mode-linux every system call and every module counts.

``install_dependencies()`` puts lazy stand-ins for those libraries' packages in
``sys.modules``; the program's entry point (``ipvsproxy.cli.main``) and the tests'
(``tests/conftest.py``) call it once, before anything imports them. The entry point
installs structlog's first, with ``install_logging()``: it sets its logs up before
anything else. A stand-in has the real package's ``__path__``, so submodules import as
usual, and it resolves a name its real ``__init__`` exports (``from M import N``, or a
submodule: ``from package import N``; literal constants such as ``__version__`` are
copied) by importing ``M`` when the name is first used: a kubernetes_asyncio model
still loads, alone, if a response is ever deserialized into one. Anything unexpected
(another layout, the library already imported, a needed module failing to import)
leaves the normal import in place, and says why.

A stand-in reads its ``__init__`` when the first name is looked up, and without ``ast``
when the file has the generator's form (one ``from M import N`` per line).
kubernetes_asyncio.client's and its models' are 100 KB each; parsing both at every
start built 5 MB of syntax tree: on a host 27 ms and 1,400 of a start's 9,200 page
faults, under user-mode-linux (a third of a millisecond a fault) about half a second.

A ``Deferred`` module is the other kind of stand-in: it is in ``sys.modules`` only while
a library's needed modules import, so they bind it in place of the real module, which it
imports when first used (an attribute read, or a call of a name taken from it with
``from M import N``). Then it leaves ``sys.modules``: any other import gets the real one.

``install_dependencies()`` also imports aiohttp's client and server first, without the
system's CA bundle in the two TLS contexts aiohttp makes at import and the proxy never
uses, and with four standard modules it imports for code the proxy never runs deferred
(see ``import_aiohttp``).
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import os
import re
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple


class LazyPackage(types.ModuleType):
    """A package whose ``__init__`` is not run: its exports are imported on first use."""

    def __init__(self, name: str, directory: Path) -> None:
        super().__init__(name)
        self._init_file = directory / "__init__.py"
        self.__path__ = [str(directory)]
        self.__file__ = str(self._init_file)
        self.__package__ = name

    def _names(self) -> InitNames:
        """The ``__init__``'s names, read when the first one is looked up: a start looks
        up two of kubernetes_asyncio.client's and none of its models' 768."""
        names: InitNames | None = self.__dict__.get("_init_names")
        if names is None:
            source = self._init_file.read_text(encoding="utf-8")
            names = _read_generated(source) or _read_any(source, self.__name__)
            self.__dict__["_init_names"] = names
            for constant, value in names.constants.items():  # __version__ and the like
                # A submodule imported since then is bound under its name, and wins as
                # it would have over the real __init__'s constant.
                self.__dict__.setdefault(constant, value)
        return names

    def __getattr__(self, attr: str) -> Any:
        exports = self._names().exports
        if attr in self.__dict__:  # a constant, read just now
            return self.__dict__[attr]
        if attr.startswith("__"):  # a probe (inspect, pickle, copy): never a submodule
            raise AttributeError(f"module {self.__name__!r} has no {attr!r}")
        if attr in exports and exports[attr][0] != self.__name__:
            module, name = exports[attr]
            value = getattr(importlib.import_module(module), name)
        else:
            try:
                value = importlib.import_module(f"{self.__name__}.{attr}")
            except ModuleNotFoundError:
                raise AttributeError(f"module {self.__name__!r} has no {attr!r}") from None
        setattr(self, attr, value)  # resolved once
        return value


class InitNames(NamedTuple):
    """What a package's ``__init__`` binds that a stand-in reproduces."""

    exports: dict[str, tuple[str, str]]  # {name: (module, attribute)}
    constants: dict[str, Any]  # top-level NAME = <literal>


_STRING = r"(?:\"[^\"\\]*\"|'[^'\\]*')"  # a string literal without escapes
# A line of a generated __init__: an absolute ``from M import N [as X]``, an ``import M
# [as X]`` (not an export, as for _exports), a string constant, the start of a list of
# strings (``__all__ = [``, maybe closed on the same line), a comment, or nothing.
_GENERATED_LINE = re.compile(
    r"(?:from (?P<module>\w[\w.]*) import (?P<name>\w+)(?: as (?P<alias>\w+))?"
    r"|import \w[\w.]*(?: as \w+)?)(?:\s+#.*)?"
    rf"|(?P<constant>\w+) = (?:(?P<value>{_STRING})|\[(?P<items>.*))"
    r"|#.*|"
)
_STRINGS = re.compile(rf"\s*(?:{_STRING}\s*,\s*)*(?:{_STRING}\s*)?")


def _read_generated(source: str) -> InitNames | None:
    """The names of an ``__init__`` made only of lines of _GENERATED_LINE and of
    docstrings (a string in triple double quotes that opens at the start of a line and
    closes at the end of one, no backslash in it); None for any other source, which
    ``_read_any`` parses. The same names as ``_read_any``, without building an AST."""
    exports: dict[str, tuple[str, str]] = {}
    constants: dict[str, Any] = {}
    in_string = False
    in_list: tuple[str, list[str]] | None = None  # (name, its lines so far)
    for line in source.splitlines():
        line = line.rstrip()
        if in_list is not None:
            in_list[1].append(line)
        elif in_string or line.startswith('"""'):
            quotes = line.count('"""')
            if "\\" in line or (quotes and not line.endswith('"""')):
                return None
            if in_string:  # no quotes: still open; one: closed here
                if quotes > 1:
                    return None
                in_string = quotes == 0
            elif quotes == 1:  # opened here
                in_string = True
            elif quotes != 2 or len(line) < 6:  # otherwise opened and closed here
                return None
            continue
        elif (found := _GENERATED_LINE.fullmatch(line)) is None:
            return None
        elif found["module"]:
            exports[found["alias"] or found["name"]] = (found["module"], found["name"])
        elif found["value"]:
            constants[found["constant"]] = found["value"][1:-1]
        elif found["constant"]:
            in_list = (found["constant"], [found["items"]])
        # A line ending in "]" closes the list: no string here can hold it at its end.
        if in_list is not None and in_list[1][-1].endswith("]"):
            if (listed := _string_list(in_list[1])) is None:
                return None
            constants[in_list[0]] = listed
            in_list = None
    return None if in_string or in_list else InitNames(exports, constants)


def _string_list(lines: list[str]) -> list[str] | None:
    """The strings of a list literal from after its ``[`` to its closing ``]``; None
    unless it holds string literals only."""
    inside = "\n".join(lines).removesuffix("]")
    if _STRINGS.fullmatch(inside) is None:
        return None
    return [item[1:-1] for item in re.findall(_STRING, inside)]


def _read_any(source: str, package: str) -> InitNames:
    tree = ast.parse(source)
    return InitNames(_exports(tree, package), _constants(tree))


def _exports(tree: ast.Module, package: str) -> dict[str, tuple[str, str]]:
    """``{name: (module, attribute)}`` for each ``from M import N [as X]`` of the package's
    ``__init__``: absolute, or relative to the package itself (``from .M import N``)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level <= 1:
            module = node.module if node.level == 0 else f"{package}.{node.module}"
            for alias in node.names:
                found[alias.asname or alias.name] = (module, alias.name)
    return found


def _constants(tree: ast.Module) -> dict[str, Any]:
    """Top-level ``NAME = <literal>`` assignments."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    found[target.id] = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError):
                    continue  # not a literal
    return found


def install(
    root: str,
    packages: Sequence[str],
    needed: Sequence[str],
    deferred: Sequence[Deferred] = (),
) -> str | None:
    """Stand-ins for ``packages`` (``root`` and subpackages of it, parents first), then
    ``needed`` imported through them, with ``deferred`` standing in for modules not
    imported yet. None once installed; otherwise why not, with the normal import left to
    happen (``root`` imported already, or anything that does not fit)."""
    if isinstance(sys.modules.get(root), LazyPackage):
        return None  # installed before
    if root in sys.modules:
        return "imported already"
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        return "not a package"
    base = Path(next(iter(spec.submodule_search_locations)))
    directories = {name: base.joinpath(*name.split(".")[1:]) for name in packages}
    missing = [name for name, d in directories.items() if not (d / "__init__.py").is_file()]
    if missing:
        return f"another layout: no {', '.join(missing)}"
    try:
        for name, directory in directories.items():
            package = LazyPackage(name, directory)
            sys.modules[name] = package
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, package)
        with _standing_in(deferred):
            for name in needed:
                importlib.import_module(name)
    except Exception as err:
        for name in [m for m in sys.modules if m == root or m.startswith(f"{root}.")]:
            del sys.modules[name]
        return f"{type(err).__name__}: {err}"
    return None


@contextlib.contextmanager
def _standing_in(deferred: Sequence[Deferred]) -> Iterator[None]:
    """``deferred`` modules not imported yet are stand-ins while the block runs."""
    stand_ins = [DeferredModule(d) for d in deferred if d.module not in sys.modules]
    for stand_in in stand_ins:
        sys.modules[stand_in.__name__] = stand_in
    try:
        yield
    finally:
        for stand_in in stand_ins:
            if sys.modules.get(stand_in.__name__) is stand_in:
                del sys.modules[stand_in.__name__]


class Deferred(NamedTuple):
    module: str
    calls: tuple[str, ...] = ()  # names taken with ``from module import name``: callables


class DeferredModule(types.ModuleType):
    """Stands for ``module`` while a library imports: the real one loads on first use."""

    def __init__(self, deferred: Deferred) -> None:
        super().__init__(deferred.module)
        for name in deferred.calls:
            setattr(self, name, _call_later(self, name))

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # a probe (inspect, pickle, copy): never loads it
            raise AttributeError(f"module {self.__name__!r} has no {attr!r}")
        return getattr(_real(self), attr)


def _real(stand_in: DeferredModule) -> types.ModuleType:
    if sys.modules.get(stand_in.__name__) is stand_in:  # used while the library imports
        del sys.modules[stand_in.__name__]
    return importlib.import_module(stand_in.__name__)


def _call_later(stand_in: DeferredModule, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(_real(stand_in), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


class Library(NamedTuple):
    root: str
    packages: tuple[str, ...]  # whose __init__ is not run, parents first
    needed: tuple[str, ...]  # imported through the stand-ins at once
    deferred: tuple[Deferred, ...] = ()  # stand in while ``needed`` imports


STRUCTLOG = Library(
    "structlog",
    ("structlog",),
    ("structlog._config", "structlog.stdlib", "structlog.tracebacks"),
)

DEPENDENCIES = (
    # No model and no API class but the two the watcher uses is ever loaded.
    Library(
        "kubernetes_asyncio",
        (
            "kubernetes_asyncio",
            "kubernetes_asyncio.client",
            "kubernetes_asyncio.client.api",
            "kubernetes_asyncio.client.models",
        ),
        ("kubernetes_asyncio.client.api_client", "kubernetes_asyncio.config"),
        (
            Deferred("urllib3"),  # configuration.py: basic-auth headers
            Deferred("dateutil.parser", ("parse",)),  # api_client.py: dates into models
            Deferred("multiprocessing.pool", ("ThreadPool",)),  # api_client.py: async_req
            Deferred("mimetypes"),  # api_client.py: files sent
        ),
    ),
    # The logger, its processors and the standard logging bridge; not the testing,
    # thread-local (and uuid with it), Twisted and greenlet helpers.
    STRUCTLOG,
    # Only the iproute and conntrack parts, not IPDB, NDB and every other netlink family.
    Library("pyroute2", ("pyroute2",), ("pyroute2.netlink.exceptions",)),
    # The metric classes, not the exposition code (http.server, urllib.request, wsgiref:
    # 0.4 s of every start under user-mode-linux), which loads at the first scrape.
    Library(
        "prometheus_client",
        ("prometheus_client",),
        ("prometheus_client.metrics", "prometheus_client.registry"),
    ),
)


# OpenSSL's default trust locations, read from the environment when a context loads them.
_CA_ENVIRONMENT = ("SSL_CERT_FILE", "SSL_CERT_DIR")


@contextlib.contextmanager
def _no_default_ca_bundle() -> Iterator[None]:
    """While the block runs, a context told to load the system's CA certificates finds
    none: OpenSSL's file and directory locations point at an empty file."""
    saved = {name: os.environ.get(name) for name in _CA_ENVIRONMENT}
    for name in _CA_ENVIRONMENT:
        os.environ[name] = os.devnull
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


# Imported by aiohttp's modules (and yarl's) at their top, for code the proxy never runs.
AIOHTTP_DEFERRED = (
    Deferred("html", ("escape",)),  # web_protocol.py: a traceback in a 500 page
    Deferred("idna"),  # yarl: hosts that are not ASCII
    Deferred("mimetypes"),  # payload.py: the type of a file sent
    Deferred("uuid"),  # multipart.py: a multipart boundary
)
# The client, and the low-level server the health and metrics servers run on.
AIOHTTP_NEEDED = ("aiohttp.connector", "aiohttp.web_server")


def import_aiohttp() -> str | None:
    """Import aiohttp's client and server, without the system's CA bundle in the client's
    default contexts and with AIOHTTP_DEFERRED standing in.

    aiohttp makes two TLS contexts when imported, for requests that bring none, and
    each reads and parses every certificate of the system's bundle: 60 ms of the
    imports on a host, about 0.6 s under user-mode-linux (500 page faults of it). The proxy
    never uses them: its only client, kubernetes_asyncio's, always brings its own
    context, made from the kubeconfig's or the cluster's CA. Made here, they trust no
    certificate: were anything to use them, it would fail verification, never pass one.
    None once done; otherwise why not (aiohttp imported already, so they stand)."""
    if "aiohttp.connector" in sys.modules:
        return "imported already"
    with _no_default_ca_bundle(), _standing_in(AIOHTTP_DEFERRED):
        try:
            for name in AIOHTTP_NEEDED:
                importlib.import_module(name)
        except ImportError as err:  # the proxy's own import will say it again
            return f"{type(err).__name__}: {err}"
    return None


def install_logging() -> str | None:
    """Install structlog's stand-in, before the proxy's logging module imports it.
    None once installed; otherwise why not."""
    return install(*STRUCTLOG)


def install_dependencies() -> dict[str, str]:
    """Install the stand-ins of the proxy's big dependencies. Returns, for each library
    whose normal import stands, why (the caller logs it)."""
    fallbacks = {}
    if (reason := import_aiohttp()) is not None:
        fallbacks["aiohttp"] = reason
    for library in DEPENDENCIES:
        reason = install(*library)
        if reason is not None:
            fallbacks[library.root] = reason
    return fallbacks
