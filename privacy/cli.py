"""`hearth-privacy`: check a policy, plan noise for a target epsilon, audit a campaign."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from privacy.accountants import (
    LOCAL_ACCOUNTANTS,
    UNIT_LOCAL,
    UNIT_USER,
    USER_ACCOUNTANTS,
    LocalAccountant,
    PlanningError,
    UserAccountant,
    epsilon_local,
    epsilon_user,
    noise_for_local,
    noise_for_user,
)
from privacy.audit import AuditError, audit_campaign
from privacy.policy import PolicyError, describe, load_policy

app = typer.Typer(
    name="hearth-privacy",
    help="Privacy budgets: policies, noise planning and audits.",
    no_args_is_help=True,
    add_completion=False,
)
plan_app = typer.Typer(help="Plan noise and epsilon, in both directions.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")
console = Console()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"hearth-privacy: {message}", err=True)
    return typer.Exit(1)


@app.command()
def check(policy: Annotated[Path, typer.Argument(help="privacy policy TOML")]) -> None:
    """Validate a policy file and print it in plain words."""
    try:
        loaded = load_policy(policy)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    typer.echo(describe(loaded))


def _one_direction(noise: float | None, target: float | None) -> None:
    if (noise is None) == (target is None):
        raise _fail("give exactly one of --noise or --target-epsilon")


def _emit(rows: list[dict[str, Any]], chosen: str, as_json: bool, title: str) -> None:
    main = next(r for r in rows if r["accountant"] == chosen)
    if as_json:
        typer.echo(json.dumps({**main, "accountants": rows}))
        return
    table = Table(title=title)
    for column in ("accountant", "noise multiplier", "epsilon", "delta", "unit"):
        table.add_column(column)
    for row in rows:
        mark = " *" if row["accountant"] == chosen else ""
        table.add_row(
            row["accountant"] + mark,
            f"{row['noise_multiplier']:.4f}",
            f"{row['epsilon']:.4f}" if math.isfinite(row["epsilon"]) else "inf",
            f"{row['delta']:g}",
            row["unit"],
        )
    console.print(table)


@plan_app.command("local")
def plan_local(
    examples: Annotated[int, typer.Option(min=1, help="training examples on the device")],
    batch_size: Annotated[int, typer.Option(min=1, help="expected batch size")],
    epochs: Annotated[float, typer.Option(min=0.01, help="passes over the data")],
    delta: Annotated[float, typer.Option(min=0.0, max=1.0, help="target delta")],
    noise: Annotated[float | None, typer.Option(help="noise multiplier -> epsilon")] = None,
    target_epsilon: Annotated[float | None, typer.Option(help="epsilon -> noise")] = None,
    accountant: Annotated[str, typer.Option(help="rdp or prv")] = "rdp",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """DP-SGD on one device: unit is one example on that device."""
    _one_direction(noise, target_epsilon)
    if accountant not in LOCAL_ACCOUNTANTS:
        raise _fail("--accountant must be rdp or prv")
    sample_rate = min(1.0, batch_size / examples)
    steps = max(1, round(epochs / sample_rate))
    rows = []
    for name in LOCAL_ACCOUNTANTS:
        acc: LocalAccountant = name
        try:
            z = (
                noise
                if noise is not None
                else noise_for_local(float(target_epsilon or 0), sample_rate, steps, delta, acc)
            )
        except PlanningError as exc:
            raise _fail(str(exc)) from None
        eps = epsilon_local([(z, sample_rate, steps)], delta, acc)
        rows.append(
            {
                "accountant": name,
                "noise_multiplier": z,
                "epsilon": eps,
                "delta": delta,
                "unit": UNIT_LOCAL,
                "sample_rate": sample_rate,
                "steps": steps,
            }
        )
    _emit(rows, accountant, as_json, f"local DP-SGD: q={sample_rate:.4g}, {steps} steps")


@plan_app.command("user")
def plan_user(
    population: Annotated[int, typer.Option(min=1, help="devices enrolled in the campaign")],
    cohort: Annotated[int, typer.Option(min=1, help="devices sampled per round")],
    rounds: Annotated[int, typer.Option(min=1, help="rounds in the campaign")],
    delta: Annotated[float, typer.Option(min=0.0, max=1.0, help="target delta")],
    noise: Annotated[float | None, typer.Option(help="noise multiplier -> epsilon")] = None,
    target_epsilon: Annotated[float | None, typer.Option(help="epsilon -> noise")] = None,
    accountant: Annotated[str, typer.Option(help="rdp or pld")] = "rdp",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """User-level DP over a campaign: unit is one user's whole contribution."""
    _one_direction(noise, target_epsilon)
    if accountant not in USER_ACCOUNTANTS:
        raise _fail("--accountant must be rdp or pld")
    if cohort > population:
        raise _fail("--cohort cannot exceed --population")
    sampling = cohort / population
    rows = []
    for name in USER_ACCOUNTANTS:
        acc: UserAccountant = name
        try:
            z = (
                noise
                if noise is not None
                else noise_for_user(float(target_epsilon or 0), sampling, rounds, delta, acc)
            )
        except PlanningError as exc:
            raise _fail(str(exc)) from None
        eps = epsilon_user(z, sampling, rounds, delta, acc)
        rows.append(
            {
                "accountant": name,
                "noise_multiplier": z,
                "epsilon": eps,
                "delta": delta,
                "unit": UNIT_USER,
                "sampling_rate": sampling,
                "rounds": rounds,
            }
        )
    _emit(rows, accountant, as_json, f"user-level DP: q={sampling:.4g}, {rounds} rounds")


@app.command()
def audit(
    checkpoint_dir: Annotated[Path, typer.Argument(help="a campaign's checkpoint directory")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per round and in total: epsilon spent, cohort sizes, policy hash."""
    try:
        report = audit_campaign(checkpoint_dir)
    except AuditError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"campaign audit: {checkpoint_dir}")
    for column in ("round", "cohort", "device eps max", "user eps (total)", "policy hash"):
        table.add_column(column)
    for row in report["rounds"]:
        user = row["epsilon_user"]
        table.add_row(
            str(row["round"]),
            str(row["cohort_size"]),
            f"{row['epsilon_local_max']:.3f}" if row["epsilon_local_max"] is not None else "-",
            f"{user:.3f}" if user is not None else "not claimed",
            (row["policy_hash"] or "-")[:16],
        )
    console.print(table)
    user = report["epsilon_user"] if report["epsilon_user"] is not None else "not claimed"
    console.print(
        f"device-level: max epsilon {report['epsilon_local_max']}, unit: {UNIT_LOCAL}; "
        f"user-level: {user}, unit: {UNIT_USER}; delta {report['delta']}; "
        f"policy hashes: {report['policy_hashes']}"
    )
