"""The sensitive-app and sensitive-site lists: the policy's plus the employee's additions.

The privacy team ships both lists in the policy; an employee may add to them (never
remove from them) from the CLI or the dashboard. Additions live in one small file
under ``HEARTH_HOME`` that a running recorder re-reads when it changes, so an
added app or site is suppressed at once, without a restart.

Apps are matched by app id and category. Sites (``workday``, ``web.whatsapp.com``,
``bank``...) are matched in the window title at capture time, in memory: a
browser's app id is the browser's whatever tab is open, so the title is the only
thing that tells a bank tab from a wiki. The title is never stored, logged or
shown; only the resulting "suppressed" gap is kept.
"""

from __future__ import annotations

import json
import logging
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from policy.events import AppCategory
from privacy.policy import PrivacyPolicy

_log = logging.getLogger(__name__)

SENSITIVE_FILE: Final = "sensitive_apps.json"
_APP_ID: Final = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")
# Window classes and titles of private browsing are matched by these markers,
# since the app id of a private window is the browser's own.
PRIVATE_WINDOW_MARKERS: Final = ("incognito", "private browsing", "inprivate", "private window")
_SITE_LENGTH: Final = range(2, 65)
_SITE_EXAMPLE: Final = "(e.g. workday or web.whatsapp.com)"


class SensitiveAppError(ValueError):
    """An app id cannot be added; the message says what a valid one looks like."""


def normalize_app_id(name: str) -> str:
    """Lower-case and validate an app id (a WM_CLASS or bundle-like name)."""
    app_id = name.strip().lower()
    if not _APP_ID.match(app_id):
        raise SensitiveAppError(
            f"{name!r} is not an app id; use letters, digits, '.', '_', '+' or '-' "
            "(e.g. slack or org.keepassxc.keepassxc)"
        )
    return app_id


def normalize_site(name: str) -> str:
    """Case-fold and validate a site (a domain or a name found in window titles).

    Control and format characters (newlines, DEL, bidi overrides) are refused, not
    cleaned: the list is shown to the employee as typed. The error never repeats the
    input, since a site can be personal.
    """
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise SensitiveAppError(
            f"that is not a site: it holds a control or invisible character; type the "
            f"domain or name on one line {_SITE_EXAMPLE}"
        )
    site = " ".join(name.split()).casefold()
    if len(site) not in _SITE_LENGTH:
        raise SensitiveAppError(
            f"that is not a site: give a domain or a name of 2 to 64 characters {_SITE_EXAMPLE}"
        )
    return site


def sensitive_path(home: Path) -> Path:
    """Where the employee's additions live."""
    return home / SENSITIVE_FILE


def _load(home: Path, key: str, normalize: Callable[[str], str]) -> tuple[str, ...]:
    """The entries of one list; a bad entry is skipped, never the whole list with it.

    Dropping every addition because one is damaged would quietly stop protecting
    the employee's other sites and apps.
    """
    try:
        data = json.loads(sensitive_path(home).read_text())
        entries = data.get(key, [])
    except FileNotFoundError:
        return ()
    except (OSError, ValueError, AttributeError) as exc:
        _log.warning(
            "the sensitive apps file cannot be read (%s): only the policy's lists hold",
            type(exc).__name__,
        )
        return ()
    kept: set[str] = set()
    skipped = 0
    for entry in entries if isinstance(entries, list) else ():
        try:
            kept.add(normalize(str(entry)))
        except ValueError:
            skipped += 1
    if skipped:
        _log.warning("%d damaged entries skipped in the sensitive apps file", skipped)
    return tuple(sorted(kept))


def load_additions(home: Path) -> tuple[str, ...]:
    """The employee's added apps; a damaged file reads as none (the policy list still holds)."""
    return _load(home, "apps", normalize_app_id)


def load_site_additions(home: Path) -> tuple[str, ...]:
    """The employee's added sites; a damaged file reads as none."""
    return _load(home, "sites", normalize_site)


def _write_additions(
    home: Path, apps: tuple[str, ...], sites: tuple[str, ...] | None = None
) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    sites = load_site_additions(home) if sites is None else sites
    path = sensitive_path(home)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"apps": list(apps), "sites": list(sites)}, handle)
    tmp.replace(path)  # atomic: a watching recorder never reads half a file


def add_app(home: Path, name: str) -> tuple[str, ...]:
    """Add ``name`` to the employee's list; returns the additions."""
    app_id = normalize_app_id(name)
    apps = tuple(sorted({*load_additions(home), app_id}))
    _write_additions(home, apps)
    return apps


def remove_app(home: Path, name: str) -> tuple[str, ...]:
    """Remove one of the employee's own additions (the policy's entries stay)."""
    app_id = normalize_app_id(name)
    apps = tuple(a for a in load_additions(home) if a != app_id)
    _write_additions(home, apps)
    return apps


def add_site(home: Path, name: str) -> tuple[str, ...]:
    """Add a site to the employee's list; returns the added sites."""
    site = normalize_site(name)
    sites = tuple(sorted({*load_site_additions(home), site}))
    _write_additions(home, load_additions(home), sites)
    return sites


def remove_site(home: Path, name: str) -> tuple[str, ...]:
    """Remove one of the employee's own sites (the policy's entries stay)."""
    site = normalize_site(name)
    sites = tuple(s for s in load_site_additions(home) if s != site)
    _write_additions(home, load_additions(home), sites)
    return sites


@dataclass(frozen=True)
class SensitiveApps:
    """Which apps and categories suppress capture while in front."""

    apps: frozenset[str]
    categories: frozenset[AppCategory]
    added_by_employee: frozenset[str] = field(default_factory=frozenset)
    sites: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_policy(cls, policy: PrivacyPolicy, home: Path | None = None) -> SensitiveApps:
        """The policy's lists, plus the employee's additions under ``home``."""
        additions = frozenset(load_additions(home)) if home is not None else frozenset()
        sites = frozenset(load_site_additions(home)) if home is not None else frozenset()
        return cls(
            apps=frozenset(policy.data.sensitive_apps) | additions,
            categories=frozenset(policy.data.sensitive_categories),
            added_by_employee=additions,
            # casefold, as titles are: "ß" in a policy site must match a title's "ss"
            sites=frozenset(s.casefold() for s in policy.data.sensitive_sites) | sites,
        )

    def is_sensitive(
        self, app_id: str, category: AppCategory, window_hint: str | None = None
    ) -> bool:
        """True when capture must be suppressed for this app.

        ``window_hint`` is the raw WM_CLASS and title, used only here, in memory, to
        spot private browser windows and sensitive sites; it is never stored.
        """
        app = app_id.lower()
        if category in self.categories or app in self.apps:
            return True
        if any(entry in app for entry in self.apps if len(entry) >= 4):
            return True  # "bank" covers "mybank-desktop"
        hint = " ".join((window_hint or "").split()).casefold()
        if any(marker in hint for marker in PRIVATE_WINDOW_MARKERS):
            return True
        return any(_names(site, hint) for site in self.sites)


def _names(site: str, title: str) -> bool:
    """Whether ``title`` names ``site``.

    Anywhere for 4+ characters ("bank" covers "Online-Banking"), as a whole word
    for shorter ones ("n26", not "main26.py").
    """
    if len(site) >= 4:
        return site in title
    return re.search(rf"(?<![\w]){re.escape(site)}(?![\w])", title) is not None


class SensitiveAppsWatcher:
    """Re-reads the employee's additions when the file changes (cheap ``stat`` per call)."""

    def __init__(self, policy: PrivacyPolicy, home: Path) -> None:
        """Start from the policy's list and the additions on disk."""
        self._policy = policy
        self._home = home
        self._mtime: float | None = None
        self._current = SensitiveApps.from_policy(policy, home)
        self._mtime = self._stat()

    def _stat(self) -> float | None:
        try:
            return sensitive_path(self._home).stat().st_mtime_ns / 1e9
        except OSError:
            return None

    def current(self) -> SensitiveApps:
        """The list in force now."""
        mtime = self._stat()
        if mtime != self._mtime:
            self._mtime = mtime
            self._current = SensitiveApps.from_policy(self._policy, self._home)
        return self._current
