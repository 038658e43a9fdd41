"""Locations and planned maintenance on the status page: ``global.location`` names where the
probes run from and links the other locations' pages; ``global.maintenance`` reads a real
Alertmanager's silences in the background and notes each silenced target."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import config as configuration
from exporter.alertmanager import MAX_BODY, SilenceWatch
from exporter.config import ConfigError, Secret
from exporter.config.site import Maintenance
from exporter.serve import status
from exporter.silences import Note, SilenceState
from exporter.state import Store
from testing.alertmanager_process import Alertmanager, matcher
from testing.alertmanager_process import start as start_alertmanager
from testing.exporter_process import Running, free_port
from testing.exporter_process import start as start_exporter
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml
from tests.test_status import ARTIFACTS, CHROMIUM_FLAGS

NOWHERE = (
    "targets:\n  - name: corp\n    labels: {provider: microsoft}\n"
    "    smtp: {host: 127.0.0.1, port: 1, tls: none, username: a@example.com, password: p}\n"
    "    imap: {host: 127.0.0.1, port: 1, tls: none, username: a@example.com, password: p}\n"
)
"""A target that is only configured, never probed."""
CREATOR = "creator-name-never-shown"
HOSTILE = '<script>alert("x")</script> & mailbox migration'


def _error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        configuration.parse(text)
    return str(caught.value)


# --- configuration ------------------------------------------------------------------------


def test_location_and_maintenance_are_off_unless_configured() -> None:
    parsed = configuration.parse(NOWHERE)
    assert parsed.location is None and parsed.maintenance is None


def test_the_location_names_the_exporter_and_its_peers(tmp_path: Path) -> None:
    parsed = configuration.parse(
        "global:\n  location:\n    name: office\n    label: site\n    peers:\n"
        "      dc: https://probe-dc.example.com:10025/\n"
        "      cloud: 'http://probe-cloud.example.com/status?x=1&y=2'\n" + NOWHERE
    )
    assert parsed.location is not None
    assert (parsed.location.name, parsed.location.label) == ("office", "site")
    assert [(p.name, p.url) for p in parsed.location.peers] == [
        ("dc", "https://probe-dc.example.com:10025/"),
        ("cloud", "http://probe-cloud.example.com/status?x=1&y=2"),
    ]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "  location: {nmae: office}\n",
            "line 2: global.location.nmae: unknown key (did you mean 'name'?)",
        ),
        ("  location: {peers: {}}\n", "global.location.name: required"),
        ("  location: {name: 'off ice'}\n", "global.location.name: expected 1 to 63 letters"),
        ("  location: {name: a, label: __x}\n", "global.location.label: expected a Prometheus"),
        (
            "  location: {name: a, peers: {b: 'ftp://x.example/'}}\n",
            "global.location.peers.b: expected an http:// or https:// URL",
        ),
        (
            "  location: {name: a, peers: {b: 'javascript:alert(1)'}}\n",
            "global.location.peers.b: expected an http:// or https:// URL",
        ),
        (
            "  location: {name: a, peers: {b: 'https://x.example/a b'}}\n",
            "global.location.peers.b: must not contain spaces",
        ),
        (
            "  location: {name: a, peers: {a: 'https://x.example/'}}\n",
            "global.location.peers.a: is this exporter's own location",
        ),
        ("  location: {name: a, peers: [x]}\n", "global.location.peers: expected a mapping"),
        (
            "  maintenance: {alertmanager_url: 'http://am:9093', interval: 500ms}\n",
            "global.maintenance.interval: must be at least 1s",
        ),
        (
            "  maintenance: {alertmanager_url: 'http://am:9093', interval: 10s, timeout: 20s}\n",
            "global.maintenance.timeout: must not be longer than the interval",
        ),
        ("  maintenance: {}\n", "global.maintenance.alertmanager_url: required"),
        (
            "  maintenance: {alertmanager_url: 'http://am:9093/?filter=x'}\n",
            "global.maintenance.alertmanager_url: expected Alertmanager's base URL",
        ),
        (
            "  maintenance: {alertmanager_url: 'http://am:9093', basic_auth: {username: u}}\n",
            "global.maintenance.basic_auth: set exactly one of password",
        ),
        (
            "  maintenance: {alertmanager_url: 'http://am:9093', basic_auth: "
            "{username: u, password: p}, authorization: {credentials: t}}\n",
            "global.maintenance.authorization: set basic_auth or authorization, not both",
        ),
        (
            "  maintenance: {alertmanager_url: 'http://am:9093', authorization: {token: t}}\n",
            "global.maintenance.authorization.token: unknown key",
        ),
    ],
)
def test_mistakes_are_named_with_their_key_path_and_line(section: str, message: str) -> None:
    error = _error("global:\n" + section + NOWHERE)
    assert message in error, error


def test_a_secret_given_wrongly_is_never_echoed() -> None:
    for section in (
        "  maintenance: {alertmanager_url: 'http://user:hunter2-secret@am:9093'}\n",
        "  location: {name: a, peers: {b: 'https://user:hunter2-secret@x.example/'}}\n",
        "  maintenance: {alertmanager_url: 'http://am:9093', authorization: "
        '{credentials: "hunter2-secret\\nInjected: header"}}\n',
    ):
        error = _error("global:\n" + section + NOWHERE)
        assert "hunter2" not in error, error


YAML_REFUSES_RAW = [chr(c) for c in range(0x7F, 0xA0) if c != 0x85] + ["\ufffe", "\uffff"]
"""Characters YAML refuses in a document even inside a quoted string (a document-level error,
tested in test_config.py)."""


@settings(derandomize=True, max_examples=200, deadline=None)
@given(
    st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters=YAML_REFUSES_RAW),
        max_size=80,
    )
)
def test_any_peer_url_is_accepted_as_http_or_refused_cleanly(url: str) -> None:
    """Any text YAML can carry (JSON escapes line breaks, NUL and other C0 controls)."""
    text = (
        "global:\n  location: {name: a, peers: {b: "
        + json.dumps(url, ensure_ascii=False)
        + "}}\n"
        + NOWHERE
    )
    try:
        parsed = configuration.parse(text)
    except ConfigError as exc:
        assert str(exc).startswith("line 2: global.location.peers.b: "), str(exc)
        return
    assert parsed.location is not None
    [peer] = parsed.location.peers
    assert peer.url.startswith(("http://", "https://")) and "@" not in peer.url.split("/")[2]


PRINTABLE = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30)
"""Text YAML takes anywhere: the document's own limits are tested in test_config.py."""
LEAF = st.none() | st.booleans() | st.integers(-5, 70000) | PRINTABLE
SITE_VALUE = st.recursive(
    LEAF | st.sampled_from(["office", "http://am.example:9093", "https://x.example/", "30s", "1m"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "label",
                    "peers",
                    "dc",
                    "alertmanager_url",
                    "interval",
                    "timeout",
                    "basic_auth",
                    "authorization",
                    "username",
                    "password",
                    "credentials",
                    "tls_config",
                    "nmae",
                ]
            )
            | PRINTABLE,
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(SITE_VALUE, SITE_VALUE)
def test_any_location_and_maintenance_read_or_fail_with_their_key_path(
    location: Any, maintenance: Any
) -> None:
    document = {"location": location, "maintenance": maintenance}
    text = "global: " + json.dumps(document, ensure_ascii=False) + "\n" + NOWHERE
    try:
        parsed = configuration.parse(text)
    except ConfigError as exc:
        assert str(exc).startswith("line 1: global."), str(exc)
        assert not re.match(r"line 1: global\.(location|maintenance): unknown key", str(exc))
        assert len(str(exc)) < 1000
        return
    if parsed.maintenance is not None:
        assert parsed.maintenance.url.startswith(("http://", "https://"))
        assert 0 < parsed.maintenance.timeout <= parsed.maintenance.interval


# --- the page, rendered -------------------------------------------------------------------


class _Page(HTMLParser):
    """Elements with a class or id, their attributes and text; links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []
        self.scripts = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))
        if tag == "script":
            self.scripts += 1


def test_the_page_escapes_peer_urls_and_comments() -> None:
    parsed = configuration.parse(
        "global:\n  location:\n    name: office\n    peers:\n"
        """      dc: 'https://dc.example/?a="><script>alert(1)</script>'\n""" + NOWHERE
    )
    store = Store()
    store.configure(parsed)
    state = SilenceState(configured=True, last_success=1.0)
    state.notes = {"corp": (Note("id-1", 4_102_444_800.0, HOSTILE),)}
    data = status.snapshot(store, parsed.location, state)
    page = status.render(data)
    parser = _Page(page)
    assert parser.scripts == 0, "nothing from the configuration or a silence becomes markup"
    [dc] = [link for link in parser.links if link.get("data-location") == "dc"]
    assert dc["href"] == 'https://dc.example/?a="><script>alert(1)</script>'
    assert html_text(page).count(HOSTILE) == 1
    assert "What the probes see from office" in html_text(page)
    [target] = data["targets"]
    assert target["maintenance"] == [
        {"silence": "id-1", "ends": 4_102_444_800.0, "comment": HOSTILE}
    ]
    assert "Planned maintenance until 2100-01-01 00:00 UTC" in html_text(page)


def html_text(page: str) -> str:
    """The page's text as a reader sees it."""
    parts: list[str] = []

    class Text(HTMLParser):
        def handle_data(self, data: str) -> None:
            parts.append(data)

    Text().feed(page)
    return re.sub(r"\s+", " ", "".join(parts))


def test_a_page_without_location_or_maintenance_says_nothing_of_them() -> None:
    parsed = configuration.parse(NOWHERE)
    store = Store()
    store.configure(parsed)
    data = status.snapshot(store, parsed.location, SilenceState())
    assert data["location"] is None and data["maintenance"] is None
    text = html_text(status.render(data))
    assert "maintenance" not in text.lower() and "location" not in text.lower()


# --- a real Alertmanager --------------------------------------------------------------------


async def _until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not seen within {seconds}s")


async def _status(exporter: Running) -> dict[str, Any]:
    async with exporter.session.get(exporter.url + "/api/v1/status") as response:
        assert response.status == 200
        data: dict[str, Any] = await response.json()
        return data


async def _notes(exporter: Running) -> dict[str, list[dict[str, Any]]]:
    return {t["name"]: t["maintenance"] for t in (await _status(exporter))["targets"]}


@asynccontextmanager
async def _alertmanager(work: Path, **users: str) -> AsyncIterator[Alertmanager]:
    async for running in start_alertmanager(work, users or None):
        yield running


@asynccontextmanager
async def _exporter(config: Path, work: Path) -> AsyncIterator[Running]:
    async for running in start_exporter(config, work, "--log.level", "info"):
        yield running


def _config(mailstack: MailStack, user: MailUser, maintenance: str) -> str:
    located = (
        "global:\n"
        "  login_backoff: {after: 1000}\n"
        "  location: {name: office, peers: {dc: 'https://probe-dc.example/'}}\n"
        f"  maintenance: {maintenance}\n"
        "targets:\n"
    )
    return (
        located
        # corp's logins fail: the work under way.
        + target_yaml(
            mailstack,
            user,
            name="corp",
            password="wrong-during-migration",
            extra="    labels: {provider: microsoft}\n",
        )
        + target_yaml(mailstack, user, name="other", extra="    labels: {provider: google}\n")
    )


async def test_a_silence_shows_as_planned_maintenance_until_it_is_expired(
    mailstack: MailStack, user: MailUser, tmp_path: Path
) -> None:
    async with _alertmanager(tmp_path / "am") as am:
        config = tmp_path / "exporter.yml"
        config.write_text(
            _config(mailstack, user, f"{{alertmanager_url: '{am.url}', interval: 1s}}")
        )
        async with _exporter(config, tmp_path / "exporter") as exporter:
            data = await _status(exporter)
            assert data["location"] == {
                "name": "office",
                "label": "location",
                "peers": [{"name": "dc", "url": "https://probe-dc.example/"}],
            }
            assert data["maintenance"]["error"] is None
            assert await _notes(exporter) == {"corp": [], "other": []}

            corp = await am.silence([matcher("target", "corp")], HOSTILE, created_by=CREATOR)
            # Silences that must not show: another location's, and one of no target.
            await am.silence([matcher("location", "dc")], "dc firewall change")
            await am.silence([matcher("alertname", "Watchdog")], "always on")
            await am.silence(
                [matcher("location", "dc"), matcher("provider", "google")], "dc's google path"
            )
            office = await am.silence(
                [matcher("location", "off.*", regex=True), matcher("provider", "google")],
                "office uplink work on google's path",
            )

            async def both_noted() -> bool:
                notes = await _notes(exporter)
                return bool(notes["corp"]) and bool(notes["other"])

            await _until(both_noted, 10, "the notes of both silences")
            notes = await _notes(exporter)
            assert [n["silence"] for n in notes["corp"]] == [corp]
            assert notes["corp"][0]["comment"] == HOSTILE
            assert [n["silence"] for n in notes["other"]] == [office]
            assert (await _status(exporter))["maintenance"]["active_silences"] == 5

            code, page = await exporter.get("/")
            assert code == 200
            assert _Page(page).scripts == 0
            text = html_text(page)
            assert "Planned maintenance until " in text and f"({HOSTILE})" in text
            assert CREATOR not in page and CREATOR not in json.dumps(await _status(exporter))
            corp_section = page[page.index('data-target="corp"') :]
            assert f'data-silence="{corp}"' in corp_section.split("</section>")[0]
            assert "What the probes see from office" in text
            assert any(
                link.get("href") == "https://probe-dc.example/" for link in _Page(page).links
            )

            async def corp_down() -> bool:
                data = await _status(exporter)
                return any(t["name"] == "corp" and t["state"] == "down" for t in data["targets"])

            await _until(corp_down, 20, "corp failing")
            summary = html_text((await exporter.get("/"))[1])
            assert "1 of 2 mailboxes failing: corp (planned maintenance)" in summary, summary
            await _in_a_browser_on_a_phone(exporter, corp)

            await am.expire(corp)

            async def corp_cleared() -> bool:
                return (await _notes(exporter))["corp"] == []

            await _until(corp_cleared, 10, "the expired silence gone")
            code, page = await exporter.get("/")
            assert f'data-silence="{corp}"' not in page and f'data-silence="{office}"' in page


async def _in_a_browser_on_a_phone(exporter: Running, silence: str) -> None:
    """The note and the links as a person sees them, on a phone, with nothing run from a
    comment and no sideways scrolling."""
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is installed by scripts/bootstrap"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 390, "height": 844})
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: dialogs.append(dialog.message))
            await page.goto(exporter.url + "/")
            note = page.locator(f'section[data-target="corp"] .maint[data-silence="{silence}"]')
            assert await note.is_visible()
            assert HOSTILE in await note.inner_text()
            assert await page.locator('#location a[data-location="dc"]').is_visible()
            assert "office" in await page.title()
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"the page scrolls sideways on a phone: {width}px"
            assert dialogs == [], "a comment ran as a script"
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "status-maintenance-phone.png"))
        finally:
            await browser.close()


async def test_an_unreadable_alertmanager_is_shown_and_logged_once_and_the_page_stays(
    mailstack: MailStack, user: MailUser, tmp_path: Path
) -> None:
    password = "am-password-9f3c"
    wrong = "wrong-password-77ab"
    secret = tmp_path / "am-password"
    secret.write_text(password + "\n")
    async with _alertmanager(tmp_path / "am", probe=password) as am:
        config = tmp_path / "exporter.yml"
        config.write_text(
            _config(
                mailstack,
                user,
                f"{{alertmanager_url: '{am.url}', interval: 1s, timeout: 1s, "
                f"basic_auth: {{username: probe, password_file: '{secret}'}}}}",
            )
        )
        async with _exporter(config, tmp_path / "exporter") as exporter:
            silence = await am.silence([matcher("provider", "microsoft")], "tenant move")

            async def noted() -> bool:
                return bool((await _notes(exporter))["corp"])

            await _until(noted, 10, "the silence, read with basic authentication")

            secret.write_text(wrong)
            assert (await exporter.post("/-/reload"))[0] == 200

            async def refused() -> bool:
                return (await _status(exporter))["maintenance"]["error"] is not None

            await _until(refused, 10, "the refusal")
            data = await _status(exporter)
            assert data["maintenance"]["error"] == "Alertmanager answered HTTP 401"
            # The last silences known stay shown, with the warning that they may be stale.
            assert [n["silence"] for n in data["targets"][0]["maintenance"]] == [silence]
            code, page = await exporter.get("/")
            assert code == 200
            assert "Planned maintenance unknown: Alertmanager not read since" in html_text(page)

            am.process.terminate()
            am.process.wait(10)
            await asyncio.sleep(3)  # three more readings fail, differently
            data = await _status(exporter)
            assert data["maintenance"]["error"].startswith("cannot connect to 127.0.0.1 port")
            assert (await exporter.get("/"))[0] == 200
            log = exporter.log.read_text()
            assert log.count("Alertmanager not read") == 1, log
            for text in (log, page, json.dumps(data)):
                assert password not in text and wrong not in text


async def test_a_hanging_alertmanager_meets_the_deadline_and_no_page_waits_for_it(
    mailstack: MailStack, user: MailUser, tmp_path: Path
) -> None:
    """Alertmanager stopped (SIGSTOP): its port accepts, nothing answers."""
    async with _alertmanager(tmp_path / "am") as am:
        config = tmp_path / "exporter.yml"
        config.write_text(
            _config(mailstack, user, f"{{alertmanager_url: '{am.url}', interval: 1s, timeout: 1s}}")
        )
        async with _exporter(config, tmp_path / "exporter") as exporter:
            await am.silence([matcher("target", "other")], "planned")

            async def noted() -> bool:
                return bool((await _notes(exporter))["other"])

            await _until(noted, 10, "the silence")
            am.process.send_signal(signal.SIGSTOP)
            try:

                async def hung() -> bool:
                    return (await _status(exporter))["maintenance"]["error"] is not None

                await _until(hung, 10, "the reading that timed out")
                assert (await _status(exporter))["maintenance"]["error"] == "no answer within 1s"
                loop = asyncio.get_running_loop()
                for _ in range(3):
                    started = loop.time()
                    assert (await exporter.get("/"))[0] == 200
                    assert loop.time() - started < 0.5, "the page waits for no Alertmanager"
                    await asyncio.sleep(0.4)
            finally:
                am.process.send_signal(signal.SIGCONT)

            async def recovered() -> bool:
                return (await _status(exporter))["maintenance"]["error"] is None

            await _until(recovered, 10, "the recovery")
            log = exporter.log.read_text()
            assert log.count("Alertmanager not read") == 1 and "Alertmanager read again" in log


async def test_odd_answers_end_in_a_clean_error_that_names_no_secret() -> None:
    """What a real Alertmanager will not answer on demand: a scripted one."""
    token = "bearer-token-5d1e"
    asked: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        assert request.headers["Authorization"] == f"Bearer {token}"
        kind = request.match_info["kind"]
        if kind == "huge":
            response = web.StreamResponse()
            await response.prepare(request)
            chunk = b"[" + b" " * (1 << 20)
            for _ in range(10):
                await response.write(chunk)
            return response
        if kind == "redirect":
            raise web.HTTPFound("http://127.0.0.1:1/elsewhere")
        if kind == "broken":
            return web.Response(status=500, text=token)
        return web.Response(text={"text": f"not json {token}", "object": '{"a": 1}'}[kind])

    app = web.Application()
    app.router.add_get("/{kind}/api/v2/silences", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    expected = {
        "huge": f"the answer is larger than {MAX_BODY} bytes",
        "redirect": "Alertmanager answered HTTP 302",
        "broken": "Alertmanager answered HTTP 500",
        "text": "the answer is not JSON",
        "object": "the answer is not a JSON list of silences",
    }
    try:
        async with aiohttp.ClientSession() as session:
            for kind, error in expected.items():
                state = SilenceState()
                watch = SilenceWatch(state)
                settings = Maintenance(
                    url=f"http://127.0.0.1:{port}/{kind}", timeout=5, token=Secret(token)
                )
                await watch.read_once(settings, session)
                assert state.error == error, kind
    finally:
        await runner.cleanup()
    assert "/elsewhere" not in asked, "a redirect is not followed with the credentials"
