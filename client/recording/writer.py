"""The buffer between capture and the vault: sequence numbers, gates, constant-rate sealing.

Every event passes the gate stack (``client.recording.gates.apply_gates``) as it
is buffered; one that passes takes the next sequence number. While recording,
the buffer is sealed into the vault once per ``flush_interval`` on a fixed grid,
one fixed size (``client.storage.vault_cadence``), empty or not, so the vault's rows
trace uptime, not activity. A full disk keeps events in memory, up to
``pending_limit``; a pause or revocation drops everything not yet sealed, and
the sequence numbers it held are given back. The writer also keeps the
heartbeat (``beat``), and ``WriterThread`` runs it all every tick.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from client.control.consent import ConsentRecord
from client.control.heartbeat import Heartbeat, own_peak_rss_mb, write_heartbeat
from client.recording.clock import Clock
from client.recording.control_watch import Wake
from client.recording.gates import CaptureState, apply_gates
from client.storage.vault_cadence import next_grid_point, next_segment
from client.storage.vault_store import VaultFullError
from policy.events import Event

_log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where gated events go (the vault)."""

    def append(
        self, events: Sequence[Event], wall_time: float | None = None, *, pad_to: int = 0
    ) -> int | None:
        """Persist one batch, padded to at least ``pad_to`` bytes."""
        ...


class Writer:
    """Buffered, gated events and their sealing into the sink."""

    def __init__(
        self, sink: EventSink, first_seq: int, interval: float, limit: int, clock: Clock
    ) -> None:
        """Numbering starts at ``first_seq``; sealing every ``interval`` seconds."""
        self.seq = first_seq
        self.pending: list[Event] = []
        self.events_written = 0
        self.dropped_unwritable = 0
        self.last_flush = clock.monotonic()
        self.last_flush_wall: float | None = None
        self._sink = sink
        self._interval = interval
        self._limit = limit
        self._clock = clock

    def emit(self, event: Event, state: CaptureState) -> bool:
        """Gate ``event`` (built with ``seq``); keep it and advance ``seq`` if it passes."""
        if apply_gates(event, state) is None:
            return False
        self.pending.append(event)
        self.seq += 1
        return True

    def due(self, now: float) -> bool:
        """Whether the next grid point passed."""
        return now - self.last_flush >= self._interval

    def flush(
        self,
        now: float,
        hold: bool,
        recording: bool,
        consent: ConsentRecord | None,
        stopping: bool,
    ) -> None:
        """Seal the buffer's oldest events into one fixed-size segment (``next_segment``).

        ``hold``: a pause or revocation is waiting and may drop the buffer first.
        While ``recording`` an empty buffer is sealed too: one segment per interval.
        What does not fit waits (all of it is sealed when ``stopping``); a full disk
        keeps everything in memory.
        """
        self.last_flush = next_grid_point(self.last_flush, now, self._interval)
        if hold or (not self.pending and not recording):
            return
        batch, pad_to = next_segment(self.pending, consent, stopping)
        try:
            self._sink.append(batch, pad_to=pad_to)
        except VaultFullError:
            _log.warning("vault disk full: %d events held in memory", len(self.pending))
            excess = len(self.pending) - self._limit
            if excess > 0:
                del self.pending[:excess]
                self.dropped_unwritable += excess
            return
        del self.pending[: len(batch)]  # the rest waits for the next interval
        self.events_written += len(batch)
        self.last_flush_wall = self._clock.wall()

    def drop_unwritten(self) -> None:
        """Forget the buffer; its events are the newest, so their numbers are given back."""
        if self.pending:
            self.seq = self.pending[0].seq
            self.pending = []


def beat(
    home: Path,
    writer: Writer,
    started: float,
    wall: float,
    *,
    dropped: int,
    listening: bool,
    running: bool,
    callbacks: int,
    callback_p99_ms: float | None,
) -> None:
    """Write the heartbeat (what ``hearth status`` shows); a full disk only logs."""
    heartbeat = Heartbeat(
        pid=os.getpid(),
        started=started,
        updated=wall,
        events_written=writer.events_written,
        last_flush=writer.last_flush_wall,
        dropped=dropped,
        next_seq=writer.seq,
        listening=listening,
        running=running,
        callbacks=callbacks,
        callback_p99_ms=callback_p99_ms,
        peak_rss_mb=own_peak_rss_mb(),
    )
    try:
        write_heartbeat(home, heartbeat)
    except OSError as exc:
        _log.warning("heartbeat not written: %s", type(exc).__name__)


class WriterThread:
    """The thread that runs the writer's ``step`` every ``tick`` and ``finish`` at the end.

    It sleeps on ``wake`` (a request from the control socket ends the sleep at
    once) and stops by itself after 50 failed steps in a row.
    """

    def __init__(
        self,
        step: Callable[[], None],
        finish: Callable[[], None],
        wake: Wake,
        tick: float,
    ) -> None:
        """Not started."""
        self._step, self._finish, self._wake, self._tick = step, finish, wake, tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0  # completed, so a test can wait for the next one

    @property
    def stopping(self) -> bool:
        """Asked to stop (or stopped by itself): the last flush seals everything."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        """Started and not yet stopped."""
        return self._thread is not None

    def start(self) -> None:
        """Run the loop on its own thread."""
        self._thread = threading.Thread(target=self._run, name="hearth-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while True:
            self._wake.wait(self._tick)
            if self._stop.is_set():
                break
            try:
                self._step()
                self.steps += 1
                failures = 0
            except Exception as exc:  # keep recording; never log content
                failures += 1
                _log.warning("recorder step failed: %s", type(exc).__name__)
                if failures >= 50:
                    _log.error("recorder stopping after repeated failures")
                    self._stop.set()
        self._finish()

    def stop(self, timeout: float) -> None:
        """Stop the loop (it finishes first); without a thread, finish here."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        else:
            self._finish()

    def wait(self, timeout: float | None) -> bool:
        """Block until the loop stopped by itself; True if it did."""
        return self._stop.wait(timeout)
