"""Pause and resume: a small state file any process can change and the recorder watches.

The file survives restarts; a pause without a duration lasts until resumed. A
running recorder also hears a pause at once over its socket
(``client.control.recorder_control``), which needs no free disk.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

CONTROL_FILE: Final = "control.json"
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


class DurationError(ValueError):
    """A duration like ``30m`` or ``2h`` could not be read."""


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``2h`` or ``1h30m``."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or match is None or not any(match.groups()):
        raise DurationError(f"cannot read duration {text!r}; use e.g. 30m, 2h or 1h30m")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise DurationError("a pause must last longer than zero")
    return float(total)


@dataclass(frozen=True)
class PauseState:
    """Whether recording is paused now, and until when (``inf``: until resumed)."""

    paused: bool
    until: float | None = None
    since: float | None = None


def control_path(home: Path) -> Path:
    """The state file."""
    return home / CONTROL_FILE


def _write(home: Path, data: dict[str, float | None]) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = control_path(home)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        tmp.replace(path)  # atomic: a watcher never reads half a file
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def save_pause(home: Path, state: PauseState) -> None:
    """Write ``state`` as it is (the recorder saving a pause it heard over its socket)."""
    if not state.paused:
        resume(home)
        return
    until = state.until if state.until is not None else math.inf
    _write(
        home,
        {
            "paused_since": state.since if state.since is not None else time.time(),
            "paused_until": None if math.isinf(until) else until,
        },
    )


def pause(home: Path, duration: float | None = None, now: float | None = None) -> PauseState:
    """Pause for ``duration`` seconds, or until resumed."""
    now = time.time() if now is None else now
    until = math.inf if duration is None else now + duration
    _write(home, {"paused_since": now, "paused_until": None if math.isinf(until) else until})
    return PauseState(True, until, now)


def resume(home: Path) -> None:
    """Resume recording."""
    _write(home, {"paused_since": None, "paused_until": None})


def pause_state(home: Path, now: float | None = None) -> PauseState:
    """Read the current state; an expired timed pause reads as not paused."""
    now = time.time() if now is None else now
    try:
        data = json.loads(control_path(home).read_text())
    except (OSError, ValueError):
        return PauseState(False)
    since = data.get("paused_since")
    if since is None:
        return PauseState(False)
    until = data.get("paused_until")
    until = math.inf if until is None else float(until)
    if now >= until:
        return PauseState(False)
    return PauseState(True, until, float(since))
