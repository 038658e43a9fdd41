"""What the harness's servers share: ``with server:`` starts it and always stops it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """A server of the harness, run with ``start()`` and ``stop()``, or as a context."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
