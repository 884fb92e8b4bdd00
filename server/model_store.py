"""A campaign's checkpoints read as models: rounds, their metrics, and the model of a round.

Every checkpoint's sidecar carries the model's configuration with its vocabulary
(``ModelConfig.to_dict``); checkpoints written before that get the default
desktop-action vocabulary at the run config's context length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from policy.model import ModelConfig, NextActionPolicy, set_arrays
from server.checkpoints import load_checkpoint, read_sidecars

# Written by simulations beside the checkpoints: exact figures no server can know.
GROUND_TRUTH_FILE: Final = "ground-truth.json"


class ModelStoreError(ValueError):
    """A checkpoint directory or round that cannot be read; the message says what to fix."""


@dataclass(frozen=True)
class RoundSummary:
    """One round as the ML and privacy teams read it (accuracy from noised sums)."""

    round: int
    top1: float | None
    top3: float | None
    loss: float | None
    cohort: int
    epsilon_example_cap: float | None
    epsilon_user: float | None
    delta: float | None
    model_version: str

    @classmethod
    def from_sidecar(cls, row: dict[str, Any]) -> RoundSummary:
        """Read one sidecar; a missing metric stays None."""
        ev = row.get("evaluate", {})

        def metric(key: str) -> float | None:
            value = ev.get(key)
            return float(value) if isinstance(value, int | float) else None

        return cls(
            round=int(row["round"]),
            top1=metric("top1"),
            top3=metric("top3"),
            loss=metric("loss"),
            cohort=int(row.get("cohort_size", 0) or 0),
            epsilon_example_cap=row.get("epsilon_example_cap"),
            epsilon_user=row.get("epsilon_user"),
            delta=row.get("delta"),
            model_version=str(row.get("model_version", "")),
        )


def sidecars(checkpoint_dir: Path) -> list[dict[str, Any]]:
    """Every round's sidecar, or a ``ModelStoreError`` naming the directory."""
    if not checkpoint_dir.is_dir():
        raise ModelStoreError(f"{checkpoint_dir} is not a directory of checkpoints")
    rows = read_sidecars(checkpoint_dir)
    if not rows:
        raise ModelStoreError(f"{checkpoint_dir} holds no round-NNNN.json checkpoint")
    return rows


def rounds(checkpoint_dir: Path) -> list[RoundSummary]:
    """Each round's metrics and privacy, in round order."""
    return [RoundSummary.from_sidecar(row) for row in sidecars(checkpoint_dir)]


def model_config_of(sidecar: dict[str, Any]) -> ModelConfig:
    """The model's configuration as the checkpoint recorded it."""
    recorded = sidecar.get("model")
    if recorded:
        return ModelConfig.from_dict(recorded)
    context = int(sidecar.get("config", {}).get("context_length", ModelConfig().context_length))
    return ModelConfig.from_dict({"context_length": context})  # as it was then: no gaps


def sidecar_of(checkpoint: Path, server_round: int | None = None) -> tuple[Path, dict[str, Any]]:
    """The weights file and sidecar of ``checkpoint``.

    ``checkpoint`` is a checkpoint directory (its newest round, or ``server_round``)
    or one ``round-NNNN.npz`` file.
    """
    if checkpoint.is_file():
        sidecar = checkpoint.with_suffix(".json")
        if not sidecar.is_file():
            raise ModelStoreError(f"{checkpoint} has no sidecar {sidecar.name} beside it")
        return checkpoint, json.loads(sidecar.read_text())
    rows = sidecars(checkpoint)
    if server_round is None:
        row = rows[-1]
    else:
        found = [r for r in rows if r["round"] == server_round]
        if not found:
            have = ", ".join(str(r["round"]) for r in rows)
            raise ModelStoreError(f"{checkpoint} has no round {server_round} (rounds: {have})")
        row = found[0]
    weights = checkpoint / str(row.get("weights", f"round-{row['round']:04d}.npz"))
    if not weights.is_file():
        raise ModelStoreError(f"the weights of round {row['round']} are missing: {weights}")
    return weights, row


def load_model(
    checkpoint: Path, server_round: int | None = None
) -> tuple[NextActionPolicy, dict[str, Any]]:
    """The global model of a round, in eval mode, with its sidecar."""
    weights, row = sidecar_of(checkpoint, server_round)
    model = NextActionPolicy(model_config_of(row))
    set_arrays(model, list(load_checkpoint(weights).values()))
    model.eval()
    return model, row


def ground_truth_of(checkpoint_dir: Path) -> dict[str, Any] | None:
    """A simulation's exact figures beside the checkpoints, if it left them."""
    path = checkpoint_dir / GROUND_TRUTH_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None
