"""The HTTP surface: metrics, the status page, health, reload, and on-demand probes.

Every handler but ``/probe`` only reads state, so answers never wait for a mail server.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from exporter.result import ProbeResult
from exporter.serve import ondemand, status
from exporter.serve.ondemand import TooSoon, UnknownProbe

Reload = Callable[[], Awaitable[str | None]]
"""Reloads the configuration; returns an error message, or None on success."""
ProbeNow = Callable[[str | None, str | None, float | None, bool], Awaitable[ProbeResult]]
"""Runs one probe of (target, check) within a time limit, with or without a transcript."""

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
SCRAPE_TIMEOUT_MARGIN = 0.5
"""Seconds kept back from Prometheus' scrape timeout, so that the answer arrives in time."""
MIN_TIME_LIMIT = 0.1
"""The shortest time limit a probe is given, however short the scrape timeout."""
SHOWN_HEADER = 40
"""Characters of a refused header value quoted back in the 400 answer."""

READY = web.AppKey("ready", dict[str, bool])


def create_app(
    exposition: Callable[[], Awaitable[bytes]],
    reload: Reload,
    probe_now: ProbeNow,
    snapshot: Callable[[], dict[str, Any]],
) -> web.Application:
    app = web.Application()
    app[READY] = {"ready": False}

    async def status_page(_: web.Request) -> web.Response:
        return web.Response(text=status.render(snapshot()), content_type="text/html")

    async def status_json(_: web.Request) -> web.Response:
        return web.json_response(snapshot())

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=await exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="Healthy.\n")

    async def ready(request: web.Request) -> web.Response:
        if request.app[READY]["ready"]:
            return web.Response(text="Ready.\n")
        return web.Response(status=503, text="Not ready.\n")

    async def do_reload(_: web.Request) -> web.Response:
        error = await reload()
        if error is None:
            return web.Response(text="Configuration reloaded.\n")
        return web.Response(
            status=500, text=f"Reload failed; the previous configuration stays in use.\n{error}\n"
        )

    async def probe(request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = time_limit(request.headers.get(SCRAPE_TIMEOUT_HEADER))
            debug = query.get("debug", "false").lower() in ("1", "true", "yes")
            result = await probe_now(query.get("target"), query.get("check"), limit, debug)
        except (UnknownProbe, ValueError) as exc:
            return web.Response(status=400, text=f"{exc}\n")
        except TooSoon as exc:
            return web.Response(
                status=429,
                text=f"{exc}\n",
                headers={"Retry-After": str(math.ceil(exc.retry_after))},
            )
        if debug:
            return web.Response(text=ondemand.report(result))
        response = web.Response(body=ondemand.exposition(result))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/", status_page)
    app.router.add_get("/api/v1/status", status_json)
    app.router.add_get("/probe", probe)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", do_reload)
    return app


def time_limit(header: str | None) -> float | None:
    """The probe's time limit from Prometheus' scrape timeout header: :data:`SCRAPE_TIMEOUT_MARGIN`
    less, so that the answer arrives in time; None without the header (the check's timeout).

    :class:`ValueError` (a 400) unless it is a finite number of seconds above zero: a NaN or
    infinite limit would never fire, and the probe, with every request that joins it, would run
    for ever. Large values are left to the caller, which caps them at the check's timeout.
    """
    if header is None:
        return None
    shown = header[:SHOWN_HEADER] + ("..." if len(header) > SHOWN_HEADER else "")
    try:
        seconds = float(header)
    except ValueError:
        raise ValueError(f"{SCRAPE_TIMEOUT_HEADER} is not a number: {shown!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(
            f"{SCRAPE_TIMEOUT_HEADER} must be a finite number of seconds above zero, got {shown!r}"
        )
    return max(seconds - SCRAPE_TIMEOUT_MARGIN, MIN_TIME_LIMIT)
