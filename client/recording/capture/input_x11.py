"""X11 input through the RECORD extension, decoded with ``struct``, read by the writer.

pynput listens the same way (XRecord through python-xlib) but parses every
event into python-xlib objects, keeps a second connection per listener and a
thread that wakes for every event. Here one RECORD context on one X connection
covers what is consented to (key presses, the pointer, or both): python-xlib
opens it, reads the keyboard and modifier mappings and creates the context;
after that the socket is non-blocking and the recorder's writer reads it at
each tick (``poll``), decoding each 32-byte core event with ``struct``. No thread
wakes per key.

Every event is stamped with the X server's time in it (bytes 4..8), mapped to
the recorder's clock by ``client.recording.capture.x11_time`` (measured at start
and every ``RECALIBRATE`` seconds): a key is placed where it was typed, not when
it was read, so the focus judge weighs it against the looks around its typing
(``FocusJudge.judge_span``), with the mapping's error as a margin. One context
means one stream in the server's order: keys stay in order with clicks.

* keys: only ``KeyPress`` is recorded. The modifiers held come from the event's
  ``state`` field, so releases are not needed (half the X traffic of pynput).
  The callback receives ``keycode | state << 8``; ``raw_key`` turns that into a
  ``RawKey`` on the writer thread, through the keyboard mapping read at start
  (``client.recording.capture.x11_keymap``, cached per code).
* pointer: button presses and releases (left, middle, right), wheel presses as
  scrolls, and motion, of which only the last one before another event of a
  read is passed on.

Stopping closes the connection; the X server frees the context with it, and
what was not read is dropped (a pause drops it anyway). A changed keyboard
layout is picked up when the keyboard restarts (pause and resume).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
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
from client.recording.capture.x11_time import ServerClock, ServerClockProbe
from policy.events import Button

_log = logging.getLogger(__name__)

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
# type, detail, time (server ms), root x, root y, state
_EVENT = struct.Struct("=BB2xI12xhh4xH2x")
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
    """One RECORD context on its own connection; its socket is read by ``read``, no thread."""

    def __init__(self, display: Any, ranges: list[tuple[int, int]]) -> None:
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
                    "device_events": device,
                    "errors": (0, 0),
                    "client_started": False,
                    "client_died": False,
                }
                for device in ranges
            ],
        )
        display.sync()  # the context exists; nothing of python-xlib's is left unread
        opcode = display.display.get_extension_major("RECORD")
        self._socket: socket.socket = display.display.socket
        self._socket.sendall(struct.pack("=BBHI", opcode, _RECORD_ENABLE_CONTEXT, 2, context))
        self._socket.setblocking(False)
        self._pending = b""
        self.live = True

    def read(self) -> tuple[bytes, list[tuple[int, int]]]:
        """Everything the server sent since the last read: the data, and its event spans."""
        chunks: list[bytes] = [self._pending] if self._pending else []
        recv = self._socket.recv
        try:
            while True:
                chunk = recv(65536)
                if not chunk:
                    self.live = False
                    break
                chunks.append(chunk)
                if len(chunk) < 65536:
                    break
        except BlockingIOError:
            pass
        except OSError:
            self.live = False
        data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        try:
            replies, used = iter_replies(data)
        except XRecordError:
            self.live = False
            return b"", []
        self._pending = data[used:]
        spans: list[tuple[int, int]] = []
        for category, start, end in replies:
            if category == END_OF_DATA:
                self.live = False
                break
            if category == FROM_SERVER and end > start:
                spans.append((start, end))
        return data, spans

    def stop(self) -> None:
        self.live = False
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):  # the socket is already shut down
            self._display.close()


class XRecordSource:
    """An ``InputSource`` for X11: one RECORD context, read by the writer (``poll``).

    Its callbacks take the event's time first (``InputQueue.press_at`` and the
    like): ``Listeners`` hands those over when a source has ``poll``.
    """

    RECALIBRATE: Final = 60.0  # seconds between measurements of the server's clock

    def __init__(
        self, display_name: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Check that the display has RECORD; nothing is recorded until a start method."""
        self._name = display_name or os.environ.get("DISPLAY") or ""
        self._clock = clock
        display = self._connect()
        try:
            if not display.has_extension("RECORD"):
                raise XRecordError(f"the X display {self._name} has no RECORD extension")
            screen = display.screen()
            self._bounds = ScreenBounds(0, 0, screen.width_in_pixels, screen.height_in_pixels)
            self.keymap = self._keymap(display)
        finally:
            display.close()
        self._recording: _Recording | None = None
        self._probe: ServerClockProbe | None = None
        self._server: ServerClock | None = None
        self._measured = float("-inf")
        self._keys_on = self._pointer_on = False
        self._lost = False  # the connection broke and could not be reopened yet
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

    def _restart(self) -> None:
        """One context for what is on now (the old one's unread input is dropped)."""
        self._lost = False
        if self._recording is not None:
            self._recording.stop()
            self._recording = None
        ranges = ([(KEY_PRESS, KEY_PRESS)] if self._keys_on else []) + (
            [(BUTTON_PRESS, MOTION_NOTIFY)] if self._pointer_on else []
        )
        if not ranges:
            if self._probe is not None:
                self._probe.close()
                self._probe = self._server = None
            return
        display = self._connect()
        if self._keys_on:
            self.keymap = self._keymap(display)  # the layout as it is now
        if self._probe is None:
            self._probe = ServerClockProbe(self._connect(), self._clock)
            self._calibrate()
        self._recording = _Recording(display, ranges)

    def _calibrate(self) -> None:
        assert self._probe is not None
        self._server = self._probe.measure()
        self._measured = self._clock()

    @property
    def time_error(self) -> float:
        """How far a mapped event time may be off (seconds)."""
        return self._server.error if self._server is not None else 0.0

    def latest_local_time(self, server_ms: int) -> float | None:
        """The latest our clock can have read at server time ``server_ms``; None unmeasured.

        The focus backend dates a window switch with it (``WindowInfo.front_since``):
        the upper end of the error keeps input typed just before the switch on the
        side of the window it was typed into.
        """
        server = self._server
        return None if server is None else server.to_local(server_ms) + server.error

    # -- keyboard

    def start_keyboard(self, on_press: KeyCallback, on_release: KeyCallback) -> None:
        """Record key presses (releases are not needed: presses carry the modifier state).

        ``on_press(t, code)``: ``t`` is when the key was typed, on the recorder's clock.
        """
        if not self._keys_on:
            self._on_press, self._keys_on = on_press, True
            self._restart()

    def stop_keyboard(self) -> None:
        """Stop recording keys; nothing more reaches the callback."""
        if self._keys_on:
            self._keys_on = False
            self._restart()

    # -- pointer

    def start_mouse(
        self, on_move: MoveCallback, on_click: ClickCallback, on_scroll: ScrollCallback
    ) -> None:
        """Record button presses and releases and pointer motion (time first, as keys)."""
        if not self._pointer_on:
            self._on_move, self._on_click, self._on_scroll = on_move, on_click, on_scroll
            self._pointer_on = True
            self._restart()

    def stop_mouse(self) -> None:
        """Stop recording the pointer."""
        if self._pointer_on:
            self._pointer_on = False
            self._restart()

    # -- the writer's read

    def poll(self) -> int:
        """Read what arrived and pass each event on, in the server's order; how many bytes.

        A connection the server closed is reopened (its unread input is lost).
        """
        recording = self._recording
        now = self._clock()
        if recording is None:
            if self._lost and now - self._measured >= self.RECALIBRATE:
                self._measured = now
                try:
                    self._restart()
                except Exception:  # still gone
                    self._lost = True
            return 0
        if now - self._measured >= self.RECALIBRATE:
            try:
                self._calibrate()
            except Exception as exc:  # keep the last measurement
                self._measured = now
                _log.warning("X server clock not measured: %s", type(exc).__name__)
        data, spans = recording.read()
        for start, end in spans:
            self._dispatch(data, start, end, now)
        if not recording.live:
            _log.warning("X RECORD connection lost; reopening it")
            try:
                self._restart()
            except Exception as exc:  # the X server is gone: retried at the next measurement
                self._recording = None
                self._lost = True
                _log.warning("X RECORD not reopened: %s", type(exc).__name__)
        return len(data)

    def _dispatch(self, data: bytes, start: int, end: int, now: float) -> None:
        """Decode core events ``data[start:end]``; none is later than ``now`` (read by then)."""
        server = self._server
        assert server is not None
        to_local, unpack = server.to_local, _EVENT.unpack_from
        on_press, on_move = self._on_press, self._on_move
        moved: tuple[float, int, int] | None = None
        for offset in range(start, end - EVENT_SIZE + 1, EVENT_SIZE):
            kind, detail, server_ms, x, y, state = unpack(data, offset)
            kind &= 0x7F
            t = min(to_local(server_ms), now)
            if kind == MOTION_NOTIFY:
                moved = (t, x, y)  # only the latest position before another event matters
                continue
            if moved is not None and on_move is not None:
                on_move(*moved)
                moved = None
            if kind == KEY_PRESS:
                if on_press is not None:
                    on_press(t, detail | state << 8)
            elif kind in (BUTTON_PRESS, BUTTON_RELEASE):
                self._button(t, kind, detail, x, y)
        if moved is not None and on_move is not None:
            on_move(*moved)

    def _button(self, t: float, kind: int, detail: int, x: int, y: int) -> None:
        if detail in _BUTTONS:
            if self._on_click is not None:
                self._on_click(t, x, y, detail, kind == BUTTON_PRESS)
        elif kind == BUTTON_PRESS and detail in _SCROLLS and self._on_scroll is not None:
            dx, dy = _SCROLLS[detail]
            self._on_scroll(t, x, y, dx, dy)

    def close(self) -> None:
        """Stop everything (also what ``stop_keyboard`` and ``stop_mouse`` together do)."""
        self._keys_on = self._pointer_on = False
        self._restart()

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
