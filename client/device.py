"""One device's local state as the ClientApp sees it: its vault and its records.

A real laptop uses ``hearth_home()``. A simulated employee (a node of Flower's
simulation engine, identified by ``partition-id``) lives under the run's
``sim-root``, seeded beforehand by ``hearth-sim``; its vault key comes from the
synthetic passphrase file there, which exists only for synthetic employees.
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
from flwr.app import Context

from client import device_cache
from client.consent import load_consent
from client.deployment import admit, record
from client.featurize import Examples, action_sequence
from client.home import ensure_private_dir, hearth_home
from client.keys import (
    KEY_FILE,
    KEY_FILE_VERSION,
    WrappedKey,
    keyring_usable,
    load_or_create_data_key,
    read_key_file,
    staged_generation,
)
from client.ledger_anchor import KeyringAnchor
from client.policy_pin import device_policy
from client.vault import Vault, VaultRollbackError
from privacy.ledger import DeviceLedger, FileAnchor, LedgerAnchor, LedgerReset, reset_ledger
from privacy.policy import PrivacyPolicy, load_policy
from privacy.renyi_filter import day_of

_log = logging.getLogger(__name__)

SIM_PASSPHRASE_FILE: Final = "synthetic.passphrase"  # noqa: S105
LEDGER_FILE: Final = "ledger.bin"
LEDGER_ANCHOR_FILE: Final = "ledger.anchor"
EMPLOYEE_CAP_FILE: Final = "employee_cap.json"
_LEDGER_INFO: Final = b"hearth-device-ledger-key"
UPLOADS_FILE: Final = "uploads.jsonl"
SIM_POLICY_FILE: Final = "policy.toml"


# The days each vault held when it was last read, by vault version (``held_days``).
_DAYS_CACHE: dict[str, tuple[tuple[int, int, int], frozenset[int]]] = {}


def clear_examples_cache() -> None:
    """Forget featurized vaults and unwrapped keys (a fresh process would not have them)."""
    device_cache.clear()
    _DAYS_CACHE.clear()


def _days_of(vault: Vault) -> frozenset[int]:
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


def simulated_device_home(sim_root: Path, partition_id: int) -> Path:
    """Where simulated employee ``partition_id`` keeps its state."""
    return sim_root / "devices" / f"device-{partition_id:03d}"


@dataclass(frozen=True)
class Device:
    """Paths and secrets of one device."""

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

        A real device: the policy it pinned at enrolment (``client.policy_pin``), never
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

    def examples(self, context_length: int) -> Examples:
        """Featurize everything in the vault, streaming it segment by segment.

        The actions are cached in memory for this process until the vault changes
        (``client.device_cache``), so a round's training and evaluation decrypt the
        vault once, and a simulation worker once per simulation. Retention runs
        first, so data past its lifetime is deleted before it is ever read, and so
        do the events of any modality the employee no longer consents to.
        """
        with self._open_vault() as vault:
            if vault.rollback is not None:  # an older copy of vault.db: not trained on
                raise VaultRollbackError(vault.rollback)
            version = vault.version()
            _DAYS_CACHE[str(self.vault_dir)] = (version, _days_of(vault))
            cached = device_cache.cached_actions(self.vault_dir, version)
            if cached is None:
                cached = action_sequence(vault.iter_events())
                device_cache.keep_actions(
                    self.vault_dir, version, cached, bounded=not self.simulated
                )
            return cached.windows(context_length)

    def _open_vault(self) -> Vault:
        """The vault, retention and consent enforced before anything is read.

        A simulated device unwraps its key once per process, not per round
        (``client.device_cache``); a vault that is new, in the old layout or mid
        rotation goes through ``Vault.open`` like a laptop's, which creates,
        migrates or refuses it.
        """
        data_policy = self.policy().data
        retention = data_policy.retention_days
        quota = data_policy.vault_quota_mb * 2**20
        wrapped = read_key_file(self.vault_dir) if self.simulated else None
        if (
            wrapped is not None
            and wrapped.version == KEY_FILE_VERSION
            and staged_generation(self.vault_dir) is None
            and not any(self.vault_dir.glob("*.old"))
        ):
            key = device_cache.data_key(self.vault_dir, self.passphrase)
            vault = Vault(self.vault_dir, key, wrapped.generation)
            try:
                vault.enforce_retention(retention, quota)
            except BaseException:
                vault.close()
                raise
            return vault
        consent = None if self.simulated else load_consent(self.home)
        return Vault.open(
            self.vault_dir,
            self.passphrase,
            retention_days=retention,
            quota_bytes=quota,
            keep_modalities=None if consent is None else consent.modalities,
        )

    def held_days(self) -> frozenset[int]:
        """The days of data the vault held when ``examples`` last read it (else read now)."""
        cached = _DAYS_CACHE.get(str(self.vault_dir))
        if cached is not None:
            return cached[1]
        if not self.vault_dir.exists():
            return frozenset()
        with Vault.open(self.vault_dir, self.passphrase) as vault:
            return _days_of(vault)

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

    def _ledger_key(self) -> bytes:
        directory = ensure_private_dir(self.privacy_dir)
        data_key = (
            device_cache.data_key(directory, self.passphrase)
            if self.simulated
            else load_or_create_data_key(directory, self.passphrase)
        )
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


def device_for(context: Context) -> Device:
    """The device a ClientApp invocation runs on."""
    node = context.node_config
    if "partition-id" in node:
        sim_root = str(context.run_config.get("sim-root", ""))
        if not sim_root:
            raise ValueError("simulation run needs run config 'sim-root' (set by hearth-sim)")
        root = Path(sim_root)
        passphrase = (root / SIM_PASSPHRASE_FILE).read_text().strip()
        # Simulated employees agreed to the simulation's policy, when it sets one.
        agreed = root / SIM_POLICY_FILE
        return Device(
            simulated_device_home(root, int(node["partition-id"])),
            passphrase,
            agreed if agreed.exists() else None,
            simulated=True,
        )
    return Device(hearth_home())
