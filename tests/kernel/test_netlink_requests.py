"""``netlink.request_all`` against the kernel: only the last request of each sendmsg asks
for an ACK, yet every request gets its own errno, whichever one of a send fails."""

from __future__ import annotations

import errno
import ipaddress
import socket
import subprocess

import pytest

from ipvsproxy.dataplane import netlink
from ipvsproxy.dataplane.addresses import (
    RTM_DELADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    _ifaddr,
    _link,
)
from ipvsproxy.dataplane.netlink import NETLINK_ROUTE, NLM_F_CREATE, NLM_F_EXCL, request_all

LOOPBACK = socket.if_nametoindex("lo")  # in every namespace, always 1
MISSING_LINK = 999_999


def _address(n: int) -> bytes:
    return _ifaddr(ipaddress.IPv4Address(f"198.51.100.{n}"), LOOPBACK)


def _bound() -> set[str]:
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True
    ).stdout.split()
    return {word.split("/")[0] for word in shown if word.startswith("198.51.100.")}


@pytest.mark.parametrize("in_flight", [1, 3, 4, 16])
async def test_every_request_gets_its_errno_when_only_the_last_asks_for_an_ack(
    netns: int, in_flight: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    received: list[bytes] = []
    receive = netlink.receive

    async def counted(sock: socket.socket) -> bytes:
        received.append(await receive(sock))
        return received[-1]

    monkeypatch.setattr(netlink, "receive", counted)
    add = NLM_F_CREATE | NLM_F_EXCL
    requests = [
        (RTM_NEWADDR, _address(1)),
        (RTM_NEWADDR, _address(2)),
        (RTM_NEWADDR, _address(1)),  # EEXIST, in the middle of a send
        (RTM_NEWADDR, _address(3)),
        (RTM_NEWADDR, _ifaddr(ipaddress.IPv4Address("198.51.100.9"), MISSING_LINK)),
        (RTM_NEWADDR, _address(4)),
        (RTM_DELADDR, _address(7)),  # never bound: EADDRNOTAVAIL, last of all
    ]
    flags = [add] * 6 + [0]
    results = await request_all(NETLINK_ROUTE, requests, flags=flags, in_flight=in_flight)
    codes = [code for code, _ in results]
    assert codes == [0, 0, errno.EEXIST, 0, errno.ENODEV, 0, errno.EADDRNOTAVAIL]
    if in_flight == 16:  # one send: the three failures answer, the successes do not
        assert len(received) == 3
    assert _bound() == {"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"}


async def test_replies_still_reach_their_request(netns: int) -> None:
    """A request that answers with data (a get) keeps its replies, ACK or not."""
    get_lo = _link(name="lo")
    requests = [(RTM_GETLINK, get_lo), (RTM_NEWADDR, _address(5)), (RTM_GETLINK, get_lo)]
    flags = [0, NLM_F_CREATE | NLM_F_EXCL, 0]
    results = await request_all(NETLINK_ROUTE, requests, flags=flags, in_flight=3)
    assert [code for code, _ in results] == [0, 0, 0]
    assert [len(replies) for _, replies in results] == [1, 0, 1]
    assert _bound() == {"198.51.100.5"}
