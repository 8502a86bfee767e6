"""Dataplane state as values: what plan wants and what the kernel holds.

``DataplaneState`` is both sides of ``diff``: a plan's desired state
(connection counters all zero) and the observed, owned part of the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ipvsproxy.model import (
    RealServerKey,
    RealServerStatus,
    ServiceKey,
    VirtualServer,
    VirtualServerKey,
)

RealServers = Mapping[RealServerKey, RealServerStatus]


@dataclass(frozen=True, slots=True)
class DataplaneState:
    """Virtual servers, their real servers, addresses on kube-ipvs0, ipset entries.

    ``real_servers`` has a (possibly empty) entry for every virtual server and
    no other keys. ``ipsets`` maps a set name to its entries; a set with no
    entries may be left out (diff treats missing and empty alike).
    """

    virtual_servers: Mapping[VirtualServerKey, VirtualServer] = field(default_factory=dict)
    real_servers: Mapping[VirtualServerKey, RealServers] = field(default_factory=dict)
    bound: frozenset[str] = frozenset()
    ipsets: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def entries(self, name: str) -> frozenset[str]:
        return self.ipsets.get(name, frozenset())

    def servers_of(self, key: VirtualServerKey) -> RealServers:
        return self.real_servers.get(key, {})


def union(states: Iterable[DataplaneState]) -> DataplaneState:
    """Merge the states of several services (a full resync's desired state).

    Addresses and ipset entries are unions. A virtual server claimed by two
    states (two Services on one externalIP:port, which the API server allows)
    keeps the first claim with its real servers; the caller should report it.
    """
    virtual: dict[VirtualServerKey, VirtualServer] = {}
    real: dict[VirtualServerKey, RealServers] = {}
    bound: set[str] = set()
    sets: dict[str, set[str]] = {}
    for state in states:
        for key, vs in state.virtual_servers.items():
            if key not in virtual:
                virtual[key] = vs
                real[key] = state.servers_of(key)
        bound |= state.bound
        for name, entries in state.ipsets.items():
            sets.setdefault(name, set()).update(entries)
    return DataplaneState(
        virtual_servers=virtual,
        real_servers=real,
        bound=frozenset(bound),
        ipsets={name: frozenset(entries) for name, entries in sets.items()},
    )


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """What one Service asks of this node.

    ``skip`` is set when the whole Service is ignored (headless, ExternalName,
    another proxy's, unusable cluster IP); everything else is then empty.
    ``problems`` are reasons for the parts that were left out (a bad port, a
    bad external IP, ...): log them and turn them into Events.
    """

    service: ServiceKey
    state: DataplaneState = field(default_factory=DataplaneState)
    # spec.healthCheckNodePort for a LoadBalancer with externalTrafficPolicy Local; else 0.
    health_check_node_port: int = 0
    # Ready endpoints on this node (distinct ip:port over all ports), for the health check.
    local_endpoints: int = 0
    # A Local traffic policy with no endpoint on this node, as kube-proxy's
    # sync_proxy_rules_no_local_endpoints_total{traffic_policy="internal"|"external"} counts.
    no_local_internal: bool = False
    no_local_external: bool = False
    problems: tuple[str, ...] = ()
    skip: str | None = None
