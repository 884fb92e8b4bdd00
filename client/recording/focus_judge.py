"""Which app is in front, and whether what was typed around a check may be kept.

Input stamped between two focus checks is judged by both (and by a short tail
after a sensitive app or a password prompt was last seen), so nothing typed in
a sensitive app slips through a race. Input is judged by its own time, however
late it is read: the judge keeps the times of its recent looks (``HISTORY``
seconds) and the last look that saw a sensitive app or a prompt, so a key is
weighed against the look before it was typed and every look since
(``judge_span``). Where the backend dates window switches
(``WindowInfo.front_since``), a sensitive app or a prompt is known to have left the
front when the window now in front got there, so input typed a tail after that is
kept even before a look has seen the new window. A key older than the looks kept
is dropped (fails closed). The
judge also keeps the times until which suppression lasts, and where the gaps
(``Suppressed``) began. An unknown focus (the backend failed) suppresses
everything: it fails closed.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from typing import Final

from client.control.sensitive_apps import SensitiveApps
from client.recording.capture.focus import FocusBackend, WindowInfo
from client.recording.clock import Clock
from policy.events import Suppressed

_log = logging.getLogger(__name__)
PASSWORD_PROMPT: Final = "password_prompt"  # noqa: S105 - a gap's reason, not a secret
HISTORY: Final = 30.0  # seconds of looks kept to judge input read late


@dataclass(frozen=True)
class Look:
    """One focus check: what was in front at ``checked`` and at the check before."""

    info: WindowInfo | None
    sensitive: bool
    secure: bool  # a password prompt (or secure input) is in front
    checked: float
    prev_sensitive: bool
    prev_secure: bool


class FocusJudge:
    """Writer-thread state of the focus judgement: sensitive windows, prompts and gaps."""

    def __init__(self, focus: FocusBackend, tail: float, clock: Clock) -> None:
        """Judge ``focus``'s answers; suppression lasts ``tail`` seconds past the last sighting."""
        self.focus = focus
        self._tail = tail
        self._clock = clock
        self.last_check: float | None = None
        self.prev_sensitive = False
        self.prev_secure = False
        self.sensitive_until = self.secure_until = float("-inf")
        self.gap_start: float | None = None
        self.secure_gap_start: float | None = None
        self.current_app: str | None = None
        self._judged: tuple[WindowInfo, SensitiveApps, bool] | None = None
        self._looks: list[float] = []  # times of the recent looks, oldest first
        self._floor = clock.monotonic()  # looks are known from here on
        self._last_sensitive = self._last_secure = float("-inf")  # the last such look
        # Since when the window of the newest look (neither sensitive nor a prompt)
        # has been in front, as the backend dates it; None when unknown.
        self._front_since: float | None = None

    def reset(self) -> None:
        """Forget the last check (after a pause or revocation); input from before is dropped."""
        self.last_check = None
        self.prev_sensitive = self.prev_secure = False
        self.current_app = None
        self._looks.clear()
        self._front_since = None
        self._floor = self._clock.monotonic()

    def due(self, now: float, queued: bool, idle_interval: float) -> bool:
        """Whether to look: input waits, or ``idle_interval`` passed since the last look."""
        return queued or self.last_check is None or now - self.last_check >= idle_interval

    def window(self, apps: SensitiveApps) -> tuple[WindowInfo | None, bool, bool]:
        """The app in front, whether it is sensitive, whether it is a password prompt."""
        try:
            info = self.focus.active_window()
        except Exception as exc:  # fail closed: unknown focus suppresses capture
            _log.warning("focus check failed: %s", type(exc).__name__)
            return None, True, True
        if info is None:
            return None, False, False
        # The backend hands back the same WindowInfo while nothing changed: judge each
        # window (title matched against every sensitive site) once per list in force.
        judged = self._judged
        if judged is not None and judged[0] is info and judged[1] is apps:
            return info, judged[2], info.secure_input
        sensitive = info.unseen_switch or apps.is_sensitive(info.app_id, info.category, info.hint)
        self._judged = (info, apps, sensitive)
        return info, sensitive, info.secure_input

    def look(self, apps: SensitiveApps) -> Look:
        """Check focus now and extend the suppression it calls for."""
        info, sensitive, secure = self.window(apps)
        checked = self._clock.monotonic()
        if sensitive:
            self.sensitive_until = checked + self._tail
            if self.gap_start is None:
                self.gap_start = self.last_check if self.last_check is not None else checked
            self.current_app = None
        if secure:
            self.secure_until = checked + self._tail
            if self.secure_gap_start is None:
                start = self.last_check if self.last_check is not None else checked
                self.secure_gap_start = start
        looks = self._looks
        looks.append(checked)
        if sensitive:
            self._last_sensitive = checked
        if secure:
            self._last_secure = checked
        self._front_since = (
            info.front_since if info is not None and not (sensitive or secure) else None
        )
        if checked - looks[0] > 2 * HISTORY:
            del looks[: bisect.bisect_left(looks, checked - HISTORY)]
            self._floor = looks[0]
        return Look(info, sensitive, secure, checked, self.prev_sensitive, self.prev_secure)

    def judge_span(self, lo: float, hi: float) -> tuple[bool, bool]:
        """(sensitive, secure) for input typed within ``[lo, hi]``, judged after a look past ``hi``.

        Every look from the last one before ``lo`` (or from ``lo`` less the tail, if
        earlier) to the newest counts: one that saw a sensitive app or a prompt
        suppresses, unless the window in front at the newest look got there after
        that sighting and a tail before ``lo``. Before the first look since the
        judge was reset, every look counts; before the looks kept, nothing is
        known: suppressed.
        """
        if lo < self._floor:
            return True, True
        looks = self._looks
        i = bisect.bisect_right(looks, lo)
        since = min(looks[i - 1] if i else self._floor, lo - self._tail)
        sensitive = self._last_sensitive >= since and not self._left(self._last_sensitive, lo)
        secure = self._last_secure >= since and not self._left(self._last_secure, lo)
        return sensitive, secure

    def _left(self, seen: float, lo: float) -> bool:
        """Whether what was seen at ``seen`` left the front a tail before ``lo``.

        The window in front now got there at ``front_since``: after the sighting, the
        sighted window (or title, or prompt) was gone by then. The same window with a
        sensitive title or a prompt earlier (``front_since`` before the sighting)
        does not count: when its title changed is not known.
        """
        front = self._front_since
        return front is not None and front > seen and lo - self._tail >= front

    def done(self, look: Look) -> None:
        """The queued input up to ``look`` is judged: it becomes the check before."""
        self.last_check = look.checked
        self.prev_sensitive, self.prev_secure = look.sensitive, look.secure

    def suppressed(self, now: float) -> bool:
        """Whether a sensitive app was in front at the last check or within the tail."""
        return self.prev_sensitive or now <= self.sensitive_until

    def close_gap(self, seq: int, end: float) -> Suppressed | None:
        """The sensitive-app gap open until ``end`` (its duration only), or None."""
        start, self.gap_start = self.gap_start, None
        return None if start is None else Suppressed(seq, start, max(0.0, end - start))

    def close_secure_gap(self, seq: int, end: float) -> Suppressed | None:
        """The password prompt open until ``end``: its duration, nothing typed; or None."""
        start, self.secure_gap_start = self.secure_gap_start, None
        if start is None:
            return None
        return Suppressed(seq, start, max(0.0, end - start), reason=PASSWORD_PROMPT)
