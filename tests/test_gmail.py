"""The Gmail API transport against the Gmail simulator: round trips with service-account and
refresh-token credentials, whether or not Gmail splits words at dots, late arrivals after a
restart, gmail_login, classified answers, spam (listed only with includeSpamTrash), paging,
no secret shown; and the configuration of both API sections."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import message, probes
from exporter.config import ConfigError, Target, parse
from exporter.message import PROBE_HEADER, ProbeIds
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from exporter.probes.roundtrip import compose
from exporter.serve import metrics, ondemand
from exporter.trace import Trace
from exporter.transports import gmail as transport
from exporter.transports import registry
from exporter.transports.oauth import request_form
from testing.simulators.gmail import FULL_SCOPE, MODIFY_SCOPE, GmailSimulator, google_error
from testing.targets import fixed_ids, gmail_section, probe_context
from testing.targets import gmail_mailbox as mailbox
from testing.targets import gmail_refresh_token as refresh_token

DOMAIN = "gmail.example"
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def gmail() -> Iterator[GmailSimulator]:
    sim = GmailSimulator(domains=(DOMAIN,), delivery_delay=0.1)
    sim.start_in_thread()
    try:
        yield sim
    finally:
        sim.stop()


def service_account(
    sim: GmailSimulator, address: str, directory: Path, scopes: tuple[str, ...] = (FULL_SCOPE,)
) -> str:
    number = next(_numbers)
    key = sim.create_service_account(f"monitor{number}@project.iam.example", f"1{number:08d}")
    sim.delegate(key["client_id"], DOMAIN, scopes)
    path = directory / f"sa{number}.json"
    path.write_text(json.dumps(key))
    return f"      service_account_file: {path}\n"


def gmail_target(sim: GmailSimulator, address: str, credentials: str, extra: str = "") -> Target:
    text = f"targets:\n  - name: t\n{extra}" + gmail_section(sim, address, credentials)
    return parse(text).targets[0]


def sa_target(sim: GmailSimulator, directory: Path, address: str | None = None) -> Target:
    address = address or mailbox(sim)
    return gmail_target(sim, address, service_account(sim, address, directory))


API = "/gmail/v1/*"
BUDGET = 10
"""Gmail API requests a round trip may make in the default configuration (empty mailbox)."""


def lists(sim: GmailSimulator) -> list[dict[str, str]]:
    """The query of every users.messages.list request so far."""
    return [
        dict(r.query) for r in sim.requests if r.method == "GET" and r.path.endswith("/messages")
    ]


@pytest.mark.parametrize("tokens", ["strict", "punctuation"])
async def test_the_probe_is_found_whether_or_not_words_split_at_dots(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path, tokens: str
) -> None:
    """Gmail matches whole words and does not say whether the probe id splits at its dots:
    the search holds only the subject's fixed words, so the probe is found either way, within
    the request budget, and never by a piece of its id."""
    address = mailbox(gmail)
    probe_target = sa_target(gmail, tmp_path, address)
    with gmail.reading(tokens=tokens):
        for _ in range(2):
            before = gmail.count_requests(pattern=API)
            result = await probes.run(probe_target, Check.ROUNDTRIP, context, time_limit=5)
            assert result.success, result
            used = gmail.count_requests(pattern=API) - before
            assert used == result.found.requests <= BUDGET, used
    assert gmail.messages(address) == []
    assert all(fixed_ids(context).prefix not in query.get("q", "") for query in lists(gmail))


async def test_late_arrivals_after_a_restart(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    """Probes that arrived hours ago, after their round trip gave up and before a restart (one
    in the Inbox, one in Spam), are found, counted late and deleted; a lookalike stays."""
    address = mailbox(gmail)
    probe_target = sa_target(gmail, tmp_path, address)
    earlier = ProbeIds(context.ids.key)
    hours_ago = datetime.now(UTC) - timedelta(hours=3)
    for labels in (("INBOX", "UNREAD"), ("SPAM", "UNREAD")):
        probe_id = earlier.new("t")
        gmail.put_message(
            address,
            labels,
            subject=message.subject(probe_id),
            headers=[(PROBE_HEADER, probe_id)],
            received=hours_ago,
        )
    forged = f"{earlier.prefix}.{'0' * 16}.{'1' * 24}"
    lookalike = gmail.put_message(
        address, subject=message.subject(forged), headers=[(PROBE_HEADER, forged)]
    )
    restarted = probe_context(ProbeIds(context.ids.key))
    try:
        result = await probes.run(probe_target, Check.ROUNDTRIP, restarted, time_limit=5)
    finally:
        await restarted.close()
    assert result.success, result
    assert (result.found.late_arrivals, result.found.cleanup_deleted) == (2, 3)
    assert result.found.lookalikes == 1
    assert [m.id for m in gmail.messages(address)] == [lookalike.id]


async def test_roundtrip_with_a_service_account(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    address = mailbox(gmail)
    for n in range(50):
        gmail.put_message(address, subject=f"ordinary mail {n}")
    for n in range(5):
        forged = f"{fixed_ids(context).prefix}.{n:016x}.{'0' * 24}"
        gmail.put_message(
            address,
            subject=f"mailbox-exporter probe {forged}",
            headers=[("X-Mailbox-Probe-Id", forged)],
        )
    before = gmail.count_requests(pattern="/gmail/v1/*")
    result = await probes.run(sa_target(gmail, tmp_path, address), Check.ROUNDTRIP, context)
    assert result.success, result
    assert result.found.delivery_seconds is not None and result.found.delivery_seconds > 0
    assert {Phase.GMAIL_AUTH, Phase.GMAIL_SELECT, Phase.GMAIL_SEND, Phase.DELIVERY} <= set(
        result.phases
    )
    assert result.found.lookalikes == 5 and result.found.cleanup_deleted == 1
    assert result.found.requests == gmail.count_requests(pattern="/gmail/v1/*") - before
    left = gmail.messages(address)
    assert len(left) == 55
    assert not [m for m in left if "SENT" in m.labels or "TRASH" in m.labels]
    grant = [r.form() for r in gmail.requests if r.path == "/token"][-1]
    claims = jwt.decode(grant["assertion"], options={"verify_signature": False})
    assert claims["sub"] == address and claims["scope"] == FULL_SCOPE
    assert claims["aud"] == gmail.token_url


async def test_roundtrip_and_login_with_a_refresh_token(
    gmail: GmailSimulator, context: ProbeContext
) -> None:
    address = mailbox(gmail)
    probe_target = gmail_target(gmail, address, refresh_token(gmail, address))
    assert (await probes.run(probe_target, Check.ROUNDTRIP, context)).success
    login = await probes.run(probe_target, Check.GMAIL_LOGIN, context)
    assert login.success and set(login.phases) == {Phase.GMAIL_AUTH, Phase.GMAIL_SELECT}
    assert gmail.messages(address) == []


async def test_sending_to_another_mailbox_leaves_no_sent_copy(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    sender, receiver = mailbox(gmail), mailbox(gmail)
    text = (
        "targets:\n  - name: t\n    sender: gmail\n    receiver: imap\n"
        f"    gmail:\n      mailbox: {sender}\n{service_account(gmail, sender, tmp_path)}"
        f"      api_url: {gmail.url}\n"
        f"    to: {receiver}\n    checks: [gmail_login]\n"
    )
    probe_target = parse(text).targets[0]
    trace = Trace(deadline=time.monotonic() + 10)
    sent = registry.sender("gmail", probe_target.section("gmail"), trace, context.tokens)
    await sent.send(compose(probe_target, fixed_ids(context).new("t")))
    assert gmail.messages(sender) == [] and not trace.found.cleanup_failed
    gmail.flush()


def spam_rule(message: object) -> bool:
    return "mailbox-exporter probe" in str(message["Subject"])  # type: ignore[index]


async def test_probe_in_spam_is_junk_at_once_and_cleaned(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    probe_target = sa_target(gmail, tmp_path)
    gmail.junk_rule = spam_rule
    try:
        result = await probes.run(probe_target, Check.ROUNDTRIP, context, time_limit=10)
    finally:
        gmail.junk_rule = None
    assert (result.reason, result.phase) == (Reason.JUNK, Phase.DELIVERY), result
    assert result.duration < 5, "found at the next look, not at the timeout"
    assert result.found.junk and result.found.delivery_seconds is not None
    assert gmail.messages(probe_target.mail_to) == []
    spam = [query for query in lists(gmail) if query.get("labelIds") == "SPAM"]
    assert spam and all(query.get("includeSpamTrash") == "true" for query in spam)
    assert not [query for query in lists(gmail) if "in:spam" in query.get("q", "")]


async def test_500_messages_within_the_request_budget(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    address = mailbox(gmail)
    for n in range(500):
        gmail.put_message(address, subject=f"ordinary mail {n}")
    result = await probes.run(sa_target(gmail, tmp_path, address), Check.ROUNDTRIP, context)
    assert result.success and len(gmail.messages(address)) == 500
    assert result.found.requests <= 20, result.found.requests


@pytest.mark.parametrize(
    ("pattern", "status", "reason_code", "headers", "reason", "phase", "retry"),
    [
        ("*/profile", 429, "rateLimitExceeded", {"Retry-After": "30"}, Reason.THROTTLED,
         Phase.GMAIL_SELECT, 30.0),
        ("*/messages/send", 403, "userRateLimitExceeded", {}, Reason.THROTTLED,
         Phase.GMAIL_SEND, None),
        ("*/profile", 403, "rateLimitExceeded", {}, Reason.THROTTLED, Phase.GMAIL_SELECT, None),
        ("*/profile", 401, "authError", {}, Reason.AUTH_REJECTED, Phase.GMAIL_SELECT, None),
        ("*/profile", 403, "insufficientPermissions", {}, Reason.AUTH_REJECTED,
         Phase.GMAIL_SELECT, None),
        ("*/profile", 400, "failedPrecondition", {}, Reason.MAILBOX_UNAVAILABLE,
         Phase.GMAIL_SELECT, None),
        ("*/profile", 500, "backendError", {}, Reason.UNAVAILABLE, Phase.GMAIL_SELECT, None),
        ("*/messages/send", 503, "backendError", {"Retry-After": "5"}, Reason.UNAVAILABLE,
         Phase.GMAIL_SEND, 5.0),
        ("*/messages", 502, "badGateway", {}, Reason.UNAVAILABLE, Phase.DELIVERY, None),
    ],
)  # fmt: skip
async def test_classified_answers(
    gmail: GmailSimulator,
    context: ProbeContext,
    tmp_path: Path,
    pattern: str,
    status: int,
    reason_code: str,
    headers: dict[str, str],
    reason: Reason,
    phase: Phase,
    retry: float | None,
) -> None:
    probe_target = sa_target(gmail, tmp_path)
    gmail.fail(
        f"/gmail/v1/users/{probe_target.mail_to}{pattern.removeprefix('*')}",
        status,
        google_error(status, reason_code, f"simulated {reason_code}"),
        headers=headers,
        times=1,
    )
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (reason, phase), result.detail
    assert result.found.retry_after == retry
    assert result.detail.startswith(f"{status} {reason_code}: simulated {reason_code}")
    assert (await probes.run(sa_target(gmail, tmp_path), Check.ROUNDTRIP, context)).success


async def test_quota_spent_is_throttled_with_its_retry_time(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    probe_target = sa_target(gmail, tmp_path)
    gmail.quota_per_minute = 0
    try:
        result = await probes.run(probe_target, Check.GMAIL_LOGIN, context)
    finally:
        gmail.quota_per_minute = 15_000
    assert (result.reason, result.phase) == (Reason.THROTTLED, Phase.GMAIL_SELECT)
    assert result.found.retry_after is not None and 0 < result.found.retry_after <= 61


async def test_mail_service_not_enabled_is_mailbox_unavailable(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    address = mailbox(gmail)
    gmail.set_mailbox_state(address, enabled=False)
    result = await probes.run(sa_target(gmail, tmp_path, address), Check.GMAIL_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.GMAIL_SELECT)
    assert "Mail service not enabled" in result.detail


async def test_insufficient_scope_is_auth_rejected(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    """A token that may only modify cannot delete permanently: refused at cleanup, the
    round trip still succeeds and counts the failed cleanup."""
    address = mailbox(gmail)
    credentials = service_account(gmail, address, tmp_path, (MODIFY_SCOPE,))
    credentials += f"      scope: {MODIFY_SCOPE}\n"
    result = await probes.run(gmail_target(gmail, address, credentials), Check.ROUNDTRIP, context)
    assert result.success and result.found.cleanup_failed


async def test_delegation_not_granted_is_auth_rejected(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    """Google refuses the token itself (401 unauthorized_client) when domain-wide delegation
    is missing: the credentials are refused (auth_rejected), not the token service broken."""
    address = mailbox(gmail)
    key = gmail.create_service_account("undelegated@project.iam.example", "199999999")
    (tmp_path / "sa.json").write_text(json.dumps(key))
    credentials = f"      service_account_file: {tmp_path / 'sa.json'}\n"
    result = await probes.run(gmail_target(gmail, address, credentials), Check.GMAIL_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.AUTH_REJECTED, Phase.GMAIL_AUTH)
    assert "unauthorized_client" in result.detail


async def test_expired_token_is_auth_rejected_then_renewed(
    gmail: GmailSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    probe_target = sa_target(gmail, tmp_path)
    assert (await probes.run(probe_target, Check.GMAIL_LOGIN, context)).success
    gmail.expire_tokens()
    result = await probes.run(probe_target, Check.GMAIL_LOGIN, context)
    assert (result.reason, result.found.login_refused) == (Reason.AUTH_REJECTED, "gmail")
    assert (await probes.run(probe_target, Check.GMAIL_LOGIN, context)).success


def test_service_account_assertion(gmail: GmailSimulator, tmp_path: Path) -> None:
    address = mailbox(gmail)
    oauth2 = sa_target(gmail, tmp_path, address).section("gmail").oauth2
    assert oauth2 is not None and oauth2.grant == "jwt_bearer"
    form = request_form(oauth2, now=1_800_000_000)
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    header = jwt.get_unverified_header(form["assertion"])
    claims = jwt.decode(form["assertion"], options={"verify_signature": False})
    assert header["alg"] == "RS256" and header["kid"]
    assert claims == {
        "iss": oauth2.client_id,
        "sub": address,
        "scope": FULL_SCOPE,
        "aud": gmail.token_url,
        "iat": 1_800_000_000,
        "exp": 1_800_000_600,
    }


async def test_no_secret_on_any_surface(
    gmail: GmailSimulator,
    context: ProbeContext,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    address = mailbox(gmail)
    targets = [
        sa_target(gmail, tmp_path, address),
        gmail_target(gmail, address, refresh_token(gmail, address)),
    ]
    results = []
    for probe_target in targets:
        for check in (Check.ROUNDTRIP, Check.GMAIL_LOGIN):
            results.append(await probes.run(probe_target, check, context, transcript=True))
        echo = "echo " + " ".join(probe_target.secrets())
        gmail.fail("/token", 400, {"error": "invalid_grant", "error_description": echo})
        context.tokens.forget(probe_target.section("gmail").oauth2)  # type: ignore[arg-type]
        results.append(await probes.run(probe_target, Check.GMAIL_LOGIN, context, transcript=True))
        gmail.clear_faults()
    assert [r.success for r in results] == [True, True, False] * 2
    assert all("<redacted>" in results[i].detail for i in (2, 5))
    shown = "\n".join(
        [repr(r) + ondemand.report(r) + metrics.render_result(r) for r in results]
        + [record.getMessage() + str(record.__dict__) for record in caplog.records]
        + [repr(t) for t in targets]
    )
    tokens = [t for r in gmail.requests for t in [r.headers.get("authorization", "")[7:]] if t]
    secrets = {*targets[0].secrets(), *targets[1].secrets(), *tokens}
    assert len(tokens) > 5 and any("PRIVATE KEY" in s for s in secrets)
    for secret in secrets:
        assert secret not in shown, f"a secret leaked: {secret[:8]}..."


# ---------------------------------------------------------------- configuration of API sections


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "    graph: {mailbox: a@b.example, tenant: t, client_id: c}\n",
            "line 3: targets[0].graph: set exactly one of client_secret, client_secret_file, "
            "client_secret_env (found none)",
        ),
        (
            "    graph: {mailbox: a@b.example, tenant: t, client_id: c, client_secret: s,\n"
            "            certificate_file: x.pem, private_key_file: k.pem}\n",
            "line 3: targets[0].graph: set either a client secret or certificate_file, not both",
        ),
        (
            "    graph: {mailbox: a@b.example, tenant: t, client_id: c, certificate_file: x}\n",
            "line 3: targets[0].graph: set both certificate_file and private_key_file",
        ),
        (
            "    graph: {mailbox: a@b.example, tenant: t, client_id: c, client_secret: s,\n"
            "            graph_url: 'ftp://x'}\n",
            "targets[0].graph.graph_url: expected an http(s) URL without a query, got 'ftp://x'",
        ),
        (
            "    graph: {mailbox: a@b.example, tenant: t, client_id: c, client_secret: s,\n"
            "            search: subject}\n",
            "line 4: targets[0].graph.search: is no longer used",
        ),
        (
            "    gmail: {mailbox: a@b.example}\n",
            "line 3: targets[0].gmail: set exactly one of service_account_file, oauth2",
        ),
        (
            "    gmail: {mailbox: a@b.example, service_account_file: missing.json}\n",
            "targets[0].gmail.service_account_file: cannot read",
        ),
        (
            "    gmail: {mailbox: a@b.example, oauth2: {client_id: c, client_secret: s}}\n",
            "targets[0].gmail.oauth2: set exactly one of refresh_token, refresh_token_file, "
            "refresh_token_env (found none)",
        ),
    ],
)
def test_section_mistakes_name_their_place(section: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"targets:\n  - name: a\n{section}", base_dir=tmp_path)
    assert message in str(caught.value)


def test_bad_key_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "sa.json").write_text(json.dumps({"type": "service_account"}))
    (tmp_path / "not.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="the key file has no client_email"):
        parse(
            "targets:\n  - name: a\n    gmail: {mailbox: a@b.example, "
            "service_account_file: sa.json}\n",
            base_dir=tmp_path,
        )
    with pytest.raises(ConfigError, match="certificate_file: expected a certificate in PEM"):
        parse(
            "targets:\n  - name: a\n    graph: {mailbox: a@b.example, tenant: t, client_id: c, "
            "certificate_file: not.pem, private_key_file: not.pem}\n",
            base_dir=tmp_path,
        )


def test_api_sections_default_their_roles_and_checks(tmp_path: Path) -> None:
    only_graph = parse(
        "targets:\n  - name: a\n    graph: {mailbox: a@b.example, tenant: t, client_id: c, "
        "client_secret: s}\n"
    ).targets[0]
    assert (only_graph.sender, only_graph.receiver) == ("graph", "graph")
    assert only_graph.checks == (Check.ROUNDTRIP, Check.GRAPH_LOGIN)
    assert only_graph.mail_from == only_graph.mail_to == "a@b.example"
    section = only_graph.section("graph")
    assert (section.host, section.port, section.tls) == ("graph.microsoft.com", 443, "implicit")
    oauth2 = section.oauth2
    assert oauth2 is not None
    assert oauth2.token_url == "https://login.microsoftonline.com/t/oauth2/v2.0/token"
    assert oauth2.scope == "https://graph.microsoft.com/.default"
    national = (
        parse(
            "targets:\n  - name: a\n    graph: {mailbox: a@b.example, tenant: t, client_id: c, "
            "client_secret: s, graph_url: 'https://graph.microsoft.us/v1.0', "
            "login_url: 'https://login.microsoftonline.us', scope: 'https://graph.microsoft.us/.default'}\n"
        )
        .targets[0]
        .section("graph")
    )
    assert national.oauth2 is not None
    assert national.oauth2.token_url == "https://login.microsoftonline.us/t/oauth2/v2.0/token"
    assert national.host == "graph.microsoft.us"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(["id", "payload"]),
        _json
        | st.fixed_dictionaries(
            {"headers": _json | st.lists(st.fixed_dictionaries({"name": _json, "value": _json}))}
        ),
    )
)
@settings(max_examples=300, derandomize=True, deadline=None)
def test_any_message_resource_reads_as_headers_or_none(item: dict[str, Any]) -> None:
    """users.messages.get answers come from the API: whatever the JSON holds, a header reads
    as a string, never an exception."""
    for name in transport.METADATA:
        assert isinstance(transport._header(item, name), str)


def test_the_query_holds_only_the_subjects_fixed_words() -> None:
    probe_id = ProbeIds().new("t")
    assert message.subject(probe_id) == f"{transport.WORDS} {probe_id}"
    assert transport.QUERY == 'subject:"mailbox-exporter probe" newer_than:1d'
