"""The value forms of kube-proxy's flags and file: Go durations, integers, booleans, addresses.

Each parser follows the Go function kube-proxy uses for the same value (named in its
docstring), so that every value kube-proxy takes is taken here too, and means the same.
"""

from __future__ import annotations

import ipaddress
import re

from ipvsproxy.config.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# ------------------------------------------------------------------ durations

_DURATION_RE = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")
_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NS = {"h": 3_600_000_000_000, "m": 60_000_000_000, "s": 1_000_000_000}


def parse_duration(text: str) -> float:
    """Parse a Go duration (``30s``, ``1m``, ``500ms``, ``1h30m``) into seconds.

    Like Go's time.ParseDuration: a sign, then one or more number+unit pairs;
    a bare ``0`` is allowed. Raises ValueError with a message naming the text.
    """
    s = text.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r} (use Go syntax: 30s, 1m, 500ms, 1h30m)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"invalid duration {text!r} (use Go syntax: 30s, 1m, 500ms, 1h30m)")
    return sign * total


def _decimal(value: int, unit: int) -> str:
    """``value / unit`` with the fraction's trailing zeros dropped (Go's fmtFrac)."""
    whole, frac = divmod(value, unit)
    digits = len(str(unit)) - 1
    text = f"{frac:0{digits}d}".rstrip("0") if frac else ""
    return f"{whole}.{text}" if text else str(whole)


def format_duration(seconds: float) -> str:
    """Seconds as Go's time.Duration.String() writes them (``30s``, ``15m0s``, ``500ms``).

    kube-proxy writes its durations this way (``--write-config-to``), so does this proxy.
    """
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_decimal(ns, 1_000)}µs"
    if ns < 1_000_000_000:
        return f"{sign}{_decimal(ns, 1_000_000)}ms"
    hours, ns = divmod(ns, _NS["h"])
    minutes, ns = divmod(ns, _NS["m"])
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return f"{sign}{out}{_decimal(ns, _NS['s'])}s"


# ------------------------------------------------------------- scalars, lists


def parse_bool(text: str) -> bool:
    """Go's strconv.ParseBool forms."""
    value = text.strip()
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise ValueError(f"invalid boolean {text!r} (use true or false)")


def parse_int(text: str, bits: int = 32) -> int:
    """Go's strconv.ParseInt(text, 0, bits), as pflag's int flags: ``14``, ``0x10``, ``010``
    (octal), ``-999``, ``1_000``."""
    s = text.strip()
    body = s.lstrip("+-")
    # Go reads a leading 0 as octal (``010`` is 8); Python wants ``0o10``.
    if len(body) > 1 and body[0] == "0" and body[1].isdigit():
        s = s[: len(s) - len(body)] + "0o" + body[1:]
    try:
        value = int(s, 0)
    except ValueError:
        raise ValueError(f"invalid integer {text!r}") from None
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise ValueError(f"integer {text!r} out of range for {bits} bits")
    return value


def parse_float(text: str) -> float:
    """Go's strconv.ParseFloat: a decimal number (``5``, ``0.5``, ``1e2``)."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"invalid number {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"invalid number {text!r}")
    return value


def parse_list(text: str) -> tuple[str, ...]:
    """A comma-separated list; blanks around items and empty items are dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


# ------------------------------------------------------------------ addresses

_DOTTED_QUAD = re.compile(r"\d+\.\d+\.\d+\.\d+")


def parse_ip(text: str) -> IPAddress:
    """An IP address as kube-proxy's sloppy parser reads one (netutils.ParseIPSloppy):
    IPv4 parts may have leading zeros, read as decimal (``010.0.0.1`` is 10.0.0.1).
    Raises ValueError."""
    if _DOTTED_QUAD.fullmatch(text):
        parts = [int(p) for p in text.split(".")]
        if all(p <= 255 for p in parts):
            return ipaddress.IPv4Address(".".join(map(str, parts)))
    return ipaddress.ip_address(text)


def is_ipv4(address: IPAddress) -> bool:
    """Go's ``ip.To4() != nil``: an IPv4 address, or an IPv4-mapped IPv6 one."""
    return address.version == 4 or address.ipv4_mapped is not None


def parse_cidr(text: str, setting: str) -> str:
    """Normalise a CIDR (a bare address counts as /32 or /128)."""
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ConfigError(f"{setting}: not a CIDR: {text!r}") from None


def split_host_port(text: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: ``host:port`` or ``[v6]:port``; None where Go fails
    (no port, or an unbracketed IPv6 address)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            return None
        return text[1:end], text[end + 2 :]
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:
        return None
    return host, port


def parse_host_port(text: str, setting: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``, the port 1-65535 (an empty host means every address,
    which kube-proxy would refuse: a superset). Raises ConfigError naming ``setting``."""
    split = split_host_port(text)
    if split is None or not split[1].isdigit() or not 0 < int(split[1]) < 65536:
        raise ConfigError(f"{setting}: want HOST:PORT, got {text!r}")
    host, port = split
    if host:
        try:
            host = str(parse_ip(host))
        except ValueError:
            raise ConfigError(f"{setting}: not an IP address: {host!r}") from None
    return host, int(port)


def append_port_if_needed(address: str, port: int) -> str:
    """kube-proxy's AppendPortIfNeeded: an IP without a port gets ``port``
    (``::1`` becomes ``[::1]:10256``); anything else is returned as it is, for
    validation to judge."""
    if split_host_port(address) is not None:
        return address
    try:
        ip = parse_ip(address)
    except ValueError:
        return address
    return f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"
