"""ipsets: updates over netlink, bulk loads as ONE ``ipset restore -exist``.

kube-proxy runs one ``ipset add`` per entry (#133773: minutes on a new node with a few
thousand services). Here an update of up to ``NETLINK_UPDATE_LIMIT`` entries (an
EndpointSlice change is a handful) goes to the kernel over nfnetlink from this thread's
network namespace (:mod:`ipvsproxy.dataplane.ipset_netlink`) with no process at all: a
process start costs a few ms on a host and up to a second under user-mode-linux. A
larger update, a whole set's atomic replacement (fill a temporary set, ``swap``,
destroy) and ``ensure`` go through one ``ipset restore``. Both update paths mean the
same: deletes before adds, ``-exist`` (adding a present entry or deleting a missing
one is no error).
Entries are validated and taken apart in Python first (``ipset_specs.parse_entry``), so a
bad entry raises InvalidValueError before anything reaches the kernel: either path
applies entries one by one and would otherwise leave a half-applied batch behind.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
from collections.abc import Mapping, Sequence

from ipvsproxy.dataplane.errors import CommandError, InvalidValueError
from ipvsproxy.dataplane.interfaces import Ipsets, IpsetSpec
from ipvsproxy.dataplane.ipset_netlink import (
    NFPROTO_IPV6,
    IpsetNetlinkError,
    SetChange,
    apply,
    headers,
)
from ipvsproxy.dataplane.ipset_specs import create_line, is_owned, normalize_entry, parse_entry
from ipvsproxy.model import Family

# Entries (adds plus deletes, all sets) up to which an update goes over netlink rather
# than through one ``ipset restore``. Measured (hash:ip,port,ip, adds then deletes of N
# entries, median ms, netlink/restore): on a 6.18 host N=1 0.05/1.5, 512 4.5/14,
# 10,000 91/238, 60,000 579/1449; under user-mode-linux N=1 0.2/67, 512 7.6/431,
# 10,000 161/3497. Netlink wins at every size, and it yields to the event loop between
# sends, so the limit only keeps one call's messages in memory bounded: a first sync
# of 10,000 Services (some 70,000 entries) stays on netlink.
NETLINK_UPDATE_LIMIT = 1_000_000


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


def temporary_name(name: str) -> str:
    """A short, stable scratch name for replacing ``name`` (still KUBE-*, so still ours)."""
    return "KUBE-TMP-" + hashlib.sha1(name.encode()).hexdigest()[:12]


def _check_owned(names: Sequence[str]) -> None:
    for name in names:
        if not is_owned(name):
            raise InvalidValueError("ipset name", name, "only KUBE-* sets belong to the proxy")


class IpsetCli:
    """The real Ipsets: netlink for updates and set types, the ``ipset`` tool for the rest."""

    def __init__(self, binary: str = "ipset", netlink_limit: int = NETLINK_UPDATE_LIMIT) -> None:
        self._ipset = binary
        self._netlink_limit = netlink_limit
        self._types: dict[str, tuple[str, Family]] = {}

    async def _restore(self, lines: Sequence[str]) -> None:
        if lines:
            await run_command([self._ipset, "restore", "-exist"], "\n".join(lines) + "\n")

    async def _types_of(self, names: Sequence[str]) -> list[tuple[str, Family]]:
        """(type, family) of each set, asked of the kernel (netlink) unless known."""
        missing = [name for name in names if name not in self._types]
        if missing:
            for name, (kind, nfproto) in (await headers(missing)).items():
                # bitmap:port sets have no family (NFPROTO_UNSPEC): their entries are ports.
                self._types[name] = (kind, Family.V6 if nfproto == NFPROTO_IPV6 else Family.V4)
        for name in names:
            if name not in self._types:
                raise InvalidValueError("ipset name", name, "no such set")
        return [self._types[name] for name in names]

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
        names = list(changes)
        parsed: list[SetChange] = []
        for name, (kind, family) in zip(names, await self._types_of(names), strict=True):
            add, delete = changes[name]
            # Deletes first, so an entry both removed and re-added ends up present.
            parsed.append(
                SetChange(
                    name,
                    [parse_entry(kind, family, e) for e in sorted(delete)],
                    [parse_entry(kind, family, e) for e in sorted(add)],
                )
            )
        size = sum(len(c.delete) + len(c.add) for c in parsed)
        if size > self._netlink_limit:
            lines: list[str] = []
            for c in parsed:
                lines += [f"del {c.name} {e.text()}" for e in c.delete]
                lines += [f"add {c.name} {e.text()}" for e in c.add]
            await self._restore(lines)
        elif size:
            try:
                await apply(parsed)
            except IpsetNetlinkError as err:
                if err.code != errno.ENOENT:
                    raise
                self._types.pop(err.name, None)  # destroyed behind our back
                raise InvalidValueError("ipset name", err.name, "no such set") from None

    async def replace(self, name: str, entries: set[str]) -> None:
        _check_owned([name])
        [(kind, family)] = await self._types_of([name])
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
