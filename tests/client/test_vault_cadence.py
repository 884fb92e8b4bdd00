"""Constant-rate sealing: the vault's row count traces the recorder's uptime, not activity."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

import pytest

from client.control.consent import grant
from client.control.pause import pause, resume
from client.control.sensitive_apps import SensitiveApps
from client.recording.clock import ManualClock
from client.recording.recorder import Recorder, RecorderConfig
from client.storage.segments import PADDED_SIZES, framed_size
from client.storage.vault import Vault
from client.storage.vault_cadence import (
    BACKLOG_INTERVALS,
    SCREENS_CLASS,
    SEGMENT_CLASS,
    next_grid_point,
    next_segment,
    segment_class,
)
from client.storage.vault_store import DB_FILE
from policy.events import (
    AppCategory,
    Event,
    Focus,
    KeyClass,
    KeyRun,
    Modality,
    Paused,
    Thumbnail,
)
from privacy.policy import load_policy
from tests.client.test_recorder import FakeFocus, FakeSource


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """New wraps use a small scrypt cost (it is stored in the key file), keeping tests fast."""
    monkeypatch.setattr("client.storage.keys.SCRYPT_N", 2**10)


INTERVAL = 2.0  # the production interval is SEAL_INTERVAL; the mechanism is the same


def _typed(source: FakeSource, tick: int, heavy: bool) -> None:
    """Light typing: a run of letters and a shortcut twice a second; heavy: every tick, more."""
    if source.keyboard is None:
        return
    if heavy:  # runs of every class, of varying length: each class change closes a run
        for group in range(4):
            source.type("a" * (1 + (tick * 7 + group) % 13))
            source.type("1" * (1 + (tick * 3 + group) % 11))
            source.type("." * (1 + (tick + group) % 5))
            source.press("ctrl", "s" if group % 2 else "z")
    elif tick % 5 == 2:
        source.type("ab")
        source.press("ctrl", "s")


def _record(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    typing: bool = False,
    burst: int = 0,
    intervals: int = 4,
    pause_at: float | None = None,
    backlog: list[list[int]] | None = None,
) -> Recorder:
    """Run a recorder on a real vault for ``intervals`` intervals of a driven clock, then stop.

    ``typing`` types lightly all the way through; ``burst`` types heavily for that many
    intervals first. ``backlog`` collects, at each interval's end, the sequence
    numbers of the events waiting unsealed. The input callbacks stamp keys through
    the recorder's clock, so one driven clock is enough.
    """
    home.mkdir(parents=True)
    grant(home, (Modality.KEYS,))
    source, clock = FakeSource(), ManualClock()
    apps = SensitiveApps.from_policy(load_policy(), home)
    ticks = int(INTERVAL * 10)
    with Vault.open(home / "vault") as vault:
        config = RecorderConfig(
            home=home, flush_interval=INTERVAL, control_interval=0.0, key_run_idle=0.25
        )
        recorder = Recorder(config, vault, source, FakeFocus(), lambda: apps, clock=clock)
        for tick in range(intervals * ticks):
            clock.advance(0.1)
            if pause_at is not None and tick == int(pause_at * ticks):
                pause(home)
            if typing or tick < burst * ticks:
                _typed(source, tick, heavy=tick < burst * ticks)
            recorder.step()
            if backlog is not None and tick % ticks == ticks - 1:
                backlog.append([e.seq for e in recorder.writer.pending])
        recorder.stop()
    return recorder


def _rows(home: Path) -> list[tuple[int, int, int, int, int, int]]:
    """What someone holding vault.db sees of each segment without the key."""
    db = sqlite3.connect(home / "vault" / DB_FILE)
    try:
        query = "SELECT id, schema, gen, day, length(nonce), length(ciphertext) FROM segments"
        return db.execute(query + " ORDER BY id").fetchall()
    finally:
        db.close()


def test_a_burst_and_an_idle_stretch_leave_the_same_rows(
    hearth_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = _record(hearth_home / "busy", monkeypatch, typing=True)
    idle = _record(hearth_home / "idle", monkeypatch)
    assert busy.events_written >= 30 and idle.events_written == 0
    busy_rows, idle_rows = _rows(hearth_home / "busy"), _rows(hearth_home / "idle")
    # One segment per interval of recording, and one more when it stops; nothing else.
    assert len(busy_rows) == len(idle_rows) == 4 + 1
    assert busy_rows == idle_rows  # same ids, day, key generation, nonce and padded size
    assert {r[5] - 16 for r in busy_rows} == {SEGMENT_CLASS}
    with Vault.open(hearth_home / "busy" / "vault") as vault:  # and everything typed is there
        kept = list(vault.iter_events())
        assert len(kept) == busy.events_written
        assert sum(e.count for e in kept if isinstance(e, KeyRun)) >= 2 * 15


def test_the_cadence_does_not_drift_with_late_ticks_nor_catch_up_after_a_suspend() -> None:
    assert next_grid_point(0.0, 30.07, 30.0) == 30.0  # a tick late: the grid stays
    assert next_grid_point(30.0, 60.02, 30.0) == 60.0
    assert next_grid_point(60.0, 3_600.5, 30.0) == 3_600.0  # one row after a suspend, not 118
    assert next_grid_point(60.0, 75.0, 30.0) == 75.0  # an early seal (pause, stop) restarts it


def test_an_empty_segment_is_sealed_like_any_other_and_holds_no_sequence(
    hearth_home: Path,
) -> None:
    with Vault.open(hearth_home / "vault") as vault:
        vault.append(
            [Focus(0, 0.0, "code", AppCategory.EDITOR), Focus(1, 1.0, "x", AppCategory.OTHER)]
        )
        assert vault.append([]) == 2
        assert vault.next_seq() == 2  # a restarted recorder goes on after the last event
        assert [s.n_events for s in vault.segments()] == [2, 0]


def test_nothing_is_sealed_while_paused_and_a_pause_seals_its_marker_at_once(
    hearth_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = hearth_home
    home.mkdir(parents=True)
    grant(home, (Modality.KEYS,))
    clock = ManualClock()
    apps = SensitiveApps.from_policy(load_policy(), home)
    with Vault.open(home / "vault") as vault:
        config = RecorderConfig(home=home, flush_interval=INTERVAL, control_interval=0.0)
        recorder = Recorder(config, vault, FakeSource(), FakeFocus(), lambda: apps, clock=clock)
        rows = []
        for tick in range(int(10 * INTERVAL * 10)):  # 2 intervals, 6 paused, 2 again
            clock.advance(0.1)
            if tick == int(2.5 * INTERVAL * 10):
                pause(home)
            if tick == int(8.5 * INTERVAL * 10):
                resume(home)
            recorder.step()
            rows.append(len(_rows(home)))
        recorder.stop()
    per_interval = [rows[i] for i in range(0, len(rows), int(INTERVAL * 10))]
    # Two empty intervals, the pause's marker at once, nothing for six paused intervals,
    # then the resumed interval, one more, and the stop.
    assert per_interval == [0, 1, 2, 3, 3, 3, 3, 3, 3, 4]
    assert len(_rows(home)) == 6
    with Vault.open(home / "vault") as reopened:
        assert [type(e).__name__ for e in reopened.iter_events()] == ["Paused", "Resumed"]


def _stored(home: Path) -> list[Event]:
    with Vault.open(home / "vault") as vault:
        return list(vault.iter_events())


def test_a_heavy_burst_and_an_idle_stretch_leave_rows_of_one_size_and_count(
    hearth_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting: list[list[int]] = []
    busy = _record(hearth_home / "busy", monkeypatch, burst=2, intervals=8, backlog=waiting)
    idle = _record(hearth_home / "idle", monkeypatch, intervals=8)
    # The burst outran one segment: events waited past its end, then drained.
    assert any(waiting[2:]) and not waiting[-1] and idle.events_written == 0
    busy_rows, idle_rows = _rows(hearth_home / "busy"), _rows(hearth_home / "idle")
    assert len(busy_rows) == len(idle_rows) == 8 + 1
    assert busy_rows == idle_rows  # ids, day, generation, nonce and ciphertext sizes
    assert {r[5] - 16 for r in busy_rows} == {SEGMENT_CLASS}
    # No event lost, none reordered: the sequence numbers read back are 0, 1, 2, ...
    kept = _stored(hearth_home / "busy")
    assert len(kept) == busy.events_written >= 150
    assert [e.seq for e in kept] == list(range(len(kept)))


def test_a_pause_drops_the_backlog_and_seals_only_its_marker(
    hearth_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting: list[list[int]] = []
    recorder = _record(
        hearth_home, monkeypatch, burst=2, intervals=4, pause_at=2.0, backlog=waiting
    )
    assert waiting[1]  # events waited when the pause came
    kept = _stored(hearth_home)
    assert isinstance(kept[-1], Paused)
    # None of them was sealed: the marker alone takes the first of their numbers.
    assert {e.seq for e in kept} & set(waiting[1]) == {kept[-1].seq} == {waiting[1][0]}
    assert len(kept) == recorder.events_written
    # The marker takes the first dropped number: what is kept is 0, 1, 2, ... unbroken.
    assert [e.seq for e in kept] == list(range(len(kept)))
    assert {r[5] - 16 for r in _rows(hearth_home)} == {SEGMENT_CLASS}


def test_a_stop_seals_the_backlog(hearth_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    waiting: list[list[int]] = []
    recorder = _record(hearth_home, monkeypatch, burst=2, intervals=2, backlog=waiting)
    assert waiting[-1]  # still waiting when the stop came
    kept = _stored(hearth_home)
    assert set(waiting[-1]) <= {e.seq for e in kept}
    assert len(kept) == recorder.events_written
    assert [e.seq for e in kept] == list(range(len(kept)))
    sizes = [r[5] - 16 for r in _rows(hearth_home)]
    # Every interval's row has the fixed size; the stop's holds the backlog (larger here).
    assert sizes[:-1] == [SEGMENT_CLASS] * 2 and sizes[-1] in PADDED_SIZES


def _runs(count: int, start: int = 0) -> list[Event]:
    classes = list(KeyClass)
    return [
        KeyRun(start + i, float(start + i), classes[i % len(classes)], 1 + i % 97, i % 7)
        for i in range(count)
    ]


def test_what_fits_is_taken_in_order_and_a_flood_steps_up_only_past_the_bound() -> None:
    few = _runs(5)
    assert next_segment(few, None) == (few, SEGMENT_CLASS)
    assert next_segment([], None) == ([], SEGMENT_CLASS)
    # Twice a segment's worth: the oldest that fit, at the fixed class; the rest waits.
    two = _runs(1, 0)
    while framed_size(two) < 2 * SEGMENT_CLASS:
        two = _runs(len(two) + 8)
    batch, size = next_segment(two, None)
    assert size == SEGMENT_CLASS and batch == two[: len(batch)]
    assert framed_size(batch) <= SEGMENT_CLASS < framed_size(two[: len(batch) + 1])
    # A flood past the bound: the smallest larger class that leaves the bound behind.
    flood = _runs(1, 0)
    while framed_size(flood) < (BACKLOG_INTERVALS + 2) * SEGMENT_CLASS:
        flood = _runs(len(flood) + 32)
    batch, size = next_segment(flood, None)
    assert size > SEGMENT_CLASS and batch == flood[: len(batch)]
    assert framed_size(batch) <= size
    assert framed_size(flood[len(batch) :]) <= BACKLOG_INTERVALS * SEGMENT_CLASS
    # Stopping takes everything.
    assert next_segment(flood, None, stopping=True) == (flood, SEGMENT_CLASS)


def test_with_screens_a_changed_screen_fits_its_own_fixed_class(hearth_home: Path) -> None:
    hearth_home.mkdir(parents=True)
    keys_only = grant(hearth_home, (Modality.KEYS,))
    screens = grant(hearth_home, (Modality.KEYS, Modality.SCREENS))
    assert segment_class(keys_only) == segment_class(None) == SEGMENT_CLASS
    assert segment_class(screens) == SCREENS_CLASS
    noise = Thumbnail(40, 40.0, 64, 40, secrets.token_bytes(64 * 40))  # compresses worst
    interval = [*_runs(40), noise]
    batch, size = next_segment(interval, screens)
    assert (batch, size) == (interval, SCREENS_CLASS)
    with Vault.open(hearth_home / "vault") as vault:
        vault.append(batch, pad_to=size)
        vault.append([], pad_to=size)
        assert [s.size for s in vault.segments()] == [SCREENS_CLASS + 16] * 2
    # Without screens the thumbnail alone outgrows the class: a larger row, not a stuck one.
    batch, size = next_segment([noise], keys_only)
    assert batch == [noise] and size == SCREENS_CLASS
