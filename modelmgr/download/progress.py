"""Progress counters the engine bumps and front ends *sample* (about 10 Hz), never per chunk.

The engine only adds to plain integers; the CLI bars, the TUI and the daemon's log lines read
``snapshot()`` on their own clock and compute speeds from consecutive samples.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class FileProgress:
    """Live state of one file in a pull."""

    name: str
    total: int | None = None
    done: int = 0
    resumed_from: int = 0
    connections: int = 0
    retries: int = 0
    status: str = "queued"
    """queued | waiting | probing | downloading | verifying | done | present | failed"""
    message: str = ""
    _samples: deque = field(default_factory=lambda: deque(maxlen=30), repr=False)

    def speed(self, now: float | None = None) -> float:
        """Bytes/s over the last few seconds of samples."""
        now = now if now is not None else time.monotonic()
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[0][0] > 3.0:
            self._samples.popleft()
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


class ProgressHub:
    """All files of one pull, plus an optional event sink for messages (retries, waits)."""

    def __init__(self) -> None:
        self.files: dict[str, FileProgress] = {}
        self.events: deque[str] = deque(maxlen=200)
        self.started = time.monotonic()

    def file(self, name: str) -> FileProgress:
        if name not in self.files:
            self.files[name] = FileProgress(name)
        return self.files[name]

    def event(self, text: str) -> None:
        self.events.append(text)

    @property
    def total(self) -> int:
        return sum(f.total or 0 for f in self.files.values())

    @property
    def done(self) -> int:
        return sum(f.done for f in self.files.values())
