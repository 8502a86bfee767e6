"""Reading a KubeProxyConfiguration file the way kube-proxy reads it.

kube-proxy decodes its file strictly first; when that fails only because of unknown or
duplicate fields, it decodes it again leniently, dropping them, and says so in one log line.
Any other error (bad YAML, a value of the wrong type, another apiVersion or kind) is fatal.
Then its defaulting turns every zero or null value into the default, except in pointer
fields, where only null does (see schema.py). This module does the same in one pass: it
collects what a strict read would have refused (``FileReport``) instead of failing, and
returns the defaulted, validated ``Config``.

Two choices beyond kube-proxy's: a file without apiVersion or kind is read (kube-proxy
refuses it), and ``mode`` must be ipvs or empty (empty means ipvs here, not iptables).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import yaml

from ipvsproxy.config.errors import ConfigError
from ipvsproxy.config.model import FILE_DEFAULTS, Config
from ipvsproxy.config.schema import KUBE_PROXY_CONFIGURATION, PATH_OF_TARGET, Field, Kind, Role
from ipvsproxy.config.values import (
    append_port_if_needed,
    is_ipv4,
    parse_duration,
    parse_ip,
    parse_list,
)

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"
MODES = ("", "ipvs")
HEALTHZ_PORT = 10256
METRICS_PORT = 10249
_INT32 = range(-(2**31), 2**31)
# logging.format: kube-proxy's names -> this proxy's log formats.
_LOG_FORMATS = {"text": "console", "json": "json"}


@dataclasses.dataclass(frozen=True)
class FileReport:
    """What a strict read would have refused, and what has no effect here (dotted paths)."""

    unknown: tuple[str, ...] = ()  # no release's field: dropped (lenient decoding)
    obsolete: tuple[str, ...] = ()  # an older release's field: dropped
    duplicates: tuple[str, ...] = ()  # a key written twice: the last one counts
    ignored: tuple[str, ...] = ()  # set, but meaningless for an IPVS proxy on Linux

    @property
    def lenient(self) -> bool:
        """True if kube-proxy's strict decoding would have failed on this file."""
        return bool(self.unknown or self.obsolete or self.duplicates)


class _Loader(yaml.SafeLoader):
    """A safe loader that notes duplicate keys (strict decoding refuses them)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool | None):
                continue  # SafeLoader itself refuses an unhashable key
            if key in seen:
                self.duplicates.append(f"{key} (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config_file(path: str) -> tuple[Config, FileReport]:
    """Read, default and validate a config file; errors name the file and the field."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    loader = _Loader(text)
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}".replace("\n", " ")) from None
    finally:
        loader.dispose()
    config, report = read_config_document(doc, source=path)
    return config, dataclasses.replace(report, duplicates=tuple(loader.duplicates))


def read_config_document(doc: Any, source: str = "config") -> tuple[Config, FileReport]:
    """A parsed KubeProxyConfiguration -> (Config, FileReport); ConfigError names the field."""
    try:
        return _read(doc)
    except ConfigError as exc:
        raise ConfigError(f"config {source}: {exc}") from None


def _read(doc: Any) -> tuple[Config, FileReport]:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("expected a mapping (a KubeProxyConfiguration)")
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        raise ConfigError(f"apiVersion: expected {API_VERSION}, got {doc['apiVersion']!r}")
    if doc.get("kind", KIND) != KIND:
        raise ConfigError(f"kind: expected {KIND}, got {doc['kind']!r}")
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")}
    reader = _Reader()
    reader.section(body, KUBE_PROXY_CONFIGURATION, "")
    values = reader.values
    mode = values.pop("mode", "")
    if mode not in MODES:
        raise ConfigError(f"mode: this proxy implements only ipvs, got {mode!r}")
    _default_http_addresses(values)
    config = Config(**(FILE_DEFAULTS | values))
    config.validate(lambda field: PATH_OF_TARGET.get(field, field))
    report = FileReport(
        unknown=tuple(reader.unknown),
        obsolete=tuple(reader.obsolete),
        ignored=tuple(reader.ignored),
    )
    return config, report


def _default_http_addresses(values: dict[str, Any]) -> None:
    """kube-proxy's defaulting of healthzBindAddress and metricsBindAddress: empty means
    the wildcard (healthz) or loopback (metrics) of bindAddress's family, IPv4 unless
    bindAddress is something else; an address without a port gets the default port."""
    try:
        ipv4 = is_ipv4(parse_ip(values.get("bind_address", "0.0.0.0")))
    except ValueError:
        ipv4 = False  # kube-proxy: an address that does not parse counts as not IPv4
    hosts = ("0.0.0.0", "127.0.0.1") if ipv4 else ("[::]", "[::1]")
    for field, host, port in (
        ("healthz_bind_address", hosts[0], HEALTHZ_PORT),
        ("metrics_bind_address", hosts[1], METRICS_PORT),
    ):
        given = values.get(field)
        values[field] = append_port_if_needed(given, port) if given else f"{host}:{port}"


class _Reader:
    """One walk over the document: Config values, and the fields to report."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.unknown: list[str] = []
        self.obsolete: list[str] = []
        self.ignored: list[str] = []

    def section(self, doc: Mapping[str, Any], fields: Mapping[str, Field], prefix: str) -> None:
        for key, raw in doc.items():
            path = f"{prefix}{key}"
            field = fields.get(key) if isinstance(key, str) else None
            if field is None:
                self.unknown.append(path)
            elif field.role is Role.OBSOLETE:
                self.obsolete.append(path)
            elif field.children is not None:
                if raw is not None:
                    self.section(_expect(raw, Kind.OBJECT, path), field.children, f"{path}.")
            elif raw is not None:
                self.leaf(field, convert(raw, field.kind, path), path)

    def leaf(self, field: Field, value: Any, path: str) -> None:
        if field.role is Role.IGNORED:
            # In a pointer field an explicit zero is a choice (localhostNodePorts: false).
            if (field.pointer or not _is_zero(value)) and value != field.default:
                self.ignored.append(path)
            return
        assert field.target is not None
        # Go's defaulting: a zero value means "the default", except in a pointer field.
        if _is_zero(value) and not field.pointer:
            return
        self.values[field.target] = _to_setting(field.target, value, path)


def _is_zero(value: Any) -> bool:
    return value in (None, "", 0, (), {})


def _to_setting(target: str, value: Any, path: str) -> Any:
    """The few fields whose form here differs from the file's."""
    if target == "cluster_cidrs":
        return parse_list(value)  # one comma-separated string in the file
    if target == "log_format":
        if value not in _LOG_FORMATS:
            raise ConfigError(f"{path}: unsupported log format {value!r} (json or text)")
        return _LOG_FORMATS[value]
    if target == "feature_gates":
        return tuple(sorted(value.items()))
    return value


def _expect(raw: Any, kind: Kind, path: str) -> Any:
    """``raw`` if it is of ``kind``'s JSON type; else the decode error kube-proxy stops on."""
    ok = {
        Kind.STRING: isinstance(raw, str),
        Kind.BOOL: isinstance(raw, bool),
        Kind.INT: isinstance(raw, int) and not isinstance(raw, bool) and raw in _INT32,
        Kind.FLOAT: isinstance(raw, int | float) and not isinstance(raw, bool),
        Kind.OBJECT: isinstance(raw, dict),
        Kind.STRINGS: isinstance(raw, list) and all(isinstance(v, str) for v in raw),
        Kind.QUANTITY: isinstance(raw, str | int) and not isinstance(raw, bool),
    }[kind]
    if not ok:
        raise ConfigError(f"{path}: expected {kind.value}, got {raw!r}")
    return raw


def convert(raw: Any, kind: Kind, path: str) -> Any:
    """A non-null file value -> its Python form (durations in seconds, lists as tuples)."""
    if kind in (Kind.DURATION, Kind.FLUSH):
        if kind is Kind.FLUSH and isinstance(raw, int) and not isinstance(raw, bool):
            return raw / 1e9  # TimeOrMetaDuration: a number is nanoseconds
        if not isinstance(raw, str):
            raise ConfigError(f"{path}: expected {kind.value}, got {raw!r}")
        try:
            return parse_duration(raw)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    if kind is Kind.GATES:
        gates = _expect(raw, Kind.OBJECT, path)
        for name, enabled in gates.items():
            if not isinstance(name, str) or not isinstance(enabled, bool):
                raise ConfigError(f"{path}: expected {kind.value}, got {name!r}: {enabled!r}")
        return gates
    if kind is Kind.VMODULE:
        items = raw if isinstance(raw, list) else None
        if items is None or not all(
            isinstance(i, dict) and set(i) <= {"filePattern", "verbosity"} for i in items
        ):
            raise ConfigError(f"{path}: expected {kind.value}, got {raw!r}")
        return tuple(items)
    value = _expect(raw, kind, path)
    if kind is Kind.STRINGS:
        return tuple(v.strip() for v in value if v.strip())
    if kind is Kind.FLOAT:
        return float(value)
    if kind is Kind.QUANTITY:
        return str(value)
    return value
