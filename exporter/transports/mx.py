"""Delivery as a mail server sends: the recipient domain's MX hosts, port 25, no login.

The path outside mail takes to a mailbox: the domain's MX records, the provider's inbound
gateway and its filters, and the checks of the sending domain's SPF, DKIM and DMARC. The MX
records are looked up with dnspython's asynchronous resolver (no resolver threads), the
configured one or the system's; the hosts are tried in preference order (equal preferences
shuffled, as RFC 5321 section 5.1 asks), each by its IPv4 addresses, then its IPv6 ones,
falling back to the next address on a connection failure. A host that answers decides:
its greeting, STARTTLS and replies are the probe's result, and its name is in the failure's
detail. A domain without MX records fails as ``dns``: the implicit MX (the domain's own
address) is not used, because a domain that lost its MX records is the outage to report.

STARTTLS is required by default, with the certificate verified against the MX host's name
(or ``tls_config.server_name``); ``opportunistic`` encrypts where offered without verifying,
and sends in the clear where not, as Postfix's ``may`` level does. The probe is DKIM-signed
when a key is configured (dkimpy; relaxed/relaxed canonicalisation).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Final

import dkim
import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from exporter.config.model import MxConfig, ServerConfig, TlsConfig
from exporter.outcome import Phase, ProbeFailure, Reason
from exporter.trace import Trace
from exporter.transports import ProbeMessage
from exporter.transports.oauth import TokenCache
from exporter.transports.smtp import QUIT_WAIT, SmtpSession

CONNECT_WAIT: Final = 10.0
"""Seconds one address may take to accept a connection while other addresses remain to be
tried: a host that drops packets must leave time for the next."""
FALL_BACK: Final = (Reason.CONNECT_REFUSED, Reason.NETWORK, Reason.TIMEOUT)
"""Connection failures after which the next address or host is tried."""


@dataclass(frozen=True)
class MxHost:
    name: str
    preference: int
    addresses: tuple[str, ...]
    problem: str = ""
    """Why it has no addresses."""


@functools.lru_cache(maxsize=16)
def resolver(address: tuple[str, int] | None) -> dns.asyncresolver.Resolver:
    """The configured resolver, or the system's (``/etc/resolv.conf``); no cache of its own."""
    if address is None:
        return dns.asyncresolver.Resolver()
    configured = dns.asyncresolver.Resolver(configure=False)
    configured.nameservers = [address[0]]
    configured.port = address[1]
    return configured


def _dns_failure(exc: BaseException, what: str) -> ProbeFailure:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return ProbeFailure(Reason.DNS, f"{what}: no such domain (NXDOMAIN)")
    if isinstance(exc, dns.resolver.NoAnswer):
        return ProbeFailure(Reason.DNS, f"{what}: no records")
    if isinstance(exc, dns.resolver.NoNameservers):
        return ProbeFailure(Reason.DNS, f"{what}: no name server answered (SERVFAIL or REFUSED)")
    if isinstance(exc, dns.exception.Timeout):
        return ProbeFailure(Reason.DNS, f"{what}: no answer from the resolver in time")
    return ProbeFailure(Reason.DNS, f"{what}: {type(exc).__name__}")


@contextmanager
def _at(where: str) -> Iterator[None]:
    """Name the host in the detail of a failure inside."""
    try:
        yield
    except ProbeFailure as failure:
        raise ProbeFailure(failure.reason, f"{where}: {failure.detail}", failure.phase) from None


class MxSender:
    """Delivers the probe to the recipient domain's MX hosts over SMTP without AUTH."""

    def __init__(self, section: MxConfig, trace: Trace, tokens: TokenCache) -> None:
        self.section = section
        self.trace = trace

    async def _resolve(self, name: str, kind: str) -> list[str]:
        answer = await resolver(self.section.resolver).resolve(
            name, kind, lifetime=max(0.1, self.trace.remaining())
        )
        return [record.to_text() for record in answer]

    async def lookup(self, domain: str) -> list[MxHost]:
        """The MX hosts of ``domain`` in the order to try, with their addresses."""
        try:
            answer = await resolver(self.section.resolver).resolve(
                domain, "MX", lifetime=max(0.1, self.trace.remaining())
            )
        except dns.exception.DNSException as exc:
            raise _dns_failure(exc, f"MX of {domain}") from None
        records = sorted(
            ((record.preference, record.exchange) for record in answer),
            key=lambda item: (item[0], random.random()),
        )
        if len(records) == 1 and records[0][1] == dns.name.root:
            raise ProbeFailure(Reason.DNS, f"{domain} accepts no mail (null MX, RFC 7505)")
        names = [(preference, name.to_text(omit_final_dot=True)) for preference, name in records]
        self.trace.say("MX " + ", ".join(f"{p} {n}" for p, n in names))
        return list(await asyncio.gather(*(self._host(n, p) for p, n in names)))

    async def _host(self, name: str, preference: int) -> MxHost:
        addresses: list[str] = []
        problems: list[str] = []
        for kind in ("A", "AAAA"):
            try:
                addresses += await self._resolve(name, kind)
            except dns.exception.DNSException as exc:
                problems.append(_dns_failure(exc, kind).detail)
        return MxHost(name, preference, tuple(addresses), "; ".join(problems))

    def _server(self, host: MxHost, address: str) -> ServerConfig:
        """One address of an MX host, as the SMTP session takes it."""
        section = self.section
        verify: TlsConfig = replace(
            section.tls_config,
            server_name=section.tls_config.server_name or host.name,
            insecure_skip_verify=(
                section.tls_config.insecure_skip_verify or section.starttls == "opportunistic"
            ),
        )
        return ServerConfig(
            host=address,
            port=section.port,
            tls="starttls",
            username="",
            password=None,
            oauth2=None,
            tls_config=verify,
        )

    async def _connect(self, domain: str, hosts: list[MxHost]) -> tuple[SmtpSession, str]:
        """A greeted session with the first host that accepts a connection, and its name."""
        tried: list[str] = []
        candidates = [(host, address) for host in hosts for address in host.addresses]
        last: ProbeFailure | None = None
        for index, (host, address) in enumerate(candidates):
            where = f"{host.name} [{address}]"
            session = SmtpSession(self._server(host, address), self.trace.say)
            try:
                if index < len(candidates) - 1:
                    async with asyncio.timeout(min(CONNECT_WAIT, self.trace.remaining())):
                        await session.open()
                else:
                    await session.open()
            except (ProbeFailure, TimeoutError) as exc:
                session.abort()
                last = exc if isinstance(exc, ProbeFailure) else None
                if last is None:
                    last = ProbeFailure(Reason.TIMEOUT, "no connection in time")
                if last.reason not in FALL_BACK:
                    raise ProbeFailure(last.reason, f"{where}: {last.detail}") from None
                tried.append(f"{where}: {last.detail}")
                self.trace.say(f"{where}: {last.detail}; trying the next address")
                continue
            try:
                with _at(where):
                    await session.greet()
            except BaseException:
                session.abort()
                raise
            return session, where
        if last is None:
            missing = "; ".join(f"{h.name}: {h.problem or 'no addresses'}" for h in hosts)
            raise ProbeFailure(Reason.DNS, f"no MX host of {domain} has an address: {missing}")
        raise ProbeFailure(
            last.reason, f"no MX host of {domain} accepted a connection: {'; '.join(tried)}"
        )

    def sign(self, raw: bytes) -> bytes:
        """The message with a DKIM-Signature field on top, if a key is configured."""
        key = self.section.dkim
        if key is None:
            return raw
        signature = dkim.sign(
            raw,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key.reveal().encode(),
            canonicalize=(b"relaxed", b"relaxed"),
        )
        return bytes(signature) + raw

    async def send(self, probe: ProbeMessage) -> float:
        domain = probe.mail_to.rpartition("@")[2]
        with self.trace.phase(Phase.MX_LOOKUP):
            hosts = await self.lookup(domain)
        with self.trace.phase(Phase.MX_CONNECT):
            session, where = await self._connect(domain, hosts)
        async with session:
            await self._secure(session, where)
            with self.trace.phase(Phase.MX_SEND), _at(where):
                await session.send(
                    self.section.username or probe.mail_from,
                    probe.mail_to,
                    self.sign(probe.raw),
                )
            accepted = time.monotonic()
            try:
                async with asyncio.timeout(QUIT_WAIT):
                    await session.quit()
            except TimeoutError:
                pass
        return accepted

    async def _secure(self, session: SmtpSession, where: str) -> None:
        if self.section.starttls == "opportunistic" and not session.client.supports_extension(
            "starttls"
        ):
            self.trace.say("no STARTTLS offered: sending in the clear (tls: opportunistic)")
            return
        with self.trace.phase(Phase.MX_TLS), _at(where):
            await session.starttls()
        if session.tls is not None:
            self.trace.found.tls["mx"] = session.tls
