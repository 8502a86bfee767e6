"""Every cleanup path of this layer leaves the operator's own state alone (real kernel).

Before: an operator's IPVS service on an address that is not ours (made with ipvsadm), an
operator's iptables rule and chain, an operator's ipset; plus everything the proxy makes.
Then every cleanup path runs: deleting the virtual servers ``ownership.owned_state`` finds ours
in a dump of the real table, iptables cleanup (both families), destroying the KUBE-* sets,
unbinding our addresses and deleting kube-ipvs0. After: the operator's state is intact.
"""

from __future__ import annotations

import ipaddress
import subprocess

from ipvsproxy.core.ipset_catalog import all_specs
from ipvsproxy.core.model import Family, IpProtocol, VirtualServerKey
from ipvsproxy.core.ops import DeleteVirtualServer
from ipvsproxy.core.ownership import owned_state
from ipvsproxy.dataplane.addresses import NetlinkAddresses
from ipvsproxy.dataplane.ipsets import IpsetCli, destroy_owned
from ipvsproxy.dataplane.iptables import IptablesCli, RulesSyncer, detect_backend
from ipvsproxy.dataplane.iptables_rules import RulesConfig
from ipvsproxy.dataplane.ipvs import NetlinkIpvs


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def nft_programs_this_kernel() -> bool:
    """Whether iptables' nft backend can make a chain here: yes under Linux 6.12, no under the
    6.1 user-mode-linux kernel (no nf_tables for ip/ip6)."""
    probe = ["iptables-nft", "-w", "-t", "mangle", "-N", "OWNERSHIP-PROBE"]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        return False
    sh("iptables-nft", "-w", "-t", "mangle", "-X", "OWNERSHIP-PROBE")
    return True


async def test_cleanup_paths_keep_operator_state(netns: int) -> None:
    # Nobody holds rules yet, so detection must follow what the kernel can do.
    expected = "nft" if nft_programs_this_kernel() else "legacy"
    backend = await detect_backend()
    assert backend == expected
    save = f"iptables-{backend}-save"
    # The operator's state.
    sh("ipvsadm", "-A", "-t", "192.0.2.50:80", "-s", "rr")
    sh("ipvsadm", "-a", "-t", "192.0.2.50:80", "-r", "192.0.2.51:80", "-m")
    sh("ipvsadm", "-A", "-t", "192.0.2.7:22", "-s", "rr")  # on a node address we serve too
    sh(f"iptables-{backend}", "-w", "-A", "INPUT", "-s", "192.0.2.9", "-j", "ACCEPT")
    sh(f"iptables-{backend}", "-w", "-t", "nat", "-N", "OPERATOR")
    sh(f"iptables-{backend}", "-w", "-t", "nat", "-A", "OUTPUT", "-j", "OPERATOR")
    sh("ipset", "create", "operator-set", "hash:ip")
    sh("ipset", "add", "operator-set", "192.0.2.9")
    before_ipvs = sh("ipvsadm", "-Ln")
    before_filter, before_nat = sh(save, "-t", "filter"), sh(save, "-t", "nat")

    # Everything of ours.
    addresses, ipsets, iptables = NetlinkAddresses(), IpsetCli(), IptablesCli(backend)
    await addresses.ensure_dummy()
    await addresses.bind(["10.96.0.10", "10.96.0.11", "fd00::10"])
    specs = all_specs(Family.V4) + all_specs(Family.V6)
    names = {s.name for s in specs}
    await ipsets.ensure(specs)
    await ipsets.update(
        {
            "KUBE-CLUSTER-IP": ({"10.96.0.10,tcp:80"}, set()),
            "KUBE-NODE-PORT-TCP": ({"30080"}, set()),
        }
    )
    # Ours: ClusterIPs on kube-ipvs0, a NodePort on the node address; one VIP excluded.
    for vip in ("10.96.0.10:80", "[fd00::10]:80", "192.0.2.7:30080", "10.96.0.11:80"):
        sh("ipvsadm", "-A", "-t", vip, "-s", "rr")
    sh("ipvsadm", "-a", "-t", "10.96.0.10:80", "-r", "10.244.0.5:8080", "-m")
    for family in Family:
        await RulesSyncer(iptables, family).sync(RulesConfig())
    assert "KUBE-SERVICES" in sh(save, "-t", "nat")

    # Every cleanup path.
    entries = {n: await ipsets.entries(n) for n in await ipsets.list_names() if n in names}
    tcp = IpProtocol.TCP
    excluded = VirtualServerKey("10.96.0.11", 80, tcp)
    async with await NetlinkIpvs.open() as ipvs:
        exclude = [ipaddress.ip_network("10.96.0.11/32")]
        ours = owned_state(await ipvs.dump(), await addresses.bound(), entries, exclude)
        assert set(ours.virtual_servers) == {
            VirtualServerKey("10.96.0.10", 80, tcp),
            VirtualServerKey("fd00::10", 80, tcp),
            VirtualServerKey("192.0.2.7", 30080, tcp),
        }
        assert len(ours.real_servers[VirtualServerKey("10.96.0.10", 80, tcp)]) == 1
        await ipvs.apply([DeleteVirtualServer(key) for key in ours.virtual_servers])
        await ipvs.apply([DeleteVirtualServer(excluded)])  # excluded: left to the operator
    for family in Family:
        await iptables.cleanup(family)
    assert sorted(await destroy_owned(ipsets)) == sorted(s.name for s in specs)
    await addresses.unbind(["10.96.0.10", "10.96.0.11", "fd00::10"])
    await addresses.delete_dummy()
    await addresses.close()

    assert sh("ipvsadm", "-Ln") == before_ipvs
    assert "192.0.2.50:80" in before_ipvs
    body = lambda text: [x for x in text.splitlines() if not x.startswith("#")]  # noqa: E731
    assert body(sh(save, "-t", "filter")) == body(before_filter)
    assert body(sh(save, "-t", "nat")) == body(before_nat)
    assert "-A INPUT -s 192.0.2.9/32 -j ACCEPT" in before_filter
    assert "KUBE-" not in sh(save) + sh(f"ip6tables-{backend}-save")
    assert sh("ipset", "list", "-n").split() == ["operator-set"]
    assert "192.0.2.9" in sh("ipset", "list", "operator-set")
    assert "kube-ipvs0" not in sh("ip", "link")
