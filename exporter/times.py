"""Times as services write them in their answers."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp(value: object) -> float | None:
    """Seconds since 1970 of an ISO 8601 / RFC 3339 time (``Z`` or an offset, any number of
    decimals, as Alertmanager, Microsoft Graph and Google's feed write them; no zone: UTC);
    None for anything else."""
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, zone = rest[:digits], rest[digits:]
        text = f"{head}.{fraction[:6]}{zone}" if fraction else f"{head}{zone}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
