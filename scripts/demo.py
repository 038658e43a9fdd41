"""Start a throwaway Postfix + Dovecot on 127.0.0.1 and the exporter against it.

Run through ``scripts/demo`` (which installs what is needed). Everything lives in a temporary
directory and stops with Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from testing.mailstack import MailStack

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
# Written by scripts/demo: one mailbox on a local Postfix + Dovecot.
defaults:
  interval: 15s
  timeout: 10s
targets:
  - name: demo
    smtp: {{host: 127.0.0.1, port: {smtp}, tls: none, username: {address}, password_file: password}}
    imap: {{host: 127.0.0.1, port: {imap}, tls: none, username: {address}, password_file: password}}
"""


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--web.listen-address", dest="listen", default="127.0.0.1:10025")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailbox-exporter-demo-") as tmp:
        work = Path(tmp)
        stack = MailStack(work / "mail")
        user = stack.add_user("demo", secrets.token_urlsafe(12))
        (work / "password").write_text(user.password)
        os.chmod(work / "password", 0o600)
        config = work / "mailbox-exporter.yml"
        stack.start()
        try:
            config.write_text(
                CONFIG.format(smtp=stack.smtp_port, imap=stack.imap_port, address=user.address)
            )
            url = f"http://{args.listen}"
            print(
                f"""
Mail stack: Postfix on 127.0.0.1:{stack.smtp_port}, Dovecot IMAP on 127.0.0.1:{stack.imap_port}
Mailbox:    {user.address} (maildir {stack.maildir(user)})
Config:     {config}

Exporter:   {url}/          status page
            {url}/metrics   metrics (probes run every 15s)

Try breaking things from another shell and watch mailbox_probe_success and the log:
  dovecot -c {stack.dovecot_conf} stop
Press Ctrl-C to stop.
""",
                flush=True,
            )
            exporter = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    "--config.file",
                    str(config),
                    "--web.listen-address",
                    args.listen,
                ],
                cwd=ROOT,
            )
            try:
                return exporter.wait()
            except (KeyboardInterrupt, SystemExit):
                exporter.terminate()
                exporter.wait(10)
                return 0
        finally:
            stack.stop()


if __name__ == "__main__":
    raise SystemExit(main())
