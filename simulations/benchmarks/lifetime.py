"""Sixty days of one laptop at the policy's pace: it never stops, no example passes the cap.

The laptop is the real ledger and the real gate (``planned_noise``, ``check_round``,
``DeviceLedger.record``, as ``client.learning.app`` calls them) under the shipped policy,
joining rounds at its ``rounds_per_day`` (0.2: one round every fifth day) on a clock
that advances a day at a time; its vault holds every day of the retention window.
Training itself changes nothing in the accounting, so it is not run here
(``tests/client/test_client_round.py`` drives the same gate through the ClientApp).
Each day of data's final loss is recomputed independently (dp-accounting's RDP of the
rounds that could read it, through the filter's fixed orders) and compared to the cap.
A second laptop joins the same days plus a burst of extra campaigns on day 3: it is
refused while the days that burst read are exhausted, and contributes again after.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np

from privacy.ledger import BudgetRule, DeviceLedger, check_round, planned_noise
from privacy.policy import load_policy, policy_hash
from privacy.renyi_filter import DAY_SECONDS, window
from simulations.benchmarks import Measurement

SUBJECT = "lifetime"
DAYS = 60
DAY0 = 20_000  # an arbitrary UTC day
BURST_DAY, BURST_ROUNDS = 3, 12


def _independent_epsilon(charges: list[tuple[float, float, int]], rule: BudgetRule) -> float:
    accountant = dp_accounting.rdp.RdpAccountant(orders=list(rule.renyi.orders))
    for noise, rate, steps in charges:
        gaussian = dp_accounting.GaussianDpEvent(noise)
        event = gaussian if rate >= 1 else dp_accounting.PoissonSampledDpEvent(rate, gaussian)
        accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return rule.renyi.epsilon(np.asarray(accountant._rdp, dtype=np.float64))


def paced_rounds(rounds_per_day: float, day: int) -> int:
    """Rounds offered on ``day`` at the pace: ``rounds_per_day`` on average, whole rounds."""
    return math.floor((day + 1) * rounds_per_day + 1e-9) - math.floor(day * rounds_per_day + 1e-9)


def simulate(directory: Path, days: int, burst: bool) -> dict[str, Any]:
    """One laptop over ``days`` days at the policy's pace: rounds joined, each day's loss."""
    policy = load_policy()
    rule = BudgetRule.from_policy(policy)
    noise = planned_noise(policy, rule)
    t = policy.training
    train = (noise, t.sample_rate, t.steps)
    evaluation = (t.evaluation_noise_multiplier, 1.0, 1)
    ledger = DeviceLedger(directory / "ledger.bin", os.urandom(32))
    joined: list[int] = []
    refused: list[int] = []
    max_live: list[float] = []
    rounds: list[tuple[float, list[tuple[float, float, int]]]] = []
    offered = 0
    for day in range(days):
        extra = BURST_ROUNDS if burst and day == BURST_DAY else 0
        paced = paced_rounds(t.rounds_per_day, day)
        offered += paced
        for slot in range(paced + extra):
            now = (DAY0 + day) * DAY_SECONDS + 9 * 3600 + slot * 600
            held = set(window(now, policy.data.retention_days))  # data recorded every day
            allowed = check_round(ledger, [train, evaluation], rule, held=held, now=now).allowed
            (joined if allowed else refused).append(day)
            if allowed:
                ledger.record(
                    day, [train, evaluation], rule, policy_hash(policy), held=held, now=now
                )
                rounds.append((now, [train, evaluation]))
        end_of_day = (DAY0 + day) * DAY_SECONDS + 23 * 3600
        max_live.append(max(b.epsilon for b in ledger.buckets(rule, end_of_day)))
    # Every day of data's whole-life loss, recomputed from the rounds that could read it.
    per_day = []
    for day in range(days):
        reading = [
            charges
            for now, charges in rounds
            if DAY0 + day in window(now, policy.data.retention_days)
        ]
        per_day.append(_independent_epsilon([c for cs in reading for c in cs], rule))
    return {
        "noise_multiplier": noise,
        "cap": rule.cap,
        "delta": rule.renyi.delta,
        "retention_days": policy.data.retention_days,
        "rounds_per_day": t.rounds_per_day,
        "rounds_offered_at_pace": offered,
        "days_contributed": len(set(joined)),
        "rounds_joined": len(joined),
        "rounds_refused": len(refused),
        "refused_days": sorted(set(refused)),
        "max_live_epsilon_by_day": max_live,
        "lifetime_epsilon_by_data_day": per_day,
    }


def _plot(results: dict[str, dict[str, Any]], out: Path) -> Path:
    import matplotlib  # noqa: PLC0415 (only for the figure)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4))
    steady = results["at_the_policys_pace"]
    pace = f"{steady['rounds_per_day']:g} round(s) a day"
    ax.plot(steady["max_live_epsilon_by_day"], label=f"max per-example epsilon, {pace}")
    ax.plot(
        results["burst"]["max_live_epsilon_by_day"],
        linestyle="--",
        label=f"same, with {BURST_ROUNDS} extra rounds on day {BURST_DAY}",
    )
    ax.axhline(steady["cap"], color="black", linestyle=":", label="cap")
    ax.set_xlabel("day")
    ax.set_ylabel(f"epsilon (one example, over its {steady['retention_days']:g} days)")
    ax.set_ylim(0, steady["cap"] * 1.1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    png = out / "lifetime.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def run(quick: bool, out: Path | None = None) -> list[Measurement]:
    """Measurements, plus ``lifetime.json`` and ``lifetime.png`` under ``out`` (``bench/``)."""
    days = 30 if quick else DAYS
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            "at_the_policys_pace": simulate(Path(tmp) / "steady", days, burst=False),
            "burst": simulate(Path(tmp) / "burst", days, burst=True),
        }
    out = out or Path("bench")
    out.mkdir(parents=True, exist_ok=True)
    (out / "lifetime.json").write_text(json.dumps(results, indent=2) + "\n")
    png = _plot(results, out)
    steady, burst = results["at_the_policys_pace"], results["burst"]
    offered = steady["rounds_offered_at_pace"]
    cap = steady["cap"]
    worst = max(steady["lifetime_epsilon_by_data_day"])
    worst_burst = max(burst["lifetime_epsilon_by_data_day"])
    return [
        Measurement(
            SUBJECT,
            f"rounds joined ({steady['rounds_per_day']:g} a day, the policy's pace)",
            steady["rounds_joined"],
            f"of {offered}",
            f"= {offered}",
            steady["rounds_joined"] == offered,
            f"over {days} days",
        ),
        Measurement(
            SUBJECT,
            "max per-example epsilon over the run",
            worst,
            "epsilon",
            f"<= cap {cap:g}",
            worst <= cap,
            f"plot: {png}",
        ),
        Measurement(SUBJECT, "planned local noise", steady["noise_multiplier"], "multiplier"),
        Measurement(
            SUBJECT,
            "burst: rounds refused",
            burst["rounds_refused"],
            "rounds",
            note=f"refused on days {burst['refused_days']}",
        ),
        Measurement(SUBJECT, "burst: days contributed", burst["days_contributed"], f"of {days}"),
        Measurement(
            SUBJECT,
            "burst: max per-example epsilon",
            worst_burst,
            "epsilon",
            f"<= cap {cap:g}",
            worst_burst <= cap,
        ),
    ]
