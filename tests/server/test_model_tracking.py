"""Each round's metrics land in TensorBoard event files, with epsilon tagged by its unit."""

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from server.cli import app
from server.model_tracking import RoundTracker


def _row(server_round: int) -> dict[str, object]:
    return {
        "round": server_round,
        "evaluate": {"top1": 0.5 + server_round / 100, "top3": 0.8, "loss": 1.0},
        "fit": {"clients_trained": 7},
        "epsilon_user": None,
        "epsilon_example_cap": 10.0,
    }


def _scalars(log_dir):
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, round(e.value, 4)) for e in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }


def test_each_round_is_one_step_of_accuracy_cohort_and_device_cap(tmp_path):
    tracker = RoundTracker(tmp_path)
    for server_round in (1, 2):
        tracker.write(_row(server_round))
    tracker.close()
    scalars = _scalars(tmp_path)
    assert scalars["evaluate/top1"] == [(1, 0.51), (2, 0.52)]
    assert scalars["cohort/trained"] == [(1, 7.0), (2, 7.0)]
    assert scalars["privacy/epsilon_example_cap (one example, device)"][-1] == (2, 10.0)
    assert not any(tag.startswith("privacy/epsilon_user") for tag in scalars)  # no claim


def test_model_tensorboard_replays_a_campaigns_sidecars(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    for server_round in (1, 2, 3):
        (checkpoints / f"round-{server_round:04d}.json").write_text(json.dumps(_row(server_round)))
    result = CliRunner().invoke(app, ["model", "tensorboard", str(checkpoints)])
    assert result.exit_code == 0, result.output
    assert [s for s, _ in _scalars(checkpoints / "tensorboard")["evaluate/top3"]] == [1, 2, 3]
