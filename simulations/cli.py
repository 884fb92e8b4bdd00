"""`hearth-sim`: synthetic employees, simulation runs, experiments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

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

from client.home import hearth_home
from simulations.demo import DemoSettings, run_demo, summary
from simulations.population import Population, seed_population
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
    epsilons: Annotated[str, typer.Option(help="device epsilon caps, 'inf' for no DP")] = (
        "1,2,4,8,inf"
    ),
    employees: Annotated[int, typer.Option(min=2)] = 10,
    rounds: Annotated[int, typer.Option(min=1)] = 5,
    root: Annotated[Path | None, typer.Option(help="where the sweep keeps its state")] = None,
    out: Annotated[Path, typer.Option(help="where the plot and table go")] = Path("bench/sweep"),
) -> None:
    """Accuracy against epsilon: one real federation per budget, a plot and a table."""
    try:
        values = [float(e) for e in epsilons.split(",")]
    except ValueError:
        console.print("[red]--epsilons must be numbers or inf, comma-separated[/]")
        raise typer.Exit(1) from None
    sweep_root = (root or hearth_home() / "sim" / "sweep").resolve()
    points = run_sweep(sweep_root, values, employees, rounds)
    png, table = write_outputs(points, out)
    console.print(table.read_text())
    console.print(f"plot: {png}")
