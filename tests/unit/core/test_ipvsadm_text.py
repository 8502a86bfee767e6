"""ipvsadm_text: ipvsadm -Ln text, sorted, then addresses and ipset entries."""

from __future__ import annotations

from ipvsproxy.core.ipvsadm_text import (
    HEADER,
    format_ipvs,
    format_plan,
    real_server_line,
    service_line,
)
from ipvsproxy.core.model import (
    FLAG_PERSISTENT,
    FLAG_SCHED_SH_FALLBACK,
    FLAG_SCHED_SH_PORT,
    Family,
    IpProtocol,
    RealServer,
    RealServerKey,
    RealServerStatus,
    VirtualServer,
    VirtualServerKey,
    fwmark_key,
)


def vs(address: str, port: int, proto: IpProtocol = IpProtocol.TCP, **kw: object) -> VirtualServer:
    return VirtualServer(VirtualServerKey(address, port, proto), **kw)  # type: ignore[arg-type]


def rs(address: str, port: int, weight: int = 1) -> RealServer:
    return RealServer(RealServerKey(address, port), weight)


def test_lines_match_ipvsadm_columns() -> None:
    assert service_line(vs("10.96.0.10", 53, IpProtocol.UDP)) == "UDP  10.96.0.10:53 rr"
    assert service_line(vs("fd00::10", 80, scheduler="lc")) == "TCP  [fd00::10]:80 lc"
    # ipvsadm's "  -> %-28s %-7s %-6d %-10u %-10u" (without the trailing pad).
    assert real_server_line(rs("10.244.1.5", 53)) == (
        "  -> 10.244.1.5:53                Masq    1      0          0"
    )
    status = RealServerStatus(rs("fd00::5", 8080, 0), 3, 12)
    assert real_server_line(status) == (
        "  -> [fd00::5]:8080               Masq    0      3          12"
    )


def test_firewall_mark_services_print_as_ipvsadm_does() -> None:
    v4 = VirtualServer(fwmark_key(Family.V4, 0x2C05, IpProtocol.TCP))
    assert service_line(v4) == "FWM  11269 rr"
    v6 = VirtualServer(fwmark_key(Family.V6, 0x2C06, IpProtocol.UDP), "lc")
    assert service_line(v6) == "FWM  11270 IPv6 lc"


def test_persistence_and_scheduler_flags() -> None:
    sticky = vs("10.0.0.1", 80, flags=FLAG_PERSISTENT, timeout=10800)
    assert service_line(sticky) == "TCP  10.0.0.1:80 rr persistent 10800"
    sh = vs("10.0.0.1", 80, scheduler="sh", flags=FLAG_SCHED_SH_FALLBACK | FLAG_SCHED_SH_PORT)
    assert service_line(sh) == "TCP  10.0.0.1:80 sh (sh-fallback,sh-port)"
    mh = vs("10.0.0.1", 80, scheduler="mh", flags=FLAG_SCHED_SH_PORT)
    assert service_line(mh) == "TCP  10.0.0.1:80 mh (mh-port)"


def test_table_is_sorted_numerically_v4_before_v6() -> None:
    servers = [
        vs("fd00::1", 80),
        vs("10.96.0.10", 53),
        vs("10.96.0.9", 443),
        vs("10.96.0.10", 53, IpProtocol.UDP),
    ]
    real = {
        servers[1].key: {
            RealServerKey("10.244.1.10", 53): RealServerStatus(rs("10.244.1.10", 53)),
            RealServerKey("10.244.1.9", 53): RealServerStatus(rs("10.244.1.9", 53)),
        },
        servers[2].key: [rs("10.244.0.2", 8443, 2)],
    }
    lines = format_ipvs(servers, real).splitlines()
    assert lines[:2] == HEADER.splitlines()
    assert [line.split()[1] for line in lines[2:]] == [
        "10.96.0.9:443",
        "10.244.0.2:8443",
        "10.96.0.10:53",
        "10.244.1.9:53",
        "10.244.1.10:53",
        "10.96.0.10:53",
        "[fd00::1]:80",
    ]
    assert lines[4].startswith("TCP  10.96.0.10:53")
    assert lines[7].startswith("UDP  10.96.0.10:53")


def test_plan_sections() -> None:
    text = format_plan(
        [vs("10.96.0.10", 53)],
        {},
        ["fd00::10", "10.96.0.10", "10.96.0.9"],
        {"KUBE-NODE-PORT-TCP": ["30080"], "KUBE-CLUSTER-IP": ["10.96.0.10,tcp:53"], "EMPTY": []},
    )
    assert text.endswith("\n")
    tail = text.split("\n\n", 1)[1]
    assert tail == (
        "kube-ipvs0 addresses:\n"
        "  10.96.0.9\n"
        "  10.96.0.10\n"
        "  fd00::10\n"
        "\n"
        "ipset entries:\n"
        "  KUBE-CLUSTER-IP\n"
        "    10.96.0.10,tcp:53\n"
        "  KUBE-NODE-PORT-TCP\n"
        "    30080\n"
    )
