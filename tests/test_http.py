"""The mail APIs' answers read by exporter.transports.http."""

from __future__ import annotations

from exporter.transports.http import MAX_RETRY_AFTER, retry_after


def test_retry_after_is_read_and_bounded() -> None:
    now = 1_800_000_000.0
    assert retry_after({"Retry-After": "30"}, "", now) == 30
    assert retry_after({"Retry-After": "inf"}, "", now) is None
    assert retry_after({"Retry-After": "1e12"}, "", now) == MAX_RETRY_AFTER
    far = "User-rate limit exceeded. Retry after 2099-01-01T00:00:00Z"
    assert retry_after({}, far, now) == MAX_RETRY_AFTER
    assert retry_after({}, "no hint", now) is None
