"""The on-device recorder: input callbacks enqueue, one writer thread does the rest.

Input callbacks (the listeners' threads) only append a tuple to a bounded deque
and count what did not fit: no I/O, no lock waited on. A source with a ``poll``
method (X RECORD's keyboard) has no thread: the writer reads it right after each
focus check, so a key is stamped then and judged at the next step, by that check
and the next, as if a thread had delivered it. The writer thread, every
``tick`` seconds:

1. applies what arrived on the control socket (``client.control.recorder_control``: a
   pause or revocation refuses input the moment it arrives and wakes the writer),
   and watches the consent, pause and sensitive-app files (one ``stat`` of
   HEARTH_HOME every ``control_interval``, the files only when it changed),
   starting listeners only for granted modalities and stopping them all while
   paused or without consent, and writes ``Paused`` / ``Resumed`` markers. A pause
   or revocation drops everything not yet sealed (queue, text, buffer): it is
   never written later. What the socket changed and no file says yet (a full
   disk) is written every ``save_retry`` seconds until it is;
2. asks the focus backend which app is in front; events that arrived between
   two focus checks are judged by both (and by a short tail after a sensitive
   app leaves), so nothing typed in a sensitive app slips through a race;
3. turns raw input into events, passes each through the gate stack
   (``client.gates.apply_gates``) and, for the text modality, through the
   redactor before anything is buffered. Keystrokes are never stored one by one:
   consecutive keys of one class become one ``KeyRun`` (class, count, start and
   duration in whole seconds), closed by another class, a shortcut, a click, a
   focus change, a gap or ``key_run_idle`` seconds without a key; modifier keys
   alone are not counted (shift+a is a letter);
4. seals the buffer into the vault once per ``flush_interval`` while recording,
   empty or not, on a fixed grid, one fixed size (``client.storage.vault_cadence``), so
   the vault's rows trace uptime, not activity.

While a sensitive app is in front only a ``Suppressed`` gap (its duration) is kept.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Protocol

from client.capture.focus import FocusBackend, WindowInfo
from client.capture.keys import KeyInterpreter, Stroke
from client.capture.listener import InputSource
from client.capture.pointer import MoveCoalescer, ScreenBounds
from client.capture.screens import ThumbnailSampler
from client.control.consent import ConsentRecord, consent_path, load_consent, revoke
from client.control.heartbeat import Heartbeat, own_peak_rss_mb, write_heartbeat
from client.control.pause import PauseState, control_path, pause_state, save_pause
from client.control.recorder_control import ControlListener, ControlMessage, LiveState
from client.control.sensitive_apps import SensitiveApps
from client.gates import CaptureState, apply_gates
from client.redact import apply as apply_redaction
from client.redact import find as find_pii
from client.storage.vault_cadence import SEAL_INTERVAL, next_grid_point, next_segment
from client.storage.vault_store import VaultFullError
from policy.events import (
    MAX_TEXT_LENGTH,
    Click,
    Event,
    Focus,
    KeyClass,
    KeyRun,
    Modality,
    Paused,
    PointerMove,
    Resumed,
    Scroll,
    ShortcutPressed,
    Suppressed,
    Text,
    Thumbnail,
    key_run,
)

_log = logging.getLogger(__name__)

# Raw input codes, the first field of every queued tuple.
PRESS: Final = 0
RELEASE: Final = 1
MOVE: Final = 2
CLICK: Final = 3
SCROLL: Final = 4
_TIMER_BUCKETS: Final = 20_000  # microseconds; the last bucket collects anything slower
_TEXT_PROBE: Final = Text(0, 0.0, "")
PASSWORD_PROMPT: Final = "password_prompt"  # noqa: S105 - a gap's reason, not a secret


class EventSink(Protocol):
    """Where gated events go (the vault)."""

    def append(
        self, events: Sequence[Event], wall_time: float | None = None, *, pad_to: int = 0
    ) -> int | None:
        """Persist one batch, padded to at least ``pad_to`` bytes."""
        ...


@dataclass(frozen=True)
class RecorderConfig:
    """Timings and bounds; the defaults meet the 100 ms pause and the sealing cadence."""

    home: Path
    tick: float = 0.1
    control_interval: float = 0.1
    control_recheck: float = 1.0  # look at the control files even if HEARTH_HOME did not change
    flush_interval: float = SEAL_INTERVAL  # one segment per interval while recording
    focus_idle_interval: float = 0.5
    # After a sensitive app's last sighting, input stamped this late is still judged by it:
    # a tick between checks, a tick more for keys read by polling (stamped when read), and
    # 0.15 s of margin for a writer running late.
    suppress_tail: float = 0.35
    queue_capacity: int = 20_000
    pending_limit: int = 100_000
    move_rate: float = 5.0
    enqueue_move_rate: float = 20.0
    text_idle: float = 5.0
    key_run_idle: float = 2.0
    text_chunk: int = 512
    text_window: int = 128  # characters the redactor sees past a segment before sealing it
    heartbeat_interval: float = 5.0  # well inside heartbeat.STALE_AFTER
    retention: Callable[[], object] | None = None
    retention_interval: float = 3600.0
    first_seq: int = 0
    control_socket: bool = True  # listen on run/recorder.sock once started
    save_retry: float = 1.0  # how often a pause or revocation the disk refused is retried


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


class _HomeWatch:
    """Whether anything in HEARTH_HOME may have changed, for the price of one ``stat``.

    Consent, pause and the sensitive-app additions are all replaced atomically
    (write, then rename) inside HEARTH_HOME, which changes the directory's mtime.
    A directory modified in the last 50 ms is looked into again (a second change
    within the filesystem's timestamp granularity would not move the mtime), and
    every ``recheck`` seconds the files are looked at anyway, for edits in place.
    """

    _RACY_NS: Final = 50_000_000

    def __init__(self, home: Path, recheck: float) -> None:
        self._home = home
        self._recheck = recheck
        self._signature: tuple[int, int] | None = None
        self._last_full = float("-inf")

    def changed(self, now: float) -> bool:
        try:
            st = self._home.stat()
            signature: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
            racy = time.time_ns() - st.st_mtime_ns < self._RACY_NS
        except OSError:
            signature, racy = None, True
        if signature == self._signature and not racy and now - self._last_full < self._recheck:
            return False
        self._signature, self._last_full = signature, now
        return True


class _Watched:
    """Re-reads a small file only when its stat signature changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._signature: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        try:
            st = self._path.stat()
            signature: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            signature = None
        if signature == self._signature:
            return False
        self._signature = signature
        return True


class _ControlFiles:
    """The files an employee steers recording with, and a cheap way to notice a change."""

    def __init__(self, home: Path, recheck: float) -> None:
        self.home = _HomeWatch(home, recheck)
        self.consent = _Watched(consent_path(home))
        self.control = _Watched(control_path(home))


class _Wake:
    """Wakes the writer early: a bare lock, released to wake and taken by the wait.

    ``threading.Event.wait`` builds a ``Condition`` and a fresh lock on every call;
    the writer waits ten times a second, and each of those waits cost about 80 µs
    of CPU here against about 50 µs for a bare lock's timed acquire.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        """Wake the waiter (now, or at its next wait); any thread may call it."""
        with contextlib.suppress(RuntimeError):  # already released: already woken
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True (and the wake consumed) if woken."""
        return self._lock.acquire(timeout=timeout)


class _ControlInbox:
    """Requests from the control socket, and those no file says yet (a full disk)."""

    def __init__(self) -> None:
        self.requests: deque[tuple[ControlMessage, threading.Event]] = deque()
        self.wake = _Wake()
        self.unsaved: dict[str, ControlMessage] = {}  # "control" / "consent"
        self.next_save = float("-inf")
        self.warned: set[str] = set()


@dataclass
class _OpenRun:
    """The key run being typed: kept in memory until it closes, then one ``KeyRun``."""

    key_class: KeyClass
    start: float
    last: float
    count: int
    state: CaptureState


_RUN_PROBE: Final = KeyRun(0, 0.0, KeyClass.LETTER, 1, 0.0)


class Recorder:
    """Captures input into the vault through the gates; see the module docstring."""

    # Set by the control socket's thread: after a pause or revocation, keep nothing more.
    _halted: bool = False
    _listener: ControlListener | None = None

    def __init__(
        self,
        config: RecorderConfig,
        sink: EventSink,
        source: InputSource,
        focus: FocusBackend,
        sensitive: Callable[[], SensitiveApps],
        thumbnails: ThumbnailSampler | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Nothing is captured until ``start`` (or ``step``) finds an active consent."""
        self.config = config
        self._sink = sink
        self._source = source
        self._focus = focus
        self._sensitive = sensitive
        self._thumbnails = thumbnails
        self._clock = clock
        # -- filled by input callbacks (other threads): append-only, bounded
        self._queue: deque[tuple[Any, ...]] = deque()
        self._capacity = config.queue_capacity
        self._move_gap = 1.0 / max(1.0, config.enqueue_move_rate)
        self._last_move_queued = float("-inf")
        self._last_move: tuple[float, float, float] | None = None
        self.dropped_keys = 0
        self.dropped_pointer = 0
        self.timer = CallbackTimer()
        self._inbox = _ControlInbox()
        # -- writer state (writer thread only)
        self._files = _ControlFiles(config.home, config.control_recheck)
        self._consent: ConsentRecord | None = None
        self._pause = PauseState(False)
        self._paused = False
        self._keyboard_on = False
        self._mouse_on = False
        self._bounds: ScreenBounds | None = None
        self._keys = KeyInterpreter()
        self._moves = MoveCoalescer(config.move_rate)
        self._fed_move_t = float("-inf")
        self._seq = config.first_seq
        self._pending: list[Event] = []
        self.events_written = 0
        self.dropped_unwritable = 0
        self._last_flush = clock()
        self._last_flush_wall: float | None = None
        self._last_control = float("-inf")
        self._apps = sensitive()
        self._init_judgement()
        self._open_run: _OpenRun | None = None
        self._text: list[str] = []
        self._text_start = self._text_last = 0.0
        self._last_heartbeat = float("-inf")
        self._last_retention = clock()
        self._started_wall = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._states: dict[tuple[bool, bool], CaptureState] = {}
        # Sources whose keyboard is read by the writer (X RECORD) instead of a thread.
        self._poll: Callable[[], None] | None = getattr(source, "poll", None)
        self._probe: tuple[CaptureState, bool, bool] | None = None

    def _init_judgement(self) -> None:
        """Writer-thread state of the focus judgement: sensitive windows, prompts and gaps."""
        self._last_check: float | None = None
        self._prev_sensitive = False
        self._prev_secure = False
        self._sensitive_until = self._secure_until = float("-inf")
        self._gap_start: float | None = None
        self._secure_gap_start: float | None = None
        self._current_app: str | None = None
        self._judged: tuple[WindowInfo, SensitiveApps, bool] | None = None

    # ------------------------------------------------------------ input callbacks
    # These run on the listeners' threads. Keep them to a clock read and an append.

    def on_press(self, key: Any, *_: Any) -> None:
        """Key pressed."""
        if self._halted:  # a pause or revocation arrived: keep nothing more
            return
        start = time.perf_counter_ns()
        if len(self._queue) < self._capacity:
            self._queue.append((PRESS, time.monotonic(), key))
        else:
            self.dropped_keys += 1
        self.timer.add(time.perf_counter_ns() - start)

    def on_release(self, key: Any, *_: Any) -> None:
        """Key released (only modifier tracking needs it)."""
        if self._halted:
            return
        start = time.perf_counter_ns()
        if len(self._queue) < self._capacity:
            self._queue.append((RELEASE, time.monotonic(), key))
        else:
            self.dropped_keys += 1
        self.timer.add(time.perf_counter_ns() - start)

    def on_move(self, x: float, y: float, *_: Any) -> None:
        """Pointer moved: remember the latest, enqueue at most ``enqueue_move_rate`` a second."""
        if self._halted:
            return
        start = time.perf_counter_ns()
        now = time.monotonic()
        self._last_move = (now, x, y)
        if now - self._last_move_queued >= self._move_gap:
            self._last_move_queued = now
            if len(self._queue) < self._capacity:
                self._queue.append((MOVE, now, x, y))
            else:
                self.dropped_pointer += 1
        self.timer.add(time.perf_counter_ns() - start)

    def on_click(self, x: float, y: float, button: Any, pressed: bool, *_: Any) -> None:
        """Button pressed or released (presses are kept)."""
        if self._halted:
            return
        start = time.perf_counter_ns()
        if pressed:
            if len(self._queue) < self._capacity:
                self._queue.append((CLICK, time.monotonic(), x, y, button))
            else:
                self.dropped_pointer += 1
        self.timer.add(time.perf_counter_ns() - start)

    def on_scroll(self, x: float, y: float, dx: int, dy: int, *_: Any) -> None:
        """Scrolled (vertical steps are kept)."""
        if self._halted:
            return
        start = time.perf_counter_ns()
        if dy:
            if len(self._queue) < self._capacity:
                self._queue.append((SCROLL, time.monotonic(), x, y, dy))
            else:
                self.dropped_pointer += 1
        self.timer.add(time.perf_counter_ns() - start)

    # ------------------------------------------------------------ lifecycle

    @property
    def listening(self) -> bool:
        """Whether any input listener runs now."""
        return self._keyboard_on or self._mouse_on

    @property
    def dropped(self) -> int:
        """Input events lost: queue full, or the disk full for too long."""
        return self.dropped_keys + self.dropped_pointer + self.dropped_unwritable

    def start(self) -> None:
        """Read consent and pause state, start the allowed listeners, run the writer."""
        self._check_control(self._clock())
        self._write_heartbeat(self._clock())
        self._thread = threading.Thread(target=self._run, name="hearth-writer", daemon=True)
        self._thread.start()
        if self.config.control_socket:
            listener = ControlListener(self.config.home, self.request)
            try:
                listener.start()
                self._listener = listener
            except OSError as exc:
                _log.warning(
                    "no control socket (%s): pause and revoke reach this recorder "
                    "through the state files only",
                    exc.strerror or type(exc).__name__,
                )

    def request(self, message: ControlMessage, timeout: float = 1.0) -> bool | LiveState:
        """Apply a pause, resume or revocation from the socket; True once the writer applied it.

        Input callbacks refuse everything from this call on; the writer wakes at
        once to stop the listeners and drop what is buffered. A status request is
        answered at once with what the recorder does now.
        """
        if message.op == "status":
            until = self._pause.until if self._paused else None
            return LiveState(
                consenting=self._consent_active(),
                paused=self._paused,
                paused_until=None if until is None or until == float("inf") else until,
                unsaved=tuple(self._inbox.unsaved.copy()),  # copy(): atomic under the GIL
            )
        if message.op != "resume":
            self._halted = True
        done = threading.Event()
        self._inbox.requests.append((message, done))
        self._inbox.wake.set()
        if self._thread is None:  # not running: the caller steps the writer itself
            return False
        return done.wait(timeout)

    def _run(self) -> None:
        failures = 0
        while True:
            self._inbox.wake.wait(self.config.tick)
            if self._stop.is_set():
                break
            try:
                self.step()
                failures = 0
            except Exception as exc:  # keep recording; never log content
                failures += 1
                _log.warning("recorder step failed: %s", type(exc).__name__)
                if failures >= 50:
                    _log.error("recorder stopping after repeated failures")
                    self._stop.set()
        self._finish()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, write everything captured so far, and close."""
        self._stop.set()
        self._inbox.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self._finish()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the recorder stopped by itself (repeated failures); True if it did."""
        return self._stop.wait(timeout)

    def _finish(self) -> None:
        now = self._clock()
        self._apply_requests(now)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._observing():
            self._poll_input()  # typed before the stop: stamped now, judged by the last check
        self._stop_listeners()
        if self._inbox.unsaved:
            self._save_unsaved(now)
        if self._consent_active() and not self._paused:
            self._observe(now, force=True)
            self._close_run()
            self._end_text(now, everything=True)
            self._close_gap(now)
            self._close_secure_gap(now)
        self.flush(now)
        self._write_heartbeat(now, running=False)
        self._focus.close()

    # ------------------------------------------------------------ the writer's tick

    def step(self) -> None:
        """One writer iteration (the thread calls this every ``tick``; tests call it directly)."""
        now = self._clock()
        if self._inbox.requests:
            self._apply_requests(now)
        if now - self._last_control >= self.config.control_interval:
            self._check_control(now)
        if self._observing():
            self._observe(now)
            # After the focus check: what is read now is stamped after it, so the next
            # step judges it by this check and the next (as if a listener thread had
            # delivered it now).
            self._poll_input()
            self._timed(now)
        if now - self._last_flush >= self.config.flush_interval:
            self.flush(now)
        if now - self._last_heartbeat >= self.config.heartbeat_interval:
            self._write_heartbeat(now)
        if self.config.retention and now - self._last_retention >= self.config.retention_interval:
            self._last_retention = now
            self.config.retention()

    def _consent_active(self) -> bool:
        return self._consent is not None and self._consent.active

    def _observing(self) -> bool:
        return self._consent_active() and not self._paused

    def _state(self, sensitive: bool = False, secure: bool = False) -> CaptureState:
        """The capture state now; the same object while nothing in it changed."""
        cached = self._states.get((sensitive, secure))
        if cached is None or cached.consent is not self._consent or cached.paused != self._paused:
            cached = CaptureState(self._consent, self._paused, sensitive, secure)
            self._states[(sensitive, secure)] = cached
        return cached

    def _allows(self, state: CaptureState) -> tuple[bool, bool]:
        """Whether key runs and text pass the gates in ``state`` (asked once per state)."""
        probe = self._probe
        if probe is None or probe[0] is not state:
            runs = apply_gates(_RUN_PROBE, state) is not None
            probe = self._probe = (state, runs, apply_gates(_TEXT_PROBE, state) is not None)
        return probe[1], probe[2]

    def _emit(self, event: Event, state: CaptureState) -> bool:
        """Gate ``event`` (built with the next seq); keep it and advance seq if it passes."""
        if apply_gates(event, state) is None:
            return False
        self._pending.append(event)
        self._seq += 1
        return True

    # ------------------------------------------------------------ consent and pause

    def _check_control(self, now: float) -> None:
        self._last_control = now
        changed = self._files.home.changed(now)  # True at least every control_recheck
        # Listeners follow consent and pause, which change only with a file (changed), a
        # pause's end (paused) or a socket request (_apply_requests syncs them itself).
        if changed or self._pause.paused or self._paused:
            listening = self.listening
            if changed:
                self._reread_control()
            self._follow_pause(now)
            self._sync_listeners()
            if self.listening != listening:  # `hearth status` shows it now, not at the next beat
                self._write_heartbeat(now)
        self._halted = not self._observing() or bool(self._inbox.requests)
        if self._inbox.unsaved and now >= self._inbox.next_save:
            self._save_unsaved(now)

    def _follow_pause(self, now: float) -> None:
        paused = self._pause.paused and time.time() < (self._pause.until or float("inf"))
        if paused and not self._paused:
            self._on_pause(now)
        elif not paused and self._paused:
            self._on_resume(now)

    def _apply_requests(self, now: float) -> None:
        """What the control socket asked, in order; each answered once applied."""
        listening = self.listening
        while self._inbox.requests:
            message, done = self._inbox.requests.popleft()
            if message.op == "revoke":
                if self._consent is not None and self._consent.active:
                    at = message.revoked_at if message.revoked_at is not None else time.time()
                    granted = self._consent.granted_at
                    self._consent = replace(self._consent, revoked_at=at)
                    self._on_revoked()
                    self._inbox.unsaved["consent"] = replace(
                        message, revoked_at=at, granted_at=granted
                    )
            else:
                self._pause = message.pause_state()
                self._follow_pause(now)
                self._inbox.unsaved["control"] = message
            self._sync_listeners()
            self._halted = not self._observing() or bool(self._inbox.requests)
            done.set()
            # The command writes the file itself right after the answer; look later.
            self._inbox.next_save = now + self.config.save_retry
        if self.listening != listening:
            self._write_heartbeat(now)

    def _save_unsaved(self, now: float) -> None:
        """Write what the socket changed and no file says yet; on a full disk, retry later."""
        home = self.config.home
        for key, message in list(self._inbox.unsaved.items()):
            try:
                if key == "consent":
                    current = load_consent(home)
                    # Only the consent that was revoked: a grant made since stays.
                    if current is not None and current.granted_at == message.granted_at:
                        revoke(home, at=message.revoked_at)
                elif pause_state(home) != message.pause_state():
                    save_pause(home, message.pause_state())
            except OSError as exc:
                self._inbox.next_save = now + self.config.save_retry
                if key not in self._inbox.warned:
                    self._inbox.warned.add(key)
                    what = "revocation" if key == "consent" else message.op
                    _log.warning(
                        "the %s is in force but not saved yet (%s); retrying every %g s",
                        what,
                        exc.strerror or type(exc).__name__,
                        self.config.save_retry,
                    )
                continue
            del self._inbox.unsaved[key]
            self._inbox.warned.discard(key)

    def _reread_control(self) -> None:
        """Consent, pause and the sensitive list, each re-read only if its file changed."""
        self._apps = self._sensitive()
        if self._files.consent.changed():
            consent = load_consent(self.config.home)
            was_active = self._consent_active()
            self._consent = consent
            if was_active and not self._consent_active():
                self._on_revoked()
        if self._files.control.changed():
            self._pause = pause_state(self.config.home)

    def _drop_unwritten(self) -> None:
        """A pause or revocation: forget what is queued, typed or buffered and not sealed.

        It is never written later, even when a full disk held it back. The buffered
        events are the newest, so their sequence numbers are given back.
        """
        self._queue.clear()
        self._open_run = None  # typed just now: dropped with the rest
        self._text.clear()
        if self._pending:
            self._seq = self._pending[0].seq
            self._pending = []

    def _on_revoked(self) -> None:
        """Consent is gone: stop listening, drop everything unwritten, keep nothing more."""
        self._stop_listeners()
        self._drop_unwritten()
        self._gap_start = self._secure_gap_start = None
        self._reset_focus()

    def _on_pause(self, now: float) -> None:
        self._stop_listeners()
        self._drop_unwritten()  # from around the pause moment, or held by a full disk
        if self._consent_active():
            self._close_gap(now)
            self._close_secure_gap(now)
        self._open_run = None
        self._paused = True
        self._emit(Paused(self._seq, now), self._state())
        self._reset_focus()
        self.flush(now)

    def _on_resume(self, now: float) -> None:
        self._queue.clear()  # a late callback from before the pause must not count as after
        self._paused = False
        self._emit(Resumed(self._seq, now), self._state())

    def _sync_listeners(self) -> None:
        consent = self._consent if self._observing() else None
        want_keys = consent is not None and (
            consent.allows(Modality.KEYS) or consent.allows(Modality.TEXT)
        )
        want_mouse = consent is not None and consent.allows(Modality.POINTER)
        if want_keys and not self._keyboard_on:
            self._keys.reset()
            self._source.start_keyboard(self.on_press, self.on_release)
            self._keyboard_on = True
        elif not want_keys and self._keyboard_on:
            self._source.stop_keyboard()
            self._keyboard_on = False
        if want_mouse and not self._mouse_on:
            self._bounds = self._bounds or self._source.bounds()
            self._source.start_mouse(self.on_move, self.on_click, self.on_scroll)
            self._mouse_on = True
        elif not want_mouse and self._mouse_on:
            self._source.stop_mouse()
            self._mouse_on = False

    def _poll_input(self) -> None:
        """Read the input a polled source holds (its callbacks run here, on the writer)."""
        if self._poll is not None and self._keyboard_on:
            self._poll()

    def _stop_listeners(self) -> None:
        if self._keyboard_on:
            self._source.stop_keyboard()
            self._keyboard_on = False
        if self._mouse_on:
            self._source.stop_mouse()
            self._mouse_on = False

    # ------------------------------------------------------------ focus and input

    def _reset_focus(self) -> None:
        self._last_check = None
        self._prev_sensitive = self._prev_secure = False
        self._current_app = None
        self._keys.reset()

    def _window(self) -> tuple[WindowInfo | None, bool, bool]:
        """The app in front, whether it is sensitive, whether it is a password prompt."""
        try:
            info = self._focus.active_window()
        except Exception as exc:  # fail closed: unknown focus suppresses capture
            _log.warning("focus check failed: %s", type(exc).__name__)
            return None, True, True
        if info is None:
            return None, False, False
        # The backend hands back the same WindowInfo while nothing changed: judge each
        # window (title matched against every sensitive site) once per list in force.
        judged = self._judged
        if judged is not None and judged[0] is info and judged[1] is self._apps:
            return info, judged[2], info.secure_input
        sensitive = info.unseen_switch or self._apps.is_sensitive(
            info.app_id, info.category, info.hint
        )
        self._judged = (info, self._apps, sensitive)
        return info, sensitive, info.secure_input

    def _observe(self, now: float, force: bool = False) -> None:
        """Check focus, then turn every event queued before the check into gated events."""
        if (
            not force
            and not self._queue
            and self._last_check is not None
            and now - self._last_check < self.config.focus_idle_interval
        ):
            return
        info, sensitive, secure = self._window()
        checked = self._clock()
        tail = self.config.suppress_tail
        if sensitive:
            self._sensitive_until = checked + tail
            if self._gap_start is None:
                self._gap_start = self._last_check if self._last_check is not None else checked
            self._current_app = None
        if secure:
            self._secure_until = checked + tail
            if self._secure_gap_start is None:
                start = self._last_check if self._last_check is not None else checked
                self._secure_gap_start = start
        elif checked > self._secure_until:
            self._close_secure_gap(self._secure_until)
        suppressing = sensitive or secure
        prev_sensitive, prev_secure = self._prev_sensitive, self._prev_secure
        app_id = info.app_id if info is not None else None
        if app_id != self._current_app or suppressing:
            self._close_run()
        if app_id != self._current_app:
            self._end_text(checked, everything=True)
        suppressed_now = sensitive or checked <= self._sensitive_until
        if not suppressed_now:
            self._close_gap(self._sensitive_until)
            if info is not None and info.app_id != self._current_app:
                self._current_app = info.app_id
                self._emit(Focus(self._seq, checked, info.app_id, info.category), self._state())
        queue = self._queue
        while queue and queue[0][1] <= checked:
            item = queue.popleft()
            t = item[1]
            state = self._state(
                sensitive or prev_sensitive or t <= self._sensitive_until,
                secure or prev_secure or t <= self._secure_until,
            )
            self._handle(item, t, state)
        self._last_check = checked
        self._prev_sensitive, self._prev_secure = sensitive, secure

    def _handle(self, item: tuple[Any, ...], t: float, state: CaptureState) -> None:
        code = item[0]
        if code == PRESS:
            stroke = self._keys.press(self._source.raw_key(item[2]))
            if stroke.shortcut is not None:
                self._close_run()
                self._emit(ShortcutPressed(self._seq, float(round(t)), stroke.shortcut), state)
            elif stroke.key_class is not KeyClass.MODIFIER:
                self._run_key(stroke.key_class, t, state)
            self._text_key(stroke, t, state)
        elif code == RELEASE:
            self._keys.release(self._source.raw_key(item[2]))
        elif state.sensitive_app_in_front or self._bounds is None:
            return
        elif code == MOVE:
            self._fed_move_t = t
            kept = self._moves.feed(t, *self._bounds.normalize(item[2], item[3]))
            if kept is not None:
                self._emit(PointerMove(self._seq, *kept), state)
        elif code == CLICK:
            button = self._source.button(item[4])
            if button is not None:
                self._close_run()
                x, y = self._bounds.normalize(item[2], item[3])
                self._emit(Click(self._seq, t, x, y, button), state)
        elif code == SCROLL:
            self._close_run()
            x, y = self._bounds.normalize(item[2], item[3])
            self._emit(Scroll(self._seq, t, x, y, int(item[4])), state)

    # ------------------------------------------------------------ key runs

    def _run_key(self, key_class: KeyClass, t: float, state: CaptureState) -> None:
        """Count one key into the open run, or close it and open another."""
        if not self._allows(state)[0]:
            self._close_run()  # what was typed while allowed; none of this key
            return
        run = self._open_run
        if key_class is KeyClass.SPACE and run is not None and run.key_class is KeyClass.LETTER:
            key_class = KeyClass.LETTER  # spaces between words continue the letters
        if (
            run is not None
            and run.key_class is key_class
            and t - run.last < self.config.key_run_idle
            and (run.state is state or run.state == state)
        ):
            run.last = t
            run.count += 1
            return
        self._close_run()
        self._open_run = _OpenRun(key_class, t, t, 1, state)

    def _close_run(self) -> None:
        run, self._open_run = self._open_run, None
        if run is not None:
            self._emit(key_run(self._seq, run.start, run.last, run.key_class, run.count), run.state)

    def _close_gap(self, end: float) -> None:
        if self._gap_start is None:
            return
        self._close_run()
        start, self._gap_start = self._gap_start, None
        self._emit(Suppressed(self._seq, start, max(0.0, end - start)), self._state())

    def _close_secure_gap(self, end: float) -> None:
        """A password prompt ended: keep its duration, nothing that was typed."""
        if self._secure_gap_start is None:
            return
        self._close_run()
        start, self._secure_gap_start = self._secure_gap_start, None
        gap = Suppressed(self._seq, start, max(0.0, end - start), reason=PASSWORD_PROMPT)
        self._emit(gap, self._state())

    # ------------------------------------------------------------ text (redacted)

    def _text_key(self, stroke: Stroke, t: float, state: CaptureState) -> None:
        if not self._allows(state)[1]:
            # Not allowed now (not granted, sensitive app, password prompt): end what
            # was typed while it was allowed, and keep none of this key.
            self._end_text(t, everything=True)
            return
        if not self._text:
            self._text_start = t
        self._text_last = t
        if stroke.typed is not None:
            self._text.append(stroke.typed)
        elif stroke.key_class is KeyClass.EDIT:
            if self._text:
                self._text.pop()
        elif stroke.key_class is KeyClass.ENTER:
            self._text.append("\n")
            self._end_text(t, everything=True)
        if len(self._text) >= self.config.text_chunk:
            self._end_text(t, everything=False)

    def _end_text(self, now: float, everything: bool) -> None:
        """Redact and buffer the typed text that is sealed.

        All of it at a hard boundary (``everything``: Enter, another app, a gate
        closing, pause, stop), otherwise only what lies at least ``text_window``
        characters before the last key.

        The redactor always runs over the whole unsealed text, so a number typed in
        groups across idle pauses is matched as one; a cut never falls inside a find.
        """
        if not self._text:
            return
        typed = "".join(self._text)
        spans = find_pii(typed)
        cut = len(typed)
        if not everything:
            cut -= min(self.config.text_window, self.config.text_chunk // 2)
            for span in spans:
                if span.start < cut < span.end:
                    cut = span.start
            if cut <= 0:
                return  # the window has not passed over any of it yet
        self._text = list(typed[cut:])
        clean = apply_redaction(typed[:cut], [s for s in spans if s.end <= cut])
        clean = clean[:MAX_TEXT_LENGTH]
        if clean.strip():
            state = CaptureState(self._consent, False, False, False)
            self._emit(Text(self._seq, float(round(self._text_start)), clean), state)
        self._text_start = now

    # ------------------------------------------------------------ timers

    def _timed(self, now: float) -> None:
        suppressed = self._prev_sensitive or now <= self._sensitive_until
        last = self._last_move
        if self._bounds is not None and not suppressed:
            if last is not None and last[0] > self._fed_move_t and last[0] <= now:
                self._fed_move_t = last[0]
                self._moves.feed(last[0], *self._bounds.normalize(last[1], last[2]))
            rest = self._moves.dwell(now)
            if rest is not None:
                self._emit(PointerMove(self._seq, *rest), self._state())
        run = self._open_run
        if run is not None and now - run.last >= self.config.key_run_idle:
            self._close_run()
        if self._text and now - self._text_last >= self.config.text_idle:
            self._end_text(now, everything=False)
            self._text_last = now
        consent = self._consent
        if (
            self._thumbnails is not None
            and consent is not None
            and consent.allows(Modality.SCREENS)
            and not suppressed
            and self._thumbnails.due(now)
        ):
            shot = self._thumbnails.sample(now)
            if shot is not None:
                self._emit(Thumbnail(self._seq, now, *shot), self._state())

    # ------------------------------------------------------------ storage

    def flush(self, now: float) -> None:
        """Seal the buffer's oldest events into one fixed-size segment (``next_segment``).

        While recording an empty buffer is sealed too: one segment per interval. What
        does not fit waits (sealed at stop); a full disk keeps everything in memory.
        """
        self._last_flush = next_grid_point(self._last_flush, now, self.config.flush_interval)
        if self._inbox.requests:  # a pause or revocation may drop it first
            return
        if not self._pending and not self._observing():
            return
        batch, pad_to = next_segment(self._pending, self._consent, self._stop.is_set())
        try:
            self._sink.append(batch, pad_to=pad_to)
        except VaultFullError:
            _log.warning("vault disk full: %d events held in memory", len(self._pending))
            excess = len(self._pending) - self.config.pending_limit
            if excess > 0:
                del self._pending[:excess]
                self.dropped_unwritable += excess
            return
        del self._pending[: len(batch)]  # the rest waits for the next interval
        self.events_written += len(batch)
        self._last_flush_wall = time.time()

    def _write_heartbeat(self, now: float, running: bool = True) -> None:
        self._last_heartbeat = now
        beat = Heartbeat(
            pid=os.getpid(),
            started=self._started_wall,
            updated=time.time(),
            events_written=self.events_written,
            last_flush=self._last_flush_wall,
            dropped=self.dropped,
            next_seq=self._seq,
            listening=self.listening,
            running=running,
            callbacks=self.timer.count,
            callback_p99_ms=self.timer.p99_ms(now, fresh=not running),
            peak_rss_mb=own_peak_rss_mb(),
        )
        try:
            write_heartbeat(self.config.home, beat)
        except OSError as exc:
            _log.warning("heartbeat not written: %s", type(exc).__name__)
