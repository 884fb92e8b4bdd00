"""X11 key codes to keys: the server's keyboard and modifier mappings, read once.

A key press from X RECORD carries a keycode and the modifier state; ``KeyMap``
turns that into a ``RawKey`` (a character or a named key, and the modifiers
held) the way X's own convention picks a keysym, with Num Lock, Caps Lock and
AltGr. Named keys are spelled as pynput names them (``client.recording.capture.keys``);
legacy keysyms (Cyrillic, Greek, ...) go through pynput's table, loaded on first need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

from client.recording.capture.keys import RawKey

# Modifier masks of the core protocol; the Mod1..Mod5 meanings come from the
# server's modifier mapping.
SHIFT_MASK: Final = 0x01
LOCK_MASK: Final = 0x02
CONTROL_MASK: Final = 0x04

# Keysyms of keys with a name, spelled as pynput names them (client.recording.capture.keys).
SPECIAL_KEYSYMS: Final[Mapping[int, str]] = {
    0xFF08: "backspace",
    0xFF09: "tab",
    0xFE20: "tab",  # ISO_Left_Tab (shift+tab)
    0xFF0D: "enter",
    0xFF8D: "enter",  # KP_Enter
    0xFF13: "pause",
    0xFF14: "scroll_lock",
    0xFF1B: "esc",
    0xFFFF: "delete",
    0xFF9F: "delete",  # KP_Delete
    0xFF50: "home",
    0xFF95: "home",  # KP_Home
    0xFF51: "left",
    0xFF96: "left",
    0xFF52: "up",
    0xFF97: "up",
    0xFF53: "right",
    0xFF98: "right",
    0xFF54: "down",
    0xFF99: "down",
    0xFF55: "page_up",
    0xFF9A: "page_up",
    0xFF56: "page_down",
    0xFF9B: "page_down",
    0xFF57: "end",
    0xFF9C: "end",
    0xFF61: "print_screen",
    0xFF63: "insert",
    0xFF9E: "insert",
    0xFF67: "menu",
    0xFF7F: "num_lock",
    0xFF80: "space",  # KP_Space
    0xFF89: "tab",  # KP_Tab
    0x0020: "space",
    0xFFE1: "shift_l",
    0xFFE2: "shift_r",
    0xFFE3: "ctrl_l",
    0xFFE4: "ctrl_r",
    0xFFE5: "caps_lock",
    0xFFE7: "alt_l",  # Meta_L
    0xFFE8: "alt_r",  # Meta_R
    0xFFE9: "alt_l",
    0xFFEA: "alt_r",
    0xFFEB: "cmd_l",  # Super_L
    0xFFEC: "cmd_r",
    0xFF7E: "alt_gr",  # Mode_switch
    0xFE03: "alt_gr",  # ISO_Level3_Shift
    0x1008FF14: "media_play_pause",
    0x1008FF12: "media_volume_mute",
    0x1008FF11: "media_volume_down",
    0x1008FF13: "media_volume_up",
    0x1008FF16: "media_previous",
    0x1008FF17: "media_next",
    **{0xFFBE + i: f"f{i + 1}" for i in range(20)},
}
# Keypad keys that type a character (with Num Lock).
KEYPAD_CHARS: Final[Mapping[int, str]] = {
    **{0xFFB0 + i: str(i) for i in range(10)},
    0xFFAA: "*",
    0xFFAB: "+",
    0xFFAC: ",",
    0xFFAD: "-",
    0xFFAE: ".",
    0xFFAF: "/",
    0xFFBD: "=",
}
_ALT_KEYSYMS: Final = frozenset({0xFFE7, 0xFFE8, 0xFFE9, 0xFFEA})
_CMD_KEYSYMS: Final = frozenset({0xFFEB, 0xFFEC, 0xFFED, 0xFFEE})  # Super, Hyper
_ALT_GR_KEYSYMS: Final = frozenset({0xFF7E, 0xFE03})
_NUM_LOCK_KEYSYM: Final = 0xFF7F
_RELEVANT_STATE: Final = 0xFF  # shift, lock, control, mod1..mod5; not the button bits
_CACHE_LIMIT: Final = 4096


def keysym_char(keysym: int) -> str | None:
    """The character a keysym types (Latin-1 and Unicode keysyms), or None."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if 0x01000100 <= keysym <= 0x0110FFFF:
        return chr(keysym - 0x01000000)
    return KEYPAD_CHARS.get(keysym)


class KeyMap:
    """Keycodes (with the event's modifier state) to ``RawKey``, from the server's mappings."""

    def __init__(
        self,
        first_keycode: int,
        keysyms: Sequence[Sequence[int]],
        modifier_keycodes: Sequence[Sequence[int]],
        legacy_char: Callable[[int], str | None] | None = None,
    ) -> None:
        """Read the server's mappings once.

        ``keysyms[i]`` lists keycode ``first_keycode + i``'s keysyms; ``modifier_keycodes``
        is the modifier mapping (8 rows: shift, lock, control, mod1..mod5).
        """
        self._first = first_keycode
        self._keysyms = [tuple(row) for row in keysyms]
        self._legacy_char = legacy_char
        alt = cmd = alt_gr = num_lock = 0
        for bit, row in enumerate(modifier_keycodes):
            for keycode in row:
                syms = set(self._row(keycode)) if keycode else set()
                if syms & _ALT_KEYSYMS:
                    alt |= 1 << bit
                if syms & _CMD_KEYSYMS:
                    cmd |= 1 << bit
                if syms & _ALT_GR_KEYSYMS:
                    alt_gr |= 1 << bit
                if _NUM_LOCK_KEYSYM in syms:
                    num_lock |= 1 << bit
        self.alt_mask, self.cmd_mask = alt & ~alt_gr, cmd
        self.alt_gr_mask, self.num_lock_mask = alt_gr, num_lock
        self._cache: dict[int, RawKey] = {}
        self._modifiers: dict[int, frozenset[str]] = {}

    def _row(self, keycode: int) -> tuple[int, ...]:
        index = keycode - self._first
        return self._keysyms[index] if 0 <= index < len(self._keysyms) else ()

    def keysym(self, keycode: int, state: int) -> int:
        """The keysym X's convention picks for ``keycode`` under ``state`` (0 if none)."""
        row = self._row(keycode)
        if not row:
            return 0
        group = 2 if state & self.alt_gr_mask and len(row) > 2 else 0
        base = [sym for sym in row[group : group + 2] if sym] or [sym for sym in row[:2] if sym]
        if not base:
            return 0
        lower = base[0]
        upper = base[1] if len(base) > 1 else lower
        if 0xFF80 <= upper <= 0xFFBD and state & self.num_lock_mask:  # keypad with Num Lock
            return upper if not state & SHIFT_MASK else lower
        return upper if state & SHIFT_MASK else lower

    def modifiers(self, state: int) -> frozenset[str]:
        """Base modifier names held, as ``KeyInterpreter`` names them."""
        held = self._modifiers.get(state)
        if held is None:
            names = set()
            if state & SHIFT_MASK:
                names.add("shift")
            if state & CONTROL_MASK:
                names.add("ctrl")
            if state & self.alt_mask:
                names.add("alt")
            if state & self.cmd_mask:
                names.add("cmd")
            if state & self.alt_gr_mask:
                names.add("alt_gr")
            held = self._modifiers[state] = frozenset(names)
        return held

    def raw_key(self, code: int) -> RawKey:
        """``keycode | state << 8`` (what the keyboard callback received) as a ``RawKey``."""
        code &= 0xFF | _RELEVANT_STATE << 8
        key = self._cache.get(code)
        if key is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            key = self._cache[code] = self._decode(code & 0xFF, code >> 8)
        return key

    def _decode(self, keycode: int, state: int) -> RawKey:
        keysym = self.keysym(keycode, state)
        held = self.modifiers(state)
        name = SPECIAL_KEYSYMS.get(keysym)
        if name is not None:
            return RawKey(name=name, modifiers=held)
        char = keysym_char(keysym)
        if char is None and keysym and self._legacy_char is not None:
            char = self._legacy_char(keysym)
        if char is not None and state & LOCK_MASK and not state & SHIFT_MASK:
            char = char.upper()
        return RawKey(char=char, modifiers=held)


def pynput_char(keysym: int) -> str | None:
    """Legacy keysyms (Cyrillic, Greek, ...) through pynput's table; loaded on first need."""
    table = _LEGACY.get("table")
    if table is None:
        try:
            from pynput._util.xorg_keysyms import KEYSYMS, SYMBOLS  # noqa: PLC0415
        except Exception:  # no table: the key stays unnamed
            table = {}
        else:
            table = {sym: SYMBOLS[name][1] for sym, name in KEYSYMS.items() if name in SYMBOLS}
        _LEGACY["table"] = table
    return table.get(keysym)


_LEGACY: dict[str, dict[int, str]] = {}
