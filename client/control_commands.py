"""`hearth consent`, `hearth pause`, `hearth resume`, `hearth status`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from client.cli_errors import fail
from client.consent import (
    ConsentError,
    ConsentRecord,
    disclosure_text,
    grant,
    load_consent,
    parse_modalities,
)
from client.control import DurationError, PauseState, parse_duration, pause_state
from client.data_commands import delete_vault
from client.day_keys import day_of
from client.deployment import consent_problem, read_deployment
from client.heartbeat import running_recorder
from client.home import hearth_home
from client.keys import KEY_FILE
from client.policy_pin import device_policy, load_pinned
from client.recorder_control import (
    ControlResult,
    live_state,
    request_pause,
    request_resume,
    request_revoke,
)
from client.vault import Vault, default_vault_dir
from privacy.policy import PolicyError, PrivacyPolicy, describe, policy_changes, policy_hash

consent_app = typer.Typer(
    name="consent", help="What hearth may record: see, grant, revoke.", no_args_is_help=True
)


def _policy_in_force() -> PrivacyPolicy:
    """The device's policy: the pinned one once it joined (``client.policy_pin``)."""
    try:
        return device_policy(hearth_home())
    except PolicyError as exc:
        raise fail(str(exc)) from None


def consent_against_policy(record: ConsentRecord | None, policy: PrivacyPolicy) -> list[str]:
    """What ``hearth consent show`` says of the consent record against the policy in force."""
    if record is None or not record.active:
        return ["You have not consented: nothing is recorded and this laptop takes no part."]
    names = ", ".join(m.value for m in record.modalities)
    current = policy_hash(policy)
    if record.policy_hash == current:
        return [f"You consented to: {names}, under this policy ({current[:12]})."]
    if record.policy_hash is None:
        return [
            f"You consented to: {names}, before this laptop pinned a policy. That consent "
            f"does not cover the policy in force ({current[:12]}): this laptop takes part "
            "in no round until you run `hearth consent grant` again.",
        ]
    changes = policy_changes(record.policy, policy) if record.policy is not None else []
    lines = [
        f"You consented to: {names}, under policy {record.policy_hash[:12]}. The policy in "
        f"force is now {current[:12]}: this laptop takes part in no round until you run "
        "`hearth consent grant` again.",
        "What changed since you consented:" if changes else "What changed is not known.",
    ]
    return lines + [f"  {change}" for change in changes]


@consent_app.command("show")
def consent_show() -> None:
    """What each modality records and never records, the policy, and what changed since."""
    policy = _policy_in_force()
    typer.echo(disclosure_text(policy.data.allowed_modalities))
    typer.echo("\nThe privacy policy in force:\n" + describe(policy))
    typer.echo("\n" + "\n".join(consent_against_policy(load_consent(hearth_home()), policy)))


@consent_app.command("grant")
def consent_grant(
    modalities: Annotated[str, typer.Option(help="e.g. pointer,keys,apps[,text][,screens]")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Consent to recording exactly these modalities, under the policy in force."""
    policy = _policy_in_force()
    try:
        chosen = parse_modalities(modalities, policy.data.allowed_modalities)
    except ConsentError as exc:
        raise fail(str(exc)) from None
    names = ", ".join(m.value for m in chosen)
    if not yes:
        typer.echo(disclosure_text(policy.data.allowed_modalities))
        if not typer.confirm(f"\nRecord {names} on this laptop?"):
            raise typer.Exit(1)
    grant(hearth_home(), chosen, policy)
    typer.echo(f"consent recorded: {names} (under policy {policy_hash(policy)[:12]})")


@consent_app.command("revoke")
def consent_revoke(
    delete_data: Annotated[
        bool, typer.Option("--delete-data", help="also destroy everything recorded")
    ] = False,
) -> None:
    """Stop recording now; optionally destroy the vault."""
    record, result = request_revoke(hearth_home())
    if record is None or not record.active:
        typer.echo("there was no consent")
    else:
        _report(result, "revocation", "consent revoked: nothing more is recorded")
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
        raise fail(str(exc)) from None
    state, result = request_pause(hearth_home(), seconds)
    until = state.until or math.inf
    _report(
        result,
        "pause",
        "paused until you run `hearth resume`"
        if math.isinf(until)
        else f"paused until {time.strftime('%H:%M', time.localtime(until))}",
    )


def resume_command() -> None:
    """Resume recording."""
    _report(request_resume(hearth_home()), "resume", "recording resumed")


def _report(result: ControlResult, what: str, done: str) -> None:
    """One line for what happened; a second when it could not be saved (a full disk)."""
    if result.saved:
        typer.echo(done)
        return
    if result.in_force:
        typer.echo(done)
        typer.echo(
            f"hearth: the {what} is in force in the running recorder but could not be saved "
            f"({result.problem}); the recorder keeps retrying to save it",
            err=True,
        )
        return
    raise fail(
        f"the {what} could not be saved ({result.problem}) and no recorder is running to "
        f"hear it; free some disk space and run this command again"
    )


def status_report() -> dict[str, Any]:
    """The state `hearth status` and the dashboard both show."""
    home = hearth_home()
    record = load_consent(home)
    paused = pause_state(home)
    events_today = vault_bytes = 0
    vault_dir = default_vault_dir()
    if (vault_dir / KEY_FILE).exists():
        with Vault.open(vault_dir) as vault:  # counts from the sealed manifest, per UTC day
            vault_bytes = vault.size()
            today = vault.day_counts().get(day_of(time.time()), {})
            events_today = sum(events for events, _ in today.values())
    live = live_state(home)
    if live is not None and live.unsaved:
        # The running recorder holds a pause or revocation a full disk kept from the files.
        until = math.inf if live.paused_until is None else live.paused_until
        paused = PauseState(True, until) if live.paused else PauseState(False)
        record = record if live.consenting else None
    if record is None or not record.active:
        state = "not consented"
    elif paused.paused:
        state = "paused"
    else:
        state = "consented"
    recorder = running_recorder(home)
    running = recorder is not None or live is not None  # a full disk stops the heartbeat
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
        # What the running recorder does that no file says yet (a full disk): "control",
        # "consent". It keeps trying to save them.
        "unsaved": [] if live is None else list(live.unsaved),
        # What the employee should read: "recording" only while a recorder runs.
        "summary": _summary(state, running)
        + (" (not saved to disk yet; the recorder keeps trying)" if live and live.unsaved else ""),
    }


def _deployment_summary(home: Path) -> dict[str, Any]:
    """The pinned policy, last join, refusal, declined round and round taken (never content).

    ``takes_part`` is None when consent covers the pinned policy, else why not.
    """
    data = read_deployment(home)
    try:
        pinned = load_pinned(home)
    except PolicyError:
        pinned = None
    return {
        # The policy this laptop pinned at `hearth join` and whether consent covers it.
        "pinned_policy": None if pinned is None else pinned.policy_hash,
        "takes_part": consent_problem(home),
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
    deployment = report["deployment"]
    if deployment["pinned_policy"] and deployment["takes_part"]:
        typer.echo(f"rounds: {deployment['takes_part']}")
    for label, key in (
        ("refused", "last_refusal"),
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
