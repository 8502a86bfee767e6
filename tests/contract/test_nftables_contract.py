"""Contract: Nftables (FakeNftables, or NetlinkNftables in a fresh netns).

The real suite needs a kernel with nf_tables: the host's (``tox -e host``, as root) or
Linux 6.12; user-mode-linux 6.1 has none, and there the real case that runs is the one
about such a kernel. Tables are made with the real ``nft`` (Debian package nftables).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.fakes import FakeNftables
from ipvsproxy.dataplane.interfaces import Nftables
from ipvsproxy.dataplane.nftables import KUBE_PROXY_TABLES, NetlinkNftables
from tests.support.kube_proxy_state import FIXTURES


def _kernel_has_nf_tables() -> bool:
    probe = subprocess.run(
        ["nft", "add table ip ipvsproxy-probe; delete table ip ipvsproxy-probe"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.fixture
def nftables(real: bool, netns: None) -> Nftables:
    if real and not _kernel_has_nf_tables():
        pytest.skip("this kernel has no nf_tables (user-mode-linux 6.1): see test_no_nf_tables")
    return NetlinkNftables() if real else FakeNftables()


def _nft_list_tables() -> list[str]:
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    return listed.stdout.splitlines()


def _add(nftables: Nftables, real: bool, family: str, name: str) -> None:
    if real:
        subprocess.run(["nft", f"add table {family} {name}"], check=True)
    else:
        assert isinstance(nftables, FakeNftables)
        nftables.add_table(family, name)


def _load_kube_proxy_nftables_mode(nftables: Nftables, real: bool) -> None:
    """kube-proxy's nftables mode: its ip table with chains, sets, maps and DNAT rules
    (tests/fixtures/kube_proxy/nftables-mode-1.33.nft), and an (empty) ip6 one."""
    if real:
        fixture = Path(FIXTURES, "nftables-mode-1.33.nft")
        subprocess.run(["nft", "-f", str(fixture)], check=True)
    else:
        _add(nftables, real, "ip", "kube-proxy")
    _add(nftables, real, "ip6", "kube-proxy")


async def test_tables_of_every_family_are_listed(nftables: Nftables, real: bool) -> None:
    assert await nftables.tables() == set()
    for family in ("ip", "ip6", "inet", "arp", "bridge", "netdev"):
        _add(nftables, real, family, f"t-{family}")
    assert await nftables.tables() == {
        (f, f"t-{f}") for f in ("ip", "ip6", "inet", "arp", "bridge", "netdev")
    }


async def test_kube_proxys_tables_go_and_an_operators_stay(nftables: Nftables, real: bool) -> None:
    _load_kube_proxy_nftables_mode(nftables, real)
    _add(nftables, real, "inet", "operator")
    _add(nftables, real, "ip", "kube-proxy-not")  # named alike, not kube-proxy's
    assert set(KUBE_PROXY_TABLES) <= await nftables.tables()
    await nftables.delete_tables(KUBE_PROXY_TABLES)
    assert await nftables.tables() == {("inet", "operator"), ("ip", "kube-proxy-not")}
    await nftables.delete_tables(KUBE_PROXY_TABLES)  # none left: nothing to do
    if real:  # what nft itself sees
        assert set(_nft_list_tables()) == {
            "table ip kube-proxy-not",
            "table inet operator",
        }


async def test_a_missing_table_among_others_is_fine(nftables: Nftables, real: bool) -> None:
    _add(nftables, real, "ip6", "kube-proxy")
    await nftables.delete_tables(KUBE_PROXY_TABLES)
    assert await nftables.tables() == set()


def test_an_unknown_family_is_a_typed_error() -> None:
    with pytest.raises(InvalidValueError):
        FakeNftables().add_table("ipx", "t")


async def test_no_nf_tables(real: bool, netns: None) -> None:
    """On a kernel without nf_tables there are no tables, and deleting is a no-op."""
    if not real or _kernel_has_nf_tables():
        pytest.skip("needs a kernel without nf_tables (user-mode-linux 6.1)")
    nftables = NetlinkNftables()
    assert await nftables.tables() == set()
    await nftables.delete_tables(KUBE_PROXY_TABLES)
