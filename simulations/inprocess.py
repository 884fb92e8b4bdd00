"""Federated averaging in one process, on examples a simulation already holds.

The same local round devices run (``client.learning.training.train_round``: DP-SGD or its
non-private twin) and the same server step (FedAvgM on the mean of the clipped
updates), without Flower's processes: fast enough to search a learning rate or to
train on an event log's cases. A simulation may do this because it holds every
synthetic vault's key; no laptop or server runs it.

``run_user_level`` is the shipped user-level mechanism the same way: a Poisson cohort
from the OS CSPRNG each round, the device's local round and update clipping, each
device's distributed noise share (``client.learning.distributed_noise.add_share``) or
the server's central noise, rounds below ``min_cohort`` discarded, and
``DeltaFedAvg.step`` dividing the sum by the fixed ``q x N`` (``server.campaign``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from flwr.common import ndarrays_to_parameters
from numpy.typing import NDArray

from client.learning.clipping import clip_update, update_norm
from client.learning.distributed_noise import add_share
from client.learning.featurize import Examples, split_held_out
from client.learning.training import TrainConfig, evaluate, train_round
from policy.model import ModelConfig, NextActionPolicy, get_arrays, set_arrays
from privacy.distributed_noise import share_std
from privacy.policy import PrivacyPolicy
from privacy.randomness import gaussian, secret_generator
from strategies.delta_fedavg import DeltaFedAvg, apply_delta, momentum_step, unweighted_sum

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


@dataclass(frozen=True)
class UserLevelCampaign:
    """A campaign under a policy's user-level mechanism: ``rounds`` rounds at sampling ``q``."""

    rounds: int
    train: TrainConfig
    policy: PrivacyPolicy
    sampling: float
    server_learning_rate: float = 1.0
    server_momentum: float = 0.7
    seed: int = 7  # the initial model only; sampling and noise come from the OS CSPRNG
    # The rounds a device's ledger admits for its data (``device_spend``'s rounds within
    # the cap; None: no limit): a sampled device past them declines, as on a laptop.
    # The simulated data is one day's, so every round it joins charges the same day.
    device_rounds: int | None = None


@dataclass(frozen=True)
class UserLevelOutcome:
    """The trained model, each round's sampled cohort and whether it was aggregated.

    ``update_norms`` holds, per round, each contributor's update norm before the
    update clip: what ``update_clip_norm`` should be chosen against.
    """

    model: NextActionPolicy
    cohorts: tuple[int, ...]
    aggregated: tuple[bool, ...]
    update_norms: tuple[tuple[float, ...], ...] = ()
    declined: int = 0  # sampled device-rounds a device's ledger refused (``device_rounds``)


def _draw_central_noise(std: float, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """The server's draw (``server.app.draw_central_noise``): fresh OS entropy each time."""
    return gaussian(secret_generator(), std, shape)


def poisson_indices(population: int, rate: float) -> list[int]:
    """Each device joins with probability ``rate`` (``server.campaign.poisson_cohort``)."""
    if rate >= 1:
        return list(range(population))
    rng = secrets.SystemRandom()
    return [i for i in range(population) if rng.random() < rate]


def run_user_level(
    clients: Sequence[Examples], campaign: UserLevelCampaign, model_config: ModelConfig
) -> UserLevelOutcome:
    """One campaign as the ServerApp and ClientApps run it, without Flower's processes.

    Per round: a Poisson cohort at ``q``; each sampled device with data trains its
    local round (unless its ledger admits no more rounds: ``device_rounds``), clips
    its whole update to ``update_clip_norm`` and, under
    ``distributed_noise``, adds its share; the server discards a round with fewer
    than ``min_cohort`` contributors and otherwise steps with the sum over ``q x N``
    (central noise added there when the policy does not distribute it). Without
    central noise the denominator is the number of contributors, as on the server.
    """
    training = campaign.policy.training
    z = training.central_noise_multiplier
    torch.manual_seed(campaign.seed)
    strategy = DeltaFedAvg(
        initial_parameters=ndarrays_to_parameters(
            list(get_arrays(NextActionPolicy(model_config)).values())
        ),
        server_lr=campaign.server_learning_rate,
        server_momentum=campaign.server_momentum,
        noise_multiplier=0.0 if training.distributed_noise else z,
        clipping_norm=training.update_clip_norm,
        draw_noise=_draw_central_noise,
    )
    share = share_std(campaign.policy)
    cohorts, aggregated, norms = [], [], []
    joined = [0] * len(clients)
    declined = 0
    for _ in range(campaign.rounds):
        cohort = poisson_indices(len(clients), campaign.sampling)
        cohorts.append(len(cohort))
        updates, round_norms = [], []
        for index in cohort:
            if not len(clients[index]):
                continue  # a device without data declines the round
            if campaign.device_rounds is not None and joined[index] >= campaign.device_rounds:
                declined += 1
                continue  # its ledger refuses another round on the same data
            joined[index] += 1
            local = NextActionPolicy(model_config)
            set_arrays(local, strategy.global_arrays)
            result = train_round(local, clients[index], campaign.train)
            round_norms.append(update_norm(result.delta))
            update = clip_update(result.delta, training.update_clip_norm)
            updates.append(add_share(update, share) if share > 0 else update)
        norms.append(tuple(round_norms))
        if len(updates) < training.min_cohort or not updates:
            aggregated.append(False)
            continue
        denominator = campaign.sampling * len(clients) if z > 0 else float(len(updates))
        strategy.step(unweighted_sum(updates), denominator)
        aggregated.append(True)
    model = NextActionPolicy(model_config)
    set_arrays(model, strategy.global_arrays)
    return UserLevelOutcome(model, tuple(cohorts), tuple(aggregated), tuple(norms), declined)


def tune_user_level(
    train: Sequence[Examples],
    campaign: UserLevelCampaign,
    model_config: ModelConfig,
    grid: Sequence[float] = LEARNING_RATE_GRID,
) -> LearningRateSearch:
    """``tune_learning_rate`` for a campaign of sampled rounds (validation from ``train``)."""
    fits, validations = zip(*(split_held_out(t, VALIDATION_FRACTION) for t in train), strict=True)
    scores = []
    for rate in grid:
        candidate = replace(campaign, train=replace(campaign.train, learning_rate=rate))
        top1, _ = mean_accuracy(run_user_level(fits, candidate, model_config).model, validations)
        scores.append((rate, top1))
    best = max(scores, key=lambda s: (s[1], -s[0]))[0]
    return LearningRateSearch(best, tuple(scores))


@dataclass(frozen=True)
class ServerSearch:
    """The chosen server learning rate and momentum, and every candidate's validation top-1."""

    best: tuple[float, float]
    scores: tuple[tuple[float, float, float], ...]  # (server rate, momentum, top-1)


def tune_server(
    train: Sequence[Examples],
    campaign: UserLevelCampaign,
    model_config: ModelConfig,
    rates: Sequence[float],
    momenta: Sequence[float],
) -> ServerSearch:
    """The server optimizer with the best validation top-1, each candidate one whole campaign.

    Under noise each candidate is one noised campaign on ``train``'s fitting parts;
    the simulation chooses on synthetic devices and the choice ships as the campaign's
    run config, so a real population pays for the one campaign that runs. (Choosing on
    real devices by running several noised campaigns would charge each to the budget.)
    """
    fits, validations = zip(*(split_held_out(t, VALIDATION_FRACTION) for t in train), strict=True)
    scores = []
    for rate in rates:
        for momentum in momenta:
            candidate = replace(campaign, server_learning_rate=rate, server_momentum=momentum)
            model = run_user_level(fits, candidate, model_config).model
            scores.append((rate, momentum, mean_accuracy(model, validations)[0]))
    # Ties go to the smaller step (rate / (1 - momentum)): the one the noise moves least.
    best = max(scores, key=lambda s: (s[2], -s[0] / (1 - s[1])))
    return ServerSearch((best[0], best[1]), tuple(scores))
