"""Jumps and leftovers read from saved tables (pure), on what kube-proxy's modes leave."""

from __future__ import annotations

import pytest

from ipvsproxy.dataplane.iptables_fixups import (
    cleanup_restore,
    is_leftover,
    jump_fixups,
    leftover_fixups,
    table_fixups,
)
from ipvsproxy.dataplane.iptables_rules import JUMPS
from tests.support.kube_proxy_state import IPTABLES_MODES, IPVS_MODES, default_values, fixture

VALUES = default_values(("10.244.1.2", "10.244.2.2", "10.244.3.2"))


def _table(saved: str, table: str) -> str:
    return "*" + saved.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0] + "COMMIT\n"


def test_each_of_our_jumps_is_inserted_when_missing() -> None:
    for table in ("nat", "filter", "mangle"):
        lines = jump_fixups(table, f"*{table}\nCOMMIT\n")
        assert sorted(lines) == sorted(
            f"-I {j.chain} 1 {j.spec}" for j in JUMPS if j.table == table
        )
    assert sorted(jump_fixups("mangle", "*mangle\nCOMMIT\n")) == [
        f'-I {chain} 1 -m comment --comment "kubernetes in-cluster fwmark"'
        " -j KUBE-IN-CLUSTER-FWMARK"
        for chain in ("OUTPUT", "PREROUTING")
    ]


def test_duplicates_and_other_variants_of_our_jumps_are_deleted() -> None:
    saved = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:MINE - [0:0]\n"
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'
        "-A PREROUTING -j KUBE-SERVICES\n"
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'
        "-A PREROUTING -s 10.0.0.0/8 -j MINE\nCOMMIT\n"
    )
    lines = jump_fixups("nat", saved)
    assert lines.count("-D PREROUTING -j KUBE-SERVICES") == 1
    assert (
        '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in lines
    )  # the second copy
    assert not [line for line in lines if "MINE" in line]
    assert not [line for line in lines if line.startswith("-I PREROUTING")]


@pytest.mark.parametrize("mode", IPTABLES_MODES)
def test_iptables_mode_leaves_nothing_of_its_own(mode: str) -> None:
    saved = fixture(f"{mode}.save", **VALUES)
    nat, filt = (
        leftover_fixups("nat", _table(saved, "nat")),
        table_fixups("filter", _table(saved, "filter")),
    )
    deleted = {line.split()[1] for line in nat + filt if line.startswith("-X ")}
    assert {c for c in deleted if c.startswith(("KUBE-SVC-", "KUBE-SEP-"))}
    assert {"KUBE-NODEPORTS", "KUBE-PROXY-CANARY", "KUBE-SERVICES"} <= deleted
    # The REJECT of the Service without endpoints goes with filter KUBE-SERVICES, and so do
    # the jumps to it; rules of ours (nat KUBE-SERVICES) go with their chain's flush.
    assert [line for line in filt if line.startswith("-D OUTPUT") and "KUBE-SERVICES" in line]
    assert not [line for line in nat if line.startswith("-D KUBE-SERVICES")]
    # kubelet's chains and jumps stay.
    assert not [line for line in nat + filt if "KUBE-FIREWALL" in line or "KUBELET" in line]
    # iptables mode's variant of a jump to a chain of ours (new connections, from OUTPUT
    # too; since ~1.25) is replaced by ours.
    assert any(
        line.startswith("-D OUTPUT") and line.endswith("-j KUBE-PROXY-FIREWALL") for line in filt
    ) == (mode == "iptables-mode-1.33")


@pytest.mark.parametrize("mode", IPVS_MODES)
def test_ipvs_mode_state_is_adopted_with_few_changes(mode: str) -> None:
    saved = fixture(f"{mode}.save", **VALUES)
    nat = table_fixups("nat", _table(saved, "nat"))
    filt = table_fixups("filter", _table(saved, "filter"))
    removed = [line for line in nat + filt if line.startswith("-X ")]
    # The same chains and jumps as kube-proxy's: only 1.19's LB firewall chain goes.
    assert removed == (["-X KUBE-FIREWALL"] if mode == "ipvs-mode-1.19" else [])
    assert not [
        line for line in nat + filt if line.startswith("-D ") and "KUBE-FIREWALL" not in line
    ]


def test_leftovers_are_recognised_by_table_and_name_only() -> None:
    assert is_leftover("filter", "KUBE-SERVICES")
    assert not is_leftover("nat", "KUBE-SERVICES")  # ours there
    assert is_leftover("nat", "KUBE-SVC-XPGD46QRK7WJZT7O")
    assert not is_leftover("filter", "KUBE-FIREWALL")  # kubelet's
    assert not is_leftover("nat", "KUBE-MARK-DROP")  # kubelet's, in old releases
    assert is_leftover("nat", "KUBE-FIREWALL")  # IPVS mode <= 1.20's, in nat
    assert is_leftover("mangle", "KUBE-PROXY-CANARY")
    assert not is_leftover("mangle", "KUBE-IN-CLUSTER-FWMARK")  # ours


def test_cleanup_names_only_ours_and_leftovers_and_jumps_to_them() -> None:
    nat = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n"
        ":KUBE-MARK-MASQ - [0:0]\n:KUBE-MARK-DROP - [0:0]\n:MINE - [0:0]\n"
        ":KUBE-SVC-ABC - [0:0]\n"
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n'
        "-A OUTPUT -j MINE\n-A MINE -j KUBE-MARK-MASQ\n-A KUBE-SERVICES -j KUBE-MARK-DROP\n"
        "-A KUBE-SERVICES -j KUBE-SVC-ABC\nCOMMIT\n"
    )
    text = cleanup_restore({"nat": nat, "filter": "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"})
    assert text.splitlines() == [
        "*nat",
        '-D PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-D MINE -j KUBE-MARK-MASQ",
        "-F KUBE-MARK-MASQ",
        "-F KUBE-SERVICES",
        "-F KUBE-SVC-ABC",
        "-X KUBE-MARK-MASQ",
        "-X KUBE-SERVICES",
        "-X KUBE-SVC-ABC",
        "COMMIT",
    ]
    assert cleanup_restore({"filter": "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"}) == ""
