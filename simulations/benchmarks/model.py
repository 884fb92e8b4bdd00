"""The model against its yardsticks: the demo's global and personalized models, an event log.

Side by side in one run: the demo's federated global model and each device's
personalized copy against the per-person bigram and trigram (exact, on every
employee's held-out data, at the demo's device epsilon), then ``evaluate-log`` on a
generated log: the n-gram, hearth central without privacy, hearth federated with DP.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from simulations.benchmarks import Measurement
from simulations.demo import DemoSettings, run_demo
from simulations.event_log import generated_log
from simulations.log_evaluation import LogSettings, evaluate_log

SUBJECT = "model"
TOP1_MARGIN = 0.05
TOP3_MARGIN = 0.02


def _demo(root: Path, quick: bool) -> list[Measurement]:
    settings = DemoSettings(root=root, employees=4 if quick else 20, rounds=2 if quick else 10)
    result = run_demo(settings)
    truth = result.truth
    if truth is None:
        return [Measurement(SUBJECT, "demo", float("nan"), "", note=f"see {result.run.log_file}")]
    eps = f"device epsilon max {truth.epsilon_max:.2f} (one example, delta {truth.delta:g})"
    best1 = max(truth.bigram_top1, truth.trigram_top1)
    best3 = max(truth.bigram_top3, truth.trigram_top3)
    rows = [
        Measurement(
            SUBJECT,
            "demo global top-1",
            truth.top1,
            "",
            f"> bigram {truth.bigram_top1:.3f}",
            truth.top1 > truth.bigram_top1,
            note=eps,
        ),
        Measurement(SUBJECT, "demo global top-3", truth.top3, ""),
        Measurement(
            SUBJECT,
            "demo per-person bigram top-1 / top-3",
            truth.bigram_top1,
            "",
            note=f"top-3 {truth.bigram_top3:.3f}",
        ),
        Measurement(
            SUBJECT,
            "demo per-person trigram top-1 / top-3",
            truth.trigram_top1,
            "",
            note=f"top-3 {truth.trigram_top3:.3f}",
        ),
    ]
    if truth.personal_top1 is not None and truth.personal_top3 is not None:
        rows += [
            Measurement(
                SUBJECT,
                "demo personalized top-1",
                truth.personal_top1,
                "",
                f">= best n-gram + {TOP1_MARGIN}",
                truth.personal_top1 >= best1 + TOP1_MARGIN,
                note=eps,
            ),
            Measurement(
                SUBJECT,
                "demo personalized top-3",
                truth.personal_top3,
                "",
                f">= best n-gram + {TOP3_MARGIN}",
                truth.personal_top3 >= best3 + TOP3_MARGIN,
            ),
        ]
    return rows


def _event_log(quick: bool) -> list[Measurement]:
    settings = LogSettings(devices=5, epsilon=8.0, rounds=3 if quick else 10)
    evaluation = evaluate_log(generated_log(200 if quick else 600, seed=7), settings)
    return [
        Measurement(
            SUBJECT,
            f"generated log: {row.model}",
            row.top1,
            "top-1",
            note=f"top-3 {row.top3:.3f}; {row.note}".rstrip("; "),
        )
        for row in evaluation.rows
    ]


def run(quick: bool) -> list[Measurement]:
    """The demo against its baselines, then a generated event log."""
    with tempfile.TemporaryDirectory(prefix="hearth-bench-model-") as tmp:
        results = _demo(Path(tmp) / "demo", quick)
    return results + _event_log(quick)
