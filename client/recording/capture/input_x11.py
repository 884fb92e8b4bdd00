"""X11 input through the RECORD extension, decoded with ``struct``: no pynput on Linux.

pynput listens the same way (XRecord through python-xlib) but parses every
event into python-xlib objects and keeps a second connection per listener;
that costs about 120 µs of pure Python per X event. Here each listener owns one
X connection: python-xlib opens it, reads the keyboard and modifier mappings
and creates the RECORD context; after that the thread reads the socket itself
and decodes each 32-byte core event with ``struct``:

* keys: only ``KeyPress`` is recorded. The modifiers held come from the event's
  ``state`` field, so releases are not needed (half the X traffic of pynput).
  The callback receives ``keycode | state << 8``; ``raw_key`` turns that into a
  ``RawKey`` on the writer thread, through the keyboard mapping read at start
  (``client.recording.capture.x11_keymap``, cached per code).
* pointer: button presses and releases (left, middle, right), wheel presses as
  scrolls, and motion, of which only the last one per read is passed on.

Stopping shuts the socket down; the X server frees the context with the
connection. A changed keyboard layout is picked up when the listener restarts
(pause and resume).
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from client.recording.capture.keys import RawKey
from client.recording.capture.listener import (
    ClickCallback,
    KeyCallback,
    MoveCallback,
    ScrollCallback,
)
from client.recording.capture.pointer import ScreenBounds
from client.recording.capture.x11_keymap import KeyMap, pynput_char
from policy.events import Button

# Core event codes (X11 protocol); the top bit of byte 0 marks SendEvent.
KEY_PRESS: Final = 2
BUTTON_PRESS: Final = 4
BUTTON_RELEASE: Final = 5
MOTION_NOTIFY: Final = 6
EVENT_SIZE: Final = 32
# RECORD reply categories.
FROM_SERVER: Final = 0
END_OF_DATA: Final = 5
_RECORD_ENABLE_CONTEXT: Final = 5
_REPLY_HEADER = struct.Struct("=BBHI")  # type, category, sequence, length (4-byte units)
_KEY = struct.Struct("=28xH")  # state
_POINTER = struct.Struct("=BB18xhh")  # type, detail, root x, root y
_BUTTONS: Final[Mapping[int, Button]] = {1: Button.LEFT, 2: Button.MIDDLE, 3: Button.RIGHT}
_SCROLLS: Final[Mapping[int, tuple[int, int]]] = {4: (0, 1), 5: (0, -1), 6: (-1, 0), 7: (1, 0)}


class XRecordError(RuntimeError):
    """The X server has no RECORD extension, or refused the recording context."""


# ------------------------------------------------------------------ decoding (pure)


def iter_replies(data: bytes, start: int = 0) -> tuple[list[tuple[int, int, int]], int]:
    """Split complete RECORD replies off ``data``.

    Returns ``[(category, payload_start, payload_end), ...]`` and how many bytes
    were consumed; an incomplete reply at the end is left for the next read.
    An X error packet raises ``XRecordError``.
    """
    found: list[tuple[int, int, int]] = []
    size = len(data)
    offset = start
    while size - offset >= EVENT_SIZE:
        kind, category, _, length = _REPLY_HEADER.unpack_from(data, offset)
        if kind == 0:
            raise XRecordError(f"X error {category} on the recording connection")
        end = offset + EVENT_SIZE + 4 * length if kind == 1 else offset + EVENT_SIZE
        if end > size:
            break
        if kind == 1:
            found.append((category, offset + EVENT_SIZE, end))
        offset = end
    return found, offset


# ------------------------------------------------------------------ the listeners


class _Recording:
    """One RECORD context on its own connection, read by its own thread."""

    def __init__(
        self,
        display: Any,
        first: int,
        last: int,
        dispatch: Callable[[bytes, int, int], None],
        name: str,
    ) -> None:
        from Xlib.ext import record  # noqa: PLC0415

        self._display = display
        context = display.record_create_context(
            0,
            [record.AllClients],
            [
                {
                    "core_requests": (0, 0),
                    "core_replies": (0, 0),
                    "ext_requests": (0, 0, 0, 0),
                    "ext_replies": (0, 0, 0, 0),
                    "delivered_events": (0, 0),
                    "device_events": (first, last),
                    "errors": (0, 0),
                    "client_started": False,
                    "client_died": False,
                }
            ],
        )
        display.sync()  # the context exists; nothing of python-xlib's is left unread
        opcode = display.display.get_extension_major("RECORD")
        self._socket: socket.socket = display.display.socket
        self._socket.sendall(struct.pack("=BBHI", opcode, _RECORD_ENABLE_CONTEXT, 2, context))
        self._dispatch = dispatch
        self._live = True
        self._thread = threading.Thread(target=self._pump, name=name, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        recv, dispatch = self._socket.recv, self._dispatch
        pending = b""
        try:
            while self._live:
                chunk = recv(65536)
                if not chunk:
                    return
                data = pending + chunk if pending else chunk
                replies, used = iter_replies(data)
                pending = data[used:]
                for category, start, end in replies:
                    if not self._live or category == END_OF_DATA:
                        return
                    if category == FROM_SERVER and end > start:
                        dispatch(data, start, end)
        except (OSError, XRecordError):
            return  # the connection went away (stop, or the X server is gone)

    def stop(self) -> None:
        self._live = False
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(2.0)
        with contextlib.suppress(Exception):  # the socket is already shut down
            self._display.close()


class XRecordSource:
    """An ``InputSource`` for X11: RECORD, one connection and one thread per listener."""

    def __init__(self, display_name: str | None = None) -> None:
        """Check that the display has RECORD; nothing is recorded until a start method."""
        self._name = display_name or os.environ.get("DISPLAY") or ""
        display = self._connect()
        try:
            if not display.has_extension("RECORD"):
                raise XRecordError(f"the X display {self._name} has no RECORD extension")
            screen = display.screen()
            self._bounds = ScreenBounds(0, 0, screen.width_in_pixels, screen.height_in_pixels)
            self.keymap = self._keymap(display)
        finally:
            display.close()
        self._keyboard: _Recording | None = None
        self._mouse: _Recording | None = None
        self._on_press: KeyCallback | None = None
        self._on_move: MoveCallback | None = None
        self._on_click: ClickCallback | None = None
        self._on_scroll: ScrollCallback | None = None

    def _connect(self) -> Any:
        from Xlib import display  # noqa: PLC0415 - needs an X server

        return display.Display(self._name or None)

    @staticmethod
    def _keymap(display: Any) -> KeyMap:
        first = display.display.info.min_keycode
        count = display.display.info.max_keycode - first + 1
        keysyms = display.get_keyboard_mapping(first, count)
        modifiers = display.get_modifier_mapping()
        return KeyMap(first, keysyms, modifiers, pynput_char)

    # -- keyboard

    def start_keyboard(self, on_press: KeyCallback, on_release: KeyCallback) -> None:
        """Record key presses (releases are not needed: presses carry the modifier state).

        A thread of its own reads them, so each key is stamped when it arrives. Read by
        the recorder's writer after its focus check instead (cheaper: no wake-up per
        key), a key typed before that check but read after it was stamped late: judged
        by a later look (a password typed at a prompt that had ended by then was kept
        under load) and ordered after a click that followed it.
        """
        if self._keyboard is None:
            display = self._connect()
            self.keymap = self._keymap(display)  # the layout as it is now
            self._on_press = on_press
            self._keyboard = _Recording(
                display, KEY_PRESS, KEY_PRESS, self._keys, "hearth-keyboard"
            )

    def _keys(self, data: bytes, start: int, end: int) -> None:
        on_press, unpack = self._on_press, _KEY.unpack_from
        assert on_press is not None
        for offset in range(start, end - EVENT_SIZE + 1, EVENT_SIZE):
            if data[offset] & 0x7F == KEY_PRESS:
                on_press(data[offset + 1] | unpack(data, offset)[0] << 8)

    def stop_keyboard(self) -> None:
        """Stop recording keys; no callback after this returns."""
        if self._keyboard is not None:
            self._keyboard.stop()
            self._keyboard = None

    # -- pointer

    def start_mouse(
        self, on_move: MoveCallback, on_click: ClickCallback, on_scroll: ScrollCallback
    ) -> None:
        """Record button presses and releases and pointer motion."""
        if self._mouse is None:
            self._on_move, self._on_click, self._on_scroll = on_move, on_click, on_scroll
            self._mouse = _Recording(
                self._connect(), BUTTON_PRESS, MOTION_NOTIFY, self._pointer, "hearth-mouse"
            )

    def _pointer(self, data: bytes, start: int, end: int) -> None:
        on_move, on_click, on_scroll = self._on_move, self._on_click, self._on_scroll
        assert on_move is not None and on_click is not None and on_scroll is not None
        unpack = _POINTER.unpack_from
        moved: tuple[int, int] | None = None
        for offset in range(start, end - EVENT_SIZE + 1, EVENT_SIZE):
            kind, detail, x, y = unpack(data, offset)
            kind &= 0x7F
            if kind == MOTION_NOTIFY:
                moved = (x, y)  # only the latest position of one read matters
                continue
            if moved is not None:
                on_move(*moved)
                moved = None
            if detail in _BUTTONS:
                on_click(x, y, detail, kind == BUTTON_PRESS)
            elif kind == BUTTON_PRESS and detail in _SCROLLS:
                dx, dy = _SCROLLS[detail]
                on_scroll(x, y, dx, dy)
        if moved is not None:
            on_move(*moved)

    def stop_mouse(self) -> None:
        """Stop recording the pointer; no callback after this returns."""
        if self._mouse is not None:
            self._mouse.stop()
            self._mouse = None

    # -- what the writer asks

    def raw_key(self, key: Any) -> RawKey:
        """The code a keyboard callback received, as a ``RawKey`` (with the modifiers held)."""
        return self.keymap.raw_key(int(key))

    def button(self, button: Any) -> Button | None:
        """X button numbers 1, 2, 3; others are ignored."""
        return _BUTTONS.get(int(button))

    def bounds(self) -> ScreenBounds:
        """The root window: the whole virtual screen."""
        return self._bounds
