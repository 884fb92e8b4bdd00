"""X11 RECORD input decoded by hand: replies split, key codes to keys, pointer events, times."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from Xlib import XK

from client.recording.capture.input_x11 import (
    END_OF_DATA,
    FROM_SERVER,
    XRecordError,
    XRecordSource,
    iter_replies,
)
from client.recording.capture.keys import KeyInterpreter
from client.recording.capture.x11_keymap import SPECIAL_KEYSYMS, KeyMap, keysym_char
from client.recording.capture.x11_time import MARGIN, ServerClock, best_of
from policy.events import Button, KeyClass, Shortcut

# Recorded from Xvfb (xdotool type "a", xdotool mousemove 100 200 click 1 click 5): one
# RECORD reply each, header then 32-byte core events.
KEY_A_REPLY = bytes.fromhex(
    "01001500080000000000000000000000ad8b400000000000000000000000000002260000ad8b4000"
    "000000000000000000000000800290010000000000000000"
)
POINTER_REPLY = bytes.fromhex(
    "01001300280000000000787400000000d88b400000000000657669636550726f06000000d88b4000"
    "0d05000000000000000000006400c800000000000000000004010000d88b40000000000000000000"
    "000000006400c800000000000000000005010000d88b40000000000000000000000000006400c800"
    "0000000000010000040500003c8c40000000000000000000000000006400c8000000000000000000"
    "050500003c8c40000000000000000000000000006400c8000000000000100000"
)

# A US layout as Xvfb reports it (keycode: keysyms), and its modifier mapping.
US = {
    10: (0x31, 0x21),  # 1 !
    23: (0xFF09, 0xFE20),  # Tab, ISO_Left_Tab
    37: (0xFFE3,),  # Control_L
    38: (0x61, 0x41),  # a A
    39: (0x73, 0x53),  # s S
    50: (0xFFE1,),  # Shift_L
    54: (0x63, 0x43),  # c C
    56: (0x62, 0x42),  # b B
    64: (0xFFE9, 0xFFE7),  # Alt_L, Meta_L
    65: (0x20,),  # space
    66: (0xFFE5,),  # Caps_Lock
    77: (0xFF7F,),  # Num_Lock
    87: (0xFF9C, 0xFFB1),  # KP_End, KP_1
    92: (0xFE03,),  # ISO_Level3_Shift
    133: (0xFFEB,),  # Super_L
}
MODIFIERS = [[50], [66], [37], [64], [77], [], [133], [92]]
SHIFT, LOCK, CTRL, ALT, NUM, SUPER, ALT_GR = 1, 2, 4, 8, 16, 64, 128


def us_keymap() -> KeyMap:
    rows = [US.get(code, ()) for code in range(8, 256)]
    return KeyMap(8, rows, MODIFIERS)


def key_event(keycode: int, state: int = 0) -> bytes:
    """A core KeyPress as RECORD delivers it (32 bytes)."""
    return struct.pack("=BBHIIII hhhhHBx", 2, keycode, 0, 1000, 0, 0, 0, 0, 0, 0, 0, state, 1)


def record_reply(events: bytes, category: int = FROM_SERVER) -> bytes:
    header = struct.pack("=BBHI", 1, category, 0, len(events) // 4) + bytes(24)
    return header + events


def source_with(keymap: KeyMap, **callbacks: Any) -> XRecordSource:
    """An XRecordSource without an X server, its callbacks set as a listener would.

    The server's millisecond 1000 is our second 50.0 (``key_event``'s time).
    """
    source = object.__new__(XRecordSource)
    source.keymap = keymap
    source._server = ServerClock(1000, 50.0, 0.005)
    for name in ("on_press", "on_move", "on_click", "on_scroll"):
        setattr(source, f"_{name}", callbacks.get(name))
    return source


def dispatch(source: XRecordSource, data: bytes, now: float = 100.0) -> None:
    """What ``poll`` does with one read."""
    ((_, start, end),), _ = iter_replies(data)
    source._dispatch(data, start, end, now)


def test_a_recorded_reply_splits_into_one_key_press():
    replies, used = iter_replies(KEY_A_REPLY)
    assert used == len(KEY_A_REPLY) == 64
    assert replies == [(FROM_SERVER, 32, 64)]
    assert KEY_A_REPLY[32] == 2 and KEY_A_REPLY[33] == 38  # KeyPress, keycode 38


def test_an_incomplete_reply_waits_for_the_next_read():
    data = KEY_A_REPLY + KEY_A_REPLY[:40]
    replies, used = iter_replies(data)
    assert len(replies) == 1 and used == 64
    more, used_more = iter_replies(data[used:] + KEY_A_REPLY[40:])
    assert len(more) == 1 and used_more == 64


def test_end_of_data_is_reported_and_x_errors_raise():
    replies, _ = iter_replies(record_reply(b"", END_OF_DATA))
    assert replies == [(END_OF_DATA, 32, 32)]
    with pytest.raises(XRecordError):
        iter_replies(bytes([0, 3]) + bytes(30))


def test_recorded_key_press_reaches_the_callback_as_keycode_and_state():
    pressed: list[int] = []
    source = source_with(us_keymap(), on_press=lambda t, code: pressed.append(code))
    dispatch(source, KEY_A_REPLY)
    assert pressed == [38]
    key = source.raw_key(38)
    assert key.char == "a" and key.modifiers == frozenset()


def test_typing_with_shift_and_a_shortcut_from_the_state_field_alone():
    keymap = us_keymap()
    codes: list[int] = []
    source = source_with(keymap, on_press=lambda t, code: codes.append(code))
    events = b"".join(
        [
            key_event(38),  # a
            key_event(50),  # Shift_L
            key_event(56, SHIFT),  # B
            key_event(65),  # space
            key_event(10),  # 1
            key_event(37),  # Control_L
            key_event(39, CTRL),  # ctrl+s
            key_event(54),  # c, ctrl released (no release event needed)
        ]
    )
    dispatch(source, record_reply(events))
    interpreter = KeyInterpreter()
    strokes = [interpreter.press(source.raw_key(code)) for code in codes]
    assert [s.shortcut or s.key_class for s in strokes] == [
        KeyClass.LETTER,
        KeyClass.MODIFIER,
        KeyClass.LETTER,
        KeyClass.SPACE,
        KeyClass.DIGIT,
        KeyClass.MODIFIER,
        Shortcut.SAVE,
        KeyClass.LETTER,
    ]
    assert [s.typed for s in strokes] == ["a", None, "B", " ", "1", None, None, "c"]


def test_modifier_masks_come_from_the_modifier_mapping():
    keymap = us_keymap()
    assert (keymap.alt_mask, keymap.cmd_mask) == (ALT, SUPER)
    assert (keymap.alt_gr_mask, keymap.num_lock_mask) == (ALT_GR, NUM)
    assert keymap.modifiers(ALT | SUPER | CTRL | SHIFT) == {"alt", "cmd", "ctrl", "shift"}
    alt_tab = KeyInterpreter().press(keymap.raw_key(23 | ALT << 8))
    assert alt_tab.shortcut is Shortcut.SWITCH_APP


def test_caps_lock_keypad_and_unknown_keycodes():
    keymap = us_keymap()
    assert keymap.raw_key(38 | LOCK << 8).char == "A"
    assert keymap.raw_key(87 | NUM << 8).char == "1"  # KP_1 with Num Lock
    assert keymap.raw_key(87).name == "end"  # KP_End without
    assert keymap.raw_key(200).name is None and keymap.raw_key(200).char is None


def test_keysyms_to_characters():
    assert keysym_char(0x61) == "a" and keysym_char(0xE4) == "ä"
    assert keysym_char(0x010003B1) == "\u03b1"  # Unicode keysym: greek alpha
    assert keysym_char(0xFF08) is None


def test_named_keysyms_match_xlib():
    XK.load_keysym_group("xkb")
    for name, expected in [
        ("BackSpace", "backspace"),
        ("Return", "enter"),
        ("Delete", "delete"),
        ("Prior", "page_up"),
        ("Next", "page_down"),
        ("Control_R", "ctrl_r"),
        ("Super_L", "cmd_l"),
        ("ISO_Left_Tab", "tab"),
        ("F5", "f5"),
        ("F20", "f20"),
        ("Escape", "esc"),
    ]:
        assert SPECIAL_KEYSYMS[XK.string_to_keysym(name)] == expected


def test_recorded_pointer_events_become_move_click_and_scroll():
    calls: list[tuple[Any, ...]] = []
    source = source_with(
        us_keymap(),
        on_move=lambda t, *a: calls.append(("move", *a)),
        on_click=lambda t, *a: calls.append(("click", *a)),
        on_scroll=lambda t, *a: calls.append(("scroll", *a)),
    )
    _, used = iter_replies(POINTER_REPLY)
    assert used == len(POINTER_REPLY)
    dispatch(source, POINTER_REPLY, now=1e9)
    assert calls == [
        ("move", 100, 200),
        ("click", 100, 200, 1, True),
        ("click", 100, 200, 1, False),
        ("scroll", 100, 200, 0, -1),
    ]
    assert source.button(1) is Button.LEFT and source.button(3) is Button.RIGHT
    assert source.button(8) is None


def test_only_the_last_motion_of_a_read_is_passed_on():
    moves: list[tuple[int, int]] = []
    source = source_with(us_keymap(), on_move=lambda t, x, y: moves.append((x, y)))
    events = b"".join(struct.pack("=BB18xhh8x", 6, 0, x, x * 2) for x in (1, 2, 3))
    dispatch(source, record_reply(events))
    assert moves == [(3, 6)]


def test_each_event_is_stamped_with_the_server_time_it_carries():
    seen: list[tuple[str, float]] = []
    source = source_with(
        us_keymap(),
        on_press=lambda t, code: seen.append(("key", t)),
        on_click=lambda t, *a: seen.append(("click", t)),
    )
    events = b"".join(
        [
            struct.pack("=BBHI24x", 2, 38, 0, 1250),  # key at 1.25 s after the measurement
            struct.pack("=BBHI24x", 4, 1, 0, 1300),  # then a click
            struct.pack("=BBHI24x", 2, 38, 0, 1400),  # then a key
            struct.pack("=BBHI24x", 2, 38, 0, 9000),  # "later" than it was read: read time
        ]
    )
    dispatch(source, record_reply(events), now=50.5)
    assert seen == [("key", 50.25), ("click", 50.3), ("key", 50.4), ("key", 50.5)]


def test_server_milliseconds_wrap_around_and_the_shortest_round_trip_wins():
    clock = ServerClock(2**32 - 500, 10.0, 0.0)
    assert clock.to_local(500) == pytest.approx(11.0)  # wrapped past 2**32
    assert clock.to_local(2**32 - 1500) == pytest.approx(9.0)
    best = best_of([(1.0, 100, 1.2), (2.0, 1100, 2.01), (3.0, 2100, 3.5)])
    assert best.server_ms == 1100 and best.local == pytest.approx(2.005)
    assert best.error == pytest.approx(0.005 + MARGIN)
