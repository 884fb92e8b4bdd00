"""The recorder's one clock: every timestamp and timer reads it, so tests can drive time.

``monotonic`` stamps input and times the writer's timers; ``wall`` is what the
pause file, heartbeats and flush times are compared with (seconds since the
epoch); ``wall_ns`` is compared with file modification times. The callback
timer alone reads ``time.perf_counter_ns`` directly: it measures how long a
callback really took, which no test needs to move.
"""

from __future__ import annotations

import time
from typing import Final, Protocol


class Clock(Protocol):
    """What the recorder reads the time from."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (stamps and timers)."""
        ...

    def wall(self) -> float:
        """Seconds since the epoch (what files and other processes write)."""
        ...

    def wall_ns(self) -> int:
        """``wall`` in nanoseconds (compared with file modification times)."""
        ...


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        """``time.monotonic``."""
        return time.monotonic()

    def wall(self) -> float:
        """``time.time``."""
        return time.time()

    def wall_ns(self) -> int:
        """``time.time_ns``."""
        return time.time_ns()


SYSTEM_CLOCK: Final = SystemClock()


class ManualClock:
    """A clock that moves only when told to (tests): both readings advance together.

    The wall reading starts at the real time, so files written during a test
    look as recent to the recorder as they are.
    """

    def __init__(self, start: float = 1_000.0) -> None:
        """Monotonic ``start``; wall time now."""
        self._monotonic = start
        self._wall = time.time()

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        self._monotonic += seconds
        self._wall += seconds

    def monotonic(self) -> float:
        """The monotonic reading."""
        return self._monotonic

    def wall(self) -> float:
        """The wall reading."""
        return self._wall

    def wall_ns(self) -> int:
        """The wall reading in nanoseconds."""
        return int(self._wall * 1e9)
