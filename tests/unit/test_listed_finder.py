"""ListedFinder answers what Python's FileFinder answers; the entry point uses it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from importlib import _bootstrap_external
from importlib.machinery import (
    EXTENSION_SUFFIXES,
    FileFinder,
    ModuleSpec,
    PathFinder,
    SourceFileLoader,
)
from pathlib import Path

import pytest

from ipvsproxy import listed_finder
from ipvsproxy.listed_finder import (
    PYTHON_LOADERS,
    ListedFinder,
    WholeFileLoader,
    loader_details,
    read_whole,
)
from tests.support.python_process import run_python

# The packages a start imports from, beyond the standard library's top level.
PACKAGES = ("aiohttp", "kubernetes_asyncio", "pyroute2", "structlog", "yaml", "ipvsproxy")


@pytest.fixture(autouse=True)
def _fresh_listings() -> Iterator[None]:
    listed_finder._listings.clear()
    yield
    listed_finder._listings.clear()


def test_python_loaders_are_python_s_own() -> None:
    # What the finders below are compared against is what Python's path hook is made with.
    assert list(PYTHON_LOADERS) == _bootstrap_external._get_supported_file_loaders()
    assert [loader for loader, _ in loader_details()] == [
        PYTHON_LOADERS[0][0],
        WholeFileLoader,
        PYTHON_LOADERS[2][0],
    ]


def answer(spec: ModuleSpec | None) -> tuple[object, ...] | None:
    """What a spec says, with our source loader counted as Python's."""
    if spec is None:
        return None
    loader = type(spec.loader).__name__ if spec.loader is not None else None
    if loader == WholeFileLoader.__name__:
        loader = SourceFileLoader.__name__
    return (spec.name, spec.origin, spec.submodule_search_locations, loader, spec.cached)


def assert_same_answers(directory: str, names: set[str]) -> int:
    theirs = FileFinder(directory, *PYTHON_LOADERS)
    ours = ListedFinder(directory, *loader_details())
    for name in sorted(names):
        assert answer(ours.find_spec(name)) == answer(theirs.find_spec(name)), name
    return len(names)


def module_names(directory: str) -> set[str]:
    """Every name a file or directory in ``directory`` could be imported as, and a few
    that nothing is."""
    names = {"no_such_module", "__init__", "__pycache__"}
    for entry in os.listdir(directory):
        names.add(entry.split(".", 1)[0])
        names.add(entry)
    return names


def test_the_same_specs_as_file_finder_for_every_module_on_sys_path() -> None:
    checked = 0
    for directory in {p for p in sys.path if os.path.isdir(p)}:
        checked += assert_same_answers(directory, module_names(directory))
    for package in PACKAGES:
        spec = PathFinder.find_spec(package)  # the package's, not a stand-in's
        assert spec is not None
        assert spec.submodule_search_locations
        for root, dirs, _ in os.walk(spec.submodule_search_locations[0]):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            dotted = package + root[len(spec.submodule_search_locations[0]) :].replace("/", ".")
            names = {f"{dotted}.{name}" for name in module_names(root)}
            checked += assert_same_answers(root, names)
    assert checked > 3000


def make(root: Path, *files: str) -> str:
    for name in files:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/"):
            path.mkdir(exist_ok=True)
        else:
            path.write_text("VALUE = 1\n")
    return str(root)


@pytest.mark.parametrize(
    "files",
    [
        ("mod.py",),
        ("pkg/__init__.py", "pkg.py"),  # the package wins
        (f"mod{EXTENSION_SUFFIXES[0]}", "mod.py"),  # the extension module wins
        (f"pkg/__init__{EXTENSION_SUFFIXES[-1]}", "pkg/__init__.py"),
        ("pkg/__init__.pyc",),  # a package without source
        ("mod.pyc",),
        ("ns/", "ns/inner.py"),  # a namespace portion
        ("ns/", "ns.py"),  # a module beats a namespace portion
        ("mod.py/", "mod.pyc"),  # a directory with a module's name is not the module
        ("pkg/__init__.py/", "pkg/other.py"),
        ("mod.txt", "MOD.py"),  # no case folding, as on Linux
    ],
)
def test_the_same_specs_as_file_finder_for_each_layout(tmp_path: Path, files: tuple[str]) -> None:
    directory = make(tmp_path, *files)
    assert_same_answers(directory, {"mod", "pkg", "ns", "MOD", "mod.txt", "missing"})


def test_links_are_followed_and_a_dangling_one_is_no_module(tmp_path: Path) -> None:
    make(tmp_path / "real", "target.py", "pkg/__init__.py")
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "linked.py").symlink_to(tmp_path / "real" / "target.py")
    (tmp_path / "here" / "pkg").symlink_to(tmp_path / "real" / "pkg")
    (tmp_path / "here" / "dangling.py").symlink_to(tmp_path / "nowhere.py")
    found = assert_same_answers(str(tmp_path / "here"), {"linked", "pkg", "dangling"})
    assert found == 3
    ours = ListedFinder(str(tmp_path / "here"), *loader_details())
    assert ours.find_spec("dangling") is None
    assert ours.find_spec("linked") is not None


def test_a_missing_directory_finds_nothing(tmp_path: Path) -> None:
    assert ListedFinder(str(tmp_path / "gone"), *loader_details()).find_spec("mod") is None


def test_a_directory_is_listed_once_until_caches_are_invalidated(tmp_path: Path) -> None:
    finder = ListedFinder(str(tmp_path), *loader_details())
    assert finder.find_spec("late") is None
    (tmp_path / "late.py").write_text("")
    assert finder.find_spec("late") is None  # the listing stands
    finder.invalidate_caches()
    spec = finder.find_spec("late")
    assert spec is not None
    assert spec.origin == str(tmp_path / "late.py")


def test_read_whole_reads_every_byte(tmp_path: Path) -> None:
    empty, big = tmp_path / "empty", tmp_path / "big"
    empty.write_bytes(b"")
    big.write_bytes(os.urandom(3 << 20))
    assert read_whole(str(empty)) == b""
    assert read_whole(str(big)) == big.read_bytes()
    with pytest.raises(FileNotFoundError):
        read_whole(str(tmp_path / "missing"))


def test_installed_it_imports_from_bytecode_and_from_source_and_uninstalls(tmp_path: Path) -> None:
    make(tmp_path, "fresh.py", "pkg/__init__.py", "pkg/sub.py")
    code = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "hooks = list(sys.path_hooks)\n"
        "from ipvsproxy import listed_finder\n"
        "listed_finder.install(); listed_finder.install()\n"
        "assert len(sys.path_hooks) == len(hooks) + 1, sys.path_hooks\n"
        "import fresh, pkg.sub\n"  # no bytecode yet: compiled, and written
        "print(type(fresh.__loader__).__name__, fresh.VALUE, pkg.sub.VALUE)\n"
        "del sys.modules['fresh']\n"
        "import fresh\n"  # from the bytecode written just now
        "print(type(fresh.__loader__).__name__, fresh.VALUE)\n"
        "listed_finder.uninstall()\n"
        "assert sys.path_hooks == hooks, sys.path_hooks\n"
        "del sys.modules['fresh']\n"
        "import fresh\n"
        "print(type(fresh.__loader__).__name__)\n"
    )
    writes = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = run_python(code, env=writes).stdout.split()
    assert out == ["WholeFileLoader", "1", "1", "WholeFileLoader", "1", "SourceFileLoader"]
    assert list((tmp_path / "__pycache__").glob("fresh.*.pyc"))


def test_the_entry_point_imports_the_command_line_through_it() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['ipvsproxy', '--version']\n"
        "from ipvsproxy.__main__ import main\n"
        "status = main()\n"
        "print(status, type(sys.modules['ipvsproxy.cli'].__loader__).__name__,"
        " type(sys.modules['argparse'].__loader__).__name__)\n"
    )
    out = run_python(code).stdout.split()
    assert out[-3:] == ["0", "WholeFileLoader", "WholeFileLoader"]
