"""Named laps of wall time, for the timings a job logs."""

from __future__ import annotations

import time


class Stopwatch:
    """Named laps in seconds: each lap() records the time since the previous one."""

    def __init__(self):
        self.start = self.last = time.time()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.time()
        self.laps[name] = now - self.last
        self.last = now

    def total(self) -> float:
        return time.time() - self.start
