"""How long ``--config.check`` takes on large configurations, and on an alias bomb.

    python -m bench.configcheck --repeat 5 [--before DIR] [--json FILE]

Writes three configurations to a temporary directory:

* ``full``: 10,000 targets written out in full, three checks each (2.4 MB), as a generated
  configuration would be;
* ``short``: 50,000 targets with their servers in ``defaults``, one short line each (4.2 MB);
* ``bomb``: ten lines of nested aliases that would expand to 9**9 values;

then runs ``python -m exporter --config.file FILE --config.check`` on each, ``--repeat``
times, and reports the median wall time, the CPU time (user + system) and the peak resident
memory of the process, Python's start included. ``--before DIR`` runs the same from another
copy of the code (a directory holding ``exporter/``) in turns with this one, so that both
share the machine's load; ``--phases`` adds, for this copy, how the time of one check of each
configuration divides between reading the YAML, validating it and printing the summary.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from testing.targets import full_config, short_config

ROOT = Path(__file__).resolve().parent.parent


def alias_bomb() -> str:
    """Ten lines that expand to 9**9 values."""
    text = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        text += f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    return text + "targets: *i\n"


def write(directory: Path, targets: int, short_targets: int) -> None:
    (directory / "full.yml").write_text(full_config(targets))
    (directory / "short.yml").write_text(short_config(short_targets))
    (directory / "bomb.yml").write_text(alias_bomb())


def check_once(tree: Path, config: Path) -> dict[str, Any]:
    """One ``--config.check`` of ``config`` with the code in ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    begin = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--config.file", str(config), "--config.check"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    error = process.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": time.perf_counter() - begin,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
        "exit": process.returncode,
        "error": error.strip().splitlines()[-1] if error.strip() else "",
    }


def phases(config: Path) -> dict[str, float]:
    """CPU seconds of one check in this process: the YAML read, the validation, the summary."""
    sys.path.insert(0, str(ROOT))
    document = importlib.import_module("exporter.config.document")
    load = importlib.import_module("exporter.config.load")
    cli = importlib.import_module("exporter.cli")
    text = config.read_text()
    begin = time.process_time()
    document.parse_document(text)
    read = time.process_time()
    loaded = load.parse(text)
    validated = time.process_time()
    with redirect_stdout(io.StringIO()):
        cli.summary(loaded)
    done = time.process_time()
    return {
        "read_s": round(read - begin, 2),
        "validate_s": round(validated - read - (read - begin), 2),
        "summary_s": round(done - validated, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", type=Path, help="another copy of the code, run in turns")
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--short-targets", type=int, default=50_000)
    parser.add_argument("--phases", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write(args.write, args.targets, args.short_targets)
        return 0
    trees = {"after": ROOT} if args.before is None else {"before": args.before, "after": ROOT}
    results: dict[str, Any] = {"repeat": args.repeat, "load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as directory:
        # Written by another process: a child's peak memory counts its parent's at the fork,
        # and this one then stays small.
        subprocess.run(
            [
                *(sys.executable, "-m", "bench.configcheck", "--write", directory),
                *("--targets", str(args.targets), "--short-targets", str(args.short_targets)),
            ],
            cwd=ROOT,
            check=True,
        )
        configs = {name: Path(directory) / f"{name}.yml" for name in ("full", "short", "bomb")}
        for name, path in configs.items():
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in trees}
            for _ in range(args.repeat):
                for label, tree in trees.items():
                    runs[label].append(check_once(tree, path))
            results[name] = {
                "bytes": path.stat().st_size,
                **{
                    label: {
                        "wall_s": round(statistics.median(r["wall_s"] for r in done), 2),
                        "cpu_s": round(statistics.median(r["cpu_s"] for r in done), 2),
                        "rss_mib": round(max(r["rss_mib"] for r in done)),
                        "exit": sorted({r["exit"] for r in done}),
                        "error": done[-1]["error"][:200],
                    }
                    for label, done in runs.items()
                },
            }
            print(json.dumps({name: results[name]}), flush=True)
        if args.phases:  # in this process, after every timed run: it grows
            for name in ("full", "short"):
                results[name]["phases"] = phases(configs[name])
                print(json.dumps({name: {"phases": results[name]["phases"]}}), flush=True)
    results["load_after"] = os.getloadavg()[0]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
