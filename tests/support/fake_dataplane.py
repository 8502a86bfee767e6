"""The dataplane of in-memory fakes, wired as the proxy wires the real one.

The fakes pass the same contract suites as the real subsystems (tests/contract), which
is what lets the reconciler's and the runtime's tests trust them. Any subsystem can be
replaced by the caller's own (a fake with other settings, or a benchmark's variant).
"""

from __future__ import annotations

from collections.abc import Sequence

from ipvsproxy.dataplane.executor import Dataplane
from ipvsproxy.dataplane.fake_ipvs import FakeIpvs
from ipvsproxy.dataplane.fakes import (
    FakeAddresses,
    FakeConntrack,
    FakeIpsets,
    FakeIptables,
    FakeNftables,
    FakeSysctls,
)
from ipvsproxy.dataplane.interfaces import (
    Addresses,
    Conntrack,
    Ipsets,
    Iptables,
    Ipvs,
    Nftables,
    Sysctls,
)
from tests.support.builders import NODE_V4

NODE_ADDRESSES = ("127.0.0.1", NODE_V4)


def fake_dataplane(
    *,
    ipvs: Ipvs | None = None,
    addresses: Addresses | None = None,
    ipsets: Ipsets | None = None,
    iptables: Iptables | None = None,
    conntrack: Conntrack | None = None,
    sysctls: Sysctls | None = None,
    nftables: Nftables | None = None,
    node_addresses: Sequence[str] = NODE_ADDRESSES,
) -> Dataplane:
    """Fakes for every subsystem not given; the node has ``node_addresses``."""
    return Dataplane(
        ipvs=ipvs or FakeIpvs(),
        addresses=addresses or FakeAddresses(node_addresses=tuple(node_addresses)),
        ipsets=ipsets or FakeIpsets(),
        iptables=iptables or FakeIptables(),
        conntrack=conntrack or FakeConntrack(),
        sysctls=sysctls or FakeSysctls(),
        nftables=nftables or FakeNftables(),
    )
