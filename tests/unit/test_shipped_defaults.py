"""Defaults are tested as shipped: a test may change a sync period, the watch backoff or a
watch timeout only when that setting is what it tests, and it says so.

Every Python file under tests/ is read as a syntax tree. A keyword argument, a dict key or
an attribute assignment naming one of those settings, or a string carrying its flag
(``--ipvs-min-sync-period``) or config key (``minSyncPeriod``), is an override. It is
allowed only inside a test function or class marked
``@pytest.mark.overrides_default("min_sync_period", reason="...")`` for that setting, or
in a module whose ``pytestmark`` is; anywhere else (a support module, a fixture, a helper
shared by tests about other things) this check fails and names the place.

The configuration tests are exempt as a whole (CONFIGURATION): they parse, validate, write
and render these settings as data, and run no proxy, reconciler or watch with them.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
CONFIGURATION = ("unit/config/", "unit/test_cli.py", "unit/test_cli_flags.py", "chart/")

# Setting -> (the Python names it goes by, the text forms of its flag or config key).
SETTINGS: dict[str, tuple[frozenset[str], re.Pattern[str] | None]] = {
    "min_sync_period": (
        frozenset({"min_sync_period", "ipvs_min_sync_period", "iptables_min_sync_period"}),
        re.compile(r"--(ipvs|iptables)-min-sync-period|\bminSyncPeriod\b"),
    ),
    "sync_period": (
        frozenset({"sync_period", "ipvs_sync_period", "iptables_sync_period"}),
        re.compile(r"--(ipvs|iptables)-sync-period|\bsyncPeriod\b"),
    ),
    "backoff": (frozenset({"backoff_initial_s", "backoff_max_s"}), None),
    "read_timeout": (
        frozenset({"read_timeout_s", "watch_timeout_s", "request_timeout_s", "connect_timeout_s"}),
        None,
    ),
}


@dataclass(frozen=True)
class Override:
    path: Path
    line: int
    setting: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(TESTS.parent)}:{self.line}: {self.setting}"


def settings_named(node: ast.AST) -> set[str]:
    """The settings this one syntax node overrides, if any."""
    names: set[str] = set()
    text: str | None = None
    if isinstance(node, ast.keyword) and node.arg:
        names.add(node.arg)
    elif isinstance(node, ast.Dict):
        names |= {
            k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)
        }
    elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
        names.add(node.attr)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    found = set()
    for setting, (idents, pattern) in SETTINGS.items():
        if names & idents or (text is not None and pattern is not None and pattern.search(text)):
            found.add(setting)
    return found


def declared(decorators: list[ast.expr]) -> set[str]:
    """Settings named by ``overrides_default`` marks that give a reason."""
    found: set[str] = set()
    for mark in decorators:
        if not (
            isinstance(mark, ast.Call)
            and isinstance(mark.func, ast.Attribute)
            and mark.func.attr == "overrides_default"
        ):
            continue
        reasons = [k for k in mark.keywords if k.arg == "reason"]
        if reasons and isinstance(reasons[0].value, ast.Constant) and reasons[0].value.value:
            found |= {
                a.value
                for a in mark.args
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            }
    return found


def module_marks(tree: ast.Module) -> list[ast.expr]:
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets
        ):
            value = statement.value
            return list(value.elts) if isinstance(value, ast.List | ast.Tuple) else [value]
    return []


def undeclared(path: Path) -> list[Override]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(s.value)
        for s in ast.walk(tree)
        if isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
    }
    found: list[Override] = []

    def visit(node: ast.AST, allowed: set[str]) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            allowed = allowed | declared(node.decorator_list)
        if id(node) not in docstrings:
            for setting in settings_named(node) - allowed:
                found.append(Override(path, getattr(node, "lineno", 0), setting))
        for child in ast.iter_child_nodes(node):
            visit(child, allowed)

    visit(tree, declared(module_marks(tree)))
    return found


def test_no_test_overrides_a_shipped_default_without_saying_so() -> None:
    here = Path(__file__).resolve()
    checked = [
        p
        for p in sorted(TESTS.rglob("*.py"))
        if p != here and not str(p.relative_to(TESTS)).startswith(CONFIGURATION)
    ]
    assert len(checked) > 50  # the walk found the suite
    found = [o for p in checked for o in undeclared(p)]
    assert not found, (
        "these change a shipped default without declaring it; remove the override, or mark "
        'the test @pytest.mark.overrides_default("<setting>", reason="why") if the setting '
        "is what it tests:\n" + "\n".join(map(str, found))
    )


SAMPLE = '''
import pytest
FAST = Settings(min_sync_period=0.0)  # module level, undeclared

@pytest.mark.overrides_default("sync_period", reason="the resync is what it tests")
def test_resync():
    run("--ipvs-sync-period=1s", {"syncPeriod": "1s"})
    Settings(min_sync_period=0)  # not declared for this test

def test_other():
    """Mentions minSyncPeriod in a docstring only: not an override."""
    reflector.settings.backoff_max_s = 0.1

@pytest.mark.overrides_default("backoff")
def test_without_reason():
    ReflectorSettings(backoff_initial_s=0.01)
'''


def test_the_check_finds_each_kind_of_override(tmp_path: Path) -> None:
    """Positive control: every undeclared form is found, at its line; declared ones are not."""
    sample = tmp_path / "test_sample.py"
    sample.write_text(SAMPLE)
    found = sorted((o.line, o.setting) for o in undeclared(sample))
    assert found == [
        (3, "min_sync_period"),
        (8, "min_sync_period"),
        (12, "backoff"),
        (16, "backoff"),
    ]


@pytest.mark.overrides_default("min_sync_period", reason="positive control of the mark")
def test_the_mark_is_registered(request: pytest.FixtureRequest) -> None:
    mark = request.node.get_closest_marker("overrides_default")
    assert mark is not None
    assert mark.args == ("min_sync_period",)
