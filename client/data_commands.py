"""`hearth data`: the employee's rights over what the vault holds."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from client.home import hearth_home
from client.keys import (
    ENV_NEW_PASSPHRASE,
    KEY_FILE,
    VaultKeyError,
    destroy_key,
    passphrase_from_env_or_prompt,
    rotate_key,
)
from client.synthetic import describe, read_marker
from client.vault import DB_FILES, Vault, VaultFullError, default_vault_dir

data_app = typer.Typer(
    name="data", help="See, export or delete what hearth recorded.", no_args_is_help=True
)
console = Console()


def _fail(message: str) -> typer.Exit:
    typer.echo(f"hearth: {message}", err=True)
    return typer.Exit(1)


def _exists() -> bool:
    return (default_vault_dir() / KEY_FILE).exists()


def _open() -> Vault:
    directory = default_vault_dir()
    if not _exists():
        raise _fail("there is no vault on this laptop: nothing has been recorded")
    try:
        return Vault.open(directory)
    except (VaultKeyError, VaultFullError) as exc:
        raise _fail(str(exc)) from None


def daily_summary(vault: Vault) -> list[dict[str, object]]:
    """Events and bytes per day and modality, from plaintext metadata only."""
    rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for segment in vault.segments():
        day = time.strftime("%Y-%m-%d", time.localtime(segment.wall_end))
        total = max(1, segment.n_events)
        for modality, count in segment.modalities.items():
            entry = rows[(day, modality)]
            entry[0] += count
            entry[1] += segment.size * count // total
    return [
        {"day": day, "modality": modality, "events": n, "bytes": b}
        for (day, modality), (n, b) in sorted(rows.items())
    ]


@data_app.command()
def summary(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Per day and modality: how many events and bytes the vault holds (and if it is synthetic)."""
    synthetic = read_marker(hearth_home())
    if not _exists():
        typer.echo(
            json.dumps({"days": [], "corrupt_segments": [], "synthetic": None})
            if as_json
            else "The vault is empty."
        )
        return
    with _open() as vault:
        rows = daily_summary(vault)
        corrupt = vault.corrupt_segments
    if as_json:
        typer.echo(json.dumps({"days": rows, "corrupt_segments": corrupt, "synthetic": synthetic}))
        return
    if synthetic is not None:
        console.print(f"[bold yellow]{describe(synthetic)}[/]")
    if not rows:
        console.print("The vault is empty.")
        return
    table = Table(title="What hearth holds on this laptop (encrypted)")
    for column in ("day", "modality", "events", "bytes"):
        table.add_column(column, justify="right" if column in ("events", "bytes") else "left")
    for row in rows:
        table.add_row(
            str(row["day"]), str(row["modality"]), f"{row['events']:,}", f"{row['bytes']:,}"
        )
    console.print(table)


@data_app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="file to write (JSON Lines, decrypted)")],
) -> None:
    """Decrypt everything into a file for your own eyes (created owner-only)."""
    if out.exists():
        raise _fail(f"{out} exists; choose another file or remove it first")
    count = 0
    with _open() as vault:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            for record in vault.export():
                handle.write(json.dumps(record) + "\n")
                count += 1
        corrupt = vault.corrupt_segments
    typer.echo(f"exported {count} events to {out} (decrypted: keep it private)")
    if corrupt:
        typer.echo(f"skipped corrupt segments: {', '.join(map(str, corrupt))}", err=True)


def delete_vault(directory: Path) -> bool:
    """Crypto-shred: destroy the key first, then the database files."""
    existed = destroy_key(directory)
    for name in DB_FILES:
        path = directory / name
        if path.exists():
            path.unlink()
            existed = True
    if directory.exists():
        shutil.rmtree(directory)
    return existed


@data_app.command()
def delete(
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Delete everything recorded: the key is destroyed first, so nothing is recoverable."""
    directory = default_vault_dir()
    if not yes and not typer.confirm(
        "Delete all data hearth recorded on this laptop? This cannot be undone."
    ):
        raise typer.Exit(1)
    existed = delete_vault(directory)
    typer.echo(
        "deleted: the key is destroyed and the vault removed" if existed else "nothing to delete"
    )


@data_app.command("rotate-key")
def rotate_key_command() -> None:
    """Re-wrap the vault's key under a new passphrase (HEARTH_NEW_PASSPHRASE or a prompt)."""
    directory = default_vault_dir()
    if not _exists():
        raise _fail("there is no vault on this laptop to re-key")
    try:
        new = passphrase_from_env_or_prompt(ENV_NEW_PASSPHRASE, confirm=True)
        rotate_key(directory, new)
        ledger_dir = directory.parent / "privacy"
        if (ledger_dir / KEY_FILE).exists():
            rotate_key(ledger_dir, new)  # the budget ledger's key is wrapped the same way
    except VaultKeyError as exc:
        raise _fail(str(exc)) from None
    typer.echo("the vault key is re-wrapped under the new passphrase")
