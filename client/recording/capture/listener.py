"""Input sources: the interface the recorder drives, its pynput implementation, the picker.

pynput uses a Quartz event tap on macOS and low-level hooks on Windows. On X11
``open_input_source`` picks ``client.recording.capture.input_x11.XRecordSource`` (RECORD
decoded with ``struct``, a fraction of pynput's cost per event) and falls back to
pynput when the display has no RECORD extension; ``HEARTH_INPUT=pynput`` forces
pynput (to compare the two). The recorder starts a keyboard or mouse listener
only for modalities the employee granted, and stops them while paused or
without consent. pynput is imported on start only: merely importing it needs a
display.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

from client.recording.capture.keys import RawKey
from client.recording.capture.pointer import ScreenBounds, screen_bounds
from policy.events import Button

_log = logging.getLogger(__name__)

KeyCallback = Callable[..., None]  # (key, injected=...)
MoveCallback = Callable[..., None]  # (x, y, injected=...)
ClickCallback = Callable[..., None]  # (x, y, button, pressed, injected=...)
ScrollCallback = Callable[..., None]  # (x, y, dx, dy, injected=...)


class InputSource(Protocol):
    """Keyboard and mouse listeners that call back on their own threads.

    A source may instead have ``poll()``, which the recorder's writer calls each
    tick; then its callbacks take the time the event happened first
    (``client.recording.input_queue.Listeners``; X RECORD does this).
    """

    def start_keyboard(self, on_press: KeyCallback, on_release: KeyCallback) -> None:
        """Start delivering key presses and releases."""
        ...

    def stop_keyboard(self) -> None:
        """Stop the keyboard listener (no callback after this returns)."""
        ...

    def start_mouse(
        self, on_move: MoveCallback, on_click: ClickCallback, on_scroll: ScrollCallback
    ) -> None:
        """Start delivering pointer moves, clicks and scrolls."""
        ...

    def stop_mouse(self) -> None:
        """Stop the mouse listener."""
        ...

    def raw_key(self, key: Any) -> RawKey:
        """Describe a key object the keyboard callback received."""
        ...

    def button(self, button: Any) -> Button | None:
        """The button a click callback received, or None for buttons hearth ignores."""
        ...

    def bounds(self) -> ScreenBounds:
        """The virtual screen, for normalizing coordinates."""
        ...


class PynputSource:
    """pynput's listeners as an ``InputSource``."""

    def __init__(self) -> None:
        """No listener runs until a start method is called."""
        self._keyboard: Any = None
        self._mouse: Any = None
        self._bounds: ScreenBounds | None = None

    def start_keyboard(self, on_press: KeyCallback, on_release: KeyCallback) -> None:
        """Start pynput's keyboard listener and wait until it is live."""
        from pynput import keyboard  # noqa: PLC0415

        if self._keyboard is None:
            self._keyboard = keyboard.Listener(on_press=on_press, on_release=on_release)
            self._keyboard.start()
            self._keyboard.wait()

    def stop_keyboard(self) -> None:
        """Stop the keyboard listener."""
        if self._keyboard is not None:
            self._keyboard.stop()
            self._keyboard = None

    def start_mouse(
        self, on_move: MoveCallback, on_click: ClickCallback, on_scroll: ScrollCallback
    ) -> None:
        """Start pynput's mouse listener and wait until it is live."""
        from pynput import mouse  # noqa: PLC0415

        if self._mouse is None:
            self._mouse = mouse.Listener(on_move=on_move, on_click=on_click, on_scroll=on_scroll)
            self._mouse.start()
            self._mouse.wait()

    def stop_mouse(self) -> None:
        """Stop the mouse listener."""
        if self._mouse is not None:
            self._mouse.stop()
            self._mouse = None

    def raw_key(self, key: Any) -> RawKey:
        """Describe pynput's ``Key`` members by name, ``KeyCode`` by the character it types."""
        if key is None:
            return RawKey()
        name = getattr(key, "name", None)
        if name is not None:
            return RawKey(name=str(name))
        return RawKey(char=getattr(key, "char", None))

    def button(self, button: Any) -> Button | None:
        """Left, right and middle; extra buttons are ignored."""
        name = getattr(button, "name", "")
        try:
            return Button(name)
        except ValueError:
            return None

    def bounds(self) -> ScreenBounds:
        """The virtual screen, read once."""
        if self._bounds is None:
            self._bounds = screen_bounds()
        return self._bounds


def open_input_source() -> InputSource:
    """The input source for this platform (see the module docstring)."""
    if sys.platform.startswith("linux") and os.environ.get("HEARTH_INPUT") != "pynput":
        from client.recording.capture.input_x11 import XRecordError, XRecordSource  # noqa: PLC0415

        try:
            return XRecordSource()
        except XRecordError as exc:
            _log.warning("%s; using pynput", exc)
    return PynputSource()
