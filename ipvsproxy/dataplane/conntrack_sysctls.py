"""kube-proxy's conntrack settings: nf_conntrack_max from the core count, the table's hash
size, and the TCP and UDP timeouts (``--conntrack-*``, the config's ``conntrack``).

Without them a node keeps the kernel's defaults after every reboot: a table sized for a
small machine, and established TCP entries that live five days. kube-proxy's rules
(``pkg/proxy/conntrack/sysctls.go``, 1.36 with #142035):

- the limit is maxPerCore x CPUs, capped at 1,048,576 (#137002, where the cap wins even
  over a larger min), else at least min; maxPerCore 0 leaves the limit and the hash size
  alone, and min is then unused;
- nf_conntrack_max is only ever raised (#142035, backported to 1.36): a node whose
  operator set it higher keeps that, and a read-only /proc/sys that already allows as
  much is no error;
- the hash size (nf_conntrack's ``hashsize`` parameter) is raised to limit/4 when lower,
  the kernel's own ratio of entries to buckets;
- each timeout is written, in whole seconds, when it is above 0 and differs;
  tcp_be_liberal is written as 1 when true and never set back to 0.

``conntrack_writes`` decides (pure, from the settings, the CPU count and what the kernel
holds); ``apply_conntrack`` reads, decides and writes. A write that fails stops the
caller, as it stops kube-proxy ("could not set conntrack parameters"); only values that
differ are written, so a container whose /proc/sys is read-only starts fine once an
``--init-only`` init container has set them. nf_conntrack_max and the hash size are
global: only the initial network namespace may write them (the node's, for a proxy on
the host network); the timeouts belong to each namespace.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from ipvsproxy.dataplane.interfaces import Sysctls

MAX = "net/netfilter/nf_conntrack_max"
TCP_ESTABLISHED = "net/netfilter/nf_conntrack_tcp_timeout_established"
TCP_CLOSE_WAIT = "net/netfilter/nf_conntrack_tcp_timeout_close_wait"
TCP_BE_LIBERAL = "net/netfilter/nf_conntrack_tcp_be_liberal"
UDP = "net/netfilter/nf_conntrack_udp_timeout"
UDP_STREAM = "net/netfilter/nf_conntrack_udp_timeout_stream"
# The module parameter, named here as one more setting (module.parameter).
HASHSIZE_MODULE, HASHSIZE_PARAMETER = "nf_conntrack", "hashsize"
HASHSIZE = f"{HASHSIZE_MODULE}.{HASHSIZE_PARAMETER}"
# kube-proxy 1.36 (#137002): no more entries than this from maxPerCore, however many CPUs.
MAX_LIMIT = 1 << 20


class ConntrackSettings(NamedTuple):
    """The config's ``conntrack`` section; durations in seconds, 0 meaning "leave it"."""

    max_per_core: int = 32768
    min: int = 131072
    tcp_established_timeout: float = 86400.0
    tcp_close_wait_timeout: float = 3600.0
    tcp_be_liberal: bool = False
    udp_timeout: float = 0.0
    udp_stream_timeout: float = 0.0


def conntrack_max(settings: ConntrackSettings, cpus: int) -> int:
    """The nf_conntrack_max kube-proxy wants for ``cpus`` CPUs; 0 means none."""
    if settings.max_per_core <= 0:
        return 0
    scaled = settings.max_per_core * cpus
    if scaled > MAX_LIMIT:
        return MAX_LIMIT
    return max(scaled, settings.min)


def conntrack_writes(
    settings: ConntrackSettings, cpus: int, current: Mapping[str, int | None]
) -> dict[str, int]:
    """{setting: value} to write, in order, given the values the kernel holds (None: could
    not be read, which kube-proxy treats as "write it")."""
    writes: dict[str, int] = {}
    limit = conntrack_max(settings, cpus)
    if limit > 0:
        held = current.get(MAX)
        if held is None or held < limit:
            writes[MAX] = limit
        hashsize = current.get(HASHSIZE)
        if hashsize is None or hashsize < limit // 4:
            writes[HASHSIZE] = limit // 4
    for name, seconds in (
        (TCP_ESTABLISHED, settings.tcp_established_timeout),
        (TCP_CLOSE_WAIT, settings.tcp_close_wait_timeout),
        (TCP_BE_LIBERAL, 1 if settings.tcp_be_liberal else 0),
        (UDP, settings.udp_timeout),
        (UDP_STREAM, settings.udp_stream_timeout),
    ):
        value = int(seconds)  # whole seconds, truncated, as kube-proxy's
        if value > 0 and current.get(name) != value:
            writes[name] = value
    return writes


def online_cpus(path: str = "/sys/devices/system/cpu/online") -> int:
    """The node's online CPUs (``0-3,6``), as kube-proxy counts them: the machine's, not
    this process's affinity or cgroup; os.cpu_count() where sysfs cannot tell."""
    try:
        with open(path) as f:
            text = f.read().strip()
        count = 0
        for part in text.split(","):
            first, _, last = part.partition("-")
            count += int(last or first) - int(first) + 1
    except (OSError, ValueError):
        count = 0
    return count if count > 0 else os.cpu_count() or 1


async def _read(sysctls: Sysctls, name: str) -> int | None:
    if name == HASHSIZE:
        # Not guarded: kube-proxy fails when it cannot read the hash size.
        return int(await sysctls.get_parameter(HASHSIZE_MODULE, HASHSIZE_PARAMETER))
    try:
        return int(await sysctls.get(name))
    except (OSError, ValueError):
        return None


async def apply_conntrack(
    sysctls: Sysctls, settings: ConntrackSettings, cpus: int
) -> dict[str, int]:
    """Write what differs; return it. Raises the Sysctls errors (SysctlWriteError names
    a setting this place may not write) at the first write that fails."""
    names = [TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_BE_LIBERAL, UDP, UDP_STREAM]
    if conntrack_max(settings, cpus) > 0:
        names = [MAX, HASHSIZE, *names]
    current = {name: await _read(sysctls, name) for name in names}
    writes = conntrack_writes(settings, cpus, current)
    for name, value in writes.items():
        if name == HASHSIZE:
            await sysctls.set_parameter(HASHSIZE_MODULE, HASHSIZE_PARAMETER, str(value))
        else:
            await sysctls.set(name, str(value))
    return writes
