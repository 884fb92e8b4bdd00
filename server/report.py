"""Per-round metrics as the ML team reads them: aggregated, then printed as a table.

Devices report nothing about themselves (``policy.replies``): a train reply is an
update and a constant weight, an evaluation is a few Gaussian-noised sums. So the
round's figures are what the server can honestly say: how many devices answered,
refused or were unavailable, and held-out accuracy from the summed noised sums
(the noise of each device averages out over the cohort; a device's own figure is
never known).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

from flwr.common import Metrics, Scalar
from flwr.common.typing import Code
from rich.console import Console
from rich.table import Table

from policy.replies import (
    BUNDLE_REFUSED,
    EVAL_LOSS_BOUND,
    EVALUATE_SUMS,
    POLICY_MISMATCH,
    PROTOCOL_ERROR,
    UNAVAILABLE,
)

EVAL_KEYS = ("top1", "top3", "loss")
# The refusal codes a round counts, by the name its metrics use.
REFUSAL_COUNTS = {
    "clients_unavailable": UNAVAILABLE,
    "clients_policy_mismatch": POLICY_MISMATCH,
    "clients_bundle_refused": BUNDLE_REFUSED,
    "clients_protocol_error": PROTOCOL_ERROR,
}


def failure_code(failure: object) -> int | None:
    """The error code of a failed reply, if it has one.

    Flower's legacy workflow reports an error reply as ``Exception(Error)`` and a
    reply with a failed status as ``(proxy, FitRes)``.
    """
    if isinstance(failure, BaseException):
        code = getattr(failure.args[0], "code", None) if failure.args else None
        return code if isinstance(code, int) else None
    if isinstance(failure, tuple) and len(failure) == 2:
        status = getattr(failure[1], "status", None)
        if status is not None and status.code != Code.OK:
            return int(status.code.value)
    return None


def refusal_counts(failures: Sequence[object]) -> dict[str, Scalar]:
    """How many devices refused, by code, and how many failed otherwise."""
    codes = [failure_code(f) for f in failures]
    counts: dict[str, Scalar] = {
        name: sum(1 for c in codes if c == code) for name, code in REFUSAL_COUNTS.items()
    }
    counts["clients_failed"] = len(codes) - sum(int(v) for v in counts.values())
    return counts


# What a round's outcome line counts, in the order it says them (metric name, words).
OUTCOME_WORDS = (
    ("clients_unavailable", "unavailable"),
    ("clients_bundle_refused", "refused the bundle"),
    ("clients_policy_mismatch", "declined the policy"),
    ("clients_protocol_error", "protocol errors"),
    ("clients_rejected", "broke the reply contract"),
    ("clients_failed", "failed otherwise"),
    ("clients_no_reply", "no reply"),
)


def round_outcome(
    server_round: int, metrics: Mapping[str, Any], min_cohort: int, aggregated: bool
) -> str:
    """One line saying what a round did, from counts only (never which device).

    ``unavailable`` is every reason of the employee's or the laptop's (paused, no
    consent, not idle, on battery, busy, metered, out of budget): devices send one
    code for all of them, so the server cannot say which.
    """
    trained = int(metrics.get("clients_trained", 0))
    sampled = int(metrics.get("clients", 0))
    counts = ", ".join(f"{int(metrics.get(key, 0))} {words}" for key, words in OUTCOME_WORDS)
    if aggregated:
        return f"round {server_round}: {trained} of {sampled} sampled devices trained ({counts})"
    return (
        f"round {server_round} aggregated nothing: {trained} of {sampled} sampled devices "
        f"trained, the minimum cohort is {min_cohort} ({counts}); the model is unchanged, "
        "no checkpoint and no metrics for this round"
    )


def aggregate_evaluate_metrics(results: Sequence[tuple[int, Metrics]]) -> Metrics:
    """Accuracy and loss from the cohort's summed noised sums (ratios of sums).

    The noise can push a small cohort's sum below zero or above the count; each sum
    is clamped to ``[0, count]`` first, so an accuracy reads as one (in ``[0, 1]``)
    and the loss stays within its bound. Clamping is post-processing: it costs no
    privacy.
    """
    totals = {key: sum(float(m.get(key, 0.0)) for _, m in results) for key in EVALUATE_SUMS}
    count = totals["count"]
    if not results or count < 1.0:
        return {}

    def ratio(key: str) -> float:
        return min(max(totals[key], 0.0), count) / count

    return {
        "top1": ratio("top1_sum"),
        "top3": ratio("top3_sum"),
        "loss": ratio("loss_sum") * EVAL_LOSS_BOUND,
        "held_out_examples": round(count),
        "clients": len(results),
    }


def round_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render the per-round table (one row per finished round) as text."""
    table = Table(title="hearth: federated next-action policy, per round")
    for header in ("round", "top-1", "top-3", "loss", "trained", "unavailable", "user eps"):
        table.add_column(header, justify="right")
    for row in rows:
        fit, ev = row.get("fit", {}), row.get("evaluate", {})
        user = row.get("epsilon_user")
        table.add_row(
            str(row["round"]),
            *(f"{ev.get(k, float('nan')):.3f}" for k in EVAL_KEYS),
            str(fit.get("clients_trained", 0)),
            str(fit.get("clients_unavailable", 0)),
            f"{user:.2f}" if user is not None else "none",
        )
    last = rows[-1] if rows else {}
    console = Console(width=140, record=True, file=io.StringIO())
    console.print(table)
    console.print(
        "top-k and loss: from each device's Gaussian-noised held-out sums (last 20% of its "
        "data), summed over the cohort; each device enforces its own example-level cap of "
        f"epsilon {last.get('epsilon_example_cap')} at delta {last.get('delta')}; user eps: "
        f"{_user_unit(last)} (add/remove one user), facing readers of the model; "
        f"{_facing_server(last)}."
    )
    return console.export_text()


def _user_unit(row: Mapping[str, Any]) -> str:
    return str(row.get("epsilon_user_unit") or "one user across the campaign")


def _facing_server(row: Mapping[str, Any]) -> str:
    """The server-facing figure as the round recorded it (devices' noise under SecAgg+ or none)."""
    vs_server = row.get("epsilon_user_vs_server")
    if vs_server is not None:
        return (
            "facing the server, which saw only SecAgg+ sums already holding the devices' "
            f"noise (no sampling amplification): epsilon {float(vs_server):.2f}"
        )
    return (
        "facing the server, which samples the cohorts and sees any noise it adds itself, "
        "no user-level figure holds (epsilon_user_vs_server: none)"
    )


ROUND_HEADER = "round   top-1  top-3   loss | trained unavailable | user eps"


def round_line(row: dict[str, Any]) -> str:
    """One finished round on one line, aligned under ``ROUND_HEADER``."""
    fit, ev = row.get("fit", {}), row.get("evaluate", {})

    def get(key: str) -> float:
        return float(ev.get(key, float("nan")))

    user = row.get("epsilon_user")
    return (
        f"{row['round']:>5}   {get('top1'):.3f}  {get('top3'):.3f} {get('loss'):6.3f} |"
        f" {int(fit.get('clients_trained', 0)):>7} {int(fit.get('clients_unavailable', 0)):>11} |"
        + (f" {user:8.2f}" if user is not None else "     none")
    )
