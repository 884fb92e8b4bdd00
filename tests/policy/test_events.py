import pytest

from policy.events import (
    AppCategory,
    Button,
    Click,
    Focus,
    Key,
    KeyClass,
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
    ],
)
def test_invalid_records_give_a_schema_error_naming_the_problem(record, message):
    with pytest.raises(SchemaError, match=message):
        from_record(record)
