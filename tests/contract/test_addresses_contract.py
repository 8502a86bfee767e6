"""Contract: Addresses (FakeAddresses, or NetlinkAddresses in a fresh netns: needs dummy links)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ipvsproxy.dataplane.addresses import NetlinkAddresses
from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.fakes import FakeAddresses
from ipvsproxy.dataplane.interfaces import Addresses


@pytest.fixture
async def addresses(real: bool, netns: None) -> AsyncIterator[Addresses]:
    impl: Addresses = NetlinkAddresses() if real else FakeAddresses()
    yield impl
    await impl.close()


async def _add_node_address(real: bool, addresses: Addresses, address: str, prefix: int) -> None:
    """Put ``address`` on another link, as a node's own address would be."""
    if not real:
        assert isinstance(addresses, FakeAddresses)
        addresses.add_node_address(address)
        return
    from pyroute2 import AsyncIPRoute

    ipr: Any = AsyncIPRoute()
    try:
        if not await ipr.link_lookup(ifname="eth-node"):
            await ipr.link("add", ifname="eth-node", kind="bridge")
        index = (await ipr.link_lookup(ifname="eth-node"))[0]
        flags = {"flags": 0x02} if ":" in address else {}
        await ipr.addr("add", index=index, address=address, prefixlen=prefix, **flags)
    finally:
        ipr.close()


async def test_dummy_lifecycle(addresses: Addresses) -> None:
    assert await addresses.bound() == set()
    await addresses.ensure_dummy()
    await addresses.ensure_dummy()  # idempotent
    assert await addresses.bound() == set()
    await addresses.bind(["10.96.0.10"])
    await addresses.delete_dummy()
    await addresses.delete_dummy()  # already gone is fine
    assert await addresses.bound() == set()


async def test_bind_and_unbind_v4_and_v6(addresses: Addresses) -> None:
    await addresses.ensure_dummy()
    await addresses.bind(["10.96.0.10", "10.96.0.11", "fd00:0::10"])
    await addresses.bind(["10.96.0.10"])  # already bound is fine
    assert await addresses.bound() == {"10.96.0.10", "10.96.0.11", "fd00::10"}
    await addresses.unbind(["10.96.0.11", "fd00::10", "10.96.0.99"])  # not bound is fine
    assert await addresses.bound() == {"10.96.0.10"}


async def test_many_addresses_in_one_call(addresses: Addresses) -> None:
    await addresses.ensure_dummy()
    many = [f"10.96.{i // 250}.{i % 250 + 1}" for i in range(600)] + [
        f"fd00::{i:x}" for i in range(1, 301)
    ]
    await addresses.bind(many)
    assert await addresses.bound() == set(many)
    await addresses.unbind(many[:500])
    assert await addresses.bound() == set(many[500:])


async def test_bad_address_raises_and_binds_nothing(addresses: Addresses) -> None:
    await addresses.ensure_dummy()
    with pytest.raises(InvalidValueError, match=r"10\.96\.0\.300") as info:
        await addresses.bind(["10.96.0.12", "10.96.0.300"])
    assert info.value.field == "address"
    assert await addresses.bound() == set()


async def test_bind_without_dummy_is_a_typed_error(addresses: Addresses) -> None:
    with pytest.raises(InvalidValueError, match="kube-ipvs0"):
        await addresses.bind(["10.96.0.10"])


async def test_node_addresses_exclude_dummy_loopback_and_v6_link_local(
    real: bool, addresses: Addresses
) -> None:
    await addresses.ensure_dummy()
    await addresses.bind(["10.96.0.10", "fd00::10"])
    for address, prefix in (("192.0.2.7", 24), ("2001:db8::7", 64), ("fe80::7", 64)):
        await _add_node_address(real, addresses, address, prefix)
    assert await addresses.node_addresses() == {"192.0.2.7", "2001:db8::7"}


async def test_thousands_bound_and_unbound_in_one_call_each(addresses: Addresses) -> None:
    """A first sync binds every VIP at once (batched requests on the real kernel)."""
    await addresses.ensure_dummy()
    v4 = [f"10.96.{i // 256}.{i % 256}" for i in range(1500)]
    v6 = [f"fd00:96::{i:x}" for i in range(1, 501)]
    await addresses.bind(v4 + v6)
    await addresses.bind(v4[:10])  # already bound: fine
    assert await addresses.bound() == set(v4 + v6)
    await addresses.unbind(v4[:1000] + v6 + ["10.96.200.1"])  # not bound: fine
    assert await addresses.bound() == set(v4[1000:])


async def test_fingerprint_follows_every_address(addresses: Addresses, real: bool) -> None:
    """kube-ipvs0's addresses and the node's: what the idle resync checks instead of a dump."""
    await addresses.ensure_dummy()
    seen = {await addresses.fingerprint()}
    assert await addresses.fingerprint() in seen
    for change in (
        addresses.bind(["10.96.0.10"]),
        addresses.bind(["fd00::10"]),
        _add_node_address(real, addresses, "192.0.2.7", 24),
        addresses.unbind(["10.96.0.10"]),
    ):
        await change
        now = await addresses.fingerprint()
        assert now not in seen
        seen.add(now)
