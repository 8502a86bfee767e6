"""Contract: Iptables (FakeIptables, or IptablesCli on the detected backend in a fresh netns).

The real suite needs the KUBE-* ipsets the rules match on, so it creates them first, as
the reconciler does. At the end, real kernels only: backend detection's kernel reads
against what the saves print, and its choice against the saves and probe it replaced.
"""

from __future__ import annotations

import socket

import pytest

from ipvsproxy.core.ipset_catalog import all_specs
from ipvsproxy.core.local_traffic import LocalDetector
from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.errors import CommandError
from ipvsproxy.dataplane.fakes import FakeIpsets, FakeIptables
from ipvsproxy.dataplane.interfaces import Ipsets, Iptables
from ipvsproxy.dataplane.ipsets import IpsetCli, run_command
from ipvsproxy.dataplane.iptables import IptablesCli, RulesSyncer, detect_backend, table_text
from ipvsproxy.dataplane.iptables_backend import (
    HINT_CHAINS,
    Counts,
    legacy_counts,
    nft_counts,
    nft_works,
)
from ipvsproxy.dataplane.iptables_fixups import (
    is_leftover,
    saved_chains,
    saved_rules,
    table_fixups,
)
from ipvsproxy.dataplane.iptables_rules import (
    BUILTIN_CHAINS,
    JUMPS,
    OWNED_CHAINS,
    RULE_TABLES,
    RulesConfig,
    build_restore,
)
from ipvsproxy.dataplane.nftables import NetlinkNftables
from tests.support.kube_proxy_state import IPTABLES_MODES, IPVS_MODES, default_values, fixture

FAMILIES = [Family.V4, Family.V6]
OPERATOR_RULE = {
    Family.V4: "-s 192.0.2.1/32 -j ACCEPT",
    Family.V6: "-s 2001:db8::1/128 -j ACCEPT",
}


@pytest.fixture
async def iptables(real: bool, netns: None) -> Iptables:
    if not real:
        return FakeIptables()
    return IptablesCli(await detect_backend())


@pytest.fixture
async def ipsets(real: bool, netns: None) -> Ipsets:
    sets: Ipsets = IpsetCli() if real else FakeIpsets()
    await sets.ensure(all_specs(Family.V4) + all_specs(Family.V6))
    return sets


async def _jumps(iptables: Iptables, family: Family) -> dict[tuple[str, str, str], int]:
    """How many rules do each of our jumps exactly; any other jump from a built-in chain to
    a chain of ours is counted under its own text."""
    counts = {(j.table, j.chain, j.target): 0 for j in JUMPS}
    for table in RULE_TABLES:
        ours = OWNED_CHAINS.get(table, ())
        for rule in saved_rules(await iptables.save(family, table)):
            if rule.chain in BUILTIN_CHAINS[table] and rule.target in ours:
                exact = any(
                    (j.table, j.chain, j.spec) == (table, rule.chain, rule.rest) for j in JUMPS
                )
                key = (table, rule.chain, rule.target if exact else rule.rest)
                counts[key] = counts.get(key, 0) + 1
    return counts


async def _chains(iptables: Iptables, family: Family, table: str) -> set[str]:
    text = await iptables.save(family, table)
    return {line[1:].split()[0] for line in text.splitlines() if line.startswith(":")}


@pytest.mark.parametrize("family", FAMILIES)
async def test_sync_writes_chains_and_each_jump_exactly_once(
    iptables: Iptables, ipsets: Ipsets, family: Family
) -> None:
    syncer = RulesSyncer(iptables, family)
    for verify in (False, False, True):  # first sync verifies; later ones may skip the saves
        await syncer.sync(RulesConfig(), verify=verify)
        assert set((await _jumps(iptables, family)).values()) == {1}
    for table, chains in OWNED_CHAINS.items():
        assert set(chains) <= await _chains(iptables, family, table)
    nat = await iptables.save(family, "nat")
    assert "KUBE-MARK-MASQ" in nat
    assert "--match-set" in nat
    assert (f"KUBE-{'6-' if family is Family.V6 else ''}CLUSTER-IP") in nat


@pytest.mark.parametrize("family", FAMILIES)
async def test_duplicate_jumps_are_collapsed_and_missing_ones_restored(
    iptables: Iptables, ipsets: Ipsets, family: Family
) -> None:
    syncer = RulesSyncer(iptables, family)
    await syncer.sync(RulesConfig())
    jump = JUMPS[1]  # nat PREROUTING -> KUBE-SERVICES
    dup = f"*nat\n-A {jump.chain} {jump.spec}\n-A {jump.chain} {jump.spec}\nCOMMIT\n"
    await iptables.restore(family, dup)
    gone = JUMPS[3]  # filter FORWARD -> KUBE-FORWARD
    await iptables.restore(family, f"*filter\n-D {gone.chain} {gone.spec}\nCOMMIT\n")
    counts = await _jumps(iptables, family)
    assert counts[(jump.table, jump.chain, jump.target)] == 3
    assert counts[(gone.table, gone.chain, gone.target)] == 0
    await syncer.sync(RulesConfig(), verify=True)
    assert set((await _jumps(iptables, family)).values()) == {1}


@pytest.mark.parametrize("family", FAMILIES)
async def test_rule_text_is_replaced_not_appended(
    iptables: Iptables, ipsets: Ipsets, family: Family
) -> None:
    syncer = RulesSyncer(iptables, family)
    await syncer.sync(RulesConfig(masquerade_all=False))
    before = await iptables.save(family, "nat")
    await syncer.sync(RulesConfig(masquerade_all=True))
    await syncer.sync(RulesConfig(masquerade_all=False))
    assert _body(await iptables.save(family, "nat")) == _body(before)


@pytest.mark.parametrize("family", FAMILIES)
async def test_cleanup_removes_ours_and_keeps_the_operators(
    iptables: Iptables, ipsets: Ipsets, family: Family
) -> None:
    operator = (
        "*filter\n:OPERATOR - [0:0]\n"
        f"-A INPUT {OPERATOR_RULE[family]}\n-A OPERATOR -j RETURN\n-A FORWARD -j OPERATOR\n"
        "COMMIT\n*nat\n:KUBE-OTHER - [0:0]\n-A KUBE-OTHER -j RETURN\nCOMMIT\n"
    )
    await iptables.restore(family, operator)
    before = {t: await iptables.save(family, t) for t in RULE_TABLES}
    await RulesSyncer(iptables, family).sync(RulesConfig())
    await iptables.cleanup(family)
    await iptables.cleanup(family)  # nothing left to do is fine
    for table in RULE_TABLES:
        after = await iptables.save(family, table)
        assert _body(after) == _body(before[table])
    assert "KUBE-OTHER" in await _chains(iptables, family, "nat")  # not ours: kept


def _body(saved: str) -> list[str]:
    return [line for line in saved.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("family", FAMILIES)
async def test_bad_rule_raises_and_commits_nothing(iptables: Iptables, family: Family) -> None:
    before = await iptables.save(family, "filter")
    bad = (
        "*filter\n:KUBE-FORWARD - [0:0]\n-A KUBE-FORWARD -j ACCEPT\n"
        "-A KUBE-FORWARD -j NO-SUCH-CHAIN\nCOMMIT\n"
    )
    with pytest.raises(CommandError):
        await iptables.restore(family, bad)
    assert _body(await iptables.save(family, "filter")) == _body(before)


@pytest.mark.parametrize("mode", IPTABLES_MODES + IPVS_MODES)
async def test_sync_takes_over_what_kube_proxy_left(
    iptables: Iptables, ipsets: Ipsets, mode: str
) -> None:
    """kube-proxy's chains, rules and jumps (tests/fixtures/kube_proxy) and an operator's:
    after one sync only ours, kubelet's and the operator's are left, each jump once."""
    family = Family.V4
    values = default_values(("10.244.1.2", "10.244.2.2", "10.244.3.2"))
    await iptables.restore(family, fixture(f"{mode}.save", **values))
    operator = f"*filter\n:OPERATOR - [0:0]\n-A OPERATOR {OPERATOR_RULE[family]}\n"
    await iptables.restore(family, operator + "-A INPUT -j OPERATOR\nCOMMIT\n")
    kubelet = [
        line
        for table in RULE_TABLES
        for line in (await iptables.save(family, table)).splitlines()
        if "KUBE-FIREWALL" in line and "nat" not in table and line.startswith("-A")
    ]
    await RulesSyncer(iptables, family).sync(
        RulesConfig(local={Family.V4: LocalDetector(source="10.244.0.0/16")})
    )
    for table in RULE_TABLES:
        saved = await iptables.save(family, table)
        assert not [c for c in saved_chains(saved) if is_leftover(table, c)], table
    filt = await iptables.save(family, "filter")
    assert "-A INPUT -j OPERATOR" in filt
    assert f"-A OPERATOR {OPERATOR_RULE[family]}" in filt
    assert set(kubelet) <= set(filt.splitlines())  # kubelet's KUBE-FIREWALL and its jumps
    assert "has no endpoints" not in filt  # the REJECT of the Service without endpoints
    # Our jumps once each, and no other jump from a built-in chain to ours.
    assert await _jumps(iptables, family) == {(j.table, j.chain, j.target): 1 for j in JUMPS}


@pytest.mark.parametrize("family", FAMILIES)
async def test_all_tables_in_one_save_read_as_each_alone(
    iptables: Iptables, ipsets: Ipsets, family: Family
) -> None:
    await RulesSyncer(iptables, family).sync(RulesConfig())
    every = await iptables.save_tables(family)
    assert set(RULE_TABLES) <= set(every)
    for table in RULE_TABLES:
        assert _body(every[table]) == _body(await iptables.save(family, table))


@pytest.mark.parametrize("family", FAMILIES)
async def test_user_chains_are_those_the_save_lists(
    iptables: Iptables, ipsets: Ipsets, family: Family
) -> None:
    await RulesSyncer(iptables, family).sync(RulesConfig())
    await iptables.restore(family, "*filter\n:OPERATOR-CHAIN - [0:0]\nCOMMIT\n")
    await iptables.restore(family, "*nat\n:KUBE-SVC-LEFTOVER - [0:0]\nCOMMIT\n")
    saved = await iptables.save_tables(family)
    listed = {
        table: frozenset(saved_chains(text) - set(BUILTIN_CHAINS.get(table, ())))
        for table, text in saved.items()
    }
    read = await iptables.user_chains(family)
    assert {t: c for t, c in read.items() if c} == {t: c for t, c in listed.items() if c}
    assert "OPERATOR-CHAIN" in read["filter"]
    assert "KUBE-SVC-LEFTOVER" in read["nat"]
    assert set(OWNED_CHAINS["nat"]) <= read["nat"]


class _CountedSaves:
    """An Iptables that counts its ``save_tables`` calls."""

    def __init__(self, inner: Iptables) -> None:
        self.inner = inner
        self.saves = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def save_tables(self, family: Family) -> dict[str, str]:
        self.saves += 1
        return await self.inner.save_tables(family)


@pytest.mark.parametrize("family", FAMILIES)
async def test_a_first_sync_saves_only_when_a_table_holds_ours_or_a_leftover(
    iptables: Iptables, ipsets: Ipsets, family: Family
) -> None:
    """No chain of ours and no leftover: the save could only say "insert every jump", so
    the first sync writes exactly what it would have written after one, without it."""
    await iptables.restore(
        family, f"*filter\n:OPERATOR-CHAIN - [0:0]\n-A INPUT {OPERATOR_RULE[family]}\nCOMMIT\n"
    )
    saved = await iptables.save_tables(family)
    expected = build_restore(
        RulesConfig(), family, {t: table_fixups(t, table_text(saved, t)) for t in RULE_TABLES}
    )
    counted = _CountedSaves(iptables)
    assert await RulesSyncer(counted, family).sync(RulesConfig()) == expected
    assert counted.saves == 0
    assert set((await _jumps(iptables, family)).values()) == {1}
    # Our chains are there now: the next first sync (a restart) saves.
    await RulesSyncer(counted, family).sync(RulesConfig())
    assert counted.saves == 1
    # A leftover alone (kube-proxy's iptables mode) is enough to save, and it is removed.
    await iptables.cleanup(family)
    await iptables.restore(family, "*nat\n:KUBE-SVC-LEFTOVER - [0:0]\nCOMMIT\n")
    await RulesSyncer(counted, family).sync(RulesConfig())
    assert counted.saves == 2
    assert "KUBE-SVC-LEFTOVER" not in (await iptables.user_chains(family))["nat"]


@pytest.mark.parametrize("family", FAMILIES)
async def test_fingerprint_follows_the_rules_not_the_counters(
    iptables: Iptables, ipsets: Ipsets, family: Family
) -> None:
    """What the idle resync checks instead of saving the tables: equal while the rules
    stay, different once a rule is added (and again once it goes), whatever traffic the
    rules count."""
    await RulesSyncer(iptables, family).sync(RulesConfig())
    loopback = "127.0.0.1" if family is Family.V4 else "::1"
    counted = f"-A OUTPUT -d {loopback} -p udp --dport 9 -j ACCEPT"
    await iptables.restore(family, f"*filter\n{counted}\nCOMMIT\n")
    before = await iptables.fingerprint(family)
    assert await iptables.fingerprint(family) == before
    # Traffic through the rule: its packet and byte counters move, the rules do not.
    af = socket.AF_INET if family is Family.V4 else socket.AF_INET6
    with socket.socket(af, socket.SOCK_DGRAM) as sock:
        for _ in range(3):
            sock.sendto(b"x", (loopback, 9))
    assert await iptables.fingerprint(family) == before
    await iptables.restore(family, f"*filter\n-A INPUT {OPERATOR_RULE[family]}\nCOMMIT\n")
    added = await iptables.fingerprint(family)
    assert added != before
    await iptables.restore(family, f"*filter\n-D INPUT {OPERATOR_RULE[family]}\nCOMMIT\n")
    assert await iptables.fingerprint(family) != added


# ------------------------------------------------- backend detection (real kernels only)
#
# What iptables_backend reads from the kernel, checked against what the tools print, and
# detect_backend's choice against the rule it replaces (the saves and the probe, below).


def _program(family: Family, *, hints: bool, rules: int) -> str:
    """A restore text: kubelet's hint chains if ``hints``, an empty user chain, a user chain
    with its own RETURN rule, and ``rules`` rules in all (at least 3, the chains' own)."""
    addr = "192.0.2.1/32" if family is Family.V4 else "2001:db8::1/128"
    hint_chains = ":KUBE-KUBELET-CANARY - [0:0]\n" if hints else ""
    mangle = ":KUBE-IPTABLES-HINT - [0:0]\n" + hint_chains if hints else ""
    extra = "".join(
        f"-A INPUT -s {addr} -p tcp --dport {1000 + n} -j ACCEPT\n" for n in range(rules - 3)
    )
    return (
        f"*mangle\n{mangle}COMMIT\n"
        f"*nat\n{hint_chains}:KUBE-MARK-MASQ - [0:0]\n"
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\nCOMMIT\n"
        f"*filter\n{hint_chains}:OPERATOR - [0:0]\n:EMPTY - [0:0]\n"
        f'-A OPERATOR -s {addr} -m comment --comment "an operator\'s" -j ACCEPT\n'
        f"-A OPERATOR -j RETURN\n{extra}COMMIT\n"
    )


async def _saves(backend: str) -> str | None:
    """Both families' ``*-save`` output, as the old detection read it."""
    texts = []
    for tool in ("iptables", "ip6tables"):
        try:
            texts.append(await run_command([f"{tool}-{backend}-save"]))
        except (CommandError, OSError):
            if tool == "iptables":
                return None
    return "\n".join(texts)


def _saved_counts(saved: str) -> Counts:
    lines = saved.splitlines()
    hints = sum(1 for x in lines if x[:1] == ":" and x[1:].split(" ")[0] in HINT_CHAINS)
    return Counts(hints, sum(1 for x in lines if x[:3] == "-A "))


async def _old_probe() -> bool:
    """The probe the old detection ran: it commits (and leaves an empty mangle table)."""
    probe = "*mangle\n:KUBE-PROXY-PROBE - [0:0]\n-X KUBE-PROXY-PROBE\nCOMMIT\n"
    try:
        await run_command(["iptables-nft-restore", "-w", "5", "--noflush"], probe)
    except (CommandError, OSError):
        return False
    return True


def _old_choice(legacy: str | None, nft: str | None, works: bool) -> str:
    """The old rule, on the saves' text: lines naming a hint chain, then "-A" lines."""

    def score(text: str | None) -> tuple[int, int]:
        lines = (text or "").splitlines()
        hints = sum(1 for x in lines if "KUBE-IPTABLES-HINT" in x or "KUBE-KUBELET-CANARY" in x)
        return (hints, sum(1 for x in lines if x[:3] == "-A "))

    if legacy is None:
        return "nft"
    if nft is None:
        return "legacy"
    lscore, nscore = score(legacy), score(nft)
    if lscore != nscore and (lscore[0] or nscore[0] or lscore[1] or nscore[1]):
        return "legacy" if lscore > nscore else "nft"
    return "nft" if works else "legacy"


def _names() -> tuple[str, str]:
    found = []
    for name in ("ip_tables_names", "ip6_tables_names"):
        try:
            with open(f"/proc/thread-self/net/{name}") as names:
                found.append(names.read())
        except FileNotFoundError:
            found.append("")
    return found[0], found[1]


async def _counts(backend: str) -> Counts | None:
    return legacy_counts() if backend == "legacy" else await nft_counts()


async def _restore(backend: str, family: Family, text: str) -> None:
    tool = "ip6tables" if family is Family.V6 else "iptables"
    await run_command([f"{tool}-{backend}-restore", "-w", "5"], text)


@pytest.mark.parametrize("backend", ["legacy", "nft"])
async def test_backend_counts_are_what_the_saves_print(
    real: bool, netns: None, backend: str
) -> None:
    """Rules and hint chains read from the kernel, as both families' saves print them."""
    if not real:
        pytest.skip("reads the kernel")
    if backend == "nft" and not await nft_works():
        assert await _counts("nft") == Counts(0, 0) == _saved_counts(await _saves("nft") or "")
        pytest.skip("this kernel's nf_tables takes no ip tables (user-mode-linux 6.1)")
    assert await _counts(backend) == Counts(0, 0)
    for family, rules in ((Family.V4, 7), (Family.V6, 4)):
        await _restore(backend, family, _program(family, hints=True, rules=rules))
        saved = await _saves(backend)
        assert saved is not None
        assert await _counts(backend) == _saved_counts(saved)
    assert await _counts(backend) == Counts(hints=2 * 4, rules=7 + 4)


# (hints, rules) programmed into legacy, into nft (both families if "both"), and the choice
# when it does not depend on the kernel.
SCENARIOS = {
    "neither holds any": (None, None, None),
    "rules in legacy": ((False, 5), None, "legacy"),
    "rules in nft": (None, (False, 3), "nft"),
    "hints in legacy, more rules in nft": ((True, 3), (False, 9), "legacy"),
    "hints in nft, more rules in legacy": ((False, 9), (True, 3), "nft"),
    "as many rules in both": ((False, 4), (False, 4), None),
    "more rules in nft, both families": ((False, 4), (False, 5), "nft"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_detection_decides_as_the_saves_and_the_probe_did(
    real: bool, netns: None, scenario: str
) -> None:
    if not real:
        pytest.skip("reads the kernel")
    legacy, nft, expected = SCENARIOS[scenario]
    if nft is not None and not await nft_works():
        pytest.skip("this kernel's nf_tables takes no ip tables (user-mode-linux 6.1)")
    families = [Family.V4, Family.V6] if "both" in scenario else [Family.V4]
    for backend, program in (("legacy", legacy), ("nft", nft)):
        for family in families if program is not None else []:
            await _restore(backend, family, _program(family, hints=program[0], rules=program[1]))
    chosen = await detect_backend()
    old_legacy, old_nft = await _saves("legacy"), await _saves("nft")
    undecided = _old_choice(old_legacy, old_nft, True) != _old_choice(old_legacy, old_nft, False)
    assert chosen == _old_choice(old_legacy, old_nft, undecided and await _old_probe())
    assert chosen == (expected or chosen)


async def test_the_reads_and_the_nft_check_leave_the_kernel_as_it_was(
    real: bool, netns: None
) -> None:
    """No x_tables table is created by reading (only listed ones are opened), and the nft
    check commits nothing; it answers as the old probe, which commits, does."""
    if not real:
        pytest.skip("reads the kernel")
    names = _names()
    assert legacy_counts() == Counts(0, 0)
    assert _names() == names
    works = await nft_works()
    assert await NetlinkNftables().tables() == set()
    assert works == await _old_probe()
