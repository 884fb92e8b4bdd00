"""macOS focus backend: NSWorkspace's frontmost app and Carbon's secure event input.

This cannot run on the Linux machines hearth is developed on; its tests replace
the two OS entry points (``frontmost`` and ``secure_input_enabled``) with mocks.
Secure event input is what macOS turns on while a password field has focus (and
what Terminal's "Secure Keyboard Entry" turns on): while it is on, no key is kept.
The window title needs the screen-recording permission; without it the hint is
the app's name alone.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import Any, Final

from client.recording.capture.focus import WindowInfo, identify, looks_like_secure_prompt

CARBON: Final = "/System/Library/Frameworks/Carbon.framework/Carbon"
# Bundle ids of common apps to the names ``identify`` knows.
BUNDLE_IDS: Final[Mapping[str, str]] = {
    "com.microsoft.vscode": "code",
    "com.apple.terminal": "gnome-terminal",
    "com.googlecode.iterm2": "iterm2",
    "org.mozilla.firefox": "firefox",
    "com.google.chrome": "chrome",
    "com.apple.safari": "safari",
    "com.microsoft.edgemac": "msedge",
    "com.apple.mail": "thunderbird",
    "com.microsoft.outlook": "outlook",
    "com.tinyspeck.slackmacgap": "slack",
    "com.hnc.discord": "discord",
    "org.whispersystems.signal-desktop": "signal",
    "com.microsoft.teams2": "teams",
    "com.microsoft.teams": "teams",
    "com.figma.desktop": "figma",
    "us.zoom.xos": "zoom",
    "com.apple.finder": "finder",
    "com.1password.1password": "1password",
    "com.agilebits.onepassword7": "1password",
    "org.keepassxc.keepassxc": "keepassxc",
    "com.bitwarden.desktop": "bitwarden",
    "com.apple.keychainaccess": "keepassxc",
    "com.apple.securityagent": "consent",  # the system's password prompt
}

Frontmost = Callable[[], tuple[str, str, str]]  # (bundle id, app name, window title)


def _pyobjc_frontmost() -> tuple[str, str, str]:
    """The frontmost app through pyobjc (AppKit, Quartz), installed with pynput on macOS."""
    import Quartz  # type: ignore[import-not-found]  # noqa: PLC0415
    from AppKit import NSWorkspace  # type: ignore[import-not-found]  # noqa: PLC0415

    app = NSWorkspace.sharedWorkspace().frontmostApplication()
    if app is None:
        return "", "", ""
    pid = app.processIdentifier()
    title = ""
    options = Quartz.kCGWindowListOptionOnScreenOnly | Quartz.kCGWindowListExcludeDesktopElements
    for window in Quartz.CGWindowListCopyWindowInfo(options, Quartz.kCGNullWindowID) or []:
        if window.get("kCGWindowOwnerPID") == pid and window.get("kCGWindowLayer") == 0:
            title = str(window.get("kCGWindowName") or "")
            break
    return str(app.bundleIdentifier() or ""), str(app.localizedName() or ""), title


def _carbon_secure_input() -> Callable[[], bool]:
    carbon: Any = ctypes.CDLL(CARBON)
    function = carbon.IsSecureEventInputEnabled
    function.restype = ctypes.c_bool
    return lambda: bool(function())


class MacOSFocus:
    """The app in front on macOS."""

    def __init__(
        self,
        frontmost: Frontmost | None = None,
        secure_input_enabled: Callable[[], bool] | None = None,
    ) -> None:
        """Use the real OS entry points unless others are given (tests)."""
        self._frontmost = frontmost or _pyobjc_frontmost
        self._secure = secure_input_enabled or _carbon_secure_input()

    def active_window(self) -> WindowInfo | None:
        """The frontmost app, with secure event input as the password-field signal."""
        bundle, name, title = self._frontmost()
        if not bundle and not name:
            return None
        known = BUNDLE_IDS.get(bundle.lower(), "")
        app_id, category = identify(known, name, bundle.rsplit(".", 1)[-1])
        secure = self._secure() or looks_like_secure_prompt((known,), "", "")
        return WindowInfo(app_id, category, hint=f"{bundle} {name} {title}", secure_input=secure)

    def close(self) -> None:
        """Nothing to release."""
