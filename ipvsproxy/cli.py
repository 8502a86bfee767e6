"""The ``ipvsproxy`` command: kube-proxy's flags, a config file, and ``plan``.

``main`` parses and validates everything before anything runs. A wrong flag
or value prints one line naming it and exits 2 (argparse's default would
print the whole usage first). The runtime lives in ``ipvsproxy.app``, imported
only when needed so that --help, --version, ``plan`` and errors stay fast
and work without it.
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
    build_config,
    load_config_file,
    parse_bool,
    parse_duration,
    parse_list,
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


def _proxy_mode(text: str) -> str:
    if text not in ("ipvs", ""):
        raise ValueError(f"this proxy implements only ipvs, got {text!r}")
    return text


# (flag, Config field, kind, help). kind: str, list, bool, duration.
CONFIG_FLAGS: tuple[tuple[str, str, str, str], ...] = (
    ("--kubeconfig", "kubeconfig", "str", "path to a kubeconfig (default: in-cluster)"),
    ("--hostname-override", "hostname_override", "str", "this node's name, if not the hostname"),
    ("--bind-address", "bind_address", "str", "the node's primary IP (default 0.0.0.0)"),
    ("--cluster-cidr", "cluster_cidrs", "list", "pod CIDRs, comma-separated"),
    ("--masquerade-all", "masquerade_all", "bool", "SNAT all traffic sent to service IPs"),
    ("--nodeport-addresses", "nodeport_addresses", "list", "CIDRs whose IPs serve NodePorts"),
    ("--ipvs-scheduler", "ipvs_scheduler", "str", "IPVS scheduler: rr, lc, wrr, sh, mh, ..."),
    ("--ipvs-sync-period", "ipvs_sync_period", "duration", "full resync period (default 30s)"),
    ("--ipvs-min-sync-period", "ipvs_min_sync_period", "duration", "least time between syncs"),
    ("--ipvs-strict-arp", "ipvs_strict_arp", "bool", "set arp_ignore=1 and arp_announce=2"),
    ("--ipvs-tcp-timeout", "ipvs_tcp_timeout", "duration", "IPVS TCP timeout (0: unchanged)"),
    ("--ipvs-tcpfin-timeout", "ipvs_tcpfin_timeout", "duration", "IPVS TCP FIN_WAIT timeout"),
    ("--ipvs-udp-timeout", "ipvs_udp_timeout", "duration", "IPVS UDP timeout (0: unchanged)"),
    ("--ipvs-exclude-cidrs", "ipvs_exclude_cidrs", "list", "CIDRs never cleaned up"),
    ("--healthz-bind-address", "healthz_bind_address", "str", "HOST:PORT (default 0.0.0.0:10256)"),
    (
        "--metrics-bind-address",
        "metrics_bind_address",
        "str",
        "HOST:PORT (default 127.0.0.1:10249)",
    ),
)

_KINDS: dict[str, dict[str, Any]] = {
    "str": {"metavar": "VALUE"},
    "list": {"type": _typed(parse_list), "metavar": "A,B"},
    "duration": {"type": _typed(parse_duration), "metavar": "DURATION"},
    # Go's pflag booleans: --flag, --flag=true, --flag=false.
    "bool": {"type": _typed(parse_bool), "nargs": "?", "const": True, "metavar": "BOOL"},
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a flag that was not given leaves no attribute, so the config
    # file's value (or the default) stands. That is how flags win over the file.
    for flag, dest, kind, help_text in CONFIG_FLAGS:
        parser.add_argument(
            flag, dest=dest, default=argparse.SUPPRESS, help=help_text, **_KINDS[kind]
        )
    parser.add_argument(
        "--config", dest="config_file", metavar="FILE", help="a KubeProxyConfiguration YAML file"
    )
    parser.add_argument(
        "--log-format",
        dest="log_format",
        choices=("json", "console"),
        default=argparse.SUPPRESS,
        help="log format (default: json unless stderr is a terminal)",
    )
    parser.add_argument(
        "-v",
        "--v",
        dest="verbosity",
        type=_typed(int),
        nargs="?",
        const=1,
        default=argparse.SUPPRESS,
        metavar="N",
        help="log verbosity (0: info, 1 or more: debug)",
    )
    parser.add_argument(
        "--proxy-mode",
        dest="proxy_mode",
        type=_typed(_proxy_mode),
        default=argparse.SUPPRESS,
        help="accepted for kube-proxy compatibility; only ipvs",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of the proxy itself (``ipvsproxy [flags]``)."""
    parser = _Parser(
        prog=PROG,
        allow_abbrev=False,
        description="A Kubernetes service proxy that programs IPVS. "
        "Subcommand: 'ipvsproxy plan -f FILE' prints what it would program.",
    )
    _add_config_flags(parser)
    parser.add_argument(
        "--cleanup",
        type=_typed(parse_bool),
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="remove everything the proxy programmed, then exit",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def build_plan_parser() -> argparse.ArgumentParser:
    """The parser of ``ipvsproxy plan`` (takes the same config flags)."""
    parser = _Parser(
        prog=f"{PROG} plan",
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
    _add_config_flags(parser)
    return parser


def build_hand_back_parser() -> argparse.ArgumentParser:
    """The parser of ``ipvsproxy hand-back`` (takes the same config flags)."""
    parser = _Parser(
        prog=f"{PROG} hand-back",
        allow_abbrev=False,
        description="Remove what only ipvsproxy makes (firewall-mark virtual servers, the "
        "mangle chain of in-cluster marks and its ipsets) and keep the state kube-proxy's "
        "IPVS mode shares with it, so Service traffic keeps flowing: run it on a node "
        "handed back to kube-proxy, once ipvsproxy has stopped there.",
    )
    _add_config_flags(parser)
    return parser


@dataclass(frozen=True)
class Invocation:
    """A parsed and validated command line."""

    command: str  # "run", "cleanup", "plan" or "hand-back"
    config: Config
    # Fields of the config file that kube-proxy has but this proxy ignores.
    ignored_fields: tuple[str, ...] = ()
    plan_files: tuple[str, ...] = ()
    plan_node: str | None = None


def parse_command_line(argv: Sequence[str]) -> Invocation:
    """Parse and validate; raise UsageError (or ConfigError) with one line."""
    args = list(argv)
    subcommand = args[0] if args and args[0] in ("plan", "hand-back") else None
    is_plan = subcommand == "plan"
    if subcommand is None:
        parser = build_parser()
    else:
        parser = build_plan_parser() if is_plan else build_hand_back_parser()
    ns = vars(parser.parse_args(args[1:] if subcommand else args))
    config_file = ns.pop("config_file", None)
    ns.pop("proxy_mode", None)
    cleanup = ns.pop("cleanup", False)
    files = ns.pop("files", None)
    node = ns.pop("node", None)
    file_values: dict[str, Any] = {}
    ignored: list[str] = []
    if config_file:
        file_values, ignored = load_config_file(config_file)
    config = build_config(file_values, ns)
    if is_plan:
        return Invocation("plan", config, tuple(ignored), tuple(files or ()), node)
    if subcommand:
        return Invocation(subcommand, config, tuple(ignored))
    return Invocation("cleanup" if cleanup else "run", config, tuple(ignored))


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

    from ipvsproxy import logging as plog

    plog.configure(inv.config.log_format, inv.config.verbosity)
    log = plog.get_logger("ipvsproxy.cli")
    if inv.ignored_fields:
        log.warning("config fields ignored", fields=list(inv.ignored_fields))

    if inv.command == "plan":
        from ipvsproxy.plan_command import run_plan

        return run_plan(inv.plan_files, inv.plan_node, inv.config)
    # Before anything imports kubernetes_asyncio or pyroute2 (see lean_import).
    from ipvsproxy import lean_import

    for library, reason in lean_import.install_dependencies().items():
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
    if inv.command == "hand-back":
        return int(app.hand_back(inv.config))
    return int(app.run(inv.config))
