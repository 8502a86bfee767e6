"""Switching a node between proxies under traffic: a steady client, the real ipvsproxy
process, and what the kernel holds, read without starting a process."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.apiserver.server import ApiServer
from tests.support.pods import Pod, tcp_ask
from tests.support.proxy_node import kubeconfig


def ipvs_table() -> dict[str, dict[str, int]]:
    """/proc/net/ip_vs as {"TCP 172.30.0.41:80": {"10.244.1.2:80": weight}, "FWM 0x2c05":
    {...}} (IPv4; a file read, no process)."""
    table: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in Path("/proc/net/ip_vs").read_text().splitlines()[3:]:
        words = line.split()
        if not words:
            continue
        if words[0] == "->":
            if current is not None:
                current[_address(words[1])] = int(words[3])
        elif words[0] == "FWM":
            current = table.setdefault(f"FWM {int(words[1], 16):#x}", {})
        else:
            current = table.setdefault(f"{words[0]} {_address(words[1])}", {})
    return table


def serving(virtual_server: str) -> dict[str, int]:
    """The real servers of a virtual server that take new connections: those removed from
    the Service stay at weight 0 until their connections are gone (graceful termination;
    a closed connection is counted for the 10 s of IPVS's TCP CLOSE state)."""
    return {rs: w for rs, w in ipvs_table().get(virtual_server, {}).items() if w}


def _address(hex_address: str) -> str:
    ip, port = hex_address.split(":")
    return f"{ipaddress.IPv4Address(int(ip, 16))}:{int(port, 16)}"


async def eventually(condition: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Wait until ``condition()``; return how long it took. AssertionError on timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s: {condition.__doc__ or condition}")
        await asyncio.sleep(step)
    return time.monotonic() - started


@dataclass
class SteadyClient:
    """One new TCP connection every ``period`` seconds from ``source`` to address:port,
    each given ``timeout`` seconds to answer; what answered, and what failed, and when."""

    source: Pod
    address: str
    port: int
    period: float = 0.05
    timeout: float = 1.0
    answers: list[str] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    stopping: bool = False

    async def run(self) -> None:
        while not self.stopping:
            started = time.monotonic()
            try:
                self.answers.append(
                    await tcp_ask(self.address, self.port, self.source, self.timeout)
                )
            except (OSError, TimeoutError) as err:
                self.failures.append((time.time(), f"{type(err).__name__}: {err}"))
            await asyncio.sleep(max(0.0, self.period - (time.monotonic() - started)))


@contextlib.asynccontextmanager
async def steady(client: SteadyClient) -> AsyncIterator[SteadyClient]:
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        # The request under way ends first: every connection the kernel counted is
        # then an answer or a failure here (a cancelled one was neither).
        client.stopping = True
        with contextlib.suppress(TimeoutError):  # then wait_for has cancelled it
            await asyncio.wait_for(task, client.timeout + client.period + 1.0)


@dataclass
class ProxyProcess:
    """The real ``ipvsproxy`` started as the systemd unit and the chart start it: the shipped
    config file (packaging/config.yaml), in which only the kubeconfig and the HTTP
    addresses (loopback) differ, the node name, and ``conntrack.maxPerCore: 0``: the test's
    node is a network namespace, where the global nf_conntrack_max cannot be raised
    (kube-proxy would stop there too)."""

    process: asyncio.subprocess.Process
    log: Path
    started: float

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def log_records(log: str) -> list[dict[str, Any]]:
    """The proxy's JSON log lines, parsed (other lines skipped)."""
    records = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def logged_at(record: dict[str, Any]) -> float:
    """When the proxy logged ``record`` (wall clock, seconds)."""
    return datetime.datetime.fromisoformat(record["timestamp"]).timestamp()


def full_syncs(log: str) -> list[float]:
    """When each of the proxy's full syncs ended (wall clock), from its JSON log."""
    return [
        logged_at(record)
        for record in log_records(log)
        if record.get("event") == "synced" and record.get("full")
    ]


def has_synced(proxy: ProxyProcess) -> bool:
    """The proxy's first sync has ended: its rules are in place too."""
    return bool(full_syncs(proxy.output()))


def first_sync_end(log: str) -> float:
    ended = full_syncs(log)
    assert ended, f"no first sync in the proxy's log:\n{log}"
    return ended[0]


@contextlib.asynccontextmanager
async def stopped_after(proxy: ProxyProcess) -> AsyncIterator[ProxyProcess]:
    """The body's checks, then the proxy stopped, whatever they found: a failed check must
    not leave the process running (the session would wait on it until pytest-timeout).
    On success the proxy must exit 0; on failure its log is printed."""
    try:
        yield proxy
    except BaseException:
        await proxy.stop()
        print(proxy.output())
        raise
    assert await proxy.stop() == 0, proxy.output()


SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "packaging" / "config.yaml"


def shipped_config(server: ApiServer, workdir: Path, **fields: Any) -> Path:
    """packaging/config.yaml with this test's kubeconfig and loopback HTTP addresses, and
    ``fields`` (top-level KubeProxyConfiguration fields) when a test is about them."""
    doc = yaml.safe_load(SHIPPED_CONFIG.read_text())
    doc["clientConnection"]["kubeconfig"] = str(kubeconfig(server.url, workdir))
    doc["healthzBindAddress"] = "127.0.0.1:10256"
    doc["metricsBindAddress"] = "127.0.0.1:10249"
    doc["conntrack"]["maxPerCore"] = 0
    doc.update(fields)
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


async def start_proxy(
    server: ApiServer, workdir: Path, node: str, *extra: str, **fields: Any
) -> ProxyProcess:
    config = shipped_config(server, workdir, **fields)
    command = [
        sys.executable,
        "-m",
        "ipvsproxy",
        f"--config={config}",
        f"--hostname-override={node}",
        *extra,
    ]
    log = workdir / "ipvsproxy.log"
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(*command, stdout=out, stderr=out)
    return ProxyProcess(process, log, time.monotonic())


async def run_ipvsproxy(*args: str, timeout: float = 120) -> tuple[int, str]:
    """Run an ``ipvsproxy`` command (``hand-back``, ``--cleanup``) to its end."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ipvsproxy",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    return process.returncode or 0, out.decode(errors="replace")
