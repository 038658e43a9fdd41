"""The Graph transport against the Graph simulator: round trips in every reading of the
references the simulator offers (x-headers never promoted, promoted from the second message,
subjects tagged by a transport rule, national clouds without permanentDelete), late arrivals
after a restart, login checks, every classified answer in its phase, paging within the
request budget, and no secret shown."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import message, probes
from exporter.config import ConfigError, Target, parse
from exporter.config.model import GRAPH_CLOUDS, GraphCloud, GraphConfig
from exporter.message import PROBE_HEADER, ProbeIds
from exporter.outcome import Check, Phase, Reason
from exporter.probes.context import ProbeContext
from exporter.result import ProbeResult
from exporter.serve import metrics, ondemand
from exporter.transports import graph as transport
from exporter.transports.oauth import request_form
from testing.simulators.graph import CLOUD_GRAPH, GraphSimulator, self_signed_certificate
from testing.targets import fixed_ids, graph_section, probe_context
from testing.targets import graph_mailbox as mailbox
from testing.targets import graph_probe_copies as probe_copies
from testing.targets import graph_secret_app as secret_app

TENANT = "00000000-0000-0000-0000-0000000000aa"
DOMAIN = "contoso.example"
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def graph() -> Iterator[GraphSimulator]:
    sim = GraphSimulator(tenant=TENANT, domains=(DOMAIN,), delivery_delay=0.1)
    sim.start_in_thread()
    try:
        yield sim
    finally:
        sim.stop()


def certificate_app(
    sim: GraphSimulator, mailbox: str, directory: Path, algorithm: str | None = None
) -> str:
    key_pem, cert_pem = self_signed_certificate()
    number = next(_numbers)
    (directory / "app.crt").write_bytes(cert_pem)
    (directory / "app.key").write_bytes(key_pem)
    sim.add_app(f"cert-app-{number}", certificate=cert_pem, mailboxes=[mailbox])
    chosen = f"      assertion_algorithm: {algorithm}\n" if algorithm else ""
    return (
        f"      client_id: cert-app-{number}\n"
        f"      certificate_file: {directory / 'app.crt'}\n"
        f"      private_key_file: {directory / 'app.key'}\n{chosen}"
    )


def target(sections: str, extra: str = "", base_dir: Path | None = None) -> Target:
    text = f"targets:\n  - name: t\n{extra}{sections}"
    return parse(text, base_dir=base_dir).targets[0]


def graph_target(sim: GraphSimulator, address: str | None = None, extra: str = "") -> Target:
    address = address or mailbox(sim)
    return target(graph_section(sim, address, secret_app(sim, address)), extra)


def lookalike_headers(context: ProbeContext) -> list[tuple[str, str]]:
    return [
        ("X-Mailbox-Probe-Id", f"{fixed_ids(context).prefix}.{n:016x}.{'0' * 24}") for n in range(5)
    ]


API = "/v1.0/*"
"""The Graph API's requests (not the token endpoint's), as the simulator records them."""
BUDGET = 10
"""Graph requests a round trip may make in the default configuration."""


async def test_roundtrip_finds_its_probe_and_deletes_only_it(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    address = mailbox(graph)
    for n in range(50):
        graph.put_message(address, subject=f"ordinary mail {n}", body="hello")
    forged = lookalike_headers(context)
    for header in forged:
        graph.put_message(address, subject=f"mailbox-exporter probe {header[1]}", headers=[header])
    before = graph.count_requests(pattern="/v1.0/*")
    result = await probes.run(graph_target(graph, address), Check.ROUNDTRIP, context)
    assert result.success, result
    assert result.found.delivery_seconds is not None and result.found.delivery_seconds > 0
    assert {Phase.GRAPH_AUTH, Phase.GRAPH_SELECT, Phase.GRAPH_SEND, Phase.DELIVERY} <= set(
        result.phases
    )
    assert Phase.GRAPH_FETCH in result.phases and Phase.GRAPH_CLEANUP in result.phases
    assert result.found.lookalikes == 5 and result.found.cleanup_deleted == 1
    assert result.found.requests == graph.count_requests(pattern="/v1.0/*") - before
    left = graph.messages(address)
    assert len(left) == 55 and {graph.folder_name(address, m) for m in left} == {"inbox"}
    assert sorted(m.header("X-Mailbox-Probe-Id") or "" for m in left)[-5:] == sorted(
        v for _, v in forged
    )
    assert len(probe_copies(graph, address)) == 5  # the lookalikes, nothing else
    sends = [r for r in graph.requests if r.path.endswith(f"/users/{address}/sendMail")]
    assert b'"saveToSentItems": false' in sends[-1].body
    deletes = [r for r in graph.requests if r.method == "DELETE"]
    assert not deletes, "DELETE would move the probe to Deleted Items"


async def test_certificate_credentials(
    graph: GraphSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    address = mailbox(graph)
    probe_target = target(graph_section(graph, address, certificate_app(graph, address, tmp_path)))
    result = await probes.run(probe_target, Check.ROUNDTRIP, context, transcript=True)
    assert result.success, result
    assert (await probes.run(probe_target, Check.GRAPH_LOGIN, context)).success
    form = [r.form() for r in graph.requests if r.path.endswith("/oauth2/v2.0/token")][-1]
    assert "client_secret" not in form and form["client_assertion"].count(".") == 2
    assert probe_copies(graph, address) == []


async def test_certificate_assertions_are_ps256_by_default_rs256_when_chosen(
    graph: GraphSimulator, context: ProbeContext, tmp_path: Path
) -> None:
    """PS256 with x5t#S256 passes a token endpoint that no longer takes RS256; RS256 with x5t,
    when configured, passes one that still does."""
    address = mailbox(graph)
    default = target(graph_section(graph, address, certificate_app(graph, address, tmp_path)))
    with graph.reading(rs256_assertions=False):
        result = await probes.run(default, Check.GRAPH_LOGIN, context)
    assert result.success, result
    legacy_dir = tmp_path / "legacy"
    legacy_dir.mkdir()
    legacy = target(
        graph_section(graph, address, certificate_app(graph, address, legacy_dir, "RS256"))
    )
    result = await probes.run(legacy, Check.GRAPH_LOGIN, context)
    assert result.success, result
    with graph.reading(rs256_assertions=False):
        legacy_oauth2 = legacy.section("graph").oauth2
        assert legacy_oauth2 is not None
        context.tokens.forget(legacy_oauth2)
        refused = await probes.run(legacy, Check.GRAPH_LOGIN, context)
    assert refused.reason is Reason.AUTH_REJECTED and "AADSTS5002738" in refused.detail


@pytest.mark.parametrize(
    ("chosen", "algorithm", "header"),
    [(None, "PS256", "x5t#S256"), ("PS256", "PS256", "x5t#S256"), ("RS256", "RS256", "x5t")],
)
def test_client_assertion_claims(
    graph: GraphSimulator, tmp_path: Path, chosen: str | None, algorithm: str, header: str
) -> None:
    import jwt

    address = mailbox(graph)
    credentials = certificate_app(graph, address, tmp_path, chosen)
    section = target(graph_section(graph, address, credentials))
    config = section.section("graph").oauth2
    assert config is not None
    form = request_form(config, now=1_800_000_000)
    header_fields = jwt.get_unverified_header(form["client_assertion"])
    claims = jwt.decode(form["client_assertion"], options={"verify_signature": False})
    assert header_fields["alg"] == algorithm
    assert header_fields.keys() - {"alg", "typ"} == {header}
    assert claims["aud"] == graph.token_url
    assert claims["iss"] == claims["sub"] == config.client_id
    assert claims["nbf"] == 1_800_000_000 < claims["exp"] and claims["jti"]


@pytest.mark.parametrize(
    ("algorithm", "message"),
    [
        ("ES256", "assertion_algorithm: expected one of PS256, RS256, got 'ES256'"),
        ("rs256", "assertion_algorithm: expected one of PS256, RS256, got 'rs256'"),
    ],
)
def test_assertion_algorithm_is_checked(
    graph: GraphSimulator, tmp_path: Path, algorithm: str, message: str
) -> None:
    address = mailbox(graph)
    with pytest.raises(ConfigError, match=message):
        target(graph_section(graph, address, certificate_app(graph, address, tmp_path, algorithm)))
    with pytest.raises(ConfigError, match="applies to certificate credentials only"):
        target(
            graph_section(
                graph, address, "      assertion_algorithm: PS256\n" + secret_app(graph, address)
            )
        )


async def test_login_check(graph: GraphSimulator, context: ProbeContext) -> None:
    result = await probes.run(graph_target(graph), Check.GRAPH_LOGIN, context)
    assert result.success, result
    assert set(result.phases) == {Phase.GRAPH_AUTH, Phase.GRAPH_SELECT}
    assert result.found.requests == 1 and "graph" in result.found.token_expiry


def graph_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def _login(sim: GraphSimulator, context: ProbeContext, **app: Any) -> ProbeResult:
    address = mailbox(sim)
    probe_target = target(graph_section(sim, address, secret_app(sim, address, **app)))
    return await probes.run(probe_target, Check.GRAPH_LOGIN, context)


async def test_expired_token_is_auth_rejected_and_forgotten(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    probe_target = graph_target(graph)
    assert (await probes.run(probe_target, Check.GRAPH_LOGIN, context)).success
    graph.expire_tokens()
    result = await probes.run(probe_target, Check.GRAPH_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.AUTH_REJECTED, Phase.GRAPH_SELECT)
    assert "InvalidAuthenticationToken" in result.detail and "request-id" in result.detail
    assert result.found.login_refused == "graph"
    assert (await probes.run(probe_target, Check.GRAPH_LOGIN, context)).success


async def test_access_denied_is_auth_rejected(graph: GraphSimulator, context: ProbeContext) -> None:
    result = await _login(graph, context, permissions=("Mail.Send",))
    assert (result.reason, result.phase) == (Reason.AUTH_REJECTED, Phase.GRAPH_SELECT)
    assert result.detail.startswith("403 ErrorAccessDenied: Access is denied")


async def test_wrong_secret_is_auth_rejected(graph: GraphSimulator, context: ProbeContext) -> None:
    address = mailbox(graph)
    graph.add_app("wrong-secret-app", secret="the-right-one", mailboxes=[address])
    credentials = "      client_id: wrong-secret-app\n      client_secret: not-the-right-one\n"
    probe_target = target(graph_section(graph, address, credentials))
    result = await probes.run(probe_target, Check.GRAPH_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.AUTH_REJECTED, Phase.GRAPH_AUTH)
    assert "AADSTS7000215" in result.detail and result.found.token_failed == {"graph"}
    assert "not-the-right-one" not in result.detail


async def test_unlicensed_mailbox_is_mailbox_unavailable(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    address = mailbox(graph)
    graph.set_mailbox_state(address, licensed=False)
    result = await probes.run(graph_target(graph, address), Check.GRAPH_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.GRAPH_SELECT)
    assert "MailboxNotEnabledForRESTAPI" in result.detail


async def test_unknown_user_is_mailbox_unavailable(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    address = f"nobody{next(_numbers)}@{DOMAIN}"
    graph.add_mailbox(address)  # the app may use it, then the user goes away
    probe_target = graph_target(graph, address)
    graph._mailboxes.pop(address)  # the simulator has no removal helper
    result = await probes.run(probe_target, Check.GRAPH_LOGIN, context)
    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.GRAPH_SELECT)


async def test_full_mailbox_is_mailbox_unavailable_when_sending(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    address = mailbox(graph)
    graph.set_mailbox_state(address, quota_exceeded=True)
    result = await probes.run(graph_target(graph, address), Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.MAILBOX_UNAVAILABLE, Phase.GRAPH_SEND)
    assert "ErrorQuotaExceeded" in result.detail


async def test_send_as_denied_is_send_rejected(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    probe_target = graph_target(graph, extra=f"    from: someone-else@{DOMAIN}\n")
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (Reason.SEND_REJECTED, Phase.GRAPH_SEND)
    assert "ErrorSendAsDenied" in result.detail


@pytest.mark.parametrize(
    ("pattern", "status", "code", "headers", "reason", "phase", "retry"),
    [
        (
            "*/mailFolders/inbox",
            429,
            "ApplicationThrottled",
            {"Retry-After": "30"},
            Reason.THROTTLED,
            Phase.GRAPH_SELECT,
            30.0,
        ),
        (
            "*/sendMail",
            429,
            "TooManyRequests",
            {"Retry-After": "7"},
            Reason.THROTTLED,
            Phase.GRAPH_SEND,
            7.0,
        ),
        (
            "*/mailFolders/inbox",
            503,
            "serviceNotAvailable",
            {"Retry-After": "12"},
            Reason.UNAVAILABLE,
            Phase.GRAPH_SELECT,
            12.0,
        ),
        (
            "*/mailFolders/inbox",
            502,
            "BadGateway",
            {},
            Reason.UNAVAILABLE,
            Phase.GRAPH_SELECT,
            None,
        ),
        ("*/sendMail", 504, "GatewayTimeout", {}, Reason.UNAVAILABLE, Phase.GRAPH_SEND, None),
        (
            "*/sendMail",
            403,
            "ErrorMessageSubmissionBlocked",
            {},
            Reason.SEND_REJECTED,
            Phase.GRAPH_SEND,
            None,
        ),
        (
            "*/mailFolders/inbox/messages",
            503,
            "serviceNotAvailable",
            {},
            Reason.UNAVAILABLE,
            Phase.DELIVERY,
            None,
        ),
    ],
)
async def test_classified_answers(
    graph: GraphSimulator,
    context: ProbeContext,
    pattern: str,
    status: int,
    code: str,
    headers: dict[str, str],
    reason: Reason,
    phase: Phase,
    retry: float | None,
) -> None:
    probe_target = graph_target(graph)
    address = probe_target.mail_to
    graph.fail(
        f"/v1.0/users/{address}{pattern.removeprefix('*')}",
        status,
        graph_error(code, f"simulated {code}"),
        headers=headers,
        times=1,
    )
    result = await probes.run(probe_target, Check.ROUNDTRIP, context)
    assert (result.reason, result.phase) == (reason, phase), result.detail
    assert result.found.retry_after == retry
    assert result.detail.startswith(f"{status} {code}: simulated {code} (request-id ")
    other = await probes.run(graph_target(graph), Check.ROUNDTRIP, context)
    assert other.success and other.found.retry_after is None


async def test_500_messages_within_the_request_budget(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    """Forty lookalikes newer than the probe put it on the second page of a look; it is still
    found, and a look reads at most PAGES pages of PAGE_SIZE."""
    address = mailbox(graph)
    for n in range(460):
        graph.put_message(address, subject=f"ordinary mail {n}")
    later = datetime.now(UTC) + timedelta(hours=1)
    for n in range(40):
        forged = f"{fixed_ids(context).prefix}.{n:016x}.{'1' * 24}"
        graph.put_message(
            address,
            subject=f"mailbox-exporter probe {forged}",
            headers=[("X-Mailbox-Probe-Id", forged)],
            received=later,
        )
    result = await probes.run(graph_target(graph, address), Check.ROUNDTRIP, context)
    assert result.success, result
    assert result.found.lookalikes == 40 and len(graph.messages(address)) == 500
    assert result.found.requests <= 20, result.found.requests
    assert transport.PAGE_SIZE * (transport.PAGES - 1) < 41 <= transport.PAGE_SIZE * transport.PAGES


READINGS = [
    pytest.param({"x_header_promotion": "never"}, id="x-headers never promoted"),
    pytest.param({"x_header_promotion": "after-first"}, id="promoted from the second message"),
    pytest.param({"subject_tag": "[EXTERNAL] "}, id="subjects tagged by a transport rule"),
]


@pytest.mark.parametrize("modes", READINGS)
async def test_the_default_configuration_in_every_reading(
    graph: GraphSimulator, context: ProbeContext, modes: dict[str, Any]
) -> None:
    """Whether Exchange keeps X- headers as extended properties, and what a transport rule
    does to subjects, do not matter: the mailbox's first probe and a later one are found,
    verified and deleted within the request budget."""
    address = mailbox(graph)
    probe_target = graph_target(graph, address)
    with graph.reading(**modes):
        for _ in range(2):
            before = graph.count_requests(pattern=API)
            result = await probes.run(probe_target, Check.ROUNDTRIP, context, time_limit=5)
            assert result.success, result
            assert result.found.cleanup_deleted == 1 and result.found.lookalikes == 0
            used = graph.count_requests(pattern=API) - before
            assert used == result.found.requests <= BUDGET, used
    assert probe_copies(graph, address) == []


async def test_late_arrivals_after_a_restart_in_the_strictest_reading(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    """Probes that arrived after their round trip gave up, hours ago and before a restart
    (one in the Inbox, one in Junk Email), are found without x-header promotion, counted late
    and deleted; a lookalike stays."""
    address = mailbox(graph)
    probe_target = graph_target(graph, address)
    earlier = ProbeIds(context.ids.key)
    hours_ago = datetime.now(UTC) - timedelta(hours=3)
    for folder in ("inbox", "junkemail"):
        probe_id = earlier.new("t")
        graph.put_message(
            address,
            folder,
            subject=message.subject(probe_id),
            headers=[(PROBE_HEADER, probe_id)],
            received=hours_ago,
        )
    forged = f"{earlier.prefix}.{'0' * 16}.{'1' * 24}"
    graph.put_message(address, subject="hello", headers=[(PROBE_HEADER, forged)])
    restarted = probe_context(ProbeIds(context.ids.key))
    try:
        with graph.reading(x_header_promotion="never", subject_tag="[EXTERNAL] "):
            result = await probes.run(probe_target, Check.ROUNDTRIP, restarted, time_limit=5)
    finally:
        await restarted.close()
    assert result.success, result
    assert (result.found.late_arrivals, result.found.cleanup_deleted) == (2, 3)
    assert result.found.requests <= BUDGET
    assert probe_copies(graph, address) == [("inbox", "hello")]


@pytest.mark.parametrize("cloud", ["usgov", "usgov-dod", "china"])
async def test_national_clouds_delete_without_permanent_delete(
    graph: GraphSimulator, context: ProbeContext, cloud: GraphCloud
) -> None:
    """Where permanentDelete does not exist, a probe is moved to Deleted Items and deleted
    there: nothing is left in any folder. The token is asked for the cloud's Graph."""
    address = mailbox(graph)
    credentials = secret_app(graph, address) + f"      cloud: {cloud}\n"
    probe_target = target(graph_section(graph, address, credentials))
    oauth2 = probe_target.section("graph").oauth2
    assert oauth2 is not None and oauth2.scope == CLOUD_GRAPH[cloud] + "/.default"
    with graph.reading(cloud=cloud):
        before = graph.count_requests(pattern=API)
        refused = graph.count_requests(pattern="*/permanentDelete")
        result = await probes.run(probe_target, Check.ROUNDTRIP, context, time_limit=5)
        assert result.success, result
        assert graph.count_requests(pattern="*/permanentDelete") == refused
        assert graph.count_requests(pattern=API) - before <= BUDGET
    assert result.found.cleanup_deleted == 1 and not result.found.cleanup_failed
    assert graph.messages(address) == []


@pytest.mark.parametrize("cloud", get_args(GraphCloud))
def test_a_cloud_sets_the_endpoints_and_the_scope(cloud: GraphCloud) -> None:
    section = (
        parse(
            "targets:\n  - name: a\n    graph: {mailbox: a@b.example, tenant: t, client_id: c, "
            f"client_secret: s, cloud: {cloud}}}\n"
        )
        .targets[0]
        .section("graph")
    )
    assert isinstance(section, GraphConfig)
    settings = GRAPH_CLOUDS[cloud]
    assert section.graph_url == settings.graph + "/v1.0" and section.cloud == cloud
    assert section.oauth2 is not None
    assert section.oauth2.token_url == settings.login + "/t/oauth2/v2.0/token"
    assert section.oauth2.scope == settings.graph + "/.default" == CLOUD_GRAPH[cloud] + "/.default"
    assert settings.permanent_delete is (cloud == "global")


def test_the_clouds_hosts_and_explicit_endpoints_win() -> None:
    hosts = {
        cloud: (GRAPH_CLOUDS[cloud].graph, GRAPH_CLOUDS[cloud].login) for cloud in GRAPH_CLOUDS
    }
    assert hosts == {
        "global": ("https://graph.microsoft.com", "https://login.microsoftonline.com"),
        "usgov": ("https://graph.microsoft.us", "https://login.microsoftonline.us"),
        "usgov-dod": ("https://dod-graph.microsoft.us", "https://login.microsoftonline.us"),
        "china": ("https://microsoftgraph.chinacloudapi.cn", "https://login.chinacloudapi.cn"),
    }
    section = (
        parse(
            "targets:\n  - name: a\n    graph: {mailbox: a@b.example, tenant: t, client_id: c, "
            "client_secret: s, cloud: china, graph_url: 'http://127.0.0.1:1/v1.0', "
            "login_url: 'http://127.0.0.1:2', scope: 'https://example.test/.default'}\n"
        )
        .targets[0]
        .section("graph")
    )
    assert isinstance(section, GraphConfig)
    assert (section.graph_url, section.cloud) == ("http://127.0.0.1:1/v1.0", "china")
    assert section.oauth2 is not None
    assert section.oauth2.token_url == "http://127.0.0.1:2/t/oauth2/v2.0/token"
    assert section.oauth2.scope == "https://example.test/.default"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("cloud: germany", "graph.cloud: expected one of global, usgov, usgov-dod, china"),
        ("search: header", "graph.search: is no longer used"),
    ],
)
def test_graph_settings_refused(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(
            "targets:\n  - name: a\n    graph: {mailbox: a@b.example, tenant: t, client_id: c, "
            f"client_secret: s, {setting}}}\n"
        )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(
        st.sampled_from(["id", "subject", "internetMessageId", "internetMessageHeaders"]),
        _json | st.lists(st.fixed_dictionaries({"name": _json, "value": _json}), max_size=3),
    )
)
@settings(max_examples=300, derandomize=True, deadline=None)
def test_any_listed_item_is_read_without_error(item: dict[str, Any]) -> None:
    """A listed message comes from the API: whatever its JSON holds, it reads as an envelope
    whose probe id is a string (verified later), never an exception."""
    probe_id = transport.probe_id(item)
    assert isinstance(probe_id, str)
    json.dumps(transport._envelope(item).__dict__)


@given(st.text(max_size=80))
@settings(max_examples=300, derandomize=True, deadline=None)
def test_a_message_id_names_a_probe_only_in_the_probes_form(value: str) -> None:
    found = transport.from_message_id(value)
    assert found == "" or dict(message.headers(found))["Message-ID"] == value.strip()


def test_a_probes_message_id_names_it() -> None:
    probe_id = ProbeIds().new("t")
    assert transport.from_message_id(dict(message.headers(probe_id))["Message-ID"]) == probe_id
    assert transport.probe_id({"internetMessageId": f"<{probe_id}@example.com>"}) == ""


async def test_probe_in_junk_is_junk_at_once_and_cleaned(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    probe_target = graph_target(graph)
    graph.junk_rule = lambda message: "mailbox-exporter probe" in str(message["Subject"])
    try:
        result = await probes.run(probe_target, Check.ROUNDTRIP, context, time_limit=10)
    finally:
        graph.junk_rule = None
    assert (result.reason, result.phase) == (Reason.JUNK, Phase.DELIVERY), result
    assert result.duration < 5, "found at the next look, not at the timeout"
    assert result.found.junk and result.found.delivery_seconds is not None
    assert probe_copies(graph, probe_target.mail_to) == []


async def test_deferred_delivery_is_not_delivered(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    probe_target = graph_target(graph)
    graph.set_mailbox_state(probe_target.mail_to, deferred=True)
    result = await probes.run(probe_target, Check.ROUNDTRIP, context, time_limit=2)
    assert (result.reason, result.phase) == (Reason.NOT_DELIVERED, Phase.DELIVERY)
    graph.resume_delivery(probe_target.mail_to)


async def test_hanging_api_is_a_timeout_in_its_phase(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    probe_target = graph_target(graph)
    graph.hang(f"/v1.0/users/{probe_target.mail_to}/sendMail")
    try:
        result = await probes.run(probe_target, Check.ROUNDTRIP, context, time_limit=1.5)
    finally:
        graph.clear_faults()
    assert (result.reason, result.phase) == (Reason.TIMEOUT, Phase.GRAPH_SEND)


async def test_no_secret_on_any_surface(
    graph: GraphSimulator,
    context: ProbeContext,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Client secret, private key and access tokens appear in no detail, transcript,
    /probe output or log line, whether the probe succeeds or fails."""
    caplog.set_level(logging.DEBUG)
    address = mailbox(graph)
    secret_target = graph_target(graph, address)
    cert_target = target(graph_section(graph, address, certificate_app(graph, address, tmp_path)))
    results = []
    for probe_target in (secret_target, cert_target):
        for check in (Check.ROUNDTRIP, Check.GRAPH_LOGIN):
            results.append(await probes.run(probe_target, check, context, transcript=True))
    for probe_target in (secret_target, cert_target):
        echo = "echo " + " ".join(probe_target.secrets())
        graph.fail("*/oauth2/v2.0/token", 400, {"error": "x", "error_description": echo})
        context.tokens.forget(probe_target.section("graph").oauth2)  # type: ignore[arg-type]
        results.append(await probes.run(probe_target, Check.GRAPH_LOGIN, context, transcript=True))
        graph.clear_faults()
    results.append(await probes.run(cert_target, Check.GRAPH_LOGIN, context, transcript=True))
    graph.expire_tokens()
    results.append(await probes.run(cert_target, Check.ROUNDTRIP, context, transcript=True))
    assert [r.success for r in results] == [True] * 4 + [False] * 2 + [True, False]
    assert "<redacted>" in results[4].detail and "<redacted>" in results[5].detail
    shown = "\n".join(
        [repr(r) + ondemand.report(r) + metrics.render_result(r) for r in results]
        + [record.getMessage() + str(record.__dict__) for record in caplog.records]
        + [repr(secret_target), repr(cert_target)]
    )
    tokens = [t for r in graph.requests for t in [r.headers.get("authorization", "")[7:]] if t]
    secrets = {*secret_target.secrets(), *cert_target.secrets(), *tokens}
    assert len(tokens) > 5 and any("PRIVATE KEY" in s for s in secrets)
    for secret in secrets:
        assert secret not in shown, f"a secret leaked: {secret[:8]}..."


async def test_a_restored_permission_takes_effect_at_the_next_probe(
    graph: GraphSimulator, context: ProbeContext
) -> None:
    """A token carries the app's roles as they were when it was issued: after a 403 the
    cached token is dropped, so the probe after an administrator restores the permission
    succeeds (and nothing holds it back: an app's credentials are never locked out)."""
    address = mailbox(graph)
    credentials = secret_app(graph, address, permissions=("Mail.Send",))
    probe_target = target(graph_section(graph, address, credentials))
    for _ in range(4):
        refused = await probes.run(probe_target, Check.GRAPH_LOGIN, context)
        assert (refused.reason, refused.phase) == (Reason.AUTH_REJECTED, Phase.GRAPH_SELECT)
    oauth2 = probe_target.section("graph").oauth2
    assert oauth2 is not None
    client_id = oauth2.client_id
    graph.app(client_id).permissions.add("Mail.ReadWrite")
    assert (await probes.run(probe_target, Check.GRAPH_LOGIN, context)).success


@pytest.mark.parametrize(("status", "reason"), [(429, Reason.THROTTLED), (503, Reason.UNAVAILABLE)])
async def test_a_token_endpoint_asking_to_wait_is_heard(
    graph: GraphSimulator, context: ProbeContext, status: int, reason: Reason
) -> None:
    """The identity service's own limit or outage: its reason, and its Retry-After kept for the
    scheduler, as for the mail API's answers."""
    probe_target = graph_target(graph)
    graph.fail(
        "*/oauth2/v2.0/token",
        status,
        {"error": "temporarily_unavailable" if status == 429 else "server_error"},
        headers={"Retry-After": "120"},
    )
    try:
        result = await probes.run(probe_target, Check.GRAPH_LOGIN, context)
    finally:
        graph.clear_faults()
    assert (result.reason, result.phase) == (reason, Phase.GRAPH_AUTH), result
    assert result.found.retry_after == 120
