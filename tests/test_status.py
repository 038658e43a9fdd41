"""The status page and its JSON, with one healthy and one failing target, in a real browser."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from testing.exporter_process import Running, start
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def exporter(tmp_path: Path, mailstack: MailStack, user: MailUser) -> AsyncIterator[Running]:
    config = tmp_path / "c.yml"
    config.write_text(
        "targets:\n"
        + target_yaml(mailstack, user, name="healthy", interval="2s", timeout="2s")
        + target_yaml(
            mailstack,
            user,
            name="failing",
            password="wrong-password-9",
            interval="2s",
            timeout="2s",
        )
    )
    async for running in start(config, tmp_path):
        yield running


async def _status(exporter: Running) -> dict[str, Any]:
    async with exporter.session.get(exporter.url + "/api/v1/status") as response:
        assert response.status == 200
        data: dict[str, Any] = await response.json()
        return data


async def _settled(exporter: Running) -> dict[str, Any]:
    """The status once every check of both targets has a result."""
    for _ in range(100):
        data = await _status(exporter)
        if all(c["state"] != "pending" for t in data["targets"] for c in t["checks"]):
            return data
        await asyncio.sleep(0.2)
    raise AssertionError(f"probes did not all finish: {data}")


async def test_status_json_shows_state_reason_and_recent_probes(exporter: Running) -> None:
    data = await _settled(exporter)
    targets = {t["name"]: t for t in data["targets"]}
    assert targets["healthy"]["state"] == "up"
    assert targets["failing"]["state"] == "down"
    for check in targets["failing"]["checks"]:
        assert check["state"] == "down"
        assert check["last"]["reason"] == "auth_rejected"
        assert check["last"]["phase"] in ("smtp_auth", "imap_auth")
        assert check["since"] is not None and check["last_success"] is None
    healthy = {c["check"]: c for c in targets["healthy"]["checks"]}
    assert healthy["roundtrip"]["last"]["delivery_seconds"] > 0
    assert targets["healthy"]["last_delivery_seconds"] > 0
    assert targets["healthy"]["recent"] and "phases" in targets["healthy"]["recent"][0]


async def _two_round_trips(exporter: Running) -> None:
    """Wait until the healthy round trip has two results: a sparkline needs two points."""
    for _ in range(100):
        data = await _status(exporter)
        healthy = next(t for t in data["targets"] if t["name"] == "healthy")
        roundtrip = next(c for c in healthy["checks"] if c["check"] == "roundtrip")
        if sum(1 for o in roundtrip["history"] if o["delivery_seconds"] is not None) >= 2:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the healthy target did not complete two round trips")


async def test_status_page_in_a_browser(exporter: Running) -> None:
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is installed by scripts/bootstrap"
    await _settled(exporter)
    await _two_round_trips(exporter)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            await page.goto(exporter.url + "/")
            healthy = page.locator('section[data-target="healthy"]')
            failing = page.locator('section[data-target="failing"]')
            assert "up" in (await healthy.get_attribute("class") or "")
            assert "down" in (await failing.get_attribute("class") or "")
            assert await healthy.locator("h2 .badge").inner_text() == "UP"
            assert await failing.locator("h2 .badge").inner_text() == "DOWN"
            assert (
                "auth_rejected in imap_auth"
                in await failing.locator('tr[data-check="imap_login"]').inner_text()
            )
            assert (
                "auth_rejected in smtp_auth"
                in await failing.locator('tr[data-check="smtp_login"]').inner_text()
            )
            assert (
                "1 of 2 mailboxes failing: failing" in await page.locator("#summary").inner_text()
            )
            assert await page.locator('a[href="metrics"]').count() == 1
            strip = failing.locator('tr[data-check="imap_login"] .strip svg')
            assert await strip.locator("rect.failed").count() >= 1
            assert await strip.locator("rect.ok").count() == 0
            label = await strip.get_attribute("aria-label") or ""
            assert "failed (auth_rejected)" in label, label
            title = await strip.locator("rect title").first.text_content() or ""
            assert "auth_rejected in imap_auth" in title
            healthy_strip = healthy.locator('tr[data-check="roundtrip"] .strip svg')
            assert await healthy_strip.locator("rect.ok").count() >= 2
            spark = healthy.locator('tr[data-check="roundtrip"] .spark svg polyline')
            assert len((await spark.get_attribute("points") or "").split()) >= 2
            assert "delivery time of the last" in (
                await healthy.locator('tr[data-check="roundtrip"] .spark svg').get_attribute(
                    "aria-label"
                )
                or ""
            )
            await page.locator('section[data-target="healthy"] details summary').click()
            assert await healthy.locator("details tbody tr").count() >= 1
            await page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
            outside = [url for url in requested if not url.startswith(exporter.url)]
            assert outside == [], "the page loads nothing from elsewhere"

            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            await phone.goto(exporter.url + "/")
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page scrolls sideways on a phone: {width}px"
            await phone.screenshot(path=str(ARTIFACTS / "status-page-phone.png"), full_page=True)
        finally:
            await browser.close()
