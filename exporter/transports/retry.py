"""How long a server asks the exporter to wait: ``Retry-After`` (RFC 9110 10.2.3) and the
mail APIs' own wording. Pure: read by the API transports, the token cache and the status
feeds alike."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

_RETRY_AFTER_TEXT = re.compile(r"retry after (\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)?)", re.I)
MAX_RETRY_AFTER: Final = 3600.0
"""The longest a provider's Retry-After holds a target back."""


def retry_after(headers: Mapping[str, str], message: str, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date), or from Gmail's
    "Retry after 2026-11-30T10:00:00Z" in the message; at most :data:`MAX_RETRY_AFTER`, so
    that no answer can stop a target for good."""
    wait = _retry_after(headers, message, time.time() if now is None else now)
    if wait is None or not math.isfinite(wait):
        return None
    return min(wait, MAX_RETRY_AFTER)


def _retry_after(headers: Mapping[str, str], message: str, moment: float) -> float | None:
    value = headers.get("Retry-After", "").strip()
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - moment)
        except (TypeError, ValueError):
            pass
    match = _RETRY_AFTER_TEXT.search(message)
    if match:
        try:
            when = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - moment)
    return None
