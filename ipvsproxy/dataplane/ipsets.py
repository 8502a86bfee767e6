"""ipsets through the ``ipset`` tool: every bulk change is ONE ``ipset restore -exist``.

kube-proxy runs one ``ipset add`` per entry (#133773: minutes on a new node with a few
thousand services); here a whole sync's adds and deletes, or a whole set's atomic
replacement (fill a temporary set, ``swap``, destroy), go through one process.
Entries are validated and normalised in Python first (``ipset_specs.normalize_entry``), so a
bad entry raises InvalidValueError before anything reaches the kernel: ``ipset restore``
applies lines one by one and would otherwise leave a half-applied batch behind.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence

from ipvsproxy.dataplane.errors import CommandError, InvalidValueError
from ipvsproxy.dataplane.interfaces import Ipsets, IpsetSpec
from ipvsproxy.dataplane.ipset_specs import create_line, is_owned, normalize_entry
from ipvsproxy.model import Family


async def run_command(argv: Sequence[str], stdin: str | None = None) -> str:
    """Run a tool, feed it ``stdin``, return its stdout; CommandError if it exits non-zero."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if proc.returncode != 0:
        raise CommandError(argv, proc.returncode or -1, err.decode(errors="replace"))
    return out.decode()


def parse_save(text: str) -> dict[str, tuple[str, set[str]]]:
    """``ipset save`` output as {name: (type, entries)}; entry comments are dropped."""
    sets: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "create":
            sets[words[1]] = (words[2], set())
        elif len(words) >= 3 and words[0] == "add" and words[1] in sets:
            sets[words[1]][1].add(words[2])
    return sets


def parse_headers(text: str) -> dict[str, tuple[str, Family]]:
    """``ipset list -t`` output as {name: (type, family)}."""
    out: dict[str, tuple[str, Family]] = {}
    name = kind = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Name":
            name = value
        elif key == "Type":
            kind = value
        elif key == "Header" and name:
            out[name] = (kind, Family.V6 if "family inet6" in value else Family.V4)
    return out


def temporary_name(name: str) -> str:
    """A short, stable scratch name for replacing ``name`` (still KUBE-*, so still ours)."""
    return "KUBE-TMP-" + hashlib.sha1(name.encode()).hexdigest()[:12]


def _check_owned(names: Sequence[str]) -> None:
    for name in names:
        if not is_owned(name):
            raise InvalidValueError("ipset name", name, "only KUBE-* sets belong to the proxy")


class IpsetCli:
    """The real Ipsets, over ``ipset restore`` / ``ipset save`` / ``ipset list``."""

    def __init__(self, binary: str = "ipset") -> None:
        self._ipset = binary
        self._types: dict[str, tuple[str, Family]] = {}

    async def _restore(self, lines: Sequence[str]) -> None:
        if lines:
            await run_command([self._ipset, "restore", "-exist"], "\n".join(lines) + "\n")

    async def _type_of(self, name: str) -> tuple[str, Family]:
        if name not in self._types:
            self._types.update(parse_headers(await run_command([self._ipset, "list", "-t"])))
        if name not in self._types:
            raise InvalidValueError("ipset name", name, "no such set")
        return self._types[name]

    async def ensure(self, specs: Sequence[IpsetSpec]) -> None:
        _check_owned([s.name for s in specs])
        await self._restore([create_line(s) for s in specs])
        for s in specs:
            self._types[s.name] = (s.type, s.family)

    async def list_names(self) -> set[str]:
        out = await run_command([self._ipset, "list", "-n"])
        return {line.strip() for line in out.splitlines() if line.strip()}

    async def entries(self, name: str) -> set[str]:
        try:
            out = await run_command([self._ipset, "save", name])
        except CommandError as err:
            raise InvalidValueError("ipset name", name, err.stderr.strip()) from None
        return parse_save(out).get(name, ("", set()))[1]

    async def save_all(self) -> dict[str, set[str]]:
        # One process for every set: each process start counts (a resync reads them all).
        saved = parse_save(await run_command([self._ipset, "save"]))
        return {name: entries for name, (_, entries) in saved.items()}

    async def update(self, changes: Mapping[str, tuple[set[str], set[str]]]) -> None:
        lines: list[str] = []
        for name, (add, delete) in changes.items():
            kind, family = await self._type_of(name)
            # Deletes first, so an entry both removed and re-added ends up present.
            lines += [f"del {name} {normalize_entry(kind, family, e)}" for e in sorted(delete)]
            lines += [f"add {name} {normalize_entry(kind, family, e)}" for e in sorted(add)]
        await self._restore(lines)

    async def replace(self, name: str, entries: set[str]) -> None:
        _check_owned([name])
        kind, family = await self._type_of(name)
        normal = sorted(normalize_entry(kind, family, e) for e in entries)
        tmp = temporary_name(name)
        spec = IpsetSpec(tmp, kind, family, "")
        lines = [create_line(spec), f"flush {tmp}"]
        lines += [f"add {tmp} {e}" for e in normal]
        lines += [f"swap {tmp} {name}", f"destroy {tmp}"]
        await self._restore(lines)

    async def destroy(self, names: Sequence[str]) -> None:
        """Destroy the given KUBE-* sets; missing ones are fine. Refuses any other name."""
        _check_owned(names)
        await self._restore([f"destroy {n}" for n in names])
        for n in names:
            self._types.pop(n, None)


async def destroy_owned(ipsets: Ipsets) -> list[str]:
    """Destroy every KUBE-* set (``--cleanup``; after the iptables cleanup, since a set a
    rule still references cannot be destroyed). Returns the names destroyed."""
    names = sorted(n for n in await ipsets.list_names() if is_owned(n))
    await ipsets.destroy(names)
    return names
