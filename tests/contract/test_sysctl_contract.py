"""Contract: Sysctls (FakeSysctls, or ProcSysctls in a fresh netns; needs the ip_vs module).

The real one runs in a network namespace of its own, so the fake plays one too
(``init_netns=False``): the global conntrack settings refuse writes there.
"""

from __future__ import annotations

import pytest

from ipvsproxy.dataplane.errors import InvalidValueError, KernelModuleError, SysctlWriteError
from ipvsproxy.dataplane.fakes import FakeSysctls
from ipvsproxy.dataplane.interfaces import Sysctls
from ipvsproxy.dataplane.sysctl import IPVS_MODULES, ProcSysctls, apply_ipvs_sysctls, ipvs_sysctls


@pytest.fixture
async def sysctls(real: bool, netns: None) -> Sysctls:
    impl: Sysctls = ProcSysctls() if real else FakeSysctls(init_netns=False)
    await impl.ensure_modules(IPVS_MODULES)  # net/ipv4/vs/* exist once ip_vs is loaded
    return impl


async def test_set_and_get_roundtrip(sysctls: Sysctls) -> None:
    await sysctls.set("net/ipv4/vs/expire_nodest_conn", "1")
    assert await sysctls.get("net/ipv4/vs/expire_nodest_conn") == "1"
    await sysctls.set("net/ipv4/vs/expire_nodest_conn", "0")
    assert await sysctls.get("net/ipv4/vs/expire_nodest_conn") == "0"


async def test_unknown_and_invalid_are_typed_errors(sysctls: Sysctls) -> None:
    with pytest.raises(InvalidValueError, match="net/ipv4/vs/no_such") as info:
        await sysctls.get("net/ipv4/vs/no_such")
    assert info.value.field == "sysctl name"
    with pytest.raises(InvalidValueError, match="not-a-number"):
        await sysctls.set("net/ipv4/ip_forward", "not-a-number")


async def test_module_parameters_read_and_unknown_ones_are_typed_errors(sysctls: Sysctls) -> None:
    assert int(await sysctls.get_parameter("nf_conntrack", "hashsize")) > 0
    with pytest.raises(InvalidValueError, match=r"nf_conntrack\.no_such") as info:
        await sysctls.get_parameter("nf_conntrack", "no_such")
    assert info.value.field == "module parameter"
    with pytest.raises(InvalidValueError, match=r"nf_conntrack\.no_such"):
        await sysctls.set_parameter("nf_conntrack", "no_such", "1")


async def test_global_conntrack_settings_refuse_writes_outside_the_initial_netns(
    sysctls: Sysctls,
) -> None:
    """nf_conntrack_max and the hash size are the initial namespace's; a timeout is each
    namespace's own. Even the value already there cannot be written."""
    held = await sysctls.get("net/netfilter/nf_conntrack_max")
    with pytest.raises(SysctlWriteError, match="nf_conntrack_max") as info:
        await sysctls.set("net/netfilter/nf_conntrack_max", held)
    assert info.value.name == "sysctl net/netfilter/nf_conntrack_max"
    hashsize = await sysctls.get_parameter("nf_conntrack", "hashsize")
    with pytest.raises(SysctlWriteError, match=r"nf_conntrack\.hashsize"):
        await sysctls.set_parameter("nf_conntrack", "hashsize", hashsize)
    await sysctls.set("net/netfilter/nf_conntrack_udp_timeout", "42")
    assert await sysctls.get("net/netfilter/nf_conntrack_udp_timeout") == "42"


async def test_kernel_release_parses(sysctls: Sysctls) -> None:
    release = await sysctls.kernel_release()
    assert release[0].isdigit()
    assert "." in release


async def test_missing_module_error_names_it(sysctls: Sysctls) -> None:
    await sysctls.ensure_modules(["ip_vs"])  # loaded already: nothing to do
    with pytest.raises(KernelModuleError, match="ipvsproxy_no_such_module") as info:
        await sysctls.ensure_modules(["ip_vs", "ipvsproxy_no_such_module"])
    assert info.value.module == "ipvsproxy_no_such_module"


async def test_apply_ipvs_sysctls_sets_what_kube_proxy_sets(sysctls: Sysctls) -> None:
    release = await sysctls.kernel_release()
    wanted = ipvs_sysctls(release, strict_arp=True)
    for name in wanted:
        if name != "net/ipv4/vs/conn_reuse_mode":
            await sysctls.set(name, "0")
    before = {name: await sysctls.get(name) for name in wanted}
    changed = await apply_ipvs_sysctls(sysctls, release, strict_arp=True)
    assert changed == {n: v for n, v in wanted.items() if before[n] != v}
    assert "net/ipv4/conf/all/arp_announce" in changed
    for name, value in wanted.items():
        assert await sysctls.get(name) == value
    assert await apply_ipvs_sysctls(sysctls, release, strict_arp=True) == {}


@pytest.mark.parametrize(
    ("release", "reuse"),
    [("4.19.0-26-amd64", True), ("5.8.18", True), ("5.9.0", False), ("6.1.176", False)],
)
def test_conn_reuse_mode_only_before_5_9(release: str, reuse: bool) -> None:
    wanted = ipvs_sysctls(release, strict_arp=False)
    assert ("net/ipv4/vs/conn_reuse_mode" in wanted) is reuse
    assert wanted["net/ipv4/vs/conntrack"] == "1"
    assert "net/ipv4/conf/all/arp_ignore" not in wanted
