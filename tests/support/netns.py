"""Run a test inside a fresh network namespace of its own.

IPVS tables, links, addresses, ipsets, iptables and conntrack are all per
network namespace, so a test that unshares one starts from an empty kernel
and leaves nothing behind. Process starts are slow under user-mode-linux,
so this switches the calling thread with unshare()/setns() through libc
instead of running ``ip netns``. Subprocesses forked from this thread (ipset,
iptables-restore, ...) inherit the namespace; sockets keep the namespace they
were created in.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
from collections.abc import Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def set_link_up(name: str) -> None:
    """Bring an interface up with an ioctl: no process start, no netlink library."""
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        import fcntl

        req = struct.pack("16sH14x", name.encode(), 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), flags | IFF_UP))


@contextlib.contextmanager
def fresh_netns() -> Iterator[int]:
    """Switch this thread into a new, empty network namespace (loopback up).

    Yields a file descriptor of the new namespace (valid inside the block),
    which can be handed to ``entered`` to come back later.
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            set_link_up("lo")
            yield own
        finally:
            setns(original)
            os.close(own)
    finally:
        os.close(original)


@contextlib.contextmanager
def entered(ns_fd: int) -> Iterator[None]:
    """Temporarily enter the namespace ``ns_fd`` (e.g. to open a pod's socket)."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(ns_fd)
        try:
            yield
        finally:
            setns(back)
    finally:
        os.close(back)


def make_netns() -> int:
    """Create a new network namespace (loopback up) and return a file descriptor for it.

    The calling thread stays where it was. The namespace lives as long as the
    descriptor (or a socket or process inside it) does.
    """
    with fresh_netns() as fd:
        return os.dup(fd)
