"""From the flags that were given (and a config file) to one ``Config``, as kube-proxy decides.

kube-proxy's rule, kept here: without ``--config`` the flags set the configuration, over the
defaults. With ``--config`` the file *is* the configuration: kube-proxy throws the
flag-built one away, so every setting flag on the command line is ignored, except
``--hostname-override``, ``--master``, ``--init-only`` and the logging flags (``-v``,
``--logging-format``, ``--log-flush-frequency``), which apply over the file. kube-proxy
ignores the others silently; this proxy names them in one warning line, so that a stale
flag next to ``--config`` is noticed instead of trusted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ipvsproxy.config.errors import ConfigError
from ipvsproxy.config.file_loader import FileReport
from ipvsproxy.config.flags import FLAGS_BY_NAME, KUBE_PROXY_FLAGS, Role, flag_of_field
from ipvsproxy.config.model import Config
from ipvsproxy.config.values import append_port_if_needed

PROXY_MODES = ("", "ipvs")
JSON = "application/json"
# Flags given as "ignored:<flag>" by the parser (flags.Role.IGNORED).
IGNORED_PREFIX = "ignored:"

_OVER_FILE = frozenset(f.field for f in KUBE_PROXY_FLAGS if f.role is Role.OVER_FILE)


@dataclasses.dataclass(frozen=True)
class Notice:
    """A warning for the log, once logging is set up: one line naming what it is about."""

    event: str
    names: tuple[str, ...]


def config_from_flags(given: Mapping[str, Any], *, writing_config: bool = False) -> Config:
    """The configuration of a command line without ``--config``: defaults, then the flags."""
    values = {k: v for k, v in given.items() if not k.startswith(IGNORED_PREFIX)}
    mode = values.pop("proxy_mode", "")
    if mode not in PROXY_MODES:
        raise ConfigError(f"--proxy-mode: this proxy implements only ipvs, got {mode!r}")
    if values.get("bind_address") == "":
        del values["bind_address"]  # pflag's IP flag: an empty value changes nothing
    healthz_port = values.pop("healthz_port", None)
    metrics_port = values.pop("metrics_port", None)
    _process_hostname(values)
    if "feature_gates" in values:  # repeated --feature-gates: a later value for a gate wins
        values["feature_gates"] = tuple(sorted(dict(values["feature_gates"]).items()))
    config = Config(**values)
    # The deprecated port flags: kube-proxy applies them only when neither --config nor
    # --write-config-to is given; port 0 turns the server off (metrics then fails validation).
    if not writing_config:
        config = dataclasses.replace(
            config,
            healthz_bind_address=_with_port(config.healthz_bind_address, healthz_port, 10256),
            metrics_bind_address=_with_port(config.metrics_bind_address, metrics_port, 10249),
        )
    return config.validate()


def config_over_file(file_config: Config, given: Mapping[str, Any]) -> Config:
    """The configuration of a command line with ``--config``: the file, then the few flags
    that apply over it."""
    overrides = {k: v for k, v in given.items() if k in _OVER_FILE}
    _process_hostname(overrides)
    return dataclasses.replace(file_config, **overrides).validate()


def flags_replaced_by_file(given: Mapping[str, Any]) -> tuple[str, ...]:
    """The setting flags given next to ``--config``, which it replaces."""
    return tuple(
        sorted(
            flag_of_field(dest)
            for dest in given
            if not dest.startswith(IGNORED_PREFIX) and dest not in _OVER_FILE
        )
    )


def ignored_flags(given: Mapping[str, Any]) -> tuple[str, ...]:
    """The flags that mean nothing here, given with a value that would matter."""
    names = []
    for dest, value in given.items():
        if dest.startswith(IGNORED_PREFIX):
            flag = FLAGS_BY_NAME[dest.removeprefix(IGNORED_PREFIX)]
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if text != flag.harmless:
                names.append(flag.name)
    return tuple(sorted(names))


def notices(given: Mapping[str, Any], *, with_config_file: bool) -> list[Notice]:
    """The warnings a command line deserves, each one line."""
    found = []
    if with_config_file and (replaced := flags_replaced_by_file(given)):
        found.append(
            Notice(
                "flags ignored: --config is given, and kube-proxy ignores these flags then;"
                " set them in the config file",
                replaced,
            )
        )
    if ignored := ignored_flags(given):
        found.append(Notice("flags ignored: they mean nothing to an IPVS proxy", ignored))
    content_type = given.get("api_content_type")
    if content_type is not None and content_type != JSON and not with_config_file:
        found.append(
            Notice(
                "--kube-api-content-type: the API client speaks JSON; the type is ignored",
                (content_type,),
            )
        )
    return found


def _process_hostname(values: dict[str, Any]) -> None:
    """kube-proxy's --hostname-override: an empty value changes nothing; any other is
    trimmed and lowercased, and a blank one is an error."""
    if "hostname_override" not in values:
        return
    given = values.pop("hostname_override")
    if given:
        name = given.strip().lower()
        if not name:
            raise ConfigError("--hostname-override: empty hostname-override is invalid")
        values["hostname_override"] = name


def _with_port(address: str, port: int | None, default: int) -> str:
    if port == 0:
        return ""
    return append_port_if_needed(address, default if port is None else port)


def file_notices(report: FileReport) -> list[Notice]:
    """The warnings a config file deserves: what kube-proxy would have read leniently (one
    line naming every such field), and the fields that have no effect here."""
    found = []
    if report.lenient:
        names = (
            *report.unknown,
            *(f"{path} (obsolete)" for path in report.obsolete),
            *(f"{key} (duplicate)" for key in report.duplicates),
        )
        found.append(
            Notice(
                "config file read leniently, as kube-proxy reads it: these fields are dropped",
                names,
            )
        )
    if report.ignored:
        found.append(Notice("config file fields ignored: they mean nothing here", report.ignored))
    return found
