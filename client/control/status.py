"""What ``hearth status``, ``hearth data summary`` and the dashboard report (never content).

The recording state (consent, pause, the running recorder and what it holds that no
file says yet), today's events and the vault's size, the deployment record, and the
vault's events and bytes per day and modality from its sealed manifest.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from client.control.consent import load_consent
from client.control.heartbeat import running_recorder
from client.control.participation import consent_problem, read_deployment
from client.control.pause import PauseState, pause_state
from client.control.policy_pin import load_pinned
from client.control.recorder_control import live_state
from client.storage.day_keys import DAY_SECONDS, day_of
from client.storage.home import hearth_home
from client.storage.keys import KEY_FILE
from client.storage.vault import Vault, default_vault_dir
from privacy.policy import PolicyError


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


__all__ = ["daily_summary", "status_report"]
