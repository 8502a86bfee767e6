"""The kernel test session: says which kernel it runs under, and refuses one without IPVS.

These tests need a kernel with IPVS and dummy links; ``tox -e kernel`` runs them
under user-mode-linux 6.1, ``tox -e kernel612`` under Linux 6.12 in qemu
(tests/vm/in_kernel.py). A session started on a kernel without IPVS stops at
once with a non-zero status instead of skipping, so a CI run can never pass
without having exercised the kernel. The session also says which iptables
backend the proxy detects there: legacy under the 6.1 user-mode-linux kernel
(no nf_tables for ip/ip6), nft under 6.12.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipvsproxy.dataplane.iptables import detect_backend
from tests.support.netns import fresh_netns


def pytest_sessionstart(session: pytest.Session) -> None:
    release = os.uname().release
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = f"kernel under test: {release}"
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line, flush=True)
    # One process start for every module the suites use (each start is slow here).
    # nf_tables last: modprobe -a stops at the first module it cannot load.
    subprocess.run(
        ["modprobe", "-a", "ip_vs", "ipv6", "veth", "dummy", "nf_conntrack", "nf_tables"],
        check=False,
        capture_output=True,
    )
    if not Path("/proc/net/ip_vs").exists():
        pytest.exit(
            f"kernel {release} has no IPVS (modprobe ip_vs failed); "
            "run these tests with tox -e kernel",
            returncode=3,
        )
    if os.geteuid() != 0:
        pytest.exit("the kernel tests must run as root", returncode=3)
    # In a fresh namespace, as each test starts in one (detection reads only its tables).
    with fresh_netns():
        backend = asyncio.run(detect_backend())
    line = f"iptables backend: {backend}"
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line, flush=True)


@pytest.fixture
def netns() -> Iterator[int]:
    """A fresh network namespace for this test; yields its file descriptor."""
    with fresh_netns() as fd:
        yield fd
