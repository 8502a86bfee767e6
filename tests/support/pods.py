"""Pods for end-to-end tests: network namespaces with real servers, all in one process.

Every process start under user-mode-linux costs about half a second, so the
pods' servers and the clients are sockets of the test process itself, each
opened inside its pod's namespace (a socket keeps the namespace it was made
in). Each pod sits on its own routed /24 (and /64) behind a veth into the
node's namespace: replies always come back through the node, where IPVS
undoes its NAT, with or without masquerade.

    pod N:   10.244.N.2/24   fd00:244:N::2/64    eth0
    node:    10.244.N.1/24   fd00:244:N::1/64    vethN
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import AsyncIPRoute

from tests.support.netns import entered, make_netns


def write_sysctl(name: str, value: str) -> None:
    """Write a sysctl of the calling thread's network namespace."""
    Path("/proc/sys", name).write_text(value)


@dataclass
class Pod:
    name: str
    index: int
    ns: int  # namespace file descriptor
    servers: list[asyncio.AbstractServer | asyncio.DatagramTransport] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return f"10.244.{self.index}.2"

    @property
    def ip6(self) -> str:
        return f"fd00:244:{self.index}::2"

    @property
    def gateway(self) -> str:
        return f"10.244.{self.index}.1"

    def open_socket(self, family: int, kind: int) -> socket.socket:
        with entered(self.ns):
            return socket.socket(family, kind)

    async def serve_tcp(
        self, port: int, family: int = socket.AF_INET, *, peer: bool = False
    ) -> None:
        """Answer every connection with the pod's name (``peer``: with the source address
        the pod sees, to tell a masqueraded connection), then keep it open until the peer
        closes (so the test decides how long a connection lives)."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen = writer.get_extra_info("peername")[0]
            answer = f"{seen if peer else self.name}\n".encode()
            writer.write(answer)
            # Cancelled when the test ends with the connection open: not an error.
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.drain()
                while await reader.readline():
                    writer.write(answer)  # every line asked is answered, while it lives
                    await writer.drain()
            writer.close()

        sock = self.open_socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.ip if family == socket.AF_INET else self.ip6, port))
        sock.listen(128)
        self.servers.append(await asyncio.start_server(handle, sock=sock))

    async def serve_udp(self, port: int, family: int = socket.AF_INET) -> None:
        """Answer every datagram with the pod's name."""
        name = self.name.encode()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.transport.sendto(name, addr)  # type: ignore[attr-defined]

        sock = self.open_socket(family, socket.SOCK_DGRAM)
        sock.bind((self.ip if family == socket.AF_INET else self.ip6, port))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Echo, sock=sock)
        self.servers.append(transport)

    def close(self) -> None:
        for server in self.servers:
            server.close()


class PodNetwork:
    """Creates pods around the calling thread's namespace (the node)."""

    def __init__(self) -> None:
        self.pods: list[Pod] = []
        write_sysctl("net/ipv4/ip_forward", "1")
        write_sysctl("net/ipv6/conf/all/forwarding", "1")

    async def add_pod(self, name: str, index: int, *, host_if: str = "", bridge: str = "") -> Pod:
        """The pod's link on the node is ``host_if`` (default ``veth<index>``); with
        ``bridge``, that link is a port of the bridge (made if missing), and the bridge
        holds the node's addresses on the pod's subnet, as with a bridge CNI."""
        ns = make_netns()
        host_if = host_if or f"veth{index}"
        async with AsyncIPRoute() as ipr:
            await ipr.link(
                "add", ifname=host_if, kind="veth", peer={"ifname": "eth0", "net_ns_fd": ns}
            )
            (host,) = await ipr.link_lookup(ifname=host_if)
            if bridge:
                if not await ipr.link_lookup(ifname=bridge):
                    await ipr.link("add", ifname=bridge, kind="bridge")
                (gateway,) = await ipr.link_lookup(ifname=bridge)
                await ipr.link("set", index=host, master=gateway, state="up")
            else:
                gateway = host
            await _address(ipr, gateway, f"10.244.{index}.1", f"fd00:244:{index}::1")
        # The whole block runs inside the pod's namespace; nothing else is
        # scheduled meanwhile in the tests that use this.
        with entered(ns):
            await self._configure_pod(index)
        pod = Pod(name, index, ns)
        self.pods.append(pod)
        return pod

    @staticmethod
    async def _configure_pod(index: int) -> None:
        async with AsyncIPRoute() as pod_ipr:
            (eth0,) = await pod_ipr.link_lookup(ifname="eth0")
            await _address(pod_ipr, eth0, f"10.244.{index}.2", f"fd00:244:{index}::2")
            await pod_ipr.route("add", dst="0.0.0.0/0", gateway=f"10.244.{index}.1")
            await pod_ipr.route(
                "add", dst="::/0", gateway=f"fd00:244:{index}::1", family=socket.AF_INET6
            )

    def close(self) -> None:
        for pod in self.pods:
            pod.close()


async def _address(ipr: AsyncIPRoute, index: int, ip4: str, ip6: str) -> None:
    await ipr.addr("add", index=index, address=ip4, prefixlen=24)
    # IFA_F_NODAD: the address is usable at once, without duplicate detection.
    await ipr.addr("add", index=index, address=ip6, prefixlen=64, flags=0x02)
    await ipr.link("set", index=index, state="up")


def _reset_on_close(sock: socket.socket) -> None:
    # Close with RST: IPVS would otherwise count the connection in TIME_WAIT
    # (InActConn) for two minutes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def tcp_ask(address: str, port: int, source: Pod | None = None, timeout: float = 3.0) -> str:
    """Connect from ``source`` (None: the node) and return the name the server sends."""
    conn = await tcp_open(address, port, source, timeout)
    try:
        return await conn.name()
    finally:
        conn.close()


@dataclass
class TcpConnection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    timeout: float
    _name: str | None = None

    async def name(self) -> str:
        if self._name is None:
            line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            self._name = line.decode().strip()
        return self._name

    async def ask(self) -> str:
        """Ask again over the same connection (it is still served by the same pod)."""
        await self.name()
        self.writer.write(b"again\n")
        await self.writer.drain()
        line = await asyncio.wait_for(self.reader.readline(), self.timeout)
        return line.decode().strip()

    def close(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            _reset_on_close(sock)
        self.writer.close()


async def tcp_open(
    address: str, port: int, source: Pod | None = None, timeout: float = 3.0
) -> TcpConnection:
    """Open a connection that stays open until closed (for lc and termination tests)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = source.open_socket(family, socket.SOCK_STREAM) if source else socket.socket(family)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_connect(sock, (address, port)), timeout)
    reader, writer = await asyncio.open_connection(sock=sock)
    return TcpConnection(reader, writer, timeout)


async def udp_ask(address: str, port: int, source: Pod | None = None, timeout: float = 3.0) -> str:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = (
        source.open_socket(family, socket.SOCK_DGRAM)
        if source
        else socket.socket(family, socket.SOCK_DGRAM)
    )
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, (address, port))
        await loop.sock_sendall(sock, b"who")
        data = await asyncio.wait_for(loop.sock_recv(sock, 256), timeout)
        return data.decode()
    finally:
        sock.close()


@contextlib.contextmanager
def pod_network() -> Iterator[PodNetwork]:
    network = PodNetwork()
    try:
        yield network
    finally:
        network.close()
