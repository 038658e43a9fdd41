"""Running real Prometheus for tests: it scrapes the given exporters and evaluates rule files."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from testing.exporter_process import free_port
from testing.service import stop, until_ready


class Prometheus:
    """A running Prometheus and a client for its query API."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def api(self, path: str, **params: str) -> dict[str, Any]:
        """POST to ``/api/v1/PATH``; the JSON answer, also for errors (status 400, 422)."""
        async with self.session.post(f"{self.url}/api/v1/{path}", data=params) as response:
            body: dict[str, Any] = await response.json(content_type=None)
            return body

    async def query(self, expr: str) -> dict[str, Any]:
        """An instant query now."""
        return await self.api("query", query=expr)

    async def query_range(self, expr: str, seconds: float, step: float) -> dict[str, Any]:
        """A range query over the last ``seconds``."""
        end = time.time()
        return await self.api(
            "query_range", query=expr, start=str(end - seconds), end=str(end), step=str(step)
        )

    async def until(self, expr: str, seconds: float = 30) -> None:
        """Wait until the instant query ``expr`` returns something."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log.read_text()[-3000:]}")
            answer = await self.query(expr)
            if answer["status"] == "success" and answer["data"]["result"]:
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"{expr} returned nothing within {seconds}s")


async def start(
    work: Path,
    targets: Sequence[str],
    *,
    rule_files: Sequence[Path] = (),
    job: str = "mailbox-exporter",
    interval: str = "1s",
    static_configs: Sequence[dict[str, Any]] = (),
) -> AsyncIterator[Prometheus]:
    """Prometheus scraping ``targets`` (host:port) as ``job``, evaluating ``rule_files``;
    ``static_configs``, when given, replace ``targets`` (to add target labels)."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": interval, "evaluation_interval": interval},
                "rule_files": [str(path) for path in rule_files],
                "scrape_configs": [
                    {
                        "job_name": job,
                        "static_configs": list(static_configs) or [{"targets": list(targets)}],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = work / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(process, f"http://127.0.0.1:{port}", log)
    try:
        await until_ready(
            "prometheus", process, prometheus.session, f"{prometheus.url}/-/ready", log
        )
        yield prometheus
    finally:
        await prometheus.session.close()
        stop(process)
