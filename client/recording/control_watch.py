"""What the employee decided: consent, pause and sensitive apps, from files and the socket.

Files: consent, pause and the sensitive-app additions are replaced atomically
in HEARTH_HOME, so one ``stat`` of the directory every ``control_interval``
says whether to look at them (``HomeWatch``). The control socket
(``client.control.recorder_control``): its thread queues a request in the ``ControlInbox``
and wakes the writer, which applies it at once. What the socket changed and no
file says yet (a full disk) is written every ``save_retry`` seconds until it is.
A change of state calls back into the recorder (``ControlHooks``), which stops or
starts listening and drops what must be dropped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Final, Protocol

from client.control.consent import ConsentRecord, consent_path, load_consent, revoke
from client.control.pause import PauseState, control_path, pause_state, save_pause
from client.control.recorder_control import ControlMessage, LiveState
from client.control.sensitive_apps import SensitiveApps
from client.recording.clock import Clock

_log = logging.getLogger(__name__)


class HomeWatch:
    """Whether anything in HEARTH_HOME may have changed, for the price of one ``stat``.

    Consent, pause and the sensitive-app additions are all replaced atomically
    (write, then rename) inside HEARTH_HOME, which changes the directory's mtime.
    A directory modified in the last 50 ms is looked into again (a second change
    within the filesystem's timestamp granularity would not move the mtime), and
    every ``recheck`` seconds the files are looked at anyway, for edits in place.
    """

    _RACY_NS: Final = 50_000_000

    def __init__(self, home: Path, recheck: float, wall_ns: Callable[[], int]) -> None:
        """Watch ``home``; ``wall_ns`` is the clock file times are compared with."""
        self._home = home
        self._recheck = recheck
        self._wall_ns = wall_ns
        self._signature: tuple[int, int] | None = None
        self._last_full = float("-inf")

    def changed(self, now: float) -> bool:
        """True when the files are worth reading again (``now``: monotonic)."""
        try:
            st = self._home.stat()
            signature: tuple[int, int] | None = (st.st_ino, st.st_mtime_ns)
            racy = self._wall_ns() - st.st_mtime_ns < self._RACY_NS
        except OSError:
            signature, racy = None, True
        if signature == self._signature and not racy and now - self._last_full < self._recheck:
            return False
        self._signature, self._last_full = signature, now
        return True


class Watched:
    """Re-reads a small file only when its stat signature changes."""

    def __init__(self, path: Path) -> None:
        """Watch ``path`` (it may not exist yet)."""
        self._path = path
        self._signature: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        """True once after every change of the file (and at the first call)."""
        try:
            st = self._path.stat()
            signature: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            signature = None
        if signature == self._signature:
            return False
        self._signature = signature
        return True


class Wake:
    """Wakes the writer early: a bare lock, released to wake and taken by the wait.

    ``threading.Event.wait`` builds a ``Condition`` and a fresh lock on every call;
    the writer waits ten times a second, and each of those waits cost about 80 µs
    of CPU here against about 50 µs for a bare lock's timed acquire.
    """

    def __init__(self) -> None:
        """Not woken."""
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        """Wake the waiter (now, or at its next wait); any thread may call it."""
        with contextlib.suppress(RuntimeError):  # already released: already woken
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds; True (and the wake consumed) if woken."""
        return self._lock.acquire(timeout=timeout)


class ControlInbox:
    """Requests from the control socket, and those no file says yet (a full disk)."""

    def __init__(self) -> None:
        """Empty."""
        self.requests: deque[tuple[ControlMessage, threading.Event]] = deque()
        self.wake = Wake()
        self.unsaved: dict[str, ControlMessage] = {}  # "control" / "consent"
        self.next_save = float("-inf")
        self.warned: set[str] = set()


class ControlHooks(Protocol):
    """What the recorder does when the employee's decision changes."""

    def on_pause(self, now: float) -> None:
        """Recording pauses (sets ``ControlWatch.paused``)."""
        ...

    def on_resume(self, now: float) -> None:
        """Recording resumes (clears ``ControlWatch.paused``)."""
        ...

    def on_revoked(self) -> None:
        """Consent is gone."""
        ...


class ControlWatch:
    """Consent, pause and the sensitive list in force, kept up to date by the writer."""

    def __init__(
        self,
        home: Path,
        recheck: float,
        save_retry: float,
        sensitive: Callable[[], SensitiveApps],
        clock: Clock,
        hooks: ControlHooks,
    ) -> None:
        """Nothing is read until the first ``check``."""
        self.home = home
        self.inbox = ControlInbox()
        self.consent: ConsentRecord | None = None
        self.pause = PauseState(False)
        self.paused = False  # what the recorder does (set by its hooks)
        self.apps = sensitive()
        self.last_check = float("-inf")
        self._sensitive = sensitive
        self._save_retry = save_retry
        self._clock = clock
        self._hooks = hooks
        self._home = HomeWatch(home, recheck, clock.wall_ns)
        self._consent_file = Watched(consent_path(home))
        self._control_file = Watched(control_path(home))

    def consenting(self) -> bool:
        """An active consent is in force."""
        return self.consent is not None and self.consent.active

    def observing(self) -> bool:
        """Consent and no pause: input is captured."""
        return self.consenting() and not self.paused

    def request(self, message: ControlMessage, timeout: float, running: bool) -> bool | LiveState:
        """Queue a socket request for the writer and wake it; True once it applied it.

        A status request is answered at once; without a running writer thread the
        caller steps the writer itself (False).
        """
        if message.op == "status":
            until = self.pause.until if self.paused else None
            return LiveState(
                consenting=self.consenting(),
                paused=self.paused,
                paused_until=None if until is None or until == float("inf") else until,
                unsaved=tuple(self.inbox.unsaved.copy()),  # copy(): atomic under the GIL
            )
        done = threading.Event()
        self.inbox.requests.append((message, done))
        self.inbox.wake.set()
        return done.wait(timeout) if running else False

    def check(self, now: float) -> bool:
        """Re-read the files if HEARTH_HOME changed and follow the pause.

        Returns whether listeners may need to follow (consent and pause change
        only with a file, or at a timed pause's end; a request syncs them itself).
        """
        self.last_check = now
        changed = self._home.changed(now)  # True at least every control_recheck
        if not (changed or self.pause.paused or self.paused):
            return False
        if changed:
            self._reread()
        self.follow_pause(now)
        return True

    def follow_pause(self, now: float) -> None:
        """Pause or resume the recorder if the pause in force says so."""
        paused = self.pause.paused and self._clock.wall() < (self.pause.until or float("inf"))
        if paused and not self.paused:
            self._hooks.on_pause(now)
        elif not paused and self.paused:
            self._hooks.on_resume(now)

    def apply(self, message: ControlMessage, now: float) -> None:
        """One request from the socket: a revocation, a pause or a resume."""
        if message.op == "revoke":
            if self.consent is not None and self.consent.active:
                at = message.revoked_at if message.revoked_at is not None else self._clock.wall()
                granted = self.consent.granted_at
                self.consent = replace(self.consent, revoked_at=at)
                self._hooks.on_revoked()
                self.inbox.unsaved["consent"] = replace(message, revoked_at=at, granted_at=granted)
        else:
            self.pause = message.pause_state()
            self.follow_pause(now)
            self.inbox.unsaved["control"] = message
        # The command writes the file itself right after the answer; look later.
        self.inbox.next_save = now + self._save_retry

    def save_unsaved(self, now: float) -> None:
        """Write what the socket changed and no file says yet; on a full disk, retry later."""
        home = self.home
        for key, message in list(self.inbox.unsaved.items()):
            try:
                if key == "consent":
                    current = load_consent(home)
                    # Only the consent that was revoked: a grant made since stays.
                    if current is not None and current.granted_at == message.granted_at:
                        revoke(home, at=message.revoked_at)
                elif pause_state(home) != message.pause_state():
                    save_pause(home, message.pause_state())
            except OSError as exc:
                self.inbox.next_save = now + self._save_retry
                if key not in self.inbox.warned:
                    self.inbox.warned.add(key)
                    what = "revocation" if key == "consent" else message.op
                    _log.warning(
                        "the %s is in force but not saved yet (%s); retrying every %g s",
                        what,
                        exc.strerror or type(exc).__name__,
                        self._save_retry,
                    )
                continue
            del self.inbox.unsaved[key]
            self.inbox.warned.discard(key)

    def _reread(self) -> None:
        """Consent, pause and the sensitive list, each re-read only if its file changed."""
        self.apps = self._sensitive()
        if self._consent_file.changed():
            consent = load_consent(self.home)
            was_active = self.consenting()
            self.consent = consent
            if was_active and not self.consenting():
                self._hooks.on_revoked()
        if self._control_file.changed():
            self.pause = pause_state(self.home, now=self._clock.wall())
            asked = self.inbox.unsaved.get("control")
            if asked is not None and asked.pause_state() == self.pause:
                # The file says what the socket asked (the command saved it): from now on
                # the file speaks, and a resume written to it later is not undone.
                del self.inbox.unsaved["control"]
