"""Start-up checks of the kernel (node_setup: setup_node, prepare_kernel) on the fakes: each
failure names its cause."""

from __future__ import annotations

import pytest

from ipvsproxy.app import settings_from
from ipvsproxy.config import Config
from ipvsproxy.dataplane.errors import (
    KernelModuleError,
    SchedulerUnavailableError,
    SysctlWriteError,
)
from ipvsproxy.dataplane.executor import Dataplane
from ipvsproxy.dataplane.fake_ipvs import FakeIpvs
from ipvsproxy.dataplane.fakes import FakeSysctls
from ipvsproxy.node_setup import prepare_kernel, setup_node
from tests.support.fake_dataplane import fake_dataplane


def dataplane(sysctls: FakeSysctls, ipvs: FakeIpvs | None = None) -> Dataplane:
    return fake_dataplane(sysctls=sysctls, ipvs=ipvs)


async def test_modules_sysctls_and_timeouts_as_kube_proxy() -> None:
    sysctls = FakeSysctls(release="5.4.0", available_modules=FakeSysctls().available | {"ip_vs_lc"})
    ipvs = FakeIpvs()
    config = Config(ipvs_scheduler="lc", ipvs_strict_arp=True, ipvs_tcp_timeout=900.0)
    await prepare_kernel(dataplane(sysctls, ipvs), config)
    assert {"ip_vs", "ip_vs_lc", "nf_conntrack"} <= sysctls.loaded
    assert sysctls.values["net/ipv4/vs/conntrack"] == "1"
    assert sysctls.values["net/ipv4/vs/conn_reuse_mode"] == "0"  # only before 5.9
    assert sysctls.values["net/ipv4/conf/all/arp_ignore"] == "1"
    assert sysctls.values["net/ipv4/conf/all/arp_announce"] == "2"
    assert sysctls.values["net/ipv4/ip_forward"] == "1"
    assert (await ipvs.get_timeouts())[0] == 900
    assert (await ipvs.dump()).virtual_servers == {}  # the scheduler probe was removed


async def test_a_missing_module_stops_start_up_naming_it() -> None:
    sysctls = FakeSysctls(available_modules={"ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"})
    with pytest.raises(KernelModuleError, match="'ip_vs'"):
        await prepare_kernel(dataplane(sysctls), Config())


async def test_a_scheduler_the_kernel_lacks_is_named() -> None:
    ipvs = FakeIpvs()
    ipvs.available_schedulers.discard("sed")
    sysctls = FakeSysctls(available_modules=FakeSysctls().available | {"ip_vs_sed"})
    with pytest.raises(SchedulerUnavailableError, match="'sed'"):
        await prepare_kernel(dataplane(sysctls, ipvs), Config(ipvs_scheduler="sed"))


def test_settings_carry_the_masquerade_bit() -> None:
    assert settings_from(Config(masquerade_bit=16)).masquerade_bit == 16
    assert settings_from(Config()).masquerade_bit == 14


async def test_setup_node_sets_conntrack_first_then_the_ipvs_sysctls() -> None:
    sysctls = FakeSysctls()
    config = Config(conntrack_tcp_be_liberal=True, conntrack_udp_timeout=45.0)
    await setup_node(dataplane(sysctls), config, cpus=8)
    written = [name for name, _ in sysctls.writes]
    assert written[:6] == [
        "net/netfilter/nf_conntrack_max",
        "nf_conntrack.hashsize",
        "net/netfilter/nf_conntrack_tcp_timeout_established",
        "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
        "net/netfilter/nf_conntrack_tcp_be_liberal",
        "net/netfilter/nf_conntrack_udp_timeout",
    ]
    assert sysctls.values["net/netfilter/nf_conntrack_max"] == "262144"
    assert sysctls.values["net/ipv4/vs/conntrack"] == "1"
    # A second run (the proxy after its --init-only init container) writes nothing.
    sysctls.writes.clear()
    await setup_node(dataplane(sysctls), config, cpus=8)
    assert sysctls.writes == []


async def test_a_setting_that_cannot_be_written_stops_start_up_naming_it() -> None:
    sysctls = FakeSysctls(read_only=["net/netfilter/nf_conntrack_tcp_timeout_established"])
    with pytest.raises(SysctlWriteError, match="nf_conntrack_tcp_timeout_established"):
        await setup_node(dataplane(sysctls), Config(), cpus=1)
