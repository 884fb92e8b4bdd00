"""What a simulation knows that no server may: each synthetic employee's exact figures.

A real server sees only noised held-out sums and no device's spend. A simulation
holds every synthetic vault's key, so after a campaign it can score the final
global model exactly on each employee's held-out data, beside the per-person
baselines (most frequent action, bigram and trigram of the last actions), the
personalized model each device would fine-tune from it on its own training data
(``client.learning.training.personalize``, never uploaded) and each device's ledger. These
are yardsticks for the ML team; nothing here runs on a laptop.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from client.learning.app import HELD_OUT_FRACTION
from client.learning.device import (
    SIM_PASSPHRASE_FILE,
    SIM_POLICY_FILE,
    Device,
    simulated_device_home,
)
from client.learning.featurize import split_held_out
from client.learning.threads import training_threads
from client.learning.training import PersonalizeConfig, evaluate, personalize
from policy.baselines import Bigram, MostFrequent, NGram
from policy.model import NextActionPolicy
from privacy.ledger import BudgetRule
from server.model_store import GROUND_TRUTH_FILE, load_model


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
    trigram_top1: float = 0.0
    trigram_top3: float = 0.0
    personal_top1: float | None = None
    personal_top3: float | None = None

    def write(self, checkpoint_dir: Path) -> Path:
        """Leave the figures beside the checkpoints, for ``hearth-server model show``."""
        path = checkpoint_dir / GROUND_TRUTH_FILE
        record = {
            **asdict(self),
            "note": "simulation only: exact top-1/top-3 on every synthetic employee's held-out "
            "data; personal_*: each device's local fine-tuning of the global model mixed "
            "with its own action counts (client.learning.personal_ngram) and the received "
            "global model, never uploaded",
        }
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path


def _model(checkpoint_dir: Path) -> NextActionPolicy:
    model, _ = load_model(checkpoint_dir)
    return model


def ground_truth(
    root: Path,
    employees: int,
    checkpoint_dir: Path,
    personalization: PersonalizeConfig | None = None,
) -> GroundTruth:
    """Score the newest checkpoint, its personalized copies and the baselines on every employee.

    ``personalization`` None skips the personalized figures.
    """
    with training_threads():  # as the devices fine-tune: one thread each
        return _score(root, employees, checkpoint_dir, personalization)


def _score(
    root: Path,
    employees: int,
    checkpoint_dir: Path,
    personalization: PersonalizeConfig | None,
) -> GroundTruth:
    passphrase = (root / SIM_PASSPHRASE_FILE).read_text().strip()
    agreed = root / SIM_POLICY_FILE
    model = _model(checkpoint_dir)
    context_length = model.config.context_length
    sums = np.zeros(10)
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
        personal = (
            evaluate(personalize(model, train, personalization), held)
            if personalization is not None
            else {"top1": 0.0, "top3": 0.0}
        )
        frequent = MostFrequent(train.target)
        bigram = Bigram(train.context[:, -1], train.target)
        trigram = NGram(train.context, train.target, 3)
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
                trigram.accuracy(held.context, held.target, 1),
                trigram.accuracy(held.context, held.target, 3),
                personal["top1"],
                personal["top3"],
            ]
        )
        total += n
        policy = device.policy()
        delta = policy.privacy.delta
        spent.append(device.ledger().spent(BudgetRule.from_policy(policy)))
    top1, top3, f1, f3, b1, b3, t1, t3, p1, p3 = (float(m) for m in sums / max(1, total))
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
        trigram_top1=t1,
        trigram_top3=t3,
        personal_top1=p1 if personalization is not None else None,
        personal_top3=p3 if personalization is not None else None,
    )
