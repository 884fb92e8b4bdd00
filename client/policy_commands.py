"""`hearth policy`: the privacy policy this laptop pinned, and accepting a new one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from client.cli_errors import fail
from client.deployment import record
from client.home import hearth_home
from client.policy_pin import load_pinned, pin_policy, read_signature_option
from privacy.policy import PolicyError, describe, policy_changes

policy_app = typer.Typer(
    name="policy",
    help="The privacy policy this laptop pinned: see it, accept a new one.",
    no_args_is_help=True,
)


@policy_app.command("show")
def policy_show() -> None:
    """The pinned policy in plain words, with its hash."""
    try:
        pinned = load_pinned(hearth_home())
    except PolicyError as exc:
        raise fail(str(exc)) from None
    if pinned is None:
        typer.echo(
            "No policy pinned: this laptop has not joined a federation "
            "(`hearth join --policy POLICY --policy-signature SIG`)."
        )
        return
    typer.echo(f"Pinned policy {pinned.policy_hash} (file sha256 {pinned.file_sha256}),")
    typer.echo(f"signed by the organisation's key {pinned.key_id}:\n")
    typer.echo(describe(pinned.policy))


@policy_app.command("accept")
def policy_accept(
    policy: Annotated[Path, typer.Argument(help="the new privacy policy (TOML)")],
    signature: Annotated[
        str, typer.Option("--signature", help="the org's signature of it, or its .sig file")
    ],
) -> None:
    """Pin a new policy the organisation signed; rounds wait for your consent to it."""
    home = hearth_home()
    try:
        pinned, previous = pin_policy(home, policy, read_signature_option(signature))
    except PolicyError as exc:
        raise fail(str(exc)) from None
    if previous is not None and previous.policy_hash == pinned.policy_hash:
        typer.echo(f"policy {pinned.policy_hash[:12]} was already pinned: nothing changed")
        return
    record(
        home,
        "policy",
        pinned=pinned.policy_hash,
        previous=None if previous is None else previous.policy_hash,
    )
    typer.echo(f"pinned policy {pinned.policy_hash[:12]}")
    if previous is not None:
        typer.echo(f"what changed since policy {previous.policy_hash[:12]}:")
        for change in policy_changes(previous.policy, pinned.policy):
            typer.echo(f"  {change}")
    typer.echo(
        "This laptop takes part in no round under it until you consent: "
        "`hearth consent show`, then `hearth consent grant`."
    )
