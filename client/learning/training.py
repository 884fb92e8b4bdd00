"""Local training with DP-SGD (Opacus), returning only the change to the model.

The privacy engine is rebuilt each round, but what it spends is not forgotten:
the caller passes the history of earlier rounds (noise multiplier, sample rate,
steps) and gets back this round's entry, so epsilon accumulates in the ledger.

Two things here are what a curious server must not be able to predict or infer:

- the randomness: Poisson sampling and the gradient noise come from a generator
  seeded afresh from the OS each round (``privacy.randomness``), never from a
  seed in the run config, the round number or anything else the server sees;
- the shape of the round: the sample rate, the number of steps and the batch the
  noise is divided by are the policy's. Derived from the device's example count
  they would reveal it (in the step count, and in the noise's spread, which a
  server estimates precisely over 100,000 coordinates).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn

from client.learning.clipped_gradients import ClippedGradients
from client.learning.featurize import Examples
from client.learning.personal_ngram import PersonalCounts, PersonalPolicy, check_weights
from policy.model import NextActionPolicy, get_arrays
from policy.replies import EVAL_LOSS_BOUND, EVALUATE_SUMS
from privacy.accountants import epsilon_local
from privacy.randomness import gaussian, poisson_mask, secret_generator

HistoryEntry = tuple[float, float, int]
# Turns a batch's (batch,) per-example losses into ``.grad``: their mean's backward
# without privacy, ``ClippedGradients.backward`` (the clipped sum) with it.
Backward = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class TrainConfig:
    """One local round: its shape and privacy from the policy, its learning rate from the server."""

    sample_rate: float = 0.25
    steps: int = 8
    batch_size: int = 512
    learning_rate: float = 1.0
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    private: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.sample_rate <= 1:
            raise ValueError("sample rate must be in (0, 1]")
        if self.batch_size < 1 or self.steps < 1:
            raise ValueError("batch size and steps must be at least 1")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError("learning-rate must be a positive number")
        if self.max_grad_norm <= 0:
            raise ValueError("max-grad-norm must be positive")
        if self.noise_multiplier < 0 or not 0 < self.delta < 1:
            raise ValueError("noise-multiplier must be >= 0 and delta in (0, 1)")


@dataclass(frozen=True)
class PlannedRound:
    """What a round will spend, known before any training happens."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def as_history(self) -> HistoryEntry:
        """The (noise, sample rate, steps) triple accountants compose."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


@dataclass(frozen=True)
class RoundResult:
    """The outcome of one local round: a delta and what it cost (for the device only)."""

    delta: list[NDArray[np.float32]]
    num_examples: int
    loss: float
    planned: PlannedRound | None
    seconds: float


def plan_round(config: TrainConfig) -> PlannedRound:
    """The sampling and steps of a round: the policy's, whatever the device holds."""
    return PlannedRound(config.noise_multiplier, config.sample_rate, config.steps)


def epsilon_spent(history: list[HistoryEntry], delta: float) -> float:
    """Epsilon of one example on this device after every round in ``history`` (RDP)."""
    return epsilon_local(history, delta, "rdp")


def poisson_batches(
    num_examples: int, sample_rate: float, steps: int, rng: np.random.Generator
) -> Iterator[torch.Tensor]:
    """Yield index batches where each example joins each step with probability ``q``.

    Poisson sampling is what the RDP analysis assumes; drawing it vectorized avoids
    a DataLoader's per-example overhead.
    """
    for _ in range(steps):
        yield torch.from_numpy(np.flatnonzero(poisson_mask(rng, num_examples, sample_rate)))


class DeviceNoiseOptimizer(DPOptimizerFastGradientClipping):  # type: ignore[misc]  # Opacus is untyped
    """Opacus' DP optimizer for clipped gradient sums, its noise from the device's generator.

    ``p.grad`` holds the sum of the batch's clipped per-example gradients
    (``ClippedGradients``); Opacus adds the noise, divides by the expected batch
    size and steps. Opacus draws from a ``torch.Generator`` (64-bit seed) or, in
    secure mode, from torchcsprng, which does not build for this torch; this draws
    the same Gaussian from ``privacy.randomness`` instead, for all parameters in one
    call (the same independent draws per coordinate, without a call per tensor).
    """

    def __init__(self, *args: object, rng: np.random.Generator, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.device_rng = rng

    def accumulate(self) -> None:
        """Take each fresh ``p.grad`` as the step's sum (one batch a step: no copy needed)."""
        for p in self.params:
            p.summed_grad = p.grad.detach()

    def add_noise(self) -> None:
        """Add N(0, (z C)^2) to each summed clipped gradient (Opacus' contract for p.grad)."""
        std = self.noise_multiplier * self.max_grad_norm
        sizes = [p.summed_grad.numel() for p in self.params]
        noise = torch.from_numpy(gaussian(self.device_rng, std, (sum(sizes),)))
        # Rounded to the parameters' float32 only now, as the hardening asks.
        noise = noise.to(self.params[0].dtype)
        parts = torch.split(noise, sizes)
        for p, part in zip(self.params, parts, strict=True):
            summed: torch.Tensor = p.summed_grad
            _check_processed_flag(summed)
            p.grad = (summed + part.view_as(summed)).view_as(p)
            _mark_as_processed(summed)


def _shuffled_batches(
    num_examples: int, batch_size: int, steps: int, rng: np.random.Generator
) -> Iterator[torch.Tensor]:
    """The non-private twin: the same number of steps, shuffled fixed-size batches."""
    done = 0
    while done < steps:
        order = torch.from_numpy(rng.permutation(num_examples))
        for start in range(0, num_examples, batch_size):
            if done == steps:
                return
            yield order[start : start + batch_size]
            done += 1


def train_round(model: nn.Module, examples: Examples, config: TrainConfig) -> RoundResult:
    """Train ``model`` in place on ``examples``; return the delta of its parameters."""
    if len(examples) == 0:
        raise ValueError("no training examples on this device")
    started = time.perf_counter()
    rng = secret_generator()
    before = get_arrays(model)
    optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate)
    planned: PlannedRound | None = None
    clipper: ClippedGradients | None = None
    backward: Backward = _mean_backward
    if config.private:
        planned = plan_round(config)
        # Each example's gradient clipped to max_grad_norm and summed in one
        # backward pass (``clipped_gradients``: Opacus' ghost-clipping norms and
        # clipping factor, without its second backward pass).
        clipper = ClippedGradients(model, config.max_grad_norm)
        backward = clipper.backward
        optimizer = DeviceNoiseOptimizer(
            optimizer,
            noise_multiplier=config.noise_multiplier,
            max_grad_norm=config.max_grad_norm,
            expected_batch_size=config.batch_size,
            loss_reduction="mean",
            rng=rng,
        )
        batches = poisson_batches(len(examples), planned.sample_rate, planned.steps, rng)
    else:
        batch = max(1, round(config.sample_rate * len(examples)))
        batches = _shuffled_batches(len(examples), batch, config.steps, rng)
    try:
        loss = _run_steps(model, optimizer, backward, examples, batches)
    finally:
        if clipper is not None:
            clipper.remove()
    after = get_arrays(model)
    delta = [after[name] - before[name] for name in before]
    return RoundResult(delta, len(examples), loss, planned, time.perf_counter() - started)


def _mean_backward(losses: torch.Tensor) -> None:
    losses.mean().backward()  # type: ignore[no-untyped-call]  # torch leaves it untyped


def _run_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    backward: Backward,
    examples: Examples,
    batches: Iterable[torch.Tensor],
) -> float:
    context = torch.from_numpy(examples.context)
    category = torch.from_numpy(examples.category)
    gaps = torch.from_numpy(examples.gaps)
    target = torch.from_numpy(examples.target)
    criterion = nn.CrossEntropyLoss(reduction="none")
    model.train()
    total, count = 0.0, 0
    for index in batches:
        optimizer.zero_grad(set_to_none=True)
        if len(index) == 0:
            # An empty Poisson batch is still a step: the optimizer adds pure noise.
            if isinstance(optimizer, DPOptimizerFastGradientClipping):
                _noise_only_step(model, optimizer)
            continue
        losses = criterion(model(context[index], category[index], gaps[index]), target[index])
        backward(losses)
        optimizer.step()
        total += float(losses.detach().sum())
        count += len(index)
    return total / max(1, count)


def _noise_only_step(model: nn.Module, optimizer: DPOptimizerFastGradientClipping) -> None:
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()


@torch.no_grad()
def held_out_sums(
    model: nn.Module, examples: Examples, batch_size: int = 1024
) -> NDArray[np.float64]:
    """Per-example contributions summed, in the order of ``policy.replies.EVALUATE_SUMS``.

    Each example adds at most 1 to each entry (its loss is clipped to
    ``EVAL_LOSS_BOUND`` and scaled to [0, 1]), so one example moves the vector by at
    most ``EVAL_SENSITIVITY`` in L2: the sensitivity the released noise is calibrated to.
    """
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="none")
    sums = np.zeros(len(EVALUATE_SUMS), dtype=np.float64)
    for start in range(0, len(examples), batch_size):
        part = examples.slice(start, start + batch_size)
        target = torch.from_numpy(part.target)
        logits = model(
            torch.from_numpy(part.context),
            torch.from_numpy(part.category),
            torch.from_numpy(part.gaps),
        )
        losses = criterion(logits, target).clamp(max=EVAL_LOSS_BOUND) / EVAL_LOSS_BOUND
        ranked = logits.topk(3, dim=1).indices
        sums += (
            float((ranked[:, 0] == target).sum()),
            float((ranked == target[:, None]).any(dim=1).sum()),
            float(losses.sum()),
            float(len(part)),
        )
    return sums


def evaluate(model: nn.Module, examples: Examples) -> dict[str, float]:
    """Exact top-1, top-3 and clipped loss (for simulations, which may see the data)."""
    top1, top3, loss, count = held_out_sums(model, examples)
    n = max(1.0, count)
    return {"loss": loss * EVAL_LOSS_BOUND / n, "top1": top1 / n, "top3": top3 / n}


@dataclass(frozen=True)
class PersonalizeConfig:
    """Local fine-tuning of the received global model, mixed with the person's own counts.

    ``counts_weight`` is the weight of the device's own interpolated counts
    (``client.learning.personal_ngram``) in the mixture and ``global_weight`` that
    of the global model as received; the fine-tuned copy has the rest. Both 0 is
    fine-tuning alone. Nothing personal is ever uploaded. The defaults were chosen
    on the demo devices' validation tails (the last 20% of each training part),
    never on held-out data: 10 epochs (fine-tuned copy's top-1), counts 0.6
    (likelihood), global 0.1 (top-1).
    """

    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 64
    counts_weight: float = 0.6
    global_weight: float = 0.1

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError("personalization needs epochs >= 0, batch size >= 1, a positive rate")
        check_weights(self.counts_weight, self.global_weight)


def personalize(
    global_model: NextActionPolicy, examples: Examples, config: PersonalizeConfig | None = None
) -> nn.Module:
    """A personal copy of ``global_model``, fine-tuned on this device's own examples.

    FedPer/Ditto-style personalization: the shared model learns what people have in
    common under DP; each device adapts a copy to its own habits, and mixes it with
    its own action counts (``client.learning.personal_ngram``, ``counts_weight``).
    The copy and the counts never leave the device (no reply, upload or metric
    carries them or anything computed from them), so they need no noise: like the
    data they were fitted on, only the vault protects them. ``global_model`` is
    left unchanged.
    """
    config = config or PersonalizeConfig()
    model = _fine_tune(copy.deepcopy(global_model), examples, config)
    if config.counts_weight == config.global_weight == 0 or len(examples) == 0:
        return model
    counts = PersonalCounts(examples, global_model.config.vocab_size)
    shared = copy.deepcopy(global_model).eval() if config.global_weight > 0 else None
    return PersonalPolicy(model, counts, config.counts_weight, shared, config.global_weight)


def _fine_tune(model: nn.Module, examples: Examples, config: PersonalizeConfig) -> nn.Module:
    if len(examples) == 0 or config.epochs == 0:
        return model
    rng = secret_generator()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    context = torch.from_numpy(examples.context)
    category = torch.from_numpy(examples.category)
    gaps = torch.from_numpy(examples.gaps)
    target = torch.from_numpy(examples.target)
    criterion = nn.CrossEntropyLoss()
    model.train()
    for _ in range(config.epochs):
        order = torch.from_numpy(rng.permutation(len(examples)))
        for start in range(0, len(examples), config.batch_size):
            index = order[start : start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(context[index], category[index], gaps[index]), target[index])
            loss.backward()
            optimizer.step()
    model.eval()
    return model
