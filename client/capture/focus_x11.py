"""X11 focus backend: ``_NET_ACTIVE_WINDOW`` and ``WM_CLASS`` through python-xlib.

Each call asks the X server (a round trip, so it reflects every focus change the
server processed before it); window classes and roles are cached per window.
The title is read for the private-browsing and password-prompt checks and then
dropped: it only ever reaches ``WindowInfo.hint``, which is never stored.
"""

from __future__ import annotations

import os
from typing import Any

from client.capture.focus import NoDisplayError, WindowInfo, identify, looks_like_secure_prompt

_CACHE_LIMIT = 256


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
        self._classes: dict[int, tuple[str, str, str]] = {}

    def _text_property(self, window: Any, atom: int, kind: int) -> str:
        prop = window.get_full_property(atom, kind)
        if prop is None or not prop.value:
            return ""
        value = prop.value
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    def _class_of(self, window: Any, wid: int) -> tuple[str, str, str]:
        cached = self._classes.get(wid)
        if cached is None:
            wm_class = window.get_wm_class() or ("", "")
            role = self._text_property(window, self._role, self._any)
            cached = (wm_class[0] or "", wm_class[1] or "", role)
            if len(self._classes) >= _CACHE_LIMIT:
                self._classes.clear()
            self._classes[wid] = cached
        return cached

    def active_window(self) -> WindowInfo | None:
        """The focused client window, or None (no window, or it just closed)."""
        prop = self._root.get_full_property(self._active, self._any)
        if prop is None or not len(prop.value) or not prop.value[0]:
            return None
        wid = int(prop.value[0])
        window = self._display.create_resource_object("window", wid)
        try:
            instance, klass, role = self._class_of(window, wid)
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
        )

    def close(self) -> None:
        """Close the X connection."""
        self._display.close()
