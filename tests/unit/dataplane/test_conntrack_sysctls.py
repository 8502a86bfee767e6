"""kube-proxy's conntrack settings: what is written for a core count, a config and a kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipvsproxy.dataplane.conntrack_sysctls import (
    HASHSIZE,
    MAX,
    MAX_LIMIT,
    TCP_BE_LIBERAL,
    TCP_CLOSE_WAIT,
    TCP_ESTABLISHED,
    UDP,
    UDP_STREAM,
    ConntrackSettings,
    apply_conntrack,
    conntrack_max,
    conntrack_writes,
    online_cpus,
)
from ipvsproxy.dataplane.errors import SysctlWriteError
from ipvsproxy.dataplane.fakes import FakeSysctls

DEFAULTS = ConntrackSettings()
OFF = ConntrackSettings(0, 0, 0.0, 0.0, False, 0.0, 0.0)


@pytest.mark.parametrize(
    ("max_per_core", "minimum", "cpus", "expected"),
    [
        (32768, 131072, 1, 131072),  # the floor: a small node
        (32768, 131072, 4, 131072),  # 4 x 32768 is exactly the floor
        (32768, 131072, 8, 262144),
        (32768, 131072, 32, 1048576),  # exactly the cap
        (32768, 131072, 64, MAX_LIMIT),  # capped (1.36, #137002)
        (32768, 2_000_000, 64, MAX_LIMIT),  # the cap wins over a larger min, as upstream
        (32768, 2_000_000, 8, 2_000_000),
        (1000, 0, 3, 3000),
        (0, 131072, 8, 0),  # maxPerCore 0: leave the limit alone, min unused
        (-1, 131072, 8, 0),
    ],
)
def test_conntrack_max(max_per_core: int, minimum: int, cpus: int, expected: int) -> None:
    settings = DEFAULTS._replace(max_per_core=max_per_core, min=minimum)
    assert conntrack_max(settings, cpus) == expected


KERNEL = {
    MAX: 65536,
    HASHSIZE: 16384,
    TCP_ESTABLISHED: 432000,
    TCP_CLOSE_WAIT: 60,
    TCP_BE_LIBERAL: 0,
    UDP: 30,
    UDP_STREAM: 120,
}


@pytest.mark.parametrize(
    ("settings", "cpus", "current", "expected"),
    [
        # kube-proxy's defaults on a fresh 8-CPU node.
        (
            DEFAULTS,
            8,
            KERNEL,
            {MAX: 262144, HASHSIZE: 65536, TCP_ESTABLISHED: 86400, TCP_CLOSE_WAIT: 3600},
        ),
        # Everything already as wanted: nothing to write.
        (
            DEFAULTS,
            8,
            KERNEL | {MAX: 262144, HASHSIZE: 65536, TCP_ESTABLISHED: 86400, TCP_CLOSE_WAIT: 3600},
            {},
        ),
        # A larger limit or hash size is kept (#142035: only ever raised).
        (
            DEFAULTS,
            1,
            KERNEL | {MAX: 500000, HASHSIZE: 200000, TCP_ESTABLISHED: 86400, TCP_CLOSE_WAIT: 3600},
            {},
        ),
        # A larger limit with a small hash size: the hash size still follows our limit.
        (
            DEFAULTS._replace(tcp_established_timeout=0, tcp_close_wait_timeout=0),
            1,
            KERNEL | {MAX: 500000, HASHSIZE: 4096},
            {HASHSIZE: 32768},
        ),
        # Unreadable values are written (kube-proxy's rule).
        (
            DEFAULTS,
            1,
            {},
            {MAX: 131072, HASHSIZE: 32768, TCP_ESTABLISHED: 86400, TCP_CLOSE_WAIT: 3600},
        ),
        # 0 and false leave everything alone.
        (OFF, 8, KERNEL, {}),
        # Every timeout, whole seconds (truncated); be_liberal 1.
        (
            OFF._replace(
                tcp_established_timeout=7200.9,
                tcp_close_wait_timeout=90,
                tcp_be_liberal=True,
                udp_timeout=45,
                udp_stream_timeout=150,
            ),
            8,
            KERNEL,
            {TCP_ESTABLISHED: 7200, TCP_CLOSE_WAIT: 90, TCP_BE_LIBERAL: 1}
            | {UDP: 45, UDP_STREAM: 150},
        ),
        # be_liberal false never writes 0 over an operator's 1; a sub-second timeout is 0.
        (OFF._replace(udp_timeout=0.5), 8, KERNEL | {TCP_BE_LIBERAL: 1}, {}),
        # A timeout that differs in either direction is written.
        (OFF._replace(udp_timeout=10), 8, KERNEL, {UDP: 10}),
    ],
)
def test_conntrack_writes(
    settings: ConntrackSettings,
    cpus: int,
    current: dict[str, int],
    expected: dict[str, int],
) -> None:
    assert conntrack_writes(settings, cpus, current) == expected


async def test_apply_writes_only_what_differs_and_then_nothing() -> None:
    sysctls = FakeSysctls()
    written = await apply_conntrack(sysctls, DEFAULTS, 8)
    assert written == {MAX: 262144, HASHSIZE: 65536, TCP_ESTABLISHED: 86400, TCP_CLOSE_WAIT: 3600}
    assert sysctls.values[MAX] == "262144"
    assert sysctls.parameters[HASHSIZE] == "65536"
    sysctls.writes.clear()
    assert await apply_conntrack(sysctls, DEFAULTS, 8) == {}
    assert sysctls.writes == []


async def test_read_only_values_that_match_are_fine_and_others_are_named() -> None:
    """A container whose /proc/sys is read-only (after an --init-only init container)."""
    everything = [MAX, HASHSIZE, TCP_ESTABLISHED, TCP_CLOSE_WAIT, TCP_BE_LIBERAL, UDP, UDP_STREAM]
    prepared = FakeSysctls()
    await apply_conntrack(prepared, DEFAULTS, 8)
    read_only = FakeSysctls(values=prepared.values, read_only=everything)
    read_only.parameters = dict(prepared.parameters)
    assert await apply_conntrack(read_only, DEFAULTS, 8) == {}
    with pytest.raises(SysctlWriteError, match="nf_conntrack_tcp_timeout_close_wait"):
        await apply_conntrack(read_only, DEFAULTS._replace(tcp_close_wait_timeout=60.0 * 30), 8)


async def test_outside_the_initial_namespace_the_limit_cannot_be_raised() -> None:
    sysctls = FakeSysctls(init_netns=False)
    with pytest.raises(SysctlWriteError, match="nf_conntrack_max"):
        await apply_conntrack(sysctls, DEFAULTS, 8)
    # maxPerCore 0 touches neither global setting: the timeouts alone are set.
    assert await apply_conntrack(sysctls, DEFAULTS._replace(max_per_core=0), 8) == {
        TCP_ESTABLISHED: 86400,
        TCP_CLOSE_WAIT: 3600,
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", 1), ("0-3", 4), ("0-3,6", 5), ("0,2,4-7", 6), ("0-127\n", 128)],
)
def test_online_cpus(tmp_path: Path, text: str, expected: int) -> None:
    path = tmp_path / "online"
    path.write_text(text)
    assert online_cpus(str(path)) == expected


def test_online_cpus_falls_back_to_the_process_count(tmp_path: Path) -> None:
    assert online_cpus(str(tmp_path / "missing")) >= 1
    (tmp_path / "bad").write_text("garbage")
    assert online_cpus(str(tmp_path / "bad")) >= 1
