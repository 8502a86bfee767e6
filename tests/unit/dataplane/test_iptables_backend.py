"""Backend detection: the counts parsed from hand-built kernel answers (x_tables blobs,
nf_tables dumps), the dry-run probe's requests, and the choice made from them."""

from __future__ import annotations

import errno
import struct

import pytest

from ipvsproxy.core.model import Family
from ipvsproxy.dataplane import iptables, iptables_backend, xtables
from ipvsproxy.dataplane.iptables import choose_backend, detect_backend
from ipvsproxy.dataplane.iptables_backend import (
    Counts,
    count_legacy_table,
    count_nft,
    legacy_counts,
    nft_counts,
    nft_works,
    probe_requests,
)
from ipvsproxy.dataplane.netlink import DumpError, Message, attrs, frame, nla, split
from ipvsproxy.dataplane.nftables import FAMILIES, NftablesError, nfgen_head, nft_kind
from ipvsproxy.dataplane.xtables import ENTRY_OFFSETS, GETINFO, policy_offsets, walk

# sizeof(struct ipt_entry) / sizeof(struct ip6t_entry): where each entry's target starts.
ENTRY_SIZE = {Family.V4: 112, Family.V6: 168}
ACCEPT, RETURN = -2, -5  # standard verdicts: -NF_ACCEPT - 1, XT_RETURN
INPUT, FORWARD, OUTPUT = 1, 2, 3  # NF_INET_* hooks


def _entry(family: Family, target: str, data: bytes) -> bytes:
    """One entry matching everything, with its target (xt_entry_target, 8-aligned)."""
    target_size = 32 + len(data) + (-(32 + len(data)) % 8)
    head = bytearray(ENTRY_SIZE[family])
    struct.pack_into("=HH", head, ENTRY_OFFSETS[family][0], len(head), len(head) + target_size)
    struct.pack_into("=Q", head, ENTRY_OFFSETS[family][1], 7)  # packets: ignored
    target = struct.pack("=H29sB", target_size, target.encode(), 0) + data
    return bytes(head) + target.ljust(target_size, b"\0")


def _verdict(family: Family, verdict: int) -> bytes:
    return _entry(family, "", struct.pack("=i", verdict))


def _head(family: Family, chain: str) -> bytes:
    return _entry(family, "ERROR", chain.encode().ljust(30, b"\0"))


def _table(family: Family, chains: dict[str, list[bytes]]) -> tuple[bytes, bytes]:
    """(IPT_SO_GET_INFO answer, entries) of a filter table: the built-in chains INPUT,
    FORWARD, OUTPUT (each its rules, then its policy) and user chains (a head, the rules,
    the closing RETURN), then the final ERROR entry; as iptables-legacy-restore lays it out."""
    blob = b""
    hook_entry, underflow = [0] * 5, [0] * 5  # invalid hooks' 0 is not a policy
    for hook, name in ((INPUT, "INPUT"), (FORWARD, "FORWARD"), (OUTPUT, "OUTPUT")):
        hook_entry[hook] = len(blob)
        blob += b"".join(chains.pop(name, []))
        underflow[hook] = len(blob)
        blob += _verdict(family, ACCEPT)
    for name, rules in chains.items():
        blob += _head(family, name) + b"".join(rules) + _verdict(family, RETURN)
    blob += _head(family, "ERROR")
    valid = (1 << INPUT) | (1 << FORWARD) | (1 << OUTPUT)
    info = GETINFO.pack(b"filter", valid, *hook_entry, *underflow, 0, len(blob))
    return info, blob


@pytest.mark.parametrize("family", [Family.V4, Family.V6])
def test_legacy_rules_are_the_entries_save_prints_as_rules(family: Family) -> None:
    accept = _verdict(family, ACCEPT)
    info, blob = _table(
        family,
        {
            "INPUT": [accept, _entry(family, "REJECT", b"\0" * 4)],
            "OUTPUT": [accept],
            "KUBE-KUBELET-CANARY": [],
            "OPERATOR": [accept, _verdict(family, RETURN), accept],  # its own RETURN too
            "KUBE-IPTABLES-HINT": [],
            "KUBE-SERVICES": [accept],
        },
    )
    assert count_legacy_table(info, blob, family) == Counts(hints=2, rules=2 + 1 + 3 + 1)


@pytest.mark.parametrize("family", [Family.V4, Family.V6])
def test_an_empty_table_holds_nothing(family: Family) -> None:
    info, blob = _table(family, {})
    assert count_legacy_table(info, blob, family) == Counts(0, 0)
    assert len(list(walk(blob, family))) == 4  # three policies and the final ERROR


def test_policies_are_the_underflows_of_valid_hooks_only() -> None:
    info = GETINFO.pack(b"nat", 0b1001, 0, 0, 0, 0, 0, 10, 20, 30, 40, 50, 0, 0)
    assert policy_offsets(info) == {10, 40}


def test_walk_reads_targets_and_stops_at_a_truncated_entry() -> None:
    blob = _verdict(Family.V4, ACCEPT) + _head(Family.V4, "X")
    entries = list(walk(blob, Family.V4))
    assert [(e.offset, e.target) for e in entries] == [(0, ""), (152, "ERROR")]
    assert entries[1].data.rstrip(b"\0") == b"X"
    assert len(list(walk(blob[:-8], Family.V4))) == 1


def _nft(kind: int, family: str, **fields: str) -> Message:
    ids = {"table": 1, "chain": 2, "name": 3}  # NFTA_{CHAIN,RULE}_TABLE, _RULE_CHAIN, _NAME
    payload = nfgen_head(FAMILIES[family]) + b"".join(
        nla(ids[key], value.encode() + b"\0") for key, value in fields.items()
    )
    [message] = split(frame(nft_kind(kind), 2, 1, payload))
    return message


def test_nft_counts_only_iptables_tables_of_ip_and_ip6() -> None:
    chain, rule = 3, 6  # NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE
    chains = [
        _nft(chain, "ip", table="mangle", name="KUBE-IPTABLES-HINT"),
        _nft(chain, "ip6", table="nat", name="KUBE-KUBELET-CANARY"),
        _nft(chain, "ip", table="filter", name="INPUT"),
        _nft(chain, "inet", table="filter", name="KUBE-KUBELET-CANARY"),  # not iptables'
        _nft(chain, "ip", table="kube-proxy", name="KUBE-KUBELET-CANARY"),  # nor this table
    ]
    rules = [
        _nft(rule, "ip", table="filter", chain="INPUT"),
        _nft(rule, "ip", table="filter", chain="KUBE-FIREWALL"),
        _nft(rule, "ip6", table="raw", chain="PREROUTING"),
        _nft(rule, "ip", table="kube-proxy", chain="services"),
        _nft(rule, "bridge", table="filter", chain="FORWARD"),
        _nft(chain, "ip", table="filter", name="INPUT"),  # not a rule
    ]
    assert count_nft(chains, rules) == Counts(hints=2, rules=3)
    assert count_nft([], []) == Counts(0, 0)


def test_the_probe_asks_for_an_ip_table_and_a_base_chain() -> None:
    [(table_kind, table_flags, table), (chain_kind, chain_flags, chain)] = probe_requests()
    assert (table_kind, chain_kind) == (nft_kind(0), nft_kind(3))  # NEWTABLE, NEWCHAIN
    assert table_flags == chain_flags == 0x400  # NLM_F_CREATE
    assert table[0] == chain[0] == FAMILIES["ip"]
    assert attrs(table, 4) == {1: b"ipvsproxy-probe\0"}
    found = attrs(chain, 4)
    assert (found[1], found[3], found[7]) == (b"ipvsproxy-probe\0", b"probe\0", b"filter\0")
    assert attrs(found[4]) == {1: struct.pack(">i", 0), 2: struct.pack(">i", -150)}


@pytest.mark.parametrize(
    ("legacy", "nft", "works", "expected"),
    [
        (Counts(0, 0), Counts(0, 0), True, "nft"),
        (Counts(0, 0), Counts(0, 0), False, "legacy"),
        (None, Counts(0, 0), False, "nft"),
        (Counts(0, 0), None, True, "legacy"),
        (None, None, False, "nft"),
        (Counts(0, 1), Counts(0, 0), True, "legacy"),
        (Counts(0, 1), Counts(0, 2), False, "nft"),
        (Counts(1, 0), Counts(0, 2), True, "legacy"),
        (Counts(1, 5), Counts(2, 0), False, "nft"),
        (Counts(0, 3), Counts(0, 3), False, "legacy"),  # a tie: as if both were empty
        (Counts(0, 3), Counts(0, 3), True, "nft"),
    ],
)
def test_backend_choice(
    legacy: Counts | None, nft: Counts | None, works: bool, expected: str
) -> None:
    assert choose_backend(legacy, nft, works) == expected


def test_a_backend_without_its_tool_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iptables_backend.shutil, "which", lambda _name: None)
    assert legacy_counts() is None


def test_legacy_counts_of_no_loaded_tables_are_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(iptables_backend.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(xtables, "table_names", lambda _family: [])
    assert legacy_counts() == Counts(0, 0)


@pytest.mark.parametrize(("failing", "expected"), [(Family.V4, None), (Family.V6, Counts(0, 2))])
def test_a_failing_ipv4_read_is_none_and_a_failing_ipv6_one_is_skipped(
    monkeypatch: pytest.MonkeyPatch, failing: Family, expected: Counts | None
) -> None:
    def names(family: Family) -> list[str]:
        if family is failing:
            raise PermissionError(errno.EPERM, "no")
        return ["filter"]

    reads = {
        Family.V4: _table(Family.V4, {"INPUT": [_verdict(Family.V4, ACCEPT)] * 2}),
        Family.V6: _table(Family.V6, {"KUBE-KUBELET-CANARY": [], "INPUT": []}),
    }
    monkeypatch.setattr(iptables_backend.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(xtables, "table_names", names)
    monkeypatch.setattr(xtables, "read_table", lambda f, _t: reads[f])
    assert legacy_counts() == expected


async def test_nft_counts_are_none_when_nf_tables_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refused(*_args: object) -> list[Message]:
        raise DumpError(errno.EPROTONOSUPPORT, "no nf_tables")

    monkeypatch.setattr(iptables_backend.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(iptables_backend, "dump", refused)
    assert await nft_counts() is None
    monkeypatch.setattr(iptables_backend.shutil, "which", lambda _name: None)
    assert await nft_counts() is None


@pytest.mark.parametrize(
    ("answer", "expected"),
    [([0, 0], True), ([errno.EOPNOTSUPP, errno.ENOENT], False), ([0, errno.ENOENT], False)],
)
async def test_nft_works_when_the_kernel_takes_the_probe(
    monkeypatch: pytest.MonkeyPatch, answer: list[int], expected: bool
) -> None:
    async def checked(requests: object, *, commit: bool) -> list[int]:
        assert not commit  # a check only: the kernel aborts it
        return answer

    monkeypatch.setattr(iptables_backend, "batch", checked)
    assert await nft_works() is expected


async def test_nft_does_not_work_when_the_batch_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refused(requests: object, *, commit: bool) -> list[int]:
        raise NftablesError("nf_tables batch refused: errno 95")

    monkeypatch.setattr(iptables_backend, "batch", refused)
    assert await nft_works() is False


@pytest.mark.parametrize(
    ("legacy", "nft", "probed", "expected"),
    [
        (Counts(0, 0), Counts(0, 0), True, "nft"),
        (Counts(0, 4), Counts(0, 0), False, "legacy"),
        (Counts(0, 0), None, False, "legacy"),
    ],
)
async def test_detection_probes_only_when_the_counts_leave_it_open(
    monkeypatch: pytest.MonkeyPatch,
    legacy: Counts,
    nft: Counts | None,
    probed: bool,
    expected: str,
) -> None:
    asked: list[bool] = []

    async def counts() -> Counts | None:
        return nft

    async def works() -> bool:
        asked.append(True)
        return True

    monkeypatch.setattr(iptables, "legacy_counts", lambda: legacy)
    monkeypatch.setattr(iptables, "nft_counts", counts)
    monkeypatch.setattr(iptables, "nft_works", works)
    assert await detect_backend() == expected
    assert bool(asked) is probed
