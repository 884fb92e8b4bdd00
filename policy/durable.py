"""Making a rename durable: the one directory fsync that device and ledger share.

A file's bytes fsynced before ``os.replace`` survive a crash, but the rename itself
lives in the directory; without fsyncing it too, a crash can bring back the old file
(an older ledger without a spend already sent, a key file already replaced).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make renames in ``directory`` durable (POSIX; Windows has no directory handles)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
