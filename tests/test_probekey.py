"""The probe-id key's file: made once, read after, never replaced; an unwritable state
directory means a key of this process only, said in the log and the metrics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter import probekey
from testing.exporter_process import start, value
from testing.mailstack import MailStack, MailUser
from testing.targets import target_yaml

ROOT = Path(__file__).parent.parent


def test_the_key_is_made_once_private_and_read_after(tmp_path: Path) -> None:
    path = tmp_path / "state" / probekey.KEY_FILE_NAME
    made = probekey.read_or_create(path)
    assert len(made) == probekey.KEY_BYTES
    assert path.stat().st_mode & 0o777 == 0o600
    assert probekey.read_or_create(path) == made
    assert [p.name for p in path.parent.iterdir()] == [path.name], "nothing else left behind"


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / probekey.KEY_FILE_NAME
    code = (
        "import sys, pathlib; from exporter import probekey; "
        "print(probekey.read_or_create(pathlib.Path(sys.argv[1])).hex())"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        for _ in range(8)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert keys == {path.read_text().strip()}


@pytest.mark.parametrize(
    ("content", "complaint"),
    [("not hex\n", "does not hold a hex key"), ("abcd\n", "shorter than 16 bytes")],
)
def test_a_file_without_a_key_is_an_error_not_replaced(
    tmp_path: Path, content: str, complaint: str
) -> None:
    path = tmp_path / probekey.KEY_FILE_NAME
    path.write_text(content)
    for key_file, storage in ((path, tmp_path / "unused"), (None, tmp_path)):
        with pytest.raises(probekey.KeyFileError, match=complaint):
            probekey.open_key(key_file, storage)
    assert path.read_text() == content


def test_an_unwritable_state_directory_gives_a_key_of_this_process(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    key = probekey.open_key(None, blocker / "state")
    assert key.path is None and len(key.key) == probekey.KEY_BYTES
    assert "a-file/state/probe.key" in key.problem
    with pytest.raises(OSError):
        probekey.open_key(blocker / "probe.key", tmp_path)


async def test_the_exporter_says_once_that_its_key_lives_in_memory(
    tmp_path: Path, mailstack: MailStack, user: MailUser
) -> None:
    config = tmp_path / "c.yml"
    config.write_text("targets:\n" + target_yaml(mailstack, user, interval="1h"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    async for running in start(config, tmp_path / "run", storage=blocker / "state"):
        samples = await running.samples()
        assert value(samples, "mailbox_exporter_probe_key_persistent") == 0
        log = running.log.read_text()
    assert log.count("the probe-id key is kept in memory only") == 1


def test_a_configured_key_file_that_cannot_be_made_stops_the_exporter(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = tmp_path / "c.yml"
    config.write_text(
        f"global: {{probe_key_file: {blocker / 'probe.key'}}}\n"
        "targets:\n  - name: t\n    imap: {host: h, username: u, password: p}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(config)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 1
    assert "global.probe_key_file" in run.stderr and "Traceback" not in run.stderr
