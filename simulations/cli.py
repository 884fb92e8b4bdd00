"""`hearth-sim`: synthetic employees, simulation runs, experiments."""

from __future__ import annotations

import math
import os
import shlex
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from client.storage.home import hearth_home
from client.storage.keys import VaultKeyError
from privacy.accountants import UserAccountant
from simulations.campaign import default_campaign
from simulations.demo import DemoSettings, run_demo, seed_or_reuse, summary
from simulations.event_log import EventLogError, read_log
from simulations.inprocess import LearningRateSearch
from simulations.log_evaluation import LogSettings, evaluate_log, table
from simulations.log_import import Split, import_log, imported_config, train_imported
from simulations.population import Population, SeedError, seed_device, seed_population
from simulations.sweep import run_sweep, write_outputs

app = typer.Typer(name="hearth-sim", no_args_is_help=True, add_completion=False)
console = Console()


@app.callback()
def main() -> None:
    """Simulate a federation of synthetic employees."""


@app.command()
def demo(
    employees: Annotated[int, typer.Option(min=2, help="synthetic employees")] = 20,
    rounds: Annotated[int, typer.Option(min=1, help="federated rounds")] = 10,
    hours: Annotated[
        float | None,
        typer.Option(min=0.5, help="hours of work per employee (default 8, 2 above 1,000)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="same seed, same employees")] = 7,
    root: Annotated[Path | None, typer.Option(help="where the demo keeps its state")] = None,
    per_round: Annotated[
        int | None, typer.Option(min=2, help="devices per round, Poisson-sampled (default: all)")
    ] = None,
    evaluate_per_round: Annotated[
        int | None, typer.Option(min=1, help="devices evaluating per round (default: per-round)")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="processes seeding vaults")] = (
        os.cpu_count() or 1
    ),
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="RAY_ADDRESS",
            help="host:port of a Ray cluster's head (ray start --head) to run the devices on",
        ),
    ] = None,
) -> None:
    """Seed synthetic employees and run `flwr run .` on them, printing each round."""
    settings = DemoSettings(
        root=(root or hearth_home() / "sim" / "demo").resolve(),
        employees=employees,
        rounds=rounds,
        hours=hours if hours is not None else (8.0 if employees <= 1000 else 2.0),
        seed=seed,
        per_round=per_round,
        evaluate_per_round=evaluate_per_round,
        workers=workers,
        ray_address=ray_address,
    )
    result = run_demo(settings, console)
    console.print(summary(result))
    if result.run.returncode != 0 or len(result.rounds) < rounds:
        console.print(f"[red]the run did not finish; see {result.run.log_file}[/]")
        raise typer.Exit(1)


@app.command()
def seed(
    root: Annotated[Path, typer.Argument(help="simulation root to create")],
    employees: Annotated[int, typer.Option(min=1)] = 20,
    hours: Annotated[float, typer.Option(min=0.5)] = 8.0,
    seed: Annotated[int, typer.Option()] = 7,
    workers: Annotated[
        int, typer.Option(min=1, help="processes seeding in parallel (default: the CPUs)")
    ] = os.cpu_count() or 1,
) -> None:
    """Create encrypted vaults for synthetic employees (for `flwr run . --run-config`)."""
    population = seed_with_progress(root.resolve(), employees, seed, hours, workers)
    console.print(f"{population.employees} employees, {population.events:,} events in {root}")


@app.command("deploy-demo")
def deploy_demo(
    rounds: Annotated[int, typer.Option(min=1, help="rounds of the SecAgg+ campaign")] = 3,
    root: Annotated[
        Path | None, typer.Option(help="where the demo keeps its state (replaced each run)")
    ] = None,
) -> None:
    """README's real deployment on 127.0.0.1: PKI, `up`, two laptops, a SecAgg+ campaign, audit."""
    from simulations.deploy_demo import (  # noqa: PLC0415 (only this command needs it)
        DeployDemoError,
        DeployDemoSettings,
        run_deploy_demo,
    )

    settings = DeployDemoSettings(root=root or hearth_home() / "deploy-demo", rounds=rounds)
    try:
        result = run_deploy_demo(settings, typer.echo)
    except DeployDemoError as exc:
        typer.echo(f"hearth-sim: deploy demo failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"deploy demo done in {result.seconds:.0f}s")
    raise typer.Exit(result.campaign_exit)


@app.command("seed-device")
def seed_device_command(
    home: Annotated[
        Path, typer.Argument(help="the laptop's HEARTH_HOME (empty, or seeded before)")
    ],
    employee: Annotated[int, typer.Option(min=0, help="which synthetic employee")] = 0,
    hours: Annotated[float, typer.Option(min=0.1, help="hours of made-up work")] = 1.0,
    seed: Annotated[int, typer.Option(help="same seed, same employee")] = 7,
) -> None:
    """Give a test laptop synthetic work in its vault, marked synthetic in `hearth data summary`.

    The vault key comes from where `hearth` on that laptop takes it (the OS keyring,
    or HEARTH_PASSPHRASE). Consent stays the employee's step: `hearth consent grant`.
    """
    try:
        count = seed_device(home.resolve(), employee, seed, hours)
    except (SeedError, VaultKeyError) as exc:
        console.print(f"[red]hearth-sim: {exc}[/]")
        raise typer.Exit(1) from None
    console.print(
        f"{count:,} synthetic events (employee {employee}) in {home / 'vault'}, marked synthetic"
    )


def _show_search(search: LearningRateSearch) -> None:
    tried = ", ".join(f"{rate:g}: {top1:.3f}" for rate, top1 in search.scores)
    console.print(
        f"no-DP learning rate {search.best:g}, chosen on validation top-1 "
        f"(training parts only) among {tried}"
    )


def seed_with_progress(
    root: Path, employees: int, seed: int, hours: float, workers: int
) -> Population:
    """``seed_population`` behind a rich progress bar (employees seeded, rate, time left)."""
    columns = (
        TextColumn("seeding encrypted vaults"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("seed", total=employees)
        return seed_population(
            root,
            employees,
            seed,
            hours,
            progress=lambda done: bar.update(task, completed=done),
            workers=workers,
        )


@app.command()
def sweep(
    epsilons: Annotated[
        str | None,
        typer.Option(
            help="device epsilon caps ('1,2,4,8,inf'), or with --user-level user-level "
            "targets ('0.5,1,2,4,8,none'); inf or none: no noise; with --user-level, local: "
            "device DP without central noise"
        ),
    ] = None,
    employees: Annotated[
        int | None, typer.Option(min=2, help="devices (default 10; --user-level: 1,000)")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="rounds (default 5; --user-level: the campaign's)")
    ] = None,
    hours: Annotated[
        float | None,
        typer.Option(min=0.5, help="hours of work per employee (default 8; --user-level: 1)"),
    ] = None,
    root: Annotated[Path | None, typer.Option(help="where the sweep keeps its state")] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="where the plot and table go (with --record: only when given)"),
    ] = None,
    user_level: Annotated[
        bool,
        typer.Option(
            "--user-level",
            help="vary the user-level epsilon (central noise chosen by the accountant at the "
            "shipped q and horizon), in process; device DP as shipped",
        ),
    ] = False,
    learning_rates: Annotated[
        str | None,
        typer.Option(help="--user-level: the no-noise run's learning rates to choose from"),
    ] = None,
    local_noise: Annotated[
        float | None,
        typer.Option(
            min=0.3,
            help="--user-level: the devices' DP-SGD noise multiplier (default: the one the "
            "shipped policy plans); its per-round device epsilon is reported",
        ),
    ] = None,
    update_clip: Annotated[
        float | None,
        typer.Option(min=0.01, help="--user-level: update clip of the noised campaigns"),
    ] = None,
    shipped_scale: Annotated[
        bool,
        typer.Option(
            "--shipped-scale",
            help="--user-level: each target's z x N / 10,000, the shipped 10,000-device "
            "population's noise on the mean",
        ),
    ] = False,
    budget_rounds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="--user-level: noised rounds a year the budget covers (default: the 30 the "
            "shipped z buys); --rounds is this campaign's share",
        ),
    ] = None,
    accountant: Annotated[
        str, typer.Option(help="--user-level: the accountant choosing z, rdp or pld")
    ] = "rdp",
    server_learning_rates: Annotated[
        str | None,
        typer.Option(help="--user-level: server learning rates to choose from on validation"),
    ] = None,
    server_momenta: Annotated[
        str | None,
        typer.Option(help="--user-level: server momenta to choose from on validation"),
    ] = None,
    hidden: Annotated[
        int | None,
        typer.Option(
            min=1, help="--user-level: the model's hidden width (default: the run config's, 32)"
        ),
    ] = None,
    token_dim: Annotated[
        int | None, typer.Option(min=1, help="--user-level: the model's token embedding (16)")
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(
            help="--user-level: append the run to this levers record (.json) and rewrite "
            "its .md and .png"
        ),
    ] = None,
) -> None:
    """Accuracy against epsilon, a plot and a table.

    Device-level budgets run as real federations; ``--user-level`` runs the shipped
    user-level mechanism in process at each user-level target.
    """
    try:
        asked = [] if epsilons is None else [e.strip() for e in epsilons.split(",")]
        local_only = "local" in asked and user_level
        values = (
            None
            if epsilons is None
            else [
                math.inf if e in ("inf", "none") else float(e)
                for e in asked
                if not (user_level and e == "local")
            ]
        )
        grid = None if learning_rates is None else [float(r) for r in learning_rates.split(",")]
        server_grid = _numbers(server_learning_rates), _numbers(server_momenta)
    except ValueError:
        console.print(
            "[red]--epsilons, --learning-rates, --server-learning-rates and --server-momenta "
            "must be numbers, comma-separated (--epsilons also none, or local with "
            "--user-level)[/]"
        )
        raise typer.Exit(1) from None
    if accountant not in ("rdp", "pld"):
        console.print("[red]--accountant must be rdp or pld[/]")
        raise typer.Exit(1)
    if user_level:
        options = UserSweepOptions(
            local_noise,
            update_clip,
            shipped_scale,
            local_only,
            budget_rounds=budget_rounds,
            accountant="pld" if accountant == "pld" else "rdp",
            server_learning_rates=server_grid[0],
            server_momenta=server_grid[1],
            hidden=hidden,
            token_dim=token_dim,
            record=record,
        )
        _user_level_sweep(values, employees or 1000, rounds, hours or 1.0, root, out, grid, options)
        return
    sweep_root = (root or hearth_home() / "sim" / "sweep").resolve()
    points = run_sweep(
        sweep_root,
        values or [1.0, 2.0, 4.0, 8.0, math.inf],
        employees or 10,
        rounds or 5,
        hours=hours or 8.0,
        on_search=_show_search,
    )
    png, table = write_outputs(points, out or Path("bench/sweep"))
    console.print(table.read_text())
    console.print(f"plot: {png}")


@dataclass(frozen=True)
class UserSweepOptions:
    """The levers of ``sweep --user-level`` beyond the targets (None: as shipped)."""

    local_noise: float | None = None
    update_clip: float | None = None
    shipped_scale: bool = False
    local_only: bool = False
    budget_rounds: int | None = None
    accountant: UserAccountant = "rdp"
    server_learning_rates: tuple[float, ...] = ()
    server_momenta: tuple[float, ...] = ()
    hidden: int | None = None
    token_dim: int | None = None
    record: Path | None = None


def _model_config(options: UserSweepOptions) -> Any:
    """The model the sweep trains: the shipped shape unless a smaller one was asked."""
    shipped = default_campaign().model_config()  # torch: only when asked
    return replace(
        shipped,
        hidden=options.hidden or shipped.hidden,
        token_dim=options.token_dim or shipped.token_dim,
    )


def _numbers(text: str | None) -> tuple[float, ...]:
    """A comma-separated list of numbers (``ValueError`` for anything else)."""
    return () if text is None else tuple(float(x) for x in text.split(","))


def _user_level_sweep(
    targets: list[float] | None,
    employees: int,
    rounds: int | None,
    hours: float,
    root: Path | None,
    out: Path | None,
    grid: list[float] | None,
    options: UserSweepOptions,
) -> None:
    """Seed (or reuse) the population, run every target in process, write PNG + MD + JSON."""
    from simulations.user_level_levers import record  # noqa: PLC0415 (torch: only when asked)
    from simulations.user_level_sweep import (  # noqa: PLC0415
        DEFAULT_TARGETS,
        LEARNING_RATE_GRID,
        load_devices,
        run_user_sweep,
        write_user_outputs,
    )

    settings = DemoSettings(
        root=(root or hearth_home() / "sim" / "user-sweep").resolve(),
        employees=employees,
        hours=hours,
        workers=os.cpu_count() or 1,
    )
    seed_or_reuse(settings, console)
    console.print(f"reading {employees:,} vaults")
    train, held = load_devices(settings.root, employees, default_campaign().context_length)

    def show(point: Any) -> None:
        label = "none" if math.isinf(point.target_epsilon) else f"{point.target_epsilon:g}"
        label += " (device DP only)" if point.local_noise and not point.noise_multiplier else ""
        console.print(
            f"user epsilon {label}: z {point.noise_multiplier:.3f}, top-1 {point.top1:.3f}, "
            + (
                f"relative loss {point.relative_loss:+.1%}"
                if math.isfinite(point.relative_loss)
                else "no baseline in this run"
            )
        )

    setup, points = run_user_sweep(
        train,
        held,
        targets or DEFAULT_TARGETS,
        rounds,
        grid or LEARNING_RATE_GRID,
        on_point=show,
        on_search=_show_search,
        update_clip=options.update_clip,
        local_noise=options.local_noise,
        shipped_scale=options.shipped_scale,
        local_only=options.local_only,
        budget_rounds=options.budget_rounds,
        accountant=options.accountant,
        model_config=_model_config(options),
        server_rates=options.server_learning_rates,
        server_momenta=options.server_momenta,
        on_server_search=lambda s: console.print(f"server optimizer search: {s}"),
    )
    if options.record is not None:
        command = "hearth-sim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        data, table, png = record(options.record, setup, points, command, hours)
        console.print(table.read_text())
        console.print(f"levers: {data}, {table}, {png}")
        if out is None:
            return
    png, table, data = write_user_outputs(setup, points, out or Path("bench/user-sweep"))
    console.print(table.read_text())
    console.print(f"plot: {png}; data for `hearth-privacy plan user --utility-sweep`: {data}")


@app.command("evaluate-log")
def evaluate_log_command(
    file: Annotated[Path, typer.Argument(help="an event log: .csv with a header row, or .xes")],
    case: Annotated[str, typer.Option(help="CSV column of the case id")] = "case",
    activity: Annotated[str, typer.Option(help="CSV column of the activity")] = "activity",
    timestamp: Annotated[str, typer.Option(help="CSV column of the timestamp")] = "timestamp",
    devices: Annotated[int, typer.Option(min=2, help="simulated devices for DP")] = 10,
    epsilon: Annotated[float, typer.Option(min=0.01, help="device epsilon (finite)")] = 8.0,
    rounds: Annotated[int, typer.Option(min=1)] = 10,
    context_length: Annotated[int, typer.Option(min=1, max=64)] = 8,
) -> None:
    """Next-activity protocol on a log: n-gram, central no-DP and federated DP side by side."""
    try:
        cases = read_log(file, case, activity, timestamp)
        settings = LogSettings(
            devices=devices, epsilon=epsilon, rounds=rounds, context_length=context_length
        )
        evaluation = evaluate_log(cases, settings)
    except (EventLogError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(table(evaluation), highlight=False)


@app.command("import-log")
def import_log_command(
    file: Annotated[Path, typer.Argument(help="an event log: .csv with a header row, or .xes")],
    root: Annotated[Path, typer.Option(help="simulation root to create (devices replaced)")],
    devices: Annotated[int, typer.Option(min=1, help="simulated devices, one vault each")] = 10,
    split: Annotated[Split, typer.Option(help="deal cases in blocks of time or at random")] = (
        Split.TIME
    ),
    case: Annotated[str, typer.Option(help="CSV column of the case id")] = "case",
    activity: Annotated[str, typer.Option(help="CSV column of the activity")] = "activity",
    timestamp: Annotated[str, typer.Option(help="CSV column of the timestamp")] = "timestamp",
    context_length: Annotated[int, typer.Option(min=1, max=64)] = 8,
    seed: Annotated[int, typer.Option(help="the random split's seed")] = 7,
) -> None:
    """Write a log's cases into one encrypted vault per simulated device, with its vocabulary."""
    try:
        cases = read_log(file, case, activity, timestamp)
        imported = import_log(
            cases, root.resolve(), devices, split, context_length, seed, source=file.name
        )
    except (EventLogError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    typer.echo(
        f"{imported.cases:,} cases, {imported.events:,} events in {imported.devices} encrypted "
        f"vaults under {root}; vocabulary of {imported.config.vocab_size} tokens "
        "(activities, <pad>, <end>)"
    )


@app.command("train-log")
def train_log_command(
    root: Annotated[Path, typer.Argument(help="a root written by import-log")],
    epsilon: Annotated[float, typer.Option(min=0.01, help="device epsilon (finite)")] = 8.0,
    rounds: Annotated[int, typer.Option(min=1)] = 10,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="where the model goes (default: ROOT/checkpoints)")
    ] = None,
) -> None:
    """Federate with DP-SGD on imported vaults in process; checkpoint for `hearth-server model`."""
    try:
        config, record = imported_config(root.resolve())
        settings = LogSettings(
            devices=int(record["devices"]),
            epsilon=epsilon,
            rounds=rounds,
            context_length=config.context_length,
        )
        result = train_imported(root.resolve(), settings, checkpoint_dir)
    except (EventLogError, ValueError) as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    typer.echo(
        f"{result.test_predictions} test predictions (each device's newest third of cases)\n"
        f"| model | top-1 | top-3 |\n|---|---:|---:|\n"
        f"| n-gram (pooled training cases, no privacy) | {result.ngram_top1:.3f} | "
        f"{result.ngram_top3:.3f} |\n"
        f"| hearth, federated DP (device epsilon {epsilon:g}, noise {result.noise:.2f}, "
        f"learning rate {result.learning_rate:g}) | {result.top1:.3f} | {result.top3:.3f} |\n"
        f"checkpoint: {result.checkpoint}"
    )
