"""``mailbox-exporter probe --record``: what a probe exchanged with its servers, written as
JSON lines with every secret replaced, and replayed as a scripted IMAP server."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import cli, config, probes
from exporter.config import Target
from exporter.outcome import Check, Reason
from exporter.probes.context import ProbeContext
from exporter.trace import MAX_TEXT, RECORD_FORMAT, RECORD_VERSION, REDACTED, Recorder, recording
from testing.identity import IdentityProvider
from testing.mailstack import MailStack, MailUser
from testing.replay import ImapReplay, RecordError, read_record
from testing.simulators.graph import GraphSimulator
from testing.targets import make_target, target_yaml
from tests.test_graph import (
    DOMAIN,
    TENANT,
    certificate_app,
    graph_section,
    mailbox,
    secret_app,
    target,
)
from tests.test_oauth import CLIENT_SECRET, REFRESH_TOKEN
from tests.test_oauth import _target as oauth_target

HARD_PASSWORD = 'pw"q\\ü€-'
"""A password with what each protocol must escape or encode: a quote, a backslash, and
characters outside ASCII (two and three bytes in UTF-8)."""


def forms(secret: str, username: str = "") -> set[str]:
    """A secret as it may show in a record: itself, escaped as IMAP and JSON quote it, and in
    the base64 of AUTH PLAIN, AUTH LOGIN and XOAUTH2."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    shown = {
        secret,
        secret.replace("\\", "\\\\").replace('"', '\\"'),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        b64(secret),
    }
    if username:
        shown |= {
            b64(f"\0{username}\0{secret}"),
            b64(f"user={username}\1auth=Bearer {secret}\1\1"),
        }
    return {form for form in shown if len(form) >= 3}


def steps_of(text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header, *rows = (json.loads(line) for line in text.splitlines())
    return header, rows


def assert_secretless(text: str, known: set[str]) -> None:
    """Neither the file nor any step's text holds any form of any secret."""
    _, rows = steps_of(text)
    for secret in known:
        assert secret not in text
        for row in rows:
            assert secret not in row["text"], (secret, row)


async def record(
    target: Target, checks: list[Check], context: ProbeContext
) -> tuple[str, list[Any]]:
    """Run ``checks`` recorded; the record's text and the results."""
    recorder = Recorder()
    with recording(recorder):
        results = [await probes.run(target, check, context) for check in checks]
    lines = recorder.lines(target.name, checks, target.secrets())
    return "".join(f"{line}\n" for line in lines), results


# --- the command, end to end ---------------------------------------------------------------


def test_probe_record_writes_the_wire_without_any_password_form(
    mailstack: MailStack, tmp_path: Path
) -> None:
    """Both protocols' real exchanges, with untagged IMAP replies and the SMTP dialogue, and
    the password in none of its forms (plain, quoted, base64 PLAIN and LOGIN)."""
    user = mailstack.add_user(f"rec{secrets.token_hex(3)}", HARD_PASSWORD + secrets.token_hex(4))
    password = user.password
    configuration = tmp_path / "exporter.yml"
    configuration.write_text(
        "targets:\n" + target_yaml(mailstack, user, password=password.replace("'", "''"))
    )
    out = tmp_path / "probe.jsonl"
    code = cli.main(
        [
            "--config.file",
            str(configuration),
            "--storage.path",
            str(tmp_path),
            "probe",
            "local",
            "--record",
            str(out),
        ]
    )
    assert code == 0
    text = out.read_text(encoding="utf-8")
    header, rows = steps_of(text)
    assert header["format"] == RECORD_FORMAT and header["version"] == RECORD_VERSION
    assert header["target"] == "local" and "roundtrip" in header["checks"]
    said = {(row["proto"], row["dir"]) for row in rows}
    assert said == {("imap", "C"), ("imap", "S"), ("smtp", "C"), ("smtp", "S")}
    imap_server = [row["text"] for row in rows if row["proto"] == "imap" and row["dir"] == "S"]
    assert any(line.startswith("* CAPABILITY") or " EXISTS" in line for line in imap_server)
    smtp_client = [row["text"] for row in rows if row["proto"] == "smtp" and row["dir"] == "C"]
    assert f"AUTH PLAIN {REDACTED}" in smtp_client and "DATA" in smtp_client
    assert any(row["text"].endswith(f"LOGIN {REDACTED}") for row in rows)
    assert [row["t"] for row in rows] == sorted(row["t"] for row in rows)
    assert_secretless(text, forms(password, user.address))


async def test_pop3_login_is_recorded_with_its_multiline_answers_and_no_password(
    mailstack: MailStack, context: ProbeContext
) -> None:
    user = mailstack.add_user(f"recpop{secrets.token_hex(3)}", HARD_PASSWORD + secrets.token_hex(4))
    quoted = user.password.replace("'", "''")
    probe_target = config.parse(
        "targets:\n  - name: p\n    timeout: 10s\n    checks: [pop3_login]\n"
        f"    pop3: {{host: 127.0.0.1, port: {mailstack.pop3_port}, tls: none, "
        f"username: {user.address}, password: '{quoted}'}}\n"
    ).targets[0]
    text, (result,) = await record(probe_target, [Check.POP3_LOGIN], context)
    assert result.success, result
    _, rows = steps_of(text)
    assert {row["proto"] for row in rows} == {"pop3"}
    shown = [(row["dir"], row["text"]) for row in rows]
    assert ("C", "CAPA") in shown and ("S", ".") in shown
    assert ("C", f"PASS {REDACTED}") in shown or any(
        d == "C" and t.startswith("AUTH ") for d, t in shown
    )
    assert_secretless(text, forms(user.password, user.address))


# --- replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("good", [True, False])
async def test_replayed_imap_login_ends_as_recorded(
    mailstack: MailStack, user: MailUser, context: ProbeContext, tmp_path: Path, good: bool
) -> None:
    """A login recorded against Dovecot (accepted, or refused), replayed to the receiver,
    ends the same way, the replay following the record line by line."""
    real = make_target(mailstack, user, password=user.password if good else "wrong-password")
    text, (result,) = await record(real, [Check.IMAP_LOGIN], context)
    assert result.success is good and (good or result.reason is Reason.AUTH_REJECTED)
    path = tmp_path / "login.jsonl"
    path.write_text(text, encoding="utf-8")
    async with ImapReplay.from_file(path) as replay:
        replayed = config.parse(
            "targets:\n  - name: replayed\n    timeout: 10s\n"
            f"    imap: {{host: 127.0.0.1, port: {replay.port}, tls: none, "
            f"username: {user.address}, password: another}}\n"
        ).targets[0]
        again = await probes.run(replayed, Check.IMAP_LOGIN, context)
    assert replay.mismatches == []
    assert replay.served == 1
    assert (again.success, again.reason, again.phase) == (
        result.success,
        result.reason,
        result.phase,
    )


async def test_replay_answers_what_the_record_does_not_have_with_bad(
    mailstack: MailStack, user: MailUser, context: ProbeContext, tmp_path: Path
) -> None:
    """A client that strays from the record is told so and the mismatch is kept: a replay
    never passes by answering whatever comes."""
    text, _ = await record(make_target(mailstack, user), [Check.IMAP_LOGIN], context)
    _, rows = steps_of(text)
    changed = [
        {**row, "text": row["text"].replace("LOGIN", "SELECT")} if row["dir"] == "C" else row
        for row in rows
    ]
    path = tmp_path / "changed.jsonl"
    path.write_text(text.splitlines()[0] + "\n" + "".join(json.dumps(r) + "\n" for r in changed))
    async with ImapReplay.from_file(path) as replay:
        replayed = make_target(mailstack, user)
        replayed = config.parse(
            "targets:\n  - name: replayed\n    timeout: 5s\n"
            f"    imap: {{host: 127.0.0.1, port: {replay.port}, tls: none, "
            f"username: {user.address}, password: x}}\n"
        ).targets[0]
        again = await probes.run(replayed, Check.IMAP_LOGIN, context)
    assert not again.success
    assert replay.mismatches and "SELECT" in replay.mismatches[0]


# --- tokens: XOAUTH2 and the Graph API -------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphSimulator]:
    sim = GraphSimulator(tenant=TENANT, domains=(DOMAIN,), delivery_delay=0.1)
    sim.start_in_thread()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.mark.parametrize("grant", ["client_credentials", "refresh_token"])
async def test_xoauth2_record_holds_no_token_nor_client_secret(
    oauth_mailstack: MailStack, idp: IdentityProvider, context: ProbeContext, grant: str
) -> None:
    user = oauth_mailstack.add_user(f"recoauth{secrets.token_hex(3)}", "unused-password-1")
    idp.add_client(f"app-{user.name}", CLIENT_SECRET, user.address)
    idp.add_refresh_token(f"{REFRESH_TOKEN}-{user.name}", f"app-{user.name}", user.address)
    probe_target = oauth_target(oauth_mailstack, idp, user, grant)
    text, results = await record(probe_target, list(probe_target.checks), context)
    assert all(result.success for result in results), results
    _, rows = steps_of(text)
    assert {row["proto"] for row in rows} == {"imap", "smtp", "http"}
    assert any(row["text"].startswith("POST ") and row["proto"] == "http" for row in rows)
    assert any(f"AUTHENTICATE XOAUTH2 {REDACTED}" in row["text"] for row in rows)
    assert f"AUTH XOAUTH2 {REDACTED}" in [row["text"] for row in rows]
    known: set[str] = set()
    for secret in (*idp.issued_tokens(), CLIENT_SECRET, f"{REFRESH_TOKEN}-{user.name}"):
        known |= forms(secret, user.address)
    assert_secretless(text, known)


async def test_graph_record_holds_no_bearer_token_secret_or_assertion(
    graph: GraphSimulator,
    context: ProbeContext,
    tmp_path: Path,
) -> None:
    """A round trip and login check with a client secret, and with a certificate (signed
    client assertions): the API's requests and answers are there, their credentials not."""
    address = mailbox(graph)
    with_secret = target(graph_section(graph, address, secret_app(graph, address)))
    with_certificate = target(
        graph_section(graph, address, certificate_app(graph, address, tmp_path))
    )
    before = len(graph.requests)
    texts = []
    for probe_target in (with_secret, with_certificate):
        text, results = await record(probe_target, [Check.ROUNDTRIP, Check.GRAPH_LOGIN], context)
        assert all(result.success for result in results), results
        texts.append(text)
    requests = graph.requests[before:]
    known: set[str] = set()
    for request in requests:
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            known |= forms(authorization.removeprefix("Bearer "))
        if request.path.endswith("/token"):
            form = request.form()
            for name in ("client_secret", "client_assertion"):
                if name in form:
                    known |= forms(form[name])
    assert any(len(secret) > 100 for secret in known), "a signed assertion was sent"
    for text in texts:
        _, rows = steps_of(text)
        shown = [row["text"] for row in rows]
        assert any(line.startswith("POST ") and "sendMail" in line for line in shown)
        assert any(line.startswith("200\n") and '"value"' in line for line in shown)
        assert any(REDACTED in line and "access_token" in line for line in shown)
        assert_secretless(text, known)


# --- the recorder, alone ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("proto", "lines", "kept"),
    [
        ("imap", ['a1 LOGIN "me" "unknown\\"pw"'], [f"a1 LOGIN {REDACTED}"]),
        (
            "imap",
            ["a2 AUTHENTICATE PLAIN dW5rbm93bg==", "+ ", "AGZvbwBiYXI="],
            [f"a2 AUTHENTICATE PLAIN {REDACTED}", REDACTED],
        ),
        (
            "smtp",
            [
                "AUTH LOGIN",
                "334 VXNlcm5hbWU6",
                "bWU=",
                "334 UGFzc3dvcmQ6",
                "c2VjcmV0",
                "235 ok",
                "MAIL FROM:<a@b>",
            ],
            ["AUTH LOGIN", REDACTED, REDACTED, "MAIL FROM:<a@b>"],
        ),
        (
            "pop3",
            ["PASS unknownpw", "+OK", "APOP me 0123abcd"],
            [f"PASS {REDACTED}", f"APOP me {REDACTED}"],
        ),
    ],
)
def test_login_lines_are_blanked_even_for_secrets_unknown(
    proto: str, lines: list[str], kept: list[str]
) -> None:
    """A credential the probe did not know as one (a server's own challenge answer, a
    password it derived) is blanked by where it stands in the protocol."""
    recorder = Recorder()
    conn = recorder.connection(proto)
    server = ("+", "334", "235")
    for line in lines:
        if line.startswith(server) or line == "+ ":
            recorder.received(conn, line.encode() + b"\r\n")
        else:
            recorder.sent(conn, line.encode() + b"\r\n")
    client = [step["text"] for step in recorder.steps if step["dir"] == "C"]
    assert client == kept


def test_credential_shapes_are_replaced_in_http_bodies() -> None:
    recorder = Recorder()
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    token = recorder.request(
        f"POST /token\n\ngrant_type=x&client_secret=s3cr3t&client_assertion={jwt}"
    )
    me = recorder.request("GET /me\nAuthorization: Bearer abc.def-ghi")
    recorder.answer(token, '200\n\n{"access_token": "tok-123456", "refresh_token": "r-99", "x": 1}')
    assert [step["conn"] for step in recorder.steps] == [token, me, token]
    text = "\n".join(recorder.lines("t", [], ()))
    for secret in ("s3cr3t", jwt, "eyJhbGci", "tok-123456", "r-99", "abc.def-ghi"):
        assert secret not in text
    assert '\\"x\\": 1' in text and "grant_type=x" in text


def test_unknown_protocol_fails_loudly() -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        Recorder().connection("ftp")


SECRET_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="<>redacted"
)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(
    secret=st.text(SECRET_CHARS, min_size=3, max_size=24),
    chunks=st.lists(st.tuples(st.booleans(), st.binary(max_size=80), st.booleans()), max_size=12),
)
def test_any_exchange_records_without_the_secret(
    secret: str, chunks: list[tuple[bool, bytes, bool]]
) -> None:
    """Whatever arrives, in whatever pieces, with the secret anywhere in it: the record is
    valid JSON lines, bounded, and holds no trace of the secret."""
    recorder = Recorder()
    conn = recorder.connection("imap")
    for sent, data, with_secret in chunks:
        piece = data + (secret.encode() if with_secret else b"")
        (recorder.sent if sent else recorder.received)(conn, piece)
    recorder.closed(conn)
    lines = recorder.lines("t", [], (secret,))
    header, *rows = (json.loads(line) for line in lines)
    assert header["format"] == RECORD_FORMAT
    for row in rows:
        assert secret not in row["text"] and len(row["text"]) <= MAX_TEXT


@settings(derandomize=True, max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_reading_any_file_as_a_record_ends_cleanly(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("records") / "r.jsonl"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        header, steps = read_record(path)
    except RecordError:
        return
    assert header["format"] == RECORD_FORMAT and all(isinstance(s.text, str) for s in steps)
