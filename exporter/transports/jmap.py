"""JMAP (RFC 8620 core, RFC 8621 mail): send, watch, and destroy probes over one HTTP API.

Written from the RFCs, tested against Cyrus IMAP's JMAP service:

- The session resource (``url``, usually ``/.well-known/jmap``) names the API, upload,
  download and push URLs and the mail account. Credentials (HTTP Basic, or a Bearer API token)
  go only to that origin: a session or a redirect that points elsewhere is refused.
- Sending uploads the probe's raw message, imports it into the Drafts mailbox
  (``Email/import``: the same bytes an SMTP sender submits, probe id and Message-ID included)
  and submits it (``EmailSubmission/set`` with ``onSuccessDestroyEmail``, so no copy stays).
- The receiver asks for the newest messages of the Inbox (and of the ``junk`` and ``sent``
  mailboxes) carrying the probe header (``Email/query`` with a ``header`` filter, which
  matches a substring); a server that does not take header filters (``unsupportedFilter``)
  is read newest first without one. Either way a candidate is recognised only by its header
  value, and only one whose id verifies is destroyed (``Email/set``).
- Arrivals are waited for on the server's push channel (EventSource, RFC 8620 section 7.3)
  where it offers one, and polled otherwise (Cyrus 3.6 answers its event source with 204 No
  Content); every wait looks at least once per ``poll_interval`` either way.

Every request is bounded by the probe's deadline and every answer by :data:`MAX_ANSWER`
bytes. Refusals are read in JMAP's own vocabulary (request-level problem types, method
errors, SetErrors; :func:`exporter.classify.jmap_reply`); a ``Retry-After`` (429, 503) reaches
the findings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from exporter import bounce, classify
from exporter.classify import JmapStage
from exporter.config.sections.jmap import JmapConfig
from exporter.message import PROBE_HEADER
from exporter.outcome import Phase, ProbeFailure, Reason
from exporter.trace import Trace, recorder
from exporter.transports import Envelope, ProbeMessage, net
from exporter.transports.http import MAX_ANSWER, client_failure, json_object
from exporter.transports.oauth import TokenCache, read_bounded
from exporter.transports.retry import retry_after

NAME: Final = "jmap"
JMAP_SERVER: Final = "the JMAP server"
"""How details name the server."""
CORE: Final = "urn:ietf:params:jmap:core"
MAIL: Final = "urn:ietf:params:jmap:mail"
SUBMISSION: Final = "urn:ietf:params:jmap:submission"
MAX_REDIRECTS: Final = 3
"""Same-origin redirects followed to the session resource (Cyrus sends ``/.well-known/jmap``
on to ``/jmap``)."""
PAGE: Final = 50
MAX_REPORT_READS: Final = 10
"""New messages without a probe header read in full at one look for bounces, where the server
cannot search text: new mail in a monitoring mailbox is rare."""
"""Messages read per look, newest first: a probe arrives as one of the newest."""
LOOKBACK: Final = timedelta(days=1)
"""A mailbox's first look in a round trip reaches back this far: probes that arrived after
their round trip gave up (late arrivals) are found and destroyed."""
CLOCK_SKEW: Final = timedelta(minutes=5)
"""Later looks reach back to this long before the round trip began: a server clock behind ours
loses no arrival."""
FIRST_POLL: Final = 0.025
"""Without push the first look is at once, the next this long after, each pause twice the
last up to ``poll_interval`` (as IMAP without IDLE): a probe delivered in milliseconds is seen
within tens of them, for about seven requests in the first two seconds."""
PING: Final = 5
"""Seconds between the pings asked of the push channel; three missed ones and it is given up
for polling."""
MAX_EVENT_LINE: Final = 64 * 1024
"""Longest line of the push channel read; a longer one ends push for this probe."""
MAX_PUSH_BYTES: Final = 1024 * 1024
"""Bytes read from the push channel in one probe at most: a server that streams without end
is given up for polling."""
DOWNLOAD_ACCEPT: Final = "message/rfc822"
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
FIELDS: Final = (
    "id",
    "blobId",
    "mailboxIds",
    "subject",
    f"header:{PROBE_HEADER}:asText",
    "header:Authentication-Results:asText:all",
)
"""What a look reads of each candidate: enough to recognise a probe and read its verdicts."""


def _malformed(what: str) -> ProbeFailure:
    return ProbeFailure(Reason.PROTOCOL_ERROR, f"the JMAP server sent a malformed {what}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class Session:
    """What the session resource (RFC 8620 section 2) says that a probe needs."""

    api_url: str
    upload_url: str
    download_url: str
    event_source_url: str | None
    account_id: str
    """The primary account for mail."""
    capabilities: frozenset[str]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_session(body: Mapping[str, Any], base: str) -> Session:
    """Read a session resource; its URLs are resolved against ``base`` and must stay on its
    origin (the credentials go with every request). Raises ``protocol_error`` for anything
    missing or malformed, and ``mailbox_unavailable`` when the account has no mail."""
    capabilities = body.get("capabilities")
    if not isinstance(capabilities, dict) or CORE not in capabilities:
        raise _malformed("session resource (no core capability)")
    if MAIL not in capabilities:
        raise ProbeFailure(Reason.MAILBOX_UNAVAILABLE, "the JMAP server offers no mail")
    primary = body.get("primaryAccounts")
    account = _text(primary.get(MAIL)) if isinstance(primary, dict) else None
    accounts = body.get("accounts")
    if account is None or not isinstance(accounts, dict) or account not in accounts:
        raise ProbeFailure(
            Reason.MAILBOX_UNAVAILABLE, "the JMAP session names no mail account for this login"
        )
    urls: dict[str, str] = {}
    for key in ("apiUrl", "uploadUrl", "downloadUrl"):
        value = _text(body.get(key))
        if value is None:
            raise _malformed(f"session resource (no {key})")
        urls[key] = _same_origin(value, base)
    events = _text(body.get("eventSourceUrl"))
    return Session(
        api_url=urls["apiUrl"],
        upload_url=urls["uploadUrl"],
        download_url=urls["downloadUrl"],
        event_source_url=None if events is None else _same_origin(events, base),
        account_id=account,
        capabilities=frozenset(str(key) for key in capabilities),
    )


def _same_origin(url: str, base: str) -> str:
    try:
        absolute = urljoin(base, url)
        origin = _origin(absolute)
    except ValueError:
        raise _malformed("URL") from None
    if origin != _origin(base):
        raise ProbeFailure(
            Reason.PROTOCOL_ERROR, f"the JMAP server pointed to another origin: {origin[:100]}"
        )
    return absolute


def expand(template: str, **values: str) -> str:
    """An RFC 6570 level 1 template as the session resource gives them (``{accountId}``),
    each value percent-encoded."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", quote(value, safe=""))
    return template


Call = tuple[str, dict[str, Any], str]
"""One method call or response: name, arguments, call id."""


def responses(body: Mapping[str, Any]) -> list[Call]:
    """The ``methodResponses`` of an API answer (RFC 8620 section 3.4)."""
    found = body.get("methodResponses")
    if not isinstance(found, list):
        raise _malformed("API answer (no methodResponses)")
    calls: list[Call] = []
    for item in found:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], str)
            or not isinstance(item[1], dict)
            or not isinstance(item[2], str)
        ):
            raise _malformed("method response")
        calls.append((item[0], item[1], item[2]))
    return calls


def answer(calls: Sequence[Call], name: str, call_id: str, stage: JmapStage) -> dict[str, Any]:
    """The arguments of the response ``name`` to call ``call_id``; a method error there is
    raised with its reason."""
    for got, arguments, got_id in calls:
        if got_id != call_id:
            continue
        if got == "error":
            raise method_error(arguments, stage)
        if got == name:
            return arguments
    raise _malformed(f"API answer (no {name} response)")


class MethodError(ProbeFailure):
    """A method error (RFC 8620 section 3.6.2) or a SetError, with its ``type``."""

    def __init__(self, reason: Reason, detail: str, kind: str) -> None:
        super().__init__(reason, detail)
        self.kind = kind


def method_error(arguments: Mapping[str, Any], stage: JmapStage) -> MethodError:
    """A method error or SetError as a failure with its reason."""
    kind = str(arguments.get("type") or "")[:100]
    words = " ".join(str(arguments.get("description") or "").split())
    reason = classify.jmap_reply(0, kind, stage, words)
    detail = f"{kind or 'error'}: {words}" if words else kind or "error"
    return MethodError(reason, detail, kind)


UNSUPPORTED_FILTER: Final = "unsupportedFilter"
"""The method error of a server that cannot run a query's filter (RFC 8620 section 5.5)."""


def problem(status: int, body: Mapping[str, Any] | None) -> tuple[str, str]:
    """The type and words of a request-level problem (RFC 7807, RFC 8620 section 3.6.1),
    as far as the answer has them."""
    if body is None:
        return "", ""
    kind = str(body.get("type") or "").removeprefix(classify.JMAP_ERROR_PREFIX)
    words = " ".join(str(body.get("detail") or body.get("title") or "").split())
    limit = body.get("limit")
    if isinstance(limit, str) and limit:
        words = f"{words} ({limit})" if words else limit
    return kind, words


def set_failures(arguments: Mapping[str, Any], key: str) -> dict[str, dict[str, Any]]:
    """``notCreated`` / ``notDestroyed`` of a ``/set`` answer (null means none)."""
    found = arguments.get(key)
    if found is None:
        return {}
    if not isinstance(found, dict):
        raise _malformed(f"{key}")
    return {str(ref): error if isinstance(error, dict) else {} for ref, error in found.items()}


def emails(arguments: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``list`` of an ``Email/get`` answer, by id; items without a string id are not
    messages."""
    found = arguments.get("list")
    if not isinstance(found, list):
        raise _malformed("Email/get answer")
    return {
        item["id"]: item
        for item in found
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
    }


def probe_id(item: Mapping[str, Any]) -> str:
    """A message's probe id header as text, whitespace folded; empty without one."""
    value = item.get(f"header:{PROBE_HEADER}:asText")
    return " ".join(value.split()) if isinstance(value, str) else ""


def envelope(item: Mapping[str, Any]) -> Envelope:
    results = item.get("header:Authentication-Results:asText:all")
    subject = item.get("subject")
    return Envelope(
        probe_id=probe_id(item),
        subject=" ".join(subject.split()) if isinstance(subject, str) else "",
        authentication_results=tuple(
            " ".join(value.split())
            for value in (results if isinstance(results, list) else ())
            if isinstance(value, str)
        ),
    )


def mailbox_roles(arguments: Mapping[str, Any]) -> dict[str, str]:
    """Mailbox ids by role (``inbox``, ``junk``, ``drafts``, ``sent``) of a ``Mailbox/get``
    answer; the first of a role wins."""
    found = arguments.get("list")
    if not isinstance(found, list):
        raise _malformed("Mailbox/get answer")
    roles: dict[str, str] = {}
    for item in found:
        if not isinstance(item, dict):
            continue
        role, mailbox = item.get("role"), item.get("id")
        if isinstance(role, str) and isinstance(mailbox, str) and mailbox:
            roles.setdefault(role.lower(), mailbox)
    return roles


def pick_identity(arguments: Mapping[str, Any], address: str) -> str:
    """The identity that sends as ``address``: the one with that email, else one with none
    set (the account's own, as Cyrus has it), else the first."""
    found = arguments.get("list")
    identities = [
        item
        for item in (found if isinstance(found, list) else ())
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
    ]
    for wanted in (address.lower(), ""):
        for item in identities:
            if str(item.get("email") or "").lower() == wanted:
                return str(item["id"])
    if identities:
        return str(identities[0]["id"])
    raise ProbeFailure(Reason.SEND_REJECTED, f"the account has no identity to send as {address}")


@dataclass(frozen=True)
class Event:
    """One event of an event stream (HTML's server-sent events)."""

    name: str
    data: str


@dataclass
class EventReader:
    """Reads server-sent events line by line: ``event:`` and ``data:`` fields, an empty line
    ends an event; comments and other fields are skipped."""

    name: str = ""
    data: list[str] = field(default_factory=list)

    def line(self, raw: bytes) -> Event | None:
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            event = Event(self.name or "message", "\n".join(self.data)) if self.data else None
            self.name, self.data = "", []
            return event
        key, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            self.name = value
        elif key == "data":
            self.data.append(value)
        return None


def changed(event: Event, account: str) -> bool:
    """Whether a push event says that mail of ``account`` changed (a ``StateChange``, RFC
    8620 section 7.1, naming ``Email`` or ``Mailbox``)."""
    if event.name not in ("state", "message"):
        return False
    try:
        data = json.loads(event.data)
    except (ValueError, RecursionError):
        return False
    if not isinstance(data, dict) or data.get("@type", "StateChange") != "StateChange":
        return False
    states = data.get("changed")
    types = states.get(account) if isinstance(states, dict) else None
    return isinstance(types, dict) and bool({"Email", "Mailbox"} & set(types))


def since(moment: datetime) -> str:
    """A UTCDate (RFC 8620 section 1.4)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JmapClient:
    """One probe's requests to a JMAP server: the session, then method calls.

    The connections are the token cache's pools (shared across probes by ``tls_config``);
    the credentials go with each request and are never logged or kept anywhere else.
    """

    def __init__(self, section: JmapConfig, trace: Trace, tokens: TokenCache) -> None:
        self.section = section
        self.trace = trace
        self.tokens = tokens
        self.session: Session | None = None
        trace.tokens.extend(section.secrets())

    def _http(self) -> aiohttp.ClientSession:
        return self.tokens.pools.session(self.section.tls_config)

    def _headers(self, accept: str = "application/json") -> dict[str, str]:
        return {"Authorization": self.section.authorization(), "Accept": accept}

    def _timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=max(0.1, self.trace.remaining()))

    async def open(self) -> Session:
        """Read the session resource, in ``jmap_auth``: where the credentials are checked."""
        with self.trace.phase(Phase.JMAP_AUTH):
            url = self.section.url
            for _ in range(MAX_REDIRECTS + 1):
                self.trace.say(f"C: GET {urlsplit(url).path}")
                status, headers, text = await self._request("GET", url, "auth")
                location = headers.get("Location")
                if status in REDIRECTS and location:
                    url = _same_origin(location, url)
                    continue
                break
            else:
                raise ProbeFailure(Reason.PROTOCOL_ERROR, "the JMAP server redirected too often")
            body = self._check(status, headers, text, "auth")
            self.session = parse_session(body, url)
        self.trace.found.logged_in.add(NAME)
        return self.session

    async def call(self, calls: Sequence[Call], stage: JmapStage) -> list[Call]:
        """One API request with these method calls; the method responses."""
        session = self.session or await self.open()
        using = [CORE, MAIL] + ([SUBMISSION] if stage == "send" else [])
        names = ", ".join(name for name, _, _ in calls)
        self.trace.say(f"C: POST {urlsplit(session.api_url).path} {names}")
        request = {"using": using, "methodCalls": [list(call) for call in calls]}
        status, headers, text = await self._request("POST", session.api_url, stage, json=request)
        return responses(self._check(status, headers, text, stage))

    async def upload(self, data: bytes, content_type: str) -> str:
        """Upload a blob (RFC 8620 section 6.1); its id."""
        session = self.session or await self.open()
        url = expand(session.upload_url, accountId=session.account_id)
        self.trace.say(f"C: POST {urlsplit(url).path} ({len(data)} bytes)")
        status, headers, text = await self._request(
            "POST", url, "send", data=data, content_type=content_type
        )
        blob = self._check(status, headers, text, "send").get("blobId")
        if not isinstance(blob, str) or not blob:
            raise _malformed("upload answer")
        return blob

    async def download(self, blob: str, limit: int) -> bytes:
        """The first ``limit`` bytes of a blob (RFC 8620 section 6.2)."""
        session = self.session or await self.open()
        url = expand(
            session.download_url,
            accountId=session.account_id,
            blobId=blob,
            name="message.eml",
            type=DOWNLOAD_ACCEPT,
        )
        self.trace.found.requests += 1
        try:
            async with self._http().get(
                url, headers=self._headers("*/*"), timeout=self._timeout(), allow_redirects=False
            ) as response:
                if response.status != 200:
                    return b""
                chunks: list[bytes] = []
                size = 0
                while size < limit and (chunk := await response.content.read(limit - size)):
                    chunks.append(chunk)
                    size += len(chunk)
                return b"".join(chunks)[:limit]
        except aiohttp.ClientError as exc:
            raise client_failure(exc, JMAP_SERVER) from None
        except TimeoutError:
            raise ProbeFailure(Reason.TIMEOUT, "no answer from the JMAP server in time") from None

    async def _request(
        self,
        method: str,
        url: str,
        stage: JmapStage,
        *,
        json: Any = None,
        data: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[int, Mapping[str, str], str]:
        self.trace.found.requests += 1
        headers = self._headers()
        if content_type is not None:
            headers["Content-Type"] = content_type
        active, recorded = recorder(), 0
        if active is not None:
            recorded = active.request(f"{method} {urlsplit(url).path}")
        try:
            async with self._http().request(
                method,
                url,
                json=json,
                data=data,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout(),
            ) as response:
                self._note_tls(response)
                raw = await read_bounded(response, MAX_ANSWER)
                if raw is None:
                    raise ProbeFailure(
                        Reason.PROTOCOL_ERROR,
                        f"the JMAP server answered more than {MAX_ANSWER:,} bytes",
                    )
                text = raw.decode("utf-8", errors="replace")
                status, answer_headers = response.status, response.headers
        except aiohttp.ClientError as exc:
            raise client_failure(exc, JMAP_SERVER) from None
        except TimeoutError:
            raise ProbeFailure(Reason.TIMEOUT, "no answer from the JMAP server in time") from None
        self.trace.say(f"S: {status}")
        if active is not None:
            active.answer(recorded, f"{status}\n\n{text[:4096]}" if text else str(status))
        return status, answer_headers, text

    def _check(
        self, status: int, headers: Mapping[str, str], text: str, stage: JmapStage
    ) -> dict[str, Any]:
        """The JSON object of a 2xx answer; any other answer as a failure with its reason."""
        body = json_object(text)
        if 200 <= status < 300:
            if body is None:
                raise ProbeFailure(
                    Reason.PROTOCOL_ERROR, f"the JMAP server answered {status} without JSON"
                )
            return body
        kind, words = problem(status, body)
        reason = classify.jmap_reply(status, kind, stage, words)
        wait = retry_after(headers, "")
        if wait is not None and reason in (Reason.THROTTLED, Reason.UNAVAILABLE):
            self.trace.found.retry_after = wait
        if reason is Reason.AUTH_REJECTED:
            self.trace.found.login_refused = NAME
            self.trace.found.logged_in.discard(NAME)
        detail = f"HTTP {status}" + (f" {kind}" if kind else "") + (f": {words}" if words else "")
        self.trace.say(f"failed: {detail}")
        failure = ProbeFailure(reason, detail)
        failure.retry_after = wait
        raise failure

    def _note_tls(self, response: aiohttp.ClientResponse) -> None:
        if NAME in self.trace.found.tls or response.connection is None:
            return
        sock = response.connection.transport
        session = net.tls_session(sock.get_extra_info("ssl_object") if sock else None)
        if session is not None:
            self.trace.found.tls[NAME] = session

    def events(self, url: str) -> contextlib.AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """The push channel's request (``async with``): open for as long as the server
        streams, each read bounded by three pings."""
        self.trace.found.requests += 1
        self.trace.say(f"C: GET {urlsplit(url).path} (push)")
        return self._http().get(
            url,
            headers=self._headers("text/event-stream"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=PING, sock_read=3 * PING),
            allow_redirects=False,
        )


def _mailbox_calls(account: str) -> list[Call]:
    return [("Mailbox/get", {"accountId": account, "properties": ["id", "role"]}, "m")]


async def _roles(client: JmapClient) -> dict[str, str]:
    session = client.session or await client.open()
    with client.trace.phase(Phase.JMAP_SELECT):
        calls = await client.call(_mailbox_calls(session.account_id), "mailbox")
        roles = mailbox_roles(answer(calls, "Mailbox/get", "m", "mailbox"))
    if "inbox" not in roles:
        raise ProbeFailure(Reason.MAILBOX_UNAVAILABLE, "the account has no Inbox")
    return roles


class JmapSender:
    """Uploads the probe, imports it as a draft and submits it; the draft is destroyed when
    the submission succeeds (``onSuccessDestroyEmail``), so the account keeps no copy."""

    def __init__(self, section: JmapConfig, trace: Trace, tokens: TokenCache) -> None:
        self.client = JmapClient(section, trace, tokens)

    async def send(self, probe: ProbeMessage) -> float:
        client = self.client
        session = await client.open()
        roles = await _roles(client)
        account = session.account_id
        if SUBMISSION not in session.capabilities:
            raise ProbeFailure(Reason.SEND_REJECTED, "the JMAP server offers no submission")
        draft = roles.get("drafts") or roles["inbox"]
        with client.trace.phase(Phase.JMAP_SEND):
            identity = pick_identity(
                answer(
                    await client.call([("Identity/get", {"accountId": account}, "i")], "send"),
                    "Identity/get",
                    "i",
                    "send",
                ),
                probe.mail_from,
            )
            blob = await client.upload(probe.raw, "message/rfc822")
            imported = {
                "accountId": account,
                "emails": {
                    "probe": {
                        "blobId": blob,
                        "mailboxIds": {draft: True},
                        "keywords": {"$draft": True, "$seen": True},
                    }
                },
            }
            submission = {
                "accountId": account,
                "create": {
                    "send": {
                        "emailId": "#probe",
                        "identityId": identity,
                        "envelope": {
                            "mailFrom": {"email": probe.mail_from},
                            "rcptTo": [{"email": probe.mail_to}],
                        },
                    }
                },
                "onSuccessDestroyEmail": ["#send"],
            }
            calls = await client.call(
                [("Email/import", imported, "e"), ("EmailSubmission/set", submission, "s")],
                "send",
            )
            accepted = time.monotonic()
            made = answer(calls, "Email/import", "e", "send")
            for error in set_failures(made, "notCreated").values():
                raise method_error(error, "send")
            sent = answer(calls, "EmailSubmission/set", "s", "send")
            for error in set_failures(sent, "notCreated").values():
                failure = method_error(error, "send")
                await self._forget(calls, account)
                raise failure
        return accepted

    async def _forget(self, calls: Sequence[Call], account: str) -> None:
        """Destroy the draft of a submission that failed: no probe stays in Drafts."""
        made = answer(calls, "Email/import", "e", "send").get("created")
        draft = made.get("probe") if isinstance(made, dict) else None
        ref = draft.get("id") if isinstance(draft, dict) else None
        if isinstance(ref, str):
            with contextlib.suppress(ProbeFailure):
                await self.client.call(
                    [("Email/set", {"accountId": account, "destroy": [ref]}, "d")], "send"
                )


class JmapReceiver:
    """The Inbox, and the ``junk`` and ``sent`` mailboxes where the account has them, read
    newest first; probes recognised by their header value and destroyed for good.

    Reports (bounces) are found with a ``text`` filter on the probe id prefix among new
    messages without the probe header, and read in full through the download URL; a server
    that refuses that filter finds none.
    """

    def __init__(self, section: JmapConfig, trace: Trace, tokens: TokenCache) -> None:
        self.section = section
        self.trace = trace
        self.client = JmapClient(section, trace, tokens)
        self._pause = 0.0
        self._began = datetime.now(UTC)
        self._roles: dict[str, str] = {}
        self._swept: set[str] = set()
        self._items: dict[str, dict[str, Any]] = {}
        self._header_filter = True
        self._text_filter = True
        self._raw: dict[str, bytes] = {}
        """Messages read in full, by id: each is downloaded once."""
        self._push: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._changed_at: float | None = None
        self._pushing = False
        self._primed = False
        """Whether a look came after push started working."""

    @property
    def account(self) -> str:
        if self.client.session is None:
            raise RuntimeError("the receiver is not open")
        return self.client.session.account_id

    async def open(self) -> None:
        session = await self.client.open()
        self._roles = await _roles(self.client)
        if self.section.push and session.event_source_url is not None:
            url = expand(session.event_source_url, types="*", closeafter="no", ping=str(PING))
            self._push = asyncio.create_task(self._listen(url))

    async def _listen(self, url: str) -> None:
        """Follow the push channel until it ends; each change of the account's mail wakes
        :meth:`wait`. Whatever goes wrong here only means polling."""
        read = 0
        reader = EventReader()
        try:
            async with self.client.events(url) as stream:
                if stream.status != 200 or stream.content_type != "text/event-stream":
                    self.trace.say(f"S: {stream.status}: polling instead")
                    return
                self._pushing = True
                self.trace.say("waiting for the server's push")
                while True:
                    async with asyncio.timeout(3 * PING):
                        line = await stream.content.readline()
                    read += len(line)
                    if not line:
                        self.trace.say("push ended (the server closed it): polling instead")
                        return
                    if read > MAX_PUSH_BYTES or len(line) > MAX_EVENT_LINE:
                        self.trace.say("push ended (beyond its bounds): polling instead")
                        return
                    event = reader.line(line)
                    if event is not None and changed(event, self.account):
                        self._changed_at = time.monotonic()
                        self._changed.set()
        except (aiohttp.ClientError, HttpProcessingError, TimeoutError, ValueError) as exc:
            # HttpProcessingError: a line longer than aiohttp reads (LineTooLong).
            self.trace.say(f"push ended ({type(exc).__name__}): polling instead")
        finally:
            self._pushing = False

    async def wait(self, deadline: float) -> float | None:
        """Until the server pushes a change (or at the latest ``poll_interval``), while push
        works; else the poller's back-off."""
        if not self._pushing:
            await asyncio.sleep(max(0.0, min(self._pause, deadline - time.monotonic())))
            self._pause = min(max(self._pause * 2, FIRST_POLL), self.section.poll_interval)
            return time.monotonic()
        if not self._primed:
            # A probe may have arrived before the channel was up: look once at once.
            self._primed = True
            return time.monotonic()
        limit = max(0.0, min(deadline, time.monotonic() + self.section.poll_interval))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(_loop_time(limit)):
                await self._changed.wait()
        self._changed.clear()
        at, self._changed_at = self._changed_at, None
        return at if at is not None else time.monotonic()

    def _since(self, mailbox: str) -> str:
        if mailbox in self._swept:
            return since(self._began - CLOCK_SKEW)
        self._swept.add(mailbox)
        return since(self._began - LOOKBACK)

    async def _look(self, role: str, prefix: str) -> list[str]:
        """Messages of the mailbox of ``role`` whose probe id starts with ``prefix``."""
        mailbox = self._roles.get(role)
        if mailbox is None:
            return []
        condition: dict[str, Any] = {"inMailbox": mailbox, "after": self._since(mailbox)}
        if self._header_filter:
            condition["header"] = [PROBE_HEADER, prefix]
        try:
            found = await self._query(condition)
        except MethodError as failure:
            if not (self._header_filter and failure.kind == UNSUPPORTED_FILTER):
                raise
            self.trace.say("the server takes no header filter: reading the newest messages")
            self._header_filter = False
            condition.pop("header")
            found = await self._query(condition)
        return [ref for ref, item in found.items() if probe_id(item).startswith(prefix)]

    async def _query(self, condition: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        account = self.account
        query = {
            "accountId": account,
            "filter": condition,
            "sort": [{"property": "receivedAt", "isAscending": False}],
            "limit": PAGE,
        }
        fetch = {
            "accountId": account,
            "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
            "properties": list(FIELDS),
        }
        calls = await self.client.call(
            [("Email/query", query, "q"), ("Email/get", fetch, "g")], "mailbox"
        )
        answer(calls, "Email/query", "q", "mailbox")
        found = emails(answer(calls, "Email/get", "g", "mailbox"))
        self._items.update(found)
        return found

    async def find(self, prefix: str) -> list[str]:
        return await self._look("inbox", prefix)

    async def junk(self, prefix: str) -> list[str]:
        return await self._look("junk", prefix)

    async def sent_copies(self, prefix: str) -> list[str]:
        """Probes in the ``sent`` mailbox: a server that keeps a copy of mail the account
        submits (this transport's own submissions keep none)."""
        return await self._look("sent", prefix)

    async def reports(self, prefix: str) -> list[str]:
        """New messages without the probe header that quote ``prefix``: found by a ``text``
        filter where the server searches text; else the newest :data:`MAX_REPORT_READS` are
        read (each once) and searched here."""
        new = {"inMailbox": self._roles["inbox"], "after": since(self._began - CLOCK_SKEW)}
        unmarked = {"operator": "NOT", "conditions": [{"header": [PROBE_HEADER]}]}
        if self._text_filter:
            condition = {"operator": "AND", "conditions": [new, {"text": prefix}, unmarked]}
            try:
                return list(await self._query(condition))
            except MethodError as failure:
                # Cyrus without a search index answers serverFail; others unsupportedFilter.
                self.trace.say(f"no text search ({failure.kind}): reading new messages instead")
                self._text_filter = False
        found = await self._query({"operator": "AND", "conditions": [new, unmarked]})
        quoting: list[str] = []
        for ref in list(found)[:MAX_REPORT_READS]:
            if ref not in self._raw:
                self._raw[ref] = await self.raw(ref, bounce.MAX_REPORT)
            if prefix.encode() in self._raw[ref]:
                quoting.append(ref)
        return quoting

    async def read(self, refs: Sequence[str]) -> dict[str, Envelope]:
        missing = [ref for ref in refs if ref not in self._items]
        if missing:
            with self.trace.phase(Phase.JMAP_FETCH):
                fetch = {"accountId": self.account, "ids": missing, "properties": list(FIELDS)}
                calls = await self.client.call([("Email/get", fetch, "g")], "mailbox")
                self._items.update(emails(answer(calls, "Email/get", "g", "mailbox")))
        return {ref: envelope(self._items.get(ref, {})) for ref in refs}

    async def raw(self, ref: str, limit: int) -> bytes:
        if ref in self._raw:
            return self._raw[ref][:limit]
        await self.read([ref])
        blob = self._items.get(ref, {}).get("blobId")
        if not isinstance(blob, str) or not blob:
            return b""
        with self.trace.phase(Phase.JMAP_FETCH):
            return await self.client.download(blob, limit)

    async def delete(self, refs: Sequence[str]) -> bool:
        """Destroy these messages (``Email/set``); gone already is fine."""
        with self.trace.phase(Phase.JMAP_CLEANUP):
            destroy = {"accountId": self.account, "destroy": list(refs)}
            calls = await self.client.call([("Email/set", destroy, "d")], "mailbox")
            failed = set_failures(answer(calls, "Email/set", "d", "mailbox"), "notDestroyed")
        for ref in refs:
            self._items.pop(ref, None)
        return all(error.get("type") == "notFound" for error in failed.values())

    async def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if self._push is not None:
            self._push.cancel()
            self._push = None


def _loop_time(monotonic: float) -> float:
    """A ``time.monotonic`` instant on the event loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic - time.monotonic())


async def check_login(section: JmapConfig, trace: Trace, tokens: TokenCache) -> None:
    """jmap_login: can the account read its session resource and its mailboxes?"""
    await _roles(JmapClient(section, trace, tokens))
