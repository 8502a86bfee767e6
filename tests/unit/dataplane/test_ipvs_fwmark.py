"""Firewall-mark IPVS services on the wire: what we send, checked with pyroute2's
decoder and by attribute, and what we make of a kernel dump (layouts of
ip_vs_genl_parse_service and ip_vs_genl_fill_service)."""

from __future__ import annotations

import struct

import pytest
from pyroute2.netlink.generic.ipvs import ipvsmsg

from ipvsproxy.core.fwmark import mark_for
from ipvsproxy.core.model import (
    FLAG_PERSISTENT,
    Family,
    IpProtocol,
    RealServer,
    RealServerKey,
    Stats,
    VirtualServer,
    VirtualServerKey,
    fwmark_key,
)
from ipvsproxy.core.ops import (
    AddRealServer,
    AddVirtualServer,
    DeleteRealServer,
    DeleteVirtualServer,
    IpvsOp,
    UpdateRealServer,
    UpdateVirtualServer,
)
from ipvsproxy.dataplane import ipvs_netlink as nl
from ipvsproxy.dataplane import netlink
from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.ipvs import decode_service, encode_op, validate_ops

UDP_MARK = mark_for("203.0.113.10", IpProtocol.UDP, 53)


def service_nest(payload: bytes) -> dict[int, bytes]:
    """Our own view of the service nest of a generic netlink payload (no nlmsghdr)."""
    top = netlink.attrs(payload, 4)
    return netlink.attrs(top[nl.CMD_ATTR_SERVICE])


def pyroute2_decode(payload: bytes) -> dict[str, object]:
    header = netlink.NLMSGHDR.pack(16 + len(payload), 30, 1, 1, 0)
    msg = ipvsmsg(header + payload)
    msg.decode()
    out: dict[str, object] = {"cmd": msg["cmd"]}
    for name in ("IPVS_CMD_ATTR_SERVICE", "IPVS_CMD_ATTR_DEST"):
        nest = msg.get_attr(name)
        if nest is not None:
            out.update(dict(nest["attrs"]))
    return out


@pytest.mark.parametrize(
    ("family", "af", "netmask"),
    [(Family.V4, 2, b"\xff\xff\xff\xff"), (Family.V6, 10, struct.pack("=I", 128))],
)
@pytest.mark.parametrize(
    ("make", "cmd"),
    [(AddVirtualServer, nl.CMD_NEW_SERVICE), (UpdateVirtualServer, nl.CMD_SET_SERVICE)],
)
def test_full_service_is_af_and_mark_with_every_setting(
    family: Family, af: int, netmask: bytes, make: type[AddVirtualServer], cmd: int
) -> None:
    key = fwmark_key(family, UDP_MARK, IpProtocol.UDP)
    payload = encode_op(make(VirtualServer(key, "wlc", FLAG_PERSISTENT, 30)))
    svc = service_nest(payload)
    # No protocol, address or port: with FWMARK present the kernel reads none of them.
    assert sorted(svc) == sorted(
        [nl.SVC_AF, nl.SVC_FWMARK, nl.SVC_SCHED_NAME, nl.SVC_FLAGS, nl.SVC_TIMEOUT, nl.SVC_NETMASK]
    )
    assert svc[nl.SVC_NETMASK] == netmask  # the kernel refuses an IPv6 one that is not 1..128
    decoded = pyroute2_decode(payload)
    assert decoded["cmd"] == cmd
    assert decoded["IPVS_SVC_ATTR_AF"] == af
    assert decoded["IPVS_SVC_ATTR_FWMARK"] == UDP_MARK
    assert decoded["IPVS_SVC_ATTR_SCHED_NAME"] == "wlc"
    assert decoded["IPVS_SVC_ATTR_TIMEOUT"] == 30
    assert decoded["IPVS_SVC_ATTR_FLAGS"] == {"flags": 1, "mask": 0xFFFFFFFF}


@pytest.mark.parametrize("family", list(Family))
def test_key_only_messages_name_the_service_by_af_and_mark(family: Family) -> None:
    key = fwmark_key(family, UDP_MARK, IpProtocol.UDP)
    real = RealServer(RealServerKey("fd00::1" if family is Family.V6 else "10.0.1.1", 53), 3)
    for op in (
        DeleteVirtualServer(key),
        AddRealServer(key, real),
        UpdateRealServer(key, real),
        DeleteRealServer(key, real.key),
    ):
        payload = encode_op(op)
        assert service_nest(payload) == {
            nl.SVC_AF: struct.pack("=H", family.value),
            nl.SVC_FWMARK: struct.pack("=I", UDP_MARK),
        }
        decoded = pyroute2_decode(payload)
        if not isinstance(op, DeleteVirtualServer):
            # The destination is as under any service: address, port, masquerade.
            assert decoded["IPVS_DEST_ATTR_ADDR"] == real.key.address
            assert decoded["IPVS_DEST_ATTR_PORT"] == 53
            assert decoded["IPVS_DEST_ATTR_ADDR_FAMILY"] == family.value
        if isinstance(op, AddRealServer | UpdateRealServer):
            assert decoded["IPVS_DEST_ATTR_WEIGHT"] == 3
            assert decoded["IPVS_DEST_ATTR_FWD_METHOD"] == 0


def listed(af: int, mark: int, stats: bool = True) -> netlink.Message:
    """A service as ip_vs_genl_fill_service lists a fwmark one: AF and FWMARK, no
    protocol, address or port."""
    attrs = [
        ("IPVS_SVC_ATTR_AF", af),
        ("IPVS_SVC_ATTR_FWMARK", mark),
        ("IPVS_SVC_ATTR_SCHED_NAME", "rr"),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": 0x3, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", 300),
    ]
    if stats:
        attrs.append(("IPVS_SVC_ATTR_STATS64", {"attrs": [("IPVS_STATS_ATTR_CONNS", 7)]}))
    msg = ipvsmsg()
    msg["cmd"] = nl.CMD_NEW_SERVICE
    msg["version"] = 1
    msg["header"]["type"] = 30
    msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", {"attrs": attrs})]
    msg.encode()
    return netlink.Message(0, 0, 0, bytes(msg.data))


@pytest.mark.parametrize(("af", "family"), [(2, Family.V4), (10, Family.V6)])
@pytest.mark.parametrize(
    ("mark", "protocol"),
    [
        (UDP_MARK, IpProtocol.UDP),
        (mark_for("10.0.0.1", IpProtocol.SCTP, 1), IpProtocol.SCTP),
        (mark_for("10.0.0.1", IpProtocol.TCP, 1), IpProtocol.TCP),
        (0x1, IpProtocol.TCP),  # not ours: TCP, ownership decides the rest
        (0xFFFFFFFF, IpProtocol.TCP),
    ],
)
def test_listed_fwmark_service_reads_as_its_key(
    af: int, family: Family, mark: int, protocol: IpProtocol
) -> None:
    server = VirtualServer(fwmark_key(family, mark, protocol), "rr", FLAG_PERSISTENT, 300)
    assert decode_service(listed(af, mark)) == (server, Stats(connections=7))
    assert decode_service(listed(af, mark, stats=False), with_stats=False) == (server, Stats())


def test_listed_service_of_another_family_is_skipped() -> None:
    assert decode_service(listed(7, UDP_MARK)) is None


V4_KEY = fwmark_key(Family.V4, UDP_MARK, IpProtocol.UDP)

BAD: list[tuple[str, IpvsOp, str]] = [
    ("mark-0", DeleteVirtualServer(V4_KEY._replace(fwmark=0)), "address"),
    ("mark-big", DeleteVirtualServer(V4_KEY._replace(fwmark=2**32)), "fwmark"),
    ("mark-str", DeleteVirtualServer(V4_KEY._replace(fwmark="1")), "fwmark"),  # type: ignore[arg-type]
    ("v4-address", DeleteVirtualServer(V4_KEY._replace(address="10.0.0.1")), "address"),
    ("v6-spelling", DeleteVirtualServer(V4_KEY._replace(address="0::0")), "address"),
    ("port", DeleteVirtualServer(V4_KEY._replace(port=53)), "port"),
    (
        "address-key-mark",
        DeleteVirtualServer(VirtualServerKey("10.0.0.1", 80, IpProtocol.TCP, -1)),
        "fwmark",
    ),
    (
        "rs-family",
        AddRealServer(V4_KEY, RealServer(RealServerKey("fd00::1", 53))),
        "real_server.address",
    ),
]


@pytest.mark.parametrize(("op", "field"), [(op, f) for _, op, f in BAD], ids=[i for i, _, _ in BAD])
def test_bad_fwmark_keys_name_the_field(op: IpvsOp, field: str) -> None:
    with pytest.raises(InvalidValueError) as caught:
        validate_ops([AddVirtualServer(VirtualServer(V4_KEY)), op])
    assert caught.value.field == field


def test_good_fwmark_keys_pass() -> None:
    v6 = fwmark_key(Family.V6, 0xFFFFFFFF, IpProtocol.TCP)
    validate_ops(
        [
            AddVirtualServer(VirtualServer(V4_KEY)),
            AddVirtualServer(VirtualServer(v6, "rr", FLAG_PERSISTENT, 10)),
            AddRealServer(v6, RealServer(RealServerKey("fd00::1", 53), 0)),
            DeleteVirtualServer(fwmark_key(Family.V4, 1, IpProtocol.SCTP)),
        ]
    )
