"""Progress and timing lines on stderr for command-line work that takes more than a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Numbered steps with elapsed time: ``[2/5] merging (0.8 s)``.

    Writes to ``stream`` (stderr by default) so stdout stays clean for results.
    ``quiet=True`` silences it (tests, scripts).
    """

    def __init__(self, total: int, *, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._start = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.quiet:
            elapsed = time.perf_counter() - self._start
            print(f"[{self.done}/{self.total}] {label} ({elapsed:.1f} s)", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"      {text}", file=self.stream, flush=True)
