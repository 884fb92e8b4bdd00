"""`hearth-sim`: command line."""

from __future__ import annotations

import typer

app = typer.Typer(name="hearth-sim", no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Run hearth-sim."""
