"""The runner end to end: a dummy link, a VIP and an IPVS service, straight through pyroute2.

It proves the kernel under test has what the proxy needs before the proxy's own
code is involved, so a failure here points at the environment, not the product.
"""

from __future__ import annotations

import socket

from pyroute2 import IPVS, IPRoute, IPVSDest, IPVSService

VIP = "10.96.0.10"
PODS = ("10.244.1.2", "10.244.2.2")
MASQUERADE = 0  # IP_VS_CONN_F_MASQ; pyroute2's IPVSDest default (3) is direct routing


def test_dummy_link_vip_and_ipvs_service(netns: int) -> None:
    with IPRoute() as ipr:
        ipr.link("add", ifname="kube-ipvs0", kind="dummy")
        index = ipr.link_lookup(ifname="kube-ipvs0")[0]
        ipr.addr("add", index=index, address=VIP, prefixlen=32)
        bound = [a.get("IFA_ADDRESS") for a in ipr.get_addr(index=index)]
        assert bound == [VIP]

    ipvs = IPVS()
    try:
        service = IPVSService(addr=VIP, port=80, protocol=socket.IPPROTO_TCP, sched_name="rr")
        ipvs.service("add", service=service)
        for pod in PODS:
            dest = IPVSDest(addr=pod, port=8080, weight=1, fwd_method=MASQUERADE)
            ipvs.dest("add", service=service, dest=dest)

        services = [IPVSService.from_message(m) for m in ipvs.service("dump")]
        assert [(s["addr"], s["port"], s["sched_name"]) for s in services] == [(VIP, 80, "rr")]
        dests = list(ipvs.dest("dump", service=service))
        seen = sorted(
            (
                d.get_nested("IPVS_CMD_ATTR_DEST", "IPVS_DEST_ATTR_PORT"),
                d.get_nested("IPVS_CMD_ATTR_DEST", "IPVS_DEST_ATTR_FWD_METHOD"),
            )
            for d in dests
        )
        assert seen == [(8080, MASQUERADE), (8080, MASQUERADE)]
        with open("/proc/net/ip_vs") as table:
            text = table.read()
        assert "0A60000A:0050 rr" in text  # 10.96.0.10:80, as the kernel prints it
        assert text.count("Masq") == 2

        ipvs.service("del", service=service)
        assert list(ipvs.service("dump")) == []
    finally:
        ipvs.close()
