"""`hearth data`: the employee's rights over what the vault holds."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from client.cli_errors import fail
from client.consent import on_change
from client.day_keys import DAY_SECONDS
from client.heartbeat import running_recorder
from client.home import hearth_home
from client.keys import (
    ENV_NEW_PASSPHRASE,
    KEY_FILE,
    NEXT_KEY_FILE,
    VaultKeyError,
    passphrase_from_env_or_prompt,
    rewrap_key,
)
from client.synthetic import describe, read_marker
from client.vault import (
    Vault,
    VaultFullError,
    default_vault_dir,
    destroy_vault,
    purge_revoked_modalities,
)

data_app = typer.Typer(
    name="data", help="See, export or delete what hearth recorded.", no_args_is_help=True
)
console = Console()
# Narrowing consent deletes what was recorded of the modalities taken away.
on_change(purge_revoked_modalities)


def _exists() -> bool:
    return (default_vault_dir() / KEY_FILE).exists()


def _open() -> Vault:
    directory = default_vault_dir()
    if not _exists():
        raise fail("there is no vault on this laptop: nothing has been recorded")
    try:
        return Vault.open(directory)
    except (VaultKeyError, VaultFullError) as exc:
        raise fail(str(exc)) from None


def daily_summary(vault: Vault) -> list[dict[str, object]]:
    """Events and bytes per UTC day and modality, from the vault's sealed manifest."""
    return [
        {
            "day": time.strftime("%Y-%m-%d", time.gmtime(day * DAY_SECONDS)),
            "modality": modality,
            "events": events,
            "bytes": size,
        }
        for day, entry in vault.day_counts().items()
        for modality, (events, size) in sorted(entry.items())
    ]


def integrity_report(vault: Vault) -> dict[str, object]:
    """Segments that were dropped, or stored without belonging (checked against the manifest)."""
    audit = vault.audit()
    return {
        "dropped_segments": list(audit.missing),
        "unexpected_segments": list(audit.unexpected),
        "manifest_error": vault.manifest_error,
        "rollback": vault.rollback,
        "purged_events": vault.purged_events,
    }


def _integrity_lines(report: dict[str, object]) -> list[str]:
    lines = []
    if report["manifest_error"]:
        lines.append(f"{report['manifest_error']}: no segment can be trusted")
    if report.get("rollback"):
        lines.append(str(report["rollback"]))
    for key, what in (
        ("dropped_segments", "missing (deleted outside hearth)"),
        ("unexpected_segments", "not in the manifest (put back or forged), skipped"),
        ("corrupt_segments", "failed authentication, skipped"),
    ):
        ids = report.get(key) or []
        assert isinstance(ids, list)
        if ids:
            shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
            lines.append(f"{len(ids)} segment(s) {what}: {shown}")
    return lines


@data_app.command()
def summary(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Per day and modality: events and bytes the vault holds, tampering found, synthetic or not."""
    synthetic = read_marker(hearth_home())
    if not _exists():
        typer.echo(
            json.dumps(
                {
                    "days": [],
                    "corrupt_segments": [],
                    "dropped_segments": [],
                    "unexpected_segments": [],
                    "manifest_error": None,
                    "rollback": None,
                    "purged_events": 0,
                    "synthetic": None,
                }
            )
            if as_json
            else "The vault is empty."
        )
        return
    with _open() as vault:
        rows = daily_summary(vault)
        vault.segments()  # authenticates every segment: collects the corrupt or reordered
        report = {"days": rows, "corrupt_segments": vault.corrupt_segments}
        report.update(integrity_report(vault))
    report["synthetic"] = synthetic
    if as_json:
        typer.echo(json.dumps(report))
        return
    if synthetic is not None:
        console.print(f"[bold yellow]{describe(synthetic)}[/]")
    for line in _integrity_lines(report):
        typer.echo(f"warning: {line}", err=True)
    if report["purged_events"]:
        typer.echo(f"{report['purged_events']:,} events of revoked modalities were deleted")
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
        raise fail(f"{out} exists; choose another file or remove it first")
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
    """Crypto-shred: destroy the keys first, then the database files (``destroy_vault``)."""
    return destroy_vault(directory)


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
def rotate_key_command(
    use_keyring: Annotated[
        bool, typer.Option("--keyring", help="keep the new key in the OS keyring, not a passphrase")
    ] = False,
) -> None:
    """Replace the vault's key: every segment is re-encrypted, the old key destroyed.

    The new passphrase comes from HEARTH_NEW_PASSPHRASE or a prompt. Interrupted, it
    resumes when run again with the same new passphrase.
    """
    directory = default_vault_dir()
    if not _exists() and not (directory / NEXT_KEY_FILE).exists():
        raise fail("there is no vault on this laptop to re-key")
    if running_recorder(hearth_home()) is not None:
        raise fail("the recorder is running: stop it (Ctrl-C or its service) and rotate again")
    try:
        new = None if use_keyring else passphrase_from_env_or_prompt(ENV_NEW_PASSPHRASE, True)
        report = Vault.rotate(directory, new)
        ledger_dir = directory.parent / "privacy"
        if new is not None and (ledger_dir / KEY_FILE).exists():
            rewrap_key(ledger_dir, new)  # the budget ledger's key is wrapped the same way
    except (VaultKeyError, VaultFullError) as exc:
        raise fail(str(exc)) from None
    typer.echo(
        f"the vault key is replaced (generation {report.generation}): "
        f"{report.reencrypted} segments re-encrypted, the old key destroyed"
    )
