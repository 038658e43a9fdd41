"""A real DNS server for tests: Debian's ``dnsmasq`` serving a small zone on 127.0.0.1.

The ``mx`` sender looks up MX records and addresses, and the receiving side's milters look
up SPF, DKIM keys and DMARC policies: all from this server. It answers only from the
records given here (``--no-resolv``, ``--no-hosts``) and says NXDOMAIN for any other name
under the zones in ``local`` (default ``test``). dnsmasq reads its records at start, so a
change restarts it on the same port (a few milliseconds).

    with DnsServer(tmp_path) as dns:
        dns.mx["example.test"] = [(10, "mx1.example.test"), (20, "mx2.example.test")]
        dns.a["mx1.example.test"] = "127.0.0.2"
        dns.txt["sender.test"] = "v=spf1 ip4:127.0.0.1 -all"
        dns.apply()

Requirements: the Debian package ``dnsmasq-base`` (the binary, without a system service).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from testing.mailstack import HOST, _free_ports, _tail
from testing.service import Service

DNSMASQ = "/usr/sbin/dnsmasq"


class DnsError(RuntimeError):
    """dnsmasq did not start or stop as asked; the message has its log."""


def _quoted(text: str) -> str:
    """A TXT value as dnsmasq takes it: quoted strings of at most 255 characters each."""
    if any(c in text for c in '"\\\n'):
        raise ValueError(f"not a plain TXT value: {text!r}")
    parts = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return ",".join(f'"{part}"' for part in parts)


class DnsServer(Service):
    """dnsmasq on ``127.0.0.1:port``, authoritative-ish for the names it is given."""

    def __init__(self, root: Path, local: tuple[str, ...] = ("test",)) -> None:
        if shutil.which(DNSMASQ) is None:
            raise DnsError(f"missing {DNSMASQ} (apt-get install dnsmasq-base)")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = _free_ports(1)[0]
        self.local = local
        self.mx: dict[str, list[tuple[int, str]]] = {}
        """MX records: domain -> (preference, host) pairs."""
        self.a: dict[str, str] = {}
        """A records: name -> IPv4 address."""
        self.txt: dict[str, str] = {}
        """TXT records: name -> text (split into strings of 255 as needed)."""
        self.conf = self.root / "dnsmasq.conf"
        self.log = self.root / "dnsmasq.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as the exporter's ``resolver`` and unbound's forwarders take it."""
        return f"{HOST}:{self.port}"

    def _config(self) -> str:
        lines = [
            f"port={self.port}",
            f"listen-address={HOST}",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "no-negcache",
            "cache-size=0",
            "log-queries",
            f"log-facility={self.log}",
            *(f"local=/{zone}/" for zone in self.local),
        ]
        for domain, records in self.mx.items():
            lines += [f"mx-host={domain},{host},{preference}" for preference, host in records]
        lines += [f"host-record={name},{address}" for name, address in self.a.items()]
        lines += [f"txt-record={name},{_quoted(text)}" for name, text in self.txt.items()]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self._process is not None:
            return
        self.conf.write_text(self._config())
        self._process = subprocess.Popen(
            [DNSMASQ, "--keep-in-foreground", f"--conf-file={self.conf}", "--pid-file="],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "dnsmasq.err").open("wb"),
        )
        deadline = time.monotonic() + 5
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DnsError(
                    f"dnsmasq did not answer on {self.address}:\n"
                    f"{_tail(self.root / 'dnsmasq.err', 20)}\n{_tail(self.log, 20)}"
                )
            time.sleep(0.02)

    def _answers(self) -> bool:
        query = dns.message.make_query(f"probe.{self.local[0]}", "A")
        with contextlib.suppress(OSError, dns.exception.Timeout):
            reply = dns.query.udp(query, HOST, port=self.port, timeout=0.2)
            return reply.rcode() in (dns.rcode.NXDOMAIN, dns.rcode.NOERROR)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def apply(self) -> None:
        """Serve the records as they are now (restarts dnsmasq on the same port)."""
        self.stop()
        self.start()
