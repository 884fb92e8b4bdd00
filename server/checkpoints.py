"""Checkpoints: the global model after each round, with a JSON sidecar.

``round-0003.npz`` holds the arrays by parameter name; ``round-0003.json`` holds
the round, the aggregated metrics, the cohort, and the privacy spent, so the
privacy team can audit a campaign without loading a model. A round that
aggregated nothing has no checkpoint: ``round-outcomes.jsonl`` records every
round's outcome (aggregated or not, and how many devices trained, were
unavailable or refused, by code), which is what ``hearth-server campaign run``
reads to tell whether a campaign aggregated anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

OUTCOMES_FILE = "round-outcomes.jsonl"


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


def append_round_outcome(directory: Path, outcome: dict[str, Any]) -> Path:
    """Append one round's outcome (counts only, never which device) to the outcomes file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / OUTCOMES_FILE
    with open(path, "a") as handle:
        handle.write(json.dumps(outcome, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_round_outcomes(directory: Path, run_id: int | None = None) -> list[dict[str, Any]]:
    """Every round outcome recorded in ``directory`` (of run ``run_id`` only, when given).

    A line cut short by a crash is skipped: the outcomes before it stay readable.
    """
    try:
        lines = (directory / OUTCOMES_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    outcomes = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and (run_id is None or record.get("run_id") == run_id):
            outcomes.append(record)
    return outcomes


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
