"""A cap on how many ClientApp tasks run at once on one machine, for a fleet simulated there.

A laptop runs its own tasks on its own cores and never sets ``HEARTH_TASK_SLOTS``.
Where a hundred devices share one machine, a round would otherwise train all of them
at once: on two cores that gains nothing over a few at a time, and each training
task holds its own few hundred MiB. ``HEARTH_TASK_SLOTS`` names a directory of slot
files (``make_slots``); the executor claims a task only while it holds one of them
under an exclusive ``flock`` and hands that lock's file descriptor to the task
process, so the slot frees itself when the task exits, however it exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

ENV_TASK_SLOTS: Final = "HEARTH_TASK_SLOTS"
PREFIX: Final = "slot-"


class Slot:
    """One held slot: an open file under an exclusive lock, released when every copy closes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        """Drop this process's copy (a task started with it keeps the lock until it exits)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def make_slots(directory: Path, count: int) -> Path:
    """``count`` slot files in ``directory`` (only this user's), to name in HEARTH_TASK_SLOTS."""
    if count < 1:
        raise ValueError("task slots: give at least 1")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for i in range(count):
        (directory / f"{PREFIX}{i}").touch(mode=0o600)
    return directory


def try_acquire(directory: Path) -> Slot | None:
    """A free slot of ``directory``, or None when every one is held."""
    for path in sorted(directory.glob(f"{PREFIX}*")):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Slot(fd)
    return None


def slots_directory() -> Path | None:
    """The directory ``HEARTH_TASK_SLOTS`` names, or None: no cap (every laptop)."""
    named = os.environ.get(ENV_TASK_SLOTS)
    if not named:
        return None
    directory = Path(named)
    if not any(directory.glob(f"{PREFIX}*")):
        raise RuntimeError(f"{ENV_TASK_SLOTS}={named} holds no {PREFIX}* files: run make_slots")
    return directory


__all__ = ["ENV_TASK_SLOTS", "Slot", "make_slots", "slots_directory", "try_acquire"]
