"""Logging: JSON lines off a terminal, key=value on one, -v levels, library records."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from ipvsproxy import logging as plog

pytestmark = pytest.mark.usefixtures("restore_logging")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    plog.configure("auto", 0, out)
    log = plog.get_logger("ipvsproxy.sync")
    log.info("sync done", virtual_servers_added=3, duration_ms=12.5)
    log.warning("object skipped", service="default/web", reason="invalid IP")
    records = [json.loads(line) for line in lines(out)]
    assert len(records) == 2
    assert records[0]["event"] == "sync done"
    assert records[0]["level"] == "info"
    assert records[0]["logger"] == "ipvsproxy.sync"
    assert records[0]["virtual_servers_added"] == 3
    assert records[0]["timestamp"].endswith("Z")
    assert records[1]["reason"] == "invalid IP"


def test_key_value_on_a_terminal() -> None:
    out = Tty()
    plog.configure("auto", 0, out)
    plog.get_logger("x").info("sync done", added=3)
    (line,) = lines(out)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", line)  # colours on a terminal
    assert "sync done" in plain
    assert "added=3" in plain
    assert "[x]" in plain
    assert not plain.startswith("{")


def test_log_format_overrides_the_terminal_check() -> None:
    tty = Tty()
    plog.configure("json", 0, tty)
    plog.get_logger().info("e", a=1)
    assert json.loads(tty.getvalue())["a"] == 1
    plain = io.StringIO()
    plog.configure("console", 0, plain)
    plog.get_logger().info("e", a=1)
    assert "a=1" in plain.getvalue()
    assert not plain.getvalue().startswith("{")


def test_verbosity_levels() -> None:
    out = io.StringIO()
    plog.configure("json", 0, out)
    plog.get_logger().debug("hidden")
    plog.get_logger().info("shown")
    assert [json.loads(line)["event"] for line in lines(out)] == ["shown"]
    out = io.StringIO()
    plog.configure("json", 1, out)
    plog.get_logger().debug("now shown")
    assert json.loads(out.getvalue())["level"] == "debug"


def test_module_level_logger_follows_later_configure() -> None:
    early = plog.get_logger("made.early")
    first, second = io.StringIO(), io.StringIO()
    plog.configure("json", 0, first)
    early.info("one")
    plog.configure("json", 0, second)
    early.info("two")
    assert json.loads(first.getvalue())["event"] == "one"
    assert json.loads(second.getvalue())["logger"] == "made.early"


def test_library_records_share_the_format() -> None:
    out = io.StringIO()
    plog.configure("json", 0, out)
    lib = logging.getLogger("aiohttp.server")
    lib.info("request log %s", 1)  # below the library threshold at -v 0
    lib.warning("slow %s", "client")
    (record,) = [json.loads(line) for line in lines(out)]
    assert record == {
        **record,
        "event": "slow client",
        "level": "warning",
        "logger": "aiohttp.server",
    }
    out = io.StringIO()
    plog.configure("json", 2, out)
    lib.info("request log %s", 2)
    assert json.loads(out.getvalue())["event"] == "request log 2"


def test_exceptions_are_structured_without_locals() -> None:
    out = io.StringIO()
    plog.configure("json", 0, out)
    secret = "token-123"  # a local that must not reach the log
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        plog.get_logger().exception("failed")
    record = json.loads(out.getvalue())
    assert record["exception"][0]["exc_type"] == "RuntimeError"
    assert secret not in out.getvalue()


def test_reconfiguring_does_not_duplicate_handlers() -> None:
    for _ in range(3):
        out = io.StringIO()
        plog.configure("json", 0, out)
    logging.getLogger("lib").error("once")
    assert len(lines(out)) == 1
