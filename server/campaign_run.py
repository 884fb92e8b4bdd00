"""One command for a campaign: submit it with ``flwr run``, follow it, say whether it did anything.

``flwr run`` returns as soon as its log stream ends, with status 0 whatever the
rounds did. ``run_campaign`` submits the app (``flwr run --format json``), polls
the run's status (``flwr ls --run-id N --format json``) until it is finished,
and meanwhile reads the round outcomes the ServerApp appends to the campaign's
``checkpoint-dir`` (``server.checkpoints``): the ML team sees each round's
counts as it ends, and a campaign that aggregated nothing ends non-zero.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from server.checkpoints import latest_checkpoint, read_round_outcomes
from server.up import CONNECTION

EXIT_AGGREGATED_NOTHING: Final = 2
EXIT_RUN_FAILED: Final = 1
_CHECKPOINT_DIR = re.compile(r"(^|\s)checkpoint-dir\s*=")


class CampaignRunError(Exception):
    """The campaign could not be submitted or followed (the message says what to fix)."""


@dataclass(frozen=True)
class Flwr:
    """The ``flwr`` command line against one SuperLink connection."""

    executable: Path
    env: Mapping[str, str]
    connection: str = CONNECTION
    timeout: float = 120.0

    def _json(self, args: list[str]) -> dict[str, Any]:
        command = [str(self.executable), *args, "--format", "json"]
        try:
            done = subprocess.run(
                command,
                env=dict(self.env),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CampaignRunError(f"`flwr {args[0]}` did not run: {exc}") from None
        try:
            reply = json.loads(done.stdout)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not reply.get("success"):
            said = reply.get("error-message") if isinstance(reply, dict) else None
            detail = str(said or done.stderr.strip() or done.stdout.strip() or "no output")
            raise CampaignRunError(f"`flwr {args[0]}` failed: {detail.splitlines()[-1]}")
        return reply

    def submit(self, app: Path, run_config: str) -> int:
        """``flwr run APP CONNECTION --run-config ...``: the new run's id."""
        reply = self._json(["run", str(app), self.connection, "--run-config", run_config])
        try:
            return int(reply["run-id"])
        except (KeyError, TypeError, ValueError):
            raise CampaignRunError("`flwr run` started no run (no run id in its reply)") from None

    def status(self, run_id: int) -> str:
        """The run's status as ``flwr ls`` says it (``running``, ``finished:completed``, ...)."""
        reply = self._json(["ls", self.connection, "--run-id", str(run_id)])
        runs = reply.get("runs") or []
        if not runs:
            raise CampaignRunError(f"`flwr ls` does not know run {run_id}")
        return str(runs[0].get("status", "unknown"))


@dataclass(frozen=True)
class CampaignOutcome:
    """How a campaign run ended, from the SuperLink's status and the round outcomes."""

    run_id: int
    status: str
    checkpoint_dir: Path
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rounds_aggregated(self) -> int:
        """Rounds of this run that changed the model."""
        return sum(1 for o in self.outcomes if o.get("aggregated"))

    @property
    def exit_code(self) -> int:
        """0: completed and aggregated; 2: aggregated nothing; 1: the run failed or stopped."""
        if self.status != "finished:completed":
            return EXIT_RUN_FAILED
        return 0 if self.rounds_aggregated else EXIT_AGGREGATED_NOTHING

    def summary(self) -> str:
        """What the ML team reads at the end (one line, then where the model is)."""
        rounds = len(self.outcomes)
        head = (
            f"campaign run {self.run_id} {self.status}: {self.rounds_aggregated} of {rounds} "
            f"rounds aggregated"
        )
        if self.status != "finished:completed":
            return f"{head}; the ServerApp's log: flwr log {self.run_id} {CONNECTION} --show"
        if not self.rounds_aggregated:
            return (
                f"{head}: the campaign aggregated nothing (no round reached the minimum cohort; "
                "each round's counts are above: 'unavailable' is every reason of the laptops' "
                "own, `hearth status` on a laptop says which)"
            )
        latest = latest_checkpoint(self.checkpoint_dir)
        audit = f"hearth-privacy audit {self.checkpoint_dir}"
        return f"{head}; newest checkpoint {latest} (audit: {audit})"


def with_checkpoint_dir(run_config: str, checkpoint_dir: Path) -> str:
    """``run_config`` plus ``checkpoint-dir``; refuses a run config that sets its own."""
    if _CHECKPOINT_DIR.search(run_config):
        raise CampaignRunError(
            "pass the checkpoint directory with --checkpoint-dir, not in --run-config "
            "(campaign run reads the round outcomes there)"
        )
    return f"{run_config} checkpoint-dir='{checkpoint_dir}'".strip()


def run_campaign(
    flwr: Flwr,
    app: Path,
    run_config: str,
    checkpoint_dir: Path,
    *,
    on_outcome: Callable[[dict[str, Any]], None] = lambda _: None,
    poll_seconds: float = 2.0,
    timeout: float = 24 * 3600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> CampaignOutcome:
    """Submit the campaign, follow it to its end, and return how it ended.

    ``on_outcome`` gets each round's outcome once, as the ServerApp records it.
    """
    run_id = flwr.submit(app, with_checkpoint_dir(run_config, checkpoint_dir))
    seen = 0
    waited = 0.0
    while True:
        status = flwr.status(run_id)
        outcomes = read_round_outcomes(checkpoint_dir, run_id)
        for outcome in outcomes[seen:]:
            on_outcome(outcome)
        seen = len(outcomes)
        if status.startswith("finished"):
            return CampaignOutcome(run_id, status, checkpoint_dir, outcomes)
        if waited >= timeout:
            raise CampaignRunError(
                f"run {run_id} is still {status} after {timeout:g}s; it goes on: follow it with "
                f"flwr ls {flwr.connection} --run-id {run_id}, stop it with flwr stop {run_id}"
            )
        sleep(poll_seconds)
        waited += poll_seconds


__all__ = [
    "EXIT_AGGREGATED_NOTHING",
    "CampaignOutcome",
    "CampaignRunError",
    "Flwr",
    "run_campaign",
    "with_checkpoint_dir",
]
