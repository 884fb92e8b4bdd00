"""`hearth budget`: what privacy this laptop has spent, and the employee's own cap."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from client.device import Device
from client.home import hearth_home
from client.keys import VaultKeyError
from privacy.accountants import UNIT_LOCAL
from privacy.ledger import LedgerError, effective_cap
from privacy.policy import PolicyError, PrivacyPolicy, load_policy

budget_app = typer.Typer(
    name="budget", help="Privacy spent on this laptop, and your own cap.", no_args_is_help=True
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"hearth: {message}", err=True)
    return typer.Exit(1)


def budget_report(device: Device, policy: PrivacyPolicy) -> dict[str, Any]:
    """Epsilon spent on ``device``, the cap in force, what is left, and the unit.

    Raises ``VaultKeyError`` or ``LedgerError`` when the ledger cannot be read.
    """
    ledger = device.ledger()
    spent = ledger.spent(policy.privacy.delta)
    employee = device.employee_cap()
    cap = effective_cap(policy.privacy.device_epsilon_cap, employee)
    return {
        "epsilon_spent": spent,
        "epsilon_cap": cap,
        "epsilon_left": max(0.0, cap - spent),
        "policy_cap": policy.privacy.device_epsilon_cap,
        "employee_cap": employee,
        "delta": policy.privacy.delta,
        "unit": UNIT_LOCAL,
        "rounds": len(ledger.entries),
    }


@budget_app.command()
def show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Epsilon spent, the cap in force, and what is left."""
    try:
        policy = load_policy()
        report = budget_report(Device(hearth_home()), policy)
    except (PolicyError, VaultKeyError, LedgerError) as exc:
        raise _fail(str(exc)) from None
    spent, cap, rounds = report["epsilon_spent"], report["epsilon_cap"], report["rounds"]
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(
        f"spent epsilon {spent:.2f} of {cap:g} over {rounds} training rounds "
        f"({report['epsilon_left']:.2f} left), delta {policy.privacy.delta:g}.\n"
        f"Unit: {UNIT_LOCAL}: one recorded action of yours changes what this laptop "
        "sends by at most this much, in the differential-privacy sense."
    )


@budget_app.command("set")
def set_cap(
    epsilon: Annotated[float, typer.Argument(min=0.0, help="your own epsilon cap")],
) -> None:
    """Set a stricter cap than the policy's; training stops when it is reached."""
    try:
        policy_cap = load_policy().privacy.device_epsilon_cap
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    if epsilon > policy_cap:
        raise _fail(
            f"the policy already caps epsilon at {policy_cap:g}; your cap can only be lower"
        )
    Device(hearth_home()).set_employee_cap(epsilon)
    typer.echo(f"your cap is now epsilon {epsilon:g} (the policy's is {policy_cap:g})")
