"""`hearth-privacy`: command line."""

from __future__ import annotations

import typer

app = typer.Typer(name="hearth-privacy", no_args_is_help=True, add_completion=False)


@app.callback()
def main() -> None:
    """Run hearth-privacy."""
