"""Constant-rate sealing: the vault's row count traces the recorder's uptime, not activity."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from client.consent import grant
from client.control import pause, resume
from client.recording.clock import ManualClock
from client.recording.recorder import Recorder, RecorderConfig
from client.sensitive_apps import SensitiveApps
from client.vault import DB_FILE, PADDED_SIZES, Vault
from client.vault_cadence import next_grid_point
from policy.events import AppCategory, Focus, KeyRun, Modality
from privacy.policy import load_policy
from tests.client.test_recorder import FakeFocus, FakeSource


@pytest.fixture(autouse=True)
def _cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    """New wraps use a small scrypt cost (it is stored in the key file), keeping tests fast."""
    monkeypatch.setattr("client.keys.SCRYPT_N", 2**10)


INTERVAL = 2.0  # the production interval is SEAL_INTERVAL; the mechanism is the same


def _record(home: Path, typing: bool, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Run a recorder on a real vault for four intervals of a driven clock, then stop it.

    The input callbacks stamp keys through the recorder's clock, so one driven clock is enough.
    """
    home.mkdir(parents=True)
    grant(home, (Modality.KEYS,))
    source, clock = FakeSource(), ManualClock()
    apps = SensitiveApps.from_policy(load_policy(), home)
    with Vault.open(home / "vault") as vault:
        config = RecorderConfig(
            home=home, flush_interval=INTERVAL, control_interval=0.0, key_run_idle=0.25
        )
        recorder = Recorder(config, vault, source, FakeFocus(), lambda: apps, clock=clock)
        for tick in range(int(4 * INTERVAL * 10)):
            clock.advance(0.1)
            if typing and tick % 5 == 2 and source.keyboard is not None:
                source.type("ab")  # a run of letters twice a second, all the way through
                source.press("ctrl", "s")
            recorder.step()
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
    busy = _record(hearth_home / "busy", typing=True, monkeypatch=monkeypatch)
    idle = _record(hearth_home / "idle", typing=False, monkeypatch=monkeypatch)
    assert busy.events_written >= 30 and idle.events_written == 0
    busy_rows, idle_rows = _rows(hearth_home / "busy"), _rows(hearth_home / "idle")
    # One segment per interval of recording, and one more when it stops; nothing else.
    assert len(busy_rows) == len(idle_rows) == 4 + 1
    assert busy_rows == idle_rows  # same ids, day, key generation, nonce and padded size
    assert {r[5] - 16 for r in busy_rows} <= set(PADDED_SIZES)
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
