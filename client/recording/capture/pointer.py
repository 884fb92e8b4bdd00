"""Pointer positions, normalized to the screen and coalesced: never the raw stream.

Clicks and scrolls keep their (normalized) position. Moves are thinned to at
most ``max_rate`` per second and only when the pointer went somewhere, plus one
dwell point where it comes to rest, which is all the policy model needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

MAX_MOVE_RATE: Final = 20.0  # the hard ceiling, whatever a config says


@dataclass(frozen=True, slots=True)
class ScreenBounds:
    """The virtual screen in pixels (all monitors), for normalizing coordinates."""

    left: int
    top: int
    width: int
    height: int

    def normalize(self, x: float, y: float) -> tuple[float, float]:
        """Pixels to [0, 1] x [0, 1], clamped (pointers can report off-screen values)."""
        nx = (x - self.left) / max(1, self.width - 1)
        ny = (y - self.top) / max(1, self.height - 1)
        return min(1.0, max(0.0, nx)), min(1.0, max(0.0, ny))


def screen_bounds() -> ScreenBounds:
    """The virtual screen from mss (X11, macOS and Windows alike)."""
    import mss  # noqa: PLC0415 - needs a display; imported only when recording

    with mss.mss() as grabber:
        whole = grabber.monitors[0]
        return ScreenBounds(whole["left"], whole["top"], whole["width"], whole["height"])


class MoveCoalescer:
    """Thins normalized pointer positions to a few per second, plus dwell points."""

    def __init__(
        self, max_rate: float = 5.0, min_distance: float = 0.01, dwell_after: float = 0.3
    ) -> None:
        """Emit at most ``max_rate`` moves a second (capped at 20), each ``min_distance`` apart."""
        self._interval = 1.0 / min(max_rate, MAX_MOVE_RATE)
        self._min_distance = min_distance
        self._dwell_after = dwell_after
        self._last: tuple[float, float, float] | None = None  # last emitted (t, x, y)
        self._pending: tuple[float, float, float] | None = None  # newest not emitted

    def _far_enough(self, x: float, y: float) -> bool:
        if self._last is None:
            return True
        _, lx, ly = self._last
        return abs(x - lx) + abs(y - ly) >= self._min_distance

    def feed(self, t: float, x: float, y: float) -> tuple[float, float, float] | None:
        """Offer a position; returns the one to record now, if any."""
        if not self._far_enough(x, y):
            self._pending = None
            return None
        if self._last is None or t - self._last[0] >= self._interval:
            self._last = (t, x, y)
            self._pending = None
            return self._last
        self._pending = (t, x, y)
        return None

    def dwell(self, now: float) -> tuple[float, float, float] | None:
        """The resting position once the pointer has not moved for ``dwell_after`` seconds."""
        pending = self._pending
        if pending is None or now - pending[0] < self._dwell_after:
            return None
        self._pending = None
        self._last = pending
        return pending
