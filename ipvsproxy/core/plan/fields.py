"""Reading Kubernetes JSON defensively: each helper returns None (or a default)
for a value of the wrong type instead of raising, so plan can skip what a
malformed field breaks and keep the rest.
"""

from __future__ import annotations

from typing import Any

from ipvsproxy.core.model import IpProtocol, parse_ip


def as_dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def as_list(value: Any) -> list[Any]:
    """A list as is; anything else (None, a dict, a string) as an empty list."""
    return value if isinstance(value, list) else []


def as_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    # bool is an int subclass; JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def as_port(value: Any) -> int | None:
    """A TCP/UDP/SCTP port number 1-65535, or None."""
    number = as_int(value)
    return number if number is not None and 1 <= number <= 65535 else None


def as_bool(value: Any, default: bool) -> bool:
    return value if isinstance(value, bool) else default


def as_protocol(value: Any) -> IpProtocol | None:
    """ "TCP", "UDP" or "SCTP" as an IpProtocol; anything else (a list too: it is
    unhashable, so it cannot even be looked up) as None."""
    if isinstance(value, str) and value in IpProtocol.__members__:
        return IpProtocol(value)
    return None


def as_ip(value: Any) -> str | None:
    """An address as a normalised string, or None.

    An IPv6 zone ("fe80::1%eth0") is refused: the API server rejects it, and
    neither an ipset entry nor an IPVS address can carry one.
    """
    if not isinstance(value, str) or "%" in value:
        return None
    try:
        return parse_ip(value)
    except ValueError:
        return None
