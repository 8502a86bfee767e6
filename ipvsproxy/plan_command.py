"""``ipvsproxy plan``: read manifests, plan for one node, print the result.

Reading files is the only I/O here; planning (``ipvsproxy.core.plan.service``) and
formatting (``ipvsproxy.core.ipvsadm_text``) are pure.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from ipvsproxy.config import Config
from ipvsproxy.core.ipvsadm_text import format_plan
from ipvsproxy.core.local_traffic import local_detectors, node_pod_cidrs
from ipvsproxy.core.model import Family, family_of, parse_ip
from ipvsproxy.core.node_ips import nodeport_addresses
from ipvsproxy.core.plan.config import PlanConfig
from ipvsproxy.core.plan.service import plan_service
from ipvsproxy.core.state import union
from ipvsproxy.logging import get_logger

log = get_logger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class ManifestError(ValueError):
    """A file that cannot be read or is not YAML (one line, names the file)."""


@dataclass
class Manifests:
    """The objects ``plan`` uses, as plain API dicts; everything else is counted and skipped."""

    services: list[dict[str, Any]] = field(default_factory=list)
    endpoint_slices: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def _flatten(doc: Any) -> Iterable[Any]:
    # "kind: List" is what `kubectl get -o yaml` writes for several objects.
    if isinstance(doc, Mapping) and doc.get("kind") == "List":
        for item in doc.get("items") or []:
            yield from _flatten(item)
    elif doc is not None:
        yield doc


def parse_manifests(texts: Mapping[str, str]) -> Manifests:
    """Sort the documents of several YAML texts (``{name: text}``) by kind."""
    out = Manifests()
    for name, text in texts.items():
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ManifestError(f"-f {name}:{where}: not valid YAML: {problem}") from None
        for doc in (d for top in docs for d in _flatten(top)):
            kind = doc.get("kind") if isinstance(doc, Mapping) else None
            if kind == "Service":
                out.services.append(doc)
            elif kind == "EndpointSlice":
                out.endpoint_slices.append(doc)
            elif kind == "Node":
                out.nodes.append(doc)
            else:
                out.skipped += 1
                log.warning("document skipped", file=name, kind=kind, reason="not used by plan")
    return out


def read_files(paths: Iterable[str]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in paths:
        try:
            if path == "-":
                texts[path] = sys.stdin.read()
            else:
                with open(path, encoding="utf-8") as f:
                    texts[path] = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ManifestError(f"-f {path}: cannot read: {reason}") from None
    return texts


def pick_node(nodes: list[dict[str, Any]], name: str | None) -> dict[str, Any] | None:
    """The Node to plan for: by name, or the only one given; None if there are none."""
    if name is not None:
        for node in nodes:
            if (node.get("metadata") or {}).get("name") == name:
                return node
        raise ManifestError(f"--node {name}: no Node of that name in the files")
    if len(nodes) > 1:
        raise ManifestError("--node: several Nodes in the files; name one")
    return nodes[0] if nodes else None


def node_addresses(node: Mapping[str, Any] | None) -> dict[Family, frozenset[str]]:
    """The Node's InternalIP and ExternalIP addresses by family (a stand-in for the
    local addresses the running proxy reads from the kernel)."""
    found: dict[Family, set[str]] = {}
    status = (node or {}).get("status") or {}
    for entry in status.get("addresses") or []:
        if not isinstance(entry, Mapping) or entry.get("type") not in ("InternalIP", "ExternalIP"):
            continue
        try:
            address = parse_ip(str(entry.get("address")))
        except ValueError:
            log.warning("node address skipped", address=entry.get("address"), reason="not an IP")
            continue
        found.setdefault(family_of(address), set()).add(address)
    return {family: frozenset(addresses) for family, addresses in found.items()}


def plan_text(manifests: Manifests, node: Mapping[str, Any] | None, config: Config) -> str:
    """Plan every Service for the node and format the result (pure but for warnings)."""
    name = ((node or {}).get("metadata") or {}).get("name") or config.hostname_override or ""
    addresses = node_addresses(node)
    local = local_detectors(
        config.detect_local_mode,
        cluster_cidrs=config.cluster_cidrs,
        pod_cidrs=node_pod_cidrs(node),
        bridge_interface=config.detect_local_bridge_interface,
        interface_name_prefix=config.detect_local_interface_name_prefix,
    )
    plan_config = PlanConfig(
        node_name=str(name),
        node_addresses=addresses,
        nodeport_addresses=nodeport_addresses(config.nodeport_addresses, node, config.bind_address),
        scheduler=config.ipvs_scheduler,
        cluster_cidrs=config.cluster_cidrs,
        masquerade_all=config.masquerade_all,
        # Without a Node there is nothing to tell the families from: serve both.
        families=None if addresses else frozenset(Family),
        pod_families=frozenset(local),
    )
    slices: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for eps in manifests.endpoint_slices:
        meta = eps.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        slices.setdefault((str(meta.get("namespace") or ""), str(owner)), []).append(eps)
    plans = []
    for service in manifests.services:
        meta = service.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        result = plan_service(service, slices.get(key, []), node, plan_config)
        for problem in result.problems:
            log.warning("service problem", service=str(result.service), reason=problem)
        if result.skip:
            log.warning("service skipped", service=str(result.service), reason=result.skip)
        plans.append(result.state)
    state = union(plans)
    return format_plan(
        state.virtual_servers.values(), state.real_servers, state.bound, state.ipsets
    )


def run_plan(files: Iterable[str], node_name: str | None, config: Config) -> int:
    """The ``plan`` command; returns the exit code."""
    try:
        manifests = parse_manifests(read_files(files))
        node = pick_node(manifests.nodes, node_name)
    except ManifestError as exc:
        print(f"ipvsproxy: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(plan_text(manifests, node, config))
    return 0
