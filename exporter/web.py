"""The HTTP surface: metrics, health, reload, and a landing page. Reads state; probes nothing."""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from exporter import __version__

Reload = Callable[[], Awaitable[str | None]]
"""Reloads the configuration; returns an error message, or None on success."""

READY = web.AppKey("ready", dict[str, bool])

_LANDING = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mailbox exporter</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}}</style>
</head><body>
<h1>Mailbox exporter</h1>
<p>Version {version}. Checks that mailboxes can log in, send and receive.</p>
<ul>
<li><a href="metrics">Metrics</a></li>
<li><a href="-/healthy">Health</a></li>
<li><a href="-/ready">Readiness</a></li>
</ul>
</body></html>
"""


def create_app(registry: CollectorRegistry, reload: Reload) -> web.Application:
    app = web.Application()
    app[READY] = {"ready": False}

    async def landing(_: web.Request) -> web.Response:
        return web.Response(
            text=_LANDING.format(version=html.escape(__version__)), content_type="text/html"
        )

    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
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

    app.router.add_get("/", landing)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", do_reload)
    return app
