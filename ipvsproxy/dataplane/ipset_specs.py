"""The KUBE-* ipsets of kube-proxy's IPVS mode, and the syntax of their entries (pure).

Names, types and comments are kube-proxy's (``pkg/proxy/ipvs/ipset.go``, ``ipsetInfo`` in
``proxier.go``), so a node switched from kube-proxy keeps its sets and an operator's
``ipset list`` reads the same. IPv6 sets are named as kube-proxy names them: the ``KUBE-``
prefix becomes ``KUBE-6-`` and the name is cut to ipset's 31 characters
(``KUBE-6-LOAD-BALANCER-SOURCE-CID``).

Entries are kept in the exact text ``ipset save`` prints, so that a desired entry compares
equal to one read back from the kernel: addresses compressed, a net masked to its prefix
and printed without ``/32`` or ``/128``, ports numeric, protocols lower case.
"""

from __future__ import annotations

import ipaddress

from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.interfaces import IpsetSpec
from ipvsproxy.model import Family

MAX_NAME = 31  # IPSET_MAXNAMELEN - 1
OWNED_PREFIX = "KUBE-"

HASH_IP = "hash:ip"
HASH_IP_PORT = "hash:ip,port"
HASH_IP_PORT_IP = "hash:ip,port,ip"
HASH_IP_PORT_NET = "hash:ip,port,net"
BITMAP_PORT = "bitmap:port"
TYPES = (HASH_IP, HASH_IP_PORT, HASH_IP_PORT_IP, HASH_IP_PORT_NET, BITMAP_PORT)

LOOP_BACK = "KUBE-LOOP-BACK"
CLUSTER_IP = "KUBE-CLUSTER-IP"
EXTERNAL_IP = "KUBE-EXTERNAL-IP"
EXTERNAL_IP_LOCAL = "KUBE-EXTERNAL-IP-LOCAL"
LOAD_BALANCER = "KUBE-LOAD-BALANCER"
LOAD_BALANCER_FW = "KUBE-LOAD-BALANCER-FW"
LOAD_BALANCER_LOCAL = "KUBE-LOAD-BALANCER-LOCAL"
LOAD_BALANCER_SOURCE_IP = "KUBE-LOAD-BALANCER-SOURCE-IP"
LOAD_BALANCER_SOURCE_CIDR = "KUBE-LOAD-BALANCER-SOURCE-CIDR"
NODE_PORT_TCP = "KUBE-NODE-PORT-TCP"
NODE_PORT_LOCAL_TCP = "KUBE-NODE-PORT-LOCAL-TCP"
NODE_PORT_UDP = "KUBE-NODE-PORT-UDP"
NODE_PORT_LOCAL_UDP = "KUBE-NODE-PORT-LOCAL-UDP"
NODE_PORT_SCTP = "KUBE-NODE-PORT-SCTP-HASH"
NODE_PORT_LOCAL_SCTP = "KUBE-NODE-PORT-LOCAL-SCTP-HASH"
HEALTH_CHECK_NODE_PORT = "KUBE-HEALTH-CHECK-NODE-PORT"
IPVS_IPS = "KUBE-IPVS-IPS"

# (base name, type, comment) in kube-proxy's order.
_INFO: tuple[tuple[str, str, str], ...] = (
    (
        LOOP_BACK,
        HASH_IP_PORT_IP,
        "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose",
    ),
    (CLUSTER_IP, HASH_IP_PORT, "Kubernetes service cluster ip + port for masquerade purpose"),
    (
        EXTERNAL_IP,
        HASH_IP_PORT,
        "Kubernetes service external ip + port for masquerade and filter purpose",
    ),
    (
        EXTERNAL_IP_LOCAL,
        HASH_IP_PORT,
        "Kubernetes service external ip + port with externalTrafficPolicy=local",
    ),
    (LOAD_BALANCER, HASH_IP_PORT, "Kubernetes service lb portal"),
    (
        LOAD_BALANCER_FW,
        HASH_IP_PORT,
        "Kubernetes service load balancer ip + port for load balancer with sourceRange",
    ),
    (
        LOAD_BALANCER_LOCAL,
        HASH_IP_PORT,
        "Kubernetes service load balancer ip + port with externalTrafficPolicy=local",
    ),
    (
        LOAD_BALANCER_SOURCE_IP,
        HASH_IP_PORT_IP,
        "Kubernetes service load balancer ip + port + source IP for packet filter purpose",
    ),
    (
        LOAD_BALANCER_SOURCE_CIDR,
        HASH_IP_PORT_NET,
        "Kubernetes service load balancer ip + port + source cidr for packet filter purpose",
    ),
    (NODE_PORT_TCP, BITMAP_PORT, "Kubernetes nodeport TCP port for masquerade purpose"),
    (
        NODE_PORT_LOCAL_TCP,
        BITMAP_PORT,
        "Kubernetes nodeport TCP port with externalTrafficPolicy=local",
    ),
    (NODE_PORT_UDP, BITMAP_PORT, "Kubernetes nodeport UDP port for masquerade purpose"),
    (
        NODE_PORT_LOCAL_UDP,
        BITMAP_PORT,
        "Kubernetes nodeport UDP port with externalTrafficPolicy=local",
    ),
    (
        NODE_PORT_SCTP,
        HASH_IP_PORT,
        "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'",
    ),
    (
        NODE_PORT_LOCAL_SCTP,
        HASH_IP_PORT,
        "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'",
    ),
    (HEALTH_CHECK_NODE_PORT, BITMAP_PORT, "Kubernetes health check node port"),
    (IPVS_IPS, HASH_IP, "Addresses on the ipvs interface"),
)

_PROTOCOLS = ("tcp", "udp", "sctp")


def set_name(base: str, family: Family) -> str:
    """kube-proxy's name of set ``base`` for ``family`` (``KUBE-6-...`` for IPv6, cut to 31)."""
    if family is Family.V6 and base.startswith(OWNED_PREFIX):
        return ("KUBE-6-" + base[len(OWNED_PREFIX) :])[:MAX_NAME]
    return base


def ipset_specs(family: Family) -> list[IpsetSpec]:
    """Every KUBE-* set the IPVS proxy uses for ``family``, in kube-proxy's order."""
    return [
        IpsetSpec(set_name(base, family), kind, family, comment) for base, kind, comment in _INFO
    ]


def is_owned(name: str) -> bool:
    return name.startswith(OWNED_PREFIX)


def create_line(spec: IpsetSpec) -> str:
    """The ``ipset restore`` line creating ``spec`` (the options kube-proxy uses)."""
    if spec.type not in TYPES:
        raise InvalidValueError("ipset type", spec.type, f"expected one of {', '.join(TYPES)}")
    if len(spec.name) > MAX_NAME or not spec.name:
        raise InvalidValueError("ipset name", spec.name, "1 to 31 characters")
    if spec.type == BITMAP_PORT:
        return f"create {spec.name} {spec.type} range 0-65535 comment"
    inet = "inet6" if spec.family is Family.V6 else "inet"
    return f"create {spec.name} {spec.type} family {inet} hashsize 1024 maxelem 65536 comment"


def _ip(text: str, family: Family, field: str) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise InvalidValueError(field, text, "not an IP address") from None
    if addr.version != (6 if family is Family.V6 else 4):
        raise InvalidValueError(field, text, f"not an {family.k8s_name} address")
    return str(addr)


def _net(text: str, family: Family) -> str:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidValueError("ipset entry net", text, "not a CIDR") from None
    if net.version != (6 if family is Family.V6 else 4):
        raise InvalidValueError("ipset entry net", text, f"not an {family.k8s_name} CIDR")
    if net.prefixlen == 0:
        raise InvalidValueError("ipset entry net", text, "prefix length 0 is not allowed")
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def _port(text: str) -> str:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidValueError("ipset entry port", text, "expected 1-65535")
    return str(int(text))


def _proto_port(text: str) -> str:
    proto, sep, port = text.partition(":")
    if not sep or proto.lower() not in _PROTOCOLS:
        raise InvalidValueError("ipset entry protocol:port", text, "expected tcp|udp|sctp:PORT")
    return f"{proto.lower()}:{_port(port)}"


def normalize_entry(kind: str, family: Family, entry: str) -> str:
    """``entry`` in the exact form ``ipset save`` prints it, or InvalidValueError."""
    if kind == BITMAP_PORT:
        return _port(entry.strip())
    parts = entry.strip().split(",")
    arity = {HASH_IP: 1, HASH_IP_PORT: 2, HASH_IP_PORT_IP: 3, HASH_IP_PORT_NET: 3}.get(kind)
    if arity is None:
        raise InvalidValueError("ipset type", kind)
    if len(parts) != arity:
        raise InvalidValueError("ipset entry", entry, f"wrong shape for {kind}")
    out = [_ip(parts[0], family, "ipset entry address")]
    if arity >= 2:
        out.append(_proto_port(parts[1]))
    if kind == HASH_IP_PORT_IP:
        out.append(_ip(parts[2], family, "ipset entry address"))
    elif kind == HASH_IP_PORT_NET:
        out.append(_net(parts[2], family))
    return ",".join(out)
