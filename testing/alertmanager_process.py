"""Running real Alertmanager for tests, with a client for its silences (API v2)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import yaml

from testing.exporter_process import free_port
from testing.service import stop, until_ready

NO_ROUTING = {"route": {"receiver": "none"}, "receivers": [{"name": "none"}]}
"""A configuration that notifies nobody: silences need no receivers."""


def rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Alertmanager:
    """A running Alertmanager and a client for its silences."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        url: str,
        log: Path,
        headers: dict[str, str],
    ) -> None:
        self.process, self.url, self.log = process, url, log
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10), headers=headers
        )

    async def silence(
        self,
        matchers: Sequence[dict[str, Any]],
        comment: str,
        minutes: float = 10,
        created_by: str = "test",
    ) -> str:
        """Create an active silence; its id."""
        now = time.time()
        body = {
            "matchers": list(matchers),
            "startsAt": rfc3339(now - 60),
            "endsAt": rfc3339(now + minutes * 60),
            "createdBy": created_by,
            "comment": comment,
        }
        async with self.session.post(f"{self.url}/api/v2/silences", json=body) as answer:
            assert answer.status == 200, await answer.text()
            silence_id: str = (await answer.json())["silenceID"]
            return silence_id

    async def expire(self, silence_id: str) -> None:
        async with self.session.delete(f"{self.url}/api/v2/silence/{silence_id}") as answer:
            assert answer.status == 200, await answer.text()


def matcher(name: str, value: str, *, regex: bool = False, equal: bool = True) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": regex, "isEqual": equal}


async def start(
    work: Path, users: dict[str, str] | None = None, config: dict[str, Any] | None = None
) -> AsyncIterator[Alertmanager]:
    """Alertmanager on a free loopback port, without gossip; with ``users``, HTTP basic
    authentication (user name to password) through its web configuration file."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "alertmanager.yml").write_text(yaml.safe_dump(config or NO_ROUTING))
    port = free_port()
    argv = [
        shutil.which("prometheus-alertmanager") or "prometheus-alertmanager",
        f"--config.file={work / 'alertmanager.yml'}",
        f"--storage.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    headers: dict[str, str] = {}
    if users:
        hashed = {
            name: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
            for name, password in users.items()
        }
        (work / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": hashed}))
        argv.append(f"--web.config.file={work / 'web.yml'}")
        name, password = next(iter(users.items()))
        pair = base64.b64encode(f"{name}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {pair}"
    log = work / "alertmanager.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    alertmanager = Alertmanager(process, f"http://127.0.0.1:{port}", log, headers)
    try:
        await until_ready(
            "alertmanager", process, alertmanager.session, f"{alertmanager.url}/-/ready", log
        )
        yield alertmanager
    finally:
        await alertmanager.session.close()
        stop(process)
