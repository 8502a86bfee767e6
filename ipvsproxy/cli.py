"""The ``ipvsproxy`` command: kube-proxy's flags, its config file, and ``plan``.

Every kube-proxy flag is accepted (the table is ipvsproxy/config/flags.py), in pflag's
forms: ``--flag=value`` or ``--flag value``, bare booleans, ``_`` for ``-`` in names.
Which one wins when a flag and ``--config`` disagree is kube-proxy's rule
(ipvsproxy/config/precedence.py): the file, except for a few flags.

``main`` parses and validates everything before anything runs. A wrong flag or value
prints one line naming it and exits 2 (argparse's default would print the whole usage
first). The runtime lives in ``ipvsproxy.app``, imported only when needed so that --help,
--version, --write-config-to, ``plan`` and errors stay fast and work without it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from ipvsproxy import __version__
from ipvsproxy.config import (
    Config,
    ConfigError,
    Notice,
    config_from_flags,
    config_over_file,
    file_notices,
    load_config_file,
    notices,
    write_config_file,
)
from ipvsproxy.config.feature_gates import parse_gates
from ipvsproxy.config.flags import KUBE_PROXY_FLAGS, Flag, Role, Value
from ipvsproxy.config.precedence import IGNORED_PREFIX
from ipvsproxy.config.values import (
    parse_bool,
    parse_duration,
    parse_float,
    parse_int,
    parse_ip,
    parse_list,
    split_host_port,
)

PROG = "ipvsproxy"


class UsageError(Exception):
    """A bad command line: the message is the one line to print."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _typed(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """Wrap a parser so argparse prints our message, not 'invalid <func> value'."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _ip(text: str) -> str:
    return str(parse_ip(text.strip())) if text.strip() else ""


def _ip_port(text: str) -> str:
    """kube-proxy's IP[:PORT] flags: an IP, or an IP and a port."""
    split = split_host_port(text)
    try:
        parse_ip(split[0] if split else text)
    except ValueError:
        raise ValueError(f"{text!r} is not IP or IP:port") from None
    return text


def _level(text: str) -> int:
    value = parse_int(text)
    if value < 0:
        raise ValueError(f"invalid verbosity {text!r}")
    return value


_LOG_FORMATS = {"json": "json", "text": "console", "console": "console", "auto": "auto"}


def _log_format(text: str) -> str:
    if text not in _LOG_FORMATS:
        raise ValueError(f"unknown log format {text!r} (json or text)")
    return _LOG_FORMATS[text]


class _Accumulate(argparse.Action):
    """pflag's repeatable flags (string slices, --feature-gates): the first use replaces
    the default, later uses add to it."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, _: Any = None
    ) -> None:
        setattr(ns, self.dest, (getattr(ns, self.dest, None) or ()) + tuple(values))


_CONVERT: dict[Value, Callable[[str], Any]] = {
    Value.STRING: str,
    Value.BOOL: parse_bool,
    Value.INT: parse_int,
    Value.FLOAT: parse_float,
    Value.DURATION: parse_duration,
    Value.LIST: parse_list,
    Value.IP: _ip,
    Value.IP_PORT: _ip_port,
    Value.GATES: parse_gates,
    Value.LEVEL: _level,
    Value.PROXY_MODE: str,
    Value.LOG_FORMAT: _log_format,
}


def _add_flag(group: argparse._ArgumentGroup, flag: Flag) -> None:
    # SUPPRESS: a flag that was not given leaves no attribute, so "given" is exactly what
    # the namespace holds (kube-proxy's rules depend on which flags were given).
    kwargs: dict[str, Any] = {
        "dest": flag.field if flag.role is not Role.IGNORED else IGNORED_PREFIX + flag.name,
        "default": argparse.SUPPRESS,
        "help": flag.help,
        "metavar": flag.value.value,
        "type": _typed(_CONVERT[flag.value]),
    }
    if flag.value is Value.BOOL:
        kwargs.update(nargs="?", const=True)
    if flag.value is Value.LEVEL:
        kwargs.update(nargs="?", const=1)  # a bare -v: some debug output
    if flag.value in (Value.LIST, Value.GATES):
        kwargs["action"] = _Accumulate
    names = [flag.shorthand, flag.name] if flag.shorthand else [flag.name]
    group.add_argument(*names, **kwargs)


def _add_kube_proxy_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", dest="config_file", metavar="FILE", help="a KubeProxyConfiguration YAML file"
    )
    groups = {
        Role.SETTING: parser.add_argument_group("settings (ignored with --config, as kube-proxy)"),
        Role.OVER_FILE: parser.add_argument_group("settings that apply over --config too"),
        Role.IGNORED: parser.add_argument_group("accepted for kube-proxy compatibility, ignored"),
    }
    for flag in KUBE_PROXY_FLAGS:
        _add_flag(groups[flag.role], flag)


class _Version(argparse.Action):
    """kube-proxy's --version: bare (or =true, =raw) prints the version and exits; =false
    does nothing."""

    def __call__(
        self, parser: argparse.ArgumentParser, ns: argparse.Namespace, value: Any, _: Any = None
    ) -> None:
        if value in (None, "raw") or (value != "false" and _true(value)):
            print(f"{PROG} {__version__}")
            parser.exit()


def _true(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError:
        return True  # --version=v1.2.3 (kube-proxy: report that version): print ours


def build_parser() -> argparse.ArgumentParser:
    """The parser of the proxy itself (``ipvsproxy [flags]``)."""
    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} [flags]",
        allow_abbrev=False,
        description="A Kubernetes service proxy that programs IPVS, with kube-proxy's flags "
        "and config file. Subcommand: 'ipvsproxy plan -f FILE' prints what it would program.",
    )
    _add_kube_proxy_flags(parser)
    parser.add_argument(
        "--write-config-to",
        metavar="FILE",
        help="write the effective configuration to FILE (KubeProxyConfiguration) and exit",
    )
    parser.add_argument(
        "--cleanup",
        type=_typed(parse_bool),
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="remove everything the proxy programmed, then exit",
    )
    parser.add_argument(
        "--version",
        action=_Version,
        nargs="?",
        default=argparse.SUPPRESS,
        metavar="BOOL|raw",
        help="print the version and exit",
    )
    return parser


def build_plan_parser() -> argparse.ArgumentParser:
    """The parser of ``ipvsproxy plan`` (takes the same config flags)."""
    parser = _Parser(
        prog=f"{PROG} plan",
        usage=f"{PROG} plan -f FILE [-f FILE ...] [--node NAME] [flags]",
        allow_abbrev=False,
        description="Print the IPVS table, kube-ipvs0 addresses and ipset entries that the "
        "proxy would program for a node, from Service, EndpointSlice and Node manifests.",
    )
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="a YAML manifest (multi-document; '-' for stdin); repeatable",
    )
    parser.add_argument("--node", metavar="NAME", help="the node to plan for")
    _add_kube_proxy_flags(parser)
    return parser


def build_hand_back_parser() -> argparse.ArgumentParser:
    """The parser of ``ipvsproxy hand-back`` (takes the same config flags)."""
    parser = _Parser(
        prog=f"{PROG} hand-back",
        usage=f"{PROG} hand-back [flags]",
        allow_abbrev=False,
        description="Remove what only ipvsproxy makes (firewall-mark virtual servers, the "
        "mangle chain of in-cluster marks and its ipsets) and keep the state kube-proxy's "
        "IPVS mode shares with it, so Service traffic keeps flowing: run it on a node "
        "handed back to kube-proxy, once ipvsproxy has stopped there.",
    )
    _add_kube_proxy_flags(parser)
    return parser


SUBCOMMANDS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "plan": build_plan_parser,
    "hand-back": build_hand_back_parser,
}


def normalize_flag_names(args: Sequence[str]) -> list[str]:
    """pflag's word-separator normalisation (kube-proxy's cli.Run): ``--log_dir`` is
    ``--log-dir``. Only names are touched, never values."""
    out = []
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name, sep, value = arg.partition("=")
            arg = name.replace("_", "-") + sep + value
        out.append(arg)
    return out


@dataclass(frozen=True)
class Invocation:
    """A parsed and validated command line."""

    command: str  # "run", "cleanup", "init-only", "write-config", or a subcommand
    config: Config
    # Warnings to log once logging is set up (unknown or ignored fields and flags).
    notices: tuple[Notice, ...] = ()
    plan_files: tuple[str, ...] = ()
    plan_node: str | None = None
    write_config_to: str | None = None


def parse_command_line(argv: Sequence[str]) -> Invocation:
    """Parse and validate; raise UsageError (or ConfigError) with one line."""
    args = normalize_flag_names(argv)
    subcommand = args[0] if args and args[0] in SUBCOMMANDS else None
    parser = SUBCOMMANDS[subcommand]() if subcommand else build_parser()
    given = vars(parser.parse_args(args[1:] if subcommand else args))
    config_file = given.pop("config_file", None)
    cleanup = given.pop("cleanup", False)
    write_to = given.pop("write_config_to", None)
    files = given.pop("files", None)
    node = given.pop("node", None)
    found: list[Notice] = []
    if config_file:
        file_config, report = load_config_file(config_file)
        found += file_notices(report)
        config = config_over_file(file_config, given)
    else:
        config = config_from_flags(given, writing_config=bool(write_to))
    found += notices(given, with_config_file=bool(config_file))
    if removed := config.removed_feature_gates:
        found.append(Notice("feature gates of older kube-proxy releases, ignored", removed))
    if subcommand == "plan":
        return Invocation("plan", config, tuple(found), tuple(files or ()), node)
    if subcommand:
        return Invocation(subcommand, config, tuple(found))
    # kube-proxy's order: --write-config-to, then --cleanup, then --init-only.
    command = "run"
    if write_to:
        command = "write-config"
    elif cleanup:
        command = "cleanup"
    elif config.init_only:
        command = "init-only"
    return Invocation(command, config, tuple(found), write_config_to=write_to)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ipvsproxy`` console script. Returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        inv = parse_command_line(args)
    except (UsageError, ConfigError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0

    # Before anything imports structlog, kubernetes_asyncio or pyroute2 (see lean_import).
    from ipvsproxy import lean_import

    structlog_fallback = lean_import.install_logging()
    from ipvsproxy import logging as plog

    plog.configure(inv.config.log_format, inv.config.verbosity)
    log = plog.get_logger("ipvsproxy.cli")
    for notice in inv.notices:
        log.warning(notice.event, names=list(notice.names))

    if inv.command == "write-config":
        assert inv.write_config_to is not None
        try:
            write_config_file(inv.config, inv.write_config_to)
        except OSError as err:
            print(f"{PROG}: error: --write-config-to: {err}", file=sys.stderr)
            return 1
        log.info("wrote configuration", file=inv.write_config_to)
        return 0
    if inv.command == "plan":
        from ipvsproxy.plan_command import run_plan

        return run_plan(inv.plan_files, inv.plan_node, inv.config)
    fallbacks = lean_import.install_dependencies()
    if structlog_fallback is not None:
        fallbacks["structlog"] = structlog_fallback
    for library, reason in fallbacks.items():
        log.debug(
            "lean import not installed; the library's own import stands",
            library=library,
            reason=reason,
        )
    # Imported here, not at the top: --help, --version and plan need neither the
    # Kubernetes client nor netlink, and start in a fraction of the time without them.
    from ipvsproxy import app

    if inv.command == "cleanup":
        return int(app.cleanup(inv.config))
    if inv.command == "init-only":
        return int(app.init_only(inv.config))
    if inv.command == "hand-back":
        return int(app.hand_back(inv.config))
    return int(app.run(inv.config))
