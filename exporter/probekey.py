"""Where the probe-id key lives: a random key kept in a file, so that a probe message that
arrives after a restart is still recognised as this exporter's and deleted.

The key is never derived from anything configured: a probe id travels in every probe message,
and whoever reads one must learn nothing about the mailbox's credentials from it. It is made
at first start (:data:`KEY_BYTES` random bytes, written with mode 0600) and read at every start
after. ``global.probe_key_file`` names a file of its own (replicas of one configuration share
it); otherwise the key is ``probe.key`` in the state directory (``--storage.path``). Where
neither can be written, the exporter runs with a key of this process only and says so.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

KEY_BYTES: Final = 32
MIN_KEY_BYTES: Final = 16
KEY_FILE_NAME: Final = "probe.key"
"""The key's file in the state directory."""
DEFAULT_STORAGE: Final = "/var/lib/mailbox-exporter"
"""The state directory when ``--storage.path`` is not given: the image's volume and the
systemd unit's StateDirectory."""


class KeyFileError(Exception):
    """A key file exists but cannot be used: refusing to start beats replacing it silently,
    which would leave every probe sent under the old key in the mailbox for good."""


@dataclass(frozen=True)
class ProbeKey:
    key: bytes
    path: Path | None
    """The file the key is kept in; None when it lives in this process only."""
    problem: str = ""
    """Why the key is not kept in a file, when it is not."""


def read_or_create(path: Path) -> bytes:
    """The key in ``path``, made (random, readable by the owner only) if the file is missing.

    Two processes starting at once on a new file end up with the same key: the file appears
    whole or not at all (written aside, then linked into place, never replaced).
    Raises :class:`KeyFileError` for a file that holds no usable key, OSError where the file
    can be neither read nor written.
    """
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(key.hex() + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            return _read(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(aside)
    return key


def _read(path: Path) -> bytes:
    try:
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise KeyFileError(f"{path} does not hold a hex key") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(f"{path} holds a key shorter than {MIN_KEY_BYTES} bytes")
    return key


def open_key(key_file: Path | None, storage: Path) -> ProbeKey:
    """The probe-id key: from ``key_file`` if configured (a problem there is an error), else
    from the state directory ``storage``, else (that cannot be written) of this process only.

    Raises :class:`KeyFileError` or OSError for a configured ``key_file`` that cannot be used,
    and :class:`KeyFileError` for a key file in ``storage`` that holds no key.
    """
    if key_file is not None:
        return ProbeKey(read_or_create(key_file), key_file)
    path = storage / KEY_FILE_NAME
    try:
        return ProbeKey(read_or_create(path), path)
    except KeyFileError:
        raise
    except OSError as exc:
        problem = f"{path}: {exc.strerror or type(exc).__name__}"
        return ProbeKey(secrets.token_bytes(KEY_BYTES), None, problem)
