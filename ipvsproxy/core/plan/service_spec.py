"""A Service's JSON read into the few typed fields plan uses.

Every malformed field becomes a problem string and is left out; only a
Service that cannot be served at all gets a ``skip`` reason.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ipvsproxy.core.ipset_catalog import normalise_cidr
from ipvsproxy.core.model import (
    FLAG_PERSISTENT,
    FLAG_SCHED_MH_PORT,
    SCHEDULERS,
    Family,
    IpProtocol,
    ServiceKey,
    family_of,
)
from ipvsproxy.core.plan.fields import as_dict, as_int, as_ip, as_list, as_port, as_protocol, as_str

SCHEDULER_ANNOTATION = "ipvsproxy.io/scheduler"
PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, the API default for ClientIP affinity
MAX_AFFINITY_TIMEOUT = 86400
TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")


class Port(NamedTuple):
    name: str
    protocol: IpProtocol
    port: int
    node_port: int  # 0 = none


@dataclass
class ServiceSpec:
    key: ServiceKey
    type: str = "ClusterIP"
    cluster_ips: dict[Family, str] = field(default_factory=dict)
    ports: list[Port] = field(default_factory=list)
    external_ips: list[str] = field(default_factory=list)
    lb_ips: list[str] = field(default_factory=list)
    # None: no loadBalancerSourceRanges. Otherwise normalised CIDRs (may be empty
    # when every entry was malformed: then nothing is allowed, which is safer).
    source_ranges: list[str] | None = None
    scheduler: str = "rr"
    flags: int = 0
    timeout: int = 0
    external_local: bool = False
    internal_local: bool = False
    health_check_node_port: int = 0
    problems: list[str] = field(default_factory=list)
    skip: str | None = None

    @property
    def external(self) -> bool:
        """Reachable from outside the cluster (kube-proxy's ExternallyAccessible)."""
        return self.type in ("NodePort", "LoadBalancer") or bool(self.external_ips)


def service_key(service: Any) -> ServiceKey:
    meta = as_dict(as_dict(service) and service.get("metadata")) or {}
    return ServiceKey(as_str(meta, "namespace") or "", as_str(meta, "name") or "")


def read_service(service: Any, default_scheduler: str) -> ServiceSpec:
    spec_out = ServiceSpec(key=service_key(service), scheduler=default_scheduler)
    svc = as_dict(service)
    if svc is None:
        spec_out.skip = "the Service is not an object"
        return spec_out
    meta = as_dict(svc.get("metadata")) or {}
    spec = as_dict(svc.get("spec"))
    if spec is None:
        spec_out.skip = "spec is missing or not an object"
        return spec_out
    labels = as_dict(meta.get("labels")) or {}
    if PROXY_NAME_LABEL in labels:
        spec_out.skip = f"labelled {PROXY_NAME_LABEL}={labels[PROXY_NAME_LABEL]!r}: another proxy's"
        return spec_out
    svc_type = spec.get("type") or "ClusterIP"
    if svc_type == "ExternalName":
        spec_out.skip = "type ExternalName"
        return spec_out
    if svc_type not in TYPES:
        spec_out.problems.append(f"unknown type {svc_type!r}, treated as ClusterIP")
        svc_type = "ClusterIP"
    spec_out.type = svc_type
    _read_cluster_ips(spec, spec_out)
    if spec_out.skip:
        return spec_out
    _read_ports(spec, spec_out)
    _read_policies(spec, spec_out)
    _read_scheduler(meta, spec, spec_out)
    spec_out.external_ips = _read_ips(spec.get("externalIPs"), "externalIPs", spec_out.problems)
    if svc_type == "LoadBalancer":
        _read_load_balancer(spec, as_dict(svc.get("status")) or {}, spec_out)
    return spec_out


def _read_cluster_ips(spec: dict[str, Any], out: ServiceSpec) -> None:
    ips = as_list(spec.get("clusterIPs")) or [spec.get("clusterIP")]
    if ips[0] == "None":
        out.skip = "headless (clusterIP None)"
        return
    for text in ips:
        ip = as_ip(text)
        if ip is None:
            out.problems.append(f"bad cluster IP {text!r}")
            continue
        family = family_of(ip)
        if family in out.cluster_ips:
            out.problems.append(f"second {family.k8s_name} cluster IP {ip} ignored")
            continue
        out.cluster_ips[family] = ip
    if not out.cluster_ips:
        out.skip = "no valid cluster IP"


def _read_ports(spec: dict[str, Any], out: ServiceSpec) -> None:
    seen_numbers: set[tuple[int, IpProtocol]] = set()
    seen_names: set[str] = set()
    for raw in as_list(spec.get("ports")):
        port = as_dict(raw)
        if port is None:
            out.problems.append(f"port {raw!r} is not an object")
            continue
        name = port.get("name") or ""
        label = f"port {name!r}" if name else f"port {port.get('port')!r}"
        raw_protocol = port.get("protocol") or "TCP"
        protocol = as_protocol(raw_protocol)
        number = as_port(port.get("port"))
        if not isinstance(name, str):
            out.problems.append(f"{label}: name is not a string")
            continue
        if protocol is None:
            out.problems.append(f"{label}: unknown protocol {raw_protocol!r}")
            continue
        if number is None:
            out.problems.append(f"{label}: port {port.get('port')!r} is not in 1-65535")
            continue
        if (number, protocol) in seen_numbers or name in seen_names:
            out.problems.append(
                f"{label}: duplicate port {number}/{protocol.value} or name, ignored"
            )
            continue
        seen_numbers.add((number, protocol))
        seen_names.add(name)
        node_port = 0
        raw_node_port = port.get("nodePort")
        if out.type in ("NodePort", "LoadBalancer") and raw_node_port not in (None, 0):
            node_port = as_port(raw_node_port) or 0
            if not node_port:
                out.problems.append(f"{label}: bad nodePort {raw_node_port!r}, NodePort skipped")
        out.ports.append(Port(name, protocol, number, node_port))


def _read_policies(spec: dict[str, Any], out: ServiceSpec) -> None:
    out.internal_local = spec.get("internalTrafficPolicy") == "Local"
    # "Local" applies only to a Service reachable from outside; the old name of
    # "Cluster" was "Global".
    out.external_local = spec.get("externalTrafficPolicy") == "Local" and out.external
    if out.type == "LoadBalancer" and out.external_local:
        hc = spec.get("healthCheckNodePort")
        out.health_check_node_port = as_port(hc) or 0
        if not out.health_check_node_port:
            out.problems.append(f"bad healthCheckNodePort {hc!r}")


def _read_scheduler(meta: dict[str, Any], spec: dict[str, Any], out: ServiceSpec) -> None:
    annotations = as_dict(meta.get("annotations")) or {}
    wanted = annotations.get(SCHEDULER_ANNOTATION)
    if wanted is not None:
        if isinstance(wanted, str) and wanted.strip() in SCHEDULERS:
            out.scheduler = wanted.strip()
        else:
            out.problems.append(
                f"annotation {SCHEDULER_ANNOTATION}={wanted!r} is not an IPVS scheduler "
                f"({', '.join(SCHEDULERS)}); using {out.scheduler}"
            )
    if out.scheduler == "mh":
        out.flags |= FLAG_SCHED_MH_PORT  # as kube-proxy: hash on source port too
    if spec.get("sessionAffinity") == "ClientIP":
        out.flags |= FLAG_PERSISTENT
        config = as_dict(spec.get("sessionAffinityConfig")) or {}
        raw = (as_dict(config.get("clientIP")) or {}).get("timeoutSeconds")
        timeout = as_int(raw)
        if raw is None:
            timeout = DEFAULT_AFFINITY_TIMEOUT
        elif timeout is None or not 0 < timeout <= MAX_AFFINITY_TIMEOUT:
            out.problems.append(f"bad sessionAffinity timeoutSeconds {raw!r}, using 10800")
            timeout = DEFAULT_AFFINITY_TIMEOUT
        out.timeout = timeout


def _read_ips(raw: Any, what: str, problems: list[str]) -> list[str]:
    ips: list[str] = []
    for text in as_list(raw):
        ip = as_ip(text)
        if ip is None:
            problems.append(f"bad address {text!r} in {what}")
            continue
        if ip not in ips:
            ips.append(ip)
    return ips


def _read_load_balancer(spec: dict[str, Any], status: dict[str, Any], out: ServiceSpec) -> None:
    ingress = as_list((as_dict(status.get("loadBalancer")) or {}).get("ingress"))
    vips = []
    for raw in ingress:
        entry = as_dict(raw)
        if entry is None or entry.get("ip") in (None, ""):
            continue  # hostname-only ingress: nothing for a proxy to do
        # ipMode Proxy: the load balancer delivers to the node, not to the VIP, so
        # kube-proxy programs nothing for this IP; so do we.
        mode = entry.get("ipMode")
        if mode == "Proxy":
            continue
        if mode not in (None, "VIP"):
            out.problems.append(
                f"load balancer ingress {entry.get('ip')!r}: unknown ipMode {mode!r}"
            )
            continue
        vips.append(entry.get("ip"))
    out.lb_ips = _read_ips(vips, "status.loadBalancer.ingress", out.problems)
    ranges = spec.get("loadBalancerSourceRanges")
    if not as_list(ranges):
        if ranges not in (None, []):
            out.problems.append(f"loadBalancerSourceRanges {ranges!r} is not a list")
        return
    out.source_ranges = []
    for text in as_list(ranges):
        try:
            if not isinstance(text, str) or "%" in text:
                raise ValueError  # "%": an IPv6 zone, which no ipset entry can hold
            cidr = normalise_cidr(text)
        except ValueError:
            out.problems.append(f"bad CIDR {text!r} in loadBalancerSourceRanges")
            continue
        if cidr not in out.source_ranges:
            out.source_ranges.append(cidr)


def covers_everyone(cidr: str) -> bool:
    """0.0.0.0/0 or ::/0: allow-all, which ipset's net types cannot even store."""
    return ipaddress.ip_network(cidr).prefixlen == 0
