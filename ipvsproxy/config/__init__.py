"""Every setting of the proxy, with kube-proxy's names, forms, defaults and precedence.

Settings come from kube-proxy's flags (flags.py) or from a KubeProxyConfiguration file
(``--config``; file_loader.py reads every field any release from 1.19 to 1.36 wrote, and
defaults zero and null values as kube-proxy does). ``Config`` (model.py) is the validated
result; ``ConfigError`` carries one line that names the offending setting, which the CLI
prints as is.

Precedence is kube-proxy's (precedence.py): without ``--config``, flags over the defaults;
with ``--config``, the file alone, except ``--hostname-override``, ``--master``,
``--init-only`` and the logging flags (``-v``, ``--logging-format``/``--log-format``,
``--log-flush-frequency``), which apply over it. Any other setting flag given next to
``--config`` is ignored, as kube-proxy ignores it, and named in a warning. A drop-in
replacement must read an existing kube-proxy command line the way kube-proxy did: a stale
flag that kube-proxy never applied must not start to apply when the image changes.
"""

from ipvsproxy.config.errors import ConfigError
from ipvsproxy.config.file_loader import (
    API_VERSION,
    KIND,
    FileReport,
    load_config_file,
    read_config_document,
)
from ipvsproxy.config.file_writer import config_document, config_yaml, write_config_file
from ipvsproxy.config.model import FIELDS, FILE_DEFAULTS, LOG_FORMATS, Config
from ipvsproxy.config.precedence import (
    Notice,
    config_from_flags,
    config_over_file,
    file_notices,
    notices,
)
from ipvsproxy.config.values import (
    format_duration,
    parse_bool,
    parse_cidr,
    parse_duration,
    parse_host_port,
    parse_list,
)

__all__ = [
    "API_VERSION",
    "FIELDS",
    "FILE_DEFAULTS",
    "KIND",
    "LOG_FORMATS",
    "Config",
    "ConfigError",
    "FileReport",
    "Notice",
    "config_document",
    "config_from_flags",
    "config_over_file",
    "config_yaml",
    "file_notices",
    "format_duration",
    "load_config_file",
    "notices",
    "parse_bool",
    "parse_cidr",
    "parse_duration",
    "parse_host_port",
    "parse_list",
    "read_config_document",
    "write_config_file",
]
