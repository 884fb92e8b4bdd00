"""X11 focus backend: ``_NET_ACTIVE_WINDOW`` and ``WM_CLASS`` through python-xlib.

Event driven: a second connection (``FocusWatch``) selects ``PropertyNotify`` on
the root window and on the active window, and its socket is read by hand. Each
``active_window`` call makes one bare round trip on it (``GetInputFocus``: 4
bytes out, 32 back), so every property change the server processed before the
call has arrived; only when ``_NET_ACTIVE_WINDOW`` or the active window's class,
role or title changed are the properties read again. Without the watch (it
failed to start, or broke) every call reads them, as a plain poll.

When ``_NET_ACTIVE_WINDOW`` changed since the last call yet the same window is in
front, focus went elsewhere and came back unseen: the result says so
(``WindowInfo.unseen_switch``) and the recorder fails closed.

Each ``PropertyNotify`` carries the server's time: the last change of
``_NET_ACTIVE_WINDOW`` dates when the window in front got there
(``WindowInfo.front_since``), once ``server_time`` maps server time to ours (the
X input source measures that mapping; ``hearth record`` links the two). The
recorder then knows when a sensitive app left the front, not only that it had
by the next look.

Window classes and roles are cached per window. The title is read for the
private-browsing, sensitive-site and password-prompt checks and then dropped: it
only ever reaches ``WindowInfo.hint``, which is never stored.

While a terminal is in front, every look also asks ``terminal_echo`` whether one of
its pseudo-terminals has echo off in canonical mode (a password prompt): the
window's process comes from ``_NET_WM_PID``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from client.recording.capture.focus import (
    NoDisplayError,
    WindowInfo,
    identify,
    looks_like_secure_prompt,
)
from client.recording.capture.terminal_echo import EchoOffProbe
from policy.events import AppCategory

_log = logging.getLogger(__name__)
_CACHE_LIMIT = 256
_PROPERTY_NOTIFY: Final = 28
_GENERIC_EVENT: Final = 35
_PROPERTY_CHANGE_MASK: Final = 0x400000
_CW_EVENT_MASK: Final = 0x800
_GET_INPUT_FOCUS: Final = struct.pack("=BxH", 43, 1)
_PACKET = struct.Struct("=BBHI")  # type, detail, sequence, length (replies, generic events)
_PROPERTY = struct.Struct("=4xIII")  # window, atom, time (server ms)
_UNKNOWN: Final = object()


class FocusWatch:
    """Property changes on the root and the active window, read off a raw X connection."""

    def __init__(self, display: Any, root: int, active_atom: int, window_atoms: set[int]) -> None:
        """Take over ``display`` (its own connection): select, sync, then read it by hand."""
        from Xlib import X  # noqa: PLC0415

        display.screen().root.change_attributes(event_mask=X.PropertyChangeMask)
        display.sync()
        self._display = display
        self._socket: socket.socket = display.display.socket
        self._socket.settimeout(2.0)
        self._root = root
        self._active_atom = active_atom
        self._window_atoms = frozenset(window_atoms)
        self._window = 0
        self._pending = b""
        self.dirty = True
        self.switched = False  # _NET_ACTIVE_WINDOW itself changed (not just a title)
        self.switched_ms: int | None = None  # the server's time of the last such change

    def _select(self, window: int, mask: int) -> None:
        self._socket.sendall(
            struct.pack("=BxHIII", 2, 4, window, _CW_EVENT_MASK, mask)  # ChangeWindowAttributes
        )

    def follow(self, window: int) -> None:
        """Watch ``window``'s class, role and title from now on (and stop watching the last)."""
        if window == self._window:
            return
        if self._window:
            self._select(self._window, 0)
        if window:
            self._select(window, _PROPERTY_CHANGE_MASK)
        self._window = window
        self._round_trip()  # selected before anyone reads its properties

    def changed(self) -> bool:
        """Whether focus, or the active window's names, changed since the last call."""
        self._round_trip()
        dirty, self.dirty = self.dirty, False
        return dirty

    def _round_trip(self) -> None:
        self._socket.sendall(_GET_INPUT_FOCUS)
        while not self._read():
            pass

    def _read(self) -> bool:
        """Read once and take in every complete packet; True once the sync reply came."""
        chunk = self._socket.recv(4096)
        if not chunk:
            raise ConnectionError("the X server closed the focus watch")
        data = self._pending + chunk if self._pending else chunk
        offset, size, replied = 0, len(data), False
        while size - offset >= 32:
            kind, _, _, length = _PACKET.unpack_from(data, offset)
            end = offset + 32 + (4 * length if kind in (1, _GENERIC_EVENT) else 0)
            if end > size:
                break
            kind &= 0x7F
            if kind == 1:
                replied = True
            elif kind == _PROPERTY_NOTIFY:
                window, atom, server_ms = _PROPERTY.unpack_from(data, offset)
                if window == self._root and atom == self._active_atom:
                    self.dirty = self.switched = True
                    self.switched_ms = server_ms
                elif window == self._window and atom in self._window_atoms:
                    self.dirty = True
            # errors (kind 0), e.g. selecting on a window that just closed: nothing to do
            offset = end
        self._pending = data[offset:]
        return replied

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self._display.close()


class X11Focus:
    """The app in front on an X11 display with an EWMH window manager."""

    def __init__(self, display_name: str | None = None) -> None:
        """Connect to ``display_name`` (default: ``$DISPLAY``)."""
        from Xlib import X, display, error  # noqa: PLC0415 - needs an X server

        name = display_name or os.environ.get("DISPLAY")
        if not name:
            raise NoDisplayError("no X display: DISPLAY is not set")
        try:
            self._display: Any = display.Display(name)
        except (error.DisplayError, error.ConnectionClosedError) as exc:
            raise NoDisplayError(f"cannot open the X display {name}: {exc}") from None
        self._any = X.AnyPropertyType
        self._errors: tuple[type[Exception], ...] = (error.XError, error.BadWindow)
        self._root = self._display.screen().root
        intern = self._display.intern_atom
        self._active = intern("_NET_ACTIVE_WINDOW")
        self._net_name = intern("_NET_WM_NAME")
        self._utf8 = intern("UTF8_STRING")
        self._role = intern("WM_WINDOW_ROLE")
        self._pid_atom = intern("_NET_WM_PID")
        self._cardinal = X.AnyPropertyType
        self._echo = EchoOffProbe()
        self._classes: dict[int, tuple[str, str, str, int]] = {}
        self._last: Any = _UNKNOWN
        self._last_wid = 0
        self._front_ms: int | None = None  # server time the window in front got there
        # Maps a server time to the latest our clock can have read then (None: unknown).
        self.server_time: Callable[[int], float | None] | None = None
        self._watch: FocusWatch | None = None
        try:
            names = {intern(a) for a in ("WM_CLASS", "WM_NAME", "WM_WINDOW_ROLE")}
            self._watch = FocusWatch(
                display.Display(name), self._root.id, self._active, {*names, self._net_name}
            )
        except Exception as exc:  # polling still works
            _log.warning("focus changes not watched (polling): %s", type(exc).__name__)

    def _text_property(self, window: Any, atom: int, kind: int) -> str:
        prop = window.get_full_property(atom, kind)
        if prop is None or not prop.value:
            return ""
        value = prop.value
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def _class_of(self, window: Any, wid: int) -> tuple[str, str, str, int]:
        cached = self._classes.get(wid)
        if cached is None:
            wm_class = window.get_wm_class() or ("", "")
            role = self._text_property(window, self._role, self._any)
            prop = window.get_full_property(self._pid_atom, self._cardinal)
            pid = int(prop.value[0]) if prop is not None and len(prop.value) else 0
            cached = (wm_class[0] or "", wm_class[1] or "", role, pid)
            if len(self._classes) >= _CACHE_LIMIT:
                self._classes.clear()
            self._classes[wid] = cached
        return cached

    def active_window(self) -> WindowInfo | None:
        """The focused client window, or None (no window, or it just closed)."""
        info = self._active_window()
        if (
            info is not None
            and info.category is AppCategory.TERMINAL
            and not info.secure_input
            and self._echo.password_prompt(info.pid)
        ):
            return replace(info, secure_input=True)
        return info

    def _active_window(self) -> WindowInfo | None:
        watch = self._watch
        switched = False
        if watch is not None:
            try:
                changed = watch.changed()
                switched, watch.switched = watch.switched, False
                if switched:
                    self._front_ms = watch.switched_ms
                if not changed and self._last is not _UNKNOWN:
                    return self._last  # type: ignore[no-any-return]
            except OSError as exc:
                _log.warning("focus watch lost (polling now): %s", type(exc).__name__)
                watch.close()
                self._watch = watch = None
                self._front_ms = None
        previous = self._last_wid
        self._last = _UNKNOWN
        info = self._read()
        if watch is not None:
            self._last = info
        if info is not None and switched and self._last_wid == previous:
            # The active window changed, yet the same one is in front: focus went
            # somewhere and came back between two looks.
            return replace(info, unseen_switch=True)
        return info

    def _read(self) -> WindowInfo | None:
        prop = self._root.get_full_property(self._active, self._any)
        if prop is None or not len(prop.value) or not prop.value[0]:
            self._last_wid = 0
            if self._watch is not None:
                self._watch.follow(0)
            return None
        wid = self._last_wid = int(prop.value[0])
        if self._watch is not None:
            self._watch.follow(wid)
        window = self._display.create_resource_object("window", wid)
        try:
            instance, klass, role, pid = self._class_of(window, wid)
            title = self._text_property(window, self._net_name, self._utf8)
            if not title:
                title = window.get_wm_name() or ""
                title = title.decode("utf-8", "replace") if isinstance(title, bytes) else title
        except self._errors:
            self._classes.pop(wid, None)
            return None
        app_id, category = identify(klass, instance)
        return WindowInfo(
            app_id=app_id,
            category=category,
            hint=f"{instance} {klass} {title}",
            secure_input=looks_like_secure_prompt((instance, klass), role, title),
            pid=pid,
            front_since=self._front_since(),
        )

    def _front_since(self) -> float | None:
        """When the window in front got there, on our clock (watched and mapped only).

        ``_front_ms`` is set only from the watch, and cleared when it is lost.
        """
        server_ms, to_local = self._front_ms, self.server_time
        if server_ms is None or to_local is None:
            return None
        return to_local(server_ms)

    def close(self) -> None:
        """Close the X connections."""
        if self._watch is not None:
            self._watch.close()
        self._display.close()
