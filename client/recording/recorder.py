"""The on-device recorder: the parts of ``client.recording`` wired around one writer thread.

Input callbacks only stamp and queue (``input_queue``); on X11 the writer reads
the input itself, each event stamped with the X server's time of it. The writer,
every ``tick``: applies what the employee decided (``control_watch``), asks
which app is in front and judges the input queued by when it happened
(``focus_judge``), turns it into key runs, redacted text, shortcuts, clicks,
scrolls, pointer moves and thumbnails through the gates (``text_assembler``,
``gates``), and seals the buffer into the vault on a fixed grid (``writer``).
A pause or revocation drops everything not yet sealed. Every timestamp and
timer reads one injected ``clock``; while a sensitive app is in front only a
``Suppressed`` gap is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from client.control.recorder_control import ControlListener, ControlMessage, LiveState
from client.control.sensitive_apps import SensitiveApps
from client.recording.capture.focus import FocusBackend
from client.recording.capture.listener import InputSource
from client.recording.capture.screens import ThumbnailSampler
from client.recording.clock import SYSTEM_CLOCK, Clock
from client.recording.control_watch import ControlWatch
from client.recording.focus_judge import FocusJudge
from client.recording.gates import CaptureState, States
from client.recording.input_queue import PRESS, RELEASE, InputQueue, Listeners, Pointer
from client.recording.text_assembler import KeyRuns, OpenRun, TextAssembler
from client.recording.writer import EventSink, Writer, WriterThread, beat
from client.storage.vault_cadence import SEAL_INTERVAL
from policy.events import (
    Event,
    Focus,
    KeyClass,
    Modality,
    Paused,
    Resumed,
    ShortcutPressed,
    Text,
    Thumbnail,
    key_run,
)

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecorderConfig:
    """Timings and bounds; the defaults meet the 100 ms pause and the sealing cadence."""

    home: Path
    tick: float = 0.1
    control_interval: float = 0.1
    control_recheck: float = 1.0  # look at the control files even if HEARTH_HOME did not change
    flush_interval: float = SEAL_INTERVAL  # one segment per interval while recording
    focus_idle_interval: float = 0.5
    suppress_tail: float = 0.25
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


class Recorder:
    """Captures input into the vault through the gates; see the module docstring."""

    _listener: ControlListener | None = None

    def __init__(
        self,
        config: RecorderConfig,
        sink: EventSink,
        source: InputSource,
        focus: FocusBackend,
        sensitive: Callable[[], SensitiveApps],
        thumbnails: ThumbnailSampler | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """Nothing is captured until ``start`` (or ``step``) finds an active consent."""
        self.config = config
        self._thumbnails = thumbnails
        self.clock = clock  # every stamp and timer reads it (tests drive a ManualClock)
        self.input = InputQueue(config.queue_capacity, config.enqueue_move_rate, clock)
        q = self.input
        self.on_press, self.on_release = q.on_press, q.on_release
        self.on_move, self.on_click, self.on_scroll = q.on_move, q.on_click, q.on_scroll
        self.timer = q.timer  # time inside input callbacks (reported in the heartbeat)
        self.control = ControlWatch(
            config.home, config.control_recheck, config.save_retry, sensitive, clock, self
        )
        self.judge = FocusJudge(focus, config.suppress_tail, clock)
        self.writer = Writer(
            sink, config.first_seq, config.flush_interval, config.pending_limit, clock
        )
        self.runs = KeyRuns(config.key_run_idle, self._emit_run)
        self.text = TextAssembler(config.text_chunk, config.text_window, self._emit_text)
        self.listeners = Listeners(source, self.input)
        self.pointer = Pointer(config.move_rate, source)
        self._last_heartbeat = float("-inf")
        self._last_retention = clock.monotonic()
        self._started_wall = clock.wall()
        self.writer_thread = WriterThread(
            self.step, self._finish, self.control.inbox.wake, config.tick
        )
        self._states = States()

    @property
    def listening(self) -> bool:
        """Whether any input listener runs now."""
        return self.listeners.listening

    @property
    def dropped(self) -> int:
        """Input events lost: queue full, or the disk full for too long."""
        return self.input.dropped + self.writer.dropped_unwritable

    @property
    def events_written(self) -> int:
        """Events sealed into the vault so far."""
        return self.writer.events_written

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Read consent and pause state, start the allowed listeners, run the writer."""
        self._check_control(self.clock.monotonic())
        self._write_heartbeat(self.clock.monotonic())
        self.writer_thread.start()
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

        Input callbacks refuse everything from this call on (a pause or revocation);
        the writer wakes at once. A status request is answered at once.
        """
        if message.op not in ("status", "resume"):
            self.input.halted = True
        return self.control.request(message, timeout, self.writer_thread.running)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop listening, write everything captured so far, and close."""
        self.writer_thread.stop(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the recorder stopped by itself (repeated failures); True if it did."""
        return self.writer_thread.wait(timeout)

    def _finish(self) -> None:
        now = self.clock.monotonic()
        self._apply_requests(now)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self.control.observing() and self.listeners.polled:
            time.sleep(min(self.listeners.time_error, 0.1))  # a look must follow the last key
            self.listeners.poll()
        self.listeners.stop()
        if self.control.inbox.unsaved:
            self.control.save_unsaved(now)
        if self.control.observing():
            self._observe(now, force=True)
            self.runs.close()
            self.text.end(now, everything=True)
            self._close_gap(now)
            self._close_secure_gap(now)
        self.flush(now)
        self._write_heartbeat(now, running=False)
        self.judge.focus.close()

    # ------------------------------------------------------------ the writer's tick

    def step(self) -> None:
        """One writer iteration (the thread calls this every ``tick``; tests call it directly)."""
        now = self.clock.monotonic()
        if self.control.inbox.requests:
            self._apply_requests(now)
        if now - self.control.last_check >= self.config.control_interval:
            self._check_control(now)
        if self.control.observing():
            self.listeners.poll()  # a polled source's input, before the look that judges it
            self._observe(now)
            self._timed(now)
        if self.writer.due(now):
            self.flush(now)
        if now - self._last_heartbeat >= self.config.heartbeat_interval:
            self._write_heartbeat(now)
        if self.config.retention and now - self._last_retention >= self.config.retention_interval:
            self._last_retention = now
            self.config.retention()

    def flush(self, now: float) -> None:
        """Seal the buffer into the vault (see ``client.recording.writer``)."""
        c, stopping = self.control, self.writer_thread.stopping
        self.writer.flush(now, bool(c.inbox.requests), c.observing(), c.consent, stopping)

    def _state(self, sensitive: bool = False, secure: bool = False) -> CaptureState:
        return self._states.get(self.control.consent, self.control.paused, sensitive, secure)

    def _emit(self, event: Event | None, state: CaptureState) -> None:
        if event is not None:
            self.writer.emit(event, state)

    def _emit_run(self, run: OpenRun) -> None:
        seq = self.writer.seq
        self._emit(key_run(seq, run.start, run.last, run.key_class, run.count), run.state)

    def _emit_text(self, start: float, clean: str) -> None:
        state = CaptureState(self.control.consent, False, False, False)
        self._emit(Text(self.writer.seq, start, clean), state)

    # ------------------------------------------------------------ consent and pause

    def _check_control(self, now: float) -> None:
        listening = self.listening
        if self.control.check(now):
            self.listeners.sync(self.control.consent if self.control.observing() else None)
            if self.listening != listening:  # `hearth status` shows it now, not at the next beat
                self._write_heartbeat(now)
        inbox = self.control.inbox
        self.input.halted = not self.control.observing() or bool(inbox.requests)
        if inbox.unsaved and now >= inbox.next_save:
            self.control.save_unsaved(now)

    def _apply_requests(self, now: float) -> None:
        """What the control socket asked, in order; each answered once applied."""
        listening = self.listening
        requests = self.control.inbox.requests
        while requests:
            message, done = requests.popleft()
            self.control.apply(message, now)
            self.listeners.sync(self.control.consent if self.control.observing() else None)
            self.input.halted = not self.control.observing() or bool(requests)
            done.set()
        if self.listening != listening:
            self._write_heartbeat(now)

    def _drop_unwritten(self) -> None:
        """Forget what is queued, typed or buffered and not sealed (never written later)."""
        self.input.items.clear()
        self.runs.open = None  # typed just now: dropped with the rest
        self.text.text.clear()
        self.writer.drop_unwritten()

    def on_revoked(self) -> None:
        """Consent is gone: stop listening, drop everything unwritten, keep nothing more."""
        self.listeners.stop()
        self._drop_unwritten()
        self.judge.gap_start = self.judge.secure_gap_start = None
        self._reset_focus()

    def on_pause(self, now: float) -> None:
        """Stop listening, drop what is unwritten, keep a ``Paused`` marker and seal it."""
        self.listeners.stop()
        self._drop_unwritten()  # from around the pause moment, or held by a full disk
        if self.control.consenting():
            self._close_gap(now)
            self._close_secure_gap(now)
        self.runs.open = None
        self.control.paused = True
        self._emit(Paused(self.writer.seq, now), self._state())
        self._reset_focus()
        self.flush(now)

    def on_resume(self, now: float) -> None:
        """Keep a ``Resumed`` marker; listeners restart with the next sync."""
        self.input.items.clear()  # a late callback from before the pause must not count as after
        self.control.paused = False
        self._emit(Resumed(self.writer.seq, now), self._state())

    # ------------------------------------------------------------ focus and input

    def _reset_focus(self) -> None:
        self.judge.reset()
        self.listeners.keys.reset()

    def _observe(self, now: float, force: bool = False) -> None:
        """Check focus, then turn every event queued before the check into gated events."""
        judge, queue = self.judge, self.input.items
        if not force and not judge.due(now, bool(queue), self.config.focus_idle_interval):
            return
        look = judge.look(self.control.apps)
        checked = look.checked
        if not look.secure and checked > judge.secure_until:
            self._close_secure_gap(judge.secure_until)
        info = look.info
        app_id = info.app_id if info is not None else None
        if app_id != judge.current_app or look.sensitive or look.secure:
            self.runs.close()
        if app_id != judge.current_app:
            self.text.end(checked, everything=True)
        if not (look.sensitive or checked <= judge.sensitive_until):
            self._close_gap(judge.sensitive_until)
            if info is not None and info.app_id != judge.current_app:
                judge.current_app = info.app_id
                focus = Focus(self.writer.seq, checked, info.app_id, info.category)
                self._emit(focus, self._state())
        # Input is judged by when it happened, against every look since the one before
        # (``judge_span``); a time that may be off by ``slack`` waits for a look past it.
        slack = self.listeners.time_error
        while queue and queue[0][1] + slack <= checked:
            item = queue.popleft()
            t = item[1]
            self._handle(item, t, self._state(*judge.judge_span(t - slack, t + slack)))
        judge.done(look)

    def _handle(self, item: tuple[Any, ...], t: float, state: CaptureState) -> None:
        code = item[0]
        if code == PRESS:
            stroke = self.listeners.keys.press(self.listeners.source.raw_key(item[2]))
            runs_ok, text_ok = self._states.typing_allowed(state)
            if stroke.shortcut is not None:
                self.runs.close()
                shortcut = ShortcutPressed(self.writer.seq, float(round(t)), stroke.shortcut)
                self._emit(shortcut, state)
            elif stroke.key_class is not KeyClass.MODIFIER:
                self.runs.key(stroke.key_class, t, state, runs_ok)
            self.text.key(stroke, t, text_ok)
        elif code == RELEASE:
            self.listeners.keys.release(self.listeners.source.raw_key(item[2]))
        elif state.sensitive_app_in_front or self.listeners.bounds is None:
            return
        else:
            if self.pointer.ends_typing(item):
                self.runs.close()
            self._emit(self.pointer.event(item, self.writer.seq, self.listeners.bounds), state)

    def _close_gap(self, end: float) -> None:
        if self.judge.gap_start is not None:
            self.runs.close()
            self._emit(self.judge.close_gap(self.writer.seq, end), self._state())

    def _close_secure_gap(self, end: float) -> None:
        if self.judge.secure_gap_start is not None:
            self.runs.close()
            self._emit(self.judge.close_secure_gap(self.writer.seq, end), self._state())

    # ------------------------------------------------------------ timers

    def _timed(self, now: float) -> None:
        suppressed = self.judge.suppressed(now)
        bounds = self.listeners.bounds
        if bounds is not None and not suppressed:
            rest = self.pointer.dwell(now, self.input.last_move, bounds, self.writer.seq)
            self._emit(rest, self._state())
        self.runs.close_idle(now)
        self.text.idle(now, self.config.text_idle)
        consent = self.control.consent
        if (
            self._thumbnails is not None
            and consent is not None
            and consent.allows(Modality.SCREENS)
            and not suppressed
            and self._thumbnails.due(now)
        ):
            shot = self._thumbnails.sample(now)
            if shot is not None:
                self._emit(Thumbnail(self.writer.seq, now, *shot), self._state())

    def _write_heartbeat(self, now: float, running: bool = True) -> None:
        self._last_heartbeat = now
        timer = self.input.timer
        beat(
            self.config.home,
            self.writer,
            self._started_wall,
            self.clock.wall(),
            dropped=self.dropped,
            listening=self.listening,
            running=running,
            callbacks=timer.count,
            callback_p99_ms=timer.p99_ms(now, fresh=not running),
        )
