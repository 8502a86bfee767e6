"""Feature gates: kube-proxy's names (1.36), its refusals, and --feature-gates' syntax."""

from __future__ import annotations

import pytest

from ipvsproxy.config import ConfigError
from ipvsproxy.config.feature_gates import (
    KNOWN_GATES,
    LOCKED_ON,
    REMOVED_PROXY_GATES,
    check_gates,
    parse_gates,
)


def test_the_newest_release_list_is_complete_enough() -> None:
    assert len(KNOWN_GATES) == 210 + 7
    for gate in ("NFTablesProxyMode", "AllAlpha", "AllBeta", "LoggingBetaOptions", "WatchList"):
        assert gate in KNOWN_GATES
    assert LOCKED_ON <= KNOWN_GATES
    assert not REMOVED_PROXY_GATES & KNOWN_GATES


def test_known_gates_pass_and_removed_ones_are_returned() -> None:
    gates = [("WatchList", False), ("AllAlpha", True), ("IPv6DualStack", True)]
    assert check_gates(gates, "featureGates") == ("IPv6DualStack",)


def test_unknown_gate_is_refused_as_kube_proxy_refuses_it() -> None:
    with pytest.raises(ConfigError, match=r"^--feature-gates: unrecognized feature gate: Foo$"):
        check_gates([("WatchList", True), ("Foo", True)], "--feature-gates")


def test_locked_gate_cannot_be_turned_off() -> None:
    check_gates([("NFTablesProxyMode", True)], "x")
    with pytest.raises(ConfigError, match="cannot set feature gate NFTablesProxyMode to false"):
        check_gates([("NFTablesProxyMode", False)], "x")


def test_parse_gates_is_map_string_bool() -> None:
    assert parse_gates(" A = true ,B=F,,C=0") == (("A", True), ("B", False), ("C", False))
    assert parse_gates("") == ()
    with pytest.raises(ValueError, match="malformed pair, expect string=bool"):
        parse_gates("A")
    with pytest.raises(ValueError, match="invalid value of A: yes"):
        parse_gates("A=yes")
