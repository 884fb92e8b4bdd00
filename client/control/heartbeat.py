"""The recorder's heartbeat file, so `hearth status` can tell "recording" from "not running".

``HEARTH_HOME/recorder.json`` (0600) holds counts and times only: the pid, when
the recorder started, events written, the last flush, drops, and the next
sequence number (the vault knows it too; this covers a vault emptied since). Never
event content.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Final

HEARTBEAT_FILE: Final = "recorder.json"
# A running recorder rewrites the file at least this often; older means it died.
STALE_AFTER: Final = 10.0


@dataclass(frozen=True)
class Heartbeat:
    """What a recorder says about itself."""

    pid: int
    started: float
    updated: float
    events_written: int = 0
    last_flush: float | None = None
    dropped: int = 0
    next_seq: int = 0
    listening: bool = False
    running: bool = True
    callbacks: int = 0
    callback_p99_ms: float | None = None
    peak_rss_mb: float | None = None


def own_peak_rss_mb(status: Path = Path("/proc/self/status")) -> float | None:
    """The resident-memory high-water mark of this process in MB (None where unknown).

    On Linux it is ``VmHWM``: ``getrusage``'s ``ru_maxrss`` carries the high-water
    mark of the image a process was exec'd from, so a recorder started by a
    450 MB process reported 450 MB. Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def heartbeat_path(home: Path) -> Path:
    """Where the heartbeat lives."""
    return home / HEARTBEAT_FILE


def write_heartbeat(home: Path, beat: Heartbeat) -> None:
    """Replace the heartbeat atomically, owner-only."""
    path = heartbeat_path(home)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(beat), handle)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def read_heartbeat(home: Path) -> Heartbeat | None:
    """The last heartbeat, or None (never ran, or the file is damaged)."""
    try:
        data = json.loads(heartbeat_path(home).read_text())
        known = {f.name for f in fields(Heartbeat)}
        return Heartbeat(**{k: v for k, v in data.items() if k in known})
    except (OSError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_recorder(home: Path, now: float | None = None) -> Heartbeat | None:
    """The heartbeat of a recorder that is running now, else None."""
    beat = read_heartbeat(home)
    now = time.time() if now is None else now
    if beat is None or not beat.running or now - beat.updated > STALE_AFTER:
        return None
    return beat if _alive(beat.pid) else None
