"""The ClientApp's gates on one device: consent, policy hash, budget, and what leaves."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from client.app import Declined, HearthClient
from client.cli import app
from client.consent import grant, revoke
from client.control import pause
from client.device import Device
from client.egress import ALLOWED_METRICS
from client.vault import Vault
from policy.events import Modality
from policy.model import NextActionPolicy, get_arrays
from policy.replies import EVALUATE_SUMS, POLICY_MISMATCH, TRAIN_WEIGHT, UNAVAILABLE
from privacy.policy import load_policy, policy_hash
from simulations.generator import generate_employee
from simulations.sweep import policy_for


def _device(home):
    with Vault.open(home / "vault") as vault:
        vault.append(generate_employee(0, seed=3, hours=1))
    grant(home, (Modality.POINTER, Modality.KEYS, Modality.APPS))
    return Device(home)


def _config(**extra):
    return {"round": 1, "policy-hash": policy_hash(load_policy()), **extra}


def _params():
    return list(get_arrays(NextActionPolicy()).values())


def _declined(call):
    with pytest.raises(Declined) as refused:
        call()
    return refused.value.code


def test_a_round_under_another_policy_is_refused_without_training(hearth_home):
    client = HearthClient(_device(hearth_home))
    code = _declined(lambda: client.fit(_params(), _config(**{"policy-hash": "0" * 64})))
    assert code == POLICY_MISMATCH
    assert client.device.ledger().entries == []


def test_a_round_over_the_cap_trains_nothing_and_leaves_the_ledger_alone(hearth_home):
    device = _device(hearth_home)
    client = HearthClient(device)
    client.fit(_params(), _config())
    entries = list(device.ledger().entries)
    device.set_employee_cap(entries[-1].epsilon_after + 0.001)
    assert _declined(lambda: client.fit(_params(), _config(round=2))) == UNAVAILABLE
    assert device.ledger().entries == entries


def test_a_normal_round_records_what_it_spent_and_returns_a_delta_of_weight_one(hearth_home):
    device = _device(hearth_home)
    delta, weight, metrics = HearthClient(device).fit(_params(), _config())
    assert weight == TRAIN_WEIGHT and any(np.abs(d).sum() > 0 for d in delta)
    assert metrics == {}  # the spend stays on the laptop
    [entry] = device.ledger().entries
    assert entry.policy_hash == policy_hash(load_policy())


def test_without_consent_or_while_paused_a_device_neither_trains_nor_evaluates(hearth_home):
    device = _device(hearth_home)
    client = HearthClient(device)
    pause(hearth_home, None)
    assert _declined(lambda: client.fit(_params(), _config())) == UNAVAILABLE
    assert _declined(lambda: client.evaluate(_params(), _config())) == UNAVAILABLE
    revoke(hearth_home)
    assert _declined(lambda: client.evaluate(_params(), _config())) == UNAVAILABLE
    assert device.ledger().entries == []


def test_an_evaluation_is_a_noised_release_charged_to_the_ledger(hearth_home):
    device = _device(hearth_home)
    loss, weight, metrics = HearthClient(device).evaluate(_params(), _config())
    assert (loss, weight) == (0.0, 1)
    assert set(metrics) == set(EVALUATE_SUMS) == ALLOWED_METRICS
    [entry] = device.ledger().entries
    policy = load_policy()
    assert (entry.noise_multiplier, entry.sample_rate, entry.steps) == (
        policy.training.evaluation_noise_multiplier,
        1.0,
        1,
    )
    assert (
        _declined(
            lambda: HearthClient(device).evaluate(_params(), _config(**{"policy-hash": "0" * 64}))
        )
        == POLICY_MISMATCH
    )


def test_budget_show_and_set(hearth_home):
    device = _device(hearth_home)
    HearthClient(device).fit(_params(), _config())
    runner = CliRunner()
    shown = runner.invoke(app, ["budget", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    assert '"unit": "one example on one device"' in shown.output
    assert runner.invoke(app, ["budget", "set", "1000"]).exit_code == 1
    assert runner.invoke(app, ["budget", "set", "2"]).exit_code == 0
    assert device.employee_cap() == 2.0


def test_a_device_trains_under_the_policy_it_agreed_to_not_the_shipped_default(
    hearth_home, tmp_path
):
    agreed = tmp_path / "agreed.toml"
    agreed.write_text(policy_for(50.0, 1.5))
    device = Device(_device(hearth_home).home, policy_file=agreed)
    config = _config(**{"policy-hash": policy_hash(load_policy(agreed))})
    _, weight, _ = HearthClient(device).fit(_params(), config)
    assert weight == TRAIN_WEIGHT
    [entry] = device.ledger().entries
    assert entry.policy_hash == policy_hash(load_policy(agreed))
    code = _declined(lambda: HearthClient(device).fit(_params(), _config(round=2)))
    assert code == POLICY_MISMATCH  # the default is not what it agreed to


def test_deleting_the_data_keeps_the_record_of_what_was_spent(hearth_home):
    device = _device(hearth_home)
    HearthClient(device).fit(_params(), _config())
    [entry] = device.ledger().entries
    runner = CliRunner()
    assert runner.invoke(app, ["data", "delete", "--yes"]).exit_code == 0
    assert not device.vault_dir.exists()
    assert device.ledger().entries == [entry]
    shown = runner.invoke(app, ["budget", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["epsilon_spent"] == pytest.approx(entry.epsilon_after)


def test_a_device_spreads_its_cap_over_every_round_of_the_campaign(hearth_home):
    device = _device(hearth_home)
    client = HearthClient(device)
    cap = load_policy().privacy.device_epsilon_cap
    for server_round in (1, 2, 3):
        config = _config(round=server_round, **{"num-rounds": 3})
        client.fit(_params(), config)
        client.evaluate(_params(), config)
    entries = device.ledger().entries
    assert len(entries) == 6  # three rounds and three evaluations, none declined
    assert 0.8 * cap < entries[-1].epsilon_after <= cap
