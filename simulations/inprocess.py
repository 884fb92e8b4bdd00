"""Federated averaging in one process, on examples a simulation already holds.

The same local round devices run (``client.learning.training.train_round``: DP-SGD or its
non-private twin) and the same server step (FedAvgM on the mean of the clipped
updates), without Flower's processes: fast enough to search a learning rate or to
train on an event log's cases. A simulation may do this because it holds every
synthetic vault's key; no laptop or server runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from client.learning.clipping import clip_update
from client.learning.featurize import Examples, split_held_out
from client.learning.training import TrainConfig, evaluate, train_round
from policy.model import ModelConfig, NextActionPolicy, get_arrays, set_arrays
from strategies.delta_fedavg import apply_delta, momentum_step

# Learning rates the non-private run chooses from (a factor of 2 apart).
LEARNING_RATE_GRID: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class Federation:
    """A campaign's shape: rounds, the local round, the server's step and update clipping."""

    rounds: int
    train: TrainConfig
    server_learning_rate: float = 1.0
    server_momentum: float = 0.7
    update_clip_norm: float = 0.0  # <= 0: no clipping of whole updates
    seed: int = 7  # the initial model only, as the run config's seed


def federate(
    clients: Sequence[Examples], federation: Federation, model_config: ModelConfig
) -> NextActionPolicy:
    """Train a global model by FedAvgM over every client's examples, every round."""
    torch.manual_seed(federation.seed)
    model = NextActionPolicy(model_config)
    weights = list(get_arrays(model).values())
    velocity = None
    present = [c for c in clients if len(c)]
    for _ in range(federation.rounds):
        deltas = []
        for examples in present:
            local = NextActionPolicy(model_config)
            set_arrays(local, weights)
            result = train_round(local, examples, federation.train)
            deltas.append(clip_update(result.delta, federation.update_clip_norm))
        if not deltas:
            break
        mean = [np.mean(np.stack(p), axis=0).astype(np.float32) for p in zip(*deltas, strict=True)]
        velocity = momentum_step(velocity, mean, federation.server_momentum)
        weights = apply_delta(weights, velocity, federation.server_learning_rate)
    set_arrays(model, weights)
    return model


def mean_accuracy(model: NextActionPolicy, held: Sequence[Examples]) -> tuple[float, float]:
    """Example-weighted top-1 and top-3 over every client's held-out examples."""
    total = sum(len(h) for h in held)
    top1 = top3 = 0.0
    for examples in held:
        if len(examples):
            scores = evaluate(model, examples)
            top1 += scores["top1"] * len(examples)
            top3 += scores["top3"] * len(examples)
    return top1 / max(1, total), top3 / max(1, total)


@dataclass(frozen=True)
class LearningRateSearch:
    """The chosen learning rate and the validation top-1 of every candidate."""

    best: float
    scores: tuple[tuple[float, float], ...]


def tune_learning_rate(
    train: Sequence[Examples],
    federation: Federation,
    model_config: ModelConfig,
    grid: Sequence[float] = LEARNING_RATE_GRID,
) -> LearningRateSearch:
    """Pick the learning rate with the best top-1 on validation data carved from ``train``.

    Each client's training part is split in time order; the newest part validates.
    The test data (each device's held-out part) is never looked at, so the chosen
    rate does not flatter the figure it is compared by.
    """
    fits, validations = zip(*(split_held_out(t, VALIDATION_FRACTION) for t in train), strict=True)
    scores = []
    for rate in grid:
        candidate = replace(federation, train=replace(federation.train, learning_rate=rate))
        top1, _ = mean_accuracy(federate(fits, candidate, model_config), validations)
        scores.append((rate, top1))
    best = max(scores, key=lambda s: (s[1], -s[0]))[0]
    return LearningRateSearch(best, tuple(scores))
