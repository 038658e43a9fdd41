"""Configuration: a YAML file of targets, read into frozen dataclasses.

:mod:`.model` holds the dataclasses, :mod:`.load` reads and validates the file (every error
names the key path and the line), :mod:`.checks` says what each check needs.
"""

from exporter.config.load import (
    SECTIONS,
    format_duration,
    load,
    parse,
    parse_duration,
)
from exporter.config.model import (
    Config,
    ConfigError,
    ImapConfig,
    OAuth2Config,
    Schedule,
    Secret,
    ServerConfig,
    Target,
    TlsConfig,
    TlsMode,
)

__all__ = [
    "SECTIONS",
    "Config",
    "ConfigError",
    "ImapConfig",
    "OAuth2Config",
    "Schedule",
    "Secret",
    "ServerConfig",
    "Target",
    "TlsConfig",
    "TlsMode",
    "format_duration",
    "load",
    "parse",
    "parse_duration",
]
