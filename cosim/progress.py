"""A progress bar for work that runs in another process (the simulator).

The simulator-side code appends one line per finished step to a file; :class:`ProgressBar`
polls that file from a thread and redraws one line on stderr.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path


class ProgressBar:
    """Context manager drawing ``done/total unit`` from the line count of ``path``."""

    def __init__(self, path: Path, total: int, unit: str, *, enabled: bool = True, width: int = 30):
        self.path, self.total, self.unit, self.width = Path(path), total, unit, width
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = None
        self._t0 = 0.0

    def _count(self) -> int:
        try:
            return self.path.read_text().count("\n")
        except OSError:
            return 0

    def _draw(self, done: int) -> None:
        frac = min(done / self.total, 1.0) if self.total else 1.0
        bar = "#" * int(frac * self.width)
        sys.stderr.write(f"\r[{bar:<{self.width}}] {done}/{self.total} {self.unit}  {time.monotonic() - self._t0:6.1f} s")
        sys.stderr.flush()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self._draw(self._count())

    def __enter__(self):
        if self.enabled:
            self._t0 = time.monotonic()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread:
            self._stop.set()
            self._thread.join()
            self._draw(self._count())
            sys.stderr.write("\n")
        return False
