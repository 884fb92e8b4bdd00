"""What a simulation knows that no server may: each synthetic employee's exact figures.

A real server sees only noised held-out sums and no device's spend. A simulation
holds every synthetic vault's key, so after a campaign it can score the final
global model exactly on each employee's held-out data, beside the per-person
baselines (most frequent action, bigram of the last action) and each device's
ledger. These are yardsticks for the ML team; nothing here runs on a laptop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from client.app import HELD_OUT_FRACTION
from client.device import SIM_PASSPHRASE_FILE, SIM_POLICY_FILE, Device, simulated_device_home
from client.featurize import split_held_out
from client.training import evaluate
from policy.baselines import Bigram, MostFrequent
from policy.model import ModelConfig, NextActionPolicy, set_arrays
from privacy.ledger import BudgetRule
from server.checkpoints import latest_checkpoint, load_checkpoint


@dataclass(frozen=True)
class GroundTruth:
    """Example-weighted means over employees' held-out data, and the devices' spend."""

    top1: float
    top3: float
    frequent_top1: float
    frequent_top3: float
    bigram_top1: float
    bigram_top3: float
    held_out_examples: int
    epsilon_mean: float
    epsilon_max: float
    delta: float


def _model(checkpoint_dir: Path, context_length: int) -> NextActionPolicy:
    latest = latest_checkpoint(checkpoint_dir)
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir}")
    model = NextActionPolicy(ModelConfig(context_length=context_length))
    set_arrays(model, list(load_checkpoint(latest).values()))
    return model


def ground_truth(
    root: Path, employees: int, checkpoint_dir: Path, context_length: int = 8
) -> GroundTruth:
    """Score the newest checkpoint and the baselines on every synthetic employee."""
    passphrase = (root / SIM_PASSPHRASE_FILE).read_text().strip()
    agreed = root / SIM_POLICY_FILE
    model = _model(checkpoint_dir, context_length)
    sums = np.zeros(6)
    total = 0
    spent: list[float] = []
    delta = 0.0
    for employee in range(employees):
        device = Device(
            simulated_device_home(root, employee),
            passphrase,
            agreed if agreed.exists() else None,
            simulated=True,
        )
        train, held = split_held_out(device.examples(context_length), HELD_OUT_FRACTION)
        if len(held) == 0:
            continue
        scores = evaluate(model, held)
        frequent = MostFrequent(train.target)
        bigram = Bigram(train.context[:, -1], train.target)
        previous = held.context[:, -1]
        n = len(held)
        sums += n * np.array(
            [
                scores["top1"],
                scores["top3"],
                frequent.accuracy(held.target, 1),
                frequent.accuracy(held.target, 3),
                bigram.accuracy(previous, held.target, 1),
                bigram.accuracy(previous, held.target, 3),
            ]
        )
        total += n
        rule = BudgetRule.from_policy(device.policy())
        spent.append(device.ledger().spent(rule))
    top1, top3, f1, f3, b1, b3 = (float(m) for m in sums / max(1, total))
    return GroundTruth(
        top1,
        top3,
        frequent_top1=f1,
        frequent_top3=f3,
        bigram_top1=b1,
        bigram_top3=b3,
        held_out_examples=total,
        epsilon_mean=float(np.mean(spent)) if spent else 0.0,
        epsilon_max=float(np.max(spent)) if spent else 0.0,
        delta=delta,
    )
