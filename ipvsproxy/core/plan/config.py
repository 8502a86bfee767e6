"""What plan needs to know about this node and the proxy's flags."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from ipvsproxy.core.model import Family, family_of


def _is_host_only(address: str) -> bool:
    """Loopback and IPv6 link-local addresses: never a NodePort address or a family's proof."""
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.is_link_local)


def _normalised_addresses(raw: Mapping[Family, Iterable[str]]) -> dict[Family, frozenset[str]]:
    """``node_addresses`` with each address normalised (``2001:DB8::A`` -> ``2001:db8::a``,
    an IPv6 zone dropped) and under its own family; ValueError naming the field on
    anything that is not an address."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"PlanConfig.node_addresses: not a mapping: {raw!r}")
    found: dict[Family, set[str]] = {}
    for family, addresses in raw.items():
        if not isinstance(family, Family):
            raise ValueError(f"PlanConfig.node_addresses: key {family!r} is not a Family")
        found.setdefault(family, set())
        if isinstance(addresses, str | bytes):
            raise ValueError(
                f"PlanConfig.node_addresses[{family.name}]: a string, not a set: {addresses!r}"
            )
        for text in addresses:
            try:
                if not isinstance(text, str):
                    raise ValueError
                ip = ipaddress.ip_address(text.strip().split("%", 1)[0])
            except ValueError:
                raise ValueError(
                    f"PlanConfig.node_addresses[{family.name}]: {text!r} is not an IP address"
                ) from None
            address = str(ip)
            found.setdefault(family_of(address), set()).add(address)
    return {family: frozenset(addresses) for family, addresses in found.items()}


@dataclass(frozen=True)
class PlanConfig:
    """Node facts and flags for plan.

    ``node_addresses``: the local addresses minus kube-ipvs0's, per family
    (``Addresses.node_addresses()`` split by family). The constructor
    normalises them (and files each under its own family), and raises
    ValueError naming the field on one that is not an address, so plan never
    sees a bad one. ``nodeport_addresses`` must be strings; one that is not a
    CIDR matches nothing (config validation reports it).
    ``nodeport_addresses``: ``--nodeport-addresses`` CIDRs; empty means every
    node address. Loopback (and IPv6 link-local) addresses never carry
    NodePorts: kube-proxy excludes loopback only with the flag set, but a
    NodePort on 127.0.0.1 needs route_localnet (CVE-2020-8558) and one on
    fe80:: is ambiguous without a zone.
    ``families``: the families this proxy serves; None means every family in
    which the node has an address other than loopback or link-local.
    ``cluster_cidrs``: the pod CIDRs; a family with one has its pods' traffic
    to externalTrafficPolicy Local addresses recognised (``ipvsproxy.core.fwmark``).
    ``pod_families``: the families whose pods' traffic is recognised, where the
    local-traffic detector is not the cluster CIDR (``core.local_traffic``); None
    means those of ``cluster_cidrs``.
    ``masquerade_all`` does not change the plan; it is here so the whole node
    configuration travels as one value.
    """

    node_name: str
    node_addresses: Mapping[Family, frozenset[str]] = field(default_factory=dict)
    nodeport_addresses: tuple[str, ...] = ()
    scheduler: str = "rr"
    cluster_cidrs: tuple[str, ...] = ()
    masquerade_all: bool = False
    families: frozenset[Family] | None = None
    pod_families: frozenset[Family] | None = None

    def __post_init__(self) -> None:
        # Normalised here, once: plan compares these strings with the
        # normalised addresses of Services, and an unparseable one would make
        # every plan fail (served_families parses them).
        object.__setattr__(self, "node_addresses", _normalised_addresses(self.node_addresses))
        nodeport = tuple(self.nodeport_addresses)
        if not all(isinstance(text, str) for text in nodeport):
            raise ValueError(f"PlanConfig.nodeport_addresses: not all strings: {nodeport!r}")
        object.__setattr__(self, "nodeport_addresses", nodeport)
        if self.families is not None:
            families = frozenset(self.families)
            if not all(isinstance(f, Family) for f in families):
                raise ValueError(f"PlanConfig.families: not all Family values: {families!r}")
            object.__setattr__(self, "families", families)

    @cached_property
    def served_families(self) -> frozenset[Family]:
        if self.families is not None:
            return self.families
        return frozenset(
            family
            for family, addresses in self.node_addresses.items()
            if any(not _is_host_only(a) for a in addresses)
        )

    @cached_property
    def pod_traffic_families(self) -> frozenset[Family]:
        """The families whose pod traffic the mangle rules can tell."""
        if self.pod_families is not None:
            return frozenset(self.pod_families)
        found = set()
        for text in self.cluster_cidrs:
            try:
                net = ipaddress.ip_network(text.strip(), strict=False)
            except (ValueError, AttributeError):
                continue  # config validation reports it; the rules refuse it
            found.add(Family.V6 if net.version == 6 else Family.V4)
        return frozenset(found)

    @cached_property
    def all_node_addresses(self) -> frozenset[str]:
        return frozenset(a for addresses in self.node_addresses.values() for a in addresses)

    @cached_property
    def nodeport_ips(self) -> dict[Family, tuple[str, ...]]:
        """Per family, the sorted addresses that get a virtual server for each NodePort."""
        networks = []
        for text in self.nodeport_addresses:
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                continue  # config validation reports it; here it matches nothing
        result: dict[Family, tuple[str, ...]] = {}
        for family, addresses in self.node_addresses.items():
            chosen = []
            for address in addresses:
                if _is_host_only(address) or family_of(address) is not family:
                    continue
                ip = ipaddress.ip_address(address)
                if self.nodeport_addresses and not any(ip in net for net in networks):
                    continue
                chosen.append(address)
            result[family] = tuple(sorted(chosen))
        return result

    @cached_property
    def global_node_addresses(
        self,
    ) -> dict[Family, tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]]:
        """Node addresses other than loopback/link-local: a source range covering one lets the
        node itself reach a LoadBalancer IP (kube-proxy's allowFromNode)."""
        return {
            family: tuple(
                ipaddress.ip_address(a) for a in sorted(addresses) if not _is_host_only(a)
            )
            for family, addresses in self.node_addresses.items()
        }
