"""One device's local state as the ClientApp sees it: its vault and its records.

A real laptop uses ``hearth_home()``. A simulated employee (a node of Flower's
simulation engine, identified by ``partition-id``) lives under the run's
``sim-root``, seeded beforehand by ``hearth-sim``; its vault key comes from the
synthetic passphrase file there, which exists only for synthetic employees.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flwr.app import Context

from client import device_cache
from client.deployment import admit, record
from client.featurize import Examples, action_sequence
from client.home import ensure_private_dir, hearth_home
from client.keys import load_or_create_data_key
from client.policy_pin import device_policy
from client.vault import Vault
from privacy.ledger import DeviceLedger
from privacy.policy import PrivacyPolicy, load_policy

SIM_PASSPHRASE_FILE: Final = "synthetic.passphrase"  # noqa: S105
LEDGER_FILE: Final = "ledger.bin"
EMPLOYEE_CAP_FILE: Final = "employee_cap.json"
_LEDGER_INFO: Final = b"hearth-device-ledger-key"
UPLOADS_FILE: Final = "uploads.jsonl"
SIM_POLICY_FILE: Final = "policy.toml"


def clear_examples_cache() -> None:
    """Forget featurized vaults and unwrapped keys (a fresh process would not have them)."""
    device_cache.clear()


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
        first, so data past its lifetime is deleted before it is ever read.
        """
        data_policy = self.policy().data
        with self._open_vault() as vault:
            vault.enforce_retention(data_policy.retention_days, data_policy.vault_quota_mb * 2**20)
            version = vault.version()
            cached = device_cache.cached_actions(self.vault_dir, version)
            if cached is None:
                cached = action_sequence(vault.iter_events())
                device_cache.keep_actions(
                    self.vault_dir, version, cached, bounded=not self.simulated
                )
            return cached.windows(context_length)

    def _open_vault(self) -> Vault:
        """The vault; a simulated device unwraps its key once per process, not per round."""
        if self.simulated:
            return Vault(self.vault_dir, device_cache.data_key(self.vault_dir, self.passphrase))
        return Vault.open(self.vault_dir, self.passphrase)

    @property
    def privacy_dir(self) -> Path:
        """The ledger and the employee's cap; outlives ``hearth data delete``."""
        return self.home / "privacy"

    def ledger(self) -> DeviceLedger:
        """The encrypted record of every local DP round.

        Its key is its own (wrapped like the vault's, never derived from it), so
        deleting the recorded data does not erase what was already spent on it.
        """
        directory = ensure_private_dir(self.privacy_dir)
        data_key = (
            device_cache.data_key(directory, self.passphrase)
            if self.simulated
            else load_or_create_data_key(directory, self.passphrase)
        )
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LEDGER_INFO).derive(
            data_key
        )
        return DeviceLedger(self.privacy_dir / LEDGER_FILE, key)

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
