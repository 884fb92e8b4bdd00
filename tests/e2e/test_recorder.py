"""The recorder against a real X server: xdotool input in, the encrypted vault out."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from client.control.consent import grant
from client.control.pause import resume
from client.control.recorder_control import request_revoke
from client.recording.recorder import RecorderConfig
from client.storage.vault import Vault
from policy.events import (
    Click,
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

pytestmark = pytest.mark.e2e

CANARY = "ZQXCANARY7781"
# Input typed this long after a sensitive app left the front is the employee's again: the
# recorder's suppression tail, plus a tick for polled keys and margin. It is the rule
# under test (time after a switch), not a wait for the recorder to catch up.
PAST_TAIL = RecorderConfig.suppress_tail + 0.35


def _keys(events):
    return [e for e in events if isinstance(e, KeyRun | ShortcutPressed | Click)]


def _letters(events):
    return sum(e.count for e in events if isinstance(e, KeyRun) and e.key_class is KeyClass.LETTER)


def test_typed_keys_and_clicks_reach_the_vault_in_order_with_their_classes(
    hearth_home, window, kit
):
    grant(hearth_home, (Modality.POINTER, Modality.KEYS, Modality.APPS))
    editor = window("code", "main.py - Code")
    recorder = kit.start_recorder(hearth_home)
    kit.activate(editor)
    kit.xdotool("type", "--delay", "5", "ab 1")
    kit.xdotool("key", "ctrl+s")
    kit.xdotool("click", "1")
    code, _, err = recorder.stop()
    assert code == 0, err
    events = kit.vault_events(hearth_home)
    assert any(isinstance(e, Focus) and e.app_id == "code" for e in events)
    kept = _keys(events)
    # A run per key class ("ab " is one letter run: spaces continue words), never a
    # record per key; ctrl alone is not counted, ctrl+s stays named.
    assert [
        (e.key_class, e.count) if isinstance(e, KeyRun) else getattr(e, "name", "click")
        for e in kept
    ] == [(KeyClass.LETTER, 3), (KeyClass.DIGIT, 1), Shortcut.SAVE, "click"]
    assert [e.seq for e in events] == list(range(len(events)))
    # What the employee exports: key runs with whole-second times, no per-key record.
    passphrase = kit.recorder_env(hearth_home)["HEARTH_PASSPHRASE"]
    with Vault.open(hearth_home / "vault", passphrase=passphrase) as vault:
        records = list(vault.export())
    runs = [r for r in records if r["k"] == "keys"]
    assert len(runs) == 2 and not any(r["k"] == "key" for r in records)
    assert all(isinstance(r["t"], int) and isinstance(r["d"], int) for r in runs)


def test_without_consent_nothing_starts_and_nothing_is_written(hearth_home, kit):
    result = subprocess.run(
        [sys.executable, "-m", "client.cli.record", "--duration", "1"],
        check=False,
        env=kit.recorder_env(hearth_home),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "hearth consent grant" in result.stderr and result.stderr.count("\n") == 1
    assert not (hearth_home / "vault").exists()
    assert not (hearth_home / "recorder.json").exists()


def test_a_canary_typed_into_a_sensitive_app_never_reaches_disk(hearth_home, window, kit):
    grant(hearth_home, (Modality.KEYS, Modality.APPS, Modality.TEXT))
    editor = window("code", "notes.txt - Code")
    chat = window("slack", "Slack | general")
    recorder = kit.start_recorder(hearth_home)
    kit.activate(editor)  # slack, opened last, was in front: wait out the suppression tail
    time.sleep(PAST_TAIL)
    kit.xdotool("type", "--delay", "5", "hello ")
    time.sleep(0.2)  # typed before the switch (keys between two checks are judged by both)
    kit.activate(chat)
    kit.xdotool("type", "--delay", "5", CANARY)
    kit.xdotool("key", "Return")
    kit.activate(editor)
    time.sleep(PAST_TAIL)  # past the suppression tail after a sensitive app leaves
    kit.xdotool("type", "--delay", "5", "bye")
    code, _, err = recorder.stop()
    assert code == 0, err
    events = kit.vault_events(hearth_home)
    texts = "".join(e.text for e in events if isinstance(e, Text))
    assert CANARY not in texts and CANARY.lower() not in texts.lower()
    assert "hello" in texts and "bye" in texts
    gaps = [e for e in events if isinstance(e, Suppressed)]
    # One gap for the canary (and maybe one at start, when slack was opened last).
    hello = next(e.seq for e in events if isinstance(e, Text) and "hello" in e.text)
    assert any(g.seq > hello and g.duration > 0 for g in gaps)
    assert not any(isinstance(e, Focus) and e.app_id == "slack" for e in events)
    assert _letters(events) == len("hello ") + len("bye")
    disk = kit.raw_bytes_under(hearth_home)
    assert CANARY.encode() not in disk and CANARY.lower().encode() not in disk


def test_with_text_granted_a_typed_email_is_stored_redacted(hearth_home, window, kit):
    grant(hearth_home, (Modality.KEYS, Modality.TEXT))
    editor = window("thunderbird", "Write: (no subject)")
    recorder = kit.start_recorder(hearth_home)
    kit.activate(editor)
    kit.xdotool("type", "--delay", "5", "mail jane.doe@example.com today")
    kit.xdotool("key", "Return")
    code, _, err = recorder.stop()
    assert code == 0, err
    texts = [e.text for e in kit.vault_events(hearth_home) if isinstance(e, Text)]
    assert texts == ["mail [email] today\n"]
    assert b"jane.doe" not in kit.raw_bytes_under(hearth_home)


def test_revoke_stops_capture_within_100_ms(hearth_home, window, kit):
    grant(hearth_home, (Modality.KEYS,))
    editor = window("code", "main.py - Code")
    recorder = kit.start_recorder(hearth_home, "--seal-interval", "1")
    kit.activate(editor)
    kit.xdotool("type", "--delay", "5", "aaa")
    kit.wait_written(hearth_home, 1)  # sealed: a revocation drops what is not
    _, result = request_revoke(hearth_home)  # as `hearth consent revoke` does
    assert result.recorder is not None and result.recorder.applied  # answered once applied
    kit.xdotool("type", "--delay", "5", "1234")  # typed after the revocation took effect
    code, _, err = recorder.stop()
    assert code == 0, err
    kept = [(e.key_class, e.count) for e in kit.vault_events(hearth_home) if isinstance(e, KeyRun)]
    assert kept == [(KeyClass.LETTER, 3)]


def test_pause_from_another_process_takes_effect_while_recording(hearth_home, window, kit):
    grant(hearth_home, (Modality.KEYS,))
    editor = window("code", "main.py - Code")
    recorder = kit.start_recorder(hearth_home, "--seal-interval", "1")
    kit.activate(editor)
    kit.xdotool("type", "--delay", "5", "ab")
    kit.wait_written(hearth_home, 1)  # sealed: a pause drops what is not
    paused = subprocess.run(
        [sys.executable, "-c", "from client.cli.main import app; app()", "pause"],
        check=False,
        env=kit.recorder_env(hearth_home),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert paused.returncode == 0, paused.stderr  # the pause was applied before it answered
    kit.wait_listening(hearth_home, False)
    kit.xdotool("type", "--delay", "5", "123")  # while paused
    resume(hearth_home)  # the file alone, as another process may write it
    kit.wait_listening(hearth_home)
    kit.xdotool("type", "--delay", "5", " ")
    code, _, err = recorder.stop()
    assert code == 0, err
    events = kit.vault_events(hearth_home)
    kinds = [
        f"{e.key_class.value}x{e.count}" if isinstance(e, KeyRun) else type(e).__name__
        for e in events
        if isinstance(e, KeyRun | Paused | Resumed)
    ]
    assert kinds == ["letterx2", "Paused", "Resumed", "spacex1"]


def test_keys_in_a_password_prompt_are_not_captured(hearth_home, window, kit):
    grant(hearth_home, (Modality.KEYS, Modality.POINTER))
    prompt = window("pinentry-gnome3", "Unlock key")
    recorder = kit.start_recorder(hearth_home)
    kit.activate(prompt)
    kit.xdotool("type", "--delay", "5", "hunter2")
    kit.xdotool("click", "1")
    code, _, err = recorder.stop()
    assert code == 0, err
    events = kit.vault_events(hearth_home)
    assert not any(isinstance(e, KeyRun | ShortcutPressed) for e in events)
    assert any(isinstance(e, Click) for e in events)
    assert any(isinstance(e, Suppressed) and e.reason == "password_prompt" for e in events)


def test_sigterm_to_hearth_record_flushes_everything(hearth_home, window, kit):
    grant(hearth_home, (Modality.KEYS,))
    editor = window("code", "main.py - Code")
    # Through the real `hearth record` command (which re-executes into the lean recorder).
    recorder = kit.start_recorder(
        hearth_home, "record", command=("-c", "from client.cli.main import app; app()"), timeout=120
    )
    kit.activate(editor)
    kit.xdotool("type", "--delay", "2", "abcdefghij" * 5)
    code, out, err = recorder.stop()  # right away: well inside the 1 s flush interval
    assert code == 0, err
    assert "stopped: 1 events written" in out  # one run of 50 letters
    assert _letters(kit.vault_events(hearth_home)) == 50


def test_a_card_typed_in_groups_with_pauses_longer_than_the_idle_split_is_redacted(
    hearth_home, window, kit
):
    grant(hearth_home, (Modality.KEYS, Modality.TEXT))
    editor = window("code", "notes.txt - Code")
    recorder = kit.start_recorder(hearth_home)
    kit.activate(editor)
    # The employee stops typing for longer than the 5 s idle split (the scenario itself).
    kit.xdotool("type", "--delay", "5", "card 4111 1111 ")
    time.sleep(RecorderConfig.text_idle + 1)
    kit.xdotool("type", "--delay", "5", "1111 ")
    time.sleep(RecorderConfig.text_idle + 1)
    kit.xdotool("type", "--delay", "5", "1111 ok")
    kit.xdotool("key", "Return")
    code, _, err = recorder.stop()
    assert code == 0, err
    texts = "".join(e.text for e in kit.vault_events(hearth_home) if isinstance(e, Text))
    assert texts == "card [card] ok\n"


def test_a_browser_window_titled_like_a_workday_page_leaves_only_a_gap(hearth_home, window, kit):
    grant(hearth_home, (Modality.KEYS, Modality.APPS, Modality.TEXT))
    editor = window("code", "notes.txt - Code")
    browser = window("chromium", "Time Off - Workday - Chromium")
    recorder = kit.start_recorder(hearth_home)
    kit.activate(editor)
    time.sleep(PAST_TAIL)  # past the tail of the browser, opened last
    kit.activate(browser)
    kit.xdotool("type", "--delay", "5", CANARY)
    kit.xdotool("key", "Return")
    time.sleep(0.3)  # the employee stays on the page a moment
    kit.activate(editor)
    code, _, err = recorder.stop()
    assert code == 0, err
    events = kit.vault_events(hearth_home)
    assert not any(isinstance(e, KeyRun | Text) for e in events)
    assert not any(isinstance(e, Focus) and e.app_id == "chromium" for e in events)
    assert any(isinstance(e, Suppressed) and e.duration > 0 for e in events)
    disk = kit.raw_bytes_under(hearth_home)
    assert CANARY.encode() not in disk and b"Workday" not in disk
