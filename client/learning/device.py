"""One device's local state as the ClientApp sees it: its vault and its records.

``Device`` is ``client.control.device_records.DeviceRecords`` (policy, admission,
ledger, cap, uploads) plus the examples its vault holds, featurized once per process.

A real laptop uses ``hearth_home()``. A simulated employee (a node of Flower's
simulation engine, identified by ``partition-id``) lives under the run's
``sim-root``, seeded beforehand by ``hearth-sim``; its vault key comes from the
synthetic passphrase file there, which exists only for synthetic employees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from flwr.app import Context

from client.control.consent import load_consent
from client.control.device_records import DeviceRecords, forget_held_days, note_held_days
from client.learning import device_cache
from client.learning.featurize import Examples, action_sequence
from client.storage.home import hearth_home
from client.storage.key_lifecycle import staged_generation
from client.storage.keys import KEY_FILE_VERSION, read_key_file
from client.storage.vault import Vault
from client.storage.vault_store import VaultRollbackError

SIM_PASSPHRASE_FILE: Final = "synthetic.passphrase"  # noqa: S105
SIM_POLICY_FILE: Final = "policy.toml"


def clear_examples_cache() -> None:
    """Forget featurized vaults and unwrapped keys (a fresh process would not have them)."""
    device_cache.clear()
    forget_held_days()


def simulated_device_home(sim_root: Path, partition_id: int) -> Path:
    """Where simulated employee ``partition_id`` keeps its state."""
    return sim_root / "devices" / f"device-{partition_id:03d}"


@dataclass(frozen=True)
class Device(DeviceRecords):
    """One device as the ClientApp sees it: its records, and the examples its vault holds."""

    def examples(self, context_length: int) -> Examples:
        """Featurize everything in the vault, streaming it segment by segment.

        The actions are cached in memory for this process until the vault changes
        (``client.learning.device_cache``), so a round's training and evaluation decrypt the
        vault once, and a simulation worker once per simulation. Retention runs
        first, so data past its lifetime is deleted before it is ever read, and so
        do the events of any modality the employee no longer consents to.
        """
        with self._open_vault() as vault:
            if vault.rollback is not None:  # an older copy of vault.db: not trained on
                raise VaultRollbackError(vault.rollback)
            version = vault.version()
            note_held_days(self.vault_dir, vault)
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
        (``client.learning.device_cache``); a vault that is new, in the old layout or mid
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

    def _data_key(self, directory: Path) -> bytes:
        """A simulated device unwraps each key once per process (``device_cache``)."""
        if self.simulated:
            return device_cache.data_key(directory, self.passphrase)
        return super()._data_key(directory)


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
