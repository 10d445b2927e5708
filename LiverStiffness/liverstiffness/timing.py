"""Stage timings for the report: one small object instead of a dict threaded by hand."""
from __future__ import annotations

import time
from contextlib import contextmanager


class Stopwatch:
    """Seconds per stage (``with watch.stage("qa"): ...``), summed when a stage runs twice, and
    the total since the watch was made (the run's start)."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 4)

    def total(self) -> dict[str, float]:
        """Every stage and ``total`` (now − start), as the report's ``timings_s``."""
        return {**self.seconds, "total": round(time.perf_counter() - self.started, 4)}
