"""Delivery-time accuracy of the JMAP receiver against ground truth, beside the IMAP one.

    python -m bench.jmap_accuracy --roundtrips 200

One Postfix + Dovecot and one Cyrus (testing/cyrus.py); Postfix delivers mail for Cyrus's
domain to its lmtpd. Two round trips run side by side, each sending over SMTP to a mailbox of
its own: one watched over IMAP (Dovecot, the default wait), one over JMAP (Cyrus; Cyrus 3.6
offers no push, so the receiver polls from at once, the pause doubling from 250 ms up to its
``poll_interval``). Ground truth is as in ``bench.accuracy``: the moment the message file
appears (inotify: the Dovecot maildir's new/ and cur/, the Cyrus Inbox's spool directory,
where a message is linked in as ``UID.``), minus the moment Postfix accepted it (the 250 reply
to DATA). A receiver's error is its reported delivery time minus that true delivery time.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import re
import tempfile
from pathlib import Path
from typing import Any, Final

from bench._common import (
    IN_CREATE,
    IN_MOVED_TO,
    MaildirWatcher,
    TunedStack,
    _libc,
    machine,
    publish,
)
from bench.accuracy import patch_smtp_send, timed_series
from exporter import config
from exporter.config import Target
from testing.cyrus import DOMAIN, CyrusServer, CyrusUser
from testing.mailstack import MailStack, MailUser

MESSAGE_FILE: Final = re.compile(r"\d+\.")
"""A message in a Cyrus mailbox directory (``cyrus.index`` and the like are not)."""
PAUSE: Final = 0.2
"""Seconds between round trips of one receiver."""


class SpoolWatcher(MaildirWatcher):
    """The maildir watcher, also watching Cyrus mailbox directories (message files only)."""

    def watch_spool(self, folder: Path) -> None:
        self.arrivals.setdefault(folder, [])
        wd = _libc.inotify_add_watch(self._fd, str(folder).encode(), IN_CREATE | IN_MOVED_TO)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {folder}")
        self._dirs[wd] = (folder, folder)

    def first_message_after(self, folder: Path, since: float) -> float | None:
        with self._lock:
            for arrival in self.arrivals.get(folder, []):
                if arrival.wall >= since and MESSAGE_FILE.fullmatch(arrival.name):
                    return arrival.wall
        return None


def _target(stack: MailStack, sender: MailUser, watch: str) -> Target:
    smtp = (
        f"{{host: 127.0.0.1, port: {stack.smtp_port}, tls: none, "
        f"username: {sender.address}, password: '{sender.password}'}}"
    )
    return config.parse(
        "targets:\n  - name: t\n    checks: [roundtrip]\n    interval: 10s\n    timeout: 10s\n"
        f"    smtp: {smtp}\n    {watch}\n"
    ).targets[0]


async def run(workdir: Path, count: int, poll_interval: str) -> dict[str, Any]:
    stack = TunedStack(workdir / "stack")
    imap_user = stack.add_user("imap", "pw-imap-bench")
    sender = stack.add_user("sender", "pw-sender-bench")
    watcher = SpoolWatcher()
    watcher.watch(stack.maildir(imap_user))
    with stack, CyrusServer(workdir / "cyrus") as cyrus:
        stack.route(DOMAIN, cyrus.lmtp_port, protocol="lmtp")
        account: CyrusUser = cyrus.add_user("jmap", "pw-jmap-bench")
        inbox = cyrus.mailboxes(account)["inbox"]
        spool = cyrus.state / "spool" / "uuid" / inbox[0] / inbox[1] / inbox
        watcher.watch_spool(spool)
        watcher.start()
        try:
            imap = (
                f"imap: {{host: 127.0.0.1, port: {stack.imap_port}, tls: none, "
                f"username: {imap_user.address}, password: '{imap_user.password}'}}\n"
                f"    to: {imap_user.address}\n"
            )
            jmap = (
                f"jmap: {{url: '{cyrus.url}', username: {account.login}, "
                f"password: '{account.password}', poll_interval: {poll_interval}}}\n"
                f"    to: {account.address}\n"
            )

            def maildir_arrival(since: float) -> float | None:
                arrival = watcher.first_after(stack.maildir(imap_user), since)
                return None if arrival is None else arrival.wall

            over_imap, over_jmap = await asyncio.gather(
                asyncio.create_task(
                    timed_series(_target(stack, sender, imap), maildir_arrival, count, PAUSE)
                ),
                asyncio.create_task(
                    timed_series(
                        _target(stack, sender, jmap),
                        lambda since: watcher.first_message_after(spool, since),
                        count,
                        PAUSE,
                    )
                ),
            )
        finally:
            watcher.close()
    return {
        "machine": machine(),
        "exporter, IMAP (Dovecot, default wait)": over_imap.report(),
        f"exporter, JMAP (Cyrus 3.6, polls, poll_interval {poll_interval})": over_jmap.report(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--roundtrips", type=int, default=200, help="per receiver (default 200)")
    parser.add_argument("--poll-interval", default="2s", help="the JMAP section's poll_interval")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    patch_smtp_send()
    with tempfile.TemporaryDirectory(prefix="bench-jmap-") as tmp:
        report = asyncio.run(run(Path(tmp), args.roundtrips, args.poll_interval))
    publish(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
