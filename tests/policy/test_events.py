import pytest

from policy.events import (
    Activity,
    AppCategory,
    Button,
    Click,
    Focus,
    Key,
    KeyClass,
    KeyRun,
    Paused,
    PointerMove,
    Resumed,
    SchemaError,
    Scroll,
    Shortcut,
    ShortcutPressed,
    Suppressed,
    Text,
    Thumbnail,
    from_record,
    key_run,
    to_record,
)

ALL_KINDS = [
    PointerMove(0, 0.1, 0.5, 0.25),
    Click(1, 0.2, 0.1, 0.9, Button.LEFT),
    Scroll(2, 0.3, 0.5, 0.5, -3),
    Key(3, 0.4, KeyClass.LETTER),
    ShortcutPressed(4, 0.5, Shortcut.PASTE),
    Text(5, 0.6, "hello [EMAIL]"),
    Focus(6, 0.7, "code", AppCategory.EDITOR),
    Thumbnail(7, 0.8, 4, 2, bytes(range(8))),
    Suppressed(8, 0.9, 12.5),
    Paused(9, 1.0),
    Resumed(10, 1.1),
    KeyRun(11, 2.0, KeyClass.DIGIT, 4, 1.0),
    Activity(12, 1_700_000_000.0, 3, "W_Completeren aanvraag"),
]


@pytest.mark.parametrize("event", ALL_KINDS, ids=lambda e: e.kind.value)
def test_every_event_kind_round_trips_through_its_record(event):
    assert from_record(to_record(event)) == event


def test_focus_record_has_no_place_for_a_window_title():
    record = to_record(Focus(1, 0.0, "firefox", AppCategory.BROWSER))
    assert set(record) == {"k", "s", "t", "a", "c"}


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"k": "nope", "s": 1, "t": 0.0}, "unknown value"),
        ({"k": "click", "s": 1, "t": 0.0, "x": 2.0, "y": 0.1, "b": "left"}, "normalized"),
        ({"k": "key", "s": 1, "t": 0.0}, "missing field 'c'"),
        ({"k": "key", "s": -1, "t": 0.0, "c": "letter"}, ">= 0"),
        ({"k": "thumb", "s": 1, "t": 0.0, "w": 640, "h": 400, "p": ""}, "at most 64x40"),
        ({"k": "key", "s": "1", "t": 0.0, "c": "letter"}, "must be int"),
        ({"k": "activity", "s": 1, "t": 0.0, "c": 0, "a": ""}, "1 to 200 characters"),
        ({"k": "activity", "s": 1, "t": 0.0, "c": -1, "a": "check"}, "case number"),
    ],
)
def test_invalid_records_give_a_schema_error_naming_the_problem(record, message):
    with pytest.raises(SchemaError, match=message):
        from_record(record)


def test_a_key_run_keeps_whole_seconds_only():
    run = key_run(3, 100.4, 101.7, KeyClass.LETTER, 12)
    assert (run.t, run.duration, run.count) == (100.0, 2.0, 12)
    record = to_record(run)
    assert record == {"k": "keys", "s": 3, "t": 100, "c": "letter", "n": 12, "d": 2}


@pytest.mark.parametrize(
    "change", [{"t": 100.25}, {"d": 0.5}, {"d": -1}, {"n": 0}], ids=["t", "d", "negative", "count"]
)
def test_a_stored_key_run_with_sub_second_timing_or_no_keys_is_refused(change):
    record = {"k": "keys", "s": 3, "t": 100, "c": "letter", "n": 12, "d": 2} | change
    with pytest.raises(SchemaError):
        from_record(record)


def test_per_key_records_of_old_vaults_still_decode():
    assert from_record({"k": "key", "s": 1, "t": 0.123456, "c": "digit"}) == Key(
        1, 0.123456, KeyClass.DIGIT
    )
