"""`hearth`: the employee's command line."""

from __future__ import annotations

import typer

from client.budget_commands import budget_app
from client.control_commands import (
    consent_app,
    pause_command,
    resume_command,
    status_command,
)
from client.data_commands import data_app
from client.record_commands import record_command

app = typer.Typer(
    name="hearth",
    help="hearth on your laptop: what is recorded, pause, your data, your budget.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """Hearth records how you work only with your consent and keeps it on this laptop."""


app.add_typer(data_app, name="data")
app.add_typer(budget_app, name="budget")
app.add_typer(consent_app, name="consent")
app.command("pause")(pause_command)
app.command("resume")(resume_command)
app.command("status")(status_command)
app.command("record")(record_command)
