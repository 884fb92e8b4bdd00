"""Per-round metrics as the ML team reads them: aggregated, then printed as a table."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from flwr.common import Metrics, Scalar
from rich.console import Console
from rich.table import Table

EVAL_KEYS = (
    "top1",
    "top3",
    "baseline_frequent_top1",
    "baseline_frequent_top3",
    "baseline_bigram_top1",
    "baseline_bigram_top3",
)


def aggregate_fit_metrics(results: Sequence[tuple[int, Metrics]]) -> Metrics:
    """Epsilon (mean and max over devices), upload size, declined devices."""
    if not results:
        return {}
    eps = [float(m.get("epsilon", 0.0)) for _, m in results]
    uploads = [float(m.get("upload_bytes", 0.0)) for _, m in results]
    trained = [m for _, m in results if not m.get("budget_exhausted") and not m.get("declined")]
    # Declined code 2 (see client.app): the device agreed to another privacy policy.
    policy_mismatch = sum(1 for _, m in results if int(m.get("declined", 0)) == 2)
    out: dict[str, Scalar] = {
        "epsilon_mean": sum(eps) / len(eps),
        "epsilon_max": max(eps),
        "upload_bytes_mean": sum(uploads) / len(uploads),
        "upload_bytes_max": max(uploads),
        "clients": len(results),
        "clients_trained": len(trained),
        "clients_budget_exhausted": sum(1 for _, m in results if m.get("budget_exhausted")),
        "clients_declined_policy": policy_mismatch,
    }
    if results:
        out["delta"] = float(results[0][1].get("delta", 0.0))
    if trained:
        out["train_loss"] = sum(float(m.get("train_loss", 0.0)) for m in trained) / len(trained)
    return out


def aggregate_evaluate_metrics(results: Sequence[tuple[int, Metrics]]) -> Metrics:
    """Example-weighted mean of each accuracy over devices' held-out data."""
    total = sum(n for n, _ in results)
    if total == 0:
        return {}
    out: dict[str, Scalar] = {
        key: sum(n * float(m.get(key, 0.0)) for n, m in results) / total for key in EVAL_KEYS
    }
    out["held_out_examples"] = total
    out["clients"] = len(results)
    return out


def round_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render the per-round table (one row per finished round) as text."""
    table = Table(title="hearth: federated next-action policy, per round")
    for header in (
        "round",
        "top-1",
        "top-3",
        "freq top-1",
        "freq top-3",
        "bigram top-1",
        "bigram top-3",
        "eps mean",
        "eps max",
        "upload/client",
    ):
        table.add_column(header, justify="right")
    for row in rows:
        fit, ev = row.get("fit", {}), row.get("evaluate", {})
        table.add_row(
            str(row["round"]),
            *(f"{ev.get(k, float('nan')):.3f}" for k in EVAL_KEYS),
            f"{fit.get('epsilon_mean', float('nan')):.2f}",
            f"{fit.get('epsilon_max', float('nan')):.2f}",
            f"{fit.get('upload_bytes_mean', 0) / 1024:.0f} KiB",
        )
    delta = rows[-1].get("fit", {}).get("delta") if rows else None
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(table)
    console.print(
        f"epsilon: local DP-SGD, unit = one example on one device, delta = {delta}; "
        "top-k: next-action accuracy on each employee's held-out last 20%."
    )
    return console.export_text()


ROUND_HEADER = (
    "round   top-1  top-3 | freq top-1 top-3 | bigram top-1 top-3 | eps mean  max | upload"
)


def round_line(row: dict[str, Any]) -> str:
    """One finished round on one line, aligned under ``ROUND_HEADER``."""
    fit, ev = row.get("fit", {}), row.get("evaluate", {})

    def get(record: dict[str, Any], key: str) -> float:
        return float(record.get(key, float("nan")))

    return (
        f"{row['round']:>5}   {get(ev, 'top1'):.3f}  {get(ev, 'top3'):.3f} |"
        f"      {get(ev, 'baseline_frequent_top1'):.3f} {get(ev, 'baseline_frequent_top3'):.3f} |"
        f"        {get(ev, 'baseline_bigram_top1'):.3f} {get(ev, 'baseline_bigram_top3'):.3f} |"
        f"    {get(fit, 'epsilon_mean'):5.2f} {get(fit, 'epsilon_max'):5.2f} |"
        f" {get(fit, 'upload_bytes_mean') / 1024:4.0f} KiB"
    )
