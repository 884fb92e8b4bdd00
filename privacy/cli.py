"""`hearth-privacy`: check a policy, plan noise for a target epsilon, audit a campaign."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from policy.round_contract import DEFAULT_CONTEXT_LENGTH
from privacy.accountants import (
    ADJACENCY_EXAMPLE,
    ADJACENCY_USER,
    ADJACENCY_USER_VS_SERVER,
    LOCAL_ACCOUNTANTS,
    UNIT_LOCAL,
    UNIT_USER,
    USER_ACCOUNTANTS,
    LocalAccountant,
    PlanningError,
    RoundShape,
    UserAccountant,
    adjacency_action,
    epsilon_local,
    epsilon_per_action,
    epsilon_user,
    noise_for_rounds,
    noise_for_user,
    unit_action,
)
from privacy.audit import AuditError, audit_campaign
from privacy.policy import PolicyError, PrivacyPolicy, describe, load_policy, policy_hash
from privacy.renyi_filter import lifetime_rounds
from privacy.user_level import UNIT as UNIT_USER_HORIZON
from privacy.user_level import UtilityBound, noise_for_target, utility_bound

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


def _at_most_one_direction(noise: float | None, target: float | None) -> None:
    if noise is not None and target is not None:
        raise _fail("give --noise or --target-epsilon, not both")


def _one_direction(noise: float | None, target: float | None) -> None:
    if (noise is None) == (target is None):
        raise _fail("give exactly one of --noise or --target-epsilon")


def _eps(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "inf"


Column = tuple[str, Callable[[dict[str, Any]], str]]


def _emit(
    rows: list[dict[str, Any]],
    chosen: str,
    as_json: bool,
    title: str,
    columns: list[Column],
    notes: list[str],
) -> None:
    """One row per accountant (the chosen one marked), then what the figures mean."""
    main = next(r for r in rows if r["accountant"] == chosen)
    if as_json:
        typer.echo(json.dumps({**main, "accountants": rows}))
        return
    table = Table(title=title)
    table.add_column("accountant")
    for name, _ in columns:
        table.add_column(name)
    for row in rows:
        mark = " *" if row["accountant"] == chosen else ""
        table.add_row(row["accountant"] + mark, *(cell(row) for _, cell in columns))
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True)


def _policy(path: Path | None) -> PrivacyPolicy:
    try:
        return load_policy(path)
    except PolicyError as exc:
        raise _fail(str(exc)) from None


def _check_delta(delta: float, examples: int | None) -> None:
    """A delta near 1/n allows publishing a random example outright: refuse it."""
    if examples is not None and delta >= 1.0 / (10 * examples):
        raise _fail(
            f"delta {delta:g} must be below 1/(10 x --examples) = {1.0 / (10 * examples):.3g}"
        )


@plan_app.command("local")
def plan_local(
    rounds: Annotated[int, typer.Option(min=1, help="local rounds a device takes part in")],
    policy: Annotated[
        Path | None, typer.Option(help="privacy policy TOML (default: HEARTH_POLICY or shipped)")
    ] = None,
    evaluations: Annotated[int, typer.Option(min=0, help="evaluations a round")] = 1,
    noise: Annotated[
        float | None, typer.Option(help="local noise multiplier (default: the policy's)")
    ] = None,
    target_epsilon: Annotated[
        float | None, typer.Option(help="epsilon per example -> the noise that meets it")
    ] = None,
    delta: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="delta (default: the policy's)")
    ] = None,
    examples: Annotated[
        int | None, typer.Option(min=1, help="largest dataset on a device: delta < 1/(10 x it)")
    ] = None,
    context_length: Annotated[
        int, typer.Option(min=0, help="actions the model reads (K)")
    ] = DEFAULT_CONTEXT_LENGTH,
    accountant: Annotated[str, typer.Option(help="rdp or prv")] = "rdp",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """What a device's ledger spends in ``--rounds`` rounds of the policy's round shape.

    Each round is the policy's DP-SGD steps at its sample rate plus ``--evaluations``
    noised evaluation releases, the same entries the device ledger records.
    """
    _at_most_one_direction(noise, target_epsilon)
    if accountant not in LOCAL_ACCOUNTANTS:
        raise _fail("--accountant must be rdp or prv")
    loaded = _policy(policy)
    t = loaded.training
    delta = loaded.privacy.delta if delta is None else delta
    _check_delta(delta, examples)
    shape = RoundShape(t.sample_rate, t.steps, t.evaluation_noise_multiplier, evaluations)
    rows = []
    for name in LOCAL_ACCOUNTANTS:
        acc: LocalAccountant = name
        try:
            z = (
                noise_for_rounds(target_epsilon, shape, rounds, delta, acc)
                if target_epsilon is not None
                else (t.local_noise_multiplier if noise is None else noise)
            )
        except PlanningError as exc:
            raise _fail(str(exc)) from None
        history = shape.history(z, rounds)
        rows.append(
            {
                "accountant": name,
                "noise_multiplier": z,
                "epsilon": epsilon_local(history, delta, acc),
                "epsilon_per_action": epsilon_per_action(history, delta, context_length),
                "delta": delta,
                "unit": UNIT_LOCAL,
                "adjacency": ADJACENCY_EXAMPLE,
                "unit_per_action": unit_action(context_length),
                "adjacency_per_action": adjacency_action(context_length),
                "sample_rate": t.sample_rate,
                "steps": t.steps,
                "batch_size": t.batch_size,
                "rounds": rounds,
                "evaluations": evaluations,
                "evaluation_noise_multiplier": t.evaluation_noise_multiplier,
                "device_epsilon_cap": loaded.privacy.device_epsilon_cap,
            }
        )
    kept = loaded.data.retention_days
    lifetime = lifetime_rounds(t.rounds_per_day, kept)
    notes = [
        f"epsilon per example: unit {UNIT_LOCAL}, over the {kept:g} days it is kept; "
        f"{ADJACENCY_EXAMPLE}; delta {delta:g}. A device charges each round to every day of "
        f"data it could read: a day joins about {lifetime} rounds in its lifetime "
        f"({t.rounds_per_day:g} a day), so plan --rounds {lifetime} for one day's loss.",
        f"epsilon per action: unit {unit_action(context_length)}; group privacy (RDP) over "
        f"{adjacency_action(context_length)}; delta {delta:g}.",
        f"The policy caps every example at epsilon {loaded.privacy.device_epsilon_cap:g} over "
        f"the {kept:g} days it is kept, enforced by a Rényi filter at its fixed orders (a "
        "little above these optimal-order figures)"
        + (
            "; devices add more noise than this where needed so a day lasts its rounds."
            if t.spread_local_budget and target_epsilon is None and noise is None
            else "."
        ),
    ]
    title = (
        f"local DP-SGD: q={t.sample_rate:g}, {t.steps} steps, batch {t.batch_size} a round; "
        f"{evaluations} evaluation(s) a round at x{t.evaluation_noise_multiplier:g}; "
        f"{rounds} rounds"
    )
    columns: list[Column] = [
        ("noise multiplier", lambda r: f"{r['noise_multiplier']:.4f}"),
        ("epsilon per example", lambda r: _eps(r["epsilon"])),
        ("epsilon per action", lambda r: _eps(r["epsilon_per_action"])),
        ("delta", lambda r: f"{r['delta']:g}"),
    ]
    _emit(rows, accountant, as_json, title, columns, notes)


@plan_app.command("user")
def plan_user(
    population: Annotated[int, typer.Option(min=1, help="devices enrolled in the campaign")],
    delta: Annotated[float, typer.Option(min=0.0, max=1.0, help="target delta")],
    cohort: Annotated[
        int | None, typer.Option(min=1, help="devices sampled per round (omit: sweep)")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="rounds within the horizon (omit: sweep)")
    ] = None,
    noise: Annotated[float | None, typer.Option(help="noise multiplier -> epsilon")] = None,
    target_epsilon: Annotated[float | None, typer.Option(help="epsilon -> noise")] = None,
    clip: Annotated[
        float | None,
        typer.Option(
            help="update clip norm (sweep: noise on the mean; default: the policy's, "
            "HEARTH_POLICY or the shipped one)"
        ),
    ] = None,
    max_noise_std: Annotated[
        float | None,
        typer.Option(help="sweep: utility bound, the most noise std per coordinate of the mean"),
    ] = None,
    joined: Annotated[
        int | None,
        typer.Option(min=1, help="rounds one user joins, facing the server (default: all)"),
    ] = None,
    utility_sweep: Annotated[
        Path | None,
        typer.Option(
            help="sweep: a `hearth-sim sweep --user-level` JSON; the utility bound is the most "
            "noise std on the mean at which it lost at most --max-loss of top-1"
        ),
    ] = None,
    max_loss: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="with --utility-sweep: relative top-1 loss")
    ] = 0.05,
    accountant: Annotated[str, typer.Option(help="rdp or pld")] = "rdp",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """User-level DP over a campaign: unit is one user's whole contribution.

    Beside the figure facing readers of the model (amplified by client sampling),
    the figure facing the server, which knows who joined: no amplification for the
    rounds a user joins.
    """
    if cohort is None or rounds is None:
        if target_epsilon is None or noise is not None:
            raise _fail("a sweep (no --cohort or --rounds) needs --target-epsilon and no --noise")
        bound = None
        if utility_sweep is not None:
            if max_noise_std is not None:
                raise _fail("give --utility-sweep or --max-noise-std, not both")
            try:
                bound = utility_bound(utility_sweep, max_loss)
            except ValueError as exc:
                raise _fail(str(exc)) from None
            max_noise_std = bound.max_noise_std if bound.max_noise_std is not None else 0.0
        if clip is None:
            clip = _policy(None).training.update_clip_norm
        _plan_user_sweep(population, delta, target_epsilon, clip, max_noise_std, as_json, bound)
        return
    _one_direction(noise, target_epsilon)
    if accountant not in USER_ACCOUNTANTS:
        raise _fail("--accountant must be rdp or pld")
    if cohort > population:
        raise _fail("--cohort cannot exceed --population")
    joined = rounds if joined is None else joined
    if joined > rounds:
        raise _fail("--joined cannot exceed --rounds")
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
        rows.append(
            {
                "accountant": name,
                "noise_multiplier": z,
                "epsilon": epsilon_user(z, sampling, rounds, delta, acc),
                "epsilon_vs_server": epsilon_user(z, 1.0, joined, delta, acc),
                "delta": delta,
                "unit": UNIT_USER,
                "adjacency": ADJACENCY_USER,
                "adjacency_vs_server": ADJACENCY_USER_VS_SERVER,
                "sampling_rate": sampling,
                "rounds": rounds,
                "rounds_joined": joined,
            }
        )
    notes = [
        f"facing readers of the model and checkpoints: unit {UNIT_USER}; {ADJACENCY_USER} "
        f"at q={sampling:.4g}; delta {delta:g}.",
        f"facing the server: unit {UNIT_USER}; {ADJACENCY_USER_VS_SERVER}, {joined} rounds "
        f"joined; delta {delta:g}. It holds only for noise the server cannot remove (added on "
        "the devices, summed under SecAgg+); noise the server adds itself gives no user-level "
        "guarantee facing the server.",
    ]
    columns: list[Column] = [
        ("noise multiplier", lambda r: f"{r['noise_multiplier']:.4f}"),
        ("epsilon (model readers)", lambda r: _eps(r["epsilon"])),
        ("epsilon (server)", lambda r: _eps(r["epsilon_vs_server"])),
        ("delta", lambda r: f"{r['delta']:g}"),
    ]
    title = f"user-level DP: q={sampling:.4g}, {rounds} rounds"
    _emit(rows, accountant, as_json, title, columns, notes)


SWEEP_PER_ROUND: tuple[int, ...] = (100, 300, 1000, 3000)
SWEEP_ROUNDS: tuple[int, ...] = (10, 30, 100, 300)


def _plan_user_sweep(
    population: int,
    delta: float,
    target: float,
    clip: float,
    max_noise_std: float | None,
    as_json: bool,
    bound: UtilityBound | None = None,
) -> None:
    """Devices per round x rounds: the noise each needs for ``target``, and its cost to utility.

    Utility is read as the noise std per coordinate on the averaged update,
    ``z x clip / (q x N)``: what the model sees of the noise. The user-level utility
    sweep (``hearth-sim sweep --user-level``, ``--utility-sweep``) maps it to accuracy.
    """
    rows: list[dict[str, Any]] = []
    for per_round in (c for c in SWEEP_PER_ROUND if c <= population):
        q = per_round / population
        for rounds in SWEEP_ROUNDS:
            try:
                z = noise_for_target(target, q, rounds, delta)
            except PlanningError:
                continue
            std = z * clip / per_round
            rows.append(
                {
                    "per_round": per_round,
                    "rounds": rounds,
                    "sampling_rate": q,
                    "noise_multiplier": z,
                    "noise_std_on_mean": std,
                    "meets_utility": None if max_noise_std is None else std <= max_noise_std,
                    "epsilon_vs_server_one_round": epsilon_user(z, 1.0, 1, delta),
                }
            )
    utility = None if bound is None else _bound_dict(bound)
    if as_json:
        print(
            json.dumps(
                {"target_epsilon": target, "delta": delta, "utility": utility, "plans": rows},
                indent=2,
            )
        )
        return
    table = Table(
        title=f"user-level epsilon {target:g} at delta {delta:g}, {population:,} devices "
        f"(unit: {UNIT_USER_HORIZON}; {ADJACENCY_USER})"
    )
    for name in ("per round", "rounds", "noise multiplier", "noise std on the mean", "fits"):
        table.add_column(name, justify="right")
    for r in rows:
        meets = r["meets_utility"]
        fits = "" if meets is None else ("yes" if meets else "no")
        table.add_row(
            f"{r['per_round']:,}",
            str(r["rounds"]),
            f"{r['noise_multiplier']:.3f}",
            f"{r['noise_std_on_mean']:.4f}",
            fits,
        )
    console.print(table)
    console.print(
        "Noise std on the mean = z x clip / devices per round: what the model sees of the "
        "noise (lower is better). Facing the server (no amplification) a user who joins k "
        "rounds has the epsilon of k unsampled Gaussian rounds at z."
    )
    if bound is not None:
        console.print(_bound_note(bound), soft_wrap=True)


def _bound_dict(bound: UtilityBound) -> dict[str, Any]:
    return {
        "sweep": str(bound.source),
        "max_loss": bound.max_loss,
        "max_noise_std": bound.max_noise_std,
        "sweep_population": bound.population,
        "sweep_sampling_rate": bound.sampling,
        "sweep_rounds": bound.rounds,
    }


def _bound_note(bound: UtilityBound) -> str:
    where = (
        f"the sweep {bound.source} ({bound.population:,} devices, q={bound.sampling:g}, "
        f"{bound.rounds} rounds trained)"
    )
    if bound.max_noise_std is None:
        return (
            f"fits: none. In {where} even the least-noised point lost more than "
            f"{bound.max_loss:.0%} of the no-noise top-1; rerun it on a larger population or "
            "with more rounds."
        )
    return (
        f"fits: noise std on the mean <= {bound.max_noise_std:.4f}, the most at which {where} "
        f"lost at most {bound.max_loss:.0%} of the no-noise top-1. The std carries over to "
        "other cohorts; more rounds than the sweep trained are not measured."
    )


def _user_cell(value: float | None, recorded: bool = True) -> str:
    if not recorded:
        return "not recorded"
    return "none" if value is None else f"{value:.3f}"


def _example_cell(row: dict[str, Any]) -> str:
    if row["epsilon_example_cap"] is not None:
        return f"{row['epsilon_example_cap']:g}"
    if row["epsilon_local_max"] is not None:
        return f"{row['epsilon_local_max']:.3f} reported (older sidecar)"
    return "-"


def _audit_totals(report: dict[str, Any]) -> list[str]:
    """What the campaign's figures say, each with its unit, delta and adjacency."""
    figures, delta = report["figures"], report["delta"]

    def said(key: str) -> str:
        return f"unit {figures[key]['unit']}; {figures[key]['adjacency']}; delta {delta}"

    cap, old = report["epsilon_example_cap"], report["epsilon_local_max"]
    kept = report.get("retention_days")
    lifetime = (
        f"over the {kept:g} days it is kept"
        if kept is not None
        else "over the days the campaign's policy keeps it (--policy names them)"
    )
    example = (
        f"per example, {lifetime}: at most epsilon {cap:g}, enforced on each device by its "
        "ledger, which charges every round to each day of data it could read; spent and "
        "remaining per day of data are on each device (`hearth budget show`, the dashboard), "
        "never sent"
        if cap is not None
        else f"largest reported epsilon {old:.3f} (older sidecars)"
        if old is not None
        else "not recorded"
    )
    return [
        f"example-level ({said('epsilon_example_cap')}): {example}. The per-action figure "
        "(one recorded action sits in up to K+1 examples) needs a device's history, which "
        "the server does not have: each device shows its own (`hearth budget show`).",
        f"user-level facing readers of the model and checkpoints ({said('epsilon_user')}): "
        f"{_user_cell(report['epsilon_user'])}.",
        f"user-level facing the server ({said('epsilon_user_vs_server')}): "
        f"{_user_cell(report['epsilon_user_vs_server'], report['vs_server_recorded'])}.",
        f"policy hashes: {', '.join(report['policy_hashes']) or '-'}",
    ]


@app.command()
def audit(
    checkpoint_dir: Annotated[Path, typer.Argument(help="a campaign's checkpoint directory")],
    policy: Annotated[
        Path | None,
        typer.Option(help="the campaign's policy TOML, for its retention (default: HEARTH_POLICY)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per round and in total: the example-level cap, user-level figures, cohorts, policy."""
    try:
        report = audit_campaign(checkpoint_dir)
    except AuditError as exc:
        raise _fail(str(exc)) from None
    loaded = _policy(policy)
    # The retention is the campaign's only if this is the policy its rounds ran under.
    report["retention_days"] = (
        loaded.data.retention_days if policy_hash(loaded) in report["policy_hashes"] else None
    )
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"campaign audit: {checkpoint_dir}")
    for column in (
        "round",
        "cohort",
        "example cap (each device)",
        "user eps (model readers)",
        "user eps (server)",
        "adjacency",
        "policy",
    ):
        table.add_column(column)
    for row in report["rounds"]:
        table.add_row(
            str(row["round"]),
            str(row["cohort_size"]),
            _example_cell(row),
            _user_cell(row["epsilon_user"]),
            _user_cell(row["epsilon_user_vs_server"], row["vs_server_recorded"]),
            row["adjacency"] or "-",
            (row["policy_hash"] or "-")[:8],
        )
    console.print(table)
    for line in _audit_totals(report):
        console.print(line, soft_wrap=True)
