"""Configuration: a YAML file of targets, read into frozen dataclasses.

:mod:`.model` holds the dataclasses, :mod:`.load` reads and validates the file (every error
names the key path and the line), each transport's section reading itself in
:mod:`.sections` with the helpers of :mod:`.reader`; :mod:`.checks` says what each check
needs. The names most callers need are here.
"""

from exporter.config import model
from exporter.config.load import format_duration, load, parse, parse_duration
from exporter.config.sections import SECTIONS

Config = model.Config
ConfigError = model.ConfigError
ImapConfig = model.ImapConfig
OAuth2Config = model.OAuth2Config
Schedule = model.Schedule
Secret = model.Secret
ServerConfig = model.ServerConfig
Target = model.Target
TlsConfig = model.TlsConfig
TlsMode = model.TlsMode

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
