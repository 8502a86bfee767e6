"""The iptables rules of the IPVS proxy, as ``iptables-restore`` text (pure).

The chains and rules are kube-proxy IPVS mode's (``writeIptablesRules`` and
``iptablesJumpChain`` in ``pkg/proxy/ipvs/proxier.go``), with two differences:

- Every rule is written whether or not its set is empty, so the text depends only on the
  config: the rule count never grows with the number of services (matching is by ipset).
- KUBE-IPVS-OUT-FILTER (#119656, load balancer source ranges for node-originated traffic)
  needs no rule per service. kube-proxy writes one ``-m ipvs --vaddr`` rule per load balancer
  because IPVS has already rewritten the destination when filter OUTPUT sees the packet.
  Here nat KUBE-SERVICES, which sees the original destination of a connection's first
  packet, marks node-originated traffic to ``KUBE-LOAD-BALANCER-FW`` that no source-range
  set allows, and KUBE-IPVS-OUT-FILTER drops packets with that mark. A dropped first packet
  never confirms its conntrack entry, so every retry passes nat again and is dropped again.
  Node access is allowed the way kube-proxy allows it: an ``lbIP,proto:port,lbIP`` entry in
  KUBE-LOAD-BALANCER-SOURCE-IP (node traffic to a local VIP leaves with the VIP as source).

- externalTrafficPolicy Local (#115931): mangle KUBE-IN-CLUSTER-FWMARK, from PREROUTING and
  OUTPUT, stamps the mark of ``KUBE-EXTERNAL-LOCAL-FWMARK`` (``--map-mark``, which only the
  mangle table allows) on packets from the pods (the local-traffic detector: a source CIDR
  or an input interface) or the node to an LB IP or external IP of such a Service. The
  stamp carries the PENDING bit (``ipvsproxy.core.fwmark``), and nat KUBE-SERVICES clears
  it on a connection's first packet, so that IPVS (whose LOCAL_IN
  and LOCAL_OUT hooks come after nat PREROUTING and OUTPUT, and which needs the mark only to
  schedule a connection) hands it to a firewall-mark virtual server with every endpoint.
  Node-originated ones leave with the VIP as source and are masqueraded, recognised by the
  mark's flag bit: kube-proxy's masquerade mark cannot be used, IPVS matches marks exactly.
  The clearing and the masquerade live in chains kube-proxy's IPVS mode owns and rewrites
  on every sync (KUBE-SERVICES, KUBE-POSTROUTING): on a node handed back to kube-proxy, its
  first sync removes them, the stamps keep their PENDING bit and match no firewall-mark
  virtual server, and IPVS takes its address virtual server, as kube-proxy means it to.

Our chains are declared (``:KUBE-X - [0:0]``), which flushes them, and rewritten whole.
What lies outside them (jumps from the built-in chains, other modes' leftovers) comes as
fixups computed from ``iptables-save`` (``iptables_fixups``), placed in each table's block
after the declarations.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

from ipvsproxy.core import fwmark
from ipvsproxy.core import ipset_catalog as S
from ipvsproxy.core.local_traffic import LocalDetector
from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.errors import InvalidValueError

NAT_CHAINS = (
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-NODE-PORT",
    "KUBE-LOAD-BALANCER",
    "KUBE-MARK-MASQ",
)
FILTER_CHAINS = (
    "KUBE-FORWARD",
    "KUBE-NODE-PORT",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SOURCE-RANGES-FIREWALL",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
)
MANGLE_CHAINS = ("KUBE-IN-CLUSTER-FWMARK",)
# The chains this proxy owns, per table. Only these (and iptables_fixups' leftovers) are
# ever flushed or deleted: other KUBE-* chains (kubelet's KUBE-FIREWALL,
# KUBE-KUBELET-CANARY, ...) belong to others.
OWNED_CHAINS: Mapping[str, tuple[str, ...]] = {
    "nat": NAT_CHAINS,
    "filter": FILTER_CHAINS,
    "mangle": MANGLE_CHAINS,
}
RULE_TABLES = tuple(OWNED_CHAINS)
BUILTIN_CHAINS: Mapping[str, tuple[str, ...]] = {
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}


class Jump(NamedTuple):
    table: str
    chain: str  # a built-in chain
    target: str  # one of ours
    comment: str

    @property
    def spec(self) -> str:
        return f'-m comment --comment "{self.comment}" -j {self.target}'


JUMPS = (
    Jump("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals"),
    Jump("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals"),
    Jump("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules"),
    Jump("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules"),
    Jump("filter", "INPUT", "KUBE-NODE-PORT", "kubernetes health check rules"),
    Jump("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
    Jump("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kube-proxy firewall rules"),
    Jump("filter", "INPUT", "KUBE-IPVS-FILTER", "kubernetes ipvs access filter"),
    Jump("filter", "OUTPUT", "KUBE-IPVS-OUT-FILTER", "kubernetes ipvs access filter"),
    Jump("mangle", "PREROUTING", "KUBE-IN-CLUSTER-FWMARK", "kubernetes in-cluster fwmark"),
    Jump("mangle", "OUTPUT", "KUBE-IN-CLUSTER-FWMARK", "kubernetes in-cluster fwmark"),
)


class RulesConfig(NamedTuple):
    masquerade_all: bool = False
    # --detect-local-mode's detector per family (ipvsproxy.core.local_traffic): traffic to
    # a ClusterIP that it does not recognise as the pods' is masqueraded, and pods' traffic
    # to an ETP Local IP is stamped. A family without one masquerades node-originated
    # traffic only, and stamps only the node's. Either way a constant number of rules.
    local: Mapping[Family, LocalDetector] = MappingProxyType({})
    masquerade_bit: int = 14  # kube-proxy's --iptables-masquerade-bit: mark 0x4000
    # The mark of node-originated traffic to a source-ranged load balancer (see above).
    no_node_access_bit: int = 15
    random_fully: bool = True  # MASQUERADE --random-fully (iptables >= 1.6.2)


def _mark(bit: int, field: str) -> str:
    if not 0 <= bit <= 31:
        raise InvalidValueError(field, bit, "expected 0-31")
    return f"{1 << bit:#x}"


# An interface name as iptables' -i takes it (IFNAMSIZ), or a prefix with its "+".
_INTERFACE = re.compile(r"^[^\s/\\\"'!+]{1,15}\+?$")


def _local(config: RulesConfig, family: Family) -> LocalDetector | None:
    """The family's detector, checked: a bad one must fail here, not break the restore."""
    detector = config.local.get(family)
    if detector is None:
        return None
    if detector.source:
        try:
            net = ipaddress.ip_network(detector.source, strict=False)
        except ValueError:
            raise InvalidValueError("local traffic cidr", detector.source, "not a CIDR") from None
        if net.version != (6 if family is Family.V6 else 4):
            raise InvalidValueError("local traffic cidr", detector.source, f"not {family.name}")
        return LocalDetector(source=str(net))
    if not _INTERFACE.match(detector.interface) or len(detector.interface) > 15:
        raise InvalidValueError("local traffic interface", detector.interface)
    return detector


def _if_local(detector: LocalDetector) -> str:
    return f"-s {detector.source}" if detector.source else f"-i {detector.interface}"


def _set_rule(
    chain: str, kind: S.SetKind, family: Family, flags: str, target: str, proto: str = ""
) -> str:
    p = f" -p {proto}" if proto else ""
    return (
        f'-A {chain}{p} -m comment --comment "{kind.comment}" '
        f"-m set --match-set {S.set_name(kind, family)} {flags} -j {target}"
    )


def _nat_rules(config: RulesConfig, family: Family) -> list[str]:
    masq = _mark(config.masquerade_bit, "masquerade bit")
    lo = "::1/128" if family is Family.V6 else "127.0.0.0/8"
    r = [f"-A KUBE-SERVICES -s {lo} -j RETURN"]
    # An in-cluster fwmark stamp becomes the firewall-mark virtual server's mark (see above).
    stamped = f"{fwmark.FLAG | fwmark.PENDING:#x}"
    r.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes in-cluster fwmark"'
        f" -m mark --mark {stamped}/{stamped} -j MARK --xor-mark {fwmark.PENDING:#x}"
    )
    r.append(_set_rule("KUBE-POSTROUTING", S.LOOP_BACK, family, "dst,dst,src", "MASQUERADE"))
    r.append(_set_rule("KUBE-SERVICES", S.LOAD_BALANCER, family, "dst,dst", "KUBE-LOAD-BALANCER"))
    r.append(_set_rule("KUBE-LOAD-BALANCER", S.LOAD_BALANCER_LOCAL, family, "dst,dst", "RETURN"))
    for proto, local, every, flags in (
        ("tcp", S.NODE_PORT_LOCAL_TCP, S.NODE_PORT_TCP, "dst"),
        ("udp", S.NODE_PORT_LOCAL_UDP, S.NODE_PORT_UDP, "dst"),
        ("sctp", S.NODE_PORT_LOCAL_SCTP, S.NODE_PORT_SCTP, "dst,dst"),
    ):
        r.append(_set_rule("KUBE-NODE-PORT", local, family, flags, "RETURN", proto))
        r.append(_set_rule("KUBE-NODE-PORT", every, family, flags, "KUBE-MARK-MASQ", proto))
    cluster = _set_rule("KUBE-SERVICES", S.CLUSTER_IP, family, "dst,dst", "KUBE-MARK-MASQ")
    detector = _local(config, family)
    if config.masquerade_all:
        r.append(cluster)
    elif detector:
        r.append(
            cluster.replace(" -j KUBE-MARK-MASQ", f" ! {_if_local(detector)} -j KUBE-MARK-MASQ")
        )
    else:
        # Node-originated traffic leaves with a VIP as source (all VIPs are local on kube-ipvs0).
        r.append(cluster.replace(" dst,dst ", " src,dst "))
    for kind in (S.EXTERNAL_IP, S.EXTERNAL_IP_LOCAL):
        head = _set_rule("KUBE-SERVICES", kind, family, "dst,dst", "X").removesuffix(" -j X")
        if kind == S.EXTERNAL_IP:
            r.append(f"{head} -j KUBE-MARK-MASQ")
        # From off the machine (not a bridge, not a local process), or to a local address.
        r.append(f"{head} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT")
        r.append(f"{head} -m addrtype --dst-type LOCAL -j ACCEPT")
    r.append(
        "-A KUBE-SERVICES -m addrtype --src-type LOCAL"
        f" -m set --match-set {S.set_name(S.LOAD_BALANCER_FW, family)} dst,dst"
        f" -m set ! --match-set {S.set_name(S.LOAD_BALANCER_SOURCE_CIDR, family)} dst,dst,src"
        f" -m set ! --match-set {S.set_name(S.LOAD_BALANCER_SOURCE_IP, family)} dst,dst,src"
        f" -j MARK --or-mark {_mark(config.no_node_access_bit, 'no node access bit')}"
    )
    r.append("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT")
    r.append("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ")
    fully = " --random-fully" if config.random_fully else ""
    # Accept what IPVS will take, in case a later rule of someone else's would drop it.
    for kind in (S.CLUSTER_IP, S.LOAD_BALANCER):
        name = S.set_name(kind, family)
        r.append(f"-A KUBE-SERVICES -m set --match-set {name} dst,dst -j ACCEPT")
    flag = f"{fwmark.FLAG:#x}"
    r.append(
        '-A KUBE-POSTROUTING -m comment --comment "node traffic to an in-cluster fwmark"'
        f" -m mark --mark {flag}/{flag} -m addrtype --src-type LOCAL -j MASQUERADE{fully}"
    )
    r.append(f"-A KUBE-POSTROUTING -m mark ! --mark {masq}/{masq} -j RETURN")
    # Clear the mark so a packet that re-traverses the stack is not masqueraded twice.
    r.append(f"-A KUBE-POSTROUTING -j MARK --xor-mark {masq}")
    r.append(
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring'
        f' SNAT" -j MASQUERADE{fully}'
    )
    r.append(f"-A KUBE-MARK-MASQ -j MARK --or-mark {masq}")
    return r


def _filter_rules(config: RulesConfig, family: Family) -> list[str]:
    masq = _mark(config.masquerade_bit, "masquerade bit")
    drop = _mark(config.no_node_access_bit, "no node access bit")
    r = [
        _set_rule(
            "KUBE-PROXY-FIREWALL",
            S.LOAD_BALANCER_FW,
            family,
            "dst,dst",
            "KUBE-SOURCE-RANGES-FIREWALL",
        ),
        _set_rule(
            "KUBE-SOURCE-RANGES-FIREWALL",
            S.LOAD_BALANCER_SOURCE_CIDR,
            family,
            "dst,dst,src",
            "RETURN",
        ),
        _set_rule(
            "KUBE-SOURCE-RANGES-FIREWALL",
            S.LOAD_BALANCER_SOURCE_IP,
            family,
            "dst,dst,src",
            "RETURN",
        ),
        "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP",
        f"-A KUBE-IPVS-OUT-FILTER -m mark --mark {drop}/{drop} -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules"'
        f" -m mark --mark {masq}/{masq} -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule"'
        " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        _set_rule("KUBE-NODE-PORT", S.HEALTH_CHECK_NODE_PORT, family, "dst", "ACCEPT"),
    ]
    # #72236: a VIP on kube-ipvs0 must not expose the node's own ports; only service ports.
    for kind, flags in (
        (S.LOAD_BALANCER, "dst,dst"),
        (S.CLUSTER_IP, "dst,dst"),
        (S.EXTERNAL_IP, "dst,dst"),
        (S.EXTERNAL_IP_LOCAL, "dst,dst"),
        (S.HEALTH_CHECK_NODE_PORT, "dst"),
    ):
        r.append(
            f"-A KUBE-IPVS-FILTER -m set --match-set {S.set_name(kind, family)} {flags} -j RETURN"
        )
    r.append(
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW"
        f" -m set --match-set {S.set_name(S.IPVS_IPS, family)} dst -j REJECT"
    )
    return r


def _mangle_rules(config: RulesConfig, family: Family) -> list[str]:
    marks = S.set_name(S.EXTERNAL_LOCAL_FWMARK, family)
    stamp = f"-m set --match-set {marks} dst,dst -j SET --map-set {marks} dst,dst --map-mark"
    r = [f"-A KUBE-IN-CLUSTER-FWMARK -m addrtype --src-type LOCAL {stamp}"]
    detector = _local(config, family)
    if detector:
        # In OUTPUT a packet has no input interface: node traffic is the rule above's.
        r.append(f"-A KUBE-IN-CLUSTER-FWMARK {_if_local(detector)} {stamp}")
    return r


def build_restore(
    config: RulesConfig, family: Family, fixups: Mapping[str, Sequence[str]] | None = None
) -> str:
    """The whole ``iptables-restore --noflush`` input for ``family``.

    ``fixups``: per table, ``iptables_fixups.table_fixups`` over a fresh save of it; None
    (or a table left out) means "known right": a previous restore of this process put
    our jumps there and removed the leftovers, which lets a sync skip the saves.
    """
    out: list[str] = []
    for table, chains, rules in (
        ("nat", NAT_CHAINS, _nat_rules(config, family)),
        ("filter", FILTER_CHAINS, _filter_rules(config, family)),
        ("mangle", MANGLE_CHAINS, _mangle_rules(config, family)),
    ):
        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in chains]
        out += (fixups or {}).get(table, ())
        out += rules
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def rule_count(text: str) -> int:
    """Rules (``-A``) in restore text: the figure that must not grow with services."""
    return sum(1 for line in text.splitlines() if line.startswith("-A "))
