"""A private, real Postfix + Dovecot mail stack for tests and demos.

The exporter talks SMTP and IMAP to real servers, so its tests should too:
mocks would not catch protocol details (greetings, AUTH replies, maildir
behaviour, queueing).  `MailStack` writes a self-contained configuration
for the Debian ``postfix`` and ``dovecot-imapd``/``dovecot-lmtpd`` packages
under a directory of your choice, runs both daemons on free 127.0.0.1
ports and can inject the faults the exporter must detect (deferred
delivery, a broken password database, a stopped IMAP server).

Layout and data flow::

    client --SMTP AUTH--> postfix smtpd (smtp_port)
                            |  SASL: dovecot auth (auth_port)
                            v
                          postfix queue --lmtp--> dovecot lmtp (lmtp_port)
                                                    v
    client --IMAP-------> dovecot imap (imap_port)  maildir (root/mail/NAME/Maildir)
    client --POP3-------> dovecot pop3 (pop3_port)  the same maildir

Logins use the full address (``alice@example.test``); a bare ``alice`` is
accepted too because Dovecot appends ``auth_default_realm``.  Passwords are
stored in plain text (scheme PLAIN), one Dovecot passwd-file per user in
``root/dovecot/passwd.d/``: Dovecot keeps using a passwd-file it read for
the rest of that second, so a single shared file would make a user added
while running, or a broken database, take effect up to a second late.
Mail is stored as ``nobody:nogroup``.

Answers worth knowing (Postfix 3.7, Dovecot 2.3.19):

* wrong password: IMAP ``NO [AUTHENTICATIONFAILED] Authentication failed.``,
  SMTP ``535 5.7.8 Error: authentication failed: (reason unavailable)``, both
  after up to 0.5 s (Dovecot answers failures on a 500 ms timer);
* `break_passwd_file`: IMAP ``NO [UNAVAILABLE] Temporary authentication
  failure. [HOST:TIME]`` but SMTP the same 535 as a wrong password (Postfix's
  Dovecot SASL client ignores Dovecot's "temporary" flag); LMTP delivery
  gets ``451 4.3.0`` so mail stays queued;
* Dovecot stopped: IMAP connection refused; SMTP connections are accepted
  and closed before the greeting (smtpd cannot fetch the SASL mechanisms and
  exits), see `stop_dovecot`.

Optional, all off by default (then neither STARTTLS nor XOAUTH2 is offered, and mail
leaves the stack for no other domain):

* ``tls=TlsFiles(cert, key)``: STARTTLS on `smtp_port` and `imap_port`
  (AUTH also allowed before it), plus implicit TLS on `smtps_port` and
  `imaps_port`; POP3 likewise (STLS on `pop3_port`, implicit TLS on
  `pop3s_port`).  Neither daemon checks the certificate's dates: an expired
  one is served without a warning, so the client is the one to reject it.
* ``oauth2_introspection_url=URL``: SASL XOAUTH2 and OAUTHBEARER on both
  protocols (Postfix relays Dovecot's list), checked by Dovecot's oauth2
  passdb, which POSTs ``token=TOKEN&client_id=&client_secret=`` (form) to
  URL on every attempt (no cache) and wants ``{"active": true, "username":
  ADDRESS}`` back, ADDRESS matching the login; PLAIN/LOGIN keep using the
  passwords.  See ``tests/identity.py`` for a provider.  A rejected token
  gets the RFC 7628 error challenge first: IMAP ``+ BASE64``, SMTP ``334
  BASE64`` of ``{"status":"401","schemes":"bearer","scope":"mail"}``
  (OAUTHBEARER: ``{"status":"invalid_token"}``); after the client's empty
  answer IMAP ``NO [AUTHENTICATIONFAILED] Authentication failed.``, SMTP the
  usual 535.  Provider unreachable: no challenge; IMAP ``NO [UNAVAILABLE]
  Temporary authentication failure. [HOST:TIME]``, SMTP 535.
* ``mx=True``: a second smtpd on `mx_port` that takes mail without AUTH for the stack's
  domain (and routed domains), as a domain's MX on port 25 does: for services that relay
  mail to the stack (the API simulators).
* ``mx_milters=("inet:127.0.0.1:PORT", ...)``, ``mx_policy="inet:127.0.0.1:PORT"``: milters
  (``milter_default_action = accept``) and a policy service (after
  ``reject_unauth_destination``) on the MX port only, e.g. the SPF, DKIM and DMARC checks
  of ``testing/milters.py``. With ``mx`` the MX port can also be made to refuse every
  client (`refuse_mx`, e.g. ``421 4.3.2 ...``) or to offer no STARTTLS (`mx_starttls`).
* `route(domain, port)`: mail for ``domain`` is relayed over SMTP to ``127.0.0.1:port``
  (``relay_domains`` and an inline ``transport_maps``), e.g. to a simulator's inbound SMTP
  listener.  `defer_delivery("smtp")` then holds that mail in the queue.

Requirements: root (the Postfix master must run as root), the Debian
packages ``postfix dovecot-imapd dovecot-lmtpd``; the system daemons need
not (and should not) run.  Nothing under /etc is read or changed.

Permissions: Dovecot refuses to deliver mail as root and Postfix opens its
data directory as the ``postfix`` user, so those directories must be
reachable by unprivileged users.  Directories made by pytest or
``tempfile.mkdtemp`` have mode 0700 parents; in that case the maildirs, the
Postfix data directory (and Dovecot's socket directory when the path is too
long for a unix socket) live in a private ``mailstack-*`` directory in the
system temp dir, linked from ``root``.  It is removed by `cleanup()`,
when the `MailStack` is garbage-collected, or at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import grp
import itertools
import math
import os
import pwd
import random
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import textwrap
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from testing.service import Service

__all__ = ["MailStack", "MailStackError", "MailUser", "TlsFiles"]

HOST = "127.0.0.1"
MAIL_USER = "nobody"
MAIL_GROUP = "nogroup"
_POSTFIX_LOGIN = "postfix"
_DAEMON_EXES = ("/usr/sbin/dovecot", "/usr/lib/dovecot/", "/usr/lib/postfix/", "/usr/sbin/post")
_CMD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
_MAX_SOCKET_DIR = 70  # sun_path is 108 bytes; Dovecot appends names of up to ~30
_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")  # within Dovecot's auth_username_chars, no '+'


class MailStackError(RuntimeError):
    """A daemon did not start, stop or reconfigure as asked; the message has the log tail."""


@dataclass(frozen=True)
class MailUser:
    """One mailbox; `address` is also the login name on both protocols."""

    name: str
    password: str
    address: str


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate for both daemons: `cert_file` is a PEM chain, leaf first."""

    cert_file: Path
    key_file: Path

    @classmethod
    def write(cls, directory: Path, chain_pem: bytes, key_pem: bytes) -> TlsFiles:
        """Store in-memory PEMs (e.g. from trustme) as ``cert.pem`` and ``key.pem``."""
        directory.mkdir(parents=True, exist_ok=True)
        files = cls(cert_file=directory / "cert.pem", key_file=directory / "key.pem")
        files.cert_file.write_bytes(chain_pem)
        files.key_file.write_bytes(key_pem)
        files.key_file.chmod(0o600)
        return files


# ---------------------------------------------------------------- processes


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    pgrp: int
    state: str


def _proc(pid: int) -> _Proc | None:
    """Parse /proc/PID/stat; the comm field may contain spaces and parentheses."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return _Proc(pid, int(fields[1]), int(fields[2]), fields[0])


def _all_procs() -> list[_Proc]:
    procs = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _proc(int(entry))
            if info is not None:
                procs.append(info)
    return procs


def _alive(pid: int) -> bool:
    """True for a running process; zombies count as dead (PID 1 may reap them late)."""
    info = _proc(pid)
    return info is not None and info.state not in ("Z", "X")


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def process_family(master: int) -> set[int]:
    """The master, its process group and all its descendants."""
    procs = _all_procs()
    members = {p.pid for p in procs if p.pgrp == master}
    members.add(master)
    children: dict[int, list[int]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p.pid)
    todo = [master]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in members:
                members.add(child)
                todo.append(child)
    return {pid for pid in members if _alive(pid)}


def _daemons_in(dirs: Iterable[Path]) -> set[int]:
    """Mail daemon processes whose working directory is inside one of `dirs`.

    Catches processes whose master already died or never wrote a pid file;
    the executable check makes sure we never touch, say, a shell cd'ed there.
    """
    prefixes = tuple(str(d.resolve()) for d in dirs)
    found = set()
    for p in _all_procs():
        if p.pid == os.getpid() or p.state in ("Z", "X"):
            continue
        cwd = _readlink(f"/proc/{p.pid}/cwd")
        if not any(cwd == d or cwd.startswith(d + "/") for d in prefixes):
            continue
        if _readlink(f"/proc/{p.pid}/exe").startswith(_DAEMON_EXES):
            found.add(p.pid)
    return found


def _kill(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_dead(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = {pid for pid in pids if _alive(pid)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def _terminate(master: int | None, strays: set[int], timeout: float = 10.0) -> bool:
    """SIGTERM the master (it shuts its children down), then SIGKILL whatever is left.

    Returns whether there was anything to stop.
    """
    if not strays and (master is None or not _alive(master)):
        return False
    family = set(strays)
    if master is not None and _alive(master):
        family |= process_family(master)
        _kill([master], signal.SIGTERM)
        # Dovecot's master otherwise waits ~1 s for idle children to notice it is going.
        _kill(family - {master}, signal.SIGTERM)
        _wait_dead({master}, timeout)
        family |= {p.pid for p in _all_procs() if p.pgrp == master}
    left = _wait_dead(family, 2.0)
    if left:
        _kill(left, signal.SIGKILL)
        _wait_dead(left, 5.0)
    return True


def _master_pid(pid_file: Path, exe: str, cwd: Path) -> int | None:
    """The live master named in `pid_file`, if it really is ours.

    A stale pid file may name a recycled pid: never signal a process that
    is not `exe` running in our directory.
    """
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _alive(pid) or _readlink(f"/proc/{pid}/exe") != exe:
        return None
    if _readlink(f"/proc/{pid}/cwd") != str(cwd.resolve()):
        return None
    return pid


# ---------------------------------------------------------------- sockets


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_claimed_ports: set[int] = set()
_ports_lock = threading.Lock()
_HARNESS_PORTS = range(20000, 32000)
"""Where the harness's servers listen: below Linux's default ephemeral range (32768-60999)."""
_PORTS_OWNER = "MAILSTACK_PORTS_OWNER"
"""``WORKER:PID``: the process that first loaded this module as that pytest-xdist worker (or
as none); the processes it starts inherit it and so know they are not it."""


def _own_ports() -> str:
    """Claim this process's share unless its starter, the same worker, already did."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    owner = os.environ.get(_PORTS_OWNER)
    if owner is None or owner.rpartition(":")[0] != worker:
        owner = os.environ[_PORTS_OWNER] = f"{worker}:{os.getpid()}"
    return owner


_own_ports()
_CHILDREN_SHARE = 4
"""A started process (the demo a test runs) takes the last 1/4 of its starter's ports."""


def _worker_ports() -> range:
    """This process's share of `_HARNESS_PORTS`.

    pytest-xdist runs tests in several worker processes at once (``PYTEST_XDIST_WORKER`` is
    ``gwN``, ``PYTEST_XDIST_WORKER_COUNT`` their number): each takes its own slice, so no two
    workers can pick the same port between checking it and a daemon's bind(). A replacement
    for a crashed worker (a higher N) shares a slice with the one it replaces. A process that
    a test starts and that picks ports itself (the demo) inherits the worker's variables but
    not its `_claimed_ports`, so it takes the slice's last part, which the worker leaves alone.
    """
    share = _HARNESS_PORTS
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        index = int(worker.removeprefix("gw")) % count
    except (ValueError, ZeroDivisionError):
        pass
    else:
        size = len(share) // count
        share = share[index * size : (index + 1) * size]
    split = len(share) - len(share) // _CHILDREN_SHARE
    if _own_ports().rpartition(":")[2] == str(os.getpid()):
        return share[:split]
    return share[split:]


def _free_ports(count: int) -> list[int]:
    """Ports that are free now, in this process's share of the harness's ports (see
    `_worker_ports`) and outside the kernel's ephemeral range.

    Outside that range no outgoing connection can grab the port between
    now and the daemon's bind(); `_claimed_ports` keeps instances in one
    process apart, and so keeps a port for a server that stops and starts again.
    """
    low, high = _ephemeral_range()
    share = _worker_ports()
    candidates = [p for p in share if not low <= p <= high]
    candidates = candidates or list(share)
    ports: list[int] = []
    with _ports_lock:
        for port in random.sample(candidates, len(candidates)):
            if port in _claimed_ports:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((HOST, port))
                except OSError:
                    continue
            ports.append(port)
            _claimed_ports.add(port)
            if len(ports) == count:
                return ports
        _claimed_ports.difference_update(ports)
    raise MailStackError(f"no {count} free TCP ports on 127.0.0.1 in {share}")


def _first_line(sock: socket.socket) -> str:
    """The first line a server sends on a connected socket."""
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r")


def _greeting(port: int, timeout: float = 1.0) -> str | None:
    """The first line the server sends, or None if nothing listens (yet)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            return _first_line(sock)
    except OSError:
        return None


def _tls_greeting(port: int, timeout: float = 1.0) -> str | None:
    """Like `_greeting` on an implicit-TLS port; no verification: expired certs are on purpose."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((HOST, port), timeout=timeout) as raw,
            context.wrap_socket(raw) as sock,
        ):
            return _first_line(sock)
    except OSError:
        return None


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _tail(path: Path, n: int) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:]) if lines else "(empty)"


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    _ext_dirs.discard(path)


def _traversable_by_others(path: Path) -> bool:
    """Can an unprivileged user (nobody, postfix) reach `path`'s children?"""
    for part in [path, *path.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
    return True


# ---------------------------------------------------------------- the stack


_running: set[MailStack] = set()
_ext_dirs: set[str] = set()


@atexit.register
def _stop_all() -> None:
    """Never leave daemons behind, even when a test run is interrupted; then tidy up."""
    for stack in list(_running):
        with contextlib.suppress(Exception):
            stack.stop()
    for path in list(_ext_dirs):  # only after the daemons are gone
        _remove_tree(path)


class MailStack(Service):
    """Postfix (SMTP AUTH, queue) in front of Dovecot (auth, LMTP, IMAP), all private.

    `tls` adds STARTTLS and the implicit-TLS ports (`smtps_port`,
    `imaps_port`, else None); `oauth2_introspection_url` adds XOAUTH2 and
    OAUTHBEARER, checked against that RFC 7662 endpoint.
    """

    domain: str = "example.test"
    hostname: str = "mail.example.test"

    def __init__(
        self,
        root: Path,
        *,
        tls: TlsFiles | None = None,
        oauth2_introspection_url: str | None = None,
        mx: bool = False,
        folders: bool = False,
        mx_milters: tuple[str, ...] = (),
        mx_policy: str | None = None,
    ) -> None:
        self.check_requirements()
        self.root = Path(root).absolute()
        if any(c.isspace() for c in str(self.root)):
            raise ValueError(f"whitespace in {self.root!s} would break the daemons' configs")
        if oauth2_introspection_url is not None and (
            not oauth2_introspection_url.startswith(("http://", "https://"))
            or any(c.isspace() for c in oauth2_introspection_url)
        ):
            raise ValueError(f"not an http(s) URL: {oauth2_introspection_url!r}")
        self.tls = tls
        self.oauth2_introspection_url = oauth2_introspection_url
        self.smtp_port, self.imap_port, self.lmtp_port, self.auth_port = _free_ports(4)
        self.imaps_port: int | None = None
        self.smtps_port: int | None = None
        if tls is not None:
            self.imaps_port, self.smtps_port = _free_ports(2)
        self.mx_port: int | None = _free_ports(1)[0] if mx else None
        self.pop3_port = _free_ports(1)[0]
        self.pop3s_port: int | None = _free_ports(1)[0] if tls is not None else None
        for spec in (*mx_milters, *([mx_policy] if mx_policy else [])):
            if not re.fullmatch(r"inet:127\.0\.0\.1:\d+", spec):
                raise ValueError(f"expected inet:127.0.0.1:PORT, got {spec!r}")
        self.mx_milters = mx_milters
        self.mx_policy = mx_policy
        self.folders = folders
        self._routes: dict[str, tuple[str, int]] = {}
        self._users: dict[str, MailUser] = {}
        self._passwd_broken = False
        self._counter = itertools.count()
        self._mail_uid = pwd.getpwnam(MAIL_USER).pw_uid
        self._mail_gid = grp.getgrnam(MAIL_GROUP).gr_gid
        self._ext: Path | None = None
        self._ext_finalizer: weakref.finalize[[str], MailStack] | None = None

        self.log_dir = self.root / "log"
        self.dovecot_dir = self.root / "dovecot"
        self.dovecot_conf = self.dovecot_dir / "dovecot.conf"
        # One passwd-file per user (path passwd.d/%Lu): Dovecot caches a passwd-file
        # for the rest of the second after each lookup, but forgets missing ones.
        self.passwd_dir = self.dovecot_dir / "passwd.d"
        self._passwd_parked = self.dovecot_dir / "passwd.d.broken"
        self.postfix_etc = self.root / "postfix" / "etc"
        self.postfix_spool = self.root / "postfix" / "spool"
        self.dovecot_log = self.log_dir / "dovecot.log"
        self.postfix_log = self.log_dir / "postfix.log"
        self.tls_dir = self.root / "tls"
        self.oauth2_conf = self.dovecot_dir / "oauth2.conf.ext"

        for d in (self.root, self.log_dir, self.dovecot_dir, self.postfix_etc, self.postfix_spool):
            d.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # ours: let unprivileged daemons pass through
        shared_ok = _traversable_by_others(self.root)
        self.mail_dir = self._place("mail", shared_ok, self._mail_uid, self._mail_gid, 0o711)
        postfix_uid = pwd.getpwnam(_POSTFIX_LOGIN).pw_uid
        self.postfix_data = self._place("postfix-data", shared_ok, postfix_uid, 0, 0o700)
        self.dovecot_run = self._place(
            "dovecot-run", len(str(self.dovecot_dir / "run")) <= _MAX_SOCKET_DIR, 0, 0, 0o755
        )
        self._reset_passwd_dir()
        self._install_tls_files()
        self._write_configs()

    # ------------------------------------------------------------ layout

    def _reset_passwd_dir(self) -> None:
        """Start with no users (also when an earlier stack left a broken state here)."""
        for path in (self.passwd_dir, self._passwd_parked):
            if path.is_symlink():
                path.unlink()
            elif path.exists():
                shutil.rmtree(path)
        self.passwd_dir.mkdir(mode=0o700)

    def _install_tls_files(self) -> None:
        """Copy the certificate and key under root: the caller's files may be temporary.

        Both daemons read them as root (Dovecot's config process, smtpd before
        dropping privileges), so a private directory is fine.
        """
        if self.tls_dir.exists():
            shutil.rmtree(self.tls_dir)
        if self.tls is None:
            return
        self.tls_dir.mkdir(mode=0o700)
        for source, name in ((self.tls.cert_file, "cert.pem"), (self.tls.key_file, "key.pem")):
            target = self.tls_dir / name
            target.write_bytes(Path(source).read_bytes())
            target.chmod(0o600)
        try:  # fail now, not after a 10 s wait for a TLS greeting (dates are not checked)
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
                self.tls_dir / "cert.pem", self.tls_dir / "key.pem"
            )
        except ssl.SSLError as exc:
            raise ValueError(f"unusable certificate/key {self.tls}: {exc}") from exc

    def _place(self, name: str, under_root: bool, uid: int, gid: int, mode: int) -> Path:
        """A directory under root, or in the shared temp dir (linked from root) when it must be."""
        link = {
            "mail": self.root / "mail",
            "postfix-data": self.root / "postfix" / "data",
            "dovecot-run": self.dovecot_dir / "run",
        }[name]
        if link.is_symlink():  # left by an earlier stack on this root
            link.unlink()
        if under_root:
            target = link
        elif link.exists():
            raise MailStackError(f"{link} must move out of {self.root}: use a fresh root")
        else:
            target = self._external() / name
            link.symlink_to(target)
        target.mkdir(exist_ok=True)
        os.chown(target, uid, gid)
        target.chmod(mode)
        return target

    def _external(self) -> Path:
        if self._ext is None:
            ext = Path(tempfile.mkdtemp(prefix="mailstack-"))
            ext.chmod(0o711)
            if not _traversable_by_others(ext):
                shutil.rmtree(ext)
                raise MailStackError(f"{ext.parent} is not reachable by unprivileged users")
            self._ext = ext
            self._ext_finalizer = weakref.finalize(self, _remove_tree, str(ext))
            self._ext_finalizer.atexit = False  # _stop_all does it, after stopping
            _ext_dirs.add(str(ext))
        return self._ext

    def cleanup(self) -> None:
        """Stop, then delete the external directory (if any); `root` is the caller's."""
        self.stop()
        if self._ext_finalizer is not None:
            self._ext_finalizer()

    # ------------------------------------------------------------ users

    def add_user(self, name: str, password: str) -> MailUser:
        """Create (or re-password) a mailbox; takes effect at once, also while running."""
        name = name.lower()
        if not _NAME.fullmatch(name):
            raise ValueError(f"use a plain local part as name (a-z 0-9 . _ -), not {name!r}")
        if not password or any(c in password for c in ":\r\n\0"):
            raise ValueError("a password must be non-empty, without ':' or line breaks")
        user = MailUser(name=name, password=password, address=f"{name}@{self.domain}")
        previous = self._users.get(name)
        self._users[name] = user
        maildir = self.maildir(user)
        for d in (maildir.parent, maildir, maildir / "cur", maildir / "new", maildir / "tmp"):
            d.mkdir(exist_ok=True)
            os.chown(d, self._mail_uid, self._mail_gid)
            d.chmod(0o700)
        self._write_passwd(user)
        if previous is not None and previous != user and not self._passwd_broken:
            self._settle_auth()  # Dovecot may hold the old file for the rest of this second
        return user

    @property
    def users(self) -> list[MailUser]:
        return list(self._users.values())

    def _write_passwd(self, user: MailUser) -> None:
        """Write one user's passwd-file atomically, with an mtime Dovecot sees as new."""
        folder = self._passwd_parked if self._passwd_broken else self.passwd_dir
        path = folder / user.address
        tmp = folder / f".tmp-{user.address}"
        tmp.write_text(f"{user.address}:{{PLAIN}}{user.password}\n")
        tmp.chmod(0o600)
        try:  # Dovecot compares mtime in whole seconds (and size)
            mtime = max(int(time.time()), int(path.stat().st_mtime) + 1)
        except FileNotFoundError:
            mtime = int(time.time())
        os.utime(tmp, (mtime, mtime))
        tmp.replace(path)

    def _settle_auth(self) -> None:
        """Wait for the next second: Dovecot re-checks a passwd-file at most once a second."""
        if self.dovecot_running():
            now = time.time()
            time.sleep(math.floor(now) + 1.02 - now)

    def break_passwd_file(self) -> None:
        """Make the password database unreadable: logins get a *temporary* failure.

        A missing passwd-file would just mean "unknown user" (a plain
        authentication failure); a symlink loop makes Dovecot's stat() fail
        with ELOOP, which it reports as an internal error.  The files are
        parked next to it and `restore_passwd_file` puts them back.
        """
        if self._passwd_broken:
            return
        self.passwd_dir.rename(self._passwd_parked)
        self.passwd_dir.symlink_to(self.passwd_dir.name)
        self._passwd_broken = True
        self._settle_auth()

    def restore_passwd_file(self) -> None:
        """Undo `break_passwd_file` (failed lookups leave nothing cached: no wait)."""
        if not self._passwd_broken:
            return
        self.passwd_dir.unlink()
        self._passwd_parked.rename(self.passwd_dir)
        self._passwd_broken = False

    # ------------------------------------------------------------ mailboxes

    def maildir(self, user: MailUser) -> Path:
        """The user's INBOX maildir (home is its parent)."""
        return self.root / "mail" / user.name / "Maildir"

    def message_files(self, user: MailUser) -> list[Path]:
        """Messages in INBOX: new/ and cur/, since Dovecot moves new -> cur on SELECT."""
        files: list[Path] = []
        for sub in ("new", "cur"):
            with contextlib.suppress(FileNotFoundError):
                files.extend(p for p in (self.maildir(user) / sub).iterdir() if p.is_file())
        return sorted(files)

    def put_message(
        self, user: MailUser, raw: bytes, folder: str = "", received: float | None = None
    ) -> None:
        """Drop a message into new/ the maildir way (tmp/ then rename): pre-existing mail, in
        the Inbox or another folder (Maildir++ ``.Junk``). ``received`` (seconds since the
        epoch) sets the file's time, which Dovecot takes as its arrival (INTERNALDATE)."""
        base = self.maildir(user)
        maildir = base / f".{folder}" if folder else base
        for sub in (base.parent, base, maildir, *(maildir / d for d in ("tmp", "new", "cur"))):
            if not sub.exists():
                sub.mkdir()
                os.chown(sub, self._mail_uid, self._mail_gid)
        now = time.time()
        host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")
        name = (
            f"{int(now)}.M{int(now % 1 * 1_000_000)}P{os.getpid()}"
            f"Q{next(self._counter)}.{host},S={len(raw)}"
        )
        tmp = maildir / "tmp" / name
        tmp.write_bytes(raw)
        os.chown(tmp, self._mail_uid, self._mail_gid)
        tmp.chmod(0o600)
        if received is not None:
            os.utime(tmp, (received, received))
        tmp.rename(maildir / "new" / name)

    def add_folders(self, user: MailUser, names: Iterable[str]) -> None:
        """Create empty folders of the user's straight in the Maildir++ layout (``.NAME``),
        as many as a test needs, without a round trip each; names without dots or slashes."""
        base = self.maildir(user)
        for name in names:
            if not name or any(c in name for c in "./\\") or name.startswith("~"):
                raise ValueError(f"a plain folder name, not {name!r}")
            folder = base / f".{name}"
            folder.mkdir(exist_ok=True)  # Dovecot adds cur/, new/ and tmp/ when it opens one
            os.chown(folder, self._mail_uid, self._mail_gid)

    # ------------------------------------------------------------ configuration

    def _dovecot_config(self) -> str:
        run, mail, logf = self.dovecot_run, self.mail_dir, self.dovecot_log
        mechanisms = "plain login xoauth2 oauthbearer" if self._oauth2 else "plain login"
        return (
            textwrap.dedent(f"""\
            # Generated by tests/mailstack.py: a private instance, nothing from /etc/dovecot.
            base_dir = {run}
            state_dir = {self.dovecot_dir / "state"}
            instance_name = mailstack-{self.imap_port}
            log_path = {logf}
            info_log_path = {logf}
            debug_log_path = {logf}
            hostname = {self.hostname}
            postmaster_address = postmaster@{self.domain}
            protocols = imap pop3 lmtp
            listen = {HOST}
            ssl = {"no" if self.tls is None else "yes"}
            disable_plaintext_auth = no
            auth_mechanisms = {mechanisms}
            # failures still wait for Dovecot's 500 ms failure timer, but not 2 s more
            auth_failure_delay = 0
            auth_cache_size = 0
            auth_default_realm = {self.domain}
            auth_username_format = %Lu
            default_login_user = dovenull
            default_internal_user = dovecot
            default_internal_group = dovecot
            first_valid_uid = {self._mail_uid}
            first_valid_gid = {self._mail_gid}
            mail_location = maildir:~/Maildir
            mail_fsync = never
            mailbox_idle_check_interval = 1 secs
            lmtp_save_to_detail_mailbox = {"yes" if self.folders else "no"}
            recipient_delimiter = {"+" if self.folders else ""}
            verbose_proctitle = yes

            namespace inbox {{
              inbox = yes
              separator = /
            """)
            + self._dovecot_folders()
            + textwrap.dedent("""            }
            """)
            + self._dovecot_ssl()
            + self._dovecot_passdbs()
            + textwrap.dedent(f"""\
            userdb {{
              driver = static
              args = uid={self._mail_uid} gid={self._mail_gid} home={mail}/%Ln
            }}
            protocol imap {{
              mail_max_userip_connections = 1000
            }}
            service imap-login {{
              inet_listener imap {{
                address = {HOST}
                port = {self.imap_port}
              }}
              inet_listener imaps {{
                address = {HOST}
                port = {self.imaps_port or 0}
                ssl = yes
              }}
            }}
            protocol pop3 {{
              mail_max_userip_connections = 1000
            }}
            service pop3-login {{
              inet_listener pop3 {{
                address = {HOST}
                port = {self.pop3_port}
              }}
              inet_listener pop3s {{
                address = {HOST}
                port = {self.pop3s_port or 0}
                ssl = yes
              }}
            }}
            service lmtp {{
              inet_listener lmtp {{
                address = {HOST}
                port = {self.lmtp_port}
              }}
            }}
            service auth {{
              # root: the passwd-files may sit below directories only root can enter
              user = root
              inet_listener auth-client {{
                address = {HOST}
                port = {self.auth_port}
              }}
            }}
            service anvil {{
              # no growing delays after failed logins: tests fail logins on purpose
              unix_listener anvil-auth-penalty {{
                mode = 0
              }}
            }}
            """)
        )

    def _dovecot_folders(self) -> str:
        """With ``folders``: Junk, Sent and Trash with their special use (RFC 6154), each
        user's Sieve script (see :meth:`file_into_junk`), and sent copies: Postfix sends a
        copy of what a user submits to user+Sent, which LMTP saves in Sent, as Exchange keeps
        a copy of what is submitted over SMTP."""
        if not self.folders:
            return ""
        return textwrap.dedent("""              mailbox Junk {
                special_use = \\Junk
                auto = create
              }
              mailbox Sent {
                special_use = \\Sent
                auto = create
              }
              mailbox Trash {
                special_use = \\Trash
                auto = create
              }
            }
            protocol lmtp {
              mail_plugins = $mail_plugins sieve
            }
            plugin {
              sieve = file:~/sieve;active=~/.dovecot.sieve
            """)

    def file_into_junk(self, user: MailUser, on: bool = True) -> None:
        """A Sieve rule of the user's that files probe messages into Junk (or none)."""
        if not self.folders:
            raise MailStackError("file_into_junk needs a MailStack with folders=True")
        home = self.mail_dir / user.name
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, self._mail_uid, self._mail_gid)
        script = home / ".dovecot.sieve"
        if not on:
            script.unlink(missing_ok=True)
            return
        script.write_text(
            'require "fileinto";\nif exists "X-Mailbox-Probe-Id" { fileinto "Junk"; stop; }\n'
        )
        os.chown(script, self._mail_uid, self._mail_gid)

    def folder_files(self, user: MailUser, folder: str) -> list[Path]:
        """Message files of one folder of the user's (Maildir++: ``.Junk``, ``.Sent``)."""
        base = self.maildir(user) / f".{folder}"
        return sorted(p for sub in ("new", "cur") for p in (base / sub).glob("*") if p.is_file())

    @property
    def _oauth2(self) -> bool:
        return self.oauth2_introspection_url is not None

    def _dovecot_ssl(self) -> str:
        """With TLS: STARTTLS on imap_port, and the imaps listener (TLS from the first byte)."""
        if self.tls is None:
            return ""
        return textwrap.dedent(f"""\
            ssl_cert = <{self.tls_dir / "cert.pem"}
            ssl_key = <{self.tls_dir / "key.pem"}
            """)

    def _dovecot_passdbs(self) -> str:
        """Passwords from passwd-files; with OAuth2 also tokens, checked by introspection.

        `mechanisms` keeps each passdb to its own kind of secret: otherwise a
        token would first be compared as a password, and a password POSTed
        to the identity provider.  ``none`` (lookups without authentication)
        keeps the passwd-files answering whether a user exists, which the
        static userdb asks for LMTP delivery; without it delivery fails with
        "All password databases were skipped".
        """
        if not self._oauth2:
            return textwrap.dedent(f"""\
                passdb {{
                  driver = passwd-file
                  args = scheme=PLAIN {self.passwd_dir}/%Lu
                }}
                """)
        return textwrap.dedent(f"""\
            passdb {{
              driver = passwd-file
              mechanisms = plain login none
              args = scheme=PLAIN {self.passwd_dir}/%Lu
            }}
            passdb {{
              driver = oauth2
              mechanisms = xoauth2 oauthbearer
              args = {self.oauth2_conf}
            }}
            """)

    def _oauth2_config(self) -> str:
        """RFC 7662 introspection only: POST token=..., the answer must say active: true."""
        return textwrap.dedent(f"""\
            # Generated by tests/mailstack.py
            introspection_mode = post
            introspection_url = {self.oauth2_introspection_url}
            username_attribute = username
            active_attribute = active
            active_value = true
            force_introspection = yes
            timeout_msecs = 5000
            """)

    def _postfix_main_cf(self) -> str:
        return (
            textwrap.dedent(f"""\
            # Generated by tests/mailstack.py: a private instance, nothing from /etc/postfix.
            compatibility_level = 3.6
            queue_directory = {self.postfix_spool}
            data_directory = {self.postfix_data}
            maillog_file = {self.postfix_log}
            maillog_file_prefixes = {self.log_dir}
            mail_owner = postfix
            setgid_group = postdrop
            myhostname = {self.hostname}
            mydomain = {self.domain}
            myorigin = $mydomain
            mydestination =
            mynetworks = 127.0.0.0/8
            inet_interfaces = {HOST}
            inet_protocols = ipv4
            smtpd_banner = $myhostname ESMTP mailstack
            biff = no
            alias_maps =
            alias_database =
            local_recipient_maps =
            relayhost =
            relay_domains =
            local_transport = error:local delivery is disabled
            default_transport = error:mailstack delivers only to {self.domain}
            virtual_mailbox_domains = {self.domain}
            virtual_transport = lmtp:inet:{HOST}:{self.lmtp_port}
            lmtp_host_lookup = native
            lmtp_connect_timeout = 5s
            defer_transports =
            smtputf8_enable = no
            smtpd_tls_security_level = {"none" if self.tls is None else "may"}
            smtpd_tls_auth_only = no
            smtpd_sasl_auth_enable = yes
            smtpd_sasl_type = dovecot
            smtpd_sasl_path = inet:{HOST}:{self.auth_port}
            smtpd_sasl_security_options = noanonymous
            smtpd_relay_restrictions = permit_sasl_authenticated, reject
            smtpd_recipient_restrictions = permit_sasl_authenticated, reject
            smtpd_peername_lookup = no
            smtpd_error_sleep_time = 0
            smtpd_soft_error_limit = 1000
            smtpd_hard_error_limit = 1000
            smtpd_junk_command_limit = 1000
            smtpd_client_connection_count_limit = 0
            smtpd_client_connection_rate_limit = 0
            smtpd_client_message_rate_limit = 0
            smtpd_client_recipient_rate_limit = 0
            smtpd_client_auth_rate_limit = 0
            in_flow_delay = 0
            # smtpd exits while Dovecot auth is down; recover quickly once it is back
            service_throttle_time = 1s
            queue_run_delay = 1s
            minimal_backoff_time = 1s
            maximal_backoff_time = 2s
            maximal_queue_lifetime = 1h
            bounce_queue_lifetime = 1h
            delay_warning_time = 0h
            """)
            + self._postfix_sent_copies()
            + self._postfix_tls_cf()
            + self._postfix_mx_cf()
        )

    def _postfix_sent_copies(self) -> str:
        if not self.folders:
            return ""
        return textwrap.dedent(f"""\
            recipient_delimiter = +
            sender_bcc_maps = regexp:{self.postfix_etc / "sender_bcc"}
            """)

    def _postfix_tls_cf(self) -> str:
        if self.tls is None:
            return ""
        return textwrap.dedent(f"""\
            smtpd_tls_cert_file = {self.tls_dir / "cert.pem"}
            smtpd_tls_key_file = {self.tls_dir / "key.pem"}
            smtpd_tls_loglevel = 1
            smtpd_tls_session_cache_database =
            """)

    def _postfix_master_cf(self) -> str:
        # Written from scratch (not copied from /etc) so that no local edit and
        # no chroot (column 5) can get in the way.
        return (
            textwrap.dedent(f"""\
            # Generated by tests/mailstack.py. No chroot anywhere.
            {HOST}:{self.smtp_port} inet n - n - - smtpd
            pickup    unix  n       -       n       60      1       pickup
            cleanup   unix  n       -       n       -       0       cleanup
            qmgr      unix  n       -       n       300     1       qmgr
            rewrite   unix  -       -       n       -       -       trivial-rewrite
            bounce    unix  -       -       n       -       0       bounce
            defer     unix  -       -       n       -       0       bounce
            trace     unix  -       -       n       -       0       bounce
            verify    unix  -       -       n       -       1       verify
            flush     unix  n       -       n       1000?   0       flush
            proxymap  unix  -       -       n       -       -       proxymap
            proxywrite unix -       -       n       -       1       proxymap
            showq     unix  n       -       n       -       -       showq
            error     unix  -       -       n       -       -       error
            retry     unix  -       -       n       -       -       error
            discard   unix  -       -       n       -       -       discard
            lmtp      unix  -       -       n       -       -       lmtp
            smtp      unix  -       -       n       -       -       smtp
            anvil     unix  -       -       n       -       1       anvil
            scache    unix  -       -       n       -       1       scache
            postlog   unix-dgram n  -       n       -       1       postlogd
            """)
            + self._postfix_tls_services()
            + self._postfix_mx_service()
        )

    def _postfix_mx_service(self) -> str:
        """An MX: no AUTH; mail only for the stack's own and routed domains; its milters and
        policy service; `refuse_mx` and `mx_starttls` set the two ``mx_`` parameters."""
        if self.mx_port is None:
            return ""
        only_ours = "reject_unauth_destination"
        policy = f",check_policy_service,{self.mx_policy}" if self.mx_policy else ""
        recipients = only_ours + policy
        milters = f"-o smtpd_milters={','.join(self.mx_milters)} " if self.mx_milters else ""
        return (
            f"{HOST}:{self.mx_port} inet n - n - - smtpd -o smtpd_sasl_auth_enable=no "
            f"-o smtpd_relay_restrictions={only_ours} "
            f"-o smtpd_recipient_restrictions={recipients} "
            "-o smtpd_client_restrictions=$mx_client_restrictions "
            "-o smtpd_tls_security_level=$mx_tls_security_level "
            f"{milters}-o milter_default_action=accept\n"
        )

    def _postfix_mx_cf(self) -> str:
        if self.mx_port is None:
            return ""
        return textwrap.dedent(f"""\
            mx_client_restrictions =
            mx_tls_security_level = {"none" if self.tls is None else "may"}
            """)

    def refuse_mx(self, reply: str | None) -> None:
        """Answer every client of the MX port with ``reply`` (``421 4.3.2 text``: then hang
        up, as Postfix does for 421) at its first recipient; None: accept again."""
        if reply is not None and not re.fullmatch(r"[45]\d\d [ -~]+", reply):
            raise ValueError(f"not an SMTP reply: {reply!r}")
        table = f"check_client_access inline:{{{{ {HOST} = {reply} }}}}" if reply else ""
        self._postconf(f"mx_client_restrictions={table}")
        self._reload_postfix()

    def mx_starttls(self, offered: bool) -> None:
        """Whether the MX port offers STARTTLS (it does with ``tls``)."""
        level = "may" if offered and self.tls is not None else "none"
        self._postconf(f"mx_tls_security_level={level}")
        self._reload_postfix()

    def _postfix_tls_services(self) -> str:
        """smtps (TLS from the first byte) and tlsmgr, which smtpd asks for TLS state."""
        if self.tls is None:
            return ""
        return textwrap.dedent(f"""\
            {HOST}:{self.smtps_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
            tlsmgr    unix  -       -       n       1000?   1       tlsmgr
            """)

    def _write_configs(self) -> None:
        (self.dovecot_dir / "state").mkdir(exist_ok=True)
        self.dovecot_conf.write_text(self._dovecot_config())
        if self._oauth2:
            self.oauth2_conf.write_text(self._oauth2_config())
        else:
            self.oauth2_conf.unlink(missing_ok=True)
        (self.postfix_etc / "main.cf").write_text(self._postfix_main_cf())
        (self.postfix_etc / "master.cf").write_text(self._postfix_master_cf())
        if self.folders:
            domain = re.escape(self.domain)
            (self.postfix_etc / "sender_bcc").write_text(
                f"/^([^+@]+)@{domain}$/ ${{1}}+Sent@{self.domain}\n"
            )
        self._backdate_postfix_config()

    def _backdate_postfix_config(self) -> None:
        """Postfix programs wait (~1.5 s) until main.cf is at least a second old: skip that."""
        past = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(self.postfix_etc / name, (past, past))

    # ------------------------------------------------------------ commands

    def _run(self, *argv: str, timeout: float = 30.0) -> str:
        """Run a command, return its output, raise with output and log tail on failure.

        Output goes through a temporary file, not a pipe: a daemon that
        inherits a pipe would keep it open and make us wait forever.
        """
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=_CMD_ENV,
                    cwd="/",
                    timeout=timeout,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise MailStackError(f"{' '.join(argv)}: {exc}\n{self.log_tail()}") from exc
            out.seek(0)
            text = out.read().decode("utf-8", "replace")
        if proc.returncode != 0:
            raise MailStackError(
                f"{' '.join(argv)} exited {proc.returncode}:\n{text}\n{self.log_tail()}"
            )
        return text

    def _postconf(self, setting: str) -> None:
        self._run("postconf", "-c", str(self.postfix_etc), "-e", setting)
        self._backdate_postfix_config()

    def _wait_greeting(
        self, port: int, prefix: str, what: str, timeout: float = 10.0, *, tls: bool = False
    ) -> None:
        deadline = time.monotonic() + timeout
        line = None
        while time.monotonic() < deadline:
            line = _tls_greeting(port) if tls else _greeting(port)
            if line is not None and line.startswith(prefix):
                return
            time.sleep(0.02)
        raise MailStackError(
            f"{what} on {HOST}:{port} did not greet with {prefix!r} within {timeout:.0f}s"
            f" (last: {line!r})\n{self.log_tail()}"
        )

    @staticmethod
    def check_requirements() -> None:
        """Raise MailStackError saying what is missing to run a stack on this machine."""
        problems = []
        if os.geteuid() != 0:
            problems.append("must run as root (the Postfix master runs as root)")
        for exe in (
            "/usr/sbin/dovecot",
            "/usr/sbin/postfix",
            "/usr/sbin/postconf",
            "/usr/sbin/postqueue",
            "/usr/lib/dovecot/imap",
            "/usr/lib/dovecot/lmtp",
            "/usr/lib/dovecot/pop3",
        ):
            if not os.access(exe, os.X_OK):
                problems.append(f"missing {exe}")
        for name in (MAIL_USER, _POSTFIX_LOGIN, "dovecot", "dovenull"):
            try:
                pwd.getpwnam(name)
            except KeyError:
                problems.append(f"missing system user {name}")
        if problems:
            raise MailStackError(
                "cannot run the mail stack: "
                + "; ".join(problems)
                + " (apt-get install postfix dovecot-imapd dovecot-lmtpd dovecot-pop3d)"
            )

    # ------------------------------------------------------------ dovecot

    def _dovecot_master(self) -> int | None:
        return _master_pid(self.dovecot_run / "master.pid", "/usr/sbin/dovecot", self.dovecot_run)

    def dovecot_running(self) -> bool:
        return self._dovecot_master() is not None

    def start_dovecot(self) -> None:
        """Start Dovecot and wait for the IMAP, LMTP and auth listeners."""
        if self.dovecot_running():
            return
        _running.add(self)
        try:
            self._run("dovecot", "-c", str(self.dovecot_conf))
            self._wait_greeting(self.imap_port, "* OK", "Dovecot IMAP")
            if self.imaps_port is not None:  # also proves that the certificate loads
                self._wait_greeting(self.imaps_port, "* OK", "Dovecot IMAPS", tls=True)
            self._wait_greeting(self.pop3_port, "+OK", "Dovecot POP3")
            if self.pop3s_port is not None:
                self._wait_greeting(self.pop3s_port, "+OK", "Dovecot POP3S", tls=True)
            self._wait_greeting(self.lmtp_port, "220 ", "Dovecot LMTP")
            self._wait_greeting(self.auth_port, "VERSION", "Dovecot auth")
            if self.postfix_running():  # smtpd may be throttled after failing without auth
                self._wait_greeting(self.smtp_port, "220 ", "Postfix SMTP")
        except BaseException:
            with contextlib.suppress(Exception):  # keep the original error
                self.stop_dovecot()
            raise

    def stop_dovecot(self) -> None:
        """Stop Dovecot and its children; return once the IMAP port refuses connections.

        A running Postfix is reloaded so that no idle smtpd keeps a stale auth
        connection: every new SMTP session then behaves the same (closed before
        the greeting: smtpd exits without SASL mechanisms), instead of the first
        one getting ``454 4.7.0 ... Connection lost to authentication server``.
        """
        if not _terminate(self._dovecot_master(), _daemons_in(self._dovecot_dirs())):
            return  # not running: nothing to wait for (the port may be someone else's)
        with contextlib.suppress(FileNotFoundError):
            (self.dovecot_run / "master.pid").unlink()
        self._wait_refused(self.imap_port, "Dovecot IMAP")
        if self.postfix_running():
            self._reload_postfix()

    def _dovecot_dirs(self) -> list[Path]:
        return [self.dovecot_dir.resolve(), self.dovecot_run, self.mail_dir]

    # ------------------------------------------------------------ postfix

    def _postfix_master(self) -> int | None:
        return _master_pid(
            self.postfix_spool / "pid" / "master.pid",
            "/usr/lib/postfix/sbin/master",
            self.postfix_spool,
        )

    def postfix_running(self) -> bool:
        return self._postfix_master() is not None

    def start_postfix(self) -> None:
        """Start Postfix (`postfix start` waits for the master) and wait for the SMTP greeting."""
        if self.postfix_running():
            return
        _running.add(self)
        try:
            self._run("postfix", "-c", str(self.postfix_etc), "start")
            self._wait_greeting(self.smtp_port, "220 ", "Postfix SMTP")
            if self.smtps_port is not None:
                self._wait_greeting(self.smtps_port, "220 ", "Postfix SMTPS", tls=True)
        except BaseException:
            with contextlib.suppress(Exception):  # keep the original error
                self.stop_postfix()
            raise

    def stop_postfix(self) -> None:
        """Stop the Postfix master and all its children; return once the SMTP port refuses."""
        if _terminate(self._postfix_master(), _daemons_in([self.postfix_spool])):
            self._wait_refused(self.smtp_port, "Postfix SMTP")

    def _reload_postfix(self) -> None:
        """Reload and wait until the old queue manager is gone: only it decides about delivery."""
        master = self._postfix_master()
        if master is None or not _alive(master):
            return  # the next start reads main.cf anyway
        old_qmgrs = {
            pid for pid in process_family(master) if _readlink(f"/proc/{pid}/exe").endswith("/qmgr")
        }
        self._run("postfix", "-c", str(self.postfix_etc), "reload")
        if _wait_dead(old_qmgrs, 10.0):
            raise MailStackError(f"postfix reload: old qmgr still running\n{self.log_tail()}")

    def defer_delivery(self, transport: str = "lmtp") -> None:
        """Accept mail over SMTP but keep it queued (defer_transports=lmtp: mail for the
        stack's mailboxes; ``"smtp"``: mail relayed to a routed domain)."""
        self._postconf(f"defer_transports={transport}")
        self._reload_postfix()

    def route(self, domain: str, port: int, host: str = HOST, protocol: str = "smtp") -> None:
        """Relay mail for ``domain`` over SMTP (or ``protocol="lmtp"``: LMTP, as to Cyrus's
        lmtpd) to ``host:port`` (no MX lookup, no TLS)."""
        if not _NAME.fullmatch(domain.lower()) or not host.replace(".", "").isdigit():
            raise ValueError(f"not a domain and an IPv4 address: {domain!r}, {host!r}")
        if protocol not in ("smtp", "lmtp"):
            raise ValueError(f"expected smtp or lmtp, got {protocol!r}")
        self._routes[domain.lower()] = (f"{protocol}:[{host}]", port)
        self._postconf("relay_domains=" + " ".join(sorted(self._routes)))
        entries = ", ".join(f"{d}={h}:{p}" for d, (h, p) in sorted(self._routes.items()))
        self._postconf(f"transport_maps=inline:{{{entries}}}")
        self._reload_postfix()

    def resume_delivery(self) -> None:
        """Deliver again and flush what was held back."""
        self._postconf("defer_transports=")
        self._reload_postfix()
        if self.postfix_running():
            self._run("postqueue", "-c", str(self.postfix_etc), "-f")

    def queue_size(self) -> int:
        """Messages in the Postfix queue (all queues, including deferred)."""
        if self.postfix_running():
            out = self._run("postqueue", "-c", str(self.postfix_etc), "-j")
            return sum(1 for line in out.splitlines() if line.startswith("{"))
        count = 0
        for queue in _QUEUES:  # postqueue needs the running showq service
            for _dirpath, _dirs, files in os.walk(self.postfix_spool / queue):
                count += len(files)
        return count

    # ------------------------------------------------------------ both

    def start(self) -> None:
        """Start Dovecot, then Postfix (it needs Dovecot's auth for SMTP AUTH)."""
        try:
            self.start_dovecot()
            self.start_postfix()
        except BaseException:
            with contextlib.suppress(Exception):  # keep the original error
                self.stop()
            raise

    def stop(self) -> None:
        """Stop both; safe to call repeatedly, also after a failed start."""
        try:
            self.stop_postfix()
        finally:
            self.stop_dovecot()
            _running.discard(self)

    def pids(self) -> list[int]:
        """Live processes of this stack (for leak checks)."""
        found = _daemons_in([*self._dovecot_dirs(), self.postfix_spool])
        for master in (self._dovecot_master(), self._postfix_master()):
            if master is not None and _alive(master):
                found |= process_family(master)
        return sorted(found)

    def _wait_refused(self, port: int, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not _refuses(port):
            if time.monotonic() > deadline:
                raise MailStackError(
                    f"{what} port {port} still accepts after stop\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def log_tail(self, n: int = 40) -> str:
        """The last lines of both daemons' logs, for error messages."""
        return (
            f"--- {self.dovecot_log} ---\n{_tail(self.dovecot_log, n)}\n"
            f"--- {self.postfix_log} ---\n{_tail(self.postfix_log, n)}"
        )

    def __repr__(self) -> str:
        tls = f", smtps={self.smtps_port}, imaps={self.imaps_port}" if self.tls else ""
        oauth2 = f", oauth2={self.oauth2_introspection_url!r}" if self._oauth2 else ""
        return (
            f"MailStack(root={str(self.root)!r}, smtp={self.smtp_port}, imap={self.imap_port},"
            f" lmtp={self.lmtp_port}, auth={self.auth_port}{tls}{oauth2})"
        )


def main(argv: list[str] | None = None) -> int:
    """Run a stack by hand (``python -m testing.mailstack [ROOT]``) until Ctrl-C or SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("root", nargs="?", type=Path, help="state directory (default: a temp dir)")
    parser.add_argument("--user", default="demo")
    parser.add_argument("--password", default="demo-password")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="mailstack-demo-"))

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    stack = MailStack(root)
    user = stack.add_user(args.user, args.password)
    with stack:
        print(f"{stack!r}\nlogin {user.address} / {user.password}\nCtrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    stack.cleanup()
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
