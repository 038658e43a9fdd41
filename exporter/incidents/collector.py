"""The provider-status collector: one asyncio task per configured provider, on its own schedule.

Each task reads its provider's status source every ``interval``, each fetch within
``timeout`` (never longer than the interval), and writes what it found into the
:class:`~exporter.state.Store`. Scrapes and the status page only read the store, and probes
never wait for a fetch: a status source that hangs or fails delays nothing but its own next
reading. A 429 or 503 is honoured: the next fetch waits the ``Retry-After`` it carried, or,
without one, twice as long after each refusal in a row, up to :data:`MAX_BACKOFF`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from exporter.config.model import ProviderStatus
from exporter.incidents.model import Provider, ProviderState
from exporter.incidents.sources import FetchFailure, GoogleSource, MicrosoftSource, Source
from exporter.logs import fields
from exporter.outcome import Reason
from exporter.state import Store
from exporter.transports.oauth import TokenCache

log = logging.getLogger("exporter.provider_status")

MAX_BACKOFF: Final = 3600.0
"""Longest wait between fetches after refusals (429, 503) in a row."""


def sources(settings: ProviderStatus, tokens: TokenCache) -> dict[Provider, Source]:
    """The status source of each configured provider."""
    found: dict[Provider, Source] = {}
    if settings.microsoft is not None:
        found["microsoft"] = MicrosoftSource(settings.microsoft, tokens)
    if settings.google is not None:
        found["google"] = GoogleSource(settings.google)
    return found


def next_wait(settings: ProviderStatus, failure: FetchFailure | None, refusals: int) -> float:
    """Seconds until the next fetch: the interval, or longer after a refusal (429, 503)."""
    if failure is None or (failure.wait is None and failure.reason is not Reason.THROTTLED):
        return settings.interval
    asked = failure.wait if failure.wait is not None else settings.interval * 2 ** (refusals + 1)
    return min(MAX_BACKOFF, max(settings.interval, asked))


class ProviderStatusCollector:
    """Keeps one task per configured provider running; :meth:`apply` on every (re)load."""

    def __init__(
        self, store: Store, tokens: TokenCache, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.tokens = tokens
        self.clock = clock
        self.settings: ProviderStatus | None = None
        self.sources: dict[Provider, Source] = {}
        self._tasks: dict[Provider, asyncio.Task[None]] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def apply(self, settings: ProviderStatus | None) -> None:
        """Run the providers of ``settings`` (none for None); an unchanged section keeps its
        tasks, so a reload does not fetch again. Call from the event loop."""
        if settings == self.settings and (settings is None or self._tasks):
            return
        self._cancel()
        self.settings = settings
        self.sources = sources(settings, self.tokens) if settings is not None else {}
        self.store.configure_providers(self.sources)
        assert settings is not None or not self.sources
        for provider, source in self.sources.items():
            assert settings is not None
            self._tasks[provider] = asyncio.get_running_loop().create_task(
                self._run(source, settings), name=f"provider-status-{provider}"
            )

    async def stop(self) -> None:
        self._cancel()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _cancel(self) -> None:
        tasks, self._tasks = self._tasks, {}
        for task in tasks.values():
            task.cancel()
        old = list(self.sources.values())
        if tasks or old:
            closing = asyncio.get_running_loop().create_task(self._close(list(tasks.values()), old))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    @staticmethod
    async def _close(tasks: list[asyncio.Task[None]], old: list[Source]) -> None:
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for source in old:
            await source.close()

    async def fetch_once(self, source: Source, settings: ProviderStatus) -> FetchFailure | None:
        """One fetch within the timeout, recorded in the store; the failure, if any."""
        state = self.store.providers.get(source.provider)
        try:
            async with asyncio.timeout(settings.timeout):
                incidents = await source.fetch(settings.timeout)
        except TimeoutError:
            failure = FetchFailure(
                Reason.TIMEOUT, f"no answer within {settings.timeout:g}s", wait=None
            )
        except FetchFailure as exc:
            failure = exc
        except Exception as exc:  # a bug must not end the task: counted, logged, retried
            log.exception("reading the provider status failed unexpectedly")
            failure = FetchFailure(Reason.PROTOCOL_ERROR, type(exc).__name__)
        else:
            if state is not None:
                before = {i.id for i in state.incidents}
                state.fetched(incidents, settings.max_incidents, self.clock())
                self._log_change(source.provider, before, state)
            return None
        if state is not None:
            state.failed(failure.reason, failure.detail, self.clock())
        log.warning(
            "provider status not read",
            extra=fields(
                provider=source.provider, reason=failure.reason.value, detail=failure.detail
            ),
        )
        return failure

    @staticmethod
    def _log_change(provider: str, before: set[str], state: ProviderState) -> None:
        now = {i.id for i in state.incidents}
        if now != before:
            log.info(
                "provider incidents changed",
                extra=fields(
                    provider=provider,
                    open=",".join(sorted(now)),
                    opened=",".join(sorted(now - before)),
                    closed=",".join(sorted(before - now)),
                ),
            )

    async def _run(self, source: Source, settings: ProviderStatus) -> None:
        refusals = 0
        while True:
            failure = await self.fetch_once(source, settings)
            refused = failure is not None and (
                failure.wait is not None or failure.reason is Reason.THROTTLED
            )
            await asyncio.sleep(next_wait(settings, failure, refusals))
            refusals = refusals + 1 if refused else 0
