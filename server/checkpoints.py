"""Checkpoints: the global model after each round, with a JSON sidecar.

``round-0003.npz`` holds the arrays by parameter name; ``round-0003.json`` holds
the round, the aggregated metrics, the cohort, and the privacy spent, so the
privacy team can audit a campaign without loading a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def save_arrays(path: Path, names: list[str], arrays: list[NDArray[np.float32]]) -> Path:
    """Write arrays by name to ``path`` (``.npz``), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name.removesuffix(".npz") + ".tmp.npz")
    savez: Any = np.savez  # numpy types savez kwargs too narrowly
    savez(tmp, **dict(zip(names, arrays, strict=True)))
    tmp.replace(path)
    return path


def save_checkpoint(
    directory: Path,
    server_round: int,
    names: list[str],
    arrays: list[NDArray[np.float32]],
    sidecar: dict[str, Any],
) -> Path:
    """Write weights and sidecar for one round; returns the weights' path."""
    stem = f"round-{server_round:04d}"
    weights = save_arrays(directory / f"{stem}.npz", names, arrays)
    payload = {"round": server_round, "weights": weights.name, **sidecar}
    _atomic_write(directory / f"{stem}.json", json.dumps(payload, indent=2).encode())
    return weights


def load_checkpoint(path: Path) -> dict[str, NDArray[np.float32]]:
    """Arrays of a saved round, by parameter name."""
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest ``round-*.npz`` in ``directory``, if any."""
    found = sorted(directory.glob("round-[0-9][0-9][0-9][0-9].npz"))
    return found[-1] if found else None


def read_sidecars(directory: Path) -> list[dict[str, Any]]:
    """Every round's sidecar, in round order."""
    return [
        json.loads(p.read_text()) for p in sorted(directory.glob("round-[0-9][0-9][0-9][0-9].json"))
    ]
