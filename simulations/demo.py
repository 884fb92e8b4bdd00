"""`make demo`: a federation of synthetic employees training a next-action policy.

It seeds one encrypted vault per employee, runs ``flwr run .`` on the local
simulation federation, prints each round as its checkpoint lands, and ends with
a summary and where the checkpoints are.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from client.training import PersonalizeConfig
from server.checkpoints import read_sidecars
from server.report import ROUND_HEADER, round_line, round_table
from simulations.flwr_runner import FlwrRun, run_app
from simulations.ground_truth import GroundTruth, ground_truth
from simulations.population import seed_population


@dataclass(frozen=True)
class DemoSettings:
    """What ``hearth-sim demo`` runs."""

    root: Path
    employees: int = 20
    rounds: int = 5
    hours: float = 8.0
    seed: int = 7
    extra_config: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class DemoResult:
    """The rounds as the server saw them."""

    run: FlwrRun
    checkpoint_dir: Path
    rounds: list[dict[str, Any]]
    truth: GroundTruth | None = None


def run_demo(settings: DemoSettings, console: Console | None = None) -> DemoResult:
    """Seed, federate, report."""
    console = console or Console()
    started = time.perf_counter()
    population = seed_population(settings.root, settings.employees, settings.seed, settings.hours)
    console.print(
        f"[bold]seeded[/] {population.employees} synthetic employees, "
        f"{population.events:,} events in encrypted vaults under {settings.root / 'devices'} "
        f"({time.perf_counter() - started:.1f}s)"
    )
    checkpoints = settings.root / "checkpoints"
    # A new campaign on freshly seeded employees: an earlier demo's rounds are not its own.
    shutil.rmtree(checkpoints, ignore_errors=True)
    shown: list[int] = []

    def show_new_rounds() -> None:
        rows = read_sidecars(checkpoints) if checkpoints.exists() else []
        for row in rows[len(shown) :]:
            if not shown:
                console.print(ROUND_HEADER, highlight=False)
            shown.append(row["round"])
            console.print(round_line(row), highlight=False)

    run_config: dict[str, object] = {
        "num-server-rounds": settings.rounds,
        "sim-root": str(settings.root),
        "checkpoint-dir": str(checkpoints),
        "seed": settings.seed,
        **dict(settings.extra_config),
    }
    console.print(
        f"[bold]flwr run .[/] on the local simulation federation: {settings.employees} "
        f"SuperNodes, {settings.rounds} rounds (Flower's log: {settings.root / 'flwr.log'})"
    )
    run = run_app(
        num_supernodes=settings.employees,
        run_config=run_config,
        flwr_home=settings.root / "flwr-home",
        log_file=settings.root / "flwr.log",
        on_poll=show_new_rounds,
    )
    rows = read_sidecars(checkpoints) if checkpoints.exists() else []
    if not rows:
        return DemoResult(run, checkpoints, rows)
    print(round_table(rows))
    truth = ground_truth(settings.root, settings.employees, checkpoints, PersonalizeConfig())
    truth.write(checkpoints)
    return DemoResult(run, checkpoints, rows, truth)


def comparison_table(truth: GroundTruth) -> list[str]:
    """Global and personalized models against the per-person baselines, with margins."""
    best1 = max(truth.bigram_top1, truth.trigram_top1)
    best3 = max(truth.bigram_top3, truth.trigram_top3)
    rows = [("global model (federated, DP)", truth.top1, truth.top3)]
    if truth.personal_top1 is not None and truth.personal_top3 is not None:
        rows.append(("personalized (local fine-tuning)", truth.personal_top1, truth.personal_top3))
    lines = [
        f"  {'model':<34} {'top-1':>6} {'top-3':>6}   vs best per-person n-gram",
        *(
            f"  {name:<34} {t1:>6.3f} {t3:>6.3f}   {t1 - best1:+.3f} / {t3 - best3:+.3f}"
            for name, t1, t3 in rows
        ),
        f"  {'per-person bigram':<34} {truth.bigram_top1:>6.3f} {truth.bigram_top3:>6.3f}",
        f"  {'per-person trigram':<34} {truth.trigram_top1:>6.3f} {truth.trigram_top3:>6.3f}",
    ]
    return lines


def summary(result: DemoResult) -> str:
    """A few lines a newcomer can read."""
    if not result.rounds:
        code = result.run.returncode
        return f"no round finished (flwr exited with {code}); see {result.run.log_file}"
    last = result.rounds[-1]
    ev = last["evaluate"]
    lines = [
        f"after {last['round']} rounds ({result.run.seconds:.0f}s), as the server saw it "
        f"(noised sums): top-1 {ev.get('top1', float('nan')):.3f}, "
        f"top-3 {ev.get('top3', float('nan')):.3f}"
    ]
    truth = result.truth
    if truth is not None:
        lines += [
            "exact, on every employee's held-out data (only a simulation can know):",
            *comparison_table(truth),
            f"privacy: local DP-SGD epsilon mean {truth.epsilon_mean:.2f}, max "
            f"{truth.epsilon_max:.2f} at delta={truth.delta:g} (unit: one example on one "
            "device; read from the devices' own ledgers, which no server sees)",
        ]
    return "\n".join(
        [
            *lines,
            f"checkpoints: {result.checkpoint_dir} (round-NNNN.npz weights + .json sidecars)",
        ]
    )
