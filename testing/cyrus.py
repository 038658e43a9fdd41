"""A private, real Cyrus IMAP server with JMAP, for tests of the JMAP transport.

Debian's ``cyrus-common`` (master, lmtpd, sievec) and ``cyrus-caldav`` (httpd, built with
JMAP) install beside Dovecot; ``cyrus-imapd`` itself, which conflicts with it, is not
needed: JMAP is served by httpd. `CyrusServer` writes its own ``imapd.conf`` and
``cyrus.conf`` under a private directory and runs Cyrus's master on free 127.0.0.1 ports::

    client --JMAP (HTTP Basic)--> httpd (http_port)  /.well-known/jmap -> /jmap
    Postfix --LMTP--> lmtpd (lmtp_port) --> mailboxes (sieve: file_into_junk)
    httpd EmailSubmission --SMTP--> smtp_relay (a MailStack's MX port), if given

Users live in a sasldb of its own (``saslpasswd2``); logins are ``NAME@cyrus.test`` (or
``NAME``), the JMAP account id is ``NAME``. Each user starts with an empty Inbox and Drafts,
Sent, Junk and Trash mailboxes with their roles (created by a first delivery, then emptied).
Bearer authentication is Cyrus's JSON Web Tokens (``http_jwt_key_dir``): `token` makes one
(HS256, signed with this server's key, ``sub`` the bare user name).

Answers worth knowing (Cyrus 3.6.1, Debian 12):

* a wrong password: ``401 Unauthorized`` with an HTML body; a token that is stale or signed
  with another key: ``401`` with ``WWW-Authenticate: Bearer``;
* ``/.well-known/jmap`` redirects (301) to ``/jmap``; URLs in the session are relative;
* the ``header`` filter of ``Email/query`` matches a substring of the value;
* the event source (``/jmap/eventsource/``) answers ``204 No Content``: no push, so the
  transport polls;
* Sieve scripts are found by the Inbox's unique id (``sieve/uuid/X/Y/ID/defaultbc``).

Cyrus logs to syslog only (no ``/dev/log`` here): `log_tail` shows the master's own output.
Requirements: root (master drops to the ``cyrus`` user), the packages above and
``sasl2-bin``; the system's Cyrus service need not (and should not) run.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shutil
import smtplib
import subprocess
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testing.mailstack import HOST, _free_ports, _greeting, _refuses, _tail, _terminate
from testing.service import Service

__all__ = ["CyrusError", "CyrusServer", "CyrusUser"]

BIN = Path("/usr/lib/cyrus/bin")
DOMAIN = "cyrus.test"
CYRUS_USER = "cyrus"
CYRUS_GROUP_ID = 8
"""Debian's ``mail`` group, the cyrus user's own."""
FOLDERS = ("Drafts", "Sent", "Junk", "Trash")
"""Created with the Inbox, each with the special use of its name (JMAP's roles)."""
JUNK_SCRIPT = textwrap.dedent("""\
    require ["fileinto"];
    if exists "X-Mailbox-Probe-Id" { fileinto "Junk"; }
    """)
"""What `file_into_junk` installs: every probe goes to Junk, as a spam filter might file it."""
START_TIMEOUT = 15.0
JWT_KEY_BYTES = 32
JWT_MAX_AGE = 3600
"""Seconds a Bearer token (`token`) is good for after its ``iat``."""
JMAP = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
_CMD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_running: set[CyrusServer] = set()


class CyrusError(RuntimeError):
    """Cyrus could not be set up, started or used."""


@dataclass(frozen=True)
class CyrusUser:
    name: str
    password: str

    @property
    def address(self) -> str:
        return f"{self.name}@{DOMAIN}"

    @property
    def login(self) -> str:
        return self.address


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.cleanup()


class CyrusServer(Service):
    """Cyrus master with httpd (JMAP) and lmtpd on loopback, all state in a private
    directory. ``smtp_relay`` (a port on 127.0.0.1 taking mail without AUTH) is where JMAP
    submissions go."""

    domain = DOMAIN

    def __init__(self, root: Path, *, smtp_relay: int | None = None) -> None:
        self.check_requirements()
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        # The cyrus user must reach every file: a private directory in the system temp dir
        # (pytest's are mode 0700), linked from root.
        self.state = Path(tempfile.mkdtemp(prefix="cyrus-"))
        self.state.chmod(0o711)
        link = self.root / "cyrus"
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(self.state)
        self.http_port, self.lmtp_port = _free_ports(2)
        self.smtp_relay = smtp_relay
        self.conf = self.state / "imapd.conf"
        self.cyrus_conf = self.state / "cyrus.conf"
        self.sasldb = self.state / "sasldb2"
        self.sieve_dir = self.state / "sieve"
        self.master_log = self.root / "cyrus-master.log"
        self._master: subprocess.Popen[bytes] | None = None
        self._users: dict[str, CyrusUser] = {}
        uid = pwd.getpwnam(CYRUS_USER).pw_uid
        self._jwt_key = secrets.token_bytes(JWT_KEY_BYTES)
        for name in ("conf", "spool", "sieve", "run", "tmp", "jwt"):
            (self.state / name).mkdir(exist_ok=True)
            os.chown(self.state / name, uid, CYRUS_GROUP_ID)
        self._write_configs()

    @property
    def url(self) -> str:
        """The server's base URL; the session resource is at ``/.well-known/jmap``."""
        return f"http://{HOST}:{self.http_port}"

    @staticmethod
    def check_requirements() -> None:
        problems = []
        if os.geteuid() != 0:
            problems.append("must run as root (Cyrus's master drops to the cyrus user)")
        for exe in (BIN / "master", BIN / "httpd", BIN / "lmtpd", BIN / "sievec"):
            if not os.access(exe, os.X_OK):
                problems.append(f"missing {exe}")
        if shutil.which("saslpasswd2", path=_CMD_ENV["PATH"]) is None:
            problems.append("missing saslpasswd2")
        try:
            pwd.getpwnam(CYRUS_USER)
        except KeyError:
            problems.append("missing system user cyrus")
        if problems:
            raise CyrusError(
                "cannot run Cyrus: "
                + "; ".join(problems)
                + " (apt-get install cyrus-common cyrus-caldav sasl2-bin)"
            )

    # ------------------------------------------------------------ configuration

    def _imapd_conf(self) -> str:
        state = self.state
        folders = "|".join(FOLDERS)
        special = "".join(f"xlist-{name.lower()}: {name}\n" for name in FOLDERS)
        relay = (
            f"smtp_backend: host\nsmtp_host: {HOST}:{self.smtp_relay}\n"
            if self.smtp_relay is not None
            else "smtp_backend: host\nsmtp_host: 127.0.0.1:9\n"
        )
        return (
            textwrap.dedent(f"""\
            # Generated by testing/cyrus.py: a private instance, nothing from /etc.
            configdirectory: {state}/conf
            partition-default: {state}/spool
            sievedir: {state}/sieve
            temp_path: {state}/tmp
            servername: {DOMAIN}
            defaultdomain: {DOMAIN}
            virtdomains: userid
            admins: cyrus
            sasl_pwcheck_method: auxprop
            sasl_auxprop_plugin: sasldb
            sasl_sasldb_path: {self.sasldb}
            sasl_mech_list: PLAIN LOGIN
            allowplaintext: yes
            httpmodules: jmap
            conversations: yes
            conversations_db: twoskip
            unixhierarchysep: yes
            altnamespace: yes
            autocreate_quota: 0
            autocreate_post: yes
            autocreate_inbox_folders: {folders}
            autocreate_specialuse_folders: {folders}
            lmtp_fuzzy_mailbox_match: yes
            lmtpsocket: {state}/run/lmtp
            idlesocket: {state}/run/idle
            notifysocket: {state}/run/notify
            mboxname_lockpath: {state}/run/lock
            statuscache: no
            httpallowcompress: no
            http_jwt_key_dir: {state}/jwt
            http_jwt_max_age: {JWT_MAX_AGE}
            """)
            + special
            + relay
        )

    def _cyrus_conf(self) -> str:
        conf = self.conf
        return textwrap.dedent(f"""\
            START {{
              recover cmd="ctl_cyrusdb -r -C {conf}"
            }}
            SERVICES {{
              http cmd="httpd -C {conf}" listen="{HOST}:{self.http_port}" prefork=0
              lmtp cmd="lmtpd -a -C {conf}" listen="{HOST}:{self.lmtp_port}" prefork=0
            }}
            EVENTS {{
            }}
            """)

    def _write_configs(self) -> None:
        key = base64.b64encode(self._jwt_key).decode()
        keyfile = self.state / "jwt" / "hmac.key"
        keyfile.write_text(f"-----BEGIN HMAC KEY-----\n{key}\n-----END HMAC KEY-----\n")
        keyfile.chmod(0o644)
        self.conf.write_text(self._imapd_conf())
        self.cyrus_conf.write_text(self._cyrus_conf())
        for path in (self.conf, self.cyrus_conf):
            path.chmod(0o644)

    # ------------------------------------------------------------ running

    def running(self) -> bool:
        return self._master is not None and self._master.poll() is None

    def start(self) -> None:
        """Start the master and wait until httpd and lmtpd answer."""
        if self.running():
            return
        _running.add(self)
        with self.master_log.open("ab") as log:
            self._master = subprocess.Popen(
                [
                    str(BIN / "master"),
                    "-C",
                    str(self.conf),
                    "-M",
                    str(self.cyrus_conf),
                    "-p",
                    str(self.state / "run" / "master.pid"),
                    "-D",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state,
                env=_CMD_ENV,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not self.running():
                raise CyrusError(f"Cyrus's master exited\n{self.log_tail()}")
            line = _greeting(self.lmtp_port)
            if line is not None and line.startswith("220 ") and self._http_answers():
                return
            time.sleep(0.05)
        raise CyrusError(f"Cyrus did not answer within {START_TIMEOUT:.0f}s\n{self.log_tail()}")

    def _http_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/", timeout=1.0):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the master and its children; return once the HTTP port refuses."""
        master = self._master
        if master is not None:
            _terminate(master.pid, set())
            with contextlib.suppress(subprocess.TimeoutExpired):
                master.wait(timeout=5.0)
            self._master = None
            deadline = time.monotonic() + START_TIMEOUT
            while not _refuses(self.http_port):
                if time.monotonic() > deadline:
                    raise CyrusError(f"Cyrus HTTP port {self.http_port} still accepts after stop")
                time.sleep(0.02)
        _running.discard(self)

    def cleanup(self) -> None:
        """Stop, and remove the private directory."""
        self.stop()
        shutil.rmtree(self.state, ignore_errors=True)
        _running.discard(self)

    def log_tail(self, n: int = 40) -> str:
        return f"--- {self.master_log} ---\n{_tail(self.master_log, n)}"

    # ------------------------------------------------------------ users and mail

    def add_user(self, name: str, password: str) -> CyrusUser:
        """A user with that password and an empty Inbox (and the other mailboxes)."""
        user = CyrusUser(name, password)
        self._run(
            ["saslpasswd2", "-p", "-c", "-f", str(self.sasldb), "-u", DOMAIN, name],
            stdin=password.encode(),
        )
        os.chown(self.sasldb, pwd.getpwnam(CYRUS_USER).pw_uid, CYRUS_GROUP_ID)
        self._users[name] = user
        # The mailboxes are made by the first delivery (autocreate_post); then emptied.
        self.deliver(user, b"Subject: welcome\r\n\r\nThe mailboxes are made.\r\n")
        self.destroy_all(user)
        return user

    def token(self, user: CyrusUser, *, key: bytes | None = None, age: int = 0) -> str:
        """A Bearer token for ``user``: a JWT (HS256) signed with this server's key (or
        ``key``), issued ``age`` seconds ago."""

        def part(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        header = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        # The bare name: Cyrus 3.6 takes ``sub`` as the user id as it is, and an address in
        # the default domain would name an account whose upload URL answers 404.
        claims = {"sub": user.name, "iat": int(time.time()) - age}
        payload = part(json.dumps(claims).encode())
        signing = f"{header}.{payload}".encode()
        mac = hmac.new(key or self._jwt_key, signing, hashlib.sha256).digest()
        return f"{header}.{payload}.{part(mac)}"

    def set_password(self, user: CyrusUser, password: str) -> CyrusUser:
        self._run(
            ["saslpasswd2", "-p", "-f", str(self.sasldb), "-u", DOMAIN, user.name],
            stdin=password.encode(),
        )
        changed = CyrusUser(user.name, password)
        self._users[user.name] = changed
        return changed

    def deliver(
        self, user: CyrusUser, message: bytes, sender: str = "harness@example.test"
    ) -> None:
        """Deliver ``message`` to ``user`` over LMTP, as a mail server would."""
        with smtplib.LMTP(HOST, self.lmtp_port, timeout=10.0) as lmtp:
            refused = lmtp.sendmail(sender, [user.address], message)
        if refused:
            raise CyrusError(f"LMTP refused {user.address}: {refused}")

    def _post(self, user: CyrusUser, path: str, data: bytes, content_type: str) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            headers={
                "Content-Type": content_type,
                "Authorization": "Basic "
                + base64.b64encode(f"{user.login}:{user.password}".encode()).decode(),
            },
        )
        with urllib.request.urlopen(request, timeout=10.0) as answer:
            return json.load(answer)

    def jmap(self, user: CyrusUser, calls: list[list[Any]], using: Iterable[str] = JMAP) -> Any:
        """One JMAP request as ``user``: the method responses."""
        body = json.dumps({"using": list(using), "methodCalls": calls}).encode()
        return self._post(user, "/jmap/", body, "application/json")["methodResponses"]

    def put_message(self, user: CyrusUser, raw: bytes, role: str = "inbox") -> str:
        """Put a message into the mailbox with ``role`` (``Email/import``), as if it had
        arrived there; its id. The same bytes twice in one account are refused."""
        blob = self._post(user, f"/jmap/upload/{user.name}/", raw, "message/rfc822")["blobId"]
        mailbox = self.mailboxes(user)[role]
        emails = {"m": {"blobId": blob, "mailboxIds": {mailbox: True}}}
        [[_, made, _]] = self.jmap(
            user, [["Email/import", {"accountId": user.name, "emails": emails}, "i"]]
        )
        if not (made.get("created") or {}).get("m"):
            raise CyrusError(f"Email/import refused: {made.get('notCreated')}")
        return str(made["created"]["m"]["id"])

    def mailboxes(self, user: CyrusUser) -> dict[str, str]:
        """Mailbox ids by role (``inbox``, ``junk``, ...)."""
        [[_, found, _]] = self.jmap(user, [["Mailbox/get", {"accountId": user.name}, "m"]])
        return {item["role"]: item["id"] for item in found["list"] if item.get("role")}

    def messages(self, user: CyrusUser, role: str = "inbox") -> list[dict[str, Any]]:
        """Every message of the mailbox with ``role``: id, subject, and the probe header."""
        mailbox = self.mailboxes(user)[role]
        query = {"accountId": user.name, "filter": {"inMailbox": mailbox}}
        fetch = {
            "accountId": user.name,
            "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
            "properties": ["id", "subject", "header:X-Mailbox-Probe-Id:asText"],
        }
        responses = self.jmap(user, [["Email/query", query, "q"], ["Email/get", fetch, "g"]])
        return list(responses[1][1]["list"])

    def all_messages(self, user: CyrusUser) -> list[dict[str, Any]]:
        """Every message of every mailbox of the account."""
        fetch = {
            "accountId": user.name,
            "#ids": {"resultOf": "q", "name": "Email/query", "path": "/ids"},
            "properties": ["id", "subject", "mailboxIds", "header:X-Mailbox-Probe-Id:asText"],
        }
        responses = self.jmap(
            user,
            [["Email/query", {"accountId": user.name}, "q"], ["Email/get", fetch, "g"]],
        )
        return list(responses[1][1]["list"])

    def destroy_all(self, user: CyrusUser) -> None:
        ids = [item["id"] for item in self.all_messages(user)]
        if ids:
            self.jmap(user, [["Email/set", {"accountId": user.name, "destroy": ids}, "d"]])

    def file_into_junk(self, user: CyrusUser, on: bool = True) -> None:
        """File every probe message delivered to ``user`` into Junk (a Sieve script), or
        stop doing so."""
        inbox = self.mailboxes(user)["inbox"]
        folder = self.sieve_dir / "uuid" / inbox[0] / inbox[1] / inbox
        active = folder / "defaultbc"
        if not on:
            with contextlib.suppress(FileNotFoundError):
                active.unlink()
            return
        folder.mkdir(parents=True, exist_ok=True)
        script, compiled = folder / "junk.script", folder / "junk.bc"
        script.write_text(JUNK_SCRIPT)
        self._run([str(BIN / "sievec"), "-C", str(self.conf), str(script), str(compiled)])
        with contextlib.suppress(FileNotFoundError):
            active.unlink()
        active.symlink_to(compiled.name)
        uid = pwd.getpwnam(CYRUS_USER).pw_uid
        for path in (self.sieve_dir, *self.sieve_dir.rglob("*")):
            os.chown(path, uid, CYRUS_GROUP_ID, follow_symlinks=False)

    def _run(self, argv: list[str], stdin: bytes = b"") -> str:
        try:
            done = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                env=_CMD_ENV,
                cwd="/",
                timeout=30.0,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CyrusError(f"{' '.join(argv)}: {exc}") from exc
        if done.returncode != 0:
            raise CyrusError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
            )
        return done.stdout.decode(errors="replace")

    def __repr__(self) -> str:
        return (
            f"CyrusServer(state={str(self.state)!r}, http={self.http_port}, lmtp={self.lmtp_port})"
        )
