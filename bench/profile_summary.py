"""Summarise a py-spy raw profile (``py-spy record --format raw``): where the CPU went.

    python -m bench.profile_summary bench/profile-roundtrip.txt [--top 25]

py-spy counts a thread blocked in ``epoll_wait`` or in a thread pool's idle ``queue.get`` as
active; those samples are dropped here (``--keep-idle`` keeps them), so the shares are of the
samples in which Python code was actually running. Prints the top functions by self samples
and the top exporter / library frames by inclusive samples.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

IDLE_LEAVES = (
    "EpollSelector.select (selectors.py",
    "_worker (concurrent/futures/thread.py:81)",
    "select (selectors.py",
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep-idle", action="store_true")
    args = parser.parse_args()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        if not args.keep_idle and frames[-1].startswith(IDLE_LEAVES):
            idle += count
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"active samples: {total} (idle samples dropped: {idle})")
    print(f"\n{'self %':>7}  function")
    for frame, count in own.most_common(args.top):
        print(f"{count / total * 100:7.1f}  {frame}")
    print(f"\n{'incl %':>7}  function (exporter and libraries; no asyncio/runpy plumbing)")
    plumbing = ("asyncio/", "runpy", "threading.py", "exporter/cli.py", "exporter/__main__.py")
    shown = 0
    for frame, count in inclusive.most_common():
        if any(p in frame for p in plumbing):
            continue
        print(f"{count / total * 100:7.1f}  {frame}")
        shown += 1
        if shown >= args.top:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
