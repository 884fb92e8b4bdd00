"""`hearth-sim evaluate-log`: the next-activity protocol, three models side by side in one run.

- the n-gram (trigram with back-off to the last activity and the most frequent),
  fitted on the training cases;
- hearth's policy trained centrally without privacy, its learning rate chosen on
  validation cases carved from the training cases;
- hearth's policy federated with DP-SGD over ``devices`` simulated devices (training
  cases dealt out in blocks of time), each device within ``epsilon`` (one example
  on one device, delta 1e-5), the server step and update clipping of a campaign.

All three are scored exactly on the same test predictions (``simulations.event_log``).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

from client.learning.featurize import Examples
from client.learning.training import TrainConfig
from policy.baselines import NGram
from policy.model import ModelConfig
from privacy.accountants import noise_for_local
from simulations.event_log import (
    MIN_TEST_PREFIX,
    Case,
    case_examples,
    device_partition,
    log_model_config,
    split_cases,
)
from simulations.inprocess import (
    Federation,
    LearningRateSearch,
    federate,
    mean_accuracy,
    tune_learning_rate,
)

DELTA = 1e-5
CENTRAL_BATCH = 64


@dataclass(frozen=True)
class LogSettings:
    """How the log is evaluated."""

    devices: int = 10
    epsilon: float = 8.0
    rounds: int = 10
    context_length: int = 8
    sample_rate: float = 0.25
    steps: int = 8
    update_clip_norm: float = 5.0
    seed: int = 7
    central_steps: int = 400
    central_grid: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    dp_grid: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class LogRow:
    """One model's score on the test predictions."""

    model: str
    top1: float
    top3: float
    note: str = ""


@dataclass(frozen=True)
class LogEvaluation:
    """The side-by-side table and what it was computed on."""

    rows: tuple[LogRow, ...]
    train_cases: int
    test_cases: int
    test_predictions: int
    vocabulary: int


def _central(
    train: list[Case], config: ModelConfig, settings: LogSettings
) -> tuple[Federation, float]:
    examples = case_examples(train, config)
    rate = min(1.0, CENTRAL_BATCH / max(1, len(examples)))
    federation = Federation(
        rounds=1,
        train=TrainConfig(sample_rate=rate, steps=settings.central_steps, private=False),
        server_momentum=0.0,
        seed=settings.seed,
    )
    search = tune_learning_rate([examples], federation, config, settings.central_grid)
    return federation, search.best


def dp_federation(
    clients: list[Examples], config: ModelConfig, settings: LogSettings
) -> tuple[Federation, float, LearningRateSearch]:
    """A DP-SGD campaign over ``clients`` within ``settings.epsilon`` per device.

    Returns the federation at the learning rate chosen on validation data carved
    from the clients' own training examples, its noise multiplier and the search.
    """
    typical = statistics.median(len(c) for c in clients)
    noise = noise_for_local(
        settings.epsilon, settings.sample_rate, settings.steps * settings.rounds, DELTA
    )
    dp = Federation(
        rounds=settings.rounds,
        train=TrainConfig(
            sample_rate=settings.sample_rate,
            steps=settings.steps,
            batch_size=max(1, round(settings.sample_rate * typical)),
            noise_multiplier=noise,
            delta=DELTA,
            private=True,
        ),
        update_clip_norm=settings.update_clip_norm,
        seed=settings.seed,
    )
    if len(settings.dp_grid) == 1:
        search = LearningRateSearch(settings.dp_grid[0], ())
    else:
        search = tune_learning_rate(clients, dp, config, settings.dp_grid)
    return replace(dp, train=replace(dp.train, learning_rate=search.best)), noise, search


def evaluate_log(cases: list[Case], settings: LogSettings) -> LogEvaluation:
    """Run the protocol: n-gram, central non-private, federated DP."""
    config = log_model_config(cases, settings.context_length)
    train, test = split_cases(cases)
    if not train or not test:
        raise ValueError("the log needs at least two cases (two thirds train, one third test)")
    train_examples = case_examples(train, config)
    test_examples = case_examples(test, config, MIN_TEST_PREFIX)
    ngram = NGram(train_examples.context, train_examples.target, 3)
    rows = [
        LogRow(
            "n-gram (last two activities, back-off)",
            ngram.accuracy(test_examples.context, test_examples.target, 1),
            ngram.accuracy(test_examples.context, test_examples.target, 3),
        )
    ]
    central, rate = _central(train, config, settings)
    central = replace(central, train=replace(central.train, learning_rate=rate))
    model = federate([train_examples], central, config)
    top1, top3 = mean_accuracy(model, [test_examples])
    rows.append(LogRow("hearth, central, no privacy", top1, top3, f"learning rate {rate:g}"))
    clients = [case_examples(part, config) for part in device_partition(train, settings.devices)]
    dp, noise, search = dp_federation(clients, config, settings)
    top1, top3 = mean_accuracy(federate(clients, dp, config), [test_examples])
    eps = "inf" if math.isinf(settings.epsilon) else f"{settings.epsilon:g}"
    rows.append(
        LogRow(
            f"hearth, federated DP ({settings.devices} devices)",
            top1,
            top3,
            f"device epsilon {eps} (one example, delta {DELTA:g}), noise {noise:.2f}, "
            f"learning rate {search.best:g}",
        )
    )
    return LogEvaluation(tuple(rows), len(train), len(test), len(test_examples), config.vocab_size)


def table(evaluation: LogEvaluation) -> str:
    """Markdown, one row per model."""
    lines = [
        f"{evaluation.train_cases} training cases, {evaluation.test_cases} test cases, "
        f"{evaluation.test_predictions} test predictions (after every prefix of length "
        f">= {MIN_TEST_PREFIX}), {evaluation.vocabulary} tokens",
        "",
        "| model | top-1 | top-3 | note |",
        "|---|---:|---:|---|",
        *(f"| {r.model} | {r.top1:.3f} | {r.top3:.3f} | {r.note} |" for r in evaluation.rows),
    ]
    return "\n".join(lines) + "\n"
