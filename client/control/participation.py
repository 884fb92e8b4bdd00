"""What the device did in the federation, for ``hearth status``, and whether it may take part.

``deployment.json`` in the hearth home records the last join, the last refused
bundle, the last declined round and the last round taken, each with a time and
a reason (never content). ``admit`` is the one place that says whether this
device takes part in a round now: consent (to the policy the device pinned) first,
then pause, then the governor.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from client.control.consent import load_consent
from client.control.pause import pause_state
from client.control.policy_pin import load_pinned
from client.control.recorder_control import live_state
from privacy.policy import PolicyError

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


class Verdict(Protocol):
    """A resource check's answer (``client.deployment.governor.Decision``)."""

    @property
    def allowed(self) -> bool: ...

    @property
    def reason(self) -> str: ...


class ResourceCheck(Protocol):
    """Whether the laptop can train now: the SuperNode's governor (deployment/)."""

    def decide(self) -> Verdict: ...


@dataclass(frozen=True)
class Admission:
    """May the device take part now; if not, the reason shown to the employee."""

    allowed: bool
    reason: str = ""


def consent_problem(home: Path) -> str | None:
    """Why this device may not take part for want of consent, or None when it may.

    It may with an unrevoked consent record that, once a policy is pinned, was given
    under exactly that policy: a record of another policy, or from before policies
    were pinned, does not cover it.
    """
    consent = load_consent(home)
    if consent is None or not consent.active:
        return "no consent: run `hearth consent grant` to take part"
    try:
        pinned = load_pinned(home)
    except PolicyError as exc:
        return str(exc)
    if pinned is not None and not consent.covers(pinned.policy):
        return (
            f"no consent to the pinned policy {pinned.policy_hash[:12]}: see what changed "
            "with `hearth consent show`, then `hearth consent grant` to take part"
        )
    return None


def has_consent(home: Path) -> bool:
    """True while a valid, unrevoked consent record covers the device's pinned policy."""
    return consent_problem(home) is None


def admit(home: Path, governor: ResourceCheck | None = None) -> Admission:
    """Consent, then pause, then (when given) the resource governor."""
    problem = consent_problem(home)
    if problem is not None:
        return Admission(False, problem)
    if pause_state(home).paused:
        return Admission(False, "paused by the employee")
    # A pause or revocation the recorder holds but a full disk kept out of the files.
    live = live_state(home)
    if live is not None and not live.consenting:
        return Admission(False, "no consent (revoked, not yet saved)")
    if live is not None and live.paused:
        return Admission(False, "paused by the employee")
    if governor is None:
        return Admission(True)
    decision = governor.decide()
    return Admission(decision.allowed, decision.reason)


__all__ = ["Admission", "admit", "consent_problem", "has_consent", "read_deployment", "record"]
