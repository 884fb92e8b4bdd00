"""Where a device's or a server's state lives: one directory, owner-only."""

from __future__ import annotations

from pathlib import Path

from policy.home import state_root


def hearth_home() -> Path:
    """Return the state directory (``HEARTH_HOME`` or the platform's user data dir), 0700."""
    return ensure_private_dir(state_root())


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` if needed and restrict it to its owner."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def runtime_dir(home: Path) -> Path:
    """Where files that live as long as a process go (``home/run``, 0700).

    The recorder's control socket and the dashboard's launch file, as Jupyter's
    runtime directory holds its launch files.
    """
    return ensure_private_dir(home / "run")
