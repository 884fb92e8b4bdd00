"""One device's state outside training: its policy, admission, ledger, cap and records.

``DeviceRecords`` is what ``hearth status``, ``hearth budget`` and the dashboard
read and what the ClientApp's ``client.learning.device.Device`` extends with the
vault's examples. A real laptop lives in ``hearth_home()``; a simulated employee of
``hearth-sim`` under the run's ``sim-root`` (``client.learning.device.device_for``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.control.participation import admit, record
from client.control.policy_pin import device_policy
from client.storage.home import ensure_private_dir
from client.storage.keys import KEY_FILE, WrappedKey, keyring_usable, load_or_create_data_key
from client.storage.ledger_anchor import KeyringAnchor
from client.storage.vault import Vault
from privacy.ledger import DeviceLedger, FileAnchor, LedgerAnchor, LedgerReset, reset_ledger
from privacy.policy import PrivacyPolicy, load_policy
from privacy.renyi_filter import day_of

_log = logging.getLogger(__name__)

LEDGER_FILE: Final = "ledger.bin"
LEDGER_ANCHOR_FILE: Final = "ledger.anchor"
EMPLOYEE_CAP_FILE: Final = "employee_cap.json"
_LEDGER_INFO: Final = b"hearth-device-ledger-key"
UPLOADS_FILE: Final = "uploads.jsonl"

# The days each vault held when it was last read, by vault version (``held_days``).
_HELD_DAYS: dict[str, tuple[tuple[int, int, int], frozenset[int]]] = {}


def days_of(vault: Vault) -> frozenset[int]:
    """The UTC days the vault holds data of.

    From the sealed manifest (nothing else decrypted), else every segment's time range.
    """
    counted = vault.day_counts()
    if counted:
        return frozenset(counted)
    return frozenset(
        day
        for segment in vault.segments()
        for day in range(day_of(segment.wall_start), day_of(segment.wall_end) + 1)
    )


def note_held_days(vault_dir: Path, vault: Vault) -> None:
    """Remember the days ``vault`` holds now (the ClientApp read it: ``held_days`` reuses it)."""
    _HELD_DAYS[str(vault_dir)] = (vault.version(), days_of(vault))


def forget_held_days() -> None:
    """Forget every remembered vault's days (a fresh process would not have them)."""
    _HELD_DAYS.clear()


@dataclass(frozen=True)
class DeviceRecords:
    """Paths and secrets of one device, and its records beside the vault."""

    home: Path
    passphrase: str | None = None
    policy_file: Path | None = None
    # A synthetic employee of a simulation: it has no employee to consent or pause.
    simulated: bool = False

    def admitted(self) -> bool:
        """May this device answer the server now (consent given and not paused)."""
        if self.simulated:
            return True
        return admit(self.home).allowed

    def policy(self) -> PrivacyPolicy:
        """The privacy policy this device is under.

        A real device: the policy it pinned at enrolment (``client.control.policy_pin``), never
        the bundle's default nor ``HEARTH_POLICY`` once one is pinned. A simulated
        employee (or a device given ``policy_file``): that file, else the default.
        Raises ``PolicyError`` when the pinned policy no longer verifies.
        """
        if self.simulated or self.policy_file is not None:
            return load_policy(self.policy_file)
        return device_policy(self.home)

    def record_refusal(self, reason: str) -> None:
        """Keep, for ``hearth status``, why this device refused what the server asked."""
        if not self.simulated:
            record(self.home, "refusal", reason=reason)

    @property
    def vault_dir(self) -> Path:
        """The encrypted vault of this device."""
        return self.home / "vault"

    def held_days(self) -> frozenset[int]:
        """The days of data the vault held when ``examples`` last read it (else read now)."""
        cached = _HELD_DAYS.get(str(self.vault_dir))
        if cached is not None:
            return cached[1]
        if not self.vault_dir.exists():
            return frozenset()
        with Vault.open(self.vault_dir, self.passphrase) as vault:
            return days_of(vault)

    @property
    def privacy_dir(self) -> Path:
        """The ledger and the employee's cap; outlives ``hearth data delete``."""
        return self.home / "privacy"

    def ledger(self) -> DeviceLedger:
        """The encrypted record of every local DP round.

        Its key is its own (wrapped like the vault's, never derived from it), so
        deleting the recorded data does not erase what was already spent on it.
        """
        key = self._ledger_key()
        return DeviceLedger(self.privacy_dir / LEDGER_FILE, key, self._anchor(key))

    def _data_key(self, directory: Path) -> bytes:
        """The data key wrapped in ``directory`` (``Device`` caches a simulated one)."""
        return load_or_create_data_key(directory, self.passphrase)

    def _ledger_key(self) -> bytes:
        data_key = self._data_key(ensure_private_dir(self.privacy_dir))
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LEDGER_INFO).derive(
            data_key
        )

    def _anchor(self, key: bytes) -> LedgerAnchor:
        """Where the ledger's counter and hash live: the OS keyring when the key is wrapped there.

        Otherwise (a passphrase wrap) a sealed file beside the ledger: it catches a
        deleted or copied-back ledger, not a restore of the whole privacy directory.
        """
        wrapped = WrappedKey.from_json((self.privacy_dir / KEY_FILE).read_text())
        if wrapped.kek == "keyring" and keyring_usable():
            return KeyringAnchor(self.privacy_dir)
        return FileAnchor(self.privacy_dir / LEDGER_ANCHOR_FILE, key)

    def reset_ledger(self, reason: str) -> LedgerReset:
        """The deliberate, logged reset: a new empty ledger that records the reset itself."""
        key = self._ledger_key()
        event = reset_ledger(self.privacy_dir / LEDGER_FILE, key, self._anchor(key), reason)
        if not self.simulated:
            record(self.home, "budget-reset", reason=reason, entries_cleared=event.entries_cleared)
        _log.warning("privacy ledger reset (%s): %d entries cleared", reason, event.entries_cleared)
        return event

    def employee_cap(self) -> float | None:
        """The stricter epsilon cap the employee set with ``hearth budget set``, if any."""
        path = self.home / "privacy" / EMPLOYEE_CAP_FILE
        if not path.exists():
            return None
        return float(json.loads(path.read_text())["epsilon_cap"])

    def set_employee_cap(self, epsilon: float) -> None:
        """Store the employee's own cap."""
        directory = ensure_private_dir(self.home / "privacy")
        path = directory / EMPLOYEE_CAP_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"epsilon_cap": epsilon, "set_at": time.time()}, handle)

    def log_upload(self, record: dict[str, Any]) -> None:
        """Append what left the device (sizes, names, shapes; never content)."""
        ensure_private_dir(self.home)
        path = self.home / UPLOADS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(json.dumps({"time": time.time(), **record}) + "\n")

    def uploads(self) -> list[dict[str, Any]]:
        """The upload history, oldest first."""
        path = self.home / UPLOADS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


__all__ = ["DeviceRecords", "days_of", "forget_held_days", "note_held_days"]
