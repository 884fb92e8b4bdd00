"""import-log: log cases become encrypted vaults; a federation on them predicts its activities."""

import sqlite3

import pytest

from client.learning.device import simulated_device_home
from client.storage.vault import Vault
from policy.events import Modality
from server.model_loader import load_policy
from server.model_store import rounds
from simulations.event_log import EventLogError, generated_log, read_log, write_xes
from simulations.log_evaluation import LogSettings
from simulations.log_import import (
    Split,
    device_cases,
    import_log,
    imported_config,
    split_devices,
    train_imported,
)


def test_every_case_lands_in_exactly_one_vault_in_time_order_under_either_split(tmp_path):
    cases = read_log(write_xes(generated_log(40, seed=5), tmp_path / "log.xes"))
    for split in Split:
        root = tmp_path / split.value
        imported = import_log(cases, root, devices=3, split=split)
        read = device_cases(root, 3)
        assert sorted(a for part in read for c in part for a in [c.activities]) == sorted(
            c.activities for c in cases
        )
        assert imported.events == sum(len(c.activities) for c in cases)
        for part in read:  # each device's cases in time order, their times kept
            assert [c.start for c in part] == sorted(c.start for c in part)
    time_parts = split_devices(cases, 3, Split.TIME, seed=0)
    assert max(c.start for c in time_parts[0]) < min(c.start for c in time_parts[1])


def test_the_vault_holds_no_activity_in_the_clear_and_the_vocabulary_is_the_logs(tmp_path):
    cases = generated_log(20, seed=6)
    import_log(cases, tmp_path, devices=2)
    config, record = imported_config(tmp_path)
    assert set(config.tokens) == {"<pad>", "<end>", *(a for c in cases for a in c.activities)}
    assert record["devices"] == 2
    for device in range(2):
        vault_dir = simulated_device_home(tmp_path, device) / "vault"
        raw = b"".join(p.read_bytes() for p in vault_dir.iterdir() if p.is_file())
        assert b"triage" not in raw and b"register" not in raw
        db = next(vault_dir.glob("*.db"))
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0] >= 1


def test_activities_go_with_the_apps_consent_like_any_recorded_event(tmp_path):
    import_log(generated_log(10, seed=7), tmp_path, devices=1)
    passphrase = (tmp_path / "synthetic.passphrase").read_text().strip()
    vault_dir = simulated_device_home(tmp_path, 0) / "vault"
    with Vault.open(vault_dir, passphrase, keep_modalities={Modality.POINTER}) as vault:
        assert list(vault.iter_events()) == []


def test_too_many_devices_is_a_clear_error(tmp_path):
    with pytest.raises(EventLogError, match="--devices must be between 1 and the log's 5"):
        import_log(generated_log(5, seed=1), tmp_path, devices=6)


@pytest.mark.slow  # a few seconds: the accountant's noise search and two DP-SGD rounds
def test_a_federation_on_imported_vaults_checkpoints_a_model_that_predicts_log_activities(
    tmp_path,
):
    cases = generated_log(60, seed=8)
    import_log(cases, tmp_path, devices=2, split=Split.RANDOM, context_length=6)
    settings = LogSettings(devices=2, rounds=1, steps=2, context_length=6, dp_grid=(2.0,))
    result = train_imported(tmp_path, settings)
    (summary,) = rounds(result.checkpoint)
    assert summary.epsilon_example_cap == settings.epsilon
    policy = load_policy(result.checkpoint)
    assert policy.config == imported_config(tmp_path)[0]
    predicted = [name for name, _ in policy.predict_next(["register", "triage-a"], k=3)]
    assert set(predicted) <= set(policy.tokens) - {"<pad>"}
    assert 0.0 <= result.top1 <= result.top3 <= 1.0 and result.test_predictions > 0


def test_training_again_into_a_directory_of_checkpoints_is_refused_before_any_work(tmp_path):
    import_log(generated_log(10, seed=2), tmp_path, devices=1)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "round-0003.json").write_text("{}")
    with pytest.raises(EventLogError, match="already holds checkpoints"):
        train_imported(tmp_path, LogSettings(devices=1, rounds=1))
