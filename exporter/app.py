"""The running exporter: configuration, probe results and the HTTP server, wired together."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from aiohttp import web
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    generate_latest,
)
from prometheus_client.registry import CollectorRegistry

from exporter import config as configuration
from exporter import probes
from exporter.alertmanager import SilenceWatch
from exporter.config import Config, ConfigError, Target
from exporter.config.model import MAX_CONCURRENT_PROBES, OnDemand
from exporter.incidents.collector import ProviderStatusCollector
from exporter.logs import fields
from exporter.message import ProbeIds
from exporter.outcome import Check
from exporter.probes.context import ProbeContext
from exporter.probes.guard import LoginGuard
from exporter.result import ProbeResult
from exporter.scheduler import Scheduler
from exporter.serve import metrics, ondemand, status, webconfig
from exporter.serve.ondemand import UnknownProbe
from exporter.serve.web import READY, create_app
from exporter.serve.webconfig import WebConfig
from exporter.shard import Shard
from exporter.silences import SilenceState
from exporter.state import Store
from exporter.trace import Recorder, recording
from exporter.transports.oauth import TokenCache

log = logging.getLogger("exporter")

ON_DEMAND_CONCURRENCY = 8
"""On-demand probes in flight at once."""
RELOAD_DEADLINE = 10.0
"""Longest a reload may spend reading and checking the file."""
RETIRE_MARGIN = 5.0
"""How long after the longest probe timeout a reload closes the HTTP connections opened
before it (a probe outlives its timeout by a second at most)."""


class Exporter:
    """Keeps one configuration running; a reload that fails leaves the running one alone."""

    def __init__(
        self,
        config_path: str | Path,
        shard: Shard,
        context: ProbeContext,
        rng: random.Random,
        key_persistent: bool,
    ) -> None:
        self.config_path = Path(config_path)
        self.shard = shard
        self.context = context
        self.config: Config | None = None
        self.store = Store()
        self.store.probe_key_persistent = key_persistent
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            self.registry.register(collector)
        self.scheduler = Scheduler(self.run_scheduled, self.record, rng, MAX_CONCURRENT_PROBES)
        self.provider_status = ProviderStatusCollector(self.store, context.tokens)
        self.silences = SilenceState()
        """Alertmanager's silences of this shard's targets, for the status page."""
        self.silence_watch = SilenceWatch(self.silences)
        self._reloading = asyncio.Lock()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="config")
        """Reloads read the file here, apart from the threads probes use (name resolution):
        a file that hangs (a FIFO, a dead mount) holds up only further reloads."""
        self._loading: asyncio.Future[Config] | None = None
        self._on_demand_limit = asyncio.Semaphore(ON_DEMAND_CONCURRENCY)
        self._freeze: asyncio.TimerHandle | None = None
        self.rations = ondemand.Rations(OnDemand())

    async def run_scheduled(self, target: Target, check: Check) -> ProbeResult:
        """One scheduled probe."""
        return await probes.run(target, check, self.context)

    def start(self, config: Config) -> None:
        self._apply(config)

    async def reload(self) -> str | None:
        """Load the file again; return the error, or None once the new configuration runs.

        The file is read and checked in a worker thread, within :data:`RELOAD_DEADLINE`, so
        that probes and scrapes go on while it is; the running configuration is replaced only
        once the new one is whole.
        """
        async with self._reloading:
            if self._loading is not None and not self._loading.done():
                return self._reload_failed("the previous reload is still reading the file")
            loop = asyncio.get_running_loop()
            self._loading = loop.run_in_executor(self._loader, configuration.load, self.config_path)
            try:
                async with asyncio.timeout(RELOAD_DEADLINE):
                    config = await asyncio.shield(self._loading)
            except (ConfigError, TimeoutError) as exc:
                return self._reload_failed(
                    str(exc)
                    if isinstance(exc, ConfigError)
                    else f"reading the file took longer than {RELOAD_DEADLINE:g}s"
                )
            longest = self.config.longest_timeout() if self.config is not None else 0.0
            self._apply(config)
            self.context.renew_connections(grace=longest + RETIRE_MARGIN)
            log.info(
                "configuration reloaded",
                extra=fields(file=str(self.config_path), targets=len(config.targets)),
            )
            return None

    def _reload_failed(self, error: str) -> str:
        self.store.reload_successful = False
        log.error(
            "reload failed; keeping the previous configuration",
            extra=fields(file=str(self.config_path), error=error),
        )
        return error

    def _apply(self, config: Config) -> None:
        for target in config.targets:
            for protocol, server in target.sections().items():
                if server.tls_config.insecure_skip_verify:
                    log.warning(
                        "TLS certificates are not verified: anyone on the path can read the "
                        "credentials",
                        extra=fields(target=target.name, protocol=protocol),
                    )
        self.config = config
        mine = self.shard.select(config)
        self.store.configure(mine)
        self.scheduler.apply(mine)
        # Provider status pages are read once per process group, by its first shard.
        self.provider_status.apply(config.provider_status if self.shard.index == 0 else None)
        self.silence_watch.apply(config.maintenance, config.location, mine.targets)
        self.context.keep_only(t.name for t in config.targets)
        self.context.guard.policy = config.login_backoff
        self.rations.policy = config.on_demand
        self.context.guard.keep_only(config.targets)
        if self.shard.count > 1:
            log.info(
                "shard selected",
                extra=fields(
                    shard=f"{self.shard.index}/{self.shard.count}",
                    targets=len(mine.targets),
                    of=len(config.targets),
                ),
            )
        self.store.reload_successful = True
        self.store.reload_success_timestamp = time.time()
        self._freeze_after_warm_up(config)

    def _freeze_after_warm_up(self, config: Config) -> None:
        """Once every check has run (an interval and a timeout after a load), hand what is
        alive to ``gc.freeze()``: the configuration, the scheduled tasks and each target's
        kept state and text are then never walked by a full collection again. At 10,000
        targets such a collection held the event loop for about 1.5 s, and every probe due
        meanwhile waited (docs/performance.md)."""
        if self._freeze is not None:
            self._freeze.cancel()
        delay = config.longest_interval() + config.longest_timeout()
        self._freeze = asyncio.get_running_loop().call_later(delay, gc.freeze)

    def record(self, result: ProbeResult) -> None:
        self.store.record(result)
        phases = " ".join(f"{name}={seconds:.3f}" for name, seconds in result.phases.items())
        log.log(
            logging.INFO if result.success else logging.WARNING,
            "probe finished",
            extra=fields(
                target=result.target,
                check=result.check.value,
                outcome="success" if result.success else "failure",
                phase=result.phase.value if result.phase else "",
                reason=result.reason.value if result.reason else "",
                duration_seconds=f"{result.duration:.3f}",
                delivery_seconds=(
                    "" if result.delivery_seconds is None else f"{result.delivery_seconds:.3f}"
                ),
                phases=phases,
                detail=result.detail,
                **{k: v for k, v in result.found.logged().items() if k != "delivery_seconds"},
            ),
        )

    async def probe_now(
        self,
        target_name: str | None,
        check_name: str | None,
        time_limit: float | None,
        transcript: bool,
    ) -> ProbeResult:
        """Run one probe of a configured target now; :class:`UnknownProbe` for anything else.

        On-demand probes share the scheduled probes' context: a message an on-demand round
        trip gave up on is recognised, counted late and deleted by the next probe. They are
        rationed (:class:`ondemand.Rations`): :class:`ondemand.TooSoon` when one ran too
        recently. Every on-demand run keeps a transcript, so that requests sharing a run can
        all have it.
        """
        if self.config is None:
            raise UnknownProbe("no configuration is loaded")
        target, check = ondemand.resolve(self.config, target_name, check_name)
        limit = (
            target.timeout(check) if time_limit is None else min(time_limit, target.timeout(check))
        )
        deadline = time.monotonic() + limit

        async def probe() -> ProbeResult:
            async with self._on_demand_limit:
                left = max(deadline - time.monotonic(), 0.1)
                return await probes.run(
                    target, check, self.context, time_limit=left, transcript=True
                )

        try:
            return await self.rations.run(target, check, probe)
        except ondemand.TooSoon:
            self.store.refused_on_demand(target.name, check)
            raise

    async def exposition(self) -> bytes:
        """Everything ``/metrics`` shows: the probes' metrics, then the process's own. Written
        in slices with the event loop free between them, so that probes keep their schedule."""
        chunks = await metrics.render_async(self.store)
        return b"".join([*chunks, generate_latest(self.registry)])

    async def stop(self) -> None:
        if self._freeze is not None:
            self._freeze.cancel()
        self._loader.shutdown(wait=False, cancel_futures=True)
        await self.scheduler.stop()
        await self.provider_status.stop()
        await self.silence_watch.stop()
        await self.context.close()


def new_context(ids: ProbeIds, config: Config) -> ProbeContext:
    """The context every probe of this process shares."""
    return ProbeContext(ids=ids, tokens=TokenCache(), guard=LoginGuard(config.login_backoff))


async def probe_once(
    config: Config,
    target_name: str,
    check_name: str | None,
    ids: ProbeIds,
    record: Path | None = None,
) -> int:
    """``mailbox-exporter probe``: run the checks of one target now and print what was said;
    0 if every probe succeeded, else 1. With ``record``, also write what was exchanged with
    the servers there, redacted (``probe --record``), however the probes end."""
    try:
        target, _ = ondemand.resolve(config, target_name, check_name)
    except ondemand.UnknownProbe as exc:
        print(f"mailbox-exporter: {exc}", file=sys.stderr)
        return 1
    checks = [Check(check_name)] if check_name else list(target.checks)
    context = new_context(ids, config)
    recorder = Recorder()
    failed = False
    try:
        with recording(recorder) if record is not None else nullcontext(recorder):
            for check in checks:
                result = await probes.run(target, check, context, transcript=True)
                print(ondemand.report(result))
                failed |= not result.success
    finally:
        await context.close()
        if record is not None:
            lines = recorder.lines(target.name, checks, target.secrets())
            try:
                text = "".join(f"{line}\n" for line in lines)
                await asyncio.to_thread(record.write_text, text, encoding="utf-8")
            except OSError as exc:
                print(f"mailbox-exporter: cannot write {record}: {exc.strerror}", file=sys.stderr)
                failed = True
    return 1 if failed else 0


async def serve(
    exporter: Exporter,
    config: Config,
    host: str | None,
    port: int,
    web_config: WebConfig | None = None,
) -> None:
    """Run until SIGINT or SIGTERM; SIGHUP reloads the configuration."""
    app = create_app(
        exporter.exposition,
        exporter.reload,
        exporter.probe_now,
        lambda: status.snapshot(
            exporter.store, exporter.config.location if exporter.config else None, exporter.silences
        ),
    )
    if web_config is not None and web_config.users:
        app.middlewares.append(webconfig.middleware(web_config))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        host=host,
        port=port,
        reuse_address=True,
        ssl_context=web_config.tls if web_config else None,
    )
    await site.start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    reloads: set[asyncio.Task[str | None]] = set()

    def hangup() -> None:
        task = asyncio.create_task(exporter.reload())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, hangup)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    exporter.start(config)
    app[READY]["ready"] = True
    log.info("listening", extra=fields(address=f"{host or ''}:{port}", targets=len(config.targets)))
    try:
        await stopping.wait()
    finally:
        log.info("shutting down")
        await exporter.stop()
        await runner.cleanup()
