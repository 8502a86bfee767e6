"""Logs through structlog: one JSON object per line in a cluster, key=value on a terminal.

``configure`` is called once by the CLI; modules take a logger with
``get_logger(__name__)`` and log events with fields, e.g.
``log.info("sync done", added=3, removed=1, duration_ms=12.5)``. Records from
libraries that use the standard ``logging`` module (aiohttp, kubernetes_asyncio)
go through the same renderer, so the output stays one format.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog
from structlog.typing import FilteringBoundLogger

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


# Tracebacks as data in JSON, without local variables (they can hold tokens).
_EXC_DICTS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def level_for(verbosity: int) -> int:
    """kube-proxy's -v: 0 is info; 1 and above add debug events."""
    return logging.DEBUG if verbosity >= 1 else logging.INFO


def wants_json(fmt: str, stream: TextIO) -> bool:
    """``auto`` means JSON unless the stream is a terminal."""
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def configure(fmt: str = "auto", verbosity: int = 0, stream: TextIO | None = None) -> None:
    """Set up structlog and the standard logging bridge. Safe to call again (tests do)."""
    out = stream if stream is not None else sys.stderr
    as_json = wants_json(fmt, out)
    renderer: Any
    if as_json:
        renderer = structlog.processors.JSONRenderer()
        tail: list[Any] = [_EXC_DICTS, renderer]
    else:
        isatty = getattr(out, "isatty", None)
        renderer = structlog.dev.ConsoleRenderer(colors=bool(isatty and isatty()))
        tail = [renderer]

    structlog.configure(
        processors=[*_SHARED, structlog.processors.StackInfoRenderer(), *tail],
        wrapper_class=structlog.make_filtering_bound_logger(level_for(verbosity)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )

    # Library records: warnings and up by default (aiohttp logs every request
    # at info); everything at -v 2 and above.
    handler = logging.StreamHandler(out)
    pre: list[Any] = [*_SHARED, structlog.stdlib.add_logger_name]
    if as_json:
        pre.append(_EXC_DICTS)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=pre,
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_ipvsproxy", False):
            root.removeHandler(old)
    handler._ipvsproxy = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)


class _NamedLogger:
    """Resolves the configured logger at each call, so a module-level logger made at
    import time follows a later ``configure`` (structlog's own lazy proxy cannot
    carry a field called ``logger``)."""

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def __getattr__(self, name: str) -> Any:
        return getattr(structlog.get_logger().bind(**self._fields), name)


def get_logger(name: str | None = None, **fields: Any) -> FilteringBoundLogger:
    """A structlog logger; ``name`` appears as the ``logger`` field."""
    if name is not None:
        fields["logger"] = name
    return cast(FilteringBoundLogger, _NamedLogger(fields))
