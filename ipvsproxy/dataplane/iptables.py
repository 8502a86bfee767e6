"""iptables and ip6tables through ``*-restore --noflush`` and ``*-save``.

Backend: a node runs either the legacy (x_tables) or the nft backend of iptables, and
rules written through the other one are invisible to it. ``detect_backend`` decides as
kube-proxy's image (iptables-wrapper) does: the backend that already holds kube hints
(KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY) wins, then the one holding more rules; when
neither holds any, nft if it works here, else legacy. It reads the kernel, starting no
process (``iptables_backend``). Whether nft works matters under kernels whose nf_tables
takes no ip tables (the project's user-mode-linux kernel), where the nft tools cannot
program anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.interfaces import Iptables
from ipvsproxy.dataplane.ipsets import run_command
from ipvsproxy.dataplane.iptables_backend import (
    Counts,
    legacy_counts,
    nft_counts,
    nft_works,
    user_chains,
)
from ipvsproxy.dataplane.iptables_checksum import legacy_checksum
from ipvsproxy.dataplane.iptables_fixups import cleanup_restore, is_leftover, table_fixups
from ipvsproxy.dataplane.iptables_rules import (
    OWNED_CHAINS,
    RULE_TABLES,
    RulesConfig,
    build_restore,
)
from ipvsproxy.dataplane.nftables import generation

TABLES = ("nat", "filter", "mangle", "raw", "security")


def _tool(backend: str, family: Family, verb: str) -> str:
    """e.g. ``ip6tables-legacy-restore``."""
    return f"{'ip6tables' if family is Family.V6 else 'iptables'}-{backend}-{verb}"


def choose_backend(legacy: Counts | None, nft: Counts | None, nft_works: bool) -> str:
    """The decision of ``detect_backend`` from what each backend holds (None: it cannot
    run here) and whether nft works (pure, for tests)."""
    if legacy is None:
        return "nft"
    if nft is None:
        return "legacy"
    if legacy != nft and (any(legacy) or any(nft)):
        return "legacy" if legacy > nft else "nft"
    return "nft" if nft_works else "legacy"


async def detect_backend() -> str:
    """ "legacy" or "nft" (see the module docstring)."""
    legacy, nft = legacy_counts(), await nft_counts()
    # Ask whether nft works only when the counts leave the choice open (neither holds rules).
    undecided = choose_backend(legacy, nft, True) != choose_backend(legacy, nft, False)
    works = undecided and await nft_works()
    return choose_backend(legacy, nft, works)


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise InvalidValueError("iptables table", table, f"expected one of {', '.join(TABLES)}")


class IptablesCli:
    """The real Iptables for one backend (``legacy`` or ``nft``); both families."""

    def __init__(self, backend: str) -> None:
        if backend not in ("legacy", "nft"):
            raise InvalidValueError("iptables backend", backend, "expected legacy or nft")
        self.backend = backend

    async def restore(self, family: Family, rules: str) -> None:
        # -w: wait for the xtables lock other writers (kubelet, CNI plugins) hold.
        argv = [_tool(self.backend, family, "restore"), "-w", "5", "--noflush"]
        await run_command(argv, rules)

    async def save(self, family: Family, table: str) -> str:
        _check_table(table)
        return await run_command([_tool(self.backend, family, "save"), "-t", table])

    async def save_tables(self, family: Family) -> dict[str, str]:
        # One process for every table: under user-mode-linux each start costs ~0.5 s.
        return split_save(await run_command([_tool(self.backend, family, "save")]))

    async def user_chains(self, family: Family) -> dict[str, frozenset[str]]:
        return await user_chains(self.backend, family)

    async def cleanup(self, family: Family, tables: Sequence[str] | None = None) -> None:
        await cleanup(self, family, tables)

    async def fingerprint(self, family: Family) -> int:
        if self.backend == "nft":
            # One generation for every table and family: any commit anywhere changes it.
            return await generation()
        return legacy_checksum(family, RULE_TABLES)


def split_save(saved: str) -> dict[str, str]:
    """``iptables-save`` output of several tables as {table: that table's block}."""
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in saved.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), [])
        if current is not None and not line.startswith("#"):
            current.append(line)
        if line == "COMMIT":
            current = None
    return {table: "\n".join(lines) + "\n" for table, lines in tables.items()}


def table_text(saved: Mapping[str, str], table: str) -> str:
    """``table``'s block of ``save_tables``, or an empty one if the kernel has none yet."""
    return saved.get(table) or f"*{table}\nCOMMIT\n"


async def cleanup(iptables: Iptables, family: Family, tables: Sequence[str] | None = None) -> None:
    """Unlink, flush and delete the proxy's chains and other modes' leftovers in ``tables``
    (default: every table the proxy writes); nothing else."""
    every = await iptables.save_tables(family)
    saved = {t: table_text(every, t) for t in tables or RULE_TABLES}
    text = cleanup_restore(saved)
    if text:
        await iptables.restore(family, text)


class RulesSyncer:
    """Writes the proxy's rules for one family with one restore per sync.

    The first sync (and any with ``verify=True``, e.g. the periodic full resync) first
    saves the tables, to fix the jumps from the built-in chains and remove other modes'
    leftovers (``iptables_fixups``) in the same restore. Later syncs trust the last
    successful restore and skip the saves.

    A save is skipped too when no table holds a chain of ours or a leftover (read from
    the kernel, no process): nothing can jump to a chain that does not exist, so every
    fixup is then a jump to insert, as the save of such tables would have said. That is
    every first start on a freshly booted node: one process fewer (0.2-0.3 s under
    user-mode-linux).
    """

    def __init__(self, iptables: Iptables, family: Family) -> None:
        self._iptables = iptables
        self._family = family
        self._verified = False

    async def sync(self, config: RulesConfig, verify: bool = False) -> str:
        fixups: dict[str, list[str]] | None = None
        if verify or not self._verified:
            saved = await self._saved_tables()
            fixups = {table: table_fixups(table, table_text(saved, table)) for table in RULE_TABLES}
        text = build_restore(config, self._family, fixups)
        self._verified = False
        await self._iptables.restore(self._family, text)
        self._verified = True
        return text

    async def _saved_tables(self) -> dict[str, str]:
        """The tables' save, or none when it could not change the fixups (see above)."""
        try:
            chains = await self._iptables.user_chains(self._family)
        except OSError:  # a kernel that refuses the reads: the save says it all
            return await self._iptables.save_tables(self._family)
        if any(_ours_or_leftover(table, names) for table, names in chains.items()):
            return await self._iptables.save_tables(self._family)
        return {}


def _ours_or_leftover(table: str, chains: frozenset[str]) -> bool:
    return not chains.isdisjoint(OWNED_CHAINS.get(table, ())) or any(
        is_leftover(table, chain) for chain in chains
    )
