"""`hearth budget`: what privacy this laptop has spent, and the employee's own cap."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import asdict
from typing import Annotated, Any

import typer

from client.cli_errors import fail
from client.device import Device
from client.home import hearth_home
from client.keys import VaultKeyError
from client.policy_pin import device_policy
from client.vault import VaultFullError
from policy.round_contract import DEFAULT_CONTEXT_LENGTH
from privacy.accountants import (
    ADJACENCY_EXAMPLE,
    ADJACENCY_USER,
    UNIT_LOCAL,
    UNIT_USER,
    adjacency_action,
    epsilon_per_action,
    unit_action,
)
from privacy.ledger import Bucket, BudgetRule, DeviceLedger, LedgerError, LedgerRollbackError
from privacy.policy import PolicyError, PrivacyPolicy
from privacy.renyi_filter import lifetime_rounds, window

budget_app = typer.Typer(
    name="budget", help="Privacy spent on this laptop, and your own cap.", no_args_is_help=True
)


def unit_lifetime(retention_days: float) -> str:
    """The unit of the ledger's cap: one example, over the whole time it is kept."""
    return f"{UNIT_LOCAL}, over the {retention_days:g} days it is kept"


def _day_text(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def budget_figures(
    ledger: DeviceLedger | None,
    policy: PrivacyPolicy,
    employee_cap: float | None,
    held: frozenset[int] = frozenset(),
    now: float | None = None,
) -> dict[str, Any]:
    """Every figure a ledger implies, each with its unit, adjacency and delta, and per day.

    Example-level is what the ledger's filter caps, per day bucket of data: an example
    is charged to each day it was built from, so its loss is at most its days' spend.
    One recorded action sits in up to K+1 examples, so its figure is group privacy over
    the most-spent day's history; the user-level figure is the campaign's (the server
    stops before the policy's target), or none when the policy adds no central noise.
    """
    now = time.time() if now is None else now
    delta = policy.privacy.delta
    rule = BudgetRule.from_policy(policy, employee_cap)
    cap = rule.cap
    retention = policy.data.retention_days
    buckets = (
        ledger.buckets(rule, now, held)
        if ledger is not None
        else [Bucket(d, 0.0, 0.0, d in held) for d in window(now, rule.retention_days)]
    )
    spent = max((b.epsilon for b in buckets), default=0.0)
    fullest = max(buckets, key=lambda b: b.fraction, default=None)
    action_history = (
        ledger.history_of(fullest.day) if ledger is not None and fullest is not None else []
    )
    central = policy.training.central_noise_multiplier > 0
    t = policy.training
    return {
        "epsilon_spent": spent,
        "epsilon_cap": cap,
        "epsilon_left": max(0.0, cap - spent),
        "policy_cap": policy.privacy.device_epsilon_cap,
        "employee_cap": employee_cap,
        "delta": delta,
        "unit": unit_lifetime(retention),
        "adjacency": ADJACENCY_EXAMPLE,
        "retention_days": retention,
        "rounds_per_day": t.rounds_per_day,
        "lifetime_rounds": lifetime_rounds(t.rounds_per_day, retention),
        "renyi_orders": list(rule.renyi.orders),
        "days": [
            {
                "day": _day_text(b.day),
                "epsilon_spent": b.epsilon,
                "epsilon_left": max(0.0, cap - b.epsilon),
                "fraction": b.fraction,
                "holds_data": b.held,
            }
            for b in buckets
        ],
        "epsilon_per_action": epsilon_per_action(action_history, delta, DEFAULT_CONTEXT_LENGTH),
        "unit_per_action": unit_action(DEFAULT_CONTEXT_LENGTH),
        "adjacency_per_action": adjacency_action(DEFAULT_CONTEXT_LENGTH),
        "epsilon_user": policy.privacy.user_epsilon_target if central else None,
        "user_noise_by_devices": central and policy.training.distributed_noise,
        "unit_user": UNIT_USER,
        "adjacency_user": ADJACENCY_USER,
        "entries": len(ledger.entries) if ledger is not None else 0,
        "resets": [asdict(r) for r in ledger.resets] if ledger is not None else [],
        "ledger_writes": ledger.counter if ledger is not None else 0,
        "anchor": ledger.anchor_where if ledger is not None else None,
    }


def budget_report(device: Device, policy: PrivacyPolicy) -> dict[str, Any]:
    """``budget_figures`` of ``device``'s ledger and the days its vault holds.

    Raises ``VaultKeyError`` or ``LedgerError`` when the ledger cannot be read.
    """
    try:
        held = device.held_days()
    except (VaultKeyError, VaultFullError):
        held = frozenset()
    return budget_figures(device.ledger(), policy, device.employee_cap(), held)


def epsilon_text(value: float) -> str:
    """An epsilon as people read it: two decimals, thousands separated, or infinite."""
    return f"{value:,.2f}" if math.isfinite(value) else "infinite"


def day_lines(report: dict[str, Any]) -> list[str]:
    """One line per day of data: spent and left (what the dashboard draws as bars)."""
    lines = []
    for day in report["days"]:
        mark = "" if day["holds_data"] else " (no data held)"
        lines.append(
            f"  {day['day']}: spent {epsilon_text(day['epsilon_spent'])}, "
            f"left {epsilon_text(day['epsilon_left'])}{mark}"
        )
    return lines


def budget_lines(report: dict[str, Any]) -> list[str]:
    """The figures in plain words: what ``hearth budget show`` prints."""
    delta = report["delta"]
    own = "your own cap" if report["employee_cap"] is not None else "the policy's cap"
    facing = (
        "readers of the model and checkpoints, and the server too when the campaign runs "
        "under SecAgg+ (the devices add the noise before masking)"
        if report.get("user_noise_by_devices")
        else "readers of the model and checkpoints, not the server"
    )
    user = (
        f"at most epsilon {report['epsilon_user']:g} (campaigns stop before it) facing {facing}"
        if report["epsilon_user"] is not None
        else "none (the policy adds no central noise)"
    )
    retention = report["retention_days"]
    lines = [
        f"Per example, over the {retention:g} days it is kept: at most epsilon "
        f"{report['epsilon_cap']:g} ({own}); the most-spent day of data has spent "
        f"{epsilon_text(report['epsilon_spent'])}, {epsilon_text(report['epsilon_left'])} left "
        f"({report['entries']} ledger entries: training rounds and evaluations). Each day "
        f"of data is charged for every round that could read it and its budget goes with "
        f"it after {retention:g} days; noise is planned so a day can join "
        f"{report['lifetime_rounds']} rounds. Unit: {report['unit']}; {report['adjacency']}; "
        f"delta {delta:g}.",
        "Each day of data (spent and left, per example):",
        *day_lines(report),
        f"Per action: epsilon {epsilon_text(report['epsilon_per_action'])}. Unit: "
        f"{report['unit_per_action']}; one recorded action of yours sits in several "
        f"training examples, so this bounds how much it changes what this laptop sends "
        f"(group privacy over the most-spent day's rounds, a loose bound); delta {delta:g}.",
        f"Per user: {user}. Unit: {report['unit_user']}; {report['adjacency_user']}; "
        f"delta {delta:g}.",
    ]
    for reset in report["resets"]:
        when = dt.datetime.fromtimestamp(reset["time"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(
            f"Reset on {when}: {reset['reason']} ({reset['entries_cleared']} entries cleared)."
        )
    return lines


@budget_app.command()
def show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Epsilon spent per example, what that means per action and per user, and the cap."""
    try:
        home = hearth_home()
        policy = device_policy(home)  # the pinned policy, once the laptop joined
        report = budget_report(Device(home), policy)
    except LedgerRollbackError as exc:
        raise fail(f"training refused: {exc}") from None
    except (PolicyError, VaultKeyError, LedgerError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo("\n".join(budget_lines(report)))


@budget_app.command("set")
def set_cap(
    epsilon: Annotated[float, typer.Argument(min=0.0, help="your own epsilon cap")],
) -> None:
    """Set a stricter cap than the policy's; training stops when it is reached."""
    try:
        policy_cap = device_policy(hearth_home()).privacy.device_epsilon_cap
    except PolicyError as exc:
        raise fail(str(exc)) from None
    if epsilon > policy_cap:
        raise fail(f"the policy already caps epsilon at {policy_cap:g}; your cap can only be lower")
    Device(hearth_home()).set_employee_cap(epsilon)
    typer.echo(f"your cap is now epsilon {epsilon:g} (the policy's is {policy_cap:g})")


@budget_app.command()
def reset(
    i_understand: Annotated[
        bool,
        typer.Option("--i-understand", help="confirm: every day of data starts from zero spent"),
    ] = False,
) -> None:
    """Start a new, empty ledger (test devices): recorded and shown wherever the budget is."""
    if not i_understand:
        raise fail(
            "a reset forgets what this laptop spent, so its examples lose their bound; "
            "add --i-understand to do it (it is recorded and shown)"
        )
    device = Device(hearth_home())
    try:
        try:
            cleared = len(device.ledger().entries)
            reason = "reset by the employee"
        except LedgerRollbackError as exc:
            cleared, reason = 0, f"reset by the employee after: {exc}"
        except LedgerError as exc:
            cleared, reason = 0, f"reset by the employee after: {exc}"
        event = device.reset_ledger(reason.split("; training is refused")[0])
    except VaultKeyError as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"the privacy ledger starts again from zero ({max(cleared, event.entries_cleared)} "
        "entries cleared); the reset is recorded and shown by `hearth budget show`"
    )
