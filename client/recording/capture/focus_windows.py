"""Windows focus backend: the foreground window through user32, its process by psutil.

This cannot run on the Linux machines hearth is developed on; its tests pass a
mock ``user32`` with the same functions. Windows has no system-wide secure-input
flag, so password prompts are recognized by the credential dialog's window class,
the UAC consent process, or the title (read in memory only, never stored).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, Final

from client.recording.capture.focus import WindowInfo, identify, looks_like_secure_prompt

# Window classes of Windows' own credential prompts.
SECURE_CLASSES: Final = frozenset({"credential dialog xaml host", "#32770 credui"})
_TEXT_LIMIT: Final = 512


def _process_name(pid: int) -> str:
    import psutil  # noqa: PLC0415

    try:
        return str(psutil.Process(pid).name())
    except (psutil.Error, ValueError):
        return ""


class WindowsFocus:
    """The app in front on Windows."""

    def __init__(
        self, user32: Any | None = None, process_name: Callable[[int], str] | None = None
    ) -> None:
        """Use the real user32 unless another is given (tests)."""
        self._user32 = user32 if user32 is not None else ctypes.WinDLL("user32")  # type: ignore[attr-defined, unused-ignore]
        self._process_name = process_name or _process_name

    def _text(self, function: Any, hwnd: int) -> str:
        buffer = ctypes.create_unicode_buffer(_TEXT_LIMIT)
        function(hwnd, buffer, _TEXT_LIMIT)
        return buffer.value

    def active_window(self) -> WindowInfo | None:
        """The foreground window's process as the app; None when nothing is in front."""
        hwnd = self._user32.GetForegroundWindow()
        if not hwnd:
            return None
        pid = ctypes.c_ulong(0)
        self._user32.GetWindowThreadProcessId(hwnd, ctypes.byref(pid))
        exe = self._process_name(int(pid.value))
        klass = self._text(self._user32.GetClassNameW, hwnd)
        title = self._text(self._user32.GetWindowTextW, hwnd)
        app_id, category = identify(exe)
        secure = klass.lower() in SECURE_CLASSES or looks_like_secure_prompt((exe,), "", title)
        return WindowInfo(app_id, category, hint=f"{exe} {klass} {title}", secure_input=secure)

    def close(self) -> None:
        """Nothing to release."""
