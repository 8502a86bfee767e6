"""The value forms: Go durations and integers, booleans, lists, addresses."""

from __future__ import annotations

import pytest

from ipvsproxy.config import ConfigError
from ipvsproxy.config.values import (
    append_port_if_needed,
    format_duration,
    parse_bool,
    parse_duration,
    parse_float,
    parse_host_port,
    parse_int,
    parse_ip,
    parse_list,
    split_host_port,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m", 60.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("0s", 0.0),
        ("2h22m", 8520.0),
        ("100us", 0.0001),
        ("10µs", 0.00001),
        ("1ns", 1e-9),
        ("-1m", -60.0),
        ("+5s", 5.0),
        (".5s", 0.5),
        ("1m0.5s", 60.5),
    ],
)
def test_parse_duration_accepts_go_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "s", "1d", "1m x", "1.s.", "abc", "5 s", "-", "1h-5m"])
def test_parse_duration_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "seconds", [0.0, 0.5, 1.0, 30.0, 60.0, 90.0, 5400.0, 3661.25, 1e-9, 2.5e-6, 86400.0]
)
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        # Go's time.Duration.String(), which kube-proxy's --write-config-to uses.
        (0, "0s"),
        (30, "30s"),
        (90, "1m30s"),
        (900, "15m0s"),
        (3600, "1h0m0s"),
        (86400, "24h0m0s"),
        (0.5, "500ms"),
        (1.5, "1.5s"),
        (0.25, "250ms"),
        (1.5e-6, "1.5µs"),
        (5e-9, "5ns"),
        (-60, "-1m0s"),
        (8520.5, "2h22m0.5s"),
    ],
)
def test_format_duration_is_gos_duration_string(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_parse_bool_and_list() -> None:
    assert parse_bool("true") is True
    assert parse_bool("False") is False
    assert parse_bool("1") is True
    with pytest.raises(ValueError, match="invalid boolean"):
        parse_bool("yes")
    assert parse_list("10.0.0.0/8, 192.168.0.0/16,,") == ("10.0.0.0/8", "192.168.0.0/16")


@pytest.mark.parametrize(
    ("text", "value"),
    [("14", 14), ("-999", -999), ("0x10", 16), ("010", 8), ("0o10", 8), ("1_000", 1000)],
)
def test_parse_int_is_gos_base_0(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("text", ["", "1.5", "ten", "2147483648", "09"])
def test_parse_int_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="integer"):
        parse_int(text)


def test_parse_float() -> None:
    assert parse_float("5") == 5.0
    assert parse_float("0.5") == 0.5
    for bad in ("", "five", "nan", "inf"):
        with pytest.raises(ValueError, match="invalid number"):
            parse_float(bad)


def test_parse_ip_is_sloppy_like_kube_proxy() -> None:
    assert str(parse_ip("010.000.0.1")) == "10.0.0.1"
    assert str(parse_ip("::1")) == "::1"
    for bad in ("256.0.0.1", "1.2.3", "host", ""):
        with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
            parse_ip(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4:80", ("1.2.3.4", "80")),
        ("[::1]:9", ("::1", "9")),
        ("host:80", ("host", "80")),
        (":10249", ("", "10249")),
        ("1.2.3.4", None),
        ("::1", None),
        ("[::1]", None),
    ],
)
def test_split_host_port_is_gos(text: str, expected: tuple[str, str] | None) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:10256", ("0.0.0.0", 10256)),
        ("[::1]:9", ("::1", 9)),
        (":10249", ("", 10249)),
        ("010.0.0.1:80", ("10.0.0.1", 80)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text, "x") == expected


@pytest.mark.parametrize("text", ["10256", "host:80", "1.2.3.4:0", "1.2.3.4:70000", "1.2.3.4:"])
def test_parse_host_port_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="healthz-bind-address"):
        parse_host_port(text, "healthz-bind-address")


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("1.2.3.4", "1.2.3.4:10256"),
        ("::1", "[::1]:10256"),
        ("0.0.0.0:80", "0.0.0.0:80"),
        ("[::]:80", "[::]:80"),
        ("foo", "foo"),  # not an IP: left for validation to refuse
        ("foo:80", "foo:80"),
    ],
)
def test_append_port_if_needed(address: str, expected: str) -> None:
    assert append_port_if_needed(address, 10256) == expected
