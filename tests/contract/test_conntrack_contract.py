"""Contract: Conntrack (FakeConntrack, or NetlinkConntrack over ctnetlink in a fresh netns)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Protocol

import pytest

from ipvsproxy.core.model import RealServerKey
from ipvsproxy.dataplane.conntrack import NetlinkConntrack, insert_udp_entry
from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.fakes import FakeConntrack
from ipvsproxy.dataplane.interfaces import Conntrack


class Seed(Protocol):
    async def __call__(
        self, client: str, cport: int, vip: str, port: int, backend: str, bport: int = 0
    ) -> None: ...


@pytest.fixture
async def conntrack(real: bool, netns: None) -> AsyncIterator[Conntrack]:
    impl = NetlinkConntrack() if real else FakeConntrack()
    yield impl
    await impl.close()


@pytest.fixture
def seed(real: bool, conntrack: Conntrack) -> Seed:
    """Seed one UDP entry client:cport -> vip:port answered by backend:bport (port if 0)."""

    async def add(
        client: str, cport: int, vip: str, port: int, backend: str, bport: int = 0
    ) -> None:
        if real:
            await insert_udp_entry(client, cport, vip, port, backend, bport or port)
        else:
            assert isinstance(conntrack, FakeConntrack)
            conntrack.add_udp_entry(client, cport, vip, port, backend, bport or port)

    return add


@pytest.mark.parametrize(
    ("client", "vip", "other_vip", "rs1", "rs2"),
    [
        ("10.0.0.1", "10.96.0.10", "10.96.0.11", "10.244.1.5", "10.244.2.6"),
        ("fd00::1", "fd00:96::10", "fd00:96::11", "fd00:244::5", "fd00:244::6"),
    ],
)
async def test_delete_by_service_and_by_real_server(
    conntrack: Conntrack, seed: Seed, client: str, vip: str, other_vip: str, rs1: str, rs2: str
) -> None:
    await seed(client, 40001, vip, 53, rs1)
    await seed(client, 40002, vip, 53, rs1)
    await seed(client, 40003, vip, 53, rs2)
    await seed(client, 40004, vip, 5353, rs1)  # same VIP, other port
    await seed(client, 40005, other_vip, 53, rs1)  # other VIP
    await seed(client, 40006, vip, 53, rs1, 5353)  # rs1 on another port: another real server
    assert await conntrack.delete_udp_to_real_server(vip, 53, RealServerKey(rs1, 53)) == 2
    assert await conntrack.delete_udp_to_real_server(vip, 53, RealServerKey(rs1, 53)) == 0
    assert await conntrack.delete_udp_to_service(vip, 53) == 2  # rs2's and rs1:5353's are left
    assert await conntrack.delete_udp_to_service(vip, 5353) == 1
    assert await conntrack.delete_udp_to_service(other_vip, 53) == 1
    assert await conntrack.delete_udp_to_service(other_vip, 53) == 0


@pytest.mark.parametrize(
    ("client", "vip", "rs1", "rs2"),
    [
        ("10.0.0.1", "10.96.0.10", "10.244.1.5", "10.244.2.6"),
        ("fd00::1", "fd00:96::10", "fd00:244::5", "fd00:244::6"),
    ],
)
async def test_delete_by_service_keeps_the_flows_of_real_servers_kept(
    conntrack: Conntrack, seed: Seed, client: str, vip: str, rs1: str, rs2: str
) -> None:
    """Entries answered by a kept real server (address and port) are live flows and stay;
    a stale one (answered by the VIP itself, never NATed) and others go."""
    await seed(client, 40001, vip, 53, rs1)
    await seed(client, 40002, vip, 53, rs2)
    await seed(client, 40003, vip, 53, vip)  # routed while the VIP was not local
    expanded = str(ipaddress.ip_address(rs1).exploded)  # kept whatever the spelling
    keep = [RealServerKey(expanded, 53), RealServerKey(rs2, 5353)]  # rs2: another port
    assert await conntrack.delete_udp_to_service(vip, 53, keep) == 2
    assert await conntrack.delete_udp_to_service(vip, 53, keep) == 0
    assert await conntrack.delete_udp_to_service(vip, 53) == 1  # rs1's was left


@pytest.mark.parametrize(
    ("address", "port", "field"), [("10.96.0.300", 53, "address"), ("10.96.0.10", 0, "port")]
)
async def test_bad_service_is_a_typed_error(
    conntrack: Conntrack, address: str, port: int, field: str
) -> None:
    with pytest.raises(InvalidValueError) as info:
        await conntrack.delete_udp_to_service(address, port)
    assert info.value.field == field


async def test_bad_real_server_is_a_typed_error(conntrack: Conntrack) -> None:
    with pytest.raises(InvalidValueError, match="bogus") as info:
        await conntrack.delete_udp_to_real_server("10.96.0.10", 53, RealServerKey("bogus", 53))
    assert info.value.field == "address"
