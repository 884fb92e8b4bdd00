import pytest
from typer.testing import CliRunner

from client.cli.main import app
from client.control.consent import ConsentError, grant, load_consent, parse_modalities, revoke
from client.control.pause import DurationError, parse_duration, pause, pause_state, resume
from client.recording.gates import (
    CaptureState,
    apply_gates,
    consent_gate,
    pause_gate,
    secure_input_gate,
    sensitive_app_gate,
)
from policy.events import (
    AppCategory,
    Button,
    Click,
    Focus,
    Key,
    KeyClass,
    Modality,
    Paused,
    Suppressed,
    Text,
)

KEY = Key(1, 0.1, KeyClass.LETTER)
CLICK = Click(2, 0.2, 0.5, 0.5, Button.LEFT)
FOCUS = Focus(3, 0.3, "code", AppCategory.EDITOR)


def test_no_consent_record_means_nothing_passes(hearth_home):
    state = CaptureState(consent=load_consent(hearth_home))
    assert all(consent_gate(e, state) is None for e in (KEY, CLICK, FOCUS, Paused(4, 0.4)))


def test_only_granted_modalities_pass(hearth_home):
    record = grant(hearth_home, (Modality.KEYS,))
    state = CaptureState(consent=record)
    assert consent_gate(KEY, state) is KEY
    assert consent_gate(CLICK, state) is None
    assert consent_gate(Text(5, 0.5, "x"), state) is None


def test_a_revoked_consent_lets_nothing_through(hearth_home):
    grant(hearth_home, (Modality.KEYS, Modality.POINTER))
    state = CaptureState(consent=revoke(hearth_home))
    assert consent_gate(KEY, state) is None


def test_a_damaged_consent_file_reads_as_no_consent(hearth_home):
    grant(hearth_home, (Modality.KEYS,))
    (hearth_home / "consent.json").write_text("{not json")
    assert load_consent(hearth_home) is None


def test_pause_keeps_only_the_markers():
    state = CaptureState(consent=None, paused=True)
    assert pause_gate(KEY, state) is None
    assert pause_gate(Paused(1, 0.0), state) is not None


def test_sensitive_app_keeps_only_the_suppressed_gap():
    state = CaptureState(consent=None, sensitive_app_in_front=True)
    assert sensitive_app_gate(KEY, state) is None
    assert sensitive_app_gate(CLICK, state) is None
    assert sensitive_app_gate(Suppressed(1, 0.0, 3.0), state) is not None


def test_secure_input_drops_keys_but_not_clicks():
    state = CaptureState(consent=None, secure_input=True)
    assert secure_input_gate(KEY, state) is None
    assert secure_input_gate(CLICK, state) is CLICK


def test_the_stack_applies_every_gate(hearth_home):
    record = grant(hearth_home, (Modality.KEYS, Modality.POINTER))
    assert apply_gates(KEY, CaptureState(consent=record)) is KEY
    assert apply_gates(KEY, CaptureState(consent=record, sensitive_app_in_front=True)) is None


def test_modalities_parse_and_refuse_clearly():
    assert parse_modalities("keys, pointer") == (Modality.POINTER, Modality.KEYS)
    with pytest.raises(ConsentError, match="unknown modality 'mind'"):
        parse_modalities("mind")
    with pytest.raises(ConsentError, match="does not allow"):
        parse_modalities("screens", allowed=(Modality.KEYS,))


def test_pause_until_resumed_survives_a_restart_and_a_timed_pause_expires(hearth_home):
    pause(hearth_home, None, now=100.0)
    assert pause_state(hearth_home, now=10**9).paused  # read fresh from disk
    pause(hearth_home, 60.0, now=100.0)
    assert pause_state(hearth_home, now=159.0).paused
    assert not pause_state(hearth_home, now=161.0).paused
    resume(hearth_home)
    assert not pause_state(hearth_home).paused


def test_durations():
    assert parse_duration("1h30m") == 5400
    assert parse_duration("30m") == 1800
    with pytest.raises(DurationError, match="30m"):
        parse_duration("soon")


def test_cli_consent_pause_resume_status(hearth_home):
    runner = CliRunner()
    assert "never" in runner.invoke(app, ["consent", "show"]).output
    result = runner.invoke(app, ["consent", "grant", "--modalities", "pointer,keys", "--yes"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["status", "--json"]).output.count('"consented"') == 1
    runner.invoke(app, ["pause"])
    status = runner.invoke(app, ["status", "--json"]).output
    assert '"paused"' in status and '"paused_until_resumed": true' in status
    runner.invoke(app, ["resume"])
    assert '"consented"' in runner.invoke(app, ["status", "--json"]).output
    bad = runner.invoke(app, ["pause", "--for", "later"])
    assert bad.exit_code == 1
    runner.invoke(app, ["consent", "revoke"])
    assert '"not consented"' in runner.invoke(app, ["status", "--json"]).output


def test_the_disclosure_says_keys_are_runs_to_the_second_and_prompts_are_gaps(hearth_home):
    from client.control.consent import disclosure_text  # noqa: PLC0415
    from policy.events import KeyClass, KeyRun  # noqa: PLC0415

    text = disclosure_text(tuple(Modality))
    assert "runs of keys of one class" in text and "to the whole second" in text
    assert "typing rhythm" in text and "password prompt" in text
    assert "sensitive app or site" in text
    state = CaptureState(grant(hearth_home, (Modality.KEYS,)), secure_input=True)
    assert apply_gates(KeyRun(0, 1.0, KeyClass.LETTER, 3, 0.0), state) is None
