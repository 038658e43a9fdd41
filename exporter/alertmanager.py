"""Reading Alertmanager's silences for the status page: one background task, on its own schedule.

The task reads ``GET {alertmanager_url}/api/v2/silences`` every ``interval``, each reading
within ``timeout`` and at most :data:`MAX_BODY` bytes, and writes which targets the active
silences cover into a :class:`~exporter.silences.SilenceState`. The status page only reads
that state, so a page never waits for Alertmanager, and an Alertmanager that hangs or fails
delays nothing but its own next reading. A failure is shown on the page and logged once, when
reading starts to fail; the recovery is logged too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Final

import aiohttp

from exporter import silences
from exporter.config import Target
from exporter.config.site import Location, Maintenance
from exporter.logs import fields
from exporter.silences import SilenceError, Silences, SilenceState
from exporter.transports import net
from exporter.transports.oauth import read_bounded

log = logging.getLogger("exporter.maintenance")

SILENCES_PATH: Final = "/api/v2/silences"
MAX_BODY: Final = 8 * 1024 * 1024
"""Largest answer read: a thousand silences with long comments fit many times over."""
MAX_ERROR: Final = 200
"""Characters of a failure's description kept for the page and the log."""


class ReadFailure(Exception):
    """Alertmanager could not be read; the message says why, without any secret."""


def target_labels(target: Target, location: Location | None) -> tuple[dict[str, str], set[str]]:
    """The labels the exporter knows its alerts about ``target`` carry, and their names
    (``provider`` is known even where the target has none: the alerts then have none)."""
    labels = {**target.labels, "target": target.name}
    if location is not None:
        labels[location.label] = location.name
    return labels, {*labels, "provider"}


def _headers(settings: Maintenance) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if settings.password is not None:
        pair = f"{settings.username}:{settings.password.reveal()}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    elif settings.token is not None:
        headers["Authorization"] = "Bearer " + settings.token.reveal()
    return headers


def _describe(exc: BaseException, settings: Maintenance) -> str:
    """A failure in words for the page and the log, with no secret in it."""
    if isinstance(exc, TimeoutError):
        text = f"no answer within {settings.timeout:g}s"
    elif isinstance(exc, ReadFailure | SilenceError):
        text = str(exc)
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError):
        text = "the TLS certificate was not accepted"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        text = f"cannot connect to {exc.host} port {exc.port}"
    elif isinstance(exc, aiohttp.ClientError | ssl.SSLError | OSError):
        text = f"{type(exc).__name__}: the connection failed"
    else:
        text = f"unexpected {type(exc).__name__}"
    for secret in settings.secrets():
        text = text.replace(secret, "<redacted>")
    return text[:MAX_ERROR]


class SilenceWatch:
    """Keeps one task reading Alertmanager while ``global.maintenance`` is set; :meth:`apply`
    on every (re)load."""

    def __init__(self, state: SilenceState, clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.clock = clock
        self.settings: Maintenance | None = None
        self._labels: dict[str, tuple[dict[str, str], set[str]]] = {}
        self._found: Silences = Silences(())
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        """Tasks cancelled by a reload, until they have closed their connections."""

    def apply(
        self, settings: Maintenance | None, location: Location | None, targets: Iterable[Target]
    ) -> None:
        """Read ``settings``' Alertmanager (none for None) for ``targets``; unchanged
        settings keep their task, and the notes follow the new targets at once. Call from
        the event loop."""
        self._labels = {t.name: target_labels(t, location) for t in targets}
        self.state.configured = settings is not None
        self._note()
        if settings == self.settings and (settings is None or self._task is not None):
            return
        self._cancel()
        self.settings = settings
        if settings is None:
            self._found = Silences(())
            self.state.notes, self.state.active, self.state.error = {}, 0, ""
            self.state.last_success = self.state.failing_since = None
            return
        self._task = asyncio.get_running_loop().create_task(
            self._run(settings), name="alertmanager-silences"
        )

    async def stop(self) -> None:
        self._cancel()
        for task in list(self._stopping):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _cancel(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def read_once(self, settings: Maintenance, session: aiohttp.ClientSession) -> None:
        """One reading within the timeout, recorded in the state."""
        try:
            async with asyncio.timeout(settings.timeout):
                body = await self._get(settings, session)
                found = silences.parse(body, self.clock())
        except Exception as exc:  # whatever went wrong is shown, logged once, and retried
            self._failed(_describe(exc, settings))
            return
        self._found = found
        if self.state.error:
            log.info("Alertmanager read again", extra=fields(url=settings.url))
        if found.left_out and found.left_out != self.state.left_out:
            log.warning(
                "silences left out",
                extra=fields(count=found.left_out, why=found.why_left_out[:MAX_ERROR]),
            )
        self.state.error, self.state.failing_since = "", None
        self.state.last_success = self.clock()
        self.state.active = len(found.silences)
        self.state.left_out, self.state.why_left_out = found.left_out, found.why_left_out
        self._note()

    @staticmethod
    async def _get(settings: Maintenance, session: aiohttp.ClientSession) -> bytes:
        url = settings.url + SILENCES_PATH
        async with session.get(url, headers=_headers(settings), allow_redirects=False) as response:
            if response.status != 200:
                raise ReadFailure(f"Alertmanager answered HTTP {response.status}")
            body = await read_bounded(response, MAX_BODY)
        if body is None:
            raise ReadFailure(f"the answer is larger than {MAX_BODY} bytes")
        return body

    def _failed(self, error: str) -> None:
        if not self.state.error:
            log.warning(
                "Alertmanager not read: silences are not shown",
                extra=fields(url=self.settings.url if self.settings else "", error=error),
            )
            self.state.failing_since = self.clock()
        self.state.error = error

    def _note(self) -> None:
        found = self._found.silences
        self.state.notes = {
            name: notes
            for name, (labels, known) in self._labels.items()
            if (notes := silences.notes(found, labels, known))
        }

    async def _run(self, settings: Maintenance) -> None:
        https = settings.url.startswith("https://")
        connector = aiohttp.TCPConnector(
            ssl=net.tls_context(settings.tls_config) if https else True
        )
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                await self.read_once(settings, session)
                await asyncio.sleep(settings.interval)
