"""EndpointSlices to endpoints, and which endpoints this node may use.

``index_slices`` reads discovery.k8s.io/v1 EndpointSlices (as JSON dicts)
into endpoints per (family, port name, protocol), de-duplicated across
slices. ``categorize`` is kube-proxy's ``CategorizeEndpoints``
(pkg/proxy/topology.go): ready endpoints, falling back to serving and
terminating ones separately for the cluster and the local set, with
topology hints honoured only when every ready endpoint carries them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from ipvsproxy.core.model import Family, IpProtocol, RealServerKey, family_of
from ipvsproxy.core.plan.fields import (
    as_bool,
    as_dict,
    as_ip,
    as_list,
    as_port,
    as_protocol,
    as_str,
)

PortKey = tuple[Family, str, IpProtocol]
_FAMILIES = {"IPv4": Family.V4, "IPv6": Family.V6}


class Endpoint(NamedTuple):
    address: str
    port: int
    local: bool
    ready: bool
    serving: bool
    terminating: bool
    zone_hints: frozenset[str] = frozenset()
    node_hints: frozenset[str] = frozenset()

    @property
    def key(self) -> RealServerKey:
        return RealServerKey(self.address, self.port)


def index_slices(
    slices: Iterable[Any], node_name: str, problems: list[str]
) -> dict[PortKey, dict[RealServerKey, Endpoint]]:
    """Endpoints of ``slices`` per (family, port name, protocol).

    An ip:port that appears in several slices counts once; a local copy wins,
    as in kube-proxy. Slices are read in name order so the result does not
    depend on the order they arrived in.
    """
    index: dict[PortKey, dict[RealServerKey, Endpoint]] = {}
    usable = [s for s in (as_dict(s) for s in slices) if s is not None]
    usable.sort(key=lambda s: as_str(as_dict(s.get("metadata")) or {}, "name") or "")
    for slice_ in usable:
        _index_slice(slice_, node_name, index, problems)
    return index


def _index_slice(
    slice_: dict[str, Any],
    node_name: str,
    index: dict[PortKey, dict[RealServerKey, Endpoint]],
    problems: list[str],
) -> None:
    name = as_str(as_dict(slice_.get("metadata")) or {}, "name") or "?"
    address_type = slice_.get("addressType")
    if address_type == "FQDN":
        return
    family = _FAMILIES.get(address_type) if isinstance(address_type, str) else None
    if family is None:
        problems.append(f"EndpointSlice {name}: unknown addressType {address_type!r}")
        return
    ports: list[tuple[str, IpProtocol, int]] = []
    for raw in as_list(slice_.get("ports")):
        port = as_dict(raw)
        if port is None:
            problems.append(f"EndpointSlice {name}: a port is not an object")
            continue
        port_name = port.get("name") or ""
        protocol = as_protocol(port.get("protocol") or "TCP")
        number = as_port(port.get("port"))
        if not isinstance(port_name, str) or protocol is None:
            problems.append(f"EndpointSlice {name}: bad port {_short(port)}")
            continue
        if number is None:
            # A missing port means "all ports", which a Service cannot use.
            if port.get("port") is not None:
                problems.append(f"EndpointSlice {name}: bad port number {port.get('port')!r}")
            continue
        ports.append((port_name, protocol, number))
    if not ports:
        return
    first = ports[0][2]
    endpoints = [
        _endpoint(raw, family, node_name, name, problems, first)
        for raw in as_list(slice_.get("endpoints"))
    ]
    for port_name, protocol, number in ports:
        bucket = index.setdefault((family, port_name, protocol), {})
        for parsed in endpoints:
            if parsed is None:
                continue
            # Made with the first port (most slices have one); another port's copy
            # differs in the port alone.
            ep = parsed if parsed.port == number else Endpoint(parsed[0], number, *parsed[2:])
            key = RealServerKey(ep.address, number)
            if ep.local or key not in bucket:
                bucket[key] = ep


def _endpoint(
    raw: Any, family: Family, node_name: str, slice_name: str, problems: list[str], port: int
) -> Endpoint | None:
    ep = as_dict(raw)
    if ep is None:
        problems.append(f"EndpointSlice {slice_name}: an endpoint is not an object")
        return None
    addresses = as_list(ep.get("addresses"))
    if not addresses:
        return None
    # Like kube-proxy, only the first address counts (the API allows exactly one).
    text = addresses[0]
    address = as_ip(text)
    if address is None:
        problems.append(f"EndpointSlice {slice_name}: bad endpoint address {_short(text)}")
        return None
    if address == text:
        # The cache's string itself, not the equal copy parsing made: a plan keeps it.
        address = text
    if family_of(address) is not family:
        problems.append(f"EndpointSlice {slice_name}: {address} is not {family.k8s_name}")
        return None
    conditions = as_dict(ep.get("conditions")) or {}
    # The API's rule: an unknown ready/serving is true, an unknown terminating false.
    ready = as_bool(conditions.get("ready"), True)
    serving = as_bool(conditions.get("serving"), ready)
    terminating = as_bool(conditions.get("terminating"), False)
    node = ep.get("nodeName")
    hints = as_dict(ep.get("hints")) or {}
    return Endpoint(
        address=address,
        port=port,
        local=bool(node_name) and node == node_name,
        ready=ready,
        serving=serving,
        terminating=terminating,
        zone_hints=_hint_names(hints.get("forZones")),
        node_hints=_hint_names(hints.get("forNodes")),
    )


_NO_HINTS: frozenset[str] = frozenset()


def _hint_names(raw: Any) -> frozenset[str]:
    if not raw:
        return _NO_HINTS  # most endpoints have no hints: no new sets for them
    names = set()
    for item in as_list(raw):
        hint = as_dict(item)
        if hint is not None and isinstance(hint.get("name"), str):
            names.add(hint["name"])
    return frozenset(names)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------- categorize


def categorize(
    endpoints: Sequence[Endpoint],
    *,
    uses_cluster: bool,
    uses_local: bool,
    node_name: str,
    zone: str,
) -> tuple[list[Endpoint], list[Endpoint]]:
    """(cluster endpoints, local endpoints) as kube-proxy's CategorizeEndpoints.

    The cluster list is empty unless ``uses_cluster``, the local list empty
    unless ``uses_local``. Each falls back to serving+terminating endpoints
    when it has no ready one; topology hints narrow only the cluster list.
    """
    cluster: list[Endpoint] = []
    local: list[Endpoint] = []
    if uses_cluster:
        mode = _topology_mode(endpoints, node_name, zone)
        cluster = [ep for ep in endpoints if ep.ready and _in_topology(ep, mode, node_name, zone)]
        if not cluster:
            cluster = [ep for ep in endpoints if ep.serving and ep.terminating]
    if uses_local:
        local = [ep for ep in endpoints if ep.local and ep.ready]
        if not local:
            local = [ep for ep in endpoints if ep.local and ep.serving and ep.terminating]
    return cluster, local


def _topology_mode(endpoints: Sequence[Endpoint], node_name: str, zone: str) -> str:
    """ "PreferSameNode", "PreferSameZone" or "" (no topology), from the hints."""
    ready = [ep for ep in endpoints if ep.ready]
    if not ready:
        return ""
    if all(ep.node_hints for ep in ready) and any(node_name in ep.node_hints for ep in ready):
        return "PreferSameNode"
    if all(ep.zone_hints for ep in ready) and any(zone in ep.zone_hints for ep in ready):
        return "PreferSameZone"
    return ""


def _in_topology(ep: Endpoint, mode: str, node_name: str, zone: str) -> bool:
    if mode == "PreferSameNode":
        return node_name in ep.node_hints
    if mode == "PreferSameZone":
        return zone in ep.zone_hints
    return True
