"""The receiving side's checks of a sending domain, as real servers run them: Debian's
``opendkim`` and ``opendmarc`` milters and ``postfix-policyd-spf-python``, each a private
instance with its own configuration under ``root``, on high 127.0.0.1 ports.

Plugged into a :class:`testing.mailstack.MailStack` with ``mx_milters=checks.milters`` and
``mx_policy=checks.policy``, they add ``Authentication-Results`` fields with
``authserv_id`` to mail arriving on the stack's MX port:

* SPF: ``policyd-spf`` (``Header_Type = AR``), a Postfix policy service. Postfix would spawn
  it per connection; here a small listener does the same (the connection becomes its stdin
  and stdout), so that it runs as root from a private directory. It looks the SPF record
  up in ``dns`` (a :class:`testing.dns.DnsServer`): its DNS library is pointed there.
  ``skip_addresses`` is emptied (the default skips 127.0.0.0/8) and nothing is rejected:
  a failing check shows in the header only.
* DKIM: ``opendkim`` in verify mode, resolving keys through libunbound forwarded to ``dns``.
* DMARC: ``opendmarc``, trusting the SPF and DKIM fields of ``authserv_id``. It resolves
  with the C library's resolver, which only asks port 53; so its one lookup, the
  ``_dmarc`` record, is answered from the same zone data through its ``TestDNSData`` file,
  written from ``dns.txt`` when the checks start or :meth:`Milters.reload` is called.

Requirements: the Debian packages ``opendkim``, ``opendmarc``,
``postfix-policyd-spf-python``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import socketserver
import subprocess
import textwrap
import threading
import time
from pathlib import Path

from testing.dns import DnsServer
from testing.mailstack import HOST, _free_ports, _tail
from testing.service import Service

OPENDKIM = "/usr/sbin/opendkim"
OPENDMARC = "/usr/sbin/opendmarc"
POLICYD_SPF = "/usr/bin/policyd-spf"
SYSTEM_PYTHON = "/usr/bin/python3"


class MilterError(RuntimeError):
    """A check did not start; the message has its log."""


class _Spawner(socketserver.ThreadingTCPServer):
    """What Postfix's spawn(8) does: run a command per connection, the socket as its stdin
    and stdout."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.children: set[subprocess.Popen[bytes]] = set()
        super().__init__((HOST, port), _SpawnHandler)


class _SpawnHandler(socketserver.BaseRequestHandler):
    server: _Spawner

    def handle(self) -> None:
        with self.server.log.open("ab") as log:
            child = subprocess.Popen(
                self.server.argv,
                stdin=self.request.fileno(),
                stdout=self.request.fileno(),
                stderr=log,
            )
        self.server.children.add(child)
        try:
            child.wait()
        finally:
            self.server.children.discard(child)


class Milters(Service):
    """SPF, DKIM and DMARC checks of inbound mail, adding ``Authentication-Results``."""

    def __init__(self, root: Path, dns: DnsServer, authserv_id: str = "mx.example.test") -> None:
        for exe in (OPENDKIM, OPENDMARC, POLICYD_SPF, SYSTEM_PYTHON):
            if shutil.which(exe) is None:
                raise MilterError(
                    f"missing {exe} (apt-get install opendkim opendmarc postfix-policyd-spf-python)"
                )
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.dns = dns
        self.authserv_id = authserv_id
        self.dkim_port, self.dmarc_port, self.spf_port = _free_ports(3)
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._spawner: _Spawner | None = None

    @property
    def milters(self) -> tuple[str, ...]:
        """The milters in the order Postfix must call them (DKIM before DMARC)."""
        return (f"inet:{HOST}:{self.dkim_port}", f"inet:{HOST}:{self.dmarc_port}")

    @property
    def policy(self) -> str:
        """The SPF policy service, for ``check_policy_service``."""
        return f"inet:{HOST}:{self.spf_port}"

    def _write(self) -> None:
        root = self.root
        # unbound answers special-use names (test., invalid.) itself unless told not to
        zones = "".join(f'  local-zone: "{zone}." nodefault\n' for zone in self.dns.local)
        (root / "unbound.conf").write_text(
            textwrap.dedent("""\
            server:
              do-not-query-localhost: no
              module-config: "iterator"
              cache-max-ttl: 0
            """)
            + zones
            + textwrap.dedent(f"""\
            forward-zone:
              name: "."
              forward-addr: {HOST}@{self.dns.port}
            """)
        )
        (root / "opendkim.conf").write_text(
            textwrap.dedent(f"""\
            Mode v
            Socket inet:{self.dkim_port}@[{HOST}]
            AuthservID {self.authserv_id}
            AlwaysAddARHeader yes
            Background no
            Syslog no
            LogResults yes
            ResolverConfiguration {root / "unbound.conf"}
            """)
        )
        self._write_dmarc_dns()
        # opendmarc skips mail from 127.0.0.1 unless told to skip another host
        (root / "dmarc-ignore.txt").write_text("192.0.2.255\n")
        (root / "opendmarc.conf").write_text(
            textwrap.dedent(f"""\
            Socket inet:{self.dmarc_port}@[{HOST}]
            AuthservID {self.authserv_id}
            TrustedAuthservIDs {self.authserv_id}
            Background false
            Syslog false
            RequiredHeaders false
            SPFIgnoreResults false
            SPFSelfValidate false
            TestDNSData {root / "dmarc-dns.txt"}
            IgnoreHosts {root / "dmarc-ignore.txt"}
            """)
        )
        (root / "policyd-spf.conf").write_text(
            textwrap.dedent(f"""\
            debugLevel = 1
            TestOnly = 1
            HELO_reject = False
            Mail_From_reject = False
            PermError_reject = False
            TempError_Defer = False
            skip_addresses = 192.0.2.255/32
            Header_Type = AR
            Authserv_Id = {self.authserv_id}
            Hide_Receiver = No
            """)
        )
        (root / "policyd-spf.py").write_text(
            textwrap.dedent(f"""\
            # policyd-spf with its DNS library (py3dns) asking the test's DNS server.
            import sys

            import spf  # noqa: F401  (picks the DNS library and reads resolv.conf)
            import DNS

            DNS.defaults["server"] = ["{HOST}"]
            DNS.defaults["port"] = {self.dns.port}
            from spf_engine.policyd_spf import main

            sys.argv = ["policyd-spf", "{root / "policyd-spf.conf"}"]
            sys.exit(main())
            """)
        )

    def _write_dmarc_dns(self) -> None:
        lines = [
            f"{name} {text}\n" for name, text in self.dns.txt.items() if name.startswith("_dmarc.")
        ]
        (self.root / "dmarc-dns.txt").write_text("".join(lines))

    def start(self) -> None:
        if self._processes:
            return
        self._write()
        try:
            for name, argv in (
                ("opendkim", [OPENDKIM, "-f", "-x", str(self.root / "opendkim.conf")]),
                ("opendmarc", [OPENDMARC, "-f", "-c", str(self.root / "opendmarc.conf")]),
            ):
                self._processes[name] = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=(self.root / f"{name}.log").open("ab"),
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                )
            self._spawner = _Spawner(
                self.spf_port,
                [SYSTEM_PYTHON, str(self.root / "policyd-spf.py")],
                self.root / "policyd-spf.log",
            )
            threading.Thread(target=self._spawner.serve_forever, daemon=True).start()
            for name, port in (("opendkim", self.dkim_port), ("opendmarc", self.dmarc_port)):
                self._wait_listening(name, port)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, name: str, port: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._processes[name].poll() is not None:
                break
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
                return
            time.sleep(0.02)
        raise MilterError(f"{name} is not listening on port {port}:\n{self.log_tail()}")

    def reload(self) -> None:
        """Take up changed ``_dmarc`` records (opendmarc reads them at start)."""
        process = self._processes.pop("opendmarc", None)
        if process is not None:
            process.terminate()
            process.wait(5)
        self._write_dmarc_dns()
        self._processes["opendmarc"] = subprocess.Popen(
            [OPENDMARC, "-f", "-c", str(self.root / "opendmarc.conf")],
            stdin=subprocess.DEVNULL,
            stdout=(self.root / "opendmarc.log").open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.root,
        )
        self._wait_listening("opendmarc", self.dmarc_port)

    def stop(self) -> None:
        if self._spawner is not None:
            self._spawner.shutdown()
            self._spawner.server_close()
            for child in list(self._spawner.children):
                child.kill()
            self._spawner = None
        for process in self._processes.values():
            process.terminate()
        for process in self._processes.values():
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self._processes.clear()

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(
            f"--- {name} ---\n{_tail(self.root / f'{name}.log', n)}"
            for name in ("opendkim", "opendmarc", "policyd-spf")
        )
