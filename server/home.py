"""Where the server's state lives: ``HEARTH_HOME`` or the platform's data dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def server_home() -> Path:
    """The server's state directory (created, owner-only)."""
    override = os.environ.get("HEARTH_HOME")
    root = Path(override).expanduser() if override else Path(platformdirs.user_data_dir("hearth"))
    home = root / "server"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home
