"""Label and field selectors, parsed the way the Kubernetes API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any


class SelectorError(ValueError):
    """An unparsable selector: the server answers 400 BadRequest."""


Predicate = Callable[[Mapping[str, str]], bool]

_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_SET_RE = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s*\(([^)]*)\)\s*$")
_OP_RE = re.compile(rf"^\s*({_KEY})\s*(==|!=|=|>|<)\s*(\S*)\s*$")
_EXISTS_RE = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _requirement(text: str) -> Predicate:
    m = _SET_RE.match(text)
    if m:
        key, op = m.group(1), m.group(3)
        values = frozenset(v.strip() for v in m.group(4).split(",") if v.strip())
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    m = _OP_RE.match(text)
    if m:
        key, op, value = m.group(1), m.group(3), m.group(4)
        if op in ("=", "=="):
            return lambda labels: labels.get(key) == value
        if op == "!=":
            return lambda labels: labels.get(key) != value
        try:
            bound = int(value)
        except ValueError as e:
            raise SelectorError(
                f"for 'Gt', 'Lt' operators, the value must be an integer: {text}"
            ) from e

        def compare(labels: Mapping[str, str]) -> bool:
            have = labels.get(key)
            if have is None or not have.lstrip("-").isdigit():
                return False
            return int(have) > bound if op == ">" else int(have) < bound

        return compare
    m = _EXISTS_RE.match(text)
    if m:
        negate, key = m.group(1) == "!", m.group(2)
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise SelectorError(f"unable to parse requirement: {text!r}")


def parse_label_selector(text: str | None) -> Predicate:
    """Return a predicate over a labels mapping; an empty selector matches everything."""
    if not text or not text.strip():
        return lambda labels: True
    preds = [_requirement(part) for part in _split_top(text)]
    return lambda labels: all(p(labels) for p in preds)


def _field_value(obj: Mapping[str, Any], path: str) -> str | None:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


ObjectPredicate = Callable[[Mapping[str, Any]], bool]


def parse_field_selector(text: str | None, allowed: frozenset[str]) -> ObjectPredicate:
    """Field selectors support only =, == and != on the fields a resource allows."""
    if not text or not text.strip():
        return lambda obj: True
    preds: list[ObjectPredicate] = []
    for part in text.split(","):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise SelectorError(f"invalid field selector: {part!r}")
        field, op, value = m.group(1), m.group(2), m.group(3)
        if field not in allowed:
            raise SelectorError(f'field label not supported: "{field}"')
        if op == "!=":
            preds.append(lambda o, f=field, v=value: _field_value(o, f) != v)
        else:
            preds.append(lambda o, f=field, v=value: _field_value(o, f) == v)
    return lambda obj: all(p(obj) for p in preds)
