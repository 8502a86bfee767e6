"""ipsets: updates over netlink, bulk loads as ONE ``ipset restore -exist``.

kube-proxy runs one ``ipset add`` per entry (#133773: minutes on a new node with a few
thousand services). Here an update of up to ``NETLINK_UPDATE_LIMIT`` entries (an
EndpointSlice change is a handful) goes to the kernel over nfnetlink from this thread's
network namespace (:mod:`ipvsproxy.dataplane.ipset_netlink`) with no process at all: a
process start costs a few ms on a host and up to a second under user-mode-linux. A
larger update and a whole set's atomic replacement (fill a temporary set, ``swap``,
destroy) go through one ``ipset restore``. ``ensure`` creates missing sets over netlink
too: all 36 of a dual-stack node in a median 4-11 ms under user-mode-linux, against
175-410 ms for one ``ipset restore`` (tests/bench/bench_ipset_ensure.py), on every
start on a fresh node. Listing the sets and their entries is one netlink dump each.
Both update paths mean the same: deletes before adds, ``-exist`` (adding a present
entry or deleting a missing one is no error).
Entries are validated and taken apart in Python first (``ipset_specs.parse_entry``), so a
bad entry raises InvalidValueError before anything reaches the kernel: either path
applies entries one by one and would otherwise leave a half-applied batch behind. That
includes a firewall mark (`` skbmark 0xM/0xMASK``) for a set created without
``skbinfo``: which sets have it is known from ``ensure`` or from one netlink header dump.

Sets are created with kube-proxy's exact options (``ipset_specs.wanted_options``), so a
node can switch between kube-proxy's IPVS mode and this proxy either way. A set that
exists with other options (an older release of this proxy created its sets with
``comment``; a maxelem or a bitmap range of someone else's) cannot be fixed by ``create
-exist``, which fails on any difference. ``ensure`` rebuilds it instead: a new set with
the wanted options and the old entries, swapped in under the name (the kernel swaps sets
of one type and family whatever their options, even while iptables rules reference
them), so no packet ever meets the set empty. A set of another type or family cannot be
swapped: ``ensure`` creates and checks every other set, then raises, naming it.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
from collections.abc import Mapping, Sequence
from functools import partial
from typing import NamedTuple

from ipvsproxy.core.ipset_catalog import BITMAP_PORT, IpsetSpec
from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.errors import CommandError, InvalidValueError
from ipvsproxy.dataplane.interfaces import Ipsets
from ipvsproxy.dataplane.ipset_netlink import (
    NFPROTO_IPV6,
    IpsetNetlinkError,
    SetChange,
    apply,
    checksum,
    create,
    list_entries,
    list_headers,
)
from ipvsproxy.dataplane.ipset_specs import (
    EntryParts,
    SetOptions,
    check_mark,
    check_spec,
    create_line,
    is_owned,
    option_differences,
    parse_entry,
    wanted_options,
)

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


def temporary_name(name: str) -> str:
    """A short, stable scratch name for replacing ``name`` (still KUBE-*, so still ours)."""
    return "KUBE-TMP-" + hashlib.sha1(name.encode()).hexdigest()[:12]


class SetInfo(NamedTuple):
    type: str
    family: Family
    options: SetOptions

    @property
    def skbinfo(self) -> bool:
        return self.options.skbinfo


def rebuild_lines(spec: IpsetSpec, entries: set[str]) -> list[str]:
    """``ipset restore`` lines that give set ``spec.name`` the options of ``spec`` and
    keep its ``entries`` (their marks dropped if ``spec`` has no skbinfo)."""
    if not spec.skbinfo:
        entries = {parse_entry(spec.type, spec.family, e).key_text() for e in entries}
    tmp = temporary_name(spec.name)
    return _fill_and_swap(spec._replace(name=tmp), wanted_options(spec), sorted(entries), spec.name)


def _fill_and_swap(
    tmp: IpsetSpec, options: SetOptions, entries: Sequence[str], name: str
) -> list[str]:
    # A scratch set left over by a failed run may have other options: start afresh
    # (destroying a missing set is no error under -exist).
    lines = [f"destroy {tmp.name}", create_line(tmp, options)]
    lines += [f"add {tmp.name} {e}" for e in entries]
    lines += [f"swap {tmp.name} {name}", f"destroy {tmp.name}"]
    return lines


def _same_kind(info: SetInfo, spec: IpsetSpec) -> bool:
    # A bitmap:port set has no family of its own (its entries are ports).
    same_family = info.family is spec.family or spec.type == BITMAP_PORT
    return info.type == spec.type and same_family


def _check_owned(names: Sequence[str]) -> None:
    for name in names:
        if not is_owned(name):
            raise InvalidValueError("ipset name", name, "only KUBE-* sets belong to the proxy")


class IpsetCli:
    """The real Ipsets: netlink to create, update and list sets; ``ipset restore`` for
    large updates, swaps and destroys."""

    def __init__(self, binary: str = "ipset", netlink_limit: int = NETLINK_UPDATE_LIMIT) -> None:
        self._ipset = binary
        self._netlink_limit = netlink_limit
        self._sets: dict[str, SetInfo] = {}  # what we know of the kernel's sets

    async def _restore(self, lines: Sequence[str]) -> None:
        if lines:
            await run_command([self._ipset, "restore", "-exist"], "\n".join(lines) + "\n")

    async def _refresh(self) -> dict[str, SetInfo]:
        """Every set's type, family and create options, asked of the kernel (netlink)."""
        self._sets = {
            # bitmap:port sets have no family (NFPROTO_UNSPEC): their entries are ports.
            name: SetInfo(h.type, Family.V6 if h.family == NFPROTO_IPV6 else Family.V4, h.options)
            for name, h in (await list_headers()).items()
        }
        return self._sets

    async def _info(self, names: Sequence[str]) -> list[SetInfo]:
        """What each set is, from the kernel unless known."""
        if any(name not in self._sets for name in names):
            await self._refresh()
        for name in names:
            if name not in self._sets:
                raise InvalidValueError("ipset name", name, "no such set")
        return [self._sets[name] for name in names]

    async def ensure(self, specs: Sequence[IpsetSpec]) -> dict[str, list[str]]:
        _check_owned([s.name for s in specs])
        for spec in specs:
            check_spec(spec)
        existing = await self._refresh()
        missing = [spec for spec in specs if spec.name not in existing]
        lines: list[str] = []
        rebuilt: dict[str, list[str]] = {}
        conflicts: list[str] = []
        for spec in specs:
            old, want = existing.get(spec.name), wanted_options(spec)
            if old is None:
                continue
            if not _same_kind(old, spec):
                conflicts.append(f"{spec.name} is {old.type} {old.family.k8s_name}")
            elif differences := option_differences(old.options, want):
                # create -exist would fail on it (and kube-proxy's would, on ours):
                # a set with the wanted options and the same entries takes its place.
                lines += rebuild_lines(spec, await self.entries(spec.name))
                rebuilt[spec.name] = differences
        # Over netlink, no process. A set someone else creates in between is fine if it
        # is alike (-exist); if not, this raises after every other set was attempted.
        try:
            await create([(spec, wanted_options(spec)) for spec in missing])
        except IpsetNetlinkError:
            await self._restore(lines)  # the rebuilds still happen
            self._sets.clear()  # which sets were made is the kernel's to say
            raise
        await self._restore(lines)
        for spec in specs:
            if spec.name not in existing or _same_kind(existing[spec.name], spec):
                self._sets[spec.name] = SetInfo(spec.type, spec.family, wanted_options(spec))
        if conflicts:
            # swap needs the same type and family, and a set in use cannot be destroyed.
            raise InvalidValueError("ipset", "; ".join(conflicts), "another type or family")
        return rebuilt

    async def list_names(self) -> set[str]:
        return set(await self._refresh())  # one netlink dump of the headers, no process

    async def entries(self, name: str) -> set[str]:
        try:
            listed = await list_entries(name)
        except IpsetNetlinkError as err:
            raise InvalidValueError("ipset name", name, str(err)) from None
        return listed.get(name, set())

    async def fingerprint(self) -> int:
        return await checksum()

    async def save_all(self) -> dict[str, set[str]]:
        # One netlink dump, no process: a resync's read of every set (12 s at 10,000
        # Services under user-mode-linux through ``ipset save``).
        return await list_entries()

    async def update(self, changes: Mapping[str, tuple[set[str], set[str]]]) -> None:
        names = list(changes)
        infos = await self._info(names)
        size = sum(len(add) + len(delete) for add, delete in changes.values())
        if size > self._netlink_limit:
            lines: list[str] = []
            for name, info in zip(names, infos, strict=True):
                add, delete = changes[name]
                # Deletes first, so an entry both removed and re-added ends up present
                # (with the added entry's mark: the mark is not part of the key).
                # ``ipset del`` takes no skbmark option: the key alone.
                lines += [f"del {name} {_parse(info, name, e).key_text()}" for e in sorted(delete)]
                lines += [f"add {name} {_parse(info, name, e).text()}" for e in sorted(add)]
            await self._restore(lines)
        elif size:
            # Each entry is parsed as its message is encoded, and dropped: a first sync
            # of 1,000 Services held 7,000 parsed entries at once (1.8 MB) otherwise.
            # Every entry is still checked before the first message is sent.
            parsed = []
            for name, info in zip(names, infos, strict=True):
                add, delete = changes[name]
                check = partial(_parse, info, name)
                parsed.append(SetChange(name, map(check, sorted(delete)), map(check, sorted(add))))
            try:
                await apply(parsed)
            except IpsetNetlinkError as err:
                if err.code != errno.ENOENT:
                    raise
                self._sets.pop(err.name, None)  # destroyed behind our back
                raise InvalidValueError("ipset name", err.name, "no such set") from None

    async def replace(self, name: str, entries: set[str]) -> None:
        _check_owned([name])
        [info] = await self._info([name])
        normal = sorted(_parse(info, name, e).text() for e in entries)
        tmp = IpsetSpec(temporary_name(name), info.type, info.family, "", info.skbinfo)
        await self._restore(_fill_and_swap(tmp, info.options, normal, name))

    async def destroy(self, names: Sequence[str]) -> None:
        """Destroy the given KUBE-* sets; missing ones are fine. Refuses any other name."""
        _check_owned(names)
        await self._restore([f"destroy {n}" for n in names])
        for n in names:
            self._sets.pop(n, None)


def _parse(info: SetInfo, name: str, entry: str) -> EntryParts:
    return check_mark(parse_entry(info.type, info.family, entry), name, info.skbinfo)


async def destroy_owned(ipsets: Ipsets) -> list[str]:
    """Destroy every KUBE-* set (``--cleanup``; after the iptables cleanup, since a set a
    rule still references cannot be destroyed). Returns the names destroyed."""
    names = sorted(n for n in await ipsets.list_names() if is_owned(n))
    await ipsets.destroy(names)
    return names
