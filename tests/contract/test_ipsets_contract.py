"""Contract: Ipsets (FakeIpsets on the host, IpsetCli in a fresh netns under --dataplane=real).

IpsetCli has two update paths, netlink (up to ``netlink_limit`` entries) and one
``ipset restore``; the cases below pin that both mean the same, and which one ran.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator, Sequence

import pytest

from ipvsproxy.core import fwmark
from ipvsproxy.core.fwmark import mark_for
from ipvsproxy.core.ipset_catalog import (
    BITMAP_PORT,
    CLUSTER_IP,
    EXTERNAL_LOCAL_FWMARK,
    IpsetSpec,
    all_specs,
    marked_entry,
    set_spec,
)
from ipvsproxy.core.model import Family, IpProtocol
from ipvsproxy.dataplane import ipsets as ipsets_module
from ipvsproxy.dataplane.errors import DataplaneError, InvalidValueError
from ipvsproxy.dataplane.fakes import FakeIpsets
from ipvsproxy.dataplane.interfaces import Ipsets
from ipvsproxy.dataplane.ipset_netlink import SetHeader, list_headers
from ipvsproxy.dataplane.ipset_specs import (
    SetOptions,
    create_line,
    option_differences,
    wanted_options,
)
from ipvsproxy.dataplane.ipsets import IpsetCli, destroy_owned
from ipvsproxy.dataplane.iptables import IptablesCli, detect_backend
from tests.support.ipset_save import parse_save


@pytest.fixture
def ipsets(real: bool, netns: None) -> Ipsets:
    return IpsetCli() if real else FakeIpsets()


@contextlib.contextmanager
def processes_started(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Sequence[str]]]:
    """Record the argv of every tool IpsetCli starts inside the block (they still run)."""
    started: list[Sequence[str]] = []
    run = ipsets_module.run_command

    async def recording(argv: Sequence[str], stdin: str | None = None) -> str:
        started.append(argv)
        return await run(argv, stdin)

    with monkeypatch.context() as patch:
        patch.setattr(ipsets_module, "run_command", recording)
        yield started


async def test_ensure_creates_kube_proxy_sets_for_both_families(
    ipsets: Ipsets, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = all_specs(Family.V4) + all_specs(Family.V6)
    with processes_started(monkeypatch) as started:
        await ipsets.ensure(specs)  # over netlink: no process on a fresh node
        await ipsets.ensure(specs)  # idempotent
    assert started == []
    names = await ipsets.list_names()
    assert {"KUBE-CLUSTER-IP", "KUBE-6-CLUSTER-IP", "KUBE-6-LOAD-BALANCER-SOURCE-CID"} <= names
    assert names == {s.name for s in specs}


@pytest.mark.parametrize(
    ("base", "family", "given", "saved"),
    [
        ("KUBE-CLUSTER-IP", Family.V4, "10.96.0.10,TCP:53", "10.96.0.10,tcp:53"),
        ("KUBE-6-CLUSTER-IP", Family.V6, "fd00:0::10,udp:53", "fd00::10,udp:53"),
        ("KUBE-NODE-PORT-TCP", Family.V4, "30080", "30080"),
        ("KUBE-LOOP-BACK", Family.V4, "10.244.0.5,tcp:80,10.244.0.5",
         "10.244.0.5,tcp:80,10.244.0.5"),
        ("KUBE-LOAD-BALANCER-SOURCE-CIDR", Family.V4, "1.2.3.4,tcp:80,10.1.2.3/8",
         "1.2.3.4,tcp:80,10.0.0.0/8"),
        ("KUBE-6-LOAD-BALANCER-SOURCE-CID", Family.V6, "fd00::1,sctp:80,fd00:1::5/128",
         "fd00::1,sctp:80,fd00:1::5"),
        ("KUBE-IPVS-IPS", Family.V4, "10.96.0.10", "10.96.0.10"),
    ],
)  # fmt: skip
async def test_entries_read_back_in_save_syntax(
    ipsets: Ipsets, base: str, family: Family, given: str, saved: str
) -> None:
    await ipsets.ensure(all_specs(family))
    await ipsets.update({base: ({given}, set())})
    assert await ipsets.entries(base) == {saved}
    await ipsets.update({base: (set(), {given})})
    assert await ipsets.entries(base) == set()


async def test_update_adds_and_deletes_in_one_call_across_sets(ipsets: Ipsets) -> None:
    await ipsets.ensure(all_specs(Family.V4))
    await ipsets.update({"KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443", "10.96.0.10,udp:53"}, set())})
    await ipsets.update(
        {
            "KUBE-CLUSTER-IP": ({"10.96.0.11,tcp:80", "10.96.0.1,tcp:443"}, {"10.96.0.10,udp:53"}),
            "KUBE-NODE-PORT-UDP": ({"30053"}, {"30054"}),  # deleting a missing entry is fine
        }
    )
    assert await ipsets.entries("KUBE-CLUSTER-IP") == {"10.96.0.1,tcp:443", "10.96.0.11,tcp:80"}
    assert await ipsets.entries("KUBE-NODE-PORT-UDP") == {"30053"}


async def test_save_all_reads_every_set_at_once(ipsets: Ipsets) -> None:
    await ipsets.ensure(all_specs(Family.V4) + all_specs(Family.V6))
    await ipsets.update(
        {
            "KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443"}, set()),
            "KUBE-6-CLUSTER-IP": ({"fd00::1,tcp:443"}, set()),
            "KUBE-NODE-PORT-TCP": ({"30080"}, set()),
        }
    )
    saved = await ipsets.save_all()
    assert set(saved) == await ipsets.list_names()
    assert saved["KUBE-CLUSTER-IP"] == {"10.96.0.1,tcp:443"}
    assert saved["KUBE-6-CLUSTER-IP"] == {"fd00::1,tcp:443"}
    assert saved["KUBE-NODE-PORT-TCP"] == {"30080"}
    assert saved["KUBE-IPVS-IPS"] == set()


async def test_save_all_lists_what_ipset_save_prints(ipsets: Ipsets, real: bool) -> None:
    """The netlink listing, entry for entry, against the tool's own ``ipset save``: every
    set type of the catalog, both families, marks with and without a mask."""
    await ipsets.ensure(all_specs(Family.V4) + all_specs(Family.V6))
    await ipsets.update(
        {
            "KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443", "10.96.0.10,udp:53"}, set()),
            "KUBE-6-CLUSTER-IP": ({"fd00::1,sctp:443"}, set()),
            "KUBE-NODE-PORT-TCP": ({"30080", "1", "65535"}, set()),
            "KUBE-LOOP-BACK": ({"10.244.0.5,tcp:80,10.244.0.5"}, set()),
            "KUBE-6-LOOP-BACK": ({"fd00:244::5,udp:53,fd00:244::5"}, set()),
            "KUBE-LOAD-BALANCER-SOURCE-CIDR": (
                {"1.2.3.4,tcp:80,10.0.0.0/8", "1.2.3.4,tcp:80,192.0.2.1"},
                set(),
            ),
            "KUBE-6-LOAD-BALANCER-SOURCE-CID": ({"fd00::1,tcp:80,fd00:1::/64"}, set()),
            "KUBE-IPVS-IPS": ({"10.96.0.10"}, set()),
            "KUBE-6-IPVS-IPS": ({"fd00::10"}, set()),
            MARKED[Family.V4]: (
                {_marked(Family.V4, 443), f"{TARGET[Family.V4]},sctp:9 skbmark 0x2c07"},
                set(),
            ),
            MARKED[Family.V6]: ({_marked(Family.V6, 53, IpProtocol.UDP)}, set()),
        }
    )
    listed = await ipsets.save_all()
    assert sum(map(len, listed.values())) == 16
    if real:
        saved = parse_save(await ipsets_module.run_command(["ipset", "save"]))
        assert listed == {name: entries for name, (_, entries) in saved.items()}


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("10.96.0.300,tcp:53", "address"),
        ("10.96.0.10,icmp:53", "protocol"),
        ("10.96.0.10,tcp:70000", "port"),
        ("fd00::1,tcp:53", "address"),
        ("10.96.0.10", "entry"),
    ],
)
async def test_bad_entry_raises_and_changes_nothing(ipsets: Ipsets, entry: str, field: str) -> None:
    await ipsets.ensure(all_specs(Family.V4))
    await ipsets.update({"KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443"}, set())})
    with pytest.raises(InvalidValueError) as info:
        await ipsets.update(
            {
                "KUBE-CLUSTER-IP": ({"10.96.0.2,tcp:443", entry}, {"10.96.0.1,tcp:443"}),
                "KUBE-IPVS-IPS": ({"10.96.0.2"}, set()),
            }
        )
    assert field in info.value.field
    # The error names the offending part of the entry.
    assert any(f"'{part}" in str(info.value) for part in re.split("[,:]", entry))
    assert await ipsets.entries("KUBE-CLUSTER-IP") == {"10.96.0.1,tcp:443"}
    assert await ipsets.entries("KUBE-IPVS-IPS") == set()


async def test_replace_makes_set_hold_exactly_and_leaves_no_temporary(ipsets: Ipsets) -> None:
    await ipsets.ensure(all_specs(Family.V6))
    await ipsets.update({"KUBE-6-CLUSTER-IP": ({"fd00::1,tcp:443", "fd00::2,tcp:80"}, set())})
    await ipsets.replace("KUBE-6-CLUSTER-IP", {"fd00::2,tcp:80", "fd00::3,udp:53"})
    assert await ipsets.entries("KUBE-6-CLUSTER-IP") == {"fd00::2,tcp:80", "fd00::3,udp:53"}
    await ipsets.replace("KUBE-6-CLUSTER-IP", set())
    assert await ipsets.entries("KUBE-6-CLUSTER-IP") == set()
    assert await ipsets.list_names() == {s.name for s in all_specs(Family.V6)}


async def test_unknown_set_is_a_typed_error(ipsets: Ipsets) -> None:
    with pytest.raises(InvalidValueError, match="KUBE-NOPE"):
        await ipsets.update({"KUBE-NOPE": ({"1.2.3.4"}, set())})
    with pytest.raises(InvalidValueError, match="KUBE-NOPE"):
        await ipsets.entries("KUBE-NOPE")


async def test_destroy_only_touches_kube_sets(ipsets: Ipsets) -> None:
    await ipsets.ensure(all_specs(Family.V4))
    with pytest.raises(InvalidValueError, match="operator-set"):
        await ipsets.destroy(["operator-set"])
    with pytest.raises(InvalidValueError, match="operator-set"):
        await ipsets.ensure([IpsetSpec("operator-set", "hash:ip", Family.V4, "")])
    await ipsets.destroy(["KUBE-CLUSTER-IP", "KUBE-NOT-THERE"])
    assert "KUBE-CLUSTER-IP" not in await ipsets.list_names()
    assert sorted(await destroy_owned(ipsets)) == sorted(
        s.name for s in all_specs(Family.V4) if s.name != "KUBE-CLUSTER-IP"
    )
    assert await ipsets.list_names() == set()


# Per set type and family: three entries (a, b, c) and a fourth (d) never added.
EVERY_TYPE = [
    ("KUBE-IPVS-IPS", Family.V4, ["10.96.0.10", "10.96.0.11", "10.96.0.12", "10.96.0.13"]),
    ("KUBE-6-IPVS-IPS", Family.V6, ["fd00::10", "fd00::11", "fd00::12", "fd00::13"]),
    ("KUBE-CLUSTER-IP", Family.V4,
     ["10.96.0.10,tcp:53", "10.96.0.10,udp:53", "10.96.0.10,sctp:53", "10.96.0.11,tcp:53"]),
    ("KUBE-6-CLUSTER-IP", Family.V6,
     ["fd00::10,tcp:53", "fd00::10,udp:53", "fd00::10,sctp:53", "fd00::11,tcp:53"]),
    ("KUBE-LOOP-BACK", Family.V4,
     ["10.244.1.5,tcp:8080,10.244.1.5", "10.244.1.5,udp:53,10.244.1.5",
      "10.244.1.6,sctp:80,10.244.1.6", "10.244.1.5,tcp:8080,10.244.1.6"]),
    ("KUBE-6-LOOP-BACK", Family.V6,
     ["fd00:1::5,tcp:8080,fd00:1::5", "fd00:1::5,udp:53,fd00:1::5",
      "fd00:1::6,sctp:80,fd00:1::6", "fd00:1::5,tcp:8080,fd00:1::6"]),
    ("KUBE-LOAD-BALANCER-SOURCE-CIDR", Family.V4,
     ["1.2.3.4,tcp:80,10.0.0.0/8", "1.2.3.4,tcp:80,192.168.1.7", "1.2.3.4,udp:80,10.0.0.0/8",
      "1.2.3.4,tcp:80,10.0.0.0/16"]),
    ("KUBE-6-LOAD-BALANCER-SOURCE-CID", Family.V6,
     ["fd00::1,tcp:80,fd00:1::/64", "fd00::1,tcp:80,fd00:2::7", "fd00::1,sctp:80,fd00:1::/64",
      "fd00::1,tcp:80,fd00:1::/48"]),
    ("KUBE-NODE-PORT-TCP", Family.V4, ["30080", "30081", "30082", "30083"]),
    ("KUBE-6-NODE-PORT-UDP", Family.V6, ["30080", "30081", "30082", "30083"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "family", "entries"), [pytest.param(*case, id=case[0]) for case in EVERY_TYPE]
)
async def test_small_updates_need_no_process_and_keep_exist_semantics(
    ipsets: Ipsets,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    family: Family,
    entries: list[str],
) -> None:
    a, b, c, d = entries
    await ipsets.ensure(all_specs(family))
    with processes_started(monkeypatch) as started:
        await ipsets.update({name: ({a, b}, set())})
        await ipsets.update({name: ({a}, set())})  # adding a present entry is no error
        # Deletes come first: a and c, deleted and added in one call, end up present;
        # b goes; d was never there, and deleting it is no error.
        await ipsets.update({name: ({a, c}, {a, b, c, d})})
    assert started == []  # netlink all the way (trivially so on the fake)
    assert await ipsets.entries(name) == {a, c}
    with processes_started(monkeypatch) as started:
        await ipsets.update({name: (set(), {a, c, d})})
    assert started == []
    assert await ipsets.entries(name) == set()


async def test_set_destroyed_behind_the_proxys_back_is_a_typed_error(
    ipsets: Ipsets, real: bool
) -> None:
    await ipsets.ensure(all_specs(Family.V4))
    await ipsets.update({"KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443"}, set())})  # type now known
    other = IpsetCli() if real else ipsets  # another process's view of the same kernel
    await other.destroy(["KUBE-CLUSTER-IP"])
    with pytest.raises(InvalidValueError, match="KUBE-CLUSTER-IP"):
        await ipsets.update({"KUBE-CLUSTER-IP": ({"10.96.0.2,tcp:443"}, set())})


def _many(family: Family, count: int, start: int = 1) -> set[str]:
    """``count`` hash:ip,port,net entries in save syntax (the longest entry kind)."""
    if family is Family.V6:
        return {f"fd00::{i:x},tcp:80,fd00:{i:x}::/64" for i in range(start, start + count)}
    return {f"10.96.{i // 256}.{i % 256},tcp:80,10.{i // 256}.{i % 256}.0/24"
            for i in range(start, start + count)}  # fmt: skip


@pytest.mark.parametrize("family", [Family.V4, Family.V6], ids=["v4", "v6"])
@pytest.mark.parametrize("path", ["netlink", "restore"])
async def test_large_updates_on_either_path(
    real: bool, netns: None, monkeypatch: pytest.MonkeyPatch, family: Family, path: str
) -> None:
    """2,000 entries: several netlink messages and sends, or one ``ipset restore``."""
    limit = 10_000 if path == "netlink" else 1_000
    ipsets: Ipsets = IpsetCli(netlink_limit=limit) if real else FakeIpsets()
    name = "KUBE-LOAD-BALANCER-SOURCE-CIDR" if family is Family.V4 else (
        "KUBE-6-LOAD-BALANCER-SOURCE-CID")  # fmt: skip
    await ipsets.ensure(all_specs(family))
    first, second = _many(family, 2_000), _many(family, 1_000, start=1_501)
    with processes_started(monkeypatch) as started:
        await ipsets.update({name: (first, set())})
        # Half goes, 1,000 arrive (500 of them already present), one call.
        await ipsets.update({name: (second, _many(family, 1_000))})
    restores = [argv for argv in started if "restore" in argv]
    assert len(restores) == (2 if real and path == "restore" else 0)
    assert len(started) == len(restores)
    assert await ipsets.entries(name) == _many(family, 1_500, start=1_001)


# ------------------------------------------------- create options (kube-proxy's sets)
# kube-proxy's IPVS mode creates every set as ``NAME TYPE family F hashsize 1024 maxelem
# 65536`` (bitmap:port: ``range 0-65535``), no extension, and gives up a whole sync when
# its ``create -exist`` meets a set with other options. The proxy creates them alike, and
# rebuilds in place (entries kept) a set that someone made otherwise.


async def _seed(ipsets: Ipsets, real: bool, spec: IpsetSpec, options: SetOptions) -> None:
    """Set ``spec`` as someone else (kube-proxy, an older proxy) created it."""
    if real:
        await ipsets_module.run_command(["ipset", *create_line(spec, options).split()])
    else:
        assert isinstance(ipsets, FakeIpsets)
        ipsets.create_existing(spec, options)


async def _options(ipsets: Ipsets, real: bool, name: str) -> SetOptions:
    if real:
        return (await list_headers())[name].options
    assert isinstance(ipsets, FakeIpsets)
    return ipsets.options[name]


async def test_sets_are_created_with_kube_proxys_options(ipsets: Ipsets, real: bool) -> None:
    specs = all_specs(Family.V4) + all_specs(Family.V6)
    assert await ipsets.ensure(specs) == {}
    for spec in specs:
        assert await _options(ipsets, real, spec.name) == wanted_options(spec)
    if real:  # as ipset save prints kube-proxy's own sets
        saved = await ipsets_module.run_command(["ipset", "save"])
        assert (
            "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 b" in saved
        )
        assert "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535\n" in saved
        assert " comment" not in saved


OTHER_OPTIONS = {
    "comment (this proxy before 0.2)": ("KUBE-CLUSTER-IP", SetOptions(maxelem=65536, comment=True)),
    "maxelem": ("KUBE-LOOP-BACK", SetOptions(maxelem=131072)),
    "counters": ("KUBE-6-LOAD-BALANCER-SOURCE-CID", SetOptions(maxelem=65536, counters=True)),
    "bitmap range": ("KUBE-NODE-PORT-TCP", SetOptions(port_range=(1, 65535))),
    "bitmap comment": (
        "KUBE-HEALTH-CHECK-NODE-PORT",
        SetOptions(port_range=(0, 65535), comment=True),
    ),
}
ENTRY = {
    "KUBE-CLUSTER-IP": "10.96.0.10,tcp:80",
    "KUBE-LOOP-BACK": "10.244.0.5,tcp:8080,10.244.0.5",
    "KUBE-6-LOAD-BALANCER-SOURCE-CID": "fd00:203::7,tcp:443,fd00:1::/64",
    "KUBE-NODE-PORT-TCP": "30080",
    "KUBE-HEALTH-CHECK-NODE-PORT": "31000",
}


@pytest.mark.parametrize("case", sorted(OTHER_OPTIONS))
async def test_a_set_with_other_options_is_rebuilt_with_its_entries(
    ipsets: Ipsets, real: bool, case: str
) -> None:
    name, options = OTHER_OPTIONS[case]
    spec = next(s for f in Family for s in all_specs(f) if s.name == name)
    await _seed(ipsets, real, spec, options)
    await ipsets.update({name: ({ENTRY[name]}, set())})
    rebuilt = await ipsets.ensure([spec])
    assert list(rebuilt) == [name]
    assert rebuilt[name] == option_differences(options, wanted_options(spec))
    assert await ipsets.entries(name) == {ENTRY[name]}
    assert await _options(ipsets, real, name) == wanted_options(spec)
    assert await ipsets.list_names() == {name}  # no scratch set left
    assert await ipsets.ensure([spec]) == {}  # and now nothing to do


async def test_kube_proxys_own_sets_are_adopted_untouched(
    ipsets: Ipsets, real: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = all_specs(Family.V4)
    shared = [s for s in specs if s.name != MARKED[Family.V4]]  # kube-proxy has no such set
    for spec in shared:
        await _seed(ipsets, real, spec, wanted_options(spec))
    await ipsets.update({"KUBE-CLUSTER-IP": ({"10.96.0.10,tcp:80"}, set())})
    with processes_started(monkeypatch) as started:
        assert await ipsets.ensure(specs) == {}
    assert await ipsets.entries("KUBE-CLUSTER-IP") == {"10.96.0.10,tcp:80"}
    assert started == []  # the one missing set is created over netlink


async def test_a_set_of_another_type_is_named_and_the_others_are_made(
    ipsets: Ipsets, real: bool
) -> None:
    wrong = IpsetSpec("KUBE-CLUSTER-IP", "hash:ip", Family.V4, "")
    await _seed(ipsets, real, wrong, wanted_options(wrong))
    with pytest.raises(InvalidValueError, match=r"KUBE-CLUSTER-IP is hash:ip IPv4"):
        await ipsets.ensure(all_specs(Family.V4))
    assert await ipsets.list_names() == {s.name for s in all_specs(Family.V4)}


# ------------------------------------------- created as ``ipset create`` creates them
# ensure creates missing sets over netlink (IPSET_CMD_CREATE), not through the tool: under
# the kernel, a set made so must be indistinguishable from the tool's own, revision
# included (it decides what the set lists: bucketsize and initval on hash types).

_INITVAL = re.compile(r" initval 0x[0-9a-f]+")  # a random hash seed per set


async def _as_listed() -> tuple[dict[str, tuple[str, str, str]], set[str]]:
    """Every set as ``ipset list -t`` shows it, {name: (type, revision, header)}, and the
    ``create`` lines of ``ipset save``; both without the initval."""
    headers = {}
    for block in (await ipsets_module.run_command(["ipset", "list", "-t"])).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            headers[fields["Name"]] = (
                fields["Type"],
                fields["Revision"],
                _INITVAL.sub("", fields["Header"]),
            )
    saved = await ipsets_module.run_command(["ipset", "save"])
    creates = {_INITVAL.sub("", line) for line in saved.splitlines() if line.startswith("create")}
    return headers, creates


async def test_every_set_is_what_ipset_create_makes(real: bool, netns: None) -> None:
    if not real:
        pytest.skip("needs the kernel and the ipset tool")
    specs = all_specs(Family.V4) + all_specs(Family.V6)
    await IpsetCli().ensure(specs)
    ours = await _as_listed()
    await ipsets_module.run_command(["ipset", "destroy"])  # every set of this netns
    # One restore of the create lines: the tool sends the same message for each as
    # ``ipset create`` does (traced), and 36 process starts took minutes under qemu.
    lines = "".join(f"{create_line(spec)}\n" for spec in specs)
    await ipsets_module.run_command(["ipset", "restore"], lines)
    theirs = await _as_listed()
    assert set(ours[0]) == {spec.name for spec in specs}
    assert ours == theirs
    # The hash types list the options of their newest revisions, on either kernel.
    assert all("bucketsize 12" in header for kind, _, header in ours[0].values() if "hash" in kind)


async def test_kube_proxys_create_exist_accepts_every_set_ensure_made(
    real: bool, netns: None
) -> None:
    """The switch back to kube-proxy: on every sync it runs its own ``ipset create ...
    -exist`` for each of its sets and abandons the sync if one fails."""
    if not real:
        pytest.skip("needs the kernel and the ipset tool")
    await IpsetCli().ensure(all_specs(Family.V4) + all_specs(Family.V6))
    lines = []
    for family in Family:
        inet = "inet6" if family is Family.V6 else "inet"
        for spec in all_specs(family):
            if spec.skbinfo:
                continue  # the proxy's own set: kube-proxy has none of that name
            options = (
                "range 0-65535"
                if spec.type == BITMAP_PORT
                else f"family {inet} hashsize 1024 maxelem 65536"
            )
            lines.append(f"create {spec.name} {spec.type} {options}\n")
    # Its creates, with -exist, in one restore (one process, not one per set: minutes
    # under qemu); a restore stops and fails at the first create the kernel refuses.
    await ipsets_module.run_command(["ipset", "restore", "-exist"], "".join(lines))


async def test_a_set_made_meanwhile_is_taken_if_alike_and_named_if_not(
    real: bool, netns: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sets someone else creates between ensure's listing and its creates: one alike is
    no error (-exist), one with other options raises, naming it, after every other set
    was created; the next ensure sees it and rebuilds it."""
    if not real:
        pytest.skip("the fake has no in-between")
    ipsets = IpsetCli()
    specs = all_specs(Family.V4)
    alike = next(s for s in specs if s.name == "KUBE-CLUSTER-IP")
    other = next(s for s in specs if s.name == "KUBE-NODE-PORT-TCP")
    await _seed(ipsets, real, alike, wanted_options(alike))
    await _seed(ipsets, real, other, SetOptions(port_range=(1, 65535)))

    async def listed_before_they_came() -> dict[str, SetHeader]:
        return {}

    with monkeypatch.context() as patch:
        patch.setattr(ipsets_module, "list_headers", listed_before_they_came)
        with pytest.raises(DataplaneError, match="KUBE-NODE-PORT-TCP: a set of this name exists"):
            await ipsets.ensure(specs)
    assert await ipsets.list_names() == {s.name for s in specs}
    assert await _options(ipsets, real, alike.name) == wanted_options(alike)
    assert await ipsets.ensure(specs) == {other.name: ["port_range (1, 65535) (want (0, 65535))"]}


# ------------------------------------------------------------ firewall marks (skbinfo)
# KUBE-EXTERNAL-LOCAL-FWMARK: hash:ip,port created with ``skbinfo``; its entries carry the
# mark that ``iptables -j SET --map-set NAME dst,dst --map-mark`` stamps on packets.

MARKED = {Family.V4: "KUBE-EXTERNAL-LOCAL-FWMARK", Family.V6: "KUBE-6-EXTERNAL-LOCAL-FWMARK"}
TARGET = {Family.V4: "203.0.113.7", Family.V6: "fd00:203::7"}


def _marked(family: Family, port: int, protocol: IpProtocol = IpProtocol.TCP) -> str:
    address = TARGET[family]
    return marked_entry(address, protocol, port, mark_for(address, protocol, port), fwmark.MASK)


@pytest.mark.parametrize("family", [Family.V4, Family.V6], ids=["v4", "v6"])
async def test_marked_set_is_created_with_skbinfo(
    ipsets: Ipsets, real: bool, family: Family
) -> None:
    await ipsets.ensure(all_specs(family))
    assert MARKED[family] in await ipsets.list_names()
    if real:  # the create line exactly as the kernel lists it back
        inet = "inet6" if family is Family.V6 else "inet"
        saved = await ipsets_module.run_command(["ipset", "save", MARKED[family]])
        assert saved.startswith(
            f"create {MARKED[family]} hash:ip,port family {inet} hashsize 1024 maxelem 65536"
            " skbinfo "
        )


@pytest.mark.parametrize("family", [Family.V4, Family.V6], ids=["v4", "v6"])
@pytest.mark.parametrize("path", ["netlink", "restore"])
async def test_marked_entries_read_back_as_written(
    real: bool, netns: None, monkeypatch: pytest.MonkeyPatch, family: Family, path: str
) -> None:
    ipsets: Ipsets = IpsetCli(netlink_limit=0 if path == "restore" else 1_000) if real else (
        FakeIpsets())  # fmt: skip
    name = MARKED[family]
    a, b, c = _marked(family, 443), _marked(family, 53, IpProtocol.UDP), _marked(family, 80)
    # The full mask is left off, 0x0/0x0 is no mark at all (as ipset prints them).
    full = f"{TARGET[family]},sctp:9 skbmark 0x2c07"
    assert marked_entry(TARGET[family], IpProtocol.SCTP, 9, 0x2C07, 0xFFFFFFFF) == full
    unmarked = f"{TARGET[family]},udp:10"
    await ipsets.ensure(all_specs(family))
    with processes_started(monkeypatch) as started:
        await ipsets.update({name: ({a, b, full, f"{unmarked} skbmark 0x0/0x0"}, set())})
    assert len(started) == (1 if real and path == "restore" else 0)
    assert await ipsets.entries(name) == {a, b, full, unmarked}
    assert (await ipsets.save_all())[name] == {a, b, full, unmarked}
    # Deleting needs the key only, with or without a mark (any mark).
    await ipsets.update({name: (set(), {a, b.partition(" skbmark")[0] + " skbmark 0x1"})})
    await ipsets.update({name: (set(), {full.partition(" ")[0]})})
    assert await ipsets.entries(name) == {unmarked}
    await ipsets.replace(name, {a, c})
    assert await ipsets.entries(name) == {a, c}
    assert (await ipsets.save_all())[name] == {a, c}


@pytest.mark.parametrize("family", [Family.V4, Family.V6], ids=["v4", "v6"])
@pytest.mark.parametrize("path", ["netlink", "restore"])
async def test_adding_a_present_key_with_another_mark_leaves_the_new_mark(
    real: bool, netns: None, family: Family, path: str
) -> None:
    """The mark is data, not key: the kernel holds one entry per key, -exist overwrites."""
    ipsets: Ipsets = IpsetCli(netlink_limit=0 if path == "restore" else 1_000) if real else (
        FakeIpsets())  # fmt: skip
    name, key = MARKED[family], f"{TARGET[family]},tcp:443"
    await ipsets.ensure(all_specs(family))
    await ipsets.update({name: ({f"{key} skbmark 0x2c05/0x3fff"}, set())})
    await ipsets.update({name: ({f"{key} skbmark 0x2c09/0x3fff"}, set())})
    assert await ipsets.entries(name) == {f"{key} skbmark 0x2c09/0x3fff"}
    # As a diff writes a changed mark: the old entry deleted, the new one added.
    await ipsets.update(
        {name: ({f"{key} skbmark 0x2c0d/0x3fff"}, {f"{key} skbmark 0x2c09/0x3fff"})}
    )
    assert await ipsets.entries(name) == {f"{key} skbmark 0x2c0d/0x3fff"}
    await ipsets.update({name: ({key}, set())})  # re-added with no mark: the mark goes
    assert await ipsets.entries(name) == {key}


@pytest.mark.parametrize("path", ["netlink", "restore"])
async def test_a_mark_for_a_set_without_skbinfo_changes_nothing(
    real: bool, netns: None, path: str
) -> None:
    ipsets: Ipsets = IpsetCli(netlink_limit=0 if path == "restore" else 1_000) if real else (
        FakeIpsets())  # fmt: skip
    await ipsets.ensure(all_specs(Family.V4))
    with pytest.raises(InvalidValueError) as info:
        await ipsets.update(
            {
                MARKED[Family.V4]: ({_marked(Family.V4, 443)}, set()),
                "KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443 skbmark 0x2c05/0x3fff"}, set()),
            }
        )
    assert info.value.field == "ipset entry skbmark"
    assert "KUBE-CLUSTER-IP" in str(info.value)
    with pytest.raises(InvalidValueError, match="without skbinfo"):
        await ipsets.update({"KUBE-CLUSTER-IP": (set(), {"10.96.0.1,tcp:443 skbmark 0x1"})})
    with pytest.raises(InvalidValueError, match="without skbinfo"):
        await ipsets.replace("KUBE-CLUSTER-IP", {"10.96.0.1,tcp:443 skbmark 0x1"})
    assert await ipsets.entries(MARKED[Family.V4]) == set()
    assert await ipsets.entries("KUBE-CLUSTER-IP") == set()


@pytest.mark.parametrize(
    ("mark", "field"),
    [
        ("2c05", "skbmark"),  # ipset wants the 0x
        ("0x", "skbmark"),
        ("0x2c05/3fff", "skbmark mask"),
        ("0x123456789", "skbmark"),
        ("0x2c05/0xzz", "skbmark mask"),
    ],
)
async def test_malformed_mark_raises_and_changes_nothing(
    ipsets: Ipsets, mark: str, field: str
) -> None:
    name = MARKED[Family.V4]
    await ipsets.ensure(all_specs(Family.V4))
    with pytest.raises(InvalidValueError) as info:
        await ipsets.update(
            {name: ({_marked(Family.V4, 443), f"{TARGET[Family.V4]},tcp:80 skbmark {mark}"}, set())}
        )
    assert info.value.field == f"ipset entry {field}"
    assert await ipsets.entries(name) == set()


@pytest.mark.parametrize("family", [Family.V4, Family.V6], ids=["v4", "v6"])
async def test_ensure_rebuilds_a_set_made_without_skbinfo(
    ipsets: Ipsets, real: bool, family: Family
) -> None:
    """An older proxy's set: swapped for one with skbinfo, its entries kept."""
    name, key = MARKED[family], f"{TARGET[family]},tcp:443"
    spec = set_spec(EXTERNAL_LOCAL_FWMARK, family)
    await ipsets.ensure([spec._replace(skbinfo=False)])
    await ipsets.update({name: ({key}, set())})
    await ipsets.ensure(all_specs(family))
    assert await ipsets.entries(name) == {key}
    # A fresh process learns from the kernel (one header dump) that the set takes marks.
    fresh = IpsetCli() if real else ipsets
    await fresh.update({name: ({_marked(family, 443)}, set())})
    assert await ipsets.entries(name) == {_marked(family, 443)}
    assert await ipsets.list_names() == {s.name for s in all_specs(family)}  # no temporary
    # And back: the marks go with the option.
    await ipsets.ensure([spec._replace(skbinfo=False)])
    assert await ipsets.entries(name) == {key}
    with pytest.raises(InvalidValueError, match="without skbinfo"):
        await ipsets.update({name: ({_marked(family, 443)}, set())})
    if real:
        other = IpsetCli()  # a fresh process learns the option from the kernel
        with pytest.raises(InvalidValueError, match="without skbinfo"):
            await other.update({name: ({_marked(family, 443)}, set())})


@pytest.mark.parametrize("family", [Family.V4, Family.V6], ids=["v4", "v6"])
async def test_map_mark_stamps_the_entrys_mark_on_packets(
    real: bool, netns: None, family: Family
) -> None:
    """Under the kernel: a datagram to a marked address:port leaves OUTPUT with the mark,
    also after ensure swapped the set (made without skbinfo) under a live rule."""
    if not real:
        pytest.skip("needs the kernel: iptables -j SET --map-mark and a real datagram")
    ipsets = IpsetCli()
    name, address, port = MARKED[family], TARGET[family], 9999
    mark = mark_for(address, IpProtocol.UDP, port)
    await ipsets.ensure([set_spec(EXTERNAL_LOCAL_FWMARK, family)._replace(skbinfo=False)])
    prefix = "ip6tables" if family is Family.V6 else "iptables"
    backend = await detect_backend()
    rule = f"-A OUTPUT -m mark --mark {mark:#x} -j ACCEPT"
    await IptablesCli(backend).restore(
        family,
        f"*mangle\n-A OUTPUT -j SET --map-set {name} dst,dst --map-mark\n{rule}\nCOMMIT\n",
    )
    await ipsets.ensure(all_specs(family))  # rebuilt while the rule references it
    entry = marked_entry(address, IpProtocol.UDP, port, mark, fwmark.MASK)
    await ipsets.update({name: ({entry}, set())})
    plen = 128 if family is Family.V6 else 32
    await ipsets_module.run_command(["ip", "addr", "add", f"{address}/{plen}", "dev", "lo"])
    inet = socket.AF_INET6 if family is Family.V6 else socket.AF_INET
    with socket.socket(inet, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"marked", (address, port))
        sock.sendto(b"not marked", (address, port + 1))
    saved = await ipsets_module.run_command([f"{prefix}-{backend}-save", "-c", "-t", "mangle"])
    # One packet, and its size says which: the 6-byte payload behind the IP and UDP headers.
    counts = re.findall(rf"^\[(\d+):(\d+)\] {re.escape(rule)}$", saved, re.MULTILINE)
    headers = (40 if family is Family.V6 else 20) + 8
    assert counts == [("1", str(headers + len(b"marked")))], saved


async def test_fingerprint_follows_sets_and_entries(ipsets: Ipsets) -> None:
    """What the idle resync checks instead of ``ipset save``: equal while nothing changes,
    different after an entry is added or removed, or a set is created or destroyed."""
    await ipsets.ensure([set_spec(CLUSTER_IP, Family.V4)])
    seen = {await ipsets.fingerprint()}
    assert await ipsets.fingerprint() in seen
    for change in (
        ipsets.update({"KUBE-CLUSTER-IP": ({"10.96.0.1,tcp:443"}, set())}),
        ipsets.update({"KUBE-CLUSTER-IP": ({"10.96.0.10,udp:53"}, {"10.96.0.1,tcp:443"})}),
        ipsets.ensure([set_spec(CLUSTER_IP, Family.V6)]),
        ipsets.destroy(["KUBE-CLUSTER-IP"]),
    ):
        await change
        now = await ipsets.fingerprint()
        assert now not in seen
        seen.add(now)
