"""Is this laptop's network metered? Asked of the OS, with a clear "unknown" when it cannot say.

Linux: NetworkManager's ``Metered`` property of ``/org/freedesktop/NetworkManager``
on the system bus (the metering of the primary connection), read with ``busctl``
(systemd) or else ``gdbus`` (GLib) in a short subprocess, so hearth needs no D-Bus
library. NetworkManager answers one of ``NM_METERED_*``: unknown (0), yes (1), no
(2), guess yes (3), guess no (4); a guess counts as what it guesses. No bus, no
NetworkManager, no tool, a timeout or an answer hearth does not understand: unknown.
Other platforms are not asked yet: unknown. What "unknown" means for training is the
policy's (``governor.allow_unknown_metering``), not this module's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Final

TIMEOUT_SECONDS: Final = 2.0
_SERVICE: Final = "org.freedesktop.NetworkManager"
_OBJECT: Final = "/org/freedesktop/NetworkManager"


class Metering(StrEnum):
    """What the OS says about the network."""

    METERED = "metered"
    UNMETERED = "unmetered"
    UNKNOWN = "unknown"


# NetworkManager's NMMetered enum.
NM_METERED: Final = {
    0: Metering.UNKNOWN,
    1: Metering.METERED,
    2: Metering.UNMETERED,
    3: Metering.METERED,  # guess yes
    4: Metering.UNMETERED,  # guess no
}


def parse_busctl(output: str) -> int | None:
    """``busctl get-property`` prints ``u 4``; the number, or None."""
    match = re.fullmatch(r"\s*u\s+(\d+)\s*", output)
    return int(match.group(1)) if match else None


def parse_gdbus(output: str) -> int | None:
    """``gdbus call ... Properties.Get`` prints ``(<uint32 4>,)``; the number, or None."""
    match = re.fullmatch(r"\s*\(<uint32 (\d+)>,\)\s*", output)
    return int(match.group(1)) if match else None


_READERS: Final[tuple[tuple[list[str], Callable[[str], int | None]], ...]] = (
    (["busctl", "--system", "get-property", _SERVICE, _OBJECT, _SERVICE, "Metered"], parse_busctl),
    (
        [
            "gdbus",
            "call",
            "--system",
            "--dest",
            _SERVICE,
            "--object-path",
            _OBJECT,
            "--method",
            "org.freedesktop.DBus.Properties.Get",
            _SERVICE,
            "Metered",
        ],
        parse_gdbus,
    ),
)


def _ask(command: list[str], parse: Callable[[str], int | None]) -> int | None:
    executable = shutil.which(command[0])
    if executable is None:
        return None
    try:
        result = subprocess.run(
            [executable, *command[1:]],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse(result.stdout) if result.returncode == 0 else None


def network_metering() -> Metering:
    """Whether the OS says the network is metered, not metered, or cannot say."""
    if not sys.platform.startswith("linux"):
        return Metering.UNKNOWN
    for command, parse in _READERS:
        value = _ask(command, parse)
        if value is not None:
            return NM_METERED.get(value, Metering.UNKNOWN)
    return Metering.UNKNOWN


__all__ = ["NM_METERED", "Metering", "network_metering", "parse_busctl", "parse_gdbus"]
