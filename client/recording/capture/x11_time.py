"""X server time (milliseconds in every input event) on the recorder's monotonic clock.

Each core input event carries the server's time when it processed the event, so
a key is placed where it was typed, however late it is read. The server's clock
is its own (32-bit milliseconds, wrapping every 49.7 days), so the offset to
ours is measured: ``measure`` changes a property on a window of our own and
reads the ``PropertyNotify``'s time, bracketed by our clock before the request
and after the reply; of a few tries the one with the shortest round trip wins,
and half of it (plus the millisecond the server rounds to and a margin) is the
``error`` every mapped time carries. The recorder judges a key over
``[t - error, t + error]``: a wider error suppresses more around a password
prompt, never less.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

_WRAP: Final = 1 << 32
_HALF: Final = 1 << 31
MARGIN: Final = 0.005  # seconds added to every error: the server's 1 ms rounding and some


@dataclass(frozen=True, slots=True)
class ServerClock:
    """One measurement: server ``server_ms`` was our ``local`` (seconds), within ``error``."""

    server_ms: int
    local: float
    error: float

    def to_local(self, server_ms: int) -> float:
        """Our clock's reading for server time ``server_ms`` (wrap-around handled)."""
        delta = (server_ms - self.server_ms) % _WRAP
        if delta >= _HALF:
            delta -= _WRAP
        return self.local + delta / 1000.0


def best_of(samples: list[tuple[float, int, float]]) -> ServerClock:
    """The measurement with the shortest round trip of ``(before, server_ms, after)``."""
    before, server_ms, after = min(samples, key=lambda s: s[2] - s[0])
    return ServerClock(server_ms, (before + after) / 2.0, (after - before) / 2.0 + MARGIN)


class ServerClockProbe:
    """Measures the offset on its own X connection, with an unmapped window of its own."""

    def __init__(self, display: Any, clock: Callable[[], float] = time.monotonic) -> None:
        """Take over ``display`` (a connection nobody else reads)."""
        from Xlib import X, Xatom  # noqa: PLC0415 - needs an X server

        self._display = display
        self._clock = clock
        root = display.screen().root
        self._window = root.create_window(
            -1, -1, 1, 1, 0, 0, X.InputOnly, X.CopyFromParent, event_mask=X.PropertyChangeMask
        )
        self._atom = display.intern_atom("_HEARTH_CLOCK")
        self._type = Xatom.INTEGER
        self._notify = X.PropertyNotify
        display.sync()

    def measure(self, tries: int = 3) -> ServerClock:
        """Change our property ``tries`` times; the shortest round trip gives the offset."""
        display, clock = self._display, self._clock
        samples: list[tuple[float, int, float]] = []
        for _ in range(tries):
            before = clock()
            self._window.change_property(self._atom, self._type, 32, [0])
            display.sync()
            after = clock()
            server_ms: int | None = None
            while display.pending_events():
                event = display.next_event()
                if event.type == self._notify and event.atom == self._atom:
                    server_ms = int(event.time)
            if server_ms is not None:
                samples.append((before, server_ms, after))
        if not samples:
            raise ConnectionError("the X server sent no PropertyNotify for the clock window")
        return best_of(samples)

    def close(self) -> None:
        """Close the connection (the window goes with it)."""
        with contextlib.suppress(Exception):  # already gone
            self._display.close()
