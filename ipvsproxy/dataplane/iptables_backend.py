"""What each iptables backend holds, read from the kernel with no process started: for
``iptables.detect_backend``, and the user chains a sync checks for before it saves.

Each backend is counted as its ``iptables-save`` and ``ip6tables-save`` would print it:
the kube hint chains among the user chains, and the rules ("-A" lines). Reading the kernel
instead of running the four saves and a probe takes detection from 5 process starts
(0.5-1.5 s under user-mode-linux) to a few system calls (3-6 ms there). The first one
on a boot may still wait for the kernel to load nf_tables, as the nft tools made it do.

- legacy (x_tables): the tables in /proc/net/ip_tables_names and ip6_tables_names, each
  read as iptables-legacy-save reads it (``xtables``). A table not listed is never opened:
  opening it would load its module and create it. No names file means ip_tables is not
  loaded, and iptables-legacy-save then printed nothing and succeeded: no rules.
- nft: the chains and rules of the tables iptables-nft keeps in nf_tables (filter, nat,
  mangle, raw, security of the families ip and ip6), in two netlink dumps.

A side is None ("cannot run", as when its save failed before) if its tool is not
installed, or if the kernel refuses the reads (no nf_tables at all; no permission).
A failing IPv6 side is skipped, as a failing ip6tables-save was.
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable
from typing import NamedTuple

from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.netlink import (
    NETLINK_NETFILTER,
    NLA_F_NESTED,
    NLM_F_CREATE,
    NLMSGHDR,
    Message,
    attrs,
    dump,
    nla,
)
from ipvsproxy.dataplane.nftables import (
    FAMILIES,
    NFT_MSG_NEWTABLE,
    NFTA_TABLE_NAME,
    NftablesError,
    batch,
    nfgen_head,
    nft_kind,
)
from ipvsproxy.dataplane.xtables import policy_offsets, read_tables, walk

HINT_CHAINS = frozenset(("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"))
# The tables iptables-nft-save prints (and the families it keeps them in); any other
# nf_tables table (kube-proxy's nftables mode, firewalld's) is not iptables'.
IPTABLES_TABLES = frozenset((b"filter", b"nat", b"mangle", b"raw", b"security"))
_NFT_FAMILIES = frozenset((FAMILIES["ip"], FAMILIES["ip6"]))

# linux/netfilter/nf_tables.h
NFT_MSG_NEWCHAIN, NFT_MSG_GETCHAIN, NFT_MSG_NEWRULE, NFT_MSG_GETRULE = 3, 4, 6, 7
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_TYPE = 1, 3, 4, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE = 1  # = NFTA_CHAIN_TABLE: the table's name is attribute 1 of both
_BE32 = struct.Struct(">i")
_PROBE_TABLE = b"ipvsproxy-probe\0"


class Counts(NamedTuple):
    """What one backend holds, both families together; compared as (hints, rules)."""

    hints: int  # user chains named KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY
    rules: int  # what iptables-save prints as "-A" lines

    def plus(self, other: Counts) -> Counts:
        return Counts(self.hints + other.hints, self.rules + other.rules)


# ---------------------------------------------------------------- pure parsing


def count_legacy_table(info: bytes, blob: bytes, family: Family) -> Counts:
    """One x_tables table (its IPT_SO_GET_INFO answer and entries) as iptables-save prints
    it. Not rules: the built-in chains' policies (the entries at the hooks' underflows),
    each user chain's head (an ERROR entry naming it) and the RETURN that closes it (the
    entry before the next head), and the table's last entry (an ERROR one)."""
    policies = policy_offsets(info)
    hints = rules = 0
    user_chain: int | None = None  # entries so far of the user chain being walked
    for entry in walk(blob, family):
        if entry.target == "ERROR":
            if user_chain:
                rules += user_chain - 1  # all but its closing RETURN
            user_chain = 0
            hints += entry.data.split(b"\0", 1)[0].decode(errors="replace") in HINT_CHAINS
        elif user_chain is not None:
            user_chain += 1
        elif entry.offset not in policies:
            rules += 1
    return Counts(hints, rules)


def _iptables_attrs(message: Message, kind: int) -> dict[int, bytes] | None:
    """The attributes of a dumped chain or rule of one of iptables-nft's tables, else None."""
    data = message.data
    if message.kind != nft_kind(kind) or len(data) <= NLMSGHDR.size:
        return None
    if data[NLMSGHDR.size] not in _NFT_FAMILIES:  # struct nfgenmsg's family
        return None
    found = attrs(data, NLMSGHDR.size + 4)
    table = found.get(NFTA_RULE_TABLE, b"").rstrip(b"\0")
    return found if table in IPTABLES_TABLES else None


def count_nft(chains: Iterable[Message], rules: Iterable[Message]) -> Counts:
    """iptables-nft's tables as its saves print them, from NFT_MSG_GETCHAIN and
    NFT_MSG_GETRULE dumps. A policy is an attribute of a chain there, not a rule, and a
    user chain ends with no rule of its own: every rule is an "-A" line."""
    hints = 0
    for chain in chains:
        found = _iptables_attrs(chain, NFT_MSG_NEWCHAIN)
        if found is not None:
            hints += found.get(NFTA_CHAIN_NAME, b"").rstrip(b"\0").decode() in HINT_CHAINS
    count = sum(1 for rule in rules if _iptables_attrs(rule, NFT_MSG_NEWRULE) is not None)
    return Counts(hints, count)


def legacy_table_chains(blob: bytes, family: Family) -> frozenset[str]:
    """The user chains of one x_tables table, from its entries: each opens with an ERROR
    entry naming it; the table's last entry, an ERROR one too, opens none."""
    heads = [entry.data for entry in walk(blob, family) if entry.target == "ERROR"]
    return frozenset(head.split(b"\0", 1)[0].decode(errors="replace") for head in heads[:-1])


def nft_table_chains(chains: Iterable[Message]) -> dict[str, frozenset[str]]:
    """The user chains of iptables-nft's tables by table name, from an NFT_MSG_GETCHAIN
    dump; a base chain (one with a hook) is a built-in one."""
    found: dict[str, set[str]] = {}
    for chain in chains:
        got = _iptables_attrs(chain, NFT_MSG_NEWCHAIN)
        if got is not None:
            names = found.setdefault(got[NFTA_CHAIN_TABLE].rstrip(b"\0").decode(), set())
            if NFTA_CHAIN_HOOK not in got:
                names.add(got.get(NFTA_CHAIN_NAME, b"").rstrip(b"\0").decode())
    return {table: frozenset(names) for table, names in found.items()}


def probe_requests() -> list[tuple[int, int, bytes]]:
    """A table of family ip with a base chain hooked as iptables-nft's mangle PREROUTING
    is: the least iptables-nft needs of the kernel."""
    ip = nfgen_head(FAMILIES["ip"])
    hook = nla(NFTA_HOOK_HOOKNUM, _BE32.pack(0)) + nla(NFTA_HOOK_PRIORITY, _BE32.pack(-150))
    chain = (
        nla(NFTA_CHAIN_TABLE, _PROBE_TABLE)
        + nla(NFTA_CHAIN_NAME, b"probe\0")
        + nla(NLA_F_NESTED | NFTA_CHAIN_HOOK, hook)
        + nla(NFTA_CHAIN_TYPE, b"filter\0")
    )
    return [
        (nft_kind(NFT_MSG_NEWTABLE), NLM_F_CREATE, ip + nla(NFTA_TABLE_NAME, _PROBE_TABLE)),
        (nft_kind(NFT_MSG_NEWCHAIN), NLM_F_CREATE, ip + chain),
    ]


# ---------------------------------------------------------------- kernel reads


def legacy_counts() -> Counts | None:
    """The legacy backend's counts in this thread's namespace (see the module docstring)."""
    if shutil.which("iptables-legacy-save") is None:
        return None
    total = Counts(0, 0)
    for family in (Family.V4, Family.V6):
        counts = Counts(0, 0)
        try:
            for _table, info, blob in read_tables(family):
                counts = counts.plus(count_legacy_table(info, blob, family))
        except OSError:
            if family is Family.V4:
                return None
            continue
        total = total.plus(counts)
    return total


async def nft_counts() -> Counts | None:
    """The nft backend's counts in this thread's namespace (see the module docstring)."""
    if shutil.which("iptables-nft-save") is None:
        return None
    try:
        # Every family at once (two requests, not four); count_nft keeps ip and ip6.
        chains = await dump(NETLINK_NETFILTER, nft_kind(NFT_MSG_GETCHAIN), nfgen_head(0))
        rules = await dump(NETLINK_NETFILTER, nft_kind(NFT_MSG_GETRULE), nfgen_head(0))
    except OSError:  # DumpError included: e.g. a kernel without nf_tables
        return None
    return count_nft(chains, rules)


async def user_chains(backend: str, family: Family) -> dict[str, frozenset[str]]:
    """The user chains of ``family``'s tables in ``backend``, by table name, as its save
    would list them; a table with none may be missing. Raises OSError if the kernel
    refuses the reads."""
    if backend == "nft":
        head = nfgen_head(FAMILIES["ip6" if family is Family.V6 else "ip"])
        return nft_table_chains(await dump(NETLINK_NETFILTER, nft_kind(NFT_MSG_GETCHAIN), head))
    return {table: legacy_table_chains(blob, family) for table, _info, blob in read_tables(family)}


async def nft_works() -> bool:
    """Whether iptables-nft can program this kernel.

    The question the old probe asked by committing a chain with iptables-nft-restore, asked
    of the kernel directly: would it take iptables-nft's kind of table and base chain? The
    batch is left unended, so the kernel checks both and aborts: nothing is created (the
    probe left an empty ``table ip mangle``). Whether nf_tables answers at all (say, the
    generation request) is not the same question: user-mode-linux 6.1 has nf_tables with
    the bridge family only, answers every request and refuses ip tables (EOPNOTSUPP).
    """
    try:
        codes = await batch(probe_requests(), commit=False)
    except (NftablesError, OSError):  # no nf_tables subsystem, no permission
        return False
    return not any(codes)
