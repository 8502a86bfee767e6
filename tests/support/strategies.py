"""Hypothesis strategies, and the plan settings the plan tests share.

Strategies make both objects the API server would accept (through
``tests.support.builders``) and arbitrary JSON-ish junk, and dataplane states for
the diff properties.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ipvsproxy.core import fwmark
from ipvsproxy.core.apply import InvalidOp, apply_ops
from ipvsproxy.core.model import (
    FLAG_PERSISTENT,
    Family,
    IpProtocol,
    RealServer,
    RealServerKey,
    RealServerStatus,
    VirtualServer,
    VirtualServerKey,
    fwmark_key,
)
from ipvsproxy.core.ops import (
    AddIpsetEntries,
    AddRealServer,
    AddVirtualServer,
    BindAddresses,
    DeleteIpsetEntries,
    DeleteRealServer,
    DeleteVirtualServer,
    Op,
    UnbindAddresses,
    UpdateRealServer,
    UpdateVirtualServer,
)
from ipvsproxy.core.plan.config import PlanConfig
from ipvsproxy.core.state import DataplaneState
from tests.support.builders import (
    NODE,
    NODE_V4,
    NODE_V6,
    endpoint,
    endpoint_slice,
    port,
    service,
)

CONFIG = PlanConfig(
    NODE,
    {
        Family.V4: frozenset({NODE_V4, "127.0.0.1"}),
        Family.V6: frozenset({NODE_V6, "::1", "fe80::1"}),
    },
)
V4_ONLY = PlanConfig(
    NODE, {Family.V4: frozenset({NODE_V4, "127.0.0.1"}), Family.V6: frozenset({"::1"})}
)

# ---------------------------------------------------------- valid objects

v4 = st.builds(
    lambda a, b: f"10.{a}.{b}.{(a + b) % 250 + 1}", st.integers(0, 255), st.integers(0, 255)
)
v6 = st.builds(lambda a: f"fd00::{a:x}", st.integers(1, 0xFFFF))
protocols = st.sampled_from(["TCP", "UDP", "SCTP"])
port_names = st.sampled_from(["", "http", "dns", "metrics"])


@st.composite
def valid_services(draw: st.DrawFn) -> dict[str, Any]:
    svc_type = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
    families = draw(st.sampled_from([("v4",), ("v6",), ("v4", "v6"), ("v6", "v4")]))
    ips = tuple(draw(v4 if f == "v4" else v6) for f in families)
    names = draw(st.lists(port_names, min_size=1, max_size=3, unique=True))
    ports = []
    used = set()
    for name in names:
        number = draw(st.integers(1, 65535))
        proto = draw(protocols)
        if (number, proto) in used:
            continue
        used.add((number, proto))
        node_port = draw(st.integers(30000, 32767)) if svc_type != "ClusterIP" else None
        ports.append(port(number, name if len(names) > 1 else "", proto, node_port))
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["externalIPs"] = draw(st.lists(st.one_of(v4, v6), max_size=2, unique=True))
    if draw(st.booleans()):
        extra["sessionAffinity"] = "ClientIP"
        extra["sessionAffinityConfig"] = {
            "clientIP": {"timeoutSeconds": draw(st.integers(1, 86400))}
        }
    if svc_type != "ClusterIP":
        extra["externalTrafficPolicy"] = draw(st.sampled_from(["Cluster", "Local"]))
        if extra["externalTrafficPolicy"] == "Local" and svc_type == "LoadBalancer":
            extra["healthCheckNodePort"] = draw(st.integers(30000, 32767))
    extra["internalTrafficPolicy"] = draw(st.sampled_from(["Cluster", "Local"]))
    ingress = []
    if svc_type == "LoadBalancer":
        for ip in draw(st.lists(st.one_of(v4, v6), max_size=2, unique=True)):
            ingress.append({"ip": ip, "ipMode": draw(st.sampled_from(["VIP", "Proxy"]))})
        if draw(st.booleans()):
            extra["loadBalancerSourceRanges"] = draw(
                st.lists(
                    st.sampled_from(["10.0.0.0/8", "192.168.1.0/24", "0.0.0.0/0", "fd00::/8"]),
                    max_size=3,
                )
            )
    annotations = {}
    if draw(st.booleans()):
        annotations["ipvsproxy.io/scheduler"] = draw(st.sampled_from(["rr", "lc", "mh", "sh"]))
    return service(
        type=svc_type,
        cluster_ips=ips,
        ports=ports,
        annotations=annotations,
        lb_ingress=ingress,
        **extra,
    )


@st.composite
def valid_slices(draw: st.DrawFn) -> dict[str, Any]:
    family = draw(st.sampled_from(["IPv4", "IPv6"]))
    addresses = draw(st.lists(v4 if family == "IPv4" else v6, max_size=4, unique=True))
    optional_bool = st.one_of(st.none(), st.booleans())
    eps = [
        endpoint(
            a,
            draw(st.sampled_from([NODE, "node-b"])),
            ready=draw(optional_bool),
            serving=draw(optional_bool),
            terminating=draw(optional_bool),
            zones=draw(st.one_of(st.none(), st.lists(st.sampled_from(["z1", "z2"]), max_size=2))),
            nodes=draw(
                st.one_of(st.none(), st.lists(st.sampled_from([NODE, "node-b"]), max_size=2))
            ),
        )
        for a in addresses
    ]
    ports = draw(st.lists(st.tuples(port_names, st.integers(1, 65535), protocols), max_size=3))
    return endpoint_slice(
        eps, ports, name=draw(st.sampled_from(["s1", "s2", "s3"])), address_type=family
    )


# ------------------------------------------------------------------- junk

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**33), 2**33),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "None",
            "",
            "TCP",
            "UDP",
            "SCTP",
            "ICMP",
            "10.0.0.1",
            "::1",
            "10.0.0.0/8",
            "Local",
            "ClientIP",
            "LoadBalancer",
            "NodePort",
            "IPv4",
            "IPv6",
            "VIP",
            "fe80::1%eth0",
            "fe80::/10",
            "10.0.0.1/32",
            "::ffff:10.0.0.1",
            " 10.0.0.0/8",
        ]
    ),
)
# Keys plan reads, so that junk reaches deep fields (a random text key
# never spells "spec" or "protocol").
json_keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            "metadata",
            "name",
            "labels",
            "annotations",
            "spec",
            "status",
            "type",
            "clusterIP",
            "clusterIPs",
            "ports",
            "port",
            "protocol",
            "nodePort",
            "externalIPs",
            "loadBalancer",
            "ingress",
            "ip",
            "ipMode",
            "loadBalancerSourceRanges",
            "externalTrafficPolicy",
            "internalTrafficPolicy",
            "healthCheckNodePort",
            "sessionAffinity",
            "sessionAffinityConfig",
            "clientIP",
            "timeoutSeconds",
            "addressType",
            "endpoints",
            "addresses",
            "conditions",
            "ready",
            "nodeName",
            "hints",
            "forZones",
            "forNodes",
            "ipvsproxy.io/scheduler",
            "topology.kubernetes.io/zone",
        ]
    ),
)
json_values = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(json_keys, children, max_size=4),
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Any]) -> Any:
    """A valid object with one to three fields (at any depth) replaced by junk."""
    obj = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        obj = _replace_somewhere(draw, obj)
    return obj


def _replace_somewhere(draw: st.DrawFn, obj: Any) -> Any:
    if isinstance(obj, dict) and obj and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(obj)))
        return {**obj, key: _replace_somewhere(draw, obj[key])}
    if isinstance(obj, list) and obj and draw(st.booleans()):
        i = draw(st.integers(0, len(obj) - 1))
        return [*obj[:i], _replace_somewhere(draw, obj[i]), *obj[i + 1 :]]
    return draw(json_values)


# -------------------------------------------------------- dataplane states

vips = st.sampled_from(["10.96.0.1", "10.96.0.2", "fd00::1", NODE_V4])
reals = st.sampled_from(["10.244.0.1", "10.244.0.2", "10.244.0.3", "fd00:1::1"])
# Firewall-mark keys too (#115931): two addresses' marks, of each protocol and family.
fwmark_keys = st.builds(
    lambda family, address, protocol: fwmark_key(
        family, fwmark.mark_for(address, protocol, 80), protocol
    ),
    st.sampled_from(list(Family)),
    st.sampled_from(["203.0.113.7", "203.0.113.8"]),
    st.sampled_from(list(IpProtocol)),
)
vs_keys = st.one_of(
    st.builds(VirtualServerKey, vips, st.sampled_from([53, 80]), st.sampled_from(list(IpProtocol))),
    fwmark_keys,
)
set_names = st.sampled_from(
    [
        "KUBE-CLUSTER-IP",
        "KUBE-IPVS-IPS",
        "KUBE-6-CLUSTER-IP",
        "KUBE-NODE-PORT-TCP",
        "KUBE-EXTERNAL-LOCAL-FWMARK",
    ]
)
entries = st.sampled_from(
    [
        "10.96.0.1,tcp:80",
        "10.96.0.2,udp:53",
        "30080",
        "fd00::1,tcp:80",
    ]
)
marked_keys = st.sampled_from(["203.0.113.7,tcp:80", "203.0.113.8,udp:53"])
marks = st.sampled_from(["0x2c05/0x3fff", "0x2c09/0x3fff"])


def _entries(draw: st.DrawFn, name: str) -> frozenset[str]:
    if name != "KUBE-EXTERNAL-LOCAL-FWMARK":
        return frozenset(draw(st.sets(entries, min_size=1, max_size=3)))
    # One entry per key, as the kernel holds them; the mark may differ between states.
    return frozenset(
        f"{key} skbmark {draw(marks)}" for key in draw(st.sets(marked_keys, min_size=1))
    )


@st.composite
def dataplane_states(draw: st.DrawFn, with_connections: bool = True) -> DataplaneState:
    keys = draw(st.sets(vs_keys, max_size=4))
    virtual = {
        k: VirtualServer(
            k,
            draw(st.sampled_from(["rr", "lc"])),
            draw(st.sampled_from([0, 1])),
            draw(st.sampled_from([0, 10800])),
        )
        for k in keys
    }
    real = {}
    for k in keys:
        servers = {}
        for address in draw(st.sets(reals, max_size=3)):
            rkey = RealServerKey(address, draw(st.sampled_from([8080, 9090])))
            weight = draw(st.sampled_from([0, 1, 1, 2]))
            active = draw(st.integers(0, 2)) if with_connections else 0
            inactive = draw(st.integers(0, 1)) if with_connections else 0
            servers[rkey] = RealServerStatus(RealServer(rkey, weight), active, inactive)
        real[k] = servers
    bound = frozenset(draw(st.sets(vips, max_size=3)))
    ipsets = {name: _entries(draw, name) for name in draw(st.sets(set_names))}
    return DataplaneState(virtual, real, bound, ipsets)


# ----------------------------------------------------------------- reading


def summary(plan: Any) -> dict[str, list[str]]:
    """A plan's virtual servers as ``{"TCP 10.96.0.10:80": ["10.244.1.5:8080", ...]}``."""
    state = plan.state
    return {
        str(key): sorted(str(rkey) for rkey in state.servers_of(key))
        for key in sorted(state.virtual_servers)
    }


def virtual(plan: Any, text: str) -> VirtualServer:
    """The virtual server whose str() is ``text``, e.g. ``"TCP 10.96.0.10:80"``."""
    for key, server in plan.state.virtual_servers.items():
        if str(key) == text:
            return server  # type: ignore[no-any-return]
    raise AssertionError(
        f"no virtual server {text}; have {sorted(map(str, plan.state.virtual_servers))}"
    )


def colliding_ips(port: int) -> tuple[str, str]:
    """Two addresses whose TCP ``port`` gets the same firewall mark (the mark space is small)."""
    seen: dict[int, str] = {}
    for n in range(1, 65536):
        ip = f"198.51.{n >> 8}.{n & 255}"
        mark = fwmark.mark_for(ip, IpProtocol.TCP, port)
        if mark in seen:
            return seen[mark], ip
        seen[mark] = ip
    raise AssertionError("no collision in 65535 addresses")


# ----------------------------------------------------- operation sequences

# Values the kernel takes, each in its own family and set: ops the reconciler could emit.
_REALS = {Family.V4: ["10.244.0.1", "10.244.0.2"], Family.V6: ["fd00:1::1", "fd00:1::2"]}
_SET_ENTRIES = {
    "KUBE-CLUSTER-IP": ["10.96.0.1,tcp:80", "10.96.0.2,udp:53"],
    "KUBE-6-CLUSTER-IP": ["fd00::1,tcp:80"],
    "KUBE-NODE-PORT-TCP": ["30080", "30081"],
    # One key, two marks: adding the other mark replaces the entry (apply_ops says so).
    "KUBE-EXTERNAL-LOCAL-FWMARK": [
        "203.0.113.7,tcp:80 skbmark 0x2c05/0x3fff",
        "203.0.113.7,tcp:80 skbmark 0x2c09/0x3fff",
        "203.0.113.8,udp:53 skbmark 0x2c05/0x3fff",
    ],
}
OP_SETS = tuple(_SET_ENTRIES)
_VIRTUAL = st.builds(
    VirtualServer,
    st.one_of(
        # A lambda: st.builds would fill in the key's fwmark too.
        st.builds(
            lambda address, port, protocol: VirtualServerKey(address, port, protocol),
            vips,
            st.sampled_from([53, 80]),
            st.sampled_from(list(IpProtocol)),
        ),
        fwmark_keys,
    ),
    st.sampled_from(["rr", "lc"]),
    st.sampled_from([0, FLAG_PERSISTENT]),
    st.sampled_from([0, 10800]),
)


@st.composite
def _op(draw: st.DrawFn, state: DataplaneState) -> Op:
    """One operation, drawn with the state in view so most of them apply."""
    keys = sorted(state.virtual_servers, key=repr)
    kind = draw(st.sampled_from(["vs", "vs", "rs", "rs", "bind", "set"] if keys else ["vs"]))
    if kind == "vs":
        server = draw(_VIRTUAL)
        if server.key not in state.virtual_servers:
            return AddVirtualServer(server)
        return draw(st.sampled_from([UpdateVirtualServer(server), DeleteVirtualServer(server.key)]))
    if kind == "rs":
        key = draw(st.sampled_from(keys))
        real = RealServer(
            RealServerKey(draw(st.sampled_from(_REALS[key.family])), 8080),
            draw(st.sampled_from([0, 1, 2])),
        )
        if real.key not in state.servers_of(key):
            return AddRealServer(key, real)
        return draw(st.sampled_from([UpdateRealServer(key, real), DeleteRealServer(key, real.key)]))
    if kind == "bind":
        address = draw(vips)
        return (UnbindAddresses if address in state.bound else BindAddresses)((address,))
    name = draw(st.sampled_from(OP_SETS))
    entry = draw(st.sampled_from(_SET_ENTRIES[name]))
    present = entry in state.ipsets.get(name, ())
    return (DeleteIpsetEntries if present else AddIpsetEntries)(name, frozenset({entry}))


@st.composite
def op_sequences(draw: st.DrawFn, max_size: int = 30) -> list[Op]:
    """Operations from an empty dataplane, each valid where it stands (apply_ops accepts it:
    no-ops such as an update that changes nothing are drawn again)."""
    state = DataplaneState({}, {}, frozenset(), {})
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, max_size))):
        op = draw(_op(state))
        try:
            state = apply_ops(state, [op])
        except InvalidOp:
            continue
        ops.append(op)
    return ops
