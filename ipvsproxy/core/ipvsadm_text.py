"""Text for ``ipvsproxy plan``: the IPVS table as ``ipvsadm -Ln`` prints it, then the
addresses bound to kube-ipvs0 and the ipset entries. Pure: values in, text out.

Unlike ipvsadm (which lists in hash order) everything is sorted, so two plans
can be compared with diff. Addresses sort numerically, IPv4 before IPv6.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from ipvsproxy.core.model import (
    FLAG_PERSISTENT,
    RealServer,
    RealServerStatus,
    VirtualServer,
    VirtualServerKey,
)

HEADER = (
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
)

# Scheduler flag bits (IP_VS_SVC_F_SCHED1..3) and how ipvsadm names them.
_SCHED_FLAGS = (0x0008, 0x0010, 0x0020)
_SCHED_FLAG_NAMES = {
    "sh": ("sh-fallback", "sh-port", "flag-3"),
    "mh": ("mh-fallback", "mh-port", "flag-3"),
}


def _ip_key(address: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(address)
    return (ip.version, int(ip))


def _vs_sort_key(key: VirtualServerKey) -> tuple[Any, ...]:
    return (key.fwmark, *_ip_key(key.address), key.port, key.protocol.value)


def service_line(vs: VirtualServer) -> str:
    """``TCP  10.96.0.10:53 rr`` with ipvsadm's flag notes (``FWM  11269 IPv6 rr``)."""
    key = vs.key
    if key.fwmark:
        v6 = " IPv6" if ":" in key.address else ""
        line = f"FWM  {key.fwmark}{v6} {vs.scheduler}"
    else:
        host = f"[{key.address}]" if ":" in key.address else key.address
        line = f"{key.protocol.value}  {host}:{key.port} {vs.scheduler}"
    names = _SCHED_FLAG_NAMES.get(vs.scheduler, ("flag-1", "flag-2", "flag-3"))
    flags = [name for bit, name in zip(_SCHED_FLAGS, names, strict=True) if vs.flags & bit]
    if flags:
        line += f" ({','.join(flags)})"
    if vs.flags & FLAG_PERSISTENT:
        line += f" persistent {vs.timeout}"
    return line


def real_server_line(rs: RealServer | RealServerStatus) -> str:
    """``  -> 10.244.1.5:53                Masq    1      0          0``."""
    status = rs if isinstance(rs, RealServerStatus) else RealServerStatus(rs)
    server = status.server
    return (
        f"  -> {server.key!s:<28} {'Masq':<7} {server.weight:<6} "
        f"{status.active_connections:<10} {status.inactive_connections}"
    )


def _servers(value: Any) -> list[RealServerStatus]:
    items = value.values() if isinstance(value, Mapping) else value
    out = [r if isinstance(r, RealServerStatus) else RealServerStatus(r) for r in items]
    return sorted(out, key=lambda r: (*_ip_key(r.server.key.address), r.server.key.port))


def format_ipvs(
    virtual_servers: Iterable[VirtualServer],
    real_servers: Mapping[VirtualServerKey, Any],
) -> str:
    """The table: header, then each virtual server and its real servers.

    ``real_servers`` maps a virtual server key to its real servers, given as
    an iterable of RealServer/RealServerStatus or a mapping whose values are.
    """
    lines = [HEADER]
    for vs in sorted(virtual_servers, key=lambda v: _vs_sort_key(v.key)):
        lines.append(service_line(vs))
        lines.extend(real_server_line(rs) for rs in _servers(real_servers.get(vs.key, ())))
    return "\n".join(lines)


def format_plan(
    virtual_servers: Iterable[VirtualServer],
    real_servers: Mapping[VirtualServerKey, Any],
    addresses: Iterable[str],
    ipsets: Mapping[str, Iterable[str]],
) -> str:
    """The whole ``plan`` output, ending with a newline."""
    parts = [format_ipvs(virtual_servers, real_servers), "", "kube-ipvs0 addresses:"]
    parts.extend(f"  {a}" for a in sorted(addresses, key=_ip_key))
    parts += ["", "ipset entries:"]
    for name in sorted(ipsets):
        entries = sorted(ipsets[name])
        if not entries:
            continue
        parts.append(f"  {name}")
        parts.extend(f"    {e}" for e in entries)
    return "\n".join(parts) + "\n"
