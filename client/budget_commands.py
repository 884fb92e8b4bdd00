"""`hearth budget`: what privacy this laptop has spent, and the employee's own cap."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

import typer

from client.device import Device
from client.home import hearth_home
from client.keys import VaultKeyError
from client.policy_pin import device_policy
from privacy.accountants import (
    ADJACENCY_EXAMPLE,
    ADJACENCY_USER,
    DEFAULT_CONTEXT_LENGTH,
    UNIT_LOCAL,
    UNIT_USER,
    HistoryEntry,
    adjacency_action,
    epsilon_local,
    epsilon_per_action,
    unit_action,
)
from privacy.ledger import LedgerError, effective_cap
from privacy.policy import PolicyError, PrivacyPolicy

budget_app = typer.Typer(
    name="budget", help="Privacy spent on this laptop, and your own cap.", no_args_is_help=True
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"hearth: {message}", err=True)
    return typer.Exit(1)


def budget_figures(
    history: list[HistoryEntry], policy: PrivacyPolicy, employee_cap: float | None
) -> dict[str, Any]:
    """Every figure a ledger ``history`` implies, each with its unit, adjacency and delta.

    Example-level is what the ledger caps; one recorded action sits in up to K+1
    examples, so its figure is group privacy over the same history; the user-level
    figure is the campaign's (the server stops before the policy's target), or none
    when the policy adds no central noise.
    """
    delta = policy.privacy.delta
    spent = epsilon_local(history, delta)
    cap = effective_cap(policy.privacy.device_epsilon_cap, employee_cap)
    central = policy.training.central_noise_multiplier > 0
    return {
        "epsilon_spent": spent,
        "epsilon_cap": cap,
        "epsilon_left": max(0.0, cap - spent),
        "policy_cap": policy.privacy.device_epsilon_cap,
        "employee_cap": employee_cap,
        "delta": delta,
        "unit": UNIT_LOCAL,
        "adjacency": ADJACENCY_EXAMPLE,
        "epsilon_per_action": epsilon_per_action(history, delta, DEFAULT_CONTEXT_LENGTH),
        "unit_per_action": unit_action(DEFAULT_CONTEXT_LENGTH),
        "adjacency_per_action": adjacency_action(DEFAULT_CONTEXT_LENGTH),
        "epsilon_user": policy.privacy.user_epsilon_target if central else None,
        "unit_user": UNIT_USER,
        "adjacency_user": ADJACENCY_USER,
        "entries": len(history),
    }


def budget_report(device: Device, policy: PrivacyPolicy) -> dict[str, Any]:
    """``budget_figures`` of ``device``'s ledger.

    Raises ``VaultKeyError`` or ``LedgerError`` when the ledger cannot be read.
    """
    return budget_figures(device.ledger().history(), policy, device.employee_cap())


def epsilon_text(value: float) -> str:
    """An epsilon as people read it: two decimals, thousands separated, or infinite."""
    return f"{value:,.2f}" if math.isfinite(value) else "infinite"


def budget_lines(report: dict[str, Any]) -> list[str]:
    """The figures in plain words: what ``hearth budget show`` prints."""
    delta = report["delta"]
    own = "your own cap" if report["employee_cap"] is not None else "the policy's cap"
    user = (
        f"at most epsilon {report['epsilon_user']:g} (the campaign stops before it) facing "
        "readers of the model and checkpoints, not the server"
        if report["epsilon_user"] is not None
        else "none (the policy adds no central noise)"
    )
    return [
        f"Per example: spent epsilon {epsilon_text(report['epsilon_spent'])} of "
        f"{report['epsilon_cap']:g} ({own}), {epsilon_text(report['epsilon_left'])} left, "
        f"over {report['entries']} ledger entries (training rounds and evaluations). "
        f"Unit: {report['unit']}; {report['adjacency']}; delta {delta:g}.",
        f"Per action: epsilon {epsilon_text(report['epsilon_per_action'])}. Unit: "
        f"{report['unit_per_action']}; one recorded action of yours sits in several "
        f"training examples, so this bounds how much it changes what this laptop sends "
        f"(group privacy over the same ledger, a loose bound); delta {delta:g}.",
        f"Per user: {user}. Unit: {report['unit_user']}; {report['adjacency_user']}; "
        f"delta {delta:g}.",
    ]


@budget_app.command()
def show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Epsilon spent per example, what that means per action and per user, and the cap."""
    try:
        home = hearth_home()
        policy = device_policy(home)  # the pinned policy, once the laptop joined
        report = budget_report(Device(home), policy)
    except (PolicyError, VaultKeyError, LedgerError) as exc:
        raise _fail(str(exc)) from None
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
        raise _fail(str(exc)) from None
    if epsilon > policy_cap:
        raise _fail(
            f"the policy already caps epsilon at {policy_cap:g}; your cap can only be lower"
        )
    Device(hearth_home()).set_employee_cap(epsilon)
    typer.echo(f"your cap is now epsilon {epsilon:g} (the policy's is {policy_cap:g})")
