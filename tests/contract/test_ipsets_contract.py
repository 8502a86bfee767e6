"""Contract: Ipsets (FakeIpsets on the host, IpsetCli in a fresh netns under --dataplane=real)."""

from __future__ import annotations

import re

import pytest

from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.fakes import FakeIpsets
from ipvsproxy.dataplane.interfaces import Ipsets, IpsetSpec
from ipvsproxy.dataplane.ipsets import IpsetCli, destroy_owned
from ipvsproxy.ipsetnames import all_specs
from ipvsproxy.model import Family


@pytest.fixture
def ipsets(real: bool, netns: None) -> Ipsets:
    return IpsetCli() if real else FakeIpsets()


async def test_ensure_creates_kube_proxy_sets_for_both_families(ipsets: Ipsets) -> None:
    specs = all_specs(Family.V4) + all_specs(Family.V6)
    await ipsets.ensure(specs)
    await ipsets.ensure(specs)  # idempotent
    names = await ipsets.list_names()
    assert {"KUBE-CLUSTER-IP", "KUBE-6-CLUSTER-IP", "KUBE-6-LOAD-BALANCER-SOURCE-CID"} <= names
    assert names == {s.name for s in specs}


@pytest.mark.parametrize(
    ("base", "family", "given", "saved"),
    [
        ("KUBE-CLUSTER-IP", Family.V4, "10.96.0.10,TCP:53", "10.96.0.10,tcp:53"),
        ("KUBE-6-CLUSTER-IP", Family.V6, "fd00:0::10,udp:53", "fd00::10,udp:53"),
        ("KUBE-NODE-PORT-TCP", Family.V4, "30080", "30080"),
        ("KUBE-LOOP-BACK", Family.V4, "10.244.0.5,tcp:80,10.244.0.5",
         "10.244.0.5,tcp:80,10.244.0.5"),
        ("KUBE-LOAD-BALANCER-SOURCE-CIDR", Family.V4, "1.2.3.4,tcp:80,10.1.2.3/8",
         "1.2.3.4,tcp:80,10.0.0.0/8"),
        ("KUBE-6-LOAD-BALANCER-SOURCE-CID", Family.V6, "fd00::1,sctp:80,fd00:1::5/128",
         "fd00::1,sctp:80,fd00:1::5"),
        ("KUBE-IPVS-IPS", Family.V4, "10.96.0.10", "10.96.0.10"),
    ],
)  # fmt: skip
async def test_entries_read_back_in_save_syntax(
    ipsets: Ipsets, base: str, family: Family, given: str, saved: str
) -> None:
    await ipsets.ensure(all_specs(family))
    await ipsets.update({base: ({given}, set())})
    assert await ipsets.entries(base) == {saved}
    await ipsets.update({base: (set(), {given})})
    assert await ipsets.entries(base) == set()


async def test_update_adds_and_deletes_in_one_call_across_sets(ipsets: Ipsets) -> None:
    await ipsets.ensure(all_specs(Family.V4))
    await ipsets.update({"KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443", "10.96.0.10,udp:53"}, set())})
    await ipsets.update(
        {
            "KUBE-CLUSTER-IP": ({"10.96.0.11,tcp:80", "10.96.0.1,tcp:443"}, {"10.96.0.10,udp:53"}),
            "KUBE-NODE-PORT-UDP": ({"30053"}, {"30054"}),  # deleting a missing entry is fine
        }
    )
    assert await ipsets.entries("KUBE-CLUSTER-IP") == {"10.96.0.1,tcp:443", "10.96.0.11,tcp:80"}
    assert await ipsets.entries("KUBE-NODE-PORT-UDP") == {"30053"}


async def test_save_all_reads_every_set_at_once(ipsets: Ipsets) -> None:
    await ipsets.ensure(all_specs(Family.V4) + all_specs(Family.V6))
    await ipsets.update(
        {
            "KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443"}, set()),
            "KUBE-6-CLUSTER-IP": ({"fd00::1,tcp:443"}, set()),
            "KUBE-NODE-PORT-TCP": ({"30080"}, set()),
        }
    )
    saved = await ipsets.save_all()
    assert set(saved) == await ipsets.list_names()
    assert saved["KUBE-CLUSTER-IP"] == {"10.96.0.1,tcp:443"}
    assert saved["KUBE-6-CLUSTER-IP"] == {"fd00::1,tcp:443"}
    assert saved["KUBE-NODE-PORT-TCP"] == {"30080"}
    assert saved["KUBE-IPVS-IPS"] == set()


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("10.96.0.300,tcp:53", "address"),
        ("10.96.0.10,icmp:53", "protocol"),
        ("10.96.0.10,tcp:70000", "port"),
        ("fd00::1,tcp:53", "address"),
        ("10.96.0.10", "entry"),
    ],
)
async def test_bad_entry_raises_and_changes_nothing(ipsets: Ipsets, entry: str, field: str) -> None:
    await ipsets.ensure(all_specs(Family.V4))
    await ipsets.update({"KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443"}, set())})
    with pytest.raises(InvalidValueError) as info:
        await ipsets.update(
            {
                "KUBE-CLUSTER-IP": ({"10.96.0.2,tcp:443", entry}, {"10.96.0.1,tcp:443"}),
                "KUBE-IPVS-IPS": ({"10.96.0.2"}, set()),
            }
        )
    assert field in info.value.field
    # The error names the offending part of the entry.
    assert any(f"'{part}" in str(info.value) for part in re.split("[,:]", entry))
    assert await ipsets.entries("KUBE-CLUSTER-IP") == {"10.96.0.1,tcp:443"}
    assert await ipsets.entries("KUBE-IPVS-IPS") == set()


async def test_replace_makes_set_hold_exactly_and_leaves_no_temporary(ipsets: Ipsets) -> None:
    await ipsets.ensure(all_specs(Family.V6))
    await ipsets.update({"KUBE-6-CLUSTER-IP": ({"fd00::1,tcp:443", "fd00::2,tcp:80"}, set())})
    await ipsets.replace("KUBE-6-CLUSTER-IP", {"fd00::2,tcp:80", "fd00::3,udp:53"})
    assert await ipsets.entries("KUBE-6-CLUSTER-IP") == {"fd00::2,tcp:80", "fd00::3,udp:53"}
    await ipsets.replace("KUBE-6-CLUSTER-IP", set())
    assert await ipsets.entries("KUBE-6-CLUSTER-IP") == set()
    assert await ipsets.list_names() == {s.name for s in all_specs(Family.V6)}


async def test_unknown_set_is_a_typed_error(ipsets: Ipsets) -> None:
    with pytest.raises(InvalidValueError, match="KUBE-NOPE"):
        await ipsets.update({"KUBE-NOPE": ({"1.2.3.4"}, set())})
    with pytest.raises(InvalidValueError, match="KUBE-NOPE"):
        await ipsets.entries("KUBE-NOPE")


async def test_destroy_only_touches_kube_sets(ipsets: Ipsets) -> None:
    await ipsets.ensure(all_specs(Family.V4))
    with pytest.raises(InvalidValueError, match="operator-set"):
        await ipsets.destroy(["operator-set"])
    with pytest.raises(InvalidValueError, match="operator-set"):
        await ipsets.ensure([IpsetSpec("operator-set", "hash:ip", Family.V4, "")])
    await ipsets.destroy(["KUBE-CLUSTER-IP", "KUBE-NOT-THERE"])
    assert "KUBE-CLUSTER-IP" not in await ipsets.list_names()
    assert sorted(await destroy_owned(ipsets)) == sorted(
        s.name for s in all_specs(Family.V4) if s.name != "KUBE-CLUSTER-IP"
    )
    assert await ipsets.list_names() == set()
