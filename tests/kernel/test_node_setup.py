"""What the proxy does to a node besides IPVS, under the real kernel: kube-proxy's conntrack
settings, and ``--init-only``.

nf_conntrack_max and nf_conntrack's hash size are global: only the initial network
namespace may write them (elsewhere they read fine and refuse writes, even of the value
already there; tests/contract/test_sysctl_contract.py). The tests that set them run in the
initial namespace of the test kernel and put back what they found.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ipvsproxy.app import init_node
from ipvsproxy.config import Config
from ipvsproxy.dataplane.conntrack_sysctls import (
    HASHSIZE,
    MAX,
    TCP_BE_LIBERAL,
    TCP_CLOSE_WAIT,
    TCP_ESTABLISHED,
    UDP,
    UDP_STREAM,
    ConntrackSettings,
    apply_conntrack,
    online_cpus,
)
from ipvsproxy.dataplane.errors import SysctlWriteError
from ipvsproxy.dataplane.sysctl import ProcSysctls

TIMEOUTS = (TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_BE_LIBERAL, UDP, UDP_STREAM)
HASHSIZE_FILE = Path("/sys/module/nf_conntrack/parameters/hashsize")
NODEST = "net/ipv4/vs/expire_nodest_conn"  # one of the IPVS sysctls


def write(name: str, value: int) -> None:
    """A sysctl (``net/...``) or the hash size, in the calling thread's namespace."""
    path = HASHSIZE_FILE if name == HASHSIZE else Path("/proc/sys", name)
    path.write_text(str(value))


def read() -> dict[str, int]:
    """The conntrack settings as the calling thread's namespace sees them."""
    values = {name: int(Path("/proc/sys", name).read_text()) for name in (MAX, *TIMEOUTS)}
    return values | {HASHSIZE: int(HASHSIZE_FILE.read_text())}


@pytest.fixture
def initial_netns() -> Iterator[dict[str, int]]:
    """The test kernel's initial namespace (where the session starts); yields its conntrack
    settings and writes them back afterwards."""
    before = read()
    try:
        yield before
    finally:
        for name, value in before.items():
            write(name, value)


async def test_conntrack_is_set_as_kube_proxy_sets_it_for_a_core_count(
    initial_netns: dict[str, int],
) -> None:
    sysctls = ProcSysctls()
    # A kernel-default table, as on a node just booted (this kernel's is small: 4096/8192).
    write(MAX, 4096)
    write(HASHSIZE, 4096)
    settings = ConntrackSettings(udp_timeout=45.0, udp_stream_timeout=150.0, tcp_be_liberal=True)
    # 4 CPUs x 32768 is the floor, 131072; the hash size follows at a quarter.
    written = await apply_conntrack(sysctls, settings, cpus=4)
    expected = {TCP_ESTABLISHED: 86400, TCP_CLOSE_WAIT: 3600, TCP_BE_LIBERAL: 1, UDP: 45}
    expected |= {UDP_STREAM: 150, MAX: 131072, HASHSIZE: 32768}
    assert written == expected
    assert read() == expected
    # 8 CPUs: raised again; and then nothing differs, nothing is written.
    assert await apply_conntrack(sysctls, settings, cpus=8) == {MAX: 262144, HASHSIZE: 65536}
    assert read()[MAX] == 262144
    assert await apply_conntrack(sysctls, settings, cpus=8) == {}
    # Fewer CPUs never lower the limit (kube-proxy #142035).
    assert await apply_conntrack(sysctls, settings, cpus=1) == {}
    assert read()[MAX] == 262144


async def test_zero_and_null_leave_every_value_alone(netns: int) -> None:
    """In a namespace of its own: the timeouts are per namespace, so this one's are known."""
    sysctls = ProcSysctls()
    for name, value in zip(TIMEOUTS, (1000, 61, 0, 31, 121), strict=True):
        await sysctls.set(name, str(value))
    before = read()
    off = ConntrackSettings(0, 0, 0.0, 0.0, False, 0.0, 0.0)
    assert await apply_conntrack(sysctls, off, online_cpus()) == {}
    assert read() == before


async def test_read_only_values_that_match_pass_and_the_first_other_one_is_named(
    netns: int,
) -> None:
    """Outside the initial namespace nf_conntrack_max is read-only: asking for no more than
    it holds passes (kube-proxy only raises it), asking for more fails naming it."""
    sysctls = ProcSysctls()
    held = read()
    enough = ConntrackSettings(max_per_core=1, min=held[MAX])
    assert await apply_conntrack(sysctls, enough, cpus=1) == {
        TCP_ESTABLISHED: 86400,
        TCP_CLOSE_WAIT: 3600,
    }
    with pytest.raises(SysctlWriteError, match="nf_conntrack_max"):
        await apply_conntrack(sysctls, enough._replace(min=held[MAX] * 2), cpus=1)


async def ipvsproxy(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ipvsproxy", *args, "--log-format=json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode()


async def test_init_only_sets_the_node_up_and_exits(initial_netns: dict[str, int]) -> None:
    write(MAX, 4096)
    write(TCP_ESTABLISHED, 432000)
    write(NODEST, 0)
    status, out = await ipvsproxy("--init-only", "--conntrack-min=200000")
    assert status == 0, out
    assert "node set up" in out
    assert read()[MAX] == max(200000, 32768 * online_cpus())
    assert read()[TCP_ESTABLISHED] == 86400
    assert int(await ProcSysctls().get(NODEST)) == 1


async def test_init_only_that_cannot_set_a_value_says_which_in_one_line(netns: int) -> None:
    """In a namespace of its own nf_conntrack_max cannot be raised: kube-proxy stops there.
    (In this process: the real command's output was shown by the test above.)"""
    with capture_logs() as logs:
        status = await init_node(Config(conntrack_min=100_000_000))
    assert status == 1
    errors = [entry for entry in logs if entry["log_level"] == "error"]
    assert len(errors) == 1, logs
    assert "nf_conntrack_max" in errors[0]["error"]
