"""Creating ipsets over netlink (IPSET_CMD_CREATE, IPSET_CMD_TYPE): encoding, the revision
chosen, and the -exist request (pure: the socket is replaced).

The expected bytes are what ``strace -xx ipset create ...`` showed Debian 12's ipset v7.17
send under Linux 6.1 (UML) and 6.12 (qemu), byte for byte, except the protocol version:
the tool negotiates 7, this module sends 6, which every kernel since 3.x takes and which
changes nothing in a created set.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from ipvsproxy.core.ipset_catalog import (
    BITMAP_PORT,
    EXTERNAL_LOCAL_FWMARK,
    HASH_IP,
    HASH_IP_PORT,
    HASH_IP_PORT_IP,
    HASH_IP_PORT_NET,
    IpsetSpec,
    set_spec,
)
from ipvsproxy.core.model import Family
from ipvsproxy.dataplane import ipset_netlink
from ipvsproxy.dataplane.errors import InvalidValueError
from ipvsproxy.dataplane.ipset_netlink import (
    ATTR_REVISION,
    ATTR_REVISION_MIN,
    CMD_CREATE,
    CMD_TYPE,
    IpsetNetlinkError,
    Request,
    create,
    create_payload,
    type_payload,
    type_revisions,
)
from ipvsproxy.dataplane.ipset_specs import (
    TOOL_REVISIONS,
    SetOptions,
    check_spec,
    create_revision,
    wanted_options,
)
from ipvsproxy.dataplane.netlink import NLM_F_CREATE, Message, nla


def _hex(text: str) -> bytes:
    """Bytes from hex written one netlink attribute a line (``#`` comments allowed)."""
    return bytes.fromhex(" ".join(line.partition("#")[0] for line in text.splitlines()))


HEAD = """
    02 00 00 00                        # nfgenmsg: AF_INET, v0, res_id 0
    05 00 01 00 06 00 00 00            # PROTOCOL 6
"""


def test_hash_ip_port_inet_with_kube_proxys_options() -> None:
    # ipset create B4 hash:ip,port family inet hashsize 1024 maxelem 65536 (Linux 6.1)
    spec = IpsetSpec("B4", HASH_IP_PORT, Family.V4, "")
    assert create_payload(spec, 6, wanted_options(spec)) == _hex(
        HEAD
        + """
    07 00 02 00 42 34 00 00                                  # SETNAME "B4"
    11 00 03 00 68 61 73 68 3a 69 70 2c 70 6f 72 74 00 00 00 00  # TYPENAME "hash:ip,port"
    05 00 04 00 06 00 00 00                                  # REVISION 6
    05 00 05 00 02 00 00 00                                  # FAMILY NFPROTO_IPV4
    14 00 07 80                                              # DATA, nested
        08 00 12 40 00 00 04 00                              # HASHSIZE 1024, net order
        08 00 13 40 00 01 00 00                              # MAXELEM 65536, net order
"""
    )


def test_marked_hash_ip_port_inet6_carries_skbinfo_first() -> None:
    # ipset create M6 hash:ip,port family inet6 hashsize 1024 maxelem 65536 skbinfo
    spec = IpsetSpec("M6", HASH_IP_PORT, Family.V6, "", skbinfo=True)
    assert create_payload(spec, 7, wanted_options(spec)) == _hex(
        HEAD
        + """
    07 00 02 00 4d 36 00 00                                  # SETNAME "M6"
    11 00 03 00 68 61 73 68 3a 69 70 2c 70 6f 72 74 00 00 00 00  # TYPENAME "hash:ip,port"
    05 00 04 00 07 00 00 00                                  # REVISION 7 (Linux 6.12)
    05 00 05 00 0a 00 00 00                                  # FAMILY NFPROTO_IPV6
    1c 00 07 80                                              # DATA, nested
        08 00 08 40 00 00 00 40                              # CADT_FLAGS WITH_SKBINFO
        08 00 12 40 00 00 04 00                              # HASHSIZE 1024
        08 00 13 40 00 01 00 00                              # MAXELEM 65536
"""
    )


def test_bitmap_port_has_no_family_and_a_port_range() -> None:
    # ipset create E bitmap:port range 0-65535
    spec = IpsetSpec("E", BITMAP_PORT, Family.V6, "")  # a V6 spec's bitmap is no different
    assert create_payload(spec, 3, wanted_options(spec)) == _hex(
        HEAD
        + """
    06 00 02 00 45 00 00 00                                  # SETNAME "E"
    10 00 03 00 62 69 74 6d 61 70 3a 70 6f 72 74 00          # TYPENAME "bitmap:port"
    05 00 04 00 03 00 00 00                                  # REVISION 3
    05 00 05 00 00 00 00 00                                  # FAMILY NFPROTO_UNSPEC
    14 00 07 80                                              # DATA, nested
        06 00 04 40 00 00 00 00                              # PORT 0, net order
        06 00 05 40 ff ff 00 00                              # PORT_TO 65535, net order
"""
    )


def test_other_options_in_attribute_order() -> None:
    # create X hash:ip,port family inet hashsize 1024 maxelem 131072 timeout 30 counters
    # comment forceadd: TIMEOUT (6) before CADT_FLAGS (8), the flags or'ed together.
    options = SetOptions(maxelem=131072, timeout=30, counters=True, comment=True, forceadd=True)
    payload = create_payload(IpsetSpec("X", HASH_IP_PORT, Family.V4, ""), 6, options)
    assert payload.endswith(
        _hex("""
    24 00 07 80
        08 00 06 40 00 00 00 1e                              # TIMEOUT 30
        08 00 08 40 00 00 00 38                              # CADT_FLAGS 0x08|0x10|0x20
        08 00 12 40 00 00 04 00                              # HASHSIZE 1024
        08 00 13 40 00 02 00 00                              # MAXELEM 131072
""")
    )


def test_type_request_as_the_tool_asks() -> None:
    # What ipset sends before creating a hash:ip set: which revisions has the kernel?
    assert type_payload(HASH_IP, 2) == _hex(
        HEAD
        + """
    0c 00 03 00 68 61 73 68 3a 69 70 00                      # TYPENAME "hash:ip"
    05 00 05 00 02 00 00 00                                  # FAMILY NFPROTO_IPV4
"""
    )


def _type_reply(highest: int, lowest: int | None) -> Message:
    body = bytes(4) + nla(ATTR_REVISION, bytes([highest]))
    if lowest is not None:
        body += nla(ATTR_REVISION_MIN, bytes([lowest]))
    return Message(0, 0, 1, bytes(16) + body)


def test_type_reply_gives_lowest_and_highest_revision() -> None:
    assert type_revisions([_type_reply(5, 0)]) == (0, 5)
    assert type_revisions([_type_reply(3, None)]) == (3, 3)  # an old kernel: the highest only
    assert type_revisions([]) is None


@pytest.mark.parametrize(
    ("kind", "kernel", "chosen"),
    [
        (HASH_IP, (0, 5), 5),  # Linux 6.1: the kernel's highest, as the tool takes it
        (HASH_IP, (0, 6), 6),  # Linux 6.12
        (HASH_IP_PORT, (0, 6), 6),
        (HASH_IP_PORT, (0, 7), 7),
        (HASH_IP_PORT_IP, (0, 6), 6),
        (HASH_IP_PORT_NET, (0, 8), 8),
        (BITMAP_PORT, (0, 3), 3),
        (HASH_IP_PORT, (0, 9), 7),  # a newer kernel: no revision the tool cannot list
        (HASH_IP, (8, 9), 8),  # the tool could not work with it at all: the nearest
    ],
)
def test_revision_is_the_highest_the_kernel_and_the_tool_share(
    kind: str, kernel: tuple[int, int], chosen: int
) -> None:
    assert create_revision(kind, *kernel) == chosen


def test_every_catalog_type_has_a_tool_revision() -> None:
    assert set(TOOL_REVISIONS) == {HASH_IP, HASH_IP_PORT, HASH_IP_PORT_IP, HASH_IP_PORT_NET,
                                   BITMAP_PORT}  # fmt: skip


def test_bad_specs_are_refused_before_the_kernel() -> None:
    with pytest.raises(InvalidValueError, match="ipset type"):
        check_spec(IpsetSpec("KUBE-X", "hash:net", Family.V4, ""))
    with pytest.raises(InvalidValueError, match="ipset name"):
        check_spec(IpsetSpec("KUBE-" + "X" * 27, HASH_IP, Family.V4, ""))


class FakeKernel:
    """Stands in for ``ipset_netlink.exchange``: answers TYPE with ``revisions`` and every
    CREATE with ``create_errors`` (by set name, else 0), recording what was sent."""

    def __init__(self, revisions: dict[str, tuple[int, int]]) -> None:
        self.revisions = revisions
        self.create_errors: dict[str, int] = {}
        self.sent: list[tuple[Request, int]] = []

    async def exchange(
        self, requests: Sequence[Request], flags: int = 0
    ) -> list[tuple[int, list[Message]]]:
        answers: list[tuple[int, list[Message]]] = []
        for request in requests:
            self.sent.append((request, flags))
            if request.command == CMD_TYPE:
                lowest, highest = self.revisions[request.name]
                answers.append((0, [_type_reply(highest, lowest)]))
            else:
                answers.append((self.create_errors.get(request.name, 0), []))
        return answers


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    fake = FakeKernel({HASH_IP_PORT: (0, 7), BITMAP_PORT: (0, 3)})
    monkeypatch.setattr(ipset_netlink, "exchange", fake.exchange)
    ipset_netlink.forget_revisions()
    yield fake
    ipset_netlink.forget_revisions()  # the fake's answers must not outlive the test


async def test_create_asks_each_type_once_and_creates_with_exist(kernel: FakeKernel) -> None:
    marked = set_spec(EXTERNAL_LOCAL_FWMARK, Family.V4)
    specs = [
        marked,
        set_spec(EXTERNAL_LOCAL_FWMARK, Family.V6),
        IpsetSpec("KUBE-P", BITMAP_PORT, Family.V4, ""),
    ]
    await create([(spec, wanted_options(spec)) for spec in specs])
    types = [(r.name, flags) for r, flags in kernel.sent if r.command == CMD_TYPE]
    # Per type and family (hash types are asked for the set's own family).
    assert types == [(BITMAP_PORT, 0), (HASH_IP_PORT, 0), (HASH_IP_PORT, 0)]
    creates = [(r, flags) for r, flags in kernel.sent if r.command == CMD_CREATE]
    assert [r.name for r, _ in creates] == [s.name for s in specs]
    # -exist: NLM_F_CREATE as the tool sends it, never NLM_F_EXCL.
    assert {flags for _, flags in creates} == {NLM_F_CREATE}
    assert creates[0][0].payload == create_payload(marked, 7, wanted_options(marked))
    kernel.sent.clear()
    await create([(marked, wanted_options(marked))])
    assert [r.command for r, _ in kernel.sent] == [CMD_CREATE]  # the answer is cached


async def test_every_create_is_attempted_and_the_first_failure_raised(
    kernel: FakeKernel,
) -> None:
    specs = [IpsetSpec(f"KUBE-{i}", HASH_IP_PORT, Family.V4, "") for i in range(3)]
    kernel.create_errors = {"KUBE-0": 17, "KUBE-2": 17}
    with pytest.raises(IpsetNetlinkError, match="KUBE-0: a set of this name exists") as info:
        await create([(spec, wanted_options(spec)) for spec in specs])
    assert info.value.code == 17
    assert [r.name for r, _ in kernel.sent if r.command == CMD_CREATE] == [
        "KUBE-0",
        "KUBE-1",
        "KUBE-2",
    ]


async def test_a_type_the_kernel_lacks_is_an_error(
    kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_such_type(
        requests: Sequence[Request], flags: int = 0
    ) -> list[tuple[int, list[Message]]]:
        return [(4098, []) for _ in requests]  # IPSET_ERR_FIND_TYPE

    monkeypatch.setattr(ipset_netlink, "exchange", no_such_type)
    spec = IpsetSpec("KUBE-X", HASH_IP_PORT_NET, Family.V4, "")
    with pytest.raises(IpsetNetlinkError, match="set type not supported"):
        await create([(spec, wanted_options(spec))])
