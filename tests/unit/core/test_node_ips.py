"""The node's primary IPs as kube-proxy picks them, and --nodeport-addresses=primary (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from ipvsproxy.core.model import Family
from ipvsproxy.core.node_ips import nodeport_addresses, primary_ips
from tests.support.builders import node

INTERNAL4, INTERNAL6 = ("InternalIP", "192.168.1.10"), ("InternalIP", "2001:db8::10")
EXTERNAL4, EXTERNAL6 = ("ExternalIP", "203.0.113.5"), ("ExternalIP", "2001:db8:ff::5")


@pytest.mark.parametrize(
    ("addresses", "bind", "expected"),
    [
        ([INTERNAL4, INTERNAL6], "0.0.0.0", ("192.168.1.10/32", "2001:db8::10/128")),
        # InternalIPs come before ExternalIPs whatever the order in status.
        ([EXTERNAL4, INTERNAL6, INTERNAL4], "", ("192.168.1.10/32", "2001:db8::10/128")),
        # Only the first of the primary family, then the first of the other family.
        (
            [INTERNAL4, ("InternalIP", "192.168.1.11"), EXTERNAL6],
            "",
            ("192.168.1.10/32", "2001:db8:ff::5/128"),
        ),
        ([INTERNAL6], "::", ("2001:db8::10/128",)),
        (
            [("Hostname", "node-a"), ("InternalIP", "not-an-ip"), EXTERNAL4],
            "",
            ("203.0.113.5/32",),
        ),
        # --bind-address names the node's IP of its family (kube-proxy's node IP hint).
        ([INTERNAL4, INTERNAL6], "10.1.2.3", ("10.1.2.3/32", "2001:db8::10/128")),
        ([INTERNAL4], "2001:db8::77", ("192.168.1.10/32", "2001:db8::77/128")),
        # Loopback is no primary IP: nothing known means every address (an empty list).
        ([], "", ()),
        ([], "127.0.0.1", ()),
        ([("InternalIP", "127.0.0.1")], "", ()),
    ],
)
def test_primary_resolves_as_kube_proxy(
    addresses: list[tuple[str, str]], bind: str, expected: tuple[str, ...]
) -> None:
    assert nodeport_addresses(("primary",), node(addresses=addresses), bind) == expected


def test_cidrs_are_kept_as_they_are() -> None:
    cidrs = ("10.0.0.0/8", "fd00::/8")
    assert nodeport_addresses(cidrs, node(addresses=[INTERNAL4]), "") == cidrs
    assert nodeport_addresses((), None) == ()


ODD = [None, {}, {"status": "x"}, {"status": {"addresses": "x"}}]
ODD.append({"status": {"addresses": [7, {"type": "InternalIP"}]}})


@pytest.mark.parametrize("obj", ODD)
def test_odd_nodes_give_loopback(obj: Any) -> None:
    ips = primary_ips(obj)
    assert str(ips[Family.V4]) == "127.0.0.1"
    assert str(ips[Family.V6]) == "::1"
