"""Frozen value types shared by the planner, the differ and the dataplane.

Addresses are kept as normalised strings (``ipaddress``'s compressed form):
they hash and compare fast, print as the kernel tools print them, and a
value built anywhere in the program compares equal to one read back from the
kernel. Constructors never parse; ``parse_ip`` is the one place that does.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import NamedTuple


class IpProtocol(enum.StrEnum):
    """A Service port protocol, by its Kubernetes name."""

    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"

    @property
    def number(self) -> int:
        """The IP protocol number the kernel uses."""
        return _PROTO_NUMBERS[self]

    @classmethod
    def from_number(cls, number: int) -> IpProtocol:
        for proto, value in _PROTO_NUMBERS.items():
            if value == number:
                return proto
        raise ValueError(f"unknown IP protocol number {number}")


_PROTO_NUMBERS = {IpProtocol.TCP: 6, IpProtocol.UDP: 17, IpProtocol.SCTP: 132}


class Family(enum.IntEnum):
    """An address family, valued as the socket module's AF_* constants."""

    V4 = 2
    V6 = 10

    @property
    def k8s_name(self) -> str:
        return "IPv4" if self is Family.V4 else "IPv6"


@functools.lru_cache(maxsize=8192)
def ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address``, remembered (the objects are immutable). A sync parses each
    address several times (its plan, then the IPVS and ipset checks), and parsing was
    the largest cost of planning 500 Services; the cache holds two such batches."""
    return ipaddress.ip_address(text)


def packed_ipv4(text: str) -> bytes | None:
    """``text``'s four bytes if it is an IPv4 address, else None.

    What inet_pton takes as IPv4 (four decimal octets, no leading zeros, nothing else) is
    exactly what ipaddress takes, already in normal form (property-tested), at a tenth of
    the cost: most addresses the proxy reads are IPv4, so each check tries this first.
    """
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except (OSError, TypeError, ValueError):
        return None


def parse_ip(text: str) -> str:
    """Return ``text`` as a normalised address string, or raise ValueError."""
    return text if packed_ipv4(text) is not None else _normalised(text)


@functools.lru_cache(maxsize=8192)
def _normalised(text: str) -> str:
    return str(ip_address(text))


def family_of(address: str) -> Family:
    """The family of a normalised address string (a colon means IPv6)."""
    return Family.V6 if ":" in address else Family.V4


# IPVS virtual server flags (include/uapi/linux/ip_vs.h).
FLAG_PERSISTENT = 0x0001
FLAG_HASHED = 0x0002  # set by the kernel on every listed service; never ours to set
FLAG_SCHED_SH_FALLBACK = 0x0008
FLAG_SCHED_SH_PORT = 0x0010
# mh reads the same bits as sh: kube-proxy sets 0x10 ("source hash") for mh.
FLAG_SCHED_MH_PORT = FLAG_SCHED_SH_PORT

SCHEDULERS = (
    "rr",
    "wrr",
    "lc",
    "wlc",
    "lblc",
    "lblcr",
    "dh",
    "sh",
    "sed",
    "nq",
    "mh",
    "fo",
    "ovf",
    "twos",
)


class VirtualServerKey(NamedTuple):
    """What identifies an IPVS virtual server: address, port and protocol, or a firewall mark.

    A firewall-mark virtual server (``fwmark`` not 0) matches packets by their mark alone:
    its ``address`` is the family's any-address and ``port`` 0 (see :func:`fwmark_key`).
    The kernel does not keep a protocol for it; the proxy's marks carry theirs
    (:mod:`ipvsproxy.core.fwmark`), so reading one back yields the same key.
    """

    address: str
    port: int
    protocol: IpProtocol
    fwmark: int = 0

    @property
    def family(self) -> Family:
        return family_of(self.address)

    def __str__(self) -> str:
        if self.fwmark:
            v6 = " IPv6" if ":" in self.address else ""
            return f"{self.protocol.value} FWM {self.fwmark:#x}{v6}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol.value} {host}:{self.port}"


ANY_ADDRESS = {Family.V4: "0.0.0.0", Family.V6: "::"}


def fwmark_key(family: Family, mark: int, protocol: IpProtocol) -> VirtualServerKey:
    """The key of the firewall-mark virtual server ``mark`` of ``family``."""
    return VirtualServerKey(ANY_ADDRESS[family], 0, protocol, mark)


class VirtualServer(NamedTuple):
    """An IPVS virtual server as the proxy wants it (or as the kernel holds it)."""

    key: VirtualServerKey
    scheduler: str = "rr"
    # Only FLAG_PERSISTENT and the scheduler flags: FLAG_HASHED is masked off
    # when reading from the kernel so that desired and observed compare equal.
    flags: int = 0
    # Persistence timeout in seconds (sessionAffinity: ClientIP); 0 = none.
    timeout: int = 0


class RealServerKey(NamedTuple):
    address: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


class RealServer(NamedTuple):
    """A destination of a virtual server. Forwarding is always masquerade."""

    key: RealServerKey
    weight: int = 1


class RealServerStatus(NamedTuple):
    """A real server as listed by the kernel, with its connection counters."""

    server: RealServer
    active_connections: int = 0
    inactive_connections: int = 0

    @property
    def connections(self) -> int:
        return self.active_connections + self.inactive_connections


class Stats(NamedTuple):
    """Cumulative IPVS counters of a virtual server."""

    connections: int = 0
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class ServiceKey(NamedTuple):
    """A Service by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class IpvsTable(NamedTuple):
    """A snapshot of the kernel's IPVS table."""

    virtual_servers: Mapping[VirtualServerKey, VirtualServer]
    real_servers: Mapping[VirtualServerKey, Sequence[RealServerStatus]]
