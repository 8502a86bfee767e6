"""The IPVS contract: NetlinkIpvs (``--dataplane=real``, under a kernel with IPVS)
and FakeIpvs (default) must pass the same tests."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator

import pytest

from ipvsproxy.core.fwmark import mark_for
from ipvsproxy.core.model import (
    FLAG_PERSISTENT,
    FLAG_SCHED_MH_PORT,
    FLAG_SCHED_SH_FALLBACK,
    FLAG_SCHED_SH_PORT,
    Family,
    IpProtocol,
    RealServer,
    RealServerKey,
    RealServerStatus,
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
from ipvsproxy.dataplane.errors import (
    InvalidValueError,
    IpvsBatchError,
    SchedulerUnavailableError,
)
from ipvsproxy.dataplane.fake_ipvs import FakeIpvs
from ipvsproxy.dataplane.ipvs import NetlinkIpvs, decode_dest, decode_service, encode_op

Ipvs = NetlinkIpvs | FakeIpvs

# Every scheduler module of Debian's 6.1 kernel (twos came in 6.7).
KERNEL_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh")

V4 = VirtualServerKey("10.96.0.10", 80, IpProtocol.TCP)
V6 = VirtualServerKey("fd00::10", 80, IpProtocol.TCP)
# Firewall-mark services with marks of ours (which carry their protocol).
MARK = mark_for("203.0.113.10", IpProtocol.TCP, 80)
FWM4 = fwmark_key(Family.V4, MARK, IpProtocol.TCP)
FWM6 = fwmark_key(Family.V6, MARK, IpProtocol.TCP)
KEYS = [V4, V6, FWM4, FWM6]
KEY_IDS = ["v4", "v6", "fwmark-v4", "fwmark-v6"]


@pytest.fixture
async def ipvs(real: bool, netns: None) -> AsyncIterator[Ipvs]:
    impl: Ipvs = await NetlinkIpvs.open() if real else FakeIpvs()
    try:
        yield impl
    finally:
        await impl.close()


async def run(*argv: str, stdin: str = "") -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate(stdin.encode())
    assert proc.returncode == 0, argv
    return out.decode()


def rs(address: str, port: int = 8080, weight: int = 1) -> RealServer:
    return RealServer(RealServerKey(address, port), weight)


def status(server: RealServer, active: int = 0, inactive: int = 0) -> RealServerStatus:
    return RealServerStatus(server, active, inactive)


async def table(
    ipvs: Ipvs,
) -> tuple[dict[VirtualServerKey, VirtualServer], dict[VirtualServerKey, list[RealServerStatus]]]:
    snapshot = await ipvs.dump()
    real_servers = {key: sorted(value) for key, value in snapshot.real_servers.items()}
    return dict(snapshot.virtual_servers), real_servers


def endpoints(key: VirtualServerKey) -> tuple[RealServer, RealServer]:
    if key.family.value == socket.AF_INET6:
        return rs("fd00::1:1", 8080), rs("fd00::1:2", 8081, 3)
    return rs("10.0.1.1", 8080), rs("10.0.1.2", 8081, 3)


# ----------------------------------------------------------- virtual servers


@pytest.mark.parametrize("protocol", list(IpProtocol))
@pytest.mark.parametrize("address", ["10.96.0.10", "fd00::10"])
async def test_add_list_delete(ipvs: Ipvs, protocol: IpProtocol, address: str) -> None:
    key = VirtualServerKey(address, 53, protocol)
    a, b = endpoints(key)
    server = VirtualServer(key, "rr")
    await ipvs.apply([AddVirtualServer(server), AddRealServer(key, a), AddRealServer(key, b)])

    assert await table(ipvs) == ({key: server}, {key: [status(a), status(b)]})
    assert sorted(await ipvs.list_real_servers(key)) == [status(a), status(b)]
    assert set(await ipvs.stats()) == {key}

    await ipvs.apply([DeleteRealServer(key, a.key)])
    assert await ipvs.list_real_servers(key) == [status(b)]
    await ipvs.apply([DeleteVirtualServer(key)])
    assert await table(ipvs) == ({}, {})
    assert await ipvs.list_real_servers(key) == []


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
async def test_update_virtual_server_in_place(ipvs: Ipvs, key: VirtualServerKey) -> None:
    a, _ = endpoints(key)
    await ipvs.apply([AddVirtualServer(VirtualServer(key, "rr")), AddRealServer(key, a)])
    changes = [
        VirtualServer(key, "lc"),
        VirtualServer(key, "rr", FLAG_PERSISTENT, 10800),
        VirtualServer(key, "sh", FLAG_SCHED_SH_PORT | FLAG_SCHED_SH_FALLBACK),
        VirtualServer(key, "mh", FLAG_SCHED_MH_PORT | FLAG_PERSISTENT, 60),
        VirtualServer(key, "rr"),
    ]
    for changed in changes:
        await ipvs.apply([UpdateVirtualServer(changed)])
        # An update is a SET: the real server survives it (pyroute2's "update" deletes).
        assert await table(ipvs) == ({key: changed}, {key: [status(a)]})


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
async def test_persistence(ipvs: Ipvs, key: VirtualServerKey) -> None:
    server = VirtualServer(key, "rr", FLAG_PERSISTENT, 10800)
    await ipvs.apply([AddVirtualServer(server)])
    assert (await ipvs.dump()).virtual_servers == {key: server}


@pytest.mark.parametrize("scheduler", KERNEL_SCHEDULERS)
async def test_every_scheduler(ipvs: Ipvs, scheduler: str) -> None:
    # mh as kube-proxy programs it: 0x10, the flag that hashes the source port too.
    flags = FLAG_SCHED_MH_PORT if scheduler == "mh" else 0
    v4 = VirtualServer(V4, scheduler, flags)
    v6 = VirtualServer(V6, scheduler, flags)
    a = rs("10.0.1.1")
    await ipvs.apply([AddVirtualServer(v4), AddVirtualServer(v6), AddRealServer(V4, a)])
    assert await table(ipvs) == ({V4: v4, V6: v6}, {V4: [status(a)], V6: []})


# -------------------------------------------------------------- real servers


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
async def test_real_server_weight(ipvs: Ipvs, key: VirtualServerKey) -> None:
    a, b = endpoints(key)
    await ipvs.apply(
        [AddVirtualServer(VirtualServer(key)), AddRealServer(key, a), AddRealServer(key, b)]
    )
    heavier, drained = a._replace(weight=7), b._replace(weight=0)
    await ipvs.apply([UpdateRealServer(key, heavier), UpdateRealServer(key, drained)])
    # Weight 0 takes no new connections but stays listed.
    assert sorted(await ipvs.list_real_servers(key)) == [status(heavier), status(drained)]


async def test_connection_counters(ipvs: Ipvs, real: bool) -> None:
    key = VirtualServerKey("10.96.0.10", 80, IpProtocol.TCP)
    backend = rs("10.0.1.1", 8080)
    await ipvs.apply([AddVirtualServer(VirtualServer(key)), AddRealServer(key, backend)])
    if isinstance(ipvs, FakeIpvs):
        ipvs.set_connections(key, backend.key, 2, 1)
        assert await ipvs.list_real_servers(key) == [status(backend, 2, 1)]
        return
    # A real connection through the virtual server to a local backend.
    await run(
        "ip", "-batch", "-", stdin="addr add 10.96.0.10/32 dev lo\naddr add 10.0.1.1/32 dev lo\n"
    )
    server = await asyncio.start_server(lambda r, w: None, "10.0.1.1", 8080)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("10.96.0.10", 80), 5)
        (listed,) = await ipvs.list_real_servers(key)
        assert listed.server == backend
        assert listed.active_connections == 1
        writer.close()
    finally:
        server.close()


@pytest.mark.parametrize("key", KEYS, ids=KEY_IDS)
async def test_fingerprint_follows_the_table_not_its_counters(
    ipvs: Ipvs, key: VirtualServerKey
) -> None:
    """What the idle resync checks instead of a dump: equal while nothing changes, and
    different after each kind of change the proxy makes or heals."""
    a, b = endpoints(key)
    await ipvs.apply([AddVirtualServer(VirtualServer(key)), AddRealServer(key, a)])
    seen = {await ipvs.fingerprint()}
    assert await ipvs.fingerprint() in seen
    changes: list[list[IpvsOp]] = [
        [AddRealServer(key, b)],
        [UpdateRealServer(key, b._replace(weight=0))],
        [UpdateVirtualServer(VirtualServer(key, scheduler="lc"))],
        [UpdateVirtualServer(VirtualServer(key, "lc", FLAG_PERSISTENT, 600))],
        [DeleteRealServer(key, b.key)],
        [DeleteVirtualServer(key)],
    ]
    for ops in changes:
        await ipvs.apply(ops)
        now = await ipvs.fingerprint()
        assert now not in seen, ops
        seen.add(now)


async def test_fingerprint_ignores_connection_counts(ipvs: Ipvs) -> None:
    key = VirtualServerKey("10.96.0.10", 80, IpProtocol.TCP)
    backend = rs("10.0.1.1", 8080)
    await ipvs.apply([AddVirtualServer(VirtualServer(key)), AddRealServer(key, backend)])
    before = await ipvs.fingerprint()
    if isinstance(ipvs, FakeIpvs):
        ipvs.set_connections(key, backend.key, 2, 1)
        assert await ipvs.fingerprint() == before
        return
    await run(
        "ip", "-batch", "-", stdin="addr add 10.96.0.10/32 dev lo\naddr add 10.0.1.1/32 dev lo\n"
    )
    server = await asyncio.start_server(lambda r, w: None, "10.0.1.1", 8080)
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("10.96.0.10", 80), 5)
        (listed,) = await ipvs.list_real_servers(key)
        assert listed.active_connections == 1  # the counts moved
        assert await ipvs.fingerprint() == before
        writer.close()
    finally:
        server.close()


# ------------------------------------------------------ firewall-mark services


@pytest.mark.parametrize("protocol", list(IpProtocol))
@pytest.mark.parametrize("family", list(Family))
async def test_fwmark_add_list_delete(ipvs: Ipvs, family: Family, protocol: IpProtocol) -> None:
    key = fwmark_key(family, mark_for("203.0.113.10", protocol, 53), protocol)
    a, b = endpoints(key)
    server = VirtualServer(key, "wlc", FLAG_PERSISTENT, 60)
    await ipvs.apply([AddVirtualServer(server), AddRealServer(key, a), AddRealServer(key, b)])

    # The kernel keeps no protocol for it: the mark's own reads back.
    assert await table(ipvs) == ({key: server}, {key: [status(a), status(b)]})
    assert sorted(await ipvs.list_real_servers(key)) == [status(a), status(b)]
    assert await ipvs.stats() == {key: Stats()}

    await ipvs.apply([DeleteRealServer(key, a.key)])
    assert await ipvs.list_real_servers(key) == [status(b)]
    await ipvs.apply([DeleteVirtualServer(key)])
    assert await table(ipvs) == ({}, {})
    assert await ipvs.list_real_servers(key) == []


async def test_fwmark_and_address_services_coexist(ipvs: Ipvs) -> None:
    # One mark in both families is two services; neither touches the address
    # service of the same VIP.
    v4_a, v4_b = endpoints(V4)
    v6_a, _ = endpoints(V6)
    servers = [
        VirtualServer(V4, "rr"),
        VirtualServer(FWM4, "lc"),
        VirtualServer(FWM6, "rr", FLAG_PERSISTENT, 30),
    ]
    await ipvs.apply(
        [AddVirtualServer(server) for server in servers]
        + [AddRealServer(V4, v4_a), AddRealServer(FWM4, v4_a), AddRealServer(FWM4, v4_b)]
        + [AddRealServer(FWM6, v6_a)]
    )
    assert await table(ipvs) == (
        {server.key: server for server in servers},
        {V4: [status(v4_a)], FWM4: [status(v4_a), status(v4_b)], FWM6: [status(v6_a)]},
    )
    await ipvs.apply([DeleteVirtualServer(FWM4), DeleteRealServer(V4, v4_a.key)])
    assert await table(ipvs) == (
        {V4: servers[0], FWM6: servers[2]},
        {V4: [], FWM6: [status(v6_a)]},
    )


async def test_fwmark_service_is_named_by_family_and_mark(ipvs: Ipvs) -> None:
    # A key naming another protocol names the same service (the kernel keeps
    # none); it lists back with the mark's. A foreign mark lists back as TCP.
    as_udp = FWM4._replace(protocol=IpProtocol.UDP)
    foreign = fwmark_key(Family.V6, 0x1, IpProtocol.SCTP)
    await ipvs.apply(
        [AddVirtualServer(VirtualServer(as_udp)), AddVirtualServer(VirtualServer(foreign))]
    )
    listed_foreign = foreign._replace(protocol=IpProtocol.TCP)
    assert set((await ipvs.dump()).virtual_servers) == {FWM4, listed_foreign}
    with pytest.raises(IpvsBatchError) as caught:
        await ipvs.apply([AddVirtualServer(VirtualServer(FWM4))])
    assert [err.errno for _, err in caught.value.failures] == [errno.EEXIST]  # type: ignore[attr-defined]
    await ipvs.apply(
        [UpdateVirtualServer(VirtualServer(as_udp, "lc")), DeleteVirtualServer(foreign)]
    )
    assert (await ipvs.dump()).virtual_servers == {FWM4: VirtualServer(FWM4, "lc")}


async def test_fwmark_errors(ipvs: Ipvs) -> None:
    missing = fwmark_key(Family.V4, MARK + 4, IpProtocol.TCP)  # another mark of ours
    a, b = endpoints(FWM4)
    await ipvs.apply([AddVirtualServer(VirtualServer(FWM4)), AddRealServer(FWM4, a)])
    batch: list[tuple[IpvsOp, int]] = [
        (AddVirtualServer(VirtualServer(FWM4)), errno.EEXIST),
        (AddVirtualServer(VirtualServer(FWM6)), 0),
        (UpdateVirtualServer(VirtualServer(missing)), errno.ESRCH),
        (DeleteVirtualServer(missing), errno.ESRCH),
        (AddRealServer(missing, a), errno.ESRCH),
        (DeleteRealServer(missing, a.key), errno.ESRCH),
        (AddRealServer(FWM4, a), errno.EEXIST),
        (UpdateRealServer(FWM4, b), errno.ENOENT),
        (DeleteRealServer(FWM4, b.key), errno.ENOENT),
        (UpdateRealServer(FWM4, a._replace(weight=4)), 0),
    ]
    with pytest.raises(IpvsBatchError) as caught:
        await ipvs.apply([op for op, _ in batch])
    got = [(op, getattr(err, "errno", err)) for op, err in caught.value.failures]
    assert got == [(op, code) for op, code in batch if code]
    assert await table(ipvs) == (
        {FWM4: VirtualServer(FWM4), FWM6: VirtualServer(FWM6)},
        {FWM4: [status(a._replace(weight=4))], FWM6: []},
    )
    assert await ipvs.list_real_servers(missing) == []


# ------------------------------------------------------------------ bad input

GOOD = VirtualServer(VirtualServerKey("10.96.0.1", 80, IpProtocol.TCP))

BAD_OPS: list[tuple[str, IpvsOp, str]] = [
    (
        "address",
        AddVirtualServer(VirtualServer(VirtualServerKey("10.0.0.300", 80, IpProtocol.TCP))),
        "address",
    ),
    (
        "not-ip",
        AddVirtualServer(VirtualServer(VirtualServerKey("svc.local", 80, IpProtocol.TCP))),
        "address",
    ),
    (
        "v6-case",
        AddVirtualServer(VirtualServer(VirtualServerKey("FD00::1", 80, IpProtocol.TCP))),
        "address",
    ),
    (
        "port-0",
        AddVirtualServer(VirtualServer(VirtualServerKey("10.0.0.1", 0, IpProtocol.TCP))),
        "port",
    ),
    ("port-big", DeleteVirtualServer(VirtualServerKey("10.0.0.1", 65536, IpProtocol.UDP)), "port"),
    (
        "protocol",
        AddVirtualServer(VirtualServer(VirtualServerKey("10.0.0.1", 80, "ICMP"))),  # type: ignore[arg-type]
        "protocol",
    ),
    ("scheduler", AddVirtualServer(VirtualServer(GOOD.key._replace(port=81), "RR!")), "scheduler"),
    ("scheduler-empty", UpdateVirtualServer(VirtualServer(GOOD.key, "")), "scheduler"),
    ("flags", AddVirtualServer(VirtualServer(GOOD.key._replace(port=82), "rr", 0x2)), "flags"),
    (
        "timeout",
        AddVirtualServer(VirtualServer(GOOD.key._replace(port=83), "rr", 1, -1)),
        "timeout",
    ),
    (
        "timeout-big",
        AddVirtualServer(VirtualServer(GOOD.key._replace(port=84), "rr", 1, 2**32)),
        "timeout",
    ),
    ("weight", AddRealServer(GOOD.key, rs("10.0.1.1", 80, -1)), "weight"),
    ("weight-big", UpdateRealServer(GOOD.key, rs("10.0.1.1", 80, 2**31)), "weight"),
    ("rs-address", AddRealServer(GOOD.key, rs("10.0.1.x")), "real_server.address"),
    ("rs-family", AddRealServer(GOOD.key, rs("fd00::1")), "real_server.address"),
    ("rs-port", DeleteRealServer(GOOD.key, RealServerKey("10.0.1.1", 0)), "real_server.port"),
    ("fwmark-big", AddVirtualServer(VirtualServer(FWM4._replace(fwmark=2**32))), "fwmark"),
    ("fwmark-negative", DeleteVirtualServer(FWM6._replace(fwmark=-1)), "fwmark"),
    ("fwmark-bool", AddVirtualServer(VirtualServer(FWM4._replace(fwmark=True))), "fwmark"),
    (
        "fwmark-address",
        AddVirtualServer(VirtualServer(FWM4._replace(address="10.0.0.1"))),
        "address",
    ),
    ("fwmark-v6-address", DeleteVirtualServer(FWM6._replace(address="::1")), "address"),
    ("fwmark-port", AddVirtualServer(VirtualServer(FWM4._replace(port=80))), "port"),
    (
        "fwmark-protocol",
        AddVirtualServer(VirtualServer(FWM4._replace(protocol="ICMP"))),  # type: ignore[arg-type]
        "protocol",
    ),
    ("any-address", AddVirtualServer(VirtualServer(FWM4._replace(fwmark=0))), "address"),
    ("fwmark-rs-family", AddRealServer(FWM4, rs("fd00::1")), "real_server.address"),
    ("fwmark-rs-port", AddRealServer(FWM6, rs("fd00::1", 0)), "real_server.port"),
]


@pytest.mark.parametrize(
    ("bad", "field"), [(op, f) for _, op, f in BAD_OPS], ids=[i for i, _, _ in BAD_OPS]
)
async def test_bad_input_names_field_and_changes_nothing(
    ipvs: Ipvs, bad: IpvsOp, field: str
) -> None:
    # A good op first: validation covers the whole batch before anything is sent.
    with pytest.raises(InvalidValueError) as caught:
        await ipvs.apply([AddVirtualServer(GOOD), AddRealServer(GOOD.key, rs("10.0.1.9")), bad])
    assert caught.value.field == field
    assert field in str(caught.value)
    assert await table(ipvs) == ({}, {})


async def test_missing_scheduler(ipvs: Ipvs) -> None:
    ops = [AddVirtualServer(GOOD), AddVirtualServer(VirtualServer(V6, "nosuch"))]
    with pytest.raises(SchedulerUnavailableError) as caught:
        await ipvs.apply(ops)
    assert caught.value.scheduler == "nosuch"
    assert "nosuch" in str(caught.value)
    assert await table(ipvs) == ({}, {})
    # And changing an existing service to it is refused the same way.
    await ipvs.apply([AddVirtualServer(GOOD)])
    with pytest.raises(SchedulerUnavailableError):
        await ipvs.apply([UpdateVirtualServer(GOOD._replace(scheduler="nosuch"))])
    assert (await ipvs.dump()).virtual_servers == {GOOD.key: GOOD}


async def test_fake_scheduler_availability_is_settable() -> None:
    fake = FakeIpvs()
    fake.available_schedulers.discard("lc")
    with pytest.raises(SchedulerUnavailableError):
        await fake.apply([AddVirtualServer(GOOD._replace(scheduler="lc"))])
    await fake.apply([AddVirtualServer(GOOD)])
    assert fake.applied == [AddVirtualServer(GOOD)]


# ----------------------------------------------------------------- batches


async def test_batch_reports_every_failure_and_applies_the_rest(ipvs: Ipvs) -> None:
    other = VirtualServerKey("10.96.0.20", 80, IpProtocol.UDP)
    missing = VirtualServerKey("10.96.0.99", 80, IpProtocol.TCP)
    a, b = rs("10.0.1.1"), rs("10.0.1.2")
    await ipvs.apply([AddVirtualServer(GOOD), AddRealServer(GOOD.key, a)])

    batch: list[tuple[IpvsOp, int]] = [
        (AddVirtualServer(GOOD), errno.EEXIST),
        (AddVirtualServer(VirtualServer(other, "wlc")), 0),
        (AddRealServer(missing, a), errno.ESRCH),
        (AddRealServer(other, b), 0),
        (AddRealServer(GOOD.key, a), errno.EEXIST),
        (UpdateRealServer(GOOD.key, b), errno.ENOENT),
        (DeleteRealServer(GOOD.key, b.key), errno.ENOENT),
        (DeleteRealServer(missing, b.key), errno.ESRCH),
        (UpdateVirtualServer(VirtualServer(missing)), errno.ESRCH),
        (DeleteVirtualServer(missing), errno.ESRCH),
        (UpdateRealServer(GOOD.key, a._replace(weight=5)), 0),
    ]
    with pytest.raises(IpvsBatchError) as caught:
        await ipvs.apply([op for op, _ in batch])
    got = [
        (op, err.errno if isinstance(err, OSError) else err) for op, err in caught.value.failures
    ]
    assert got == [(op, code) for op, code in batch if code]
    assert all(isinstance(err, OSError) for _, err in caught.value.failures)

    assert await table(ipvs) == (
        {GOOD.key: GOOD, other: VirtualServer(other, "wlc")},
        {GOOD.key: [status(a._replace(weight=5))], other: [status(b)]},
    )


async def test_large_batch(ipvs: Ipvs) -> None:
    # More ops than one sendmsg carries, with failures spread over the chunks.
    keys = [
        VirtualServerKey(f"10.97.{i // 250}.{i % 250 + 1}", 80, IpProtocol.TCP) for i in range(1500)
    ]
    ops: list[IpvsOp] = []
    for key in keys:
        ops += [AddVirtualServer(VirtualServer(key)), AddRealServer(key, rs("10.0.1.1"))]
    await ipvs.apply(ops)
    snapshot = await ipvs.dump()
    assert len(snapshot.virtual_servers) == len(keys)
    assert all(snapshot.real_servers[key] == [status(rs("10.0.1.1"))] for key in keys)
    again = [AddRealServer(key, rs("10.0.1.1")) for key in keys[::100]]
    with pytest.raises(IpvsBatchError) as caught:
        await ipvs.apply([*(DeleteVirtualServer(key) for key in keys[::2]), *again])
    assert [op for op, _ in caught.value.failures] == [
        op for op in again if op.virtual in keys[::2]
    ]
    assert set((await ipvs.dump()).virtual_servers) == set(keys[1::2])


async def test_dump_with_long_real_server_lists(ipvs: Ipvs) -> None:
    # A service whose real servers overflow one netlink buffer keeps its dump
    # running, so the dumps pipelined after it are refused (EBUSY) and retried.
    keys = [VirtualServerKey(f"10.96.0.{i}", 80, IpProtocol.TCP) for i in range(1, 7)]
    many = {key: [rs(f"10.1.{i}.{n}", 80) for n in range(1, 201)] for i, key in enumerate(keys)}
    ops: list[IpvsOp] = []
    for key in keys:
        ops.append(AddVirtualServer(VirtualServer(key)))
        ops += [
            AddRealServer(key, server)
            for server in many[key][: 200 if key.address[-1] in "135" else 2]
        ]
    await ipvs.apply(ops)
    _, listed = await table(ipvs)
    assert {key: len(value) for key, value in listed.items()} == {
        key: 200 if key.address[-1] in "135" else 2 for key in keys
    }
    assert listed[keys[0]] == sorted(status(server) for server in many[keys[0]])


async def test_empty_batch(ipvs: Ipvs) -> None:
    await ipvs.apply([])
    assert await table(ipvs) == ({}, {})


# ----------------------------------------------------------------- config


async def test_set_timeouts(ipvs: Ipvs) -> None:
    assert await ipvs.get_timeouts() == (900, 120, 300)  # the kernel's defaults
    await ipvs.set_timeouts(10, 0, 20)
    assert await ipvs.get_timeouts() == (10, 120, 20)
    await ipvs.set_timeouts(0, 5, 0)
    assert await ipvs.get_timeouts() == (10, 5, 20)
    await ipvs.set_timeouts(0, 0, 0)
    assert await ipvs.get_timeouts() == (10, 5, 20)
    with pytest.raises(InvalidValueError) as caught:
        await ipvs.set_timeouts(1, -1, 1)
    assert caught.value.field == "tcpfin"


async def test_stats(ipvs: Ipvs) -> None:
    await ipvs.apply([AddVirtualServer(GOOD)])
    assert await ipvs.stats() == {GOOD.key: Stats()}
    if isinstance(ipvs, FakeIpvs):
        ipvs.set_stats(GOOD.key, Stats(1, 2, 3, 4, 5))
        assert await ipvs.stats() == {GOOD.key: Stats(1, 2, 3, 4, 5)}


# ------------------------------------------------- the kernel's own view


async def test_ipvsadm_sees_what_we_programmed(ipvs: Ipvs, real: bool) -> None:
    if not real:
        pytest.skip("ipvsadm reads the kernel")
    assert isinstance(ipvs, NetlinkIpvs)
    v4 = VirtualServer(
        VirtualServerKey("10.96.0.10", 443, IpProtocol.TCP), "wlc", FLAG_PERSISTENT, 10800
    )
    v6 = VirtualServer(VirtualServerKey("fd00::53", 53, IpProtocol.UDP), "mh", FLAG_SCHED_MH_PORT)
    await ipvs.apply(
        [
            AddVirtualServer(v4),
            AddRealServer(v4.key, rs("10.0.1.1", 8443, 2)),
            AddVirtualServer(v6),
            AddRealServer(v6.key, rs("fd00::1:1", 5353, 0)),
        ]
    )
    saved = await run("ipvsadm", "-Sn")
    # -m: masquerade, not pyroute2's default direct routing (-g).
    assert sorted(saved.splitlines()) == sorted(
        [
            "-A -t 10.96.0.10:443 -s wlc -p 10800",
            "-a -t 10.96.0.10:443 -r 10.0.1.1:8443 -m -w 2",
            "-A -u [fd00::53]:53 -s mh -b mh-port",
            "-a -u [fd00::53]:53 -r [fd00::1:1]:5353 -m -w 0",
        ]
    )
    assert await ipvs.forwarding_methods(v6.key) == {RealServerKey("fd00::1:1", 5353): nl.FWD_MASQ}


async def test_ipvsadm_sees_fwmark_services(ipvs: Ipvs, real: bool) -> None:
    if not real:
        pytest.skip("ipvsadm reads the kernel")
    assert isinstance(ipvs, NetlinkIpvs)
    udp = fwmark_key(Family.V6, mark_for("2001:db8::10", IpProtocol.UDP, 53), IpProtocol.UDP)
    v4 = VirtualServer(FWM4, "rr")
    v6 = VirtualServer(udp, "wlc", FLAG_PERSISTENT, 30)
    await ipvs.apply(
        [
            AddVirtualServer(v4),
            AddRealServer(FWM4, rs("10.0.1.1", 8080, 2)),
            AddVirtualServer(v6),
            AddRealServer(udp, rs("fd00::1:1", 5353, 0)),
            AddVirtualServer(VirtualServer(V4)),
        ]
    )
    saved = await run("ipvsadm", "-Sn")
    assert sorted(saved.splitlines()) == sorted(
        [
            f"-A -f {MARK} -s rr",
            f"-a -f {MARK} -r 10.0.1.1:8080 -m -w 2",
            f"-A -f {udp.fwmark} -6 -s wlc -p 30",
            f"-a -f {udp.fwmark} -6 -r [fd00::1:1]:5353 -m -w 0",
            "-A -t 10.96.0.10:80 -s rr",
        ]
    )
    assert await ipvs.forwarding_methods(udp) == {RealServerKey("fd00::1:1", 5353): nl.FWD_MASQ}


# ------------------------------------------- our codec against pyroute2's


def _pyroute2_decode(payload: bytes) -> dict[str, object]:
    from pyroute2.netlink.generic.ipvs import ipvsmsg  # type: ignore[import-untyped]

    header = netlink.NLMSGHDR.pack(16 + len(payload), 30, 1, 1, 0)
    msg = ipvsmsg(header + payload)
    msg.decode()
    out: dict[str, object] = {"cmd": msg["cmd"]}
    for name in ("IPVS_CMD_ATTR_SERVICE", "IPVS_CMD_ATTR_DEST"):
        nest = msg.get_attr(name)
        if nest is not None:
            out.update(dict(nest["attrs"]))
    return out


@pytest.mark.parametrize("address", ["10.96.0.10", "fd00::10"])
def test_encoding_reads_back_through_pyroute2(address: str) -> None:
    key = VirtualServerKey(address, 8443, IpProtocol.SCTP)
    server = VirtualServer(key, "mh", FLAG_SCHED_MH_PORT | FLAG_PERSISTENT, 77)
    svc = _pyroute2_decode(encode_op(UpdateVirtualServer(server)))
    assert svc["cmd"] == nl.CMD_SET_SERVICE
    assert svc["IPVS_SVC_ATTR_ADDR"] == address
    assert svc["IPVS_SVC_ATTR_PORT"] == 8443
    assert svc["IPVS_SVC_ATTR_PROTOCOL"] == 132
    assert svc["IPVS_SVC_ATTR_SCHED_NAME"] == "mh"
    assert svc["IPVS_SVC_ATTR_TIMEOUT"] == 77
    assert svc["IPVS_SVC_ATTR_FLAGS"]["flags"] == 0x11  # type: ignore[index]

    real = rs("fd00::1:1" if ":" in address else "10.0.1.1", 9000, 4)
    dest = _pyroute2_decode(encode_op(AddRealServer(key, real)))
    assert dest["cmd"] == nl.CMD_NEW_DEST
    assert dest["IPVS_DEST_ATTR_ADDR"] == real.key.address
    assert dest["IPVS_DEST_ATTR_PORT"] == 9000
    assert dest["IPVS_DEST_ATTR_WEIGHT"] == 4
    assert dest["IPVS_DEST_ATTR_FWD_METHOD"] == 0  # masquerade


def _pyroute2_encoded(cmd: int, nest: str, attrs: list[tuple[str, object]]) -> netlink.Message:
    """One IPVS message as pyroute2 builds it (the kernel's layout, not our encoder's)."""
    from pyroute2.netlink.generic.ipvs import ipvsmsg

    msg = ipvsmsg()
    msg["cmd"] = cmd
    msg["version"] = 1
    msg["header"]["type"] = 30
    msg["attrs"] = [(nest, {"attrs": attrs})]
    msg.encode()
    return netlink.Message(0, 0, 0, bytes(msg.data))


SERVICE_ATTRS: list[tuple[str, object]] = [
    ("IPVS_SVC_ATTR_AF", 10),
    ("IPVS_SVC_ATTR_PROTOCOL", 17),
    ("IPVS_SVC_ATTR_ADDR", "fd00::10"),
    ("IPVS_SVC_ATTR_PORT", 53),
    ("IPVS_SVC_ATTR_SCHED_NAME", "sh"),
    ("IPVS_SVC_ATTR_FLAGS", {"flags": 0x13, "mask": 0xFFFFFFFF}),
    ("IPVS_SVC_ATTR_TIMEOUT", 300),
]
SERVICE = VirtualServer(VirtualServerKey("fd00::10", 53, IpProtocol.UDP), "sh", 0x11, 300)


def _stats(**values: int) -> dict[str, object]:
    return {"attrs": [(f"IPVS_STATS_ATTR_{name.upper()}", v) for name, v in values.items()]}


def test_decoding_reads_what_pyroute2_encodes() -> None:
    message = _pyroute2_encoded(nl.CMD_NEW_SERVICE, "IPVS_CMD_ATTR_SERVICE", SERVICE_ATTRS)
    # 0x13 = persistent | hashed | sh-port: the kernel's hashed bit is dropped.
    assert decode_service(message) == (SERVICE, Stats())

    dest = [
        ("IPVS_DEST_ATTR_ADDR", "fd00::1"),
        ("IPVS_DEST_ATTR_PORT", 80),
        ("IPVS_DEST_ATTR_FWD_METHOD", 3),
        ("IPVS_DEST_ATTR_WEIGHT", 2),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", 5),
        ("IPVS_DEST_ATTR_INACT_CONNS", 6),
        ("IPVS_DEST_ATTR_ADDR_FAMILY", 10),
    ]
    message = _pyroute2_encoded(nl.CMD_NEW_DEST, "IPVS_CMD_ATTR_DEST", dest)
    assert decode_dest(message) == (status(rs("fd00::1", 80, 2), 5, 6), 3)


def test_service_statistics_decode_with_and_without_64_bit_counters() -> None:
    """Kernels before 4.1 send only the 32-bit nest (its byte counters are 64-bit even
    there); later ones send both, and the 64-bit one wins."""
    small = _stats(conns=7, inpkts=70, outpkts=60, inbytes=2**40 + 5, outbytes=9000)
    old = [*SERVICE_ATTRS, ("IPVS_SVC_ATTR_STATS", small)]
    message = _pyroute2_encoded(nl.CMD_NEW_SERVICE, "IPVS_CMD_ATTR_SERVICE", old)
    assert decode_service(message) == (SERVICE, Stats(7, 70, 60, 2**40 + 5, 9000))

    # Past 2**32 the 32-bit counters have wrapped; the 64-bit ones carry the truth.
    big = _stats(conns=2**33 + 1, inpkts=2**34, outpkts=3, inbytes=2**41, outbytes=4)
    wrapped = _stats(conns=1, inpkts=0, outpkts=3, inbytes=2**41, outbytes=4)
    both = [*SERVICE_ATTRS, ("IPVS_SVC_ATTR_STATS", wrapped), ("IPVS_SVC_ATTR_STATS64", big)]
    message = _pyroute2_encoded(nl.CMD_NEW_SERVICE, "IPVS_CMD_ATTR_SERVICE", both)
    assert decode_service(message) == (SERVICE, Stats(2**33 + 1, 2**34, 3, 2**41, 4))
    assert decode_service(message, with_stats=False) == (SERVICE, Stats())
