"""Which traffic comes from this cluster's pods: kube-proxy's local-traffic detector (pure).

``--detect-local-mode`` says how pod traffic is told from the rest, per family:

- ``ClusterCIDR``: the source is in ``--cluster-cidr`` (the default; without a cluster
  CIDR for a family, that family has no detector);
- ``NodeCIDR``: the source is in the Node's ``spec.podCIDRs``, for CNIs whose pods have
  no single cluster-wide CIDR; the Node may get them after the proxy starts;
- ``BridgeInterface``: the packet came in on ``--pod-bridge-interface`` (e.g. cbr0);
- ``InterfaceNamePrefix``: it came in on an interface named ``--pod-interface-name-prefix``
  followed by anything (e.g. veth, cali), for CNIs with one link per pod.

As kube-proxy's ``getLocalDetectors``: only the first CIDR of each family counts, and an
interface detector serves both families. The decision feeds two constant rules: the
masquerade of traffic to ClusterIPs from outside the pods, and the stamp that sends pods'
traffic to an externalTrafficPolicy Local IP to every endpoint (``fwmark``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ipvsproxy.core.model import Family

CLUSTER_CIDR = "ClusterCIDR"
NODE_CIDR = "NodeCIDR"
BRIDGE_INTERFACE = "BridgeInterface"
INTERFACE_NAME_PREFIX = "InterfaceNamePrefix"
MODES = (CLUSTER_CIDR, NODE_CIDR, BRIDGE_INTERFACE, INTERFACE_NAME_PREFIX)


class LocalDetector(NamedTuple):
    """How one family's pod traffic is recognised: by its source (``source``, a CIDR) or
    by the interface it came in on (``interface``: a name, or a prefix ending in ``+``,
    iptables' wildcard)."""

    source: str = ""
    interface: str = ""


def _first_per_family(cidrs: Iterable[str]) -> dict[Family, str]:
    found: dict[Family, str] = {}
    for text in cidrs:
        try:
            net = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            continue  # config validation reports a bad --cluster-cidr; a Node's is skipped
        found.setdefault(Family.V6 if net.version == 6 else Family.V4, str(net))
    return found


def local_detectors(
    mode: str,
    *,
    cluster_cidrs: Iterable[str] = (),
    pod_cidrs: Iterable[str] = (),
    bridge_interface: str = "",
    interface_name_prefix: str = "",
) -> dict[Family, LocalDetector]:
    """The detector of each family that has one (a family missing has none: its pod
    traffic cannot be told, as kube-proxy's no-op detector)."""
    if mode in (CLUSTER_CIDR, NODE_CIDR):
        cidrs = cluster_cidrs if mode == CLUSTER_CIDR else pod_cidrs
        return {f: LocalDetector(source=c) for f, c in _first_per_family(cidrs).items()}
    if mode == BRIDGE_INTERFACE and bridge_interface:
        return dict.fromkeys(Family, LocalDetector(interface=bridge_interface))
    if mode == INTERFACE_NAME_PREFIX and interface_name_prefix:
        return dict.fromkeys(Family, LocalDetector(interface=interface_name_prefix + "+"))
    return {}


def node_pod_cidrs(node: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The Node's ``spec.podCIDRs`` (or the older single ``spec.podCIDR``), as strings."""
    spec = (node or {}).get("spec") or {}
    if not isinstance(spec, Mapping):
        return ()
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    if not isinstance(cidrs, list):
        return ()
    return tuple(str(c) for c in cidrs if isinstance(c, str))
