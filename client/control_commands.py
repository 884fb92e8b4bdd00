"""`hearth consent`, `hearth pause`, `hearth resume`, `hearth status`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from client.consent import (
    ConsentError,
    disclosure_text,
    grant,
    load_consent,
    parse_modalities,
    revoke,
)
from client.control import DurationError, parse_duration, pause, pause_state, resume
from client.data_commands import delete_vault
from client.deployment import read_deployment
from client.heartbeat import running_recorder
from client.home import hearth_home
from client.keys import KEY_FILE
from client.vault import Vault, default_vault_dir
from privacy.policy import PolicyError, describe, load_policy

consent_app = typer.Typer(
    name="consent", help="What hearth may record: see, grant, revoke.", no_args_is_help=True
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"hearth: {message}", err=True)
    return typer.Exit(1)


def _policy_modalities() -> Any:
    try:
        return load_policy()
    except PolicyError as exc:
        raise _fail(str(exc)) from None


@consent_app.command("show")
def consent_show() -> None:
    """What each modality records and never records, the policy, how to pause and leave."""
    policy = _policy_modalities()
    typer.echo(disclosure_text(policy.data.allowed_modalities))
    typer.echo("\nThe privacy policy in force:\n" + describe(policy))
    record = load_consent(hearth_home())
    if record is not None and record.active:
        typer.echo(f"\nYou consented to: {', '.join(m.value for m in record.modalities)}")


@consent_app.command("grant")
def consent_grant(
    modalities: Annotated[str, typer.Option(help="e.g. pointer,keys,apps[,text][,screens]")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Consent to recording exactly these modalities."""
    policy = _policy_modalities()
    try:
        chosen = parse_modalities(modalities, policy.data.allowed_modalities)
    except ConsentError as exc:
        raise _fail(str(exc)) from None
    names = ", ".join(m.value for m in chosen)
    if not yes:
        typer.echo(disclosure_text(policy.data.allowed_modalities))
        if not typer.confirm(f"\nRecord {names} on this laptop?"):
            raise typer.Exit(1)
    grant(hearth_home(), chosen)
    typer.echo(f"consent recorded: {names}")


@consent_app.command("revoke")
def consent_revoke(
    delete_data: Annotated[
        bool, typer.Option("--delete-data", help="also destroy everything recorded")
    ] = False,
) -> None:
    """Stop recording now; optionally destroy the vault."""
    record = revoke(hearth_home())
    typer.echo("consent revoked: nothing more is recorded" if record else "there was no consent")
    if delete_data:
        delete_vault(default_vault_dir())
        typer.echo("the vault key is destroyed and the vault removed")


def pause_command(
    duration: Annotated[
        str | None, typer.Option("--for", help="e.g. 30m or 2h; omit to pause until resumed")
    ] = None,
) -> None:
    """Pause recording (survives restarts)."""
    try:
        seconds = parse_duration(duration) if duration else None
    except DurationError as exc:
        raise _fail(str(exc)) from None
    state = pause(hearth_home(), seconds)
    until = state.until or math.inf
    typer.echo(
        "paused until you run `hearth resume`"
        if math.isinf(until)
        else f"paused until {time.strftime('%H:%M', time.localtime(until))}"
    )


def resume_command() -> None:
    """Resume recording."""
    resume(hearth_home())
    typer.echo("recording resumed")


def status_report() -> dict[str, Any]:
    """The state `hearth status` and the dashboard both show."""
    home = hearth_home()
    record = load_consent(home)
    paused = pause_state(home)
    events_today = vault_bytes = 0
    vault_dir = default_vault_dir()
    if (vault_dir / KEY_FILE).exists():
        with Vault.open(vault_dir) as vault:
            midnight = time.mktime((*time.localtime()[:3], 0, 0, 0, 0, 0, -1))
            for segment in vault.segments():
                vault_bytes += segment.size
                if segment.wall_end >= midnight:
                    events_today += segment.n_events
    if record is None or not record.active:
        state = "not consented"
    elif paused.paused:
        state = "paused"
    else:
        state = "consented"
    recorder = running_recorder(home)
    return {
        "state": state,
        "modalities": [m.value for m in record.modalities] if record and record.active else [],
        "paused_until": None if not paused.paused or paused.until == math.inf else paused.until,
        "paused_until_resumed": paused.paused and paused.until == math.inf,
        "events_today": events_today,
        "vault_bytes": vault_bytes,
        "deployment": _deployment_summary(home),
        # The recorder process, from its heartbeat file: None when it is not running.
        "recorder": None
        if recorder is None
        else {
            "pid": recorder.pid,
            "started": recorder.started,
            "events_written": recorder.events_written,
            "last_flush": recorder.last_flush,
            "dropped": recorder.dropped,
            "listening": recorder.listening,
        },
        # What the employee should read: "recording" only while a recorder runs.
        "summary": _summary(state, recorder is not None),
    }


def _deployment_summary(home: Path) -> dict[str, Any]:
    """Last join, bundle refusal, declined round and round taken (reasons, never content)."""
    data = read_deployment(home)
    return {
        "last_join": data.get("join"),
        "last_refusal": data.get("refusal"),
        "last_decline": data.get("decline"),
        "last_round": data.get("round"),
    }


def _summary(state: str, recorder_running: bool) -> str:
    if state == "consented":
        return "recording" if recorder_running else "consented (recorder not running)"
    if state == "paused":
        return "paused" + ("" if recorder_running else " (recorder not running)")
    return state


def status_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Recording state, modalities, events today and vault size."""
    report = status_report()
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"state: {report['summary']}")
    if report["modalities"]:
        typer.echo(f"modalities: {', '.join(report['modalities'])}")
    if report["paused_until_resumed"]:
        typer.echo("paused until you run `hearth resume`")
    elif report["paused_until"]:
        typer.echo(f"paused until {time.strftime('%H:%M', time.localtime(report['paused_until']))}")
    typer.echo(f"events today: {report['events_today']:,}; vault: {report['vault_bytes']:,} bytes")
    for label, key in (
        ("refused bundle", "last_refusal"),
        ("declined round", "last_decline"),
        ("last round", "last_round"),
    ):
        entry = report["deployment"].get(key)
        if entry:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["time"]))
            detail = entry.get("reason") or f"round {entry.get('round')}"
            typer.echo(f"{label}: {when}: {detail}")
    if report["recorder"] is not None:
        typer.echo(
            f"recorder: pid {report['recorder']['pid']}, "
            f"{report['recorder']['events_written']:,} events written since it started"
        )
