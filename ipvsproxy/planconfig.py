"""What plan needs to know about this node and the proxy's flags."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from ipvsproxy.model import Family, family_of


def _is_host_only(address: str) -> bool:
    """Loopback and IPv6 link-local addresses: never a NodePort address or a family's proof."""
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.is_link_local)


@dataclass(frozen=True)
class PlanConfig:
    """Node facts and flags for plan.

    ``node_addresses``: the local addresses minus kube-ipvs0's, per family, as
    normalised strings (``Addresses.node_addresses()`` split by family).
    ``nodeport_addresses``: ``--nodeport-addresses`` CIDRs; empty means every
    node address. Loopback (and IPv6 link-local) addresses never carry
    NodePorts: kube-proxy excludes loopback only with the flag set, but a
    NodePort on 127.0.0.1 needs route_localnet (CVE-2020-8558) and one on
    fe80:: is ambiguous without a zone.
    ``families``: the families this proxy serves; None means every family in
    which the node has an address other than loopback or link-local.
    ``cluster_cidrs`` and ``masquerade_all`` do not change the plan; they are
    here so the whole node configuration travels as one value.
    """

    node_name: str
    node_addresses: Mapping[Family, frozenset[str]] = field(default_factory=dict)
    nodeport_addresses: tuple[str, ...] = ()
    scheduler: str = "rr"
    cluster_cidrs: tuple[str, ...] = ()
    masquerade_all: bool = False
    families: frozenset[Family] | None = None

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
