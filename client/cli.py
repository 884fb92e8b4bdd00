"""`hearth`: the employee's command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from client.budget_commands import budget_app
from client.cli_errors import fail
from client.control_commands import (
    consent_app,
    pause_command,
    resume_command,
    status_command,
)
from client.dashboard_commands import dashboard_command
from client.data_commands import data_app
from client.home import hearth_home
from client.policy_commands import policy_app
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
app.add_typer(policy_app, name="policy")
app.command("pause")(pause_command)
app.command("resume")(resume_command)
app.command("status")(status_command)
app.command("dashboard")(dashboard_command)


@app.command("join")
def join_command(
    superlink: Annotated[str, typer.Option("--superlink", help="HOST:PORT of the SuperLink")],
    root_cert: Annotated[Path, typer.Option("--root-cert", help="the federation's CA")],
    key: Annotated[Path, typer.Option("--key", help="this device's SuperNode private key")],
    org_key: Annotated[
        Path | None, typer.Option("--org-key", help="the org's bundle-signing public key")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="the privacy policy to pin (org-signed)")
    ] = None,
    policy_signature: Annotated[
        str, typer.Option("--policy-signature", help="the org's signature of it, or its .sig file")
    ] = "",
) -> None:
    """Join the federation: only signed bundles, only the pinned policy, only with consent."""
    from client.join import JoinConfig, JoinError, join  # noqa: PLC0415 (heavy imports)
    from client.policy_pin import read_signature_option  # noqa: PLC0415

    config = JoinConfig(
        superlink,
        root_cert,
        key,
        hearth_home(),
        org_key,
        policy=policy,
        policy_signature=read_signature_option(policy_signature) if policy_signature else "",
    )
    try:
        raise typer.Exit(join(config))
    except JoinError as exc:
        raise fail(str(exc)) from None


app.command("record")(record_command)
