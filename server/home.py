"""Where the server's state lives: ``HEARTH_HOME`` or the platform's data dir."""

from __future__ import annotations

from pathlib import Path

from policy.home import state_root


def server_home() -> Path:
    """The server's state directory (created, owner-only)."""
    home = state_root() / "server"
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home
