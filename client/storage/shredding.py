"""Files that held secrets: overwritten in place (fsync'd) before they are removed or replaced.

Key files, day-key files and their leftovers are shredded this way, so a copy of the
disk taken afterwards does not find the old bytes where the file was (on a
filesystem that writes in place; README says what this cannot promise).
"""

from __future__ import annotations

import os
from pathlib import Path

from policy.durable import fsync_directory


def shred_file(path: Path) -> None:
    """Overwrite a file's bytes in place (fsync'd), then remove it."""
    _overwrite(path)
    path.unlink()


def replace_file(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` (owner-only) and overwrite the bytes it replaced.

    A hard link keeps the old inode reachable across the rename so its content can
    be overwritten; a crash in between leaves it as ``<name>.old``, which
    ``finish_interrupted_commit`` shreds.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    old = path.with_name(path.name + ".old")
    if old.exists():
        old.unlink()
    if path.exists():
        os.link(path, old)
    tmp.replace(path)
    fsync_directory(path.parent)
    if old.exists():
        shred_file(old)


def _overwrite(path: Path) -> None:
    """Overwrite a file's bytes in place (fsync'd), so its old content is not left behind."""
    size = max(path.stat().st_size, 256)
    with open(path, "r+b") as handle:
        handle.write(os.urandom(size))
        handle.flush()
        os.fsync(handle.fileno())
