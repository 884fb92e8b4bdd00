"""`hearth budget show`: each figure with its unit and delta, per example, per action, per user."""

import json

import pytest
from typer.testing import CliRunner

from client.cli import app
from client.device import Device
from privacy.accountants import epsilon_local, epsilon_per_action
from tests.server.fakes import small_policy_text

HISTORY = [(1.5, 0.25, 8), (8.0, 1.0, 1), (1.5, 0.25, 8), (8.0, 1.0, 1)]


@pytest.fixture
def spent(hearth_home):
    ledger = Device(hearth_home).ledger()
    for server_round, entry in enumerate(HISTORY, start=1):
        ledger.record(server_round, entry, 1e-5, "0" * 64)
    return hearth_home


def _show(*args):
    result = CliRunner().invoke(app, ["budget", "show", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_budget_json_gives_the_per_action_figure_of_this_ledger(spent):
    report = json.loads(_show("--json"))
    assert report["epsilon_spent"] == pytest.approx(epsilon_local(HISTORY, 1e-5))
    assert report["epsilon_per_action"] == pytest.approx(epsilon_per_action(HISTORY, 1e-5, 8))
    assert report["epsilon_per_action"] > report["epsilon_spent"]
    assert report["unit"] == "one example on one device"
    assert report["unit_per_action"] == "one recorded action on one device (in up to 9 examples)"
    assert report["entries"] == 4


def test_budget_never_calls_the_per_example_figure_a_per_action_one(spent):
    lines = _show().splitlines()
    report = json.loads(_show("--json"))
    [example] = [line for line in lines if line.startswith("Per example:")]
    [action] = [line for line in lines if line.startswith("Per action:")]
    assert f"{report['epsilon_spent']:,.2f}" in example and "one example on one device" in example
    assert f"{report['epsilon_per_action']:,.2f}" in action and "one recorded action" in action
    assert all("delta 1e-05" in line for line in lines if line.startswith("Per "))


def test_without_central_noise_there_is_no_user_level_figure(spent, tmp_path, monkeypatch):
    policy = tmp_path / "small.toml"
    policy.write_text(small_policy_text())
    monkeypatch.setenv("HEARTH_POLICY", str(policy))
    report = json.loads(_show("--json"))
    assert report["epsilon_user"] is None
    assert "Per user: none (the policy adds no central noise)" in _show()


def test_with_central_noise_the_user_level_figure_faces_checkpoint_readers_only(
    spent, tmp_path, monkeypatch
):
    policy = tmp_path / "central.toml"
    policy.write_text(
        small_policy_text().replace(
            "central_noise_multiplier = 0.0", "central_noise_multiplier = 1.0"
        )
    )
    monkeypatch.setenv("HEARTH_POLICY", str(policy))
    assert json.loads(_show("--json"))["epsilon_user"] == 8.0
    text = _show()
    assert "Per user: at most epsilon 8" in text
    assert "readers of the model and checkpoints, not the server" in text
