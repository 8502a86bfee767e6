"""This node's primary IPs, as kube-proxy picks them, and ``--nodeport-addresses=primary``
(pure).

kube-proxy reads the Node's ``status.addresses``: InternalIP addresses first, then
ExternalIP ones; the first is the primary IP, and the first after it of the other family
the secondary (``GetNodeHostIPs``). ``--bind-address``, when it is a specific IP, overrides
the IP of its family and makes that family the primary one (``detectNodeIPs``: the flag
names the node's IP and binds nothing). ``primary`` in ``--nodeport-addresses`` becomes
``IPv4/32`` and ``IPv6/128`` of those IPs; a family whose IP is unknown (or loopback) gets
none, and if neither has one the list is empty, which means every local address, as in
kube-proxy. kube-proxy does this once at start (and exits when the IPs change); here it is
re-evaluated whenever the Node changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from ipvsproxy.core.model import Family

PRIMARY = "primary"
IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _family(ip: IP) -> Family:
    return Family.V6 if ip.version == 6 else Family.V4


def node_host_ips(node: Mapping[str, Any] | None) -> list[IP]:
    """The primary IP, then the secondary one if the Node has one of the other family."""
    status = (node or {}).get("status") or {}
    addresses = status.get("addresses") if isinstance(status, Mapping) else None
    found: dict[str, list[IP]] = {"InternalIP": [], "ExternalIP": []}
    for entry in addresses if isinstance(addresses, list) else []:
        if not isinstance(entry, Mapping) or entry.get("type") not in found:
            continue
        try:
            found[str(entry["type"])].append(ipaddress.ip_address(str(entry.get("address"))))
        except ValueError:
            continue  # kube-proxy skips what does not parse
    ordered = found["InternalIP"] + found["ExternalIP"]
    if not ordered:
        return []
    other = next((ip for ip in ordered if ip.version != ordered[0].version), None)
    return [ordered[0]] if other is None else [ordered[0], other]


def primary_ips(node: Mapping[str, Any] | None, bind_address: str = "") -> dict[Family, IP]:
    """Per family, the IP kube-proxy takes for this node (``detectNodeIPs``), loopback
    where it knows none."""
    ips: dict[Family, IP] = {
        Family.V4: ipaddress.ip_address("127.0.0.1"),
        Family.V6: ipaddress.ip_address("::1"),
    }
    for ip in node_host_ips(node):
        ips[_family(ip)] = ip
    try:
        hint = ipaddress.ip_address(bind_address.strip())
    except ValueError:
        hint = None
    if hint is not None and not hint.is_unspecified:
        ips[_family(hint)] = hint
    return ips


def nodeport_addresses(
    configured: tuple[str, ...], node: Mapping[str, Any] | None, bind_address: str = ""
) -> tuple[str, ...]:
    """``configured`` with ``primary`` resolved into the node's primary IPs as CIDRs."""
    if configured != (PRIMARY,):
        return configured
    ips = primary_ips(node, bind_address)
    return tuple(
        f"{ips[family]}/{ips[family].max_prefixlen}"
        for family in (Family.V4, Family.V6)
        if not ips[family].is_loopback
    )
