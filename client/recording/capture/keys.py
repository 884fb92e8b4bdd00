"""Keystrokes to key classes and named shortcuts; the letter itself is never kept here.

The interpreter follows which modifiers are held so ``ctrl+c`` becomes ``copy``
rather than a letter. It is platform neutral: a backend describes each key as a
``RawKey`` (pynput's key name for special keys, or the character it types). A
backend that reads the modifier state from each press (X11's ``state`` field)
passes it in ``RawKey.modifiers``; then releases are not needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from policy.events import KeyClass, Shortcut

# pynput key names (and the Windows/macOS spellings they share) by class.
_MODIFIERS: Final[Mapping[str, str]] = {
    "ctrl": "ctrl",
    "ctrl_l": "ctrl",
    "ctrl_r": "ctrl",
    "alt": "alt",
    "alt_l": "alt",
    "alt_r": "alt",
    "alt_gr": "alt_gr",  # types characters on many layouts: not a shortcut modifier
    "shift": "shift",
    "shift_l": "shift",
    "shift_r": "shift",
    "cmd": "cmd",
    "cmd_l": "cmd",
    "cmd_r": "cmd",
    "caps_lock": "caps_lock",
}
_NAVIGATION: Final = frozenset(
    {"up", "down", "left", "right", "home", "end", "page_up", "page_down", "tab"}
)
_EDIT: Final = frozenset({"backspace", "delete"})
# Primary modifier (ctrl, or cmd on macOS) + key.
_PRIMARY_SHORTCUTS: Final[Mapping[str, Shortcut]] = {
    "c": Shortcut.COPY,
    "v": Shortcut.PASTE,
    "x": Shortcut.CUT,
    "s": Shortcut.SAVE,
    "z": Shortcut.UNDO,
    "y": Shortcut.REDO,
    "f": Shortcut.FIND,
    "a": Shortcut.SELECT_ALL,
    "t": Shortcut.NEW_TAB,
    "w": Shortcut.CLOSE_TAB,
    "n": Shortcut.NEW,
    "o": Shortcut.OPEN,
    "p": Shortcut.PRINT,
    "r": Shortcut.REFRESH,
    "enter": Shortcut.RUN,
    "f4": Shortcut.CLOSE_TAB,
}
PRIMARY_MODIFIERS: Final = frozenset({"ctrl", "cmd"})


@dataclass(frozen=True, slots=True)
class RawKey:
    """A key as a backend reports it: a special key's name, or the character it types.

    ``modifiers`` are the base modifiers held at the press (``ctrl``, ``shift``, ...)
    when the backend knows them; None means "follow presses and releases".
    """

    name: str | None = None
    char: str | None = field(default=None, repr=False)  # never in logs or reprs
    modifiers: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Stroke:
    """What one key press means: its class, a shortcut if any, and the character typed.

    ``typed`` is only for the text modality's redactor; it is None for keys that
    type nothing, and for keys pressed with ctrl, alt or cmd held.
    """

    key_class: KeyClass
    shortcut: Shortcut | None = None
    typed: str | None = field(default=None, repr=False)


def _normalize_char(char: str) -> str:
    """Control characters (ctrl+c arrives as byte 3 on Windows) back to their letter."""
    if len(char) == 1 and 1 <= ord(char) <= 26:
        return chr(ord(char) + 96)
    return char


def classify(key: RawKey) -> KeyClass:
    """The class of a key, ignoring modifiers."""
    if key.name is not None:
        if key.name in _MODIFIERS:
            return KeyClass.MODIFIER
        if key.name == "space":
            return KeyClass.SPACE
        if key.name == "enter":
            return KeyClass.ENTER
        if key.name in _EDIT:
            return KeyClass.EDIT
        if key.name in _NAVIGATION:
            return KeyClass.NAVIGATION
        return KeyClass.OTHER
    if not key.char:
        return KeyClass.OTHER
    char = _normalize_char(key.char)
    if char.isalpha():
        return KeyClass.LETTER
    if char.isdigit():
        return KeyClass.DIGIT
    if char.isspace():
        return KeyClass.SPACE
    return KeyClass.PUNCTUATION


class KeyInterpreter:
    """Turns presses and releases into strokes, following held modifiers."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    @property
    def held(self) -> frozenset[str]:
        """Base modifiers held now (ctrl, alt, shift, cmd, ...)."""
        return frozenset(self._held)

    def reset(self) -> None:
        """Forget held modifiers (after a pause, a missed release cannot stick)."""
        self._held.clear()

    def _shortcut(self, key: RawKey) -> Shortcut | None:
        held = self._held
        if key.name == "tab" and held & {"alt", "cmd"}:
            return Shortcut.SWITCH_APP
        if key.name == "f5":
            return Shortcut.REFRESH
        if not held & PRIMARY_MODIFIERS:
            return None
        pressed = key.name if key.name is not None else _normalize_char(key.char or "").lower()
        if pressed == "z" and "shift" in held:
            return Shortcut.REDO
        if pressed == "tab":
            return Shortcut.SWITCH_APP  # ctrl+tab: next tab or window
        return _PRIMARY_SHORTCUTS.get(pressed)

    def press(self, key: RawKey) -> Stroke:
        """Interpret a key press."""
        if key.modifiers is not None:
            self._held.clear()
            self._held.update(key.modifiers)
        modifier = _MODIFIERS.get(key.name or "")
        if modifier is not None:
            self._held.add(modifier)
            return Stroke(KeyClass.MODIFIER)
        key_class = classify(key)
        shortcut = self._shortcut(key)
        if shortcut is not None or self._held & {"ctrl", "cmd", "alt"}:
            return Stroke(key_class, shortcut)
        typed: str | None = None
        if key.name == "space":
            typed = " "
        elif key.name is None and key.char and key_class is not KeyClass.OTHER:
            typed = key.char
        return Stroke(key_class, None, typed)

    def release(self, key: RawKey) -> None:
        """Follow a key release (only modifiers matter)."""
        modifier = _MODIFIERS.get(key.name or "")
        if modifier is not None:
            self._held.discard(modifier)
