"""The levers table: many user-level sweep runs, each under its own settings, in one table.

``hearth-sim sweep --user-level ... --record bench/user-sweep/levers2.json`` appends
every campaign it ran (the settings, the command that ran it, top-1) to the JSON
list and rewrites ``levers2.md`` and ``levers2.png`` beside it from the whole list.
A noised campaign's relative loss is against the campaign without any noise on the
same devices, data, rounds and model, at its own tuned learning rate: from the same
run when it had one, else the newest such baseline recorded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import matplotlib

from simulations.user_level_sweep import (
    LOSS_TARGET,
    UserSweepPoint,
    UserSweepSetup,
    is_baseline,
)

EXPLAINED: Final = (
    "Each row one campaign in process (`simulations.inprocess.run_user_level`: Poisson "
    "cohorts at q = 0.1 from the OS CSPRNG, each device's DP-SGD round at its local noise, "
    "update clip, distributed noise shares, rounds under min_cohort discarded, FedAvgM over "
    "the fixed q x N; a device declines once its ledger admits no more rounds for its data, "
    "all of it one day's). Noised rows at the shipped population's noise on the mean "
    "(z x N / 10,000) when `shipped scale` says so; user eps: facing readers of the model, "
    "delta 1e-7, over the budget's rounds a year. Device eps a round: per example (delta "
    "1e-5), one round and its noised evaluation, as the ledger charges it; rounds: how "
    "many a day of data joins under the cap 10. Relative loss: against the same devices, "
    "hours, rounds and model without any noise at their own learning rate (searched on "
    "validation data carved from the training parts), the same run's or the newest "
    "recorded. Server lr / momentum: chosen on validation data when a grid was given."
)


@dataclass(frozen=True)
class LeverRow:
    """One campaign of one sweep run, as the levers table shows it."""

    label: str
    command: str
    devices: int
    hours: float
    rounds: int
    budget_rounds: int
    accountant: str
    shipped_scale: bool
    target_epsilon: float  # inf: no central noise
    noise_accounted: float  # the accountant's z for the shipped population
    noise_std_on_mean: float
    epsilon_campaign: float
    model_parameters: int
    hidden: int
    token_dim: int
    local_noise: float
    device_epsilon_round: float
    device_rounds_within_cap: int
    update_clip: float
    learning_rate: float
    server_learning_rate: float
    server_momentum: float
    top1: float
    relative_loss: float  # NaN: no baseline run for this campaign (yet)
    rounds_aggregated: int
    rounds_declined: int
    baseline: bool

    def campaign_key(self) -> tuple[int, float, int, int, int]:
        """What a baseline must share with a noised row to be compared with it."""
        return (self.devices, self.hours, self.rounds, self.hidden, self.token_dim)


def _label(point: UserSweepPoint) -> str:
    if is_baseline(point):
        return "no noise"
    if point.noise_multiplier == 0:
        return "device DP only"
    return f"user eps {point.target_epsilon:g}"


def rows_of(
    setup: UserSweepSetup, points: Sequence[UserSweepPoint], command: str, hours: float
) -> list[LeverRow]:
    """One row per campaign of a sweep run."""
    scale = setup.population / 10_000 if setup.shipped_scale else 1.0
    rows = []
    for p in points:
        private = not is_baseline(p)
        rows.append(
            LeverRow(
                label=_label(p),
                command=command,
                devices=setup.population,
                hours=hours,
                rounds=setup.campaign_rounds,
                budget_rounds=setup.horizon_rounds,
                accountant=setup.accountant,
                shipped_scale=setup.shipped_scale,
                target_epsilon=p.target_epsilon,
                noise_accounted=p.noise_multiplier / scale,
                noise_std_on_mean=p.noise_std_on_mean,
                epsilon_campaign=p.epsilon_campaign,
                model_parameters=setup.model_parameters,
                hidden=setup.hidden,
                token_dim=setup.token_dim,
                local_noise=p.local_noise,
                device_epsilon_round=setup.device_epsilon_round if private else math.nan,
                device_rounds_within_cap=setup.device_rounds_within_cap if private else 0,
                update_clip=setup.update_clip if private else math.nan,
                learning_rate=p.learning_rate,
                server_learning_rate=p.server_learning_rate,
                server_momentum=p.server_momentum,
                top1=p.top1,
                relative_loss=p.relative_loss,
                rounds_aggregated=p.rounds_aggregated,
                rounds_declined=p.rounds_declined,
                baseline=not private,
            )
        )
    return rows


def _number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _row(data: dict[str, Any]) -> LeverRow:
    values: dict[str, Any] = {
        k: float(v) if isinstance(v, str) and v in ("nan", "inf", "-inf") else v
        for k, v in data.items()
    }
    return LeverRow(**values)


def read_rows(path: Path) -> list[LeverRow]:
    """The rows recorded so far (none when the file does not exist yet)."""
    if not path.exists():
        return []
    try:
        return [_row(entry) for entry in json.loads(path.read_text())]
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a levers record ({exc}); move it aside") from None


def with_losses(rows: Sequence[LeverRow]) -> list[tuple[LeverRow, float]]:
    """Each row with its relative loss: its own run's, else the newest matching baseline's."""
    newest: dict[tuple[int, float, int, int, int], float] = {}
    for row in rows:
        if row.baseline:
            newest[row.campaign_key()] = row.top1
    out = []
    for row in rows:
        loss = row.relative_loss
        if math.isnan(loss) and row.campaign_key() in newest:
            loss = 1 - row.top1 / newest[row.campaign_key()]
        out.append((row, loss))
    return out


def _cell(value: float, form: str, empty: str = "-") -> str:
    return empty if not math.isfinite(value) else format(value, form)


def markdown(rows: Sequence[LeverRow]) -> str:
    """The table, with every command that produced a row above it."""
    commands = list(dict.fromkeys(row.command for row in rows))
    lines = [
        "# User-level epsilon against top-1: the levers",
        "",
        EXPLAINED,
        "",
        "Commands (each row says which, by number):",
        "",
        *(f"{i}. `{command}`" for i, command in enumerate(commands, 1)),
        "",
        "| run | campaign | devices | hours | rounds | budget rounds a year | accountant "
        "| z (10,000 devices) | noise std on mean | parameters | local noise (device eps a "
        "round; rounds) | update clip | lr / server lr / momentum | top-1 | relative loss "
        "| rounds aggregated | device-rounds declined |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|",
    ]
    for row, loss in with_losses(rows):
        local = (
            f"{row.local_noise:.3g} ({row.device_epsilon_round:.2f}; "
            f"{row.device_rounds_within_cap})"
            if row.local_noise > 0
            else "0"
        )
        noised = row.noise_accounted > 0
        lines.append(
            f"| {commands.index(row.command) + 1} | {row.label} | {row.devices:,} "
            f"| {row.hours:g} | {row.rounds} | {row.budget_rounds if noised else '-'} "
            f"| {row.accountant if noised else '-'} "
            f"| {_cell(row.noise_accounted, '.3f') if noised else '-'} "
            f"| {row.noise_std_on_mean:.4f} | {row.model_parameters:,} | {local} "
            f"| {_cell(row.update_clip, 'g')} "
            f"| {row.learning_rate:g} / {row.server_learning_rate:g} / {row.server_momentum:g} "
            f"| {row.top1:.3f} | {_cell(loss, '+.1%', 'no baseline')} "
            f"| {row.rounds_aggregated} / {row.rounds} | {row.rounds_declined} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[LeverRow], png: Path) -> None:
    """Relative loss of every noised row, the 5 % bar drawn across."""
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the backend

    shown = [(row, loss) for row, loss in with_losses(rows) if not row.baseline]
    shown = [(row, loss) for row, loss in shown if math.isfinite(loss)]
    fig, ax = plt.subplots(figsize=(11, 0.9 + 0.32 * max(1, len(shown))))
    labels = [
        f"{r.label}, {r.devices:,} dev, "
        + (
            f"{r.rounds} of {r.budget_rounds} rounds a year, {r.accountant}"
            if r.noise_accounted > 0
            else f"{r.rounds} rounds"
        )
        + f", {r.model_parameters:,} params, local {r.local_noise:.3g}, clip {r.update_clip:g}"
        for r, _ in shown
    ]
    ax.barh(range(len(shown)), [100 * loss for _, loss in shown], color="tab:blue")
    ax.axvline(100 * LOSS_TARGET, color="gray", linestyle=":", label="5 % bar")
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("relative top-1 loss against the same campaign without noise (%)")
    ax.legend()
    fig.savefig(png, dpi=120, bbox_inches="tight")  # the long labels whole
    plt.close(fig)


def record(
    path: Path,
    setup: UserSweepSetup,
    points: Sequence[UserSweepPoint],
    command: str,
    hours: float,
) -> tuple[Path, Path, Path]:
    """Append a run's campaigns to ``path`` and rewrite the table and plot beside it."""
    rows = [*read_rows(path), *rows_of(setup, points, command, hours)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps([{k: _number(v) for k, v in asdict(r).items()} for r in rows], indent=1) + "\n"
    )
    tmp.replace(path)
    table = path.with_suffix(".md")
    table.write_text(markdown(rows))
    png = path.with_suffix(".png")
    plot(rows, png)
    return path, table, png


__all__ = ["LeverRow", "markdown", "read_rows", "record", "rows_of", "with_losses"]
