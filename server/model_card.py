"""A model card for a campaign's checkpoints: Markdown, with PNG plots beside it.

It states what the model was trained on and under which guarantee (unit, epsilon,
delta), the cohort of every round, the accuracy the server saw per round (from
noised sums) and, when a simulation left its exact figures beside the
checkpoints, the per-person baselines on the same held-out data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

from server.model_store import ground_truth_of, model_config_of, rounds, sidecars

ACCURACY_PLOT = "accuracy.png"
EPSILON_PLOT = "epsilon.png"
CARD_FILE = "MODEL_CARD.md"


@dataclass(frozen=True)
class Card:
    """The card's Markdown and the plots it links to."""

    markdown: Path
    accuracy_plot: Path
    epsilon_plot: Path


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _plots(checkpoint_dir: Path, out: Path, truth: dict[str, Any] | None) -> tuple[Path, Path]:
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    summary = rounds(checkpoint_dir)
    x = [r.round for r in summary]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [_nan(r.top1) for r in summary], "o-", label="top-1 (server, noised sums)")
    ax.plot(x, [_nan(r.top3) for r in summary], "s-", label="top-3 (server, noised sums)")
    if truth is not None:
        for key, style, label in (
            ("bigram_top1", ":", "per-person bigram top-1"),
            ("bigram_top3", "--", "per-person bigram top-3"),
        ):
            if key in truth:
                ax.axhline(float(truth[key]), color="gray", linestyle=style, label=label)
    accuracy = _finish(fig, ax, "held-out next-action accuracy", out / ACCURACY_PLOT)
    fig, ax = plt.subplots(figsize=(6, 4))
    user = [r.epsilon_user for r in summary]
    if any(e is not None for e in user):
        ax.plot(x, [_nan(e) for e in user], "o-", label="user-level epsilon")
    caps = [r.epsilon_example_cap for r in summary]
    if any(c is not None for c in caps):
        ax.step(x, [_nan(c) for c in caps], where="mid", label="device cap")
    epsilon = _finish(fig, ax, "epsilon", out / EPSILON_PLOT)
    return accuracy, epsilon


def _finish(fig: Any, ax: Any, ylabel: str, path: Path) -> Path:
    """Label, save and close one per-round plot."""
    import matplotlib.pyplot as plt  # noqa: PLC0415 - the backend is chosen by now

    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def card_markdown(checkpoint_dir: Path) -> str:
    """The card's text (plots are referenced by file name)."""
    rows = sidecars(checkpoint_dir)
    last = rows[-1]
    config = model_config_of(last)
    summary = rounds(checkpoint_dir)
    truth = ground_truth_of(checkpoint_dir)
    unit = last.get("epsilon_unit", "one example on one device")
    lines = [
        f"# Model card: {checkpoint_dir.name}",
        "",
        "## Model",
        f"- Next-action policy: the last {config.context_length} actions"
        + (" with the bucketed gap before each" if config.gap_dim else "")
        + f" and the app in front -> one of {config.vocab_size} actions (embedding "
        f"{config.token_dim}, hidden {config.hidden}).",
        f"- Vocabulary: {', '.join(config.tokens[:8])}, ... (all in `config.json` of an export).",
        f"- Round {last['round']}, model version `{str(last.get('model_version', ''))[:16]}`.",
        "",
        "## Data",
        "- Trained on each device's own encrypted record by federated DP-SGD; no raw event left "
        "a device. Held-out data: the newest 20% of each device's examples.",
        "",
        "## Privacy",
        f"- Device level: epsilon <= {last.get('epsilon_example_cap')} at delta "
        f"{last.get('delta')} (unit: {unit}), enforced by each device's own ledger.",
        f"- User level: epsilon {_fmt(last.get('epsilon_user'), 2)} "
        f"({last.get('epsilon_user_unit', 'one user across the campaign')}; '-' means the "
        "policy adds no central noise and makes no user-level claim).",
        f"- Privacy policy `{str(last.get('policy_hash', ''))[:16]}`.",
        "",
        "## Rounds",
        "Accuracy and loss as the server saw them: ratios of Gaussian-noised sums.",
        "",
        "| round | cohort | top-1 | top-3 | loss | user epsilon |",
        "|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r.round} | {r.cohort} | {_fmt(r.top1)} | {_fmt(r.top3)} | {_fmt(r.loss)} | "
            f"{_fmt(r.epsilon_user, 2)} |"
            for r in summary
        ),
        "",
        f"![accuracy per round]({ACCURACY_PLOT}) ![epsilon per round]({EPSILON_PLOT})",
    ]
    if truth is not None:
        lines += [
            "",
            "## Against the baselines (simulation only: exact, on every device's held-out data)",
            "",
            "| model | top-1 | top-3 |",
            "|---|---:|---:|",
        ]
        for label, key in (
            ("global model", ""),
            ("personalized (fine-tuned + own counts, never uploaded)", "personal_"),
            ("per-person bigram", "bigram_"),
            ("per-person trigram", "trigram_"),
            ("per-person most frequent", "frequent_"),
        ):
            if f"{key}top1" in truth:
                lines.append(
                    f"| {label} | {_fmt(truth[f'{key}top1'])} | {_fmt(truth.get(f'{key}top3'))} |"
                )
    return "\n".join(lines) + "\n"


def write_card(checkpoint_dir: Path, out: Path) -> Card:
    """Write ``MODEL_CARD.md`` and its two plots into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    accuracy, epsilon = _plots(checkpoint_dir, out, ground_truth_of(checkpoint_dir))
    markdown = out / CARD_FILE
    markdown.write_text(card_markdown(checkpoint_dir))
    return Card(markdown, accuracy, epsilon)
