"""`hearth-server campaign run`: follows a run to its end and fails a campaign that did nothing."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from server.campaign_run import (
    EXIT_AGGREGATED_NOTHING,
    CampaignRunError,
    Flwr,
    run_campaign,
    with_checkpoint_dir,
)
from server.checkpoints import append_round_outcome


@dataclass(frozen=True)
class FakeFlwr(Flwr):
    """A SuperLink whose run goes through ``statuses``, one per poll, recording rounds."""

    rounds: tuple[bool, ...] = ()
    statuses: tuple[str, ...] = ("running", "running", "finished:completed")
    submitted: list[str] = field(default_factory=list)
    polls: list[int] = field(default_factory=list)

    def submit(self, app: Path, run_config: str) -> int:
        self.submitted.append(run_config)
        return 42

    def status(self, run_id: int) -> str:
        directory = Path(self.submitted[0].split("checkpoint-dir='")[1].rstrip("'"))
        if len(self.polls) < len(self.rounds):  # a round ends between two polls
            record = {"run_id": run_id, "round": len(self.polls) + 1}
            append_round_outcome(directory, {**record, "aggregated": self.rounds[len(self.polls)]})
        self.polls.append(run_id)
        return self.statuses[min(len(self.polls), len(self.statuses)) - 1]


def _run(tmp_path, flwr):
    seen: list[int] = []
    ended = run_campaign(
        flwr,
        tmp_path,
        "num-server-rounds=2",
        tmp_path / "ckpt",
        on_outcome=lambda o: seen.append(o["round"]),
        sleep=lambda _: None,
    )
    return ended, seen


def test_a_campaign_that_aggregated_nothing_ends_non_zero(tmp_path):
    ended, seen = _run(tmp_path, FakeFlwr(Path("flwr"), {}, rounds=(False, False)))
    assert seen == [1, 2]  # each round shown once, as it ended
    assert ended.exit_code == EXIT_AGGREGATED_NOTHING
    assert "aggregated nothing" in ended.summary()


def test_a_campaign_with_an_aggregated_round_ends_zero_and_names_the_audit(tmp_path):
    ended, _ = _run(tmp_path, FakeFlwr(Path("flwr"), {}, rounds=(False, True)))
    assert ended.exit_code == 0
    assert f"hearth-privacy audit {tmp_path / 'ckpt'}" in ended.summary()


def test_a_failed_run_ends_with_1_even_after_aggregating(tmp_path):
    flwr = FakeFlwr(Path("flwr"), {}, rounds=(True,), statuses=("running", "finished:failed"))
    ended, _ = _run(tmp_path, flwr)
    assert ended.exit_code == 1
    assert "flwr log 42" in ended.summary()


def test_outcomes_of_an_earlier_run_in_the_same_directory_do_not_count(tmp_path):
    append_round_outcome(tmp_path / "ckpt", {"run_id": 7, "round": 1, "aggregated": True})
    ended, seen = _run(tmp_path, FakeFlwr(Path("flwr"), {}, rounds=(False,)))
    assert seen == [1]
    assert ended.exit_code == EXIT_AGGREGATED_NOTHING


def test_the_checkpoint_dir_is_passed_once(tmp_path):
    assert with_checkpoint_dir("secaggplus=true", tmp_path) == (
        f"secaggplus=true checkpoint-dir='{tmp_path}'"
    )
    with pytest.raises(CampaignRunError, match="--checkpoint-dir"):
        with_checkpoint_dir("checkpoint-dir='/x' secaggplus=true", tmp_path)


def test_flwr_errors_become_one_clear_line(tmp_path):
    script = tmp_path / "flwr"
    script.write_text(
        '#!/bin/sh\necho \'{"success": false, "error-message": "Connection refused"}\'\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(CampaignRunError, match="`flwr run` failed: Connection refused"):
        Flwr(script, dict(os.environ)).submit(tmp_path, "")
