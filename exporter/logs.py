"""Structured logs in logfmt or JSON, the two formats Prometheus components use."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final

FORMATS: Final = ("logfmt", "json")
LEVELS: Final = ("debug", "info", "warn", "error")

_BARE = re.compile(r"[^\s=\"\\]+")
QUIET_LIBRARIES: Final = ("aioimaplib", "aiosmtplib", "aiohttp.access", "asyncio")
"""Libraries whose debug output can carry message bodies or credentials."""


def fields(**values: Any) -> dict[str, Any]:
    """Structured key/values for a log call: ``log.info("msg", extra=fields(k=v))``."""
    return {"fields": values}


class _Formatter(logging.Formatter):
    def __init__(self, style: str) -> None:
        super().__init__()
        self.style_name = style

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": {"WARNING": "warn", "CRITICAL": "error"}.get(
                record.levelname, record.levelname.lower()
            ),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        if self.style_name == "json":
            return json.dumps(data, default=str)
        return " ".join(f"{key}={_logfmt(value)}" for key, value in data.items())


def _logfmt(value: Any) -> str:
    text = "" if value is None else str(value)
    if _BARE.fullmatch(text):
        return text
    return json.dumps(text)


def setup(level: str = "info", style: str = "logfmt") -> None:
    """Send all logs to stderr in ``style``; keep chatty libraries at warning level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(style))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": logging.WARNING}.get(level, getattr(logging, level.upper())))
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
