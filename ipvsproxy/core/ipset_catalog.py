"""The ipsets of kube-proxy's IPVS mode: names, types, comments and entry syntax.

The one place that knows them. Names, types and comments are kube-proxy's
(pkg/proxy/ipvs/ipset.go), so a node switched over from kube-proxy keeps its
sets. The IPv6 set of each kind is named with ``KUBE-6-`` in place of
``KUBE-`` and cut to ipset's 31-character limit, exactly as kube-proxy does
(``KUBE-6-LOAD-BALANCER-SOURCE-CIDR`` becomes ``KUBE-6-LOAD-BALANCER-SOURCE-CID``).

Entries are written in ``ipset save`` syntax, as the kernel lists them back,
so that desired and observed entries compare equal as strings.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

from ipvsproxy.core.model import Family, IpProtocol

MAX_NAME_LENGTH = 31  # IPSET_MAXNAMELEN - 1
# Every KUBE-* set is the proxy's (cleanup destroys them all); IPv6 names swap this prefix.
OWNED_PREFIX = "KUBE-"
_V6_PREFIX = "KUBE-6-"

# The set types the proxy uses.
HASH_IP = "hash:ip"
HASH_IP_PORT = "hash:ip,port"
HASH_IP_PORT_IP = "hash:ip,port,ip"
HASH_IP_PORT_NET = "hash:ip,port,net"
BITMAP_PORT = "bitmap:port"
TYPES = (HASH_IP, HASH_IP_PORT, HASH_IP_PORT_IP, HASH_IP_PORT_NET, BITMAP_PORT)


class IpsetSpec(NamedTuple):
    name: str
    type: str  # "hash:ip,port", "bitmap:port", ...
    family: Family
    comment: str
    # Entries carry skb info (``skbmark``) for ``-j SET --map-mark``: create with ``skbinfo``.
    skbinfo: bool = False


class SetKind(NamedTuple):
    """One kind of set; ``base`` is its (IPv4) name."""

    base: str
    type: str
    comment: str


LOOP_BACK = SetKind(
    "KUBE-LOOP-BACK",
    HASH_IP_PORT_IP,
    "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
)
CLUSTER_IP = SetKind(
    "KUBE-CLUSTER-IP",
    HASH_IP_PORT,
    "Kubernetes service cluster ip + port for masquerade purpose",
)
EXTERNAL_IP = SetKind(
    "KUBE-EXTERNAL-IP",
    HASH_IP_PORT,
    "Kubernetes service external ip + port for masquerade and filter purpose",
)
EXTERNAL_IP_LOCAL = SetKind(
    "KUBE-EXTERNAL-IP-LOCAL",
    HASH_IP_PORT,
    "Kubernetes service external ip + port with externalTrafficPolicy=local",
)
LOAD_BALANCER = SetKind("KUBE-LOAD-BALANCER", HASH_IP_PORT, "Kubernetes service lb portal")
LOAD_BALANCER_LOCAL = SetKind(
    "KUBE-LOAD-BALANCER-LOCAL",
    HASH_IP_PORT,
    "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
)
LOAD_BALANCER_FW = SetKind(
    "KUBE-LOAD-BALANCER-FW",
    HASH_IP_PORT,
    "Kubernetes service load balancer ip + port for load balancer with sourceRange",
)
LOAD_BALANCER_SOURCE_IP = SetKind(
    "KUBE-LOAD-BALANCER-SOURCE-IP",
    HASH_IP_PORT_IP,
    "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
)
LOAD_BALANCER_SOURCE_CIDR = SetKind(
    "KUBE-LOAD-BALANCER-SOURCE-CIDR",
    HASH_IP_PORT_NET,
    "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
)
NODE_PORT_TCP = SetKind(
    "KUBE-NODE-PORT-TCP", BITMAP_PORT, "Kubernetes nodeport TCP port for masquerade purpose"
)
NODE_PORT_LOCAL_TCP = SetKind(
    "KUBE-NODE-PORT-LOCAL-TCP",
    BITMAP_PORT,
    "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
)
NODE_PORT_UDP = SetKind(
    "KUBE-NODE-PORT-UDP", BITMAP_PORT, "Kubernetes nodeport UDP port for masquerade purpose"
)
NODE_PORT_LOCAL_UDP = SetKind(
    "KUBE-NODE-PORT-LOCAL-UDP",
    BITMAP_PORT,
    "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
)
# SCTP node ports are hash:ip,port (node IP + port), hence kube-proxy's "-HASH" names.
NODE_PORT_SCTP = SetKind(
    "KUBE-NODE-PORT-SCTP-HASH",
    HASH_IP_PORT,
    "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
)
NODE_PORT_LOCAL_SCTP = SetKind(
    "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
    HASH_IP_PORT,
    "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
)
HEALTH_CHECK_NODE_PORT = SetKind(
    "KUBE-HEALTH-CHECK-NODE-PORT", BITMAP_PORT, "Kubernetes health check node port"
)
IPVS_IPS = SetKind("KUBE-IPVS-IPS", HASH_IP, "Addresses on the ipvs interface")
# Not kube-proxy's: #115931, see ipvsproxy.core.fwmark. hash:ip,port created with ``skbinfo``.
EXTERNAL_LOCAL_FWMARK = SetKind(
    "KUBE-EXTERNAL-LOCAL-FWMARK",
    HASH_IP_PORT,
    "Kubernetes service external/lb ip + port with externalTrafficPolicy=local:"
    " firewall mark of in-cluster traffic",
)

ALL_KINDS: tuple[SetKind, ...] = (
    LOOP_BACK,
    CLUSTER_IP,
    EXTERNAL_IP,
    EXTERNAL_IP_LOCAL,
    LOAD_BALANCER,
    LOAD_BALANCER_LOCAL,
    LOAD_BALANCER_FW,
    LOAD_BALANCER_SOURCE_IP,
    LOAD_BALANCER_SOURCE_CIDR,
    NODE_PORT_TCP,
    NODE_PORT_LOCAL_TCP,
    NODE_PORT_UDP,
    NODE_PORT_LOCAL_UDP,
    NODE_PORT_SCTP,
    NODE_PORT_LOCAL_SCTP,
    HEALTH_CHECK_NODE_PORT,
    IPVS_IPS,
    EXTERNAL_LOCAL_FWMARK,
)
# Sets whose entries carry a firewall mark (``skbmark``): created with ``skbinfo``.
MARKED_KINDS = frozenset({EXTERNAL_LOCAL_FWMARK})

NODE_PORT_SETS: dict[IpProtocol, tuple[SetKind, SetKind]] = {
    IpProtocol.TCP: (NODE_PORT_TCP, NODE_PORT_LOCAL_TCP),
    IpProtocol.UDP: (NODE_PORT_UDP, NODE_PORT_LOCAL_UDP),
    IpProtocol.SCTP: (NODE_PORT_SCTP, NODE_PORT_LOCAL_SCTP),
}


def set_name(kind: SetKind, family: Family) -> str:
    """The kernel name of ``kind``'s set for ``family``."""
    if family is Family.V4:
        return kind.base
    return (_V6_PREFIX + kind.base.removeprefix(OWNED_PREFIX))[:MAX_NAME_LENGTH]


def set_spec(kind: SetKind, family: Family) -> IpsetSpec:
    return IpsetSpec(
        name=set_name(kind, family),
        type=kind.type,
        family=family,
        comment=kind.comment,
        skbinfo=kind in MARKED_KINDS,
    )


def all_specs(family: Family) -> list[IpsetSpec]:
    """Every set the proxy keeps for ``family``."""
    return [set_spec(kind, family) for kind in ALL_KINDS]


_BY_NAME: dict[str, tuple[SetKind, Family]] = {
    set_name(kind, family): (kind, family) for kind in ALL_KINDS for family in Family
}


def kind_of(name: str) -> tuple[SetKind, Family] | None:
    """The kind and family of a set name, or None if it is not one of ours."""
    return _BY_NAME.get(name)


# ------------------------------------------------------------------ entries
# Addresses passed in are already normalised (ipvsproxy.core.model.parse_ip).


def ip_entry(address: str) -> str:
    """hash:ip: ``10.96.0.10``."""
    return address


def protocol_text(protocol: IpProtocol) -> str:
    """A protocol as entries spell it: ``tcp``, ``udp``, ``sctp``."""
    return protocol.value.lower()


def ip_port_entry(address: str, protocol: IpProtocol, port: int) -> str:
    """hash:ip,port: ``10.96.0.10,tcp:53``."""
    return f"{address},{protocol_text(protocol)}:{port}"


def ip_port_ip_entry(address: str, protocol: IpProtocol, port: int, address2: str) -> str:
    """hash:ip,port,ip: ``10.244.1.5,tcp:8080,10.244.1.5``."""
    return f"{ip_port_entry(address, protocol, port)},{address2}"


def ip_port_net_entry(address: str, protocol: IpProtocol, port: int, cidr: str) -> str:
    """hash:ip,port,net: ``203.0.113.7,tcp:443,192.0.2.0/24``.

    ``cidr`` as :func:`normalise_cidr` returns it.
    """
    return f"{ip_port_entry(address, protocol, port)},{cidr}"


def marked_entry(address: str, protocol: IpProtocol, port: int, mark: int, mask: int) -> str:
    """hash:ip,port with skbinfo: ``203.0.113.7,tcp:443 skbmark 0x2c05/0x3fff``.

    As ``ipset save`` prints it: the mask left off when it is 0xffffffff, and no
    ``skbmark`` at all for 0x0/0x0 (the kernel keeps that as no mark).
    """
    entry = ip_port_entry(address, protocol, port)
    if mark == 0 and mask == 0:
        return entry
    if mask == 0xFFFFFFFF:
        return f"{entry} skbmark {mark:#x}"
    return f"{entry} skbmark {mark:#x}/{mask:#x}"


def entry_key(entry: str) -> str:
    """An entry without its mark: what the kernel keys it by (a mark is data)."""
    return entry.partition(" skbmark ")[0]


def is_marked_set(name: str) -> bool:
    """Whether set ``name`` holds marked entries (one per key, the mark replaced on add)."""
    found = kind_of(name)
    return found is not None and found[0] in MARKED_KINDS


def entry_mark(entry: str) -> int | None:
    """The mark of a :func:`marked_entry`, or None if it has none (or a malformed one)."""
    _, sep, rest = entry.partition(" skbmark ")
    if not sep:
        return None
    try:
        return int(rest.split("/", 1)[0], 16)
    except ValueError:
        return None


def port_entry(port: int) -> str:
    """bitmap:port: ``30080``."""
    return str(port)


def normalise_cidr(text: str) -> str:
    """A CIDR as ipset lists it: host bits cleared, a host prefix (/32, /128) left off.

    Raises ValueError on anything that is not a CIDR or an address.
    """
    return network_text(ipaddress.ip_network(text.strip(), strict=False))


def network_text(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """A network as ipset lists it: a host prefix (/32, /128) left off."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)
