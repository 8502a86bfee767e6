"""What ``ipset save`` prints, read back: the reference the netlink listing is held to
(tests/contract/test_ipsets_contract.py), and how tests read a node's sets."""

from __future__ import annotations

import contextlib
import shlex


def parse_save(text: str) -> dict[str, tuple[str, set[str]]]:
    """``ipset save`` output as {name: (type, entries)}; an entry keeps its mark
    (`` skbmark 0xM[/0xMASK]``, as printed), other options (comments) are dropped."""
    sets: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "create":
            sets[words[1]] = (words[2], set())
        elif len(words) >= 3 and words[0] == "add" and words[1] in sets:
            entry = words[2]
            if " skbmark " in line:
                entry += _mark_option(line, words)
            sets[words[1]][1].add(entry)
    return sets


def _mark_option(line: str, words: list[str]) -> str:
    """`` skbmark VALUE`` of an ``add`` line, or "" (ipset prints a comment before it,
    quoted, and the comment may hold any word)."""
    if '"' in line:
        with contextlib.suppress(ValueError):  # unbalanced quotes: plain words
            words = shlex.split(line)
    for i in range(3, len(words) - 1):
        if words[i] == "skbmark":
            return f" skbmark {words[i + 1]}"
    return ""
