"""What the device did in the federation, for ``hearth status``, and whether it may take part.

``deployment.json`` in the hearth home records the last join, the last refused
bundle, the last declined round and the last round taken, each with a time and
a reason (never content). ``admit`` is the one place that says whether this
device takes part in a round now: consent first, then pause, then the governor.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from client.consent import load_consent
from client.control import pause_state
from client.governor import Governor

DEPLOYMENT_FILE: Final = "deployment.json"


def deployment_path(home: Path) -> Path:
    """The record file."""
    return home / DEPLOYMENT_FILE


def read_deployment(home: Path) -> dict[str, Any]:
    """The record so far (empty if the device never joined)."""
    try:
        data = json.loads(deployment_path(home).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(home: Path, event: str, **fields: Any) -> None:
    """Set ``event`` (``join``, ``refusal``, ``decline``, ``round``) with a timestamp."""
    data = read_deployment(home)
    data[event] = {"time": time.time(), **fields}
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = deployment_path(home)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    tmp.replace(path)


@dataclass(frozen=True)
class Admission:
    """May the device take part now; if not, the reason shown to the employee."""

    allowed: bool
    reason: str = ""


def has_consent(home: Path) -> bool:
    """True while a valid, unrevoked consent record exists."""
    consent = load_consent(home)
    return consent is not None and consent.active


def admit(home: Path, governor: Governor | None = None) -> Admission:
    """Consent, then pause, then (when given) the resource governor."""
    if not has_consent(home):
        return Admission(False, "no consent: run `hearth consent grant` to take part")
    if pause_state(home).paused:
        return Admission(False, "paused by the employee")
    if governor is None:
        return Admission(True)
    decision = governor.decide()
    return Admission(decision.allowed, decision.reason)


__all__ = ["Admission", "admit", "has_consent", "read_deployment", "record"]
