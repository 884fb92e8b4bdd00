"""The recorder with fake input and focus: gates, markers, redaction, flushing, drops."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from client.cli.control import status_report
from client.control.consent import grant, revoke
from client.control.heartbeat import read_heartbeat, running_recorder
from client.control.pause import pause, resume
from client.control.sensitive_apps import SensitiveApps, SensitiveAppsWatcher, add_app
from client.recording.capture.focus import WindowInfo
from client.recording.capture.keys import RawKey
from client.recording.capture.pointer import ScreenBounds
from client.recording.clock import ManualClock
from client.recording.control_watch import HomeWatch
from client.recording.focus_judge import FocusJudge
from client.recording.recorder import Recorder, RecorderConfig
from client.storage.vault_store import VaultFullError
from policy.events import (
    AppCategory,
    Button,
    Click,
    Event,
    Focus,
    KeyClass,
    KeyRun,
    Modality,
    Paused,
    Resumed,
    Shortcut,
    ShortcutPressed,
    Suppressed,
    Text,
)
from privacy.policy import load_policy

CODE = WindowInfo("code", AppCategory.EDITOR, hint="code Code main.py")
SLACK = WindowInfo("slack", AppCategory.CHAT, hint="slack Slack general")
PROMPT = WindowInfo("pinentry", AppCategory.OTHER, hint="pinentry", secure_input=True)


class FakeSource:
    """An InputSource whose callbacks the test calls, with a record of starts and stops."""

    def __init__(self) -> None:
        self.keyboard: tuple[Any, Any] | None = None
        self.mouse: tuple[Any, Any, Any] | None = None
        self.starts: list[str] = []

    def start_keyboard(self, on_press: Any, on_release: Any) -> None:
        self.keyboard = (on_press, on_release)
        self.starts.append("keyboard")

    def stop_keyboard(self) -> None:
        self.keyboard = None

    def start_mouse(self, on_move: Any, on_click: Any, on_scroll: Any) -> None:
        self.mouse = (on_move, on_click, on_scroll)
        self.starts.append("mouse")

    def stop_mouse(self) -> None:
        self.mouse = None

    def raw_key(self, key: Any) -> RawKey:
        return key if isinstance(key, RawKey) else RawKey(char=key)

    def button(self, button: Any) -> Button | None:
        return Button(button)

    def bounds(self) -> ScreenBounds:
        return ScreenBounds(0, 0, 1001, 1001)

    def type(self, text: str) -> None:
        assert self.keyboard is not None, "keyboard listener not running"
        for char in text:
            key = RawKey(name="space") if char == " " else RawKey(char=char)
            self.keyboard[0](key)
            self.keyboard[1](key)

    def press(self, *names: str) -> None:
        assert self.keyboard is not None
        keys = [RawKey(name=n) if len(n) > 1 else RawKey(char=n) for n in names]
        for key in keys:
            self.keyboard[0](key)
        for key in reversed(keys):
            self.keyboard[1](key)


class FakeFocus:
    def __init__(self, window: WindowInfo | None = CODE) -> None:
        self.window = window
        self.fail = False
        self.closed = False

    def active_window(self) -> WindowInfo | None:
        if self.fail:
            raise RuntimeError("X connection lost")
        return self.window

    def close(self) -> None:
        self.closed = True


class FakeSink:
    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.full = False

    def append(
        self, events: Sequence[Event], wall_time: float | None = None, *, pad_to: int = 0
    ) -> int | None:
        if self.full:
            raise VaultFullError()
        self.batches.append(list(events))
        return len(self.batches)

    @property
    def events(self) -> list[Event]:
        return [e for batch in self.batches for e in batch]


@pytest.fixture
def rig(hearth_home: Path) -> tuple[Recorder, FakeSource, FakeFocus, FakeSink]:
    hearth_home.mkdir(parents=True, exist_ok=True)
    source, focus, sink = FakeSource(), FakeFocus(), FakeSink()
    apps = SensitiveApps.from_policy(load_policy(), hearth_home)
    config = RecorderConfig(
        home=hearth_home,
        suppress_tail=0.05,
        flush_interval=0.2,
        control_interval=0.0,
        key_run_idle=0.02,
    )
    recorder = Recorder(config, sink, source, focus, lambda: apps, clock=ManualClock())
    return recorder, source, focus, sink


def settle(recorder: Recorder) -> None:
    """Move the clock past the events just queued and the key-run idle, then run the writer."""
    later(recorder, 0.025)
    recorder.step()


def later(recorder: Recorder, seconds: float) -> None:
    """Let ``seconds`` pass on the recorder's clock (a ManualClock in these tests)."""
    clock = recorder.clock
    assert isinstance(clock, ManualClock), "build the recorder with clock=ManualClock()"
    clock.advance(seconds)


def seal(recorder: Recorder) -> None:
    """Seal what the recorder buffered, now on its clock."""
    recorder.flush(recorder.clock.monotonic())


def test_without_consent_no_listener_is_started_and_nothing_written(rig):
    recorder, source, _, sink = rig
    recorder.step()
    seal(recorder)
    assert source.starts == [] and not recorder.listening
    assert sink.events == []


def test_only_the_granted_modalities_get_a_listener(rig, hearth_home):
    recorder, source, _, _ = rig
    grant(hearth_home, (Modality.POINTER,))
    recorder.step()
    assert source.starts == ["mouse"]


def test_keys_become_classes_and_shortcuts_in_order_with_contiguous_seq(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.KEYS, Modality.APPS))
    recorder.step()
    source.type("a1 ")
    source.press("ctrl_l", "c")
    settle(recorder)
    seal(recorder)
    events = sink.events
    assert isinstance(events[0], Focus) and events[0].app_id == "code"
    # One record per run of a class (the modifier alone is not one), never per key.
    assert [getattr(e, "key_class", getattr(e, "name", None)) for e in events[1:]] == [
        KeyClass.LETTER,
        KeyClass.DIGIT,
        KeyClass.SPACE,
        Shortcut.COPY,
    ]
    assert [e.seq for e in events] == list(range(len(events)))


def test_keys_are_stored_as_runs_with_whole_second_times(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.KEYS,))
    recorder.step()
    source.type("hello big world")  # spaces between words continue the letter run
    source.type("2026")
    settle(recorder)
    seal(recorder)
    runs = [e for e in sink.events if isinstance(e, KeyRun)]
    assert [(r.key_class, r.count) for r in runs] == [(KeyClass.LETTER, 15), (KeyClass.DIGIT, 4)]
    assert all(r.t == round(r.t) and r.duration == round(r.duration) for r in runs)
    assert len(sink.events) == 2  # nothing per key


def test_clicks_are_kept_with_normalized_positions(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.POINTER,))
    recorder.step()
    assert source.mouse is not None
    source.mouse[1](500, 1000, "left", True)
    source.mouse[1](500, 1000, "left", False)
    settle(recorder)
    seal(recorder)
    (click,) = sink.events
    assert isinstance(click, Click) and (click.x, click.y) == (0.5, 1.0)


def test_pause_stops_listeners_writes_markers_and_keeps_nothing_in_between(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.KEYS,))
    recorder.step()
    source.type("a")
    settle(recorder)
    seal(recorder)
    source.type("c")  # buffered, not yet sealed when the pause comes: dropped
    settle(recorder)
    pause(hearth_home)
    recorder.step()
    assert not recorder.listening and source.keyboard is None
    recorder.on_press(RawKey(char="x"))  # a late callback from a listener being stopped
    recorder.step()
    resume(hearth_home)
    recorder.step()
    assert recorder.listening
    source.type("b")
    settle(recorder)
    seal(recorder)
    kinds = [type(e).__name__ for e in sink.events]
    assert kinds == ["KeyRun", "Paused", "Resumed", "KeyRun"]
    assert [e.seq for e in sink.events] == [0, 1, 2, 3]  # the dropped key's seq is reused


def test_revoke_stops_every_listener_and_capture(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.KEYS, Modality.POINTER))
    recorder.step()
    source.type("a")
    settle(recorder)
    seal(recorder)
    source.type("c")  # buffered, not yet sealed when consent goes: dropped
    settle(recorder)
    revoke(hearth_home)
    recorder.step()
    assert source.keyboard is None and source.mouse is None
    recorder.on_press(RawKey(char="x"))
    recorder.step()
    seal(recorder)
    assert [type(e).__name__ for e in sink.events] == ["KeyRun"]


def test_a_sensitive_app_leaves_only_a_suppressed_gap(rig, hearth_home):
    recorder, source, focus, sink = rig
    grant(hearth_home, (Modality.KEYS, Modality.APPS, Modality.TEXT))
    recorder.step()
    focus.window = SLACK
    source.type("canary")
    settle(recorder)
    focus.window = CODE
    source.type("z")  # within the tail after slack: still suppressed
    settle(recorder)
    later(recorder, 0.06)
    recorder.step()
    source.type("q")
    settle(recorder)
    seal(recorder)
    events = sink.events
    assert [type(e).__name__ for e in events] == ["Focus", "Suppressed", "Focus", "KeyRun"]
    gap = events[1]
    assert isinstance(gap, Suppressed) and gap.duration > 0
    assert not any(isinstance(e, Focus) and e.app_id == "slack" for e in events)


def test_employee_additions_are_suppressed_without_restart(hearth_home):
    hearth_home.mkdir(parents=True, exist_ok=True)
    source, sink = FakeSource(), FakeSink()
    focus = FakeFocus(WindowInfo("gimp", AppCategory.DESIGN))
    watcher = SensitiveAppsWatcher(load_policy(), hearth_home)
    config = RecorderConfig(home=hearth_home, control_interval=0.0)
    recorder = Recorder(config, sink, source, focus, watcher.current, clock=ManualClock())
    grant(hearth_home, (Modality.KEYS,))
    recorder.step()
    add_app(hearth_home, "gimp")
    source.type("x")
    settle(recorder)
    seal(recorder)
    assert not any(isinstance(e, KeyRun) for e in sink.events)


def test_a_password_prompt_drops_keys_but_not_clicks(rig, hearth_home):
    recorder, source, focus, sink = rig
    grant(hearth_home, (Modality.KEYS, Modality.POINTER))
    recorder.step()
    focus.window = PROMPT
    source.type("hunter2")
    assert source.mouse is not None
    source.mouse[1](10, 10, "left", True)
    settle(recorder)
    focus.window = CODE
    later(recorder, 0.06)  # past the tail
    source.type("x")  # judged by the look before too (the prompt): dropped
    settle(recorder)
    source.type("ok")
    settle(recorder)
    seal(recorder)
    events = sink.events
    assert [type(e).__name__ for e in events] == ["Click", "Suppressed", "KeyRun"]
    assert isinstance(events[1], Suppressed) and events[1].reason == "password_prompt"
    assert isinstance(events[2], KeyRun) and events[2].count == 2  # "ok", none of "hunter2"


class PolledSource(FakeSource):
    """A source the writer reads (as X RECORD is): events carry the time they happened."""

    time_error = 0.005

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[tuple[str, float]] = []  # ("key" or "click", when it happened)

    def poll(self) -> int:
        arrived, self.arrived = self.arrived, []
        for kind, t in arrived:
            if kind == "key":
                assert self.keyboard is not None
                self.keyboard[0](t, RawKey(char="a"))
            else:
                assert self.mouse is not None
                self.mouse[1](t, 10, 10, "left", True)
        return len(arrived)


@pytest.fixture
def polled(hearth_home: Path) -> tuple[Recorder, PolledSource, FakeFocus, FakeSink]:
    hearth_home.mkdir(parents=True, exist_ok=True)
    source, focus, sink = PolledSource(), FakeFocus(), FakeSink()
    apps = SensitiveApps.from_policy(load_policy(), hearth_home)
    config = RecorderConfig(home=hearth_home, suppress_tail=0.05, control_interval=0.0)
    recorder = Recorder(config, sink, source, focus, lambda: apps, clock=ManualClock())
    return recorder, source, focus, sink


def test_a_key_typed_at_a_prompt_but_read_after_it_ended_is_dropped(polled, hearth_home):
    # The regression a writer that reads the keyboard must not repeat: the key is
    # judged by the look that saw the prompt while it was typed, not by the looks
    # around the moment it was read.
    recorder, source, focus, sink = polled
    grant(hearth_home, (Modality.KEYS, Modality.APPS, Modality.POINTER))
    recorder.step()
    focus.window = PROMPT
    later(recorder, 0.5)
    recorder.step()  # this look sees the prompt
    typed = recorder.clock.monotonic() + 0.2  # past the tail, before the next look
    focus.window = CODE
    for _ in range(3):  # the prompt ended; looks past the tail see none; the key is not read
        later(recorder, 0.5)
        source.arrived.append(("click", recorder.clock.monotonic() - 0.3))
        recorder.step()
    source.arrived.append(("key", typed))  # read only now
    later(recorder, 0.1)
    recorder.step()
    later(recorder, 3.0)
    recorder.step()
    seal(recorder)
    assert not any(isinstance(e, KeyRun) for e in sink.events), sink.events


def test_polled_keys_and_clicks_keep_the_order_they_happened_in(polled, hearth_home):
    recorder, source, _, sink = polled
    grant(hearth_home, (Modality.KEYS, Modality.POINTER))
    recorder.step()
    later(recorder, 1.0)
    now = recorder.clock.monotonic()
    source.arrived += [("key", now - 0.5), ("key", now - 0.4), ("click", now - 0.3)]
    source.arrived += [("key", now - 0.2)]
    recorder.step()
    later(recorder, 3.0)
    recorder.step()
    seal(recorder)
    kinds = [type(e).__name__ for e in sink.events if isinstance(e, KeyRun | Click)]
    assert kinds == ["KeyRun", "Click", "KeyRun"]
    runs = [e for e in sink.events if isinstance(e, KeyRun)]
    assert [r.count for r in runs] == [2, 1]


def test_a_polled_key_older_than_the_looks_kept_is_dropped(polled, hearth_home):
    recorder, source, _, sink = polled
    grant(hearth_home, (Modality.KEYS,))
    recorder.step()
    later(recorder, 1.0)
    recorder.step()
    source.arrived.append(("key", 0.0))  # before the recorder's first look: nothing known
    source.arrived.append(("key", recorder.clock.monotonic() - 0.1))
    later(recorder, 0.1)
    recorder.step()
    later(recorder, 3.0)
    recorder.step()
    seal(recorder)
    assert [e.count for e in sink.events if isinstance(e, KeyRun)] == [1]


def test_the_judge_weighs_a_time_against_the_looks_since_it_and_forgets_old_ones():
    clock, focus = ManualClock(), FakeFocus()
    judge = FocusJudge(focus, 0.25, clock)
    apps = SensitiveApps.from_policy(load_policy(), Path("/nonexistent"))

    def looks(seconds: range) -> None:  # one look a second; a prompt seen at 1040 and 1041
        for second in seconds:
            clock.advance(1.0)
            focus.window = PROMPT if second in (39, 40) else CODE
            judge.done(judge.look(apps))

    looks(range(43))  # the newest look is at 1043
    assert judge.judge_span(1042.5, 1042.5) == (False, False)
    assert judge.judge_span(1042.1, 1042.1) == (False, False)  # past the tail
    assert judge.judge_span(1041.9, 1042.1) == (False, True)  # may be before 1042: the prompt
    assert judge.judge_span(1041.2, 1041.2) == (False, True)  # the look before saw it
    assert judge.judge_span(1039.5, 1039.5) == (False, True)  # the look after saw it
    assert judge.judge_span(1038.5, 1038.5) == (False, True)  # read late: every look since
    looks(range(43, 70))
    assert judge.judge_span(1069.5, 1069.5) == (False, False)
    assert judge.judge_span(1005.0, 1005.0) == (True, True)  # its looks are forgotten


def _judged_after_leaving(window_then: WindowInfo, window_now: WindowInfo) -> FocusJudge:
    """Looks at 1001 and 1002 see ``window_then``; the look at 1003 sees ``window_now``."""
    clock, focus = ManualClock(), FakeFocus(window_then)
    judge = FocusJudge(focus, 0.25, clock)
    apps = SensitiveApps.from_policy(load_policy(), Path("/nonexistent"))
    for window in (window_then, window_then, window_now):
        clock.advance(1.0)
        focus.window = window
        judge.done(judge.look(apps))
    return judge


def test_a_dated_switch_away_from_a_sensitive_app_keeps_what_was_typed_a_tail_after_it():
    # Slack seen at 1001 and 1002; the X server dates the switch to the editor at 1002.4.
    judge = _judged_after_leaving(SLACK, replace(CODE, front_since=1002.4))
    assert judge.judge_span(1002.7, 1002.8) == (False, False)  # in the editor, past the tail
    assert judge.judge_span(1002.5, 1002.6) == (True, False)  # within the tail of the switch
    assert judge.judge_span(1002.2, 1002.3) == (True, False)  # before the switch: in slack
    # Undated (polling, or no input clock): the look before saw slack, so it stays dropped.
    undated = _judged_after_leaving(SLACK, CODE)
    assert undated.judge_span(1002.7, 1002.8) == (True, False)


def test_a_dated_switch_away_from_a_password_prompt_keeps_what_followed_it():
    judge = _judged_after_leaving(PROMPT, replace(CODE, front_since=1002.4))
    assert judge.judge_span(1002.7, 1002.8) == (False, False)
    assert judge.judge_span(1002.3, 1002.4) == (False, True)


def test_a_window_whose_title_stopped_being_sensitive_is_not_cleared_by_its_old_switch():
    # A browser on a bank page at 1001 and 1002, another page at 1003: same window, in
    # front since 1000.5, so when the bank page went away is not known.
    bank = WindowInfo("chromium", AppCategory.BROWSER, hint="chromium Online Banking - Chromium")
    judge = _judged_after_leaving(
        replace(bank, front_since=1000.5),
        replace(bank, hint="chromium Docs - Chromium", front_since=1000.5),
    )
    assert judge.judge_span(1002.7, 1002.8) == (True, False)


def test_a_switch_away_and_back_between_two_looks_is_not_dated_clear():
    # The editor came back at 1002.4 after windows nobody saw: flagged, fails closed.
    judge = _judged_after_leaving(CODE, replace(CODE, front_since=1002.4, unseen_switch=True))
    assert judge.judge_span(1002.7, 1002.8) == (True, False)


def test_focus_failure_fails_closed(rig, hearth_home):
    recorder, source, focus, sink = rig
    grant(hearth_home, (Modality.KEYS,))
    recorder.step()
    focus.fail = True
    source.type("abc")
    settle(recorder)
    seal(recorder)
    assert not any(isinstance(e, KeyRun) for e in sink.events)


def test_typed_text_is_redacted_before_it_is_buffered(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.KEYS, Modality.TEXT))
    recorder.step()
    source.type("write to jane.doe@example.com ok")
    source.press("enter")
    settle(recorder)
    assert not any("jane" in getattr(e, "text", "") for e in recorder.writer.pending)
    seal(recorder)
    (text,) = [e for e in sink.events if isinstance(e, Text)]
    assert text.text == "write to [email] ok\n"


def test_without_text_consent_no_text_is_kept(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.KEYS,))
    recorder.step()
    source.type("hello world")
    source.press("enter")
    settle(recorder)
    seal(recorder)
    assert not any(isinstance(e, Text) for e in sink.events)


def test_backspace_edits_the_text_before_redaction(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.KEYS, Modality.TEXT))
    recorder.step()
    source.type("cat")
    source.press("backspace")
    source.type("r")
    source.press("enter")
    settle(recorder)
    seal(recorder)
    assert [e.text for e in sink.events if isinstance(e, Text)] == ["car\n"]


def test_writer_flushes_within_the_flush_interval(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.KEYS,))
    recorder.start()
    try:
        source.type("abc")
        # The writer thread runs on its own; time moves only as this test says (0.4 s on
        # the recorder's clock: past the 0.02 s run idle and a 0.2 s interval).
        deadline = time.monotonic() + 30.0  # real time: only a hung writer reaches it
        for _ in range(8):
            later(recorder, 0.05)
            steps = recorder.writer_thread.steps
            while recorder.writer_thread.steps < steps + 2:  # the writer stepped at this time
                assert time.monotonic() < deadline, "the writer thread stopped stepping"
                time.sleep(0.005)
        assert [(type(e).__name__, getattr(e, "count", 0)) for e in sink.events] == [("KeyRun", 3)]
    finally:
        recorder.stop()


def test_a_full_queue_counts_drops_instead_of_blocking(hearth_home):
    hearth_home.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(
        RecorderConfig(home=hearth_home, queue_capacity=5),
        FakeSink(),
        FakeSource(),
        FakeFocus(),
        lambda: SensitiveApps(frozenset(), frozenset()),
    )
    for _ in range(8):
        recorder.on_press(RawKey(char="a"))
    assert recorder.dropped == 3


def test_a_full_disk_keeps_events_in_memory_until_it_can_write(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.KEYS,))
    recorder.step()
    sink.full = True
    source.type("ab")
    settle(recorder)
    seal(recorder)
    sink.full = False
    seal(recorder)
    assert [getattr(e, "count", 0) for e in sink.events] == [2] and recorder.dropped == 0


def test_stop_flushes_writes_a_final_heartbeat_and_closes_focus(rig, hearth_home):
    recorder, source, focus, sink = rig
    grant(hearth_home, (Modality.KEYS,))
    recorder.start()
    assert running_recorder(hearth_home) is not None
    source.type("abc")
    recorder.stop()
    assert len(sink.events) == 1 and focus.closed  # one run of three letters
    beat = read_heartbeat(hearth_home)
    assert beat is not None and not beat.running and beat.events_written == 1
    assert beat.next_seq == 1 and beat.callbacks == 6
    assert (hearth_home / "recorder.json").stat().st_mode & 0o777 == 0o600
    assert running_recorder(hearth_home) is None


def test_status_report_says_recording_only_while_a_recorder_runs(rig, hearth_home):
    recorder, _, _, _ = rig
    grant(hearth_home, (Modality.KEYS,))
    assert status_report()["summary"] == "consented (recorder not running)"
    recorder.start()
    try:
        report = status_report()
        assert report["summary"] == "recording" and report["state"] == "consented"
        assert report["recorder"]["listening"]
    finally:
        recorder.stop()
    assert status_report()["recorder"] is None


def test_pause_and_resume_markers_need_consent(rig, hearth_home):
    recorder, _, _, sink = rig
    pause(hearth_home)
    recorder.step()
    resume(hearth_home)
    recorder.step()
    seal(recorder)
    assert not any(isinstance(e, Paused | Resumed) for e in sink.events)


def test_shortcut_events_need_the_keys_modality(rig, hearth_home):
    recorder, source, _, sink = rig
    grant(hearth_home, (Modality.TEXT,))
    recorder.step()
    source.press("ctrl_l", "v")
    settle(recorder)
    seal(recorder)
    assert not any(isinstance(e, ShortcutPressed | KeyRun) for e in sink.events)


def test_control_files_are_looked_at_when_home_changes_or_every_recheck(tmp_path):
    # One stat of HEARTH_HOME per control check; the files only when it moved.
    wall = [time.time_ns()]
    watch = HomeWatch(tmp_path, recheck=1.0, wall_ns=lambda: wall[0])
    assert watch.changed(0.0)  # the first look
    wall[0] = time.time_ns() + 60_000_000  # the last change is 60 ms old: not racy
    assert not watch.changed(0.1)
    (tmp_path / "control.json.tmp").write_text("{}")
    (tmp_path / "control.json.tmp").replace(tmp_path / "control.json")  # how hearth writes
    assert watch.changed(0.2)
    wall[0] = time.time_ns() + 60_000_000
    assert not watch.changed(0.3)
    (tmp_path / "control.json").write_text('{"paused": true}')  # edited in place
    assert not watch.changed(0.4)
    assert watch.changed(1.3)  # ...is seen at the next full look


def test_keys_around_a_focus_switch_the_backend_could_not_see_are_suppressed(rig, hearth_home):
    recorder, source, focus, sink = rig
    grant(hearth_home, (Modality.KEYS, Modality.APPS))
    recorder.step()
    source.type("ab")
    settle(recorder)
    source.type("xyz")  # typed while focus went somewhere and came back
    focus.window = replace(CODE, unseen_switch=True)
    settle(recorder)
    focus.window = CODE
    later(recorder, 0.06)  # past the suppression tail
    source.type("c")  # judged by that look too (the one before the next)
    settle(recorder)
    source.type("d")
    settle(recorder)
    seal(recorder)
    keys = [e.count for e in sink.events if isinstance(e, KeyRun)]
    assert keys == [2, 1], sink.events  # "ab" and "d", none of "xyz" or "c"
    assert any(isinstance(e, Suppressed) and e.duration > 0 for e in sink.events)


def test_the_heartbeat_says_at_once_when_listening_stops_or_starts(rig, hearth_home):
    # The heartbeat comes every few seconds; a pause must not show "listening" until then.
    recorder, _, _, _ = rig
    grant(hearth_home, (Modality.KEYS,))
    recorder.step()
    beat = read_heartbeat(hearth_home)
    assert beat is not None and beat.listening
    pause(hearth_home)
    recorder.step()
    beat = read_heartbeat(hearth_home)
    assert beat is not None and not beat.listening


def _texts(sink: FakeSink) -> list[str]:
    return [e.text for e in sink.events if isinstance(e, Text)]


def test_a_card_typed_in_groups_across_idle_pauses_is_redacted_as_one(hearth_home):
    hearth_home.mkdir(parents=True, exist_ok=True)
    source, sink = FakeSource(), FakeSink()
    apps = SensitiveApps.from_policy(load_policy(), hearth_home)
    config = RecorderConfig(home=hearth_home, control_interval=0.0, text_idle=0.02)
    recorder = Recorder(config, sink, source, FakeFocus(), lambda: apps, clock=ManualClock())
    grant(hearth_home, (Modality.KEYS, Modality.TEXT))
    recorder.step()
    for group in ("pay 4111 ", "1111 ", "1111 ", "1111"):
        source.type(group)
        settle(recorder)  # past text_idle: an idle split used to seal each group alone
        settle(recorder)
    source.press("enter")
    settle(recorder)
    seal(recorder)
    assert _texts(sink) == ["pay [card]\n"]


def test_a_segment_is_sealed_only_once_the_window_has_passed_over_it(rig, hearth_home):
    _, source, focus, sink = rig
    config = replace(rig[0].config, text_chunk=64, text_window=32)
    apps = SensitiveApps.from_policy(load_policy(), hearth_home)
    recorder = Recorder(config, sink, source, focus, lambda: apps, clock=ManualClock())
    grant(hearth_home, (Modality.KEYS, Modality.TEXT))
    recorder.step()
    source.type("some ordinary words to fill the chunk up to here ")  # 50 characters
    source.type("card 4111 1111 1111 1111 ok")  # crosses the chunk boundary
    settle(recorder)
    seal(recorder)
    sealed = _texts(sink)
    assert sealed and "4111" not in "".join(sealed) and "[card]" not in "".join(sealed)
    source.press("enter")
    settle(recorder)
    seal(recorder)
    whole = "".join(_texts(sink))
    assert whole == "some ordinary words to fill the chunk up to here card [card] ok\n"
