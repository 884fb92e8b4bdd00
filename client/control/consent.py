"""Consent: what the employee agreed to record, per modality, revocable.

No consent file means nothing is recorded. A record names the modalities, when
they were granted, which disclosure text the employee saw, and the privacy policy
they were shown (its hash and its settings, so ``hearth consent show`` can say what
changed since). Taking part in rounds needs consent to the policy the device pinned
(``client.control.participation.admit``); a record from before policies were pinned names none
and covers none. Revoking keeps the record (so the state is auditable) but marks it
revoked, and recording stops. Listeners (``on_change``) hear of every grant and
revoke: the vault deletes the events of modalities no longer granted.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

from policy.events import Modality
from privacy.policy import PrivacyPolicy, policy_as_dict, policy_hash

CONSENT_FILE: Final = "consent.json"
DISCLOSURE_VERSION: Final = 1

DISCLOSURE: Final[dict[Modality, tuple[str, str]]] = {
    Modality.POINTER: (
        "clicks and scrolls as a coarse screen position, a few pointer positions a second",
        "the raw pointer stream, or anything while a sensitive app or site is in front",
    ),
    Modality.KEYS: (
        "runs of keys of one class (letters with the spaces between words, digits, edit, "
        "navigation, enter): the class, how many keys, when the run began and how long it "
        "took, each to the whole second; and named shortcuts (copy, paste, save, ...)",
        "which letters or digits you typed, the time of each key (your typing rhythm), "
        "word lengths, or anything typed at a password prompt (a password dialog, or a "
        "terminal that turned echo off): there only a gap with its duration is kept",
    ),
    Modality.APPS: (
        "which app is in front, as an app id and a category (editor, browser, ...)",
        "window titles, document names or URLs (a title is read in memory only, to "
        "suppress sensitive sites, private windows and password prompts)",
    ),
    Modality.TEXT: (
        "typed text, after emails, phone and card numbers, IBANs, national ids, passwords "
        "and tokens in URLs and command lines and other secrets are replaced by "
        "placeholders, matched across pauses in typing",
        "anything typed into sensitive apps or sites, private windows, password fields "
        "or terminal password prompts",
    ),
    Modality.SCREENS: (
        "a tiny grayscale thumbnail (64x40) every few seconds, only when the screen changed",
        "screenshots at readable resolution, or anything while a sensitive app or site is in front",
    ),
}


class ConsentError(ValueError):
    """A consent request is invalid; the message says what to fix."""


@dataclass(frozen=True)
class ConsentRecord:
    """What was agreed, when, and to which disclosure."""

    modalities: tuple[Modality, ...]
    granted_at: float
    disclosure_version: int
    revoked_at: float | None = None
    # The policy the employee was shown when they consented (None: an older record).
    policy_hash: str | None = None
    policy: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        """True while the record has not been revoked."""
        return self.revoked_at is None

    def allows(self, modality: Modality) -> bool:
        """Whether ``modality`` may be captured right now."""
        return self.active and modality in self.modalities

    def covers(self, policy: PrivacyPolicy) -> bool:
        """Whether this is an active consent given under exactly ``policy``."""
        return self.active and self.policy_hash == policy_hash(policy)


ConsentListener = Callable[[Path, "ConsentRecord"], None]
_LISTENERS: list[ConsentListener] = []


def on_change(listener: ConsentListener) -> None:
    """Call ``listener(home, record)`` after every grant or revoke made in this process."""
    if listener not in _LISTENERS:
        _LISTENERS.append(listener)


def _notify(home: Path, record: ConsentRecord) -> None:
    for listener in list(_LISTENERS):
        listener(home, record)


def parse_modalities(
    text: str, allowed: tuple[Modality, ...] | None = None
) -> tuple[Modality, ...]:
    """Parse ``pointer,keys,apps``; unknown or disallowed names are a clear error."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if not names:
        raise ConsentError("name at least one modality, e.g. --modalities pointer,keys,apps")
    chosen = []
    for name in names:
        try:
            modality = Modality(name)
        except ValueError:
            valid = ", ".join(m.value for m in Modality)
            raise ConsentError(f"unknown modality {name!r}; choose from {valid}") from None
        if allowed is not None and modality not in allowed:
            raise ConsentError(f"the privacy policy does not allow recording {name!r}")
        chosen.append(modality)
    return tuple(sorted(set(chosen), key=list(Modality).index))


def consent_path(home: Path) -> Path:
    """Where the consent record lives."""
    return home / CONSENT_FILE


def load_consent(home: Path) -> ConsentRecord | None:
    """The consent record, or None when the employee never consented."""
    path = consent_path(home)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        agreed_hash, agreed = data.get("policy_hash"), data.get("policy")
        if not isinstance(agreed_hash, str | None) or not isinstance(agreed, dict | None):
            raise TypeError("a damaged policy in the consent record")
        return ConsentRecord(
            modalities=tuple(Modality(m) for m in data["modalities"]),
            granted_at=float(data["granted_at"]),
            disclosure_version=int(data["disclosure_version"]),
            revoked_at=None if data.get("revoked_at") is None else float(data["revoked_at"]),
            policy_hash=agreed_hash,
            policy=agreed,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        # A damaged record must never widen what is captured: treat it as no consent.
        return None


def _write(home: Path, record: ConsentRecord) -> None:
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = consent_path(home)
    # A name of its own: the recorder may save a revocation while a command does.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    data = {**asdict(record), "modalities": [m.value for m in record.modalities]}
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written record behind
        raise


def grant(
    home: Path, modalities: tuple[Modality, ...], policy: PrivacyPolicy | None = None
) -> ConsentRecord:
    """Record consent to exactly ``modalities`` under the current disclosure and ``policy``.

    ``policy`` is the one the employee was shown: by default the device's own
    (``client.control.policy_pin.device_policy``: the pinned one, once the device joined).
    """
    if policy is None:
        from client.control.policy_pin import device_policy  # noqa: PLC0415 (consent stays light)

        policy = device_policy(home)
    record = ConsentRecord(
        modalities,
        time.time(),
        DISCLOSURE_VERSION,
        policy_hash=policy_hash(policy),
        policy=policy_as_dict(policy),
    )
    _write(home, record)
    _notify(home, record)
    return record


def revoke(home: Path, at: float | None = None) -> ConsentRecord | None:
    """Mark consent revoked (at ``at``, default now); a running recorder sees it and stops.

    Raises ``OSError`` when the record cannot be written (a full disk): then
    ``client.control.recorder_control.request_revoke`` has already told a running recorder.
    """
    record = load_consent(home)
    if record is None or not record.active:
        return record
    revoked = replace(record, revoked_at=time.time() if at is None else at)
    _write(home, revoked)
    _notify(home, revoked)
    return revoked


def disclosure_text(allowed: tuple[Modality, ...]) -> str:
    """What each modality records and never records, and how to stop."""
    lines = [
        "hearth records how you work, only for what you grant, and keeps it on this laptop.",
        "",
    ]
    for modality, (records, never) in DISCLOSURE.items():
        note = "" if modality in allowed else " (not allowed by the current policy)"
        lines.append(f"{modality.value}{note}")
        lines.append(f"  records: {records}")
        lines.append(f"  never:   {never}")
    lines += [
        "",
        "Only model updates leave this laptop, never what was recorded.",
        "Pause any time with `hearth pause` (until you resume) or `hearth pause --for 30m`.",
        "Leave with `hearth consent revoke`; add --delete-data to destroy everything recorded.",
    ]
    return "\n".join(lines)
