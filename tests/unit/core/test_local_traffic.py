"""kube-proxy's local-traffic detectors, per mode and family (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from ipvsproxy.core.local_traffic import LocalDetector, local_detectors, node_pod_cidrs
from ipvsproxy.core.model import Family
from tests.support.builders import node

V4, V6 = Family.V4, Family.V6
DUAL = ("10.244.0.0/16", "fd00:10:244::/56")


@pytest.mark.parametrize(
    ("mode", "options", "expected"),
    [
        ("ClusterCIDR", {"cluster_cidrs": DUAL},
         {V4: LocalDetector("10.244.0.0/16"), V6: LocalDetector("fd00:10:244::/56")}),
        # Only the first CIDR of a family counts, as in kube-proxy; host bits are dropped.
        ("ClusterCIDR", {"cluster_cidrs": ("10.244.1.7/16", "10.8.0.0/16")},
         {V4: LocalDetector("10.244.0.0/16")}),
        ("ClusterCIDR", {}, {}),  # no cluster CIDR: no detector (kube-proxy's no-op)
        ("ClusterCIDR", {"pod_cidrs": DUAL}, {}),  # the Node's CIDRs are NodeCIDR's
        ("NodeCIDR", {"pod_cidrs": ("10.244.3.0/24",), "cluster_cidrs": DUAL},
         {V4: LocalDetector("10.244.3.0/24")}),
        ("NodeCIDR", {"pod_cidrs": ("junk", "fd00:10:244:3::/64")},
         {V6: LocalDetector("fd00:10:244:3::/64")}),
        ("NodeCIDR", {}, {}),  # a Node without pod CIDRs yet
        ("BridgeInterface", {"bridge_interface": "cbr0"},
         {V4: LocalDetector(interface="cbr0"), V6: LocalDetector(interface="cbr0")}),
        ("InterfaceNamePrefix", {"interface_name_prefix": "cali"},
         {V4: LocalDetector(interface="cali+"), V6: LocalDetector(interface="cali+")}),
        ("InterfaceNamePrefix", {"bridge_interface": "cbr0"}, {}),
        ("NoSuchMode", {"cluster_cidrs": DUAL}, {}),
    ],
)  # fmt: skip
def test_detectors(mode: str, options: dict[str, Any], expected: dict[Family, Any]) -> None:
    assert local_detectors(mode, **options) == expected


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (node(pod_cidrs=list(DUAL)), DUAL),
        ({"spec": {"podCIDR": "10.244.3.0/24"}}, ("10.244.3.0/24",)),
        (node(), ()),
        (None, ()),
        ({"spec": "garbage"}, ()),
        ({"spec": {"podCIDRs": "10.0.0.0/8"}}, ()),
        ({"spec": {"podCIDRs": ["10.0.0.0/8", 7]}}, ("10.0.0.0/8",)),
    ],
)
def test_node_pod_cidrs(obj: Any, expected: tuple[str, ...]) -> None:
    assert node_pod_cidrs(obj) == expected
