"""What a probe saw along the way: phase timings, the failing phase, mailbox findings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from exporter.outcome import Phase, ProbeFailure


@dataclass
class Trace:
    """Filled in by a prober as it goes; read by the runner when the probe ends, however."""

    phases: dict[Phase, float] = field(default_factory=dict)
    failed_in: Phase | None = None
    delivery_seconds: float | None = None
    late_arrivals: int = 0
    cleanup_deleted: int = 0
    cleanup_failed: bool = False

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        """Time a phase (adding to earlier time in it) and name it on any failure inside."""
        start = time.monotonic()
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
