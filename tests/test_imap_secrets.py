"""Secrets in library text: a server that breaks off, or echoes the command, while LOGIN or
AUTHENTICATE is pending makes aioimaplib and aiosmtplib quote the command line, with the
password quoted (``"pa\\"ss"``) or the token in base64. None of it may show: not in a
probe's detail or transcript, nor on any page, metric or log line of a running exporter."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from exporter import config, probes
from exporter.config import Target
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from testing import fakeserver
from testing.exporter_process import start, value
from testing.identity import IdentityProvider
from testing.mailstack import MailStack

USER = "probe@x.example"
PASSWORDS = ['pa"ss\\wörd-1', 'ünï"cödé', "back\\slash-ß"]
"""Each with a quote or a backslash (escaped inside an IMAP quoted string) and non-ASCII."""
TIMEOUT = 3.0


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def _core(prefix: str, secret: str, suffix: str) -> str:
    """The base64 characters of ``prefix + secret + suffix`` that encode the secret alone:
    found in a text even where the whole encoding was cut short."""
    head, body = len(prefix.encode()), len(secret.encode())
    whole = _b64(prefix + secret + suffix)
    return whole[-(-head // 3) * 4 : (head + body) // 3 * 4]


def password_forms(user: str, password: str) -> list[str]:
    """A password as it is, and as IMAP LOGIN and SMTP AUTH PLAIN/LOGIN put it on the wire."""
    return [
        password,
        password.replace("\\", "\\\\").replace('"', '\\"'),
        _b64(f"\0{user}\0{password}"),
        _core(f"\0{user}\0", password, ""),
        _b64(password),
    ]


def token_forms(user: str, token: str) -> list[str]:
    """A token as it is, and inside the XOAUTH2 response of IMAP and SMTP."""
    prefix = f"user={user}\1auth=Bearer "
    return [token, _b64(f"{prefix}{token}\1\1"), _core(prefix, token, "\1\1")]


def _leaks(text: str, forms: list[str]) -> list[str]:
    return [form[:6] + "..." for form in forms if form and form in text]


CAPABILITIES = b"IMAP4rev1 IDLE UIDPLUS AUTH=PLAIN AUTH=XOAUTH2"


def imap_server(behaviour: str) -> fakeserver.Handler:
    """An IMAP server that, at LOGIN or AUTHENTICATE, either sends a tagged answer to a
    command never sent and hangs up (``stray``: aioimaplib aborts, quoting the pending command)
    or refuses the command, echoing it (``echo``)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY " + CAPABILITIES + b"] scripted ready\r\n")
        await writer.drain()
        while line := await reader.readline():
            tag, _, rest = line.strip().partition(b" ")
            command = rest.split(b" ", 1)[0].upper()
            if command in (b"LOGIN", b"AUTHENTICATE"):
                if behaviour == "stray":
                    writer.write(b"ZZZZ999 OK [ALERT] an answer to nothing\r\n")
                else:
                    writer.write(tag + b" BAD Error in IMAP command: " + line.strip() + b"\r\n")
                await writer.drain()
                return
            if command == b"CAPABILITY":
                writer.write(b"* CAPABILITY " + CAPABILITIES + b"\r\n")
            writer.write(tag + b" OK done\r\n")
            await writer.drain()

    return handler


def smtp_server(behaviour: str) -> fakeserver.Handler:
    """An SMTP server that answers AUTH by echoing it: in a line that is no reply at all
    (``malformed``: aiosmtplib quotes it) or in a refusal (``echo``)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted ESMTP\r\n")
        await writer.drain()
        while line := await reader.readline():
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                writer.write(b"250-scripted\r\n250 AUTH PLAIN LOGIN XOAUTH2\r\n")
            elif verb == b"AUTH":
                if behaviour == "malformed":
                    writer.write(b"what is " + line.strip() + b"\r\n")
                else:
                    writer.write(b"501 5.5.2 Cannot decode " + line.strip() + b"\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()

    return handler


@asynccontextmanager
async def scripted() -> AsyncIterator[dict[str, int]]:
    """Every scripted server, by name, with its port."""
    async with AsyncExitStack() as stack:
        ports = {}
        for name, handler in (
            ("imap-stray", imap_server("stray")),
            ("imap-echo", imap_server("echo")),
            ("smtp-malformed", smtp_server("malformed")),
            ("smtp-echo", smtp_server("echo")),
        ):
            ports[name] = await stack.enter_async_context(fakeserver.serve(handler))
        yield ports


def _credentials(password: str | None, idp: IdentityProvider, client: str) -> str:
    if password is not None:
        return f"password: {json.dumps(password)}"
    return (
        f"oauth2: {{token_url: '{idp.token_url}', scope: mail, "
        f"client_id: {client}, client_secret: cs-{client}}}"
    )


def _section(port: int, credentials: str, user: str = USER) -> str:
    return f"{{host: 127.0.0.1, port: {port}, tls: none, username: {user}, {credentials}}}"


@pytest.fixture
def oauth_client(idp: IdentityProvider) -> Iterator[str]:
    idp.add_client("app-scripted", "cs-app-scripted", USER)
    yield "app-scripted"


def _target(
    imap_port: int, smtp_port: int, password: str | None, idp: IdentityProvider, client: str
) -> Target:
    credentials = _credentials(password, idp, client)
    return config.parse(
        "targets:\n  - name: scripted\n"
        f"    timeout: {TIMEOUT * 1000:.0f}ms\n"
        f"    smtp: {_section(smtp_port, credentials)}\n"
        f"    imap: {_section(imap_port, credentials)}\n"
    ).targets[0]


@pytest.mark.parametrize("behaviour", ["stray", "echo"])
@pytest.mark.parametrize("password", [*PASSWORDS, None], ids=[*PASSWORDS, "xoauth2"])
async def test_imap_login_breaking_off_shows_no_secret(
    behaviour: str,
    password: str | None,
    idp: IdentityProvider,
    oauth_client: str,
    context: ProbeContext,
) -> None:
    async with fakeserver.serve(imap_server(behaviour)) as port:
        target = _target(port, 1, password, idp, oauth_client)
        result = await probes.run(target, Check.IMAP_LOGIN, context, transcript=True)
    forms = (
        password_forms(USER, password)
        if password is not None
        else [f for t in idp.issued_tokens() for f in token_forms(USER, t)]
    )
    text = "\n".join((result.detail, *result.transcript))
    assert not _leaks(text, forms), text
    command = "LOGIN" if password is not None else "AUTHENTICATE"
    assert (result.reason, result.phase) == (Reason.PROTOCOL_ERROR, Phase.IMAP_AUTH), result
    if behaviour == "stray":
        assert f"malformed response to {command}" in result.detail, result.detail
        assert "an answer to nothing" in result.detail
    else:
        assert result.detail.startswith("BAD Error in IMAP command"), result.detail


@pytest.mark.parametrize("behaviour", ["malformed", "echo"])
@pytest.mark.parametrize("password", [*PASSWORDS, None], ids=[*PASSWORDS, "xoauth2"])
async def test_smtp_auth_echoed_shows_no_secret(
    behaviour: str,
    password: str | None,
    idp: IdentityProvider,
    oauth_client: str,
    context: ProbeContext,
) -> None:
    async with fakeserver.serve(smtp_server(behaviour)) as port:
        target = _target(1, port, password, idp, oauth_client)
        result = await probes.run(target, Check.SMTP_LOGIN, context, transcript=True)
    forms = (
        password_forms(USER, password)
        if password is not None
        else [f for t in idp.issued_tokens() for f in token_forms(USER, t)]
    )
    text = "\n".join((result.detail, *result.transcript))
    assert not _leaks(text, forms), text
    reason = Reason.PROTOCOL_ERROR if behaviour == "malformed" else Reason.AUTH_REJECTED
    assert (result.reason, result.phase) == (reason, Phase.SMTP_AUTH), result
    assert "<redacted>" in result.detail, result.detail


async def test_no_secret_on_any_surface_when_logins_break_off(
    oauth_mailstack: MailStack, idp: IdentityProvider, tmp_path: Path
) -> None:
    """Scripted servers that break off or echo at login, and the real Dovecot and Postfix
    with passwords full of quotes, backslashes and non-ASCII, and with XOAUTH2: every page,
    the metrics and the log of a running exporter are free of every form of every secret."""
    right, wrong = PASSWORDS[0], PASSWORDS[1]
    real = oauth_mailstack.add_user("quoted", right)
    oauth_user = oauth_mailstack.add_user("bearer", "unused-pw-77")
    idp.add_client("app-surface", "cs-app-surface", USER)
    idp.add_client("app-real", "cs-app-real", oauth_user.address)
    logins = "    checks: [smtp_login, imap_login]\n"
    schedule = f"    interval: 3s\n    timeout: {TIMEOUT:g}s\n"
    stack = oauth_mailstack
    async with scripted() as ports:
        entries = []
        for index, (imap, smtp) in enumerate(
            (("imap-stray", "smtp-malformed"), ("imap-echo", "smtp-echo"))
        ):
            for kind, credentials in (
                ("login", _credentials(PASSWORDS[index + 1], idp, "")),
                ("oauth", _credentials(None, idp, "app-surface")),
            ):
                entries.append(
                    f"  - name: {kind}-{imap}\n{schedule}{logins}"
                    f"    smtp: {_section(ports[smtp], credentials)}\n"
                    f"    imap: {_section(ports[imap], credentials)}\n"
                )
        for name, user, credentials in (
            ("dovecot-right", real.address, _credentials(right, idp, "")),
            ("dovecot-wrong", real.address, _credentials(wrong, idp, "")),
            ("dovecot-oauth", oauth_user.address, _credentials(None, idp, "app-real")),
        ):
            entries.append(
                f"  - name: {name}\n{schedule}"
                f"    smtp: {_section(stack.smtp_port, credentials, user)}\n"
                f"    imap: {_section(stack.imap_port, credentials, user)}\n"
            )
        path = tmp_path / "c.yml"
        path.write_text("targets:\n" + "".join(entries))
        names = [entry.split("\n", 1)[0].removeprefix("  - name: ") for entry in entries]
        seen: list[str] = []
        async for running in start(path, tmp_path / "run", "--log.level", "debug"):
            await running.until(
                lambda s: (
                    all(
                        value(s, "mailbox_probes_total", target=t, check=c)
                        for t in names
                        for c in ("smtp_login", "imap_login")
                    )
                    and value(s, "mailbox_probes_total", target="dovecot-right", check="roundtrip")
                ),
                seconds=40,
            )
            samples = await running.samples()
            for name in ("dovecot-right", "dovecot-oauth"):
                for check in ("roundtrip", "smtp_login", "imap_login"):
                    assert value(samples, "mailbox_probe_success", target=name, check=check) == 1
            assert (
                value(samples, "mailbox_probe_success", target="dovecot-wrong", check="imap_login")
                == 0
            )
            surfaces = ["/metrics", "/", "/api/v1/status"]
            surfaces += [
                f"/probe?target={name}&check={check}&debug=true"
                for name in names
                for check in ("smtp_login", "imap_login")
            ]
            for surface in surfaces:
                status, text = await running.get(surface)
                assert status == 200, (surface, text)
                seen.append(text)
        seen.append((tmp_path / "run" / "exporter.log").read_text())
    everything = "\n".join(seen)
    forms = [
        form for p in PASSWORDS for user in (USER, real.address) for form in password_forms(user, p)
    ]
    forms += [
        form
        for token in idp.issued_tokens()
        for user in (USER, oauth_user.address)
        for form in token_forms(user, token)
    ]
    assert len(idp.issued_tokens()) >= 2
    assert not _leaks(everything, forms)
    assert "malformed response to LOGIN" in everything
    assert "malformed response to AUTHENTICATE" in everything
    assert "Error in IMAP command" in everything and "Cannot decode" in everything
