"""Input: the listeners that run, and callbacks that stamp and queue, nothing else.

The callbacks run on the listeners' threads: a clock read and an append, no
I/O, no lock waited on. The writer
drains ``items`` in order. ``halted`` is set the moment a pause or revocation
arrives, and from then on nothing is queued. ``Listeners`` starts a keyboard or
mouse listener only for a granted modality, and stops them all while paused or
without consent.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from client.control.consent import ConsentRecord
from client.recording.capture.keys import KeyInterpreter
from client.recording.capture.listener import InputSource
from client.recording.capture.pointer import MoveCoalescer, ScreenBounds
from client.recording.clock import Clock
from policy.events import Click, Event, Modality, PointerMove, Scroll

# Raw input codes, the first field of every queued tuple.
PRESS: Final = 0
RELEASE: Final = 1
MOVE: Final = 2
CLICK: Final = 3
SCROLL: Final = 4
_TIMER_BUCKETS: Final = 20_000  # microseconds; the last bucket collects anything slower


class CallbackTimer:
    """Time spent inside input callbacks, as a histogram in microseconds (fixed memory)."""

    def __init__(self) -> None:
        """Empty histogram."""
        self._hist = array("Q", [0]) * _TIMER_BUCKETS
        # A running total: summing 20,000 buckets at every heartbeat cost more CPU than
        # the callbacks themselves. (Two listener threads may race on it; it is a statistic.)
        self._count = 0
        self._p99_at = float("-inf")
        self._p99: float | None = None

    def p99_ms(self, now: float, fresh: bool = False) -> float | None:
        """The p99 in ms, rescanned at most every 10 s (a heartbeat may come sooner)."""
        if fresh or now - self._p99_at >= 10.0:
            self._p99_at = now
            self._p99 = self.percentile_ms(0.99)
        return self._p99

    def add(self, nanoseconds: int) -> None:
        """Count one callback."""
        micros = nanoseconds // 1000
        self._hist[micros if micros < _TIMER_BUCKETS else _TIMER_BUCKETS - 1] += 1
        self._count += 1

    @property
    def count(self) -> int:
        """Callbacks timed."""
        return self._count

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) in milliseconds, to the microsecond above."""
        total = self.count
        if not total:
            return None
        rank = q * sum(self._hist)  # exact, on the rare reads that need it
        seen = 0
        for micros, n in enumerate(self._hist):
            seen += n
            if seen >= rank:
                return (micros + 1) / 1000.0
        return _TIMER_BUCKETS / 1000.0


class InputQueue:
    """The bounded queue between the input callbacks and the writer."""

    def __init__(self, capacity: int, enqueue_move_rate: float, clock: Clock) -> None:
        """Room for ``capacity`` items; pointer moves queued at most ``enqueue_move_rate``/s."""
        self.items: deque[tuple[Any, ...]] = deque()
        self.halted = False  # set by the control socket's thread: keep nothing more
        self.dropped_keys = 0
        self.dropped_pointer = 0
        self.timer = CallbackTimer()
        self.last_move: tuple[float, float, float] | None = None  # the latest, queued or not
        self._capacity = capacity
        self._now = clock.monotonic
        self._move_gap = 1.0 / max(1.0, enqueue_move_rate)
        self._last_move_queued = float("-inf")

    def _put(self, item: tuple[Any, ...], key: bool) -> None:
        if len(self.items) < self._capacity:
            self.items.append(item)
        elif key:
            self.dropped_keys += 1
        else:
            self.dropped_pointer += 1

    def on_press(self, key: Any, *_: Any) -> None:
        """Key pressed."""
        if self.halted:
            return
        start = time.perf_counter_ns()
        self._put((PRESS, self._now(), key), True)
        self.timer.add(time.perf_counter_ns() - start)

    def on_release(self, key: Any, *_: Any) -> None:
        """Key released (only modifier tracking needs it)."""
        if self.halted:
            return
        start = time.perf_counter_ns()
        self._put((RELEASE, self._now(), key), True)
        self.timer.add(time.perf_counter_ns() - start)

    def on_move(self, x: float, y: float, *_: Any) -> None:
        """Pointer moved: remember the latest, queue at most ``enqueue_move_rate`` a second."""
        if self.halted:
            return
        start = time.perf_counter_ns()
        now = self._now()
        self.last_move = (now, x, y)
        if now - self._last_move_queued >= self._move_gap:
            self._last_move_queued = now
            self._put((MOVE, now, x, y), False)
        self.timer.add(time.perf_counter_ns() - start)

    def on_click(self, x: float, y: float, button: Any, pressed: bool, *_: Any) -> None:
        """Button pressed or released (presses are kept)."""
        if self.halted:
            return
        start = time.perf_counter_ns()
        if pressed:
            self._put((CLICK, self._now(), x, y, button), False)
        self.timer.add(time.perf_counter_ns() - start)

    def on_scroll(self, x: float, y: float, dx: int, dy: int, *_: Any) -> None:
        """Scrolled (vertical steps are kept)."""
        if self.halted:
            return
        start = time.perf_counter_ns()
        if dy:
            self._put((SCROLL, self._now(), x, y, dy), False)
        self.timer.add(time.perf_counter_ns() - start)

    # A source the writer reads (``poll``) passes each event's own time first.

    def press_at(self, t: float, key: Any) -> None:
        """Key pressed at ``t``."""
        if not self.halted:
            self._put((PRESS, t, key), True)

    def move_at(self, t: float, x: float, y: float) -> None:
        """Pointer at ``x, y`` at ``t``: remembered, queued at most ``enqueue_move_rate``/s."""
        if self.halted:
            return
        self.last_move = (t, x, y)
        if t - self._last_move_queued >= self._move_gap:
            self._last_move_queued = t
            self._put((MOVE, t, x, y), False)

    def click_at(self, t: float, x: float, y: float, button: Any, pressed: bool) -> None:
        """Button pressed or released at ``t`` (presses are kept)."""
        if pressed and not self.halted:
            self._put((CLICK, t, x, y, button), False)

    def scroll_at(self, t: float, x: float, y: float, dx: int, dy: int) -> None:
        """Scrolled at ``t`` (vertical steps are kept)."""
        if dy and not self.halted:
            self._put((SCROLL, t, x, y, dy), False)

    @property
    def dropped(self) -> int:
        """Items that did not fit."""
        return self.dropped_keys + self.dropped_pointer


class Listeners:
    """The source's keyboard and mouse listeners, running only for what is consented to.

    A source with ``poll`` (X RECORD) runs no thread: the writer calls ``poll``
    each tick and the source passes every event with the time it happened
    (``InputQueue.press_at`` ...). Others call back on their own threads and
    the queue stamps each event when it arrives.
    """

    def __init__(self, source: InputSource, queue: InputQueue) -> None:
        """Listeners of ``source`` that feed ``queue``; none runs yet."""
        self.source = source
        self.keyboard_on = self.mouse_on = False
        self.bounds: ScreenBounds | None = None
        self.keys = KeyInterpreter()
        self._queue = queue
        self._poll: Callable[[], int] | None = getattr(source, "poll", None)

    @property
    def polled(self) -> bool:
        """Whether the writer reads the source (events carry their own time)."""
        return self._poll is not None

    @property
    def time_error(self) -> float:
        """How far an event's time may be off where it happened (0 when stamped on arrival)."""
        return float(getattr(self.source, "time_error", 0.0))

    def poll(self) -> None:
        """Read a polled source now (its events reach the queue), timed like a callback."""
        if self._poll is not None and self.listening:
            start = time.perf_counter_ns()
            if self._poll():
                self._queue.timer.add(time.perf_counter_ns() - start)

    @property
    def listening(self) -> bool:
        """Whether any listener runs now."""
        return self.keyboard_on or self.mouse_on

    def sync(self, consent: ConsentRecord | None) -> None:
        """Run the listeners ``consent`` allows (None: none), stop the others."""
        want_keys = consent is not None and (
            consent.allows(Modality.KEYS) or consent.allows(Modality.TEXT)
        )
        want_mouse = consent is not None and consent.allows(Modality.POINTER)
        q, source = self._queue, self.source
        if want_keys and not self.keyboard_on:
            self.keys.reset()
            if self.polled:
                source.start_keyboard(q.press_at, q.press_at)
            else:
                source.start_keyboard(q.on_press, q.on_release)
            self.keyboard_on = True
        elif not want_keys and self.keyboard_on:
            source.stop_keyboard()
            self.keyboard_on = False
        if want_mouse and not self.mouse_on:
            self.bounds = self.bounds or source.bounds()
            if self.polled:
                source.start_mouse(q.move_at, q.click_at, q.scroll_at)
            else:
                source.start_mouse(q.on_move, q.on_click, q.on_scroll)
            self.mouse_on = True
        elif not want_mouse and self.mouse_on:
            source.stop_mouse()
            self.mouse_on = False

    def stop(self) -> None:
        """Stop every listener."""
        self.sync(None)


class Pointer:
    """Queued pointer input as events: moves coalesced (``move_rate``), clicks, scrolls."""

    def __init__(self, move_rate: float, source: InputSource) -> None:
        """Positions are normalized to the screen; buttons named by ``source``."""
        self._moves = MoveCoalescer(move_rate)
        self._fed_move_t = float("-inf")
        self._source = source

    def ends_typing(self, item: tuple[Any, ...]) -> bool:
        """Whether ``item`` closes the open key run (a kept click, a scroll)."""
        code = item[0]
        return code == SCROLL or (code == CLICK and self._source.button(item[4]) is not None)

    def event(self, item: tuple[Any, ...], seq: int, bounds: ScreenBounds) -> Event | None:
        """The event a queued move, click or scroll becomes (numbered ``seq``), if any."""
        code, t = item[0], item[1]
        if code == MOVE:
            self._fed_move_t = t
            kept = self._moves.feed(t, *bounds.normalize(item[2], item[3]))
            return PointerMove(seq, *kept) if kept is not None else None
        if code == CLICK:
            button = self._source.button(item[4])
            if button is None:
                return None
            return Click(seq, t, *bounds.normalize(item[2], item[3]), button)
        if code == SCROLL:
            return Scroll(seq, t, *bounds.normalize(item[2], item[3]), int(item[4]))
        return None

    def dwell(
        self, now: float, last: tuple[float, float, float] | None, bounds: ScreenBounds, seq: int
    ) -> PointerMove | None:
        """Where the pointer rests, once it rested long enough (from the latest move seen)."""
        if last is not None and last[0] > self._fed_move_t and last[0] <= now:
            self._fed_move_t = last[0]
            self._moves.feed(last[0], *bounds.normalize(last[1], last[2]))
        rest = self._moves.dwell(now)
        return PointerMove(seq, *rest) if rest is not None else None
