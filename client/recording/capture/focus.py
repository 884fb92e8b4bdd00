"""Which app is in front: one small interface, one backend module per platform.

A backend reports a ``WindowInfo``: an app id and category (all that may be
stored), plus a ``hint`` (window class and title) that lives only in memory so
the sensitive-app list can spot private browser windows, and a ``secure_input``
flag for password prompts. ``open_focus_backend`` picks the platform's backend:
``focus_x11`` (tested for real on Xvfb), ``focus_macos`` and ``focus_windows``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

from policy.events import AppCategory


@dataclass(frozen=True, slots=True)
class WindowInfo:
    """The app in front. ``hint`` is never stored, logged or shown (``repr`` hides it)."""

    app_id: str
    category: AppCategory
    hint: str = field(default="", repr=False)
    secure_input: bool = False
    # Focus left this window and came back since the last look, through windows the
    # backend never identified (they may have been sensitive): callers fail closed.
    unseen_switch: bool = False
    # The window's process (X11 ``_NET_WM_PID``; 0 when unknown), for the echo probe.
    pid: int = field(default=0, repr=False)
    # The latest the window can have come to the front, on the recorder's monotonic
    # clock (X11: the server's stamp of the ``_NET_ACTIVE_WINDOW`` change, plus the
    # clock mapping's error); None when the backend cannot date the switch.
    front_since: float | None = field(default=None, repr=False)


class FocusBackend(Protocol):
    """What every platform backend offers."""

    def active_window(self) -> WindowInfo | None:
        """The app in front now, or None when no window has focus."""
        ...

    def close(self) -> None:
        """Release OS resources."""
        ...


# Window classes, process names and bundle ids to (app id, category). The app ids
# match the synthetic employees' catalogue so simulated and recorded data agree.
_APPS: Final[Mapping[str, tuple[str, AppCategory]]] = {
    "code": ("code", AppCategory.EDITOR),
    "code-oss": ("code", AppCategory.EDITOR),
    "vscodium": ("code", AppCategory.EDITOR),
    "sublime_text": ("sublime", AppCategory.EDITOR),
    "gedit": ("gedit", AppCategory.EDITOR),
    "emacs": ("emacs", AppCategory.EDITOR),
    "gvim": ("vim", AppCategory.EDITOR),
    "gnome-terminal-server": ("terminal", AppCategory.TERMINAL),
    "gnome-terminal": ("terminal", AppCategory.TERMINAL),
    "xterm": ("terminal", AppCategory.TERMINAL),
    "konsole": ("terminal", AppCategory.TERMINAL),
    "alacritty": ("terminal", AppCategory.TERMINAL),
    "kitty": ("terminal", AppCategory.TERMINAL),
    "xfce4-terminal": ("terminal", AppCategory.TERMINAL),
    "terminator": ("terminal", AppCategory.TERMINAL),
    "windowsterminal": ("terminal", AppCategory.TERMINAL),
    "iterm2": ("terminal", AppCategory.TERMINAL),
    "firefox": ("firefox", AppCategory.BROWSER),
    "navigator": ("firefox", AppCategory.BROWSER),
    "google-chrome": ("chrome", AppCategory.BROWSER),
    "chrome": ("chrome", AppCategory.BROWSER),
    "chromium": ("chromium", AppCategory.BROWSER),
    "brave-browser": ("brave", AppCategory.BROWSER),
    "msedge": ("edge", AppCategory.BROWSER),
    "microsoft-edge": ("edge", AppCategory.BROWSER),
    "safari": ("safari", AppCategory.BROWSER),
    "thunderbird": ("thunderbird", AppCategory.EMAIL),
    "evolution": ("evolution", AppCategory.EMAIL),
    "outlook": ("outlook", AppCategory.EMAIL),
    "libreoffice-writer": ("writer", AppCategory.DOCS),
    "winword": ("writer", AppCategory.DOCS),
    "libreoffice-calc": ("calc", AppCategory.SPREADSHEET),
    "excel": ("calc", AppCategory.SPREADSHEET),
    "figma-linux": ("figma", AppCategory.DESIGN),
    "figma": ("figma", AppCategory.DESIGN),
    "gimp": ("gimp", AppCategory.DESIGN),
    "inkscape": ("inkscape", AppCategory.DESIGN),
    "jira": ("jira", AppCategory.TICKETING),
    "zoom": ("zoom", AppCategory.MEETINGS),
    "nautilus": ("files", AppCategory.FILES),
    "thunar": ("files", AppCategory.FILES),
    "dolphin": ("files", AppCategory.FILES),
    "explorer": ("files", AppCategory.FILES),
    "finder": ("files", AppCategory.FILES),
    "slack": ("slack", AppCategory.CHAT),
    "discord": ("discord", AppCategory.CHAT),
    "signal": ("signal", AppCategory.CHAT),
    "telegramdesktop": ("telegram", AppCategory.CHAT),
    "telegram-desktop": ("telegram", AppCategory.CHAT),
    "element": ("element", AppCategory.CHAT),
    "teams": ("teams", AppCategory.CHAT),
    "ms-teams": ("teams", AppCategory.CHAT),
    "whatsapp": ("whatsapp", AppCategory.CHAT),
    "workday": ("workday", AppCategory.HR),
    "keepassxc": ("keepassxc", AppCategory.PASSWORD_MANAGER),
    "1password": ("1password", AppCategory.PASSWORD_MANAGER),
    "bitwarden": ("bitwarden", AppCategory.PASSWORD_MANAGER),
    "bank": ("bank", AppCategory.BANKING),
}
_PREFIXES: Final[tuple[tuple[str, tuple[str, AppCategory]], ...]] = (
    ("jetbrains-", ("jetbrains", AppCategory.EDITOR)),
    ("libreoffice", ("writer", AppCategory.DOCS)),
)
# Password prompts: keys typed there are never captured, not even as classes.
SECURE_INPUT_APPS: Final = frozenset(
    {
        "pinentry",
        "pinentry-gtk-2",
        "pinentry-gtk",
        "pinentry-gnome3",
        "pinentry-qt",
        "gcr-prompter",
        "ssh-askpass",
        "x11-ssh-askpass",
        "gnome-ssh-askpass",
        "ksshaskpass",
        "lxqt-openssh-askpass",
        "polkit-gnome-authentication-agent-1",
        "polkit-kde-authentication-agent-1",
        "polkit-mate-authentication-agent-1",
        "lxpolkit",
        "lxqt-policykit-agent",
        "kdesu",
        "gksu",
        "credentialuibroker",
        "consent",
    }
)
_SECURE_MARKERS: Final = re.compile(
    r"password|passphrase|passwort|mot de passe|contraseña|authenticat|unlock keyring|\bpin\b",
    re.IGNORECASE,
)
_UNSAFE: Final = re.compile(r"[^a-z0-9._+-]+")


def app_id_from(raw: str) -> str:
    """A stable, storable app id from a window class, process or bundle name."""
    name = raw.strip().lower().removesuffix(".exe").removesuffix(".app")
    name = _UNSAFE.sub("-", name).strip("-._+") or "unknown"
    return name[:64]


def identify(*names: str) -> tuple[str, AppCategory]:
    """(app id, category) from a window's names, most specific first."""
    ids = [app_id_from(n) for n in names if n and n.strip()]
    for app_id in ids:
        if app_id in _APPS:
            return _APPS[app_id]
    for app_id in ids:
        for prefix, known in _PREFIXES:
            if app_id.startswith(prefix):
                return known
    return (ids[0] if ids else "unknown"), AppCategory.OTHER


def looks_like_secure_prompt(app_ids: tuple[str, ...], role: str = "", title: str = "") -> bool:
    """Password and authentication prompts, by window class, role or title (in memory)."""
    if any(app_id_from(a) in SECURE_INPUT_APPS for a in app_ids if a):
        return True
    return bool(_SECURE_MARKERS.search(role) or _SECURE_MARKERS.search(title))


class NoDisplayError(RuntimeError):
    """No session to watch (e.g. no X display); the message says what is missing."""


def open_focus_backend() -> FocusBackend:
    """The backend for this platform."""
    if sys.platform == "darwin":
        from client.recording.capture.focus_macos import MacOSFocus  # noqa: PLC0415

        return MacOSFocus()
    if sys.platform == "win32":
        from client.recording.capture.focus_windows import WindowsFocus  # noqa: PLC0415

        return WindowsFocus()
    from client.recording.capture.focus_x11 import X11Focus  # noqa: PLC0415

    return X11Focus()
