"""Where hearth keeps its state on a machine, the one convention client and server share.

``HEARTH_HOME`` when set, else the platform's user data directory for hearth. A
device keeps its state at that root (``client.home``); a server keeps its own under
``server/`` inside it (``server.home``), so one variable moves both, as the demos
and tests do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import platformdirs

ENV_HOME: Final = "HEARTH_HOME"


def state_root() -> Path:
    """``HEARTH_HOME`` (``~`` expanded) or the platform's data dir; not created here."""
    override = os.environ.get(ENV_HOME)
    return Path(override).expanduser() if override else Path(platformdirs.user_data_dir("hearth"))
