"""`hearth budget show`: each figure with its unit and delta, per example, per action, per user."""

import json
import shutil

import keyring
import pytest
from typer.testing import CliRunner

from client.cli.main import app
from client.learning.app import HearthClient
from client.learning.device import Device
from client.storage.ledger_anchor import KEYRING_SERVICE, KeyringAnchor
from policy.replies import UNAVAILABLE
from privacy.accountants import epsilon_per_action
from privacy.ledger import BudgetRule, LedgerRollbackError
from privacy.policy import load_policy
from privacy.renyi_filter import rdp_of
from tests.client.test_client_round import _config, _declined, _device, _params
from tests.client.test_vault import _MemoryKeyring
from tests.server.fakes import small_policy_text

HISTORY = [(1.5, 0.25, 8), (8.0, 1.0, 1), (1.5, 0.25, 8), (8.0, 1.0, 1)]


@pytest.fixture
def spent(hearth_home):
    ledger = Device(hearth_home).ledger()
    for server_round, entry in enumerate(HISTORY, start=1):
        ledger.record(server_round, entry, BudgetRule.from_policy(load_policy()), "0" * 64)
    return hearth_home


def _show(*args):
    result = CliRunner().invoke(app, ["budget", "show", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_budget_json_gives_the_per_action_figure_of_this_ledger(spent):
    report = json.loads(_show("--json"))
    renyi = BudgetRule.from_policy(load_policy()).renyi
    assert report["epsilon_spent"] == pytest.approx(renyi.epsilon(rdp_of(HISTORY, renyi.orders)))
    assert report["epsilon_per_action"] == pytest.approx(epsilon_per_action(HISTORY, 1e-5, 8))
    assert report["epsilon_per_action"] > report["epsilon_spent"]
    assert report["unit"] == "one example on one device, over the 14 days it is kept"
    assert len(report["days"]) == 15  # every day of the window, each charged every entry
    assert {d["epsilon_spent"] for d in report["days"]} == {report["epsilon_spent"]}
    assert report["unit_per_action"] == "one recorded action on one device (in up to 9 examples)"
    assert report["entries"] == 4


def test_budget_never_calls_the_per_example_figure_a_per_action_one(spent):
    lines = _show().splitlines()
    report = json.loads(_show("--json"))
    [example] = [line for line in lines if line.startswith("Per example")]
    [action] = [line for line in lines if line.startswith("Per action:")]
    assert f"{report['epsilon_spent']:,.2f}" in example
    assert "Per example, over the 14 days it is kept" in example
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


def test_under_distributed_noise_the_user_figure_faces_the_server_too(monkeypatch):
    monkeypatch.delenv("HEARTH_POLICY", raising=False)  # the shipped default: devices add it
    report = json.loads(_show("--json"))
    assert report["epsilon_user"] == 1.0 and report["user_noise_by_devices"] is True
    assert "and the server too when the campaign runs under SecAgg+" in " ".join(_show().split())


def test_a_rolled_back_or_deleted_ledger_refuses_training_until_an_explicit_reset(
    hearth_home, tmp_path
):
    """Issue 15, finding 2, on the real ClientApp path and the real files under HEARTH_HOME."""
    device = _device(hearth_home)
    client = HearthClient(device)
    client.evaluate(_params(), _config())
    ledger_file = device.privacy_dir / "ledger.bin"
    shutil.copy(ledger_file, tmp_path / "ledger.old")
    client.evaluate(_params(), _config(round=2))
    shutil.copy(tmp_path / "ledger.old", ledger_file)  # copied back: spent goes down by one
    assert _declined(lambda: client.evaluate(_params(), _config(round=3))) == UNAVAILABLE
    refused = CliRunner().invoke(app, ["budget", "show"])
    assert refused.exit_code == 1 and "older or altered copy" in refused.output
    ledger_file.unlink()  # deleted: would read as nothing spent
    assert _declined(lambda: client.fit(_params(), _config(round=3))) == UNAVAILABLE
    without = CliRunner().invoke(app, ["budget", "reset"])
    assert without.exit_code == 1 and "--i-understand" in without.output
    assert _declined(lambda: client.evaluate(_params(), _config(round=3))) == UNAVAILABLE
    reset = CliRunner().invoke(app, ["budget", "reset", "--i-understand"])
    assert reset.exit_code == 0, reset.output
    client.fit(_params(), _config(round=4))  # trains again
    report = json.loads(_show("--json"))
    [event] = report["resets"]
    assert "missing" in event["reason"] and report["entries"] == 1
    assert "Reset on " in _show()


def test_with_an_os_keyring_restoring_the_whole_privacy_directory_is_caught(
    hearth_home, tmp_path, monkeypatch
):
    backend = _MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(backend)
    monkeypatch.delenv("HEARTH_PASSPHRASE")
    monkeypatch.setenv("HEARTH_KEYRING", "1")
    rule = BudgetRule.from_policy(load_policy())
    try:
        device = Device(hearth_home)
        ledger = device.ledger()
        assert isinstance(ledger.anchor, KeyringAnchor)
        ledger.record(1, HISTORY[0], rule, "h")
        shutil.copytree(device.privacy_dir, tmp_path / "backup")  # key.json, ledger, all
        device.ledger().record(2, HISTORY[1], rule, "h")
        shutil.rmtree(device.privacy_dir)
        shutil.copytree(tmp_path / "backup", device.privacy_dir)
        with pytest.raises(LedgerRollbackError, match="OS keyring records write 2"):
            device.ledger()
        assert any(service == KEYRING_SERVICE for service, _ in backend.store)
    finally:
        keyring.set_keyring(previous)


def test_consent_show_states_the_guarantee_per_example_over_the_days_it_is_kept(hearth_home):
    shown = CliRunner().invoke(app, ["consent", "show"])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "Per example, over the 14 days it is kept: each laptop protects every example" in text
    assert "per campaign" not in text
