"""`hearth-server model`: a campaign's checkpoints as a model (list, card, export).

Torch and matplotlib are imported inside the commands: the rest of
``hearth-server`` starts without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

model_app = typer.Typer(
    name="model",
    help="A campaign's model: its rounds, a model card, an export for torch.",
    no_args_is_help=True,
)

CheckpointDir = Annotated[Path, typer.Argument(help="a campaign's checkpoint-dir")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"hearth-server model: {message}", err=True)
    return typer.Exit(1)


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


@model_app.command("list")
def list_rounds(checkpoint_dir: CheckpointDir) -> None:
    """Each round with its cohort, accuracy (noised sums) and privacy spent."""
    from server.model_store import ModelStoreError, rounds  # noqa: PLC0415

    try:
        summary = rounds(checkpoint_dir)
    except ModelStoreError as exc:
        raise _fail(str(exc)) from None
    typer.echo("round  cohort  top-1  top-3   loss  device cap  user eps  model version")
    for r in summary:
        typer.echo(
            f"{r.round:>5}  {r.cohort:>6}  {_num(r.top1):>5}  {_num(r.top3):>5}  "
            f"{_num(r.loss):>5}  {_num(r.epsilon_example_cap, 1):>10}  "
            f"{_num(r.epsilon_user, 2):>8}  {r.model_version[:12]}"
        )
    typer.echo(
        "accuracy: ratios of noised sums; device cap: one example on one device; "
        "user eps: one user across the campaign ('-': no central noise, no claim)"
    )


@model_app.command("show")
def show(
    checkpoint_dir: CheckpointDir,
    out: Annotated[
        Path | None, typer.Option(help="where the card and plots go (default: DIR/card)")
    ] = None,
) -> None:
    """Write a Markdown model card with PNG plots of accuracy and epsilon per round; print it."""
    from server.model_card import write_card  # noqa: PLC0415
    from server.model_store import ModelStoreError  # noqa: PLC0415

    try:
        card = write_card(checkpoint_dir, out or checkpoint_dir / "card")
    except (ModelStoreError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(card.markdown.read_text())
    typer.echo(f"card: {card.markdown}  plots: {card.accuracy_plot}, {card.epsilon_plot}")


@model_app.command("export")
def export(
    checkpoint_dir: CheckpointDir,
    out: Annotated[Path, typer.Option(help="the export directory")] = Path("model-export"),
    round_: Annotated[
        int | None, typer.Option("--round", help="a round (default: the newest)")
    ] = None,
) -> None:
    """Export safetensors weights, a torch.export program and the vocabulary."""
    from server.model_export import export_model  # noqa: PLC0415
    from server.model_store import ModelStoreError  # noqa: PLC0415

    try:
        result = export_model(checkpoint_dir, out, round_)
    except (ModelStoreError, ValueError) as exc:
        raise _fail(str(exc)) from None
    for path in (result.weights, result.program, result.config, result.vocabulary):
        typer.echo(f"wrote {path}")
    typer.echo(
        "load with torch alone: torch.export.load('model.pt2').module()(context, category, gaps)"
    )


@model_app.command("tensorboard")
def tensorboard(
    checkpoint_dir: CheckpointDir,
    out: Annotated[
        Path | None, typer.Option(help="event file directory (default: DIR/tensorboard)")
    ] = None,
) -> None:
    """Write every round's metrics as TensorBoard event files (`tensorboard --logdir ...`)."""
    from server.model_store import ModelStoreError, sidecars  # noqa: PLC0415
    from server.model_tracking import TENSORBOARD_DIR, write_rounds  # noqa: PLC0415

    log_dir = out or checkpoint_dir / TENSORBOARD_DIR
    try:
        written = write_rounds(sidecars(checkpoint_dir), log_dir)
    except ModelStoreError as exc:
        raise _fail(str(exc)) from None
    if not written:
        raise _fail("tensorboard is not installed: pip install 'hearth[tracking]'")
    typer.echo(f"{written} rounds in {log_dir}; view with: tensorboard --logdir {log_dir}")
