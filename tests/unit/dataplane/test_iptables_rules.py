"""The pure rule text (the backend choice: test_iptables_backend.py)."""

from __future__ import annotations

import pytest

from ipvsproxy.core.local_traffic import LocalDetector, local_detectors
from ipvsproxy.core.model import Family
from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.iptables_fixups import table_fixups
from ipvsproxy.dataplane.iptables_rules import (
    OWNED_CHAINS,
    RulesConfig,
    build_restore,
    rule_count,
)


def cidrs(*cluster_cidrs: str) -> RulesConfig:
    """The rules with --detect-local-mode=ClusterCIDR and these --cluster-cidr values."""
    return RulesConfig(local=local_detectors("ClusterCIDR", cluster_cidrs=cluster_cidrs))


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_chains_are_declared_before_jumps_and_rules() -> None:
    fresh = {table: f"*{table}\nCOMMIT\n" for table in ("nat", "filter", "mangle")}
    fixups = {table: table_fixups(table, text) for table, text in fresh.items()}
    text = build_restore(RulesConfig(), Family.V4, fixups)
    nat = text.split("*filter")[0].splitlines()
    first_rule = next(i for i, line in enumerate(nat) if line.startswith(("-I", "-A")))
    declared = [line for line in nat[:first_rule] if line.startswith(":")]
    assert declared == [
        ":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-NODE-PORT - [0:0]",
        ":KUBE-LOAD-BALANCER - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
    ]  # fmt: skip
    assert text.count("COMMIT") == len(OWNED_CHAINS)


def test_missing_jumps_are_inserted_before_our_rules() -> None:
    fixups = {"nat": table_fixups("nat", "*nat\nCOMMIT\n")}
    nat = build_restore(RulesConfig(), Family.V4, fixups).split("*filter")[0]
    assert (
        '-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in nat
    )
    assert nat.index("-I PREROUTING") < nat.index("-A KUBE-SERVICES")
    assert _lines(build_restore(RulesConfig(), Family.V4, None), "-I ") == []


def _chain(text: str, table: str, chain: str) -> list[str]:
    body = text.split(f"*{table}\n", 1)[1].split("COMMIT", 1)[0]
    return [line for line in body.splitlines() if line.startswith(f"-A {chain} ")]


@pytest.mark.parametrize(
    ("family", "sources", "marked_sources"),
    [
        (Family.V4, (), ["-m addrtype --src-type LOCAL"]),
        (Family.V4, ("10.244.0.0/16",), ["-m addrtype --src-type LOCAL", "-s 10.244.0.0/16"]),
        (
            Family.V6,
            ("10.244.0.0/16", "fd00:244::/56"),
            ["-m addrtype --src-type LOCAL", "-s fd00:244::/56"],
        ),
    ],
)
def test_in_cluster_traffic_to_etp_local_ips_gets_the_sets_fwmark(
    family: Family, sources: tuple[str, ...], marked_sources: list[str]
) -> None:
    text = build_restore(cidrs(*sources), family, None)
    marks = "KUBE-EXTERNAL-LOCAL-FWMARK" if family is Family.V4 else "KUBE-6-EXTERNAL-LOCAL-FWMARK"
    stamp = f"-m set --match-set {marks} dst,dst -j SET --map-set {marks} dst,dst --map-mark"
    assert _chain(text, "mangle", "KUBE-IN-CLUSTER-FWMARK") == [
        f"-A KUBE-IN-CLUSTER-FWMARK {source} {stamp}" for source in marked_sources
    ]
    # The stamp's PENDING bit is cleared in kube-proxy's own KUBE-SERVICES (its first sync
    # drops the rule), before IPVS sees the packet.
    services = _chain(text, "nat", "KUBE-SERVICES")
    assert services[1] == (
        '-A KUBE-SERVICES -m comment --comment "kubernetes in-cluster fwmark"'
        " -m mark --mark 0x3000/0x3000 -j MARK --xor-mark 0x1000"
    )
    # Node traffic marked so is masqueraded before kube-proxy's mark test returns.
    postrouting = _chain(text, "nat", "KUBE-POSTROUTING")
    masq = next(i for i, r in enumerate(postrouting) if "--mark 0x2000/0x2000" in r)
    assert "--src-type LOCAL -j MASQUERADE" in postrouting[masq]
    assert masq < next(i for i, r in enumerate(postrouting) if "! --mark 0x4000/0x4000" in r)


DETECTORS = [
    {},
    local_detectors("ClusterCIDR", cluster_cidrs=("10.244.0.0/16", "fd00:244::/56")),
    local_detectors("NodeCIDR", pod_cidrs=("10.244.3.0/24",)),
    local_detectors("BridgeInterface", bridge_interface="cbr0"),
    local_detectors("InterfaceNamePrefix", interface_name_prefix="cali"),
]


def test_rule_count_is_constant() -> None:
    """The same count whatever the masquerade or the detector; a family without a detector
    has one stamp rule fewer (the pods' own)."""
    counts = {
        (rule_count(build_restore(c, f)), f in c.local)
        for f in Family
        for local in DETECTORS
        for c in (RulesConfig(local=local), RulesConfig(masquerade_all=True, local=local))
    }
    assert len({count - detected for count, detected in counts}) == 1
    assert 30 < counts.pop()[0] < 60


@pytest.mark.parametrize(
    ("mode", "options", "masq", "stamped"),
    [
        ("BridgeInterface", {"bridge_interface": "cbr0"}, "! -i cbr0", "-i cbr0"),
        ("InterfaceNamePrefix", {"interface_name_prefix": "veth"}, "! -i veth+", "-i veth+"),
        ("NodeCIDR", {"pod_cidrs": ("10.244.3.0/24",)}, "! -s 10.244.3.0/24", "-s 10.244.3.0/24"),
    ],
)
def test_each_detector_decides_the_masquerade_and_the_stamp(
    mode: str, options: dict[str, object], masq: str, stamped: str
) -> None:
    text = build_restore(RulesConfig(local=local_detectors(mode, **options)), Family.V4)  # type: ignore[arg-type]
    (cluster,) = [r for r in _chain(text, "nat", "KUBE-SERVICES") if "KUBE-CLUSTER-IP dst,dst" in r
                  and "KUBE-MARK-MASQ" in r]  # fmt: skip
    assert cluster.endswith(f"KUBE-CLUSTER-IP dst,dst {masq} -j KUBE-MARK-MASQ")
    stamps = _chain(text, "mangle", "KUBE-IN-CLUSTER-FWMARK")
    assert [r.split(" -m set")[0] for r in stamps] == [
        "-A KUBE-IN-CLUSTER-FWMARK -m addrtype --src-type LOCAL",
        f"-A KUBE-IN-CLUSTER-FWMARK {stamped}",
    ]


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (RulesConfig(masquerade_all=True), "KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"),
        (
            cidrs("fd00:244::/56", "10.244.0.0/16"),
            "KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
        ),
        (RulesConfig(), "KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"),
    ],
)
def test_cluster_ip_masquerade_modes(config: RulesConfig, expected: str) -> None:
    masq = [r for r in _lines(build_restore(config, Family.V4, None), "-A KUBE-SERVICES")
            if "KUBE-CLUSTER-IP" in r and "KUBE-MARK-MASQ" in r]  # fmt: skip
    assert len(masq) == 1
    assert masq[0].endswith(expected)


def test_ipv6_uses_kube_6_sets_and_v6_loopback() -> None:
    text = build_restore(cidrs("fd00:244::/56"), Family.V6, None)
    assert "-A KUBE-SERVICES -s ::1/128 -j RETURN" in text
    assert "KUBE-6-CLUSTER-IP dst,dst ! -s fd00:244::/56 -j KUBE-MARK-MASQ" in text
    assert "KUBE-6-LOAD-BALANCER-SOURCE-CID dst,dst,src" in text
    sets = {w for line in text.splitlines() for w in line.split() if w.startswith("KUBE-")}
    assert not {s for s in sets if "CLUSTER-IP" in s and not s.startswith("KUBE-6-")}


def test_masquerade_marks_and_random_fully() -> None:
    text = build_restore(RulesConfig(masquerade_bit=13, random_fully=False), Family.V4, None)
    assert "-A KUBE-MARK-MASQ -j MARK --or-mark 0x2000" in text
    assert "-A KUBE-POSTROUTING -m mark ! --mark 0x2000/0x2000 -j RETURN" in text
    assert "-j MASQUERADE\n" in text
    assert "--random-fully" in build_restore(RulesConfig(), Family.V4, None)


def test_node_originated_lb_traffic_is_marked_and_dropped() -> None:
    text = build_restore(RulesConfig(), Family.V4, None)
    assert (
        "-A KUBE-SERVICES -m addrtype --src-type LOCAL -m set --match-set KUBE-LOAD-BALANCER-FW"
        " dst,dst -m set ! --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src"
        " -m set ! --match-set KUBE-LOAD-BALANCER-SOURCE-IP dst,dst,src -j MARK --or-mark 0x8000"
    ) in text
    assert "-A KUBE-IPVS-OUT-FILTER -m mark --mark 0x8000/0x8000 -j DROP" in text
    assert _lines(text, "-A KUBE-IPVS-FILTER")[-1] == (
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst"
        " -j REJECT"
    )


@pytest.mark.parametrize(
    "config",
    [RulesConfig(local={Family.V4: LocalDetector(source="x")}),
     RulesConfig(local={Family.V4: LocalDetector(source="fd00::/8")}),
     RulesConfig(local={Family.V4: LocalDetector(interface="a b")}),
     RulesConfig(local={Family.V4: LocalDetector(interface="much-too-long-name+")}),
     RulesConfig(masquerade_bit=32)],
)  # fmt: skip
def test_bad_config_is_a_typed_error(config: RulesConfig) -> None:
    with pytest.raises(InvalidValueError):
        build_restore(config, Family.V4, None)
