"""Plan: one Service, its EndpointSlices, this Node and the config -> desired state.

Pure: values in, values out, no I/O, no clock; it never raises. Where a Service
field becomes a kernel object:

- every port x every cluster IP of a family this node serves: a virtual server,
  its address bound to kube-ipvs0, ``ip,proto:port`` in KUBE-CLUSTER-IP;
- ``externalIPs`` and ``status.loadBalancer.ingress`` IPs (ipMode VIP): virtual
  servers, bound unless the address is the node's own, in KUBE-EXTERNAL-IP or
  KUBE-LOAD-BALANCER (the -LOCAL set instead of / as well, for
  externalTrafficPolicy Local); ``loadBalancerSourceRanges`` fill
  KUBE-LOAD-BALANCER-FW and -SOURCE-CIDR, and -SOURCE-IP when a range covers
  the node so the node can still reach the IP (#119656);
- ``nodePort``: a virtual server on each NodePort address, the port in
  KUBE-NODE-PORT-{TCP,UDP} (bitmap) or ``ip,sctp:port`` in the SCTP set;
- local endpoints: ``ip,proto:port,ip`` in KUBE-LOOP-BACK (hairpin SNAT);
- bound addresses: KUBE-IPVS-IPS; ``healthCheckNodePort``: its set.

Real servers: ready endpoints (else serving+terminating), narrowed by topology
hints, from ``ipvsproxy.core.plan.endpoints.categorize``. internalTrafficPolicy Local:
the cluster IP gets only local endpoints (none: no real servers, so traffic is
refused, as the API documents). externalTrafficPolicy Local: external virtual
servers (NodePort, external IPs, LB IPs) get only local endpoints.

In-cluster traffic to an externalTrafficPolicy Local LB IP or external IP
(#115931): besides its address virtual server (local endpoints), each such
``ip,proto:port`` gets a firewall-mark virtual server with every cluster
endpoint and an entry mapping it to that mark in KUBE-EXTERNAL-LOCAL-FWMARK;
mangle rules mark packets from the cluster CIDR and the node, and IPVS prefers
the mark (``ipvsproxy.core.fwmark``). Where pods cannot be told apart (no cluster
CIDR of the family) and for NodePorts, which get no mark, a node without local
endpoints gives the external virtual server every endpoint instead, as
kube-proxy does (PR #97081), so that its pods can still use the address.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable
from typing import Any

from ipvsproxy.core import fwmark
from ipvsproxy.core import ipset_catalog as sets
from ipvsproxy.core.model import (
    Family,
    RealServerKey,
    VirtualServer,
    VirtualServerKey,
    fwmark_key,
)
from ipvsproxy.core.plan.config import PlanConfig
from ipvsproxy.core.plan.endpoints import Endpoint, categorize, index_slices
from ipvsproxy.core.plan.fields import as_dict
from ipvsproxy.core.plan.service_spec import (
    Port,
    ServiceSpec,
    covers_everyone,
    read_service,
    service_key,
)
from ipvsproxy.core.state import (
    DataplaneState,
    EntrySets,
    RealServers,
    ServicePlan,
    planned_servers,
)

ZONE_LABEL = "topology.kubernetes.io/zone"


def plan_service(service: Any, slices: Iterable[Any], node: Any, config: PlanConfig) -> ServicePlan:
    """Plan one Service. Never raises: a bug shows up as ``skip``, not as a crash."""
    try:
        return _plan(service, _slice_list(slices), node, config)
    except Exception as err:  # plan must never stop the proxy
        return ServicePlan(service_key(service), skip=f"internal error while planning: {err!r}")


def _slice_list(slices: Any) -> list[Any]:
    """Any iterable of slices as a list; a string, a mapping or a non-iterable as none."""
    if slices is None or isinstance(slices, str | bytes | dict):
        return []
    try:
        return list(slices)
    except TypeError:
        return []


def _plan(service: Any, slices: list[Any], node: Any, config: PlanConfig) -> ServicePlan:
    spec = read_service(service, config.scheduler)
    if spec.skip:
        return ServicePlan(spec.key, problems=tuple(spec.problems), skip=spec.skip)
    families = [
        f for f in (Family.V4, Family.V6) if f in spec.cluster_ips and f in config.served_families
    ]
    if not families:
        have = ", ".join(f.k8s_name for f in spec.cluster_ips)
        return ServicePlan(
            spec.key,
            problems=tuple(spec.problems),
            skip=f"this node serves none of the Service's IP families ({have})",
        )
    labels = as_dict((as_dict(as_dict(node) and node.get("metadata")) or {}).get("labels")) or {}
    zone = labels.get(ZONE_LABEL)
    builder = _Builder(spec, config, zone if isinstance(zone, str) else "")
    index = index_slices(slices, config.node_name, builder.problems)
    local_ready: set[RealServerKey] = set()
    no_local: set[Family] = set()
    for family in families:
        ready_here = len(local_ready)
        for port in spec.ports:
            eps = index.get((family, port.name, port.protocol), {})
            endpoints = [eps[k] for k in sorted(eps)]
            builder.add_port(family, port, endpoints)
            local_ready.update(ep.key for ep in endpoints if ep.local and ep.ready)
        builder.finish_family(family)
        if len(local_ready) == ready_here:
            no_local.add(family)
    return ServicePlan(
        spec.key,
        state=builder.state(),
        health_check_node_port=spec.health_check_node_port,
        local_endpoints=len(local_ready),
        no_local_internal=family_set(no_local if spec.internal_local else ()),
        no_local_external=family_set(no_local if spec.external_local else ()),
        problems=tuple(builder.problems),
        families=family_set(families),
    )


# The four sets of families a plan can hold, shared by every plan: a frozenset costs 216
# bytes, and a plan keeps three for its life (at 10,000 Services, 6 MB of copies).
_FAMILY_SETS = {
    members: members
    for members in map(frozenset, ((), (Family.V4,), (Family.V6,), (Family.V4, Family.V6)))
}


def family_set(families: Iterable[Family]) -> frozenset[Family]:
    """``frozenset(families)``, shared with every equal one."""
    members = frozenset(families)
    return _FAMILY_SETS.get(members, members)


class _Builder:
    def __init__(self, spec: ServiceSpec, config: PlanConfig, zone: str) -> None:
        self.spec = spec
        self.config = config
        self.zone = zone
        self.problems = list(spec.problems)
        self.virtual: dict[VirtualServerKey, VirtualServer] = {}
        self.real: dict[VirtualServerKey, RealServers] = {}
        self.bound: set[str] = set()
        self.sets: dict[str, set[str]] = {}
        self.marks: set[tuple[Family, int]] = set()  # a mark is per family, as in IPVS

    def state(self) -> DataplaneState:
        return DataplaneState(
            virtual_servers=self.virtual,
            real_servers=self.real,
            bound=frozenset(self.bound),
            ipsets=EntrySets(self.sets),
        )

    def add_port(self, family: Family, port: Port, endpoints: list[Endpoint]) -> None:
        spec = self.spec
        uses_local = spec.internal_local or spec.external_local
        # In-cluster traffic to an ETP Local LB IP or external IP reaches every endpoint.
        marked = spec.external_local and bool(spec.external_ips or spec.lb_ips)
        uses_cluster = (
            not spec.internal_local or (spec.external and not spec.external_local) or marked
        )
        cluster, local = categorize(
            endpoints,
            uses_cluster=uses_cluster,
            uses_local=uses_local,
            node_name=self.config.node_name,
            zone=self.zone,
        )
        internal_eps = local if spec.internal_local else cluster
        external_eps = (local or cluster) if spec.external_local else cluster
        # One read-only table per endpoint list, shared by every virtual server using it.
        internal = planned_servers(ep.key for ep in internal_eps)
        if external_eps is internal_eps:
            external = internal
        else:
            external = planned_servers(ep.key for ep in external_eps)
        proto = port.protocol
        everyone = addressed = external
        if marked:
            if external_eps is not cluster:
                everyone = planned_servers(ep.key for ep in cluster)
            if not local and family in self.config.pod_traffic_families:
                # Pods and the node take the mark's virtual server: no fallback needed,
                # external clients get only local endpoints, here none.
                addressed = planned_servers(())

        cip = spec.cluster_ips[family]
        if self._server(cip, port.port, port, internal):
            self.bound.add(cip)
            self._entry(sets.CLUSTER_IP, family, sets.ip_port_entry(cip, proto, port.port))

        for ip in spec.external_ips:
            if self._family_server(ip, family, port, addressed):
                kind = sets.EXTERNAL_IP_LOCAL if spec.external_local else sets.EXTERNAL_IP
                self._entry(kind, family, sets.ip_port_entry(ip, proto, port.port))
                if marked:
                    self._in_cluster_server(ip, family, port, everyone)

        for ip in spec.lb_ips:
            if self._family_server(ip, family, port, addressed):
                self._load_balancer_entries(ip, family, port)
                if marked:
                    self._in_cluster_server(ip, family, port, everyone)

        nodeport_ips = self.config.nodeport_ips.get(family, ())
        if port.node_port and nodeport_ips:
            plain, local_kind = sets.NODE_PORT_SETS[proto]
            for ip in nodeport_ips:
                self._server(ip, port.node_port, port, external)
                if plain.type == "bitmap:port":
                    entry = sets.port_entry(port.node_port)
                else:
                    entry = sets.ip_port_entry(ip, proto, port.node_port)
                self._entry(plain, family, entry)
                if spec.external_local:
                    self._entry(local_kind, family, entry)

        for ep in endpoints:
            if ep.local:
                entry = sets.ip_port_ip_entry(ep.address, proto, ep.port, ep.address)
                self._entry(sets.LOOP_BACK, family, entry)

    def finish_family(self, family: Family) -> None:
        for address in self.bound:
            if (":" in address) == (family is Family.V6):
                self._entry(sets.IPVS_IPS, family, sets.ip_entry(address))
        if self.spec.health_check_node_port:
            entry = sets.port_entry(self.spec.health_check_node_port)
            self._entry(sets.HEALTH_CHECK_NODE_PORT, family, entry)

    def _family_server(self, ip: str, family: Family, port: Port, servers: RealServers) -> bool:
        """An external IP's or LB IP's virtual server, bound unless the node owns the address."""
        if (":" in ip) != (family is Family.V6):
            return False
        if not self._server(ip, port.port, port, servers):
            return False
        if ip not in self.config.all_node_addresses:
            self.bound.add(ip)
        return True

    def _in_cluster_server(self, ip: str, family: Family, port: Port, servers: RealServers) -> None:
        """The firewall-mark virtual server that in-cluster clients of ``ip`` use instead."""
        mark = fwmark.mark_for(ip, port.protocol, port.port)
        if (family, mark) in self.marks:
            self.problems.append(
                f"{port.protocol.value} {ip}:{port.port}: its firewall mark {mark:#x} is"
                " taken by another port of this Service; in-cluster clients reach only"
                " this node's endpoints"
            )
            return
        self.marks.add((family, mark))
        self._add_server(fwmark_key(family, mark, port.protocol), servers)
        entry = sets.marked_entry(ip, port.protocol, port.port, fwmark.stamp(mark), fwmark.MASK)
        self._entry(sets.EXTERNAL_LOCAL_FWMARK, family, entry)

    def _server(self, address: str, number: int, port: Port, servers: RealServers) -> bool:
        key = VirtualServerKey(address, number, port.protocol)
        if key in self.virtual:
            self.problems.append(f"{key} is claimed twice by this Service; the first claim kept")
            return False
        self._add_server(key, servers)
        return True

    def _add_server(self, key: VirtualServerKey, servers: RealServers) -> None:
        spec = self.spec
        self.virtual[key] = VirtualServer(key, spec.scheduler, spec.flags, spec.timeout)
        self.real[key] = servers

    def _load_balancer_entries(self, ip: str, family: Family, port: Port) -> None:
        spec, proto = self.spec, port.protocol
        entry = sets.ip_port_entry(ip, proto, port.port)
        self._entry(sets.LOAD_BALANCER, family, entry)
        if spec.external_local:
            self._entry(sets.LOAD_BALANCER_LOCAL, family, entry)
        if spec.source_ranges is None:
            return
        ranges = [c for c in spec.source_ranges if (":" in c) == (family is Family.V6)]
        if any(covers_everyone(c) for c in ranges):
            return  # allow-all: no firewall for this family
        # Ranges of the other family only: nothing of this family is allowed.
        self._entry(sets.LOAD_BALANCER_FW, family, entry)
        node_ips = self.config.global_node_addresses.get(family, ())
        allow_node = False
        for cidr in ranges:
            self._entry(
                sets.LOAD_BALANCER_SOURCE_CIDR,
                family,
                sets.ip_port_net_entry(ip, proto, port.port, cidr),
            )
            net = ipaddress.ip_network(cidr)
            allow_node = allow_node or any(a in net for a in node_ips)
        if allow_node:
            # Node-originated packets to a VIP on kube-ipvs0 carry the VIP as source.
            self._entry(
                sets.LOAD_BALANCER_SOURCE_IP,
                family,
                sets.ip_port_ip_entry(ip, proto, port.port, ip),
            )

    def _entry(self, kind: sets.SetKind, family: Family, entry: str) -> None:
        # Interned: an IPv6 set's name is built anew on each call.
        self.sets.setdefault(sys.intern(sets.set_name(kind, family)), set()).add(entry)
