"""Contract: Iptables (FakeIptables, or IptablesCli on the detected backend in a fresh netns).

The real suite needs the KUBE-* ipsets the rules match on, so it creates them first, as
the reconciler does.
"""

from __future__ import annotations

import pytest

from ipvsproxy.core.ipset_catalog import all_specs
from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.errors import CommandError
from ipvsproxy.dataplane.fakes import FakeIpsets, FakeIptables
from ipvsproxy.dataplane.interfaces import Ipsets, Iptables
from ipvsproxy.dataplane.ipsets import IpsetCli
from ipvsproxy.dataplane.iptables import IptablesCli, RulesSyncer, detect_backend
from ipvsproxy.dataplane.iptables_rules import (
    JUMPS,
    OWNED_CHAINS,
    RULE_TABLES,
    RulesConfig,
    find_jumps,
)

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
    counts = {}
    for table in RULE_TABLES:
        for jump, rules in find_jumps(table, await iptables.save(family, table)).items():
            counts[(jump.table, jump.chain, jump.target)] = len(rules)
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
    rule = find_jumps("filter", await iptables.save(family, "filter"))[gone][0]
    await iptables.restore(family, f"*filter\n-D {gone.chain} {rule}\nCOMMIT\n")
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
