"""The one error type of configuration: a line that names the bad setting."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting with a bad value: the message names the setting, and is printed as is."""
