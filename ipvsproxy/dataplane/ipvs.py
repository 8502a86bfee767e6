"""IPVS over generic netlink: the real ``Ipvs``.

Open with ``ipvs = await NetlinkIpvs.open()`` (or ``async with await NetlinkIpvs.open()``)
in the network namespace to program; ``await ipvs.close()`` when done.

Everything here is shared with the fake (``fake_ipvs.py``) where behaviour must be
the same: validation of a whole batch before anything is sent, and how a kernel
refusal is reported (``IpvsBatchError`` whose entries carry an ``OSError`` with
the kernel's errno: EEXIST for adding what exists, ESRCH for a missing virtual
server, ENOENT for a missing real server).
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import zlib
from collections.abc import Iterable, Sequence
from types import TracebackType

from ipvsproxy.core.fwmark import listed_key
from ipvsproxy.core.model import (
    ANY_ADDRESS,
    FLAG_HASHED,
    FLAG_PERSISTENT,
    Family,
    IpProtocol,
    IpvsTable,
    RealServer,
    RealServerKey,
    RealServerStatus,
    Stats,
    VirtualServer,
    VirtualServerKey,
    ip_address,
    packed_ipv4,
    parse_ip,
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
from ipvsproxy.dataplane.errors import InvalidValueError as Invalid
from ipvsproxy.dataplane.errors import (
    IpvsBatchError,
    KernelModuleError,
    SchedulerUnavailableError,
)
from ipvsproxy.dataplane.netlink import Message, attrs, be16, u16, u32

# Flags a virtual server may carry: persistent, one-packet, and the three
# scheduler flags (for sh and mh: 0x08 fallback, 0x10 hash the source port too;
# kube-proxy sets 0x10, its "FlagSourceHash", for mh).
ALLOWED_FLAGS = FLAG_PERSISTENT | 0x0004 | 0x0008 | 0x0010 | 0x0020
# The kernel keeps the persistence timeout in jiffies in a u32 and lists it as
# timeout / HZ: beyond 2**32 / 1000 seconds it would not read back (HZ <= 1000).
MAX_PERSISTENCE_TIMEOUT = 2**32 // 1000
MAX_FWMARK = 0xFFFFFFFF  # a u32; 0 means "no mark", an address service
MAX_WEIGHT = 2**31 - 1  # the kernel refuses a weight that is negative as an int
MAX_PROTOCOL_TIMEOUT = (2**31 - 1) // 1000  # ip_vs_set_timeout: <= INT_MAX / HZ
SCHEDULER_NAME = re.compile(r"[a-z][a-z0-9_]{0,14}\Z")  # IP_VS_SCHEDNAME_MAXLEN 16
DEFAULT_TIMEOUTS = (900, 120, 300)  # the kernel's tcp, tcpfin, udp defaults


# ---------------------------------------------------------------- validation


def _address(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise Invalid(field, value, "not an address string")
    packed = packed_ipv4(value)  # normal-form IPv4: the cheap check of most addresses
    if packed is not None:
        if packed == b"\0\0\0\0" or 224 <= packed[0] <= 239:  # 0.0.0.0, 224.0.0.0/4
            raise Invalid(field, value, "not a unicast address")
        return value
    try:
        parsed = ip_address(value)
    except ValueError:
        raise Invalid(field, value, "not an IP address") from None
    if parse_ip(value) != value:
        raise Invalid(field, value, f"not in normal form (use {parsed})")
    if parsed.is_unspecified or parsed.is_multicast:
        raise Invalid(field, value, "not a unicast address")
    return value


def _int(field: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Invalid(field, value, f"must be an integer in {low}..{high}")


def validate_virtual_key(key: object) -> VirtualServerKey:
    if not isinstance(key, VirtualServerKey):
        raise Invalid("virtual_server", key, "not a VirtualServerKey")
    # The kernel takes FWMARK 0 as "no mark" and would make a TCP 0.0.0.0:0 service of
    # it: 0 is never sent as a mark (fwmark_key callers must pick 1..MAX_FWMARK).
    _int("fwmark", key.fwmark, 0, MAX_FWMARK)
    if key.fwmark:
        # The kernel names a firewall-mark service by (family, mark) only; the key's
        # address says the family and must be its any-address, as fwmark_key builds it.
        if key.address not in ANY_ADDRESS.values():
            raise Invalid("address", key.address, "a fwmark key's address is 0.0.0.0 or ::")
        _int("port", key.port, 0, 0)
    else:
        _address("address", key.address)
        _int("port", key.port, 1, 65535)
    if not isinstance(key.protocol, str) or key.protocol not in IpProtocol.__members__.values():
        raise Invalid("protocol", key.protocol, "must be TCP, UDP or SCTP")
    return key


def _virtual(server: object) -> None:
    if not isinstance(server, VirtualServer):
        raise Invalid("virtual_server", server, "not a VirtualServer")
    validate_virtual_key(server.key)
    if not isinstance(server.scheduler, str) or not SCHEDULER_NAME.match(server.scheduler):
        raise Invalid("scheduler", server.scheduler, "not a scheduler name")
    _int("flags", server.flags, 0, ALLOWED_FLAGS)
    if server.flags & ~ALLOWED_FLAGS:
        raise Invalid("flags", server.flags, f"only bits {ALLOWED_FLAGS:#x} may be set")
    _int("timeout", server.timeout, 0, MAX_PERSISTENCE_TIMEOUT)


def _real(
    virtual: object, key: object, weight: object | None, checked: set[VirtualServerKey]
) -> None:
    vkey = _checked_virtual_key(virtual, checked)
    if not isinstance(key, RealServerKey):
        raise Invalid("real_server", key, "not a RealServerKey")
    address = _address("real_server.address", key.address)
    _int("real_server.port", key.port, 1, 65535)
    if (":" in address) != (":" in vkey.address):
        # Masquerade cannot cross families (the kernel allows that only for tunnels).
        raise Invalid("real_server.address", address, f"not the address family of {vkey}")
    if weight is not None:
        _int("weight", weight, 0, MAX_WEIGHT)


def _checked_virtual_key(key: object, checked: set[VirtualServerKey]) -> VirtualServerKey:
    """``validate_virtual_key``, once per key for a batch (a Service's real servers all
    name its virtual server)."""
    if isinstance(key, VirtualServerKey):
        try:
            if key in checked:
                return key
        except TypeError:  # a field that cannot be hashed: let the check name it
            pass
    vkey = validate_virtual_key(key)
    checked.add(vkey)
    return vkey


def validate_ops(ops: Sequence[IpvsOp]) -> None:
    """Raise InvalidValueError for the first bad field in ``ops``; check them all first."""
    checked: set[VirtualServerKey] = set()
    for op in ops:
        if isinstance(op, AddVirtualServer | UpdateVirtualServer):
            _virtual(op.server)
        elif isinstance(op, DeleteVirtualServer):
            validate_virtual_key(op.key)
        elif isinstance(op, AddRealServer | UpdateRealServer):
            if not isinstance(op.server, RealServer):
                raise Invalid("real_server", op.server, "not a RealServer")
            _real(op.virtual, op.server.key, op.server.weight, checked)
        elif isinstance(op, DeleteRealServer):
            _real(op.virtual, op.key, None, checked)
        else:
            raise Invalid("op", op, "not an IPVS operation")


def validate_timeouts(tcp: int, tcpfin: int, udp: int) -> None:
    for field, value in (("tcp", tcp), ("tcpfin", tcpfin), ("udp", udp)):
        _int(field, value, 0, MAX_PROTOCOL_TIMEOUT)


def schedulers_of(ops: Iterable[IpvsOp]) -> set[str]:
    return {
        op.server.scheduler for op in ops if isinstance(op, AddVirtualServer | UpdateVirtualServer)
    }


def kernel_error(code: int) -> OSError:
    """How a kernel refusal is reported, by the real implementation and the fake alike."""
    return OSError(code, os.strerror(code))


def failure_of(op: IpvsOp, code: int) -> BaseException:
    # ENOENT on a virtual server command means the scheduler is missing (a
    # missing service is ESRCH), e.g. a module that vanished since we checked.
    if code == errno.ENOENT and isinstance(op, AddVirtualServer | UpdateVirtualServer):
        return SchedulerUnavailableError(op.server.scheduler)
    return kernel_error(code)


# ----------------------------------------------------------- kernel modules

# Modules are global to the kernel, so one cache for the process.
_schedulers_present: set[str] = set()
_schedulers_missing: set[str] = set()


async def modprobe(module: str) -> tuple[bool, str]:
    """Load ``module``; (False, why) when modprobe fails. Raises FileNotFoundError without it."""
    proc = await asyncio.create_subprocess_exec(
        "modprobe",
        module,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await proc.communicate()
    return proc.returncode == 0, stderr.decode(errors="replace").strip()


def _module_loaded(module: str) -> bool:
    # One stat of sysfs: not worth a thread.
    return os.path.exists(f"/sys/module/{module}")


async def ensure_scheduler(name: str) -> None:
    """Make sure the kernel has scheduler ``name``: load ip_vs_<name> once if needed."""
    if name in _schedulers_present:
        return
    if name in _schedulers_missing:
        raise SchedulerUnavailableError(name)
    if _module_loaded(f"ip_vs_{name}"):
        _schedulers_present.add(name)
        return
    try:
        ok, _ = await modprobe(f"ip_vs_{name}")
    except FileNotFoundError:
        return  # no modprobe here: the kernel's own request_module decides
    if not ok:
        _schedulers_missing.add(name)
        raise SchedulerUnavailableError(name)
    _schedulers_present.add(name)


# --------------------------------------------------------------- messages


def _family(address: str) -> int:
    return nl.AF_INET6 if ":" in address else nl.AF_INET


def _svc_key(key: VirtualServerKey) -> bytes:
    if key.fwmark:
        return nl.fwmark_key_attrs(_family(key.address), key.fwmark)
    protocol = IpProtocol(key.protocol).number  # a plain "TCP" string is accepted too
    return nl.service_key_attrs(_family(key.address), protocol, key.address, key.port)


def _svc_full(server: VirtualServer) -> bytes:
    family = _family(server.key.address)
    settings = nl.service_settings(family, server.scheduler, server.flags, server.timeout)
    return _svc_key(server.key) + settings


def encode_op(op: IpvsOp) -> bytes:
    """The generic netlink payload of one op (validated beforehand)."""
    if isinstance(op, AddVirtualServer):
        return nl.service_message(nl.CMD_NEW_SERVICE, _svc_full(op.server))
    if isinstance(op, UpdateVirtualServer):  # SET, never pyroute2's "update" (= delete)
        return nl.service_message(nl.CMD_SET_SERVICE, _svc_full(op.server))
    if isinstance(op, DeleteVirtualServer):
        return nl.service_message(nl.CMD_DEL_SERVICE, _svc_key(op.key))
    if isinstance(op, DeleteRealServer):
        dest = nl.dest_attrs(_family(op.key.address), op.key.address, op.key.port, None)
        return nl.dest_message(nl.CMD_DEL_DEST, _svc_key(op.virtual), dest)
    cmd = nl.CMD_NEW_DEST if isinstance(op, AddRealServer) else nl.CMD_SET_DEST
    key = op.server.key
    dest = nl.dest_attrs(_family(key.address), key.address, key.port, op.server.weight)
    return nl.dest_message(cmd, _svc_key(op.virtual), dest)


_SERVICE = frozenset({nl.CMD_ATTR_SERVICE})
_DEST = frozenset({nl.CMD_ATTR_DEST})
_SERVICE_FIELDS = frozenset(
    {nl.SVC_AF, nl.SVC_PROTOCOL, nl.SVC_ADDR, nl.SVC_PORT, nl.SVC_FWMARK, nl.SVC_SCHED_NAME}
    | {nl.SVC_FLAGS, nl.SVC_TIMEOUT}
)
_SERVICE_STATS = _SERVICE_FIELDS | {nl.SVC_STATS, nl.SVC_STATS64}
_DEST_FIELDS = frozenset(
    {nl.DEST_ADDR, nl.DEST_PORT, nl.DEST_FWD_METHOD, nl.DEST_WEIGHT, nl.DEST_ADDR_FAMILY}
    | {nl.DEST_ACTIVE_CONNS, nl.DEST_INACT_CONNS}
)


def decode_service(message: Message, with_stats: bool = True) -> tuple[VirtualServer, Stats] | None:
    """A listed service, or None for one we cannot name (other protocols or families)."""
    nest = nl.genl_attrs(message.data, _SERVICE).get(nl.CMD_ATTR_SERVICE, b"")
    svc = attrs(nest, wanted=_SERVICE_STATS if with_stats else _SERVICE_FIELDS)
    key = _listed_key(svc)
    if key is None:
        return None
    # Read flags and timeout from the attributes themselves (pyroute2's
    # from_message leaves them at 0); FLAG_HASHED is the kernel's, not ours.
    flags = nl.flags_of(svc[nl.SVC_FLAGS]) & ~FLAG_HASHED if nl.SVC_FLAGS in svc else 0
    timeout = u32(svc[nl.SVC_TIMEOUT]) if nl.SVC_TIMEOUT in svc else 0
    sched = svc.get(nl.SVC_SCHED_NAME, b"").rstrip(b"\0").decode()
    stats = Stats(*nl.stats_of(svc)) if with_stats else Stats()
    return VirtualServer(key, sched, flags, timeout), stats


def _listed_key(svc: dict[int, bytes]) -> VirtualServerKey | None:
    if nl.SVC_AF not in svc:
        return None
    family = u16(svc[nl.SVC_AF])
    if family not in (nl.AF_INET, nl.AF_INET6):
        return None
    mark = u32(svc[nl.SVC_FWMARK]) if nl.SVC_FWMARK in svc else 0
    if mark:
        # The kernel lists a fwmark service with AF and FWMARK only: no protocol.
        # Ours carry theirs in the mark; a foreign mark reads as TCP (ownership,
        # not this decoder, decides whether the proxy may touch it).
        return listed_key(Family(family), mark)
    if nl.SVC_ADDR not in svc or nl.SVC_PROTOCOL not in svc or nl.SVC_PORT not in svc:
        return None
    try:
        protocol = IpProtocol.from_number(u16(svc[nl.SVC_PROTOCOL]))
    except ValueError:
        return None
    return VirtualServerKey(
        nl.unpack_addr(svc[nl.SVC_ADDR], family), be16(svc[nl.SVC_PORT]), protocol
    )


def decode_dest(message: Message) -> tuple[RealServerStatus, int]:
    """A listed real server and its forwarding method (0 = masquerade)."""
    nest = nl.genl_attrs(message.data, _DEST)[nl.CMD_ATTR_DEST]
    dest = attrs(nest, wanted=_DEST_FIELDS)
    family = u16(dest[nl.DEST_ADDR_FAMILY]) if nl.DEST_ADDR_FAMILY in dest else 0
    raw = dest[nl.DEST_ADDR]
    family = family or (nl.AF_INET6 if raw[4:].strip(b"\0") else nl.AF_INET)
    key = RealServerKey(nl.unpack_addr(raw, family), be16(dest[nl.DEST_PORT]))
    status = RealServerStatus(
        RealServer(key, u32(dest[nl.DEST_WEIGHT])),
        u32(dest[nl.DEST_ACTIVE_CONNS]),
        u32(dest[nl.DEST_INACT_CONNS]),
    )
    return status, u32(dest[nl.DEST_FWD_METHOD]) & nl.FWD_MASK


# ------------------------------------------------------------------ the Ipvs


# A real server's line in /proc/net/ip_vs: address, forwarding, weight, then the active
# and inactive connection counts, which change with traffic and are left out.
_REAL_SERVER_COUNTS = re.compile(rb"(?m)^(  -> \S+ +\S+ +\d+) +\d+ +\d+ *$")
PROC_TABLE = "/proc/thread-self/net/ip_vs"  # this thread's network namespace
# What is asked of each read (procfs gives a page at a time whatever is asked), and how
# much text is summed at once: both below malloc's threshold for a mapping of its own.
_READ_SIZE = _SUM_SIZE = 64 * 1024


def table_checksum(pieces: Iterable[bytes | memoryview]) -> int:
    """A CRC-32 of /proc/net/ip_vs, given in ``pieces`` cut anywhere, without the
    connection counts: every virtual server (address or mark, port, protocol, scheduler,
    persistence) and real server (address, port, forwarding, weight). Scheduler flags
    (sh-port, ...) are not listed there."""
    crc, pending = 0, bytearray()
    for piece in pieces:
        pending += piece
        if len(pending) >= _SUM_SIZE:
            whole_lines = pending.rfind(b"\n") + 1
            crc = zlib.crc32(_REAL_SERVER_COUNTS.sub(rb"\1", pending[:whole_lines]), crc)
            del pending[:whole_lines]
    return zlib.crc32(_REAL_SERVER_COUNTS.sub(rb"\1", pending), crc)


def _proc_table_checksum() -> int:
    """``table_checksum`` of the kernel's text of the whole table, with no decoding (far
    cheaper than the netlink dump at 10,000 virtual servers); procfs generates the text
    in the read: nothing to wait for.

    Read into one buffer and summed in pieces, never whole: at 10,000 Services the text
    is 3.3 MB, and the whole text and its copy without the counts were fresh memory at
    every resync (1,950 page faults in each idle minute of the proxy under
    user-mode-linux; none now)."""
    buffer = bytearray(_READ_SIZE)
    view = memoryview(buffer)
    with open(PROC_TABLE, "rb", buffering=0) as table:
        # Each piece is a view of the buffer, summed (copied) before the next read.
        return table_checksum(view[:n] for n in iter(lambda: table.readinto(buffer), 0))


class NetlinkIpvs:
    """The kernel's IPVS table of the network namespace this was opened in."""

    def __init__(self, sock: nl.GenlSocket) -> None:
        self._sock = sock

    @classmethod
    async def open(cls) -> NetlinkIpvs:
        """Open a socket in the caller's network namespace; load ip_vs if needed."""
        sock = nl.GenlSocket()
        try:
            family = await sock.resolve()
            if family is None:
                try:
                    ok, why = await modprobe("ip_vs")
                except FileNotFoundError:
                    ok, why = False, "modprobe not found"
                if not ok:
                    raise KernelModuleError("ip_vs", why)
                family = await sock.resolve()
                if family is None:
                    raise KernelModuleError("ip_vs", "the IPVS netlink family is still missing")
            sock.family = family
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    async def __aenter__(self) -> NetlinkIpvs:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        self._sock.close()

    async def apply(self, ops: Sequence[IpvsOp]) -> None:
        validate_ops(ops)
        for name in sorted(schedulers_of(ops)):
            await ensure_scheduler(name)
        codes = await self._sock.execute(map(encode_op, ops))  # encoded batch by batch
        failures = [(op, failure_of(op, code)) for op, code in zip(ops, codes, strict=True) if code]
        if failures:
            raise IpvsBatchError(failures)

    async def _services(self, with_stats: bool) -> list[tuple[VirtualServer, Stats]]:
        [(code, replies)] = await self._sock.requests([nl.genl(nl.CMD_GET_SERVICE, b"")])
        if code:
            raise kernel_error(code)
        decoded = (decode_service(m, with_stats) for m in replies)
        services = [s for s in decoded if s is not None]
        _schedulers_present.update(server.scheduler for server, _ in services)
        return services

    async def _dests(self, keys: Sequence[VirtualServerKey]) -> list[list[RealServerStatus]]:
        payloads = [nl.service_message(nl.CMD_GET_DEST, _svc_key(key)) for key in keys]
        out = []
        for code, replies in await self._sock.requests(payloads):
            if code:
                raise kernel_error(code)
            out.append([decode_dest(m)[0] for m in replies])
        return out

    async def dump(self) -> IpvsTable:
        servers = [server for server, _ in await self._services(with_stats=False)]
        keys = [server.key for server in servers]
        dests = await self._dests(keys)
        return IpvsTable(
            {server.key: server for server in servers}, dict(zip(keys, dests, strict=True))
        )

    async def list_real_servers(self, virtual: VirtualServerKey) -> list[RealServerStatus]:
        validate_virtual_key(virtual)
        [dests] = await self._dests([virtual])
        return dests

    async def forwarding_methods(self, virtual: VirtualServerKey) -> dict[RealServerKey, int]:
        """IP_VS_CONN_F_* forwarding method per real server (0 = masquerade)."""
        validate_virtual_key(virtual)
        [(code, replies)] = await self._sock.requests(
            [nl.service_message(nl.CMD_GET_DEST, _svc_key(virtual))]
        )
        if code:
            raise kernel_error(code)
        return {status.server.key: fwd for status, fwd in map(decode_dest, replies)}

    async def fingerprint(self) -> int:
        return _proc_table_checksum()

    async def stats(self) -> dict[VirtualServerKey, Stats]:
        return {server.key: stats for server, stats in await self._services(with_stats=True)}

    async def set_timeouts(self, tcp: int, tcpfin: int, udp: int) -> None:
        validate_timeouts(tcp, tcpfin, udp)
        if not (tcp or tcpfin or udp):
            return
        [code] = await self._sock.execute([nl.config_message(tcp, tcpfin, udp)])
        if code:
            raise kernel_error(code)

    async def get_timeouts(self) -> tuple[int, int, int]:
        """(tcp, tcpfin, udp) in seconds, as ``ipvsadm -L --timeout``."""
        [(code, replies)] = await self._sock.requests([nl.genl(nl.CMD_GET_CONFIG, b"")], dump=False)
        if code:
            raise kernel_error(code)
        got = nl.genl_attrs(replies[0].data)
        return (
            u32(got[nl.CMD_ATTR_TIMEOUT_TCP]),
            u32(got[nl.CMD_ATTR_TIMEOUT_TCP_FIN]),
            u32(got[nl.CMD_ATTR_TIMEOUT_UDP]),
        )
