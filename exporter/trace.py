"""What a probe saw along the way: phase timings, the failing phase, its findings, and (when
asked for) a transcript of what was said."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from exporter.outcome import Phase, ProbeFailure
from exporter.result import Findings


@dataclass
class Trace:
    """Filled in by transports and probers as they go; read by the runner when the probe ends,
    however it ends."""

    deadline: float
    """Monotonic time by which the probe must be over."""
    record_transcript: bool = False
    started: float = field(default_factory=time.monotonic)
    phases: dict[Phase, float] = field(default_factory=dict)
    failed_in: Phase | None = None
    found: Findings = field(default_factory=Findings)
    tokens: list[str] = field(default_factory=list)
    """Access tokens used, to be redacted from anything the probe reports."""
    transcript: list[str] = field(default_factory=list)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def say(self, line: str) -> None:
        """Add a line to the transcript, if one is kept."""
        if self.record_transcript:
            self.transcript.append(f"{time.monotonic() - self.started:8.3f}s  {line}")

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        """Time a phase (adding to earlier time in it) and name it on any failure inside."""
        start = time.monotonic()
        self.say(f"--- {phase}")
        try:
            yield
        except BaseException as exc:
            if self.failed_in is None:
                self.failed_in = phase
            if isinstance(exc, ProbeFailure) and exc.phase is None:
                exc.phase = phase
            raise
        finally:
            self.phases[phase] = self.phases.get(phase, 0.0) + time.monotonic() - start
