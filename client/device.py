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

from flwr.app import Context

from client.featurize import Examples, featurize
from client.home import ensure_private_dir, hearth_home
from client.training import HistoryEntry
from client.vault import Vault

SIM_PASSPHRASE_FILE: Final = "synthetic.passphrase"  # noqa: S105
HISTORY_FILE: Final = "local_dp_history.json"
UPLOADS_FILE: Final = "uploads.jsonl"


_CACHE_ENTRIES: Final = 128  # simulated devices served by one worker process
_EXAMPLES_CACHE: dict[tuple[str, int, tuple[int, int]], Examples] = {}


def simulated_device_home(sim_root: Path, partition_id: int) -> Path:
    """Where simulated employee ``partition_id`` keeps its state."""
    return sim_root / "devices" / f"device-{partition_id:03d}"


@dataclass(frozen=True)
class Device:
    """Paths and secrets of one device."""

    home: Path
    passphrase: str | None = None

    @property
    def vault_dir(self) -> Path:
        """The encrypted vault of this device."""
        return self.home / "vault"

    def examples(self, context_length: int) -> Examples:
        """Featurize everything in the vault, streaming it segment by segment.

        The result is cached in memory for this process until the vault changes,
        so a round's training and evaluation decrypt the vault once.
        """
        with Vault.open(self.vault_dir, self.passphrase) as vault:
            version = (str(self.vault_dir), context_length, vault.version())
            cached = _EXAMPLES_CACHE.get(version)
            if cached is None:
                cached = featurize(vault.iter_events(), context_length)
                if len(_EXAMPLES_CACHE) >= _CACHE_ENTRIES:
                    _EXAMPLES_CACHE.pop(next(iter(_EXAMPLES_CACHE)))
                _EXAMPLES_CACHE[version] = cached
            return cached

    def dp_history(self) -> list[HistoryEntry]:
        """Every local DP-SGD round this device has run: (noise, sample rate, steps)."""
        path = self.home / "privacy" / HISTORY_FILE
        if not path.exists():
            return []
        return [(float(z), float(q), int(s)) for z, q, s in json.loads(path.read_text())]

    def record_dp_round(self, entry: HistoryEntry) -> None:
        """Append one round to the history, atomically."""
        directory = ensure_private_dir(self.home / "privacy")
        history = [*self.dp_history(), entry]
        tmp = directory / (HISTORY_FILE + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(history, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(directory / HISTORY_FILE)

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
        return Device(simulated_device_home(root, int(node["partition-id"])), passphrase)
    return Device(hearth_home())
