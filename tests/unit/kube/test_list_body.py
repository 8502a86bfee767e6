"""read_list decodes what json.loads decodes, item by item, and refuses what it refuses."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipvsproxy.kube.list_body import read_list

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def both_ways(body: bytes) -> tuple[tuple[dict[str, Any], list[Any]], Any]:
    seen: list[Any] = []
    fields = read_list(body, seen.append)
    return (fields, seen), json.loads(body)


def as_read(page: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """What read_list should give for what json.loads gave."""
    items = page.get("items")
    if isinstance(items, list):
        return {k: v for k, v in page.items() if k != "items"}, items
    return page, []


@given(
    fields=st.dictionaries(st.text().filter(lambda k: k != "items"), JSON_VALUES, max_size=4),
    items=st.none() | st.lists(JSON_VALUES, max_size=6),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
)
def test_the_same_as_json_loads(
    fields: dict[str, Any], items: list[Any] | None, indent: int | None, ascii_only: bool
) -> None:
    page = {**fields, "items": items} if items is not None or fields else {}
    body = json.dumps(page, indent=indent, ensure_ascii=ascii_only).encode()
    got, loaded = both_ways(body)
    assert got == as_read(loaded)


def test_a_kubernetes_list_and_its_encodings() -> None:
    page = {
        "kind": "ServiceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "42", "continue": "abc"},
        "items": [{"metadata": {"name": "a\u00e9"}}, {"metadata": {"name": "b"}}],
    }
    text = json.dumps(page, ensure_ascii=False)
    for body in (text.encode(), text.encode("utf-16"), b"  \n" + text.encode() + b"\r\n"):
        got, loaded = both_ways(body)
        assert got == as_read(loaded)
    # Items come before the metadata: all the same.
    got, _ = both_ways(b'{"items": [1, 2], "metadata": {"resourceVersion": "7"}}')
    assert got == ({"metadata": {"resourceVersion": "7"}}, [1, 2])


def test_each_item_is_handed_over_before_the_next_is_decoded() -> None:
    order: list[str] = []

    def each(item: Any) -> None:
        order.append(f"item {item['n']}")

    body = b'{"items": [{"n": 1}, {"n": 2}, {"n": 3}], "metadata": {}}'
    assert read_list(body, each) == {"metadata": {}}
    assert order == ["item 1", "item 2", "item 3"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"items": [1, 2',
        b'{"items": [1, 2,]}',
        b'{"items": [1 2]}',
        b'{"items": [1], }',
        b'{"items" [1]}',
        b"{items: []}",
        b'{"items": []} extra',
        b'{"items": []}{}',
        b'{"metadata": {"resourceVersion": "1"}',
        b'{"items": [{"a": 1}, {"b": }]}',
    ],
)
def test_what_json_loads_refuses_is_refused(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    with pytest.raises(json.JSONDecodeError):
        read_list(body, lambda item: None)


@pytest.mark.parametrize("body", [b"[]", b'"items"', b"null", b"[{}]"])
def test_a_value_that_is_not_an_object_is_refused(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError, match=re.escape("Expecting '{'")):
        read_list(body, lambda item: None)
