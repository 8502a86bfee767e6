"""Firewall marks are pinned: the same address, protocol and port get the same mark in every
process and every release. A restarted or upgraded proxy finds its marks in the kernel (the
firewall-mark virtual servers, the KUBE-EXTERNAL-LOCAL-FWMARK entries) and adopts them; a
mark computed differently would re-create each of those servers, dropping its connections."""

from __future__ import annotations

import pytest

from ipvsproxy.core.fwmark import FLAG, MASK, mark_for, protocol_of
from ipvsproxy.core.model import IpProtocol
from tests.support.python_process import run_python

# Values computed once and written down, not by the function under test.
PINNED = [
    ("203.0.113.7", IpProtocol.TCP, 80, 0x2099),
    ("203.0.113.7", IpProtocol.UDP, 53, 0x2DBA),
    ("2001:db8::10", IpProtocol.SCTP, 3868, 0x259B),
    ("198.51.100.1", IpProtocol.TCP, 443, 0x2BD1),
]


@pytest.mark.parametrize(("address", "protocol", "port", "mark"), PINNED)
def test_marks_are_pinned(address: str, protocol: IpProtocol, port: int, mark: int) -> None:
    assert mark_for(address, protocol, port) == mark
    assert mark & ~MASK == 0
    assert mark & FLAG
    assert protocol_of(mark) is protocol


def test_marks_do_not_depend_on_the_process() -> None:
    """Another interpreter with another string hash seed computes the same marks (a mark
    built on hash() would differ here)."""
    keys = [(a, p.name, n) for a, p, n, _ in PINNED]
    code = (
        "from ipvsproxy.core.fwmark import mark_for; from ipvsproxy.core.model import IpProtocol;"
        f"print([mark_for(a, IpProtocol[p], n) for a, p, n in {keys}])"
    )
    for seed in ("1", "2"):
        out = run_python(code, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
        assert out.strip() == str([m for *_, m in PINNED])
