"""The ClientApp's gates on one device: policy hash, budget, and what leaves."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from client.app import HearthClient
from client.cli import app
from client.device import Device
from client.egress import ALLOWED_METRICS
from client.vault import Vault
from policy.model import NextActionPolicy, get_arrays
from privacy.policy import load_policy, policy_hash
from simulations.generator import generate_employee
from simulations.sweep import policy_for


def _device(home):
    with Vault.open(home / "vault") as vault:
        vault.append(generate_employee(0, seed=3, hours=1))
    return Device(home)


def _config(**extra):
    return {"round": 1, "policy-hash": policy_hash(load_policy()), "max-steps": 5, **extra}


def _params():
    return list(get_arrays(NextActionPolicy()).values())


def test_a_round_under_another_policy_is_refused_without_training(hearth_home):
    client = HearthClient(_device(hearth_home))
    delta, weight, metrics = client.fit(_params(), _config(**{"policy-hash": "0" * 64}))
    assert weight == 0
    assert metrics["declined"] == 2
    assert all(not d.any() for d in delta)
    assert client.device.ledger().entries == []


def test_a_round_over_the_cap_trains_nothing_and_leaves_the_ledger_alone(hearth_home):
    device = _device(hearth_home)
    client = HearthClient(device)
    client.fit(_params(), _config())
    entries = list(device.ledger().entries)
    device.set_employee_cap(entries[-1].epsilon_after + 0.001)
    delta, weight, metrics = client.fit(_params(), _config(round=2))
    assert (weight, metrics["budget_exhausted"]) == (0, 1)
    assert all(not d.any() for d in delta)
    assert device.ledger().entries == entries


def test_a_normal_round_records_what_it_spent_and_returns_a_delta(hearth_home):
    device = _device(hearth_home)
    delta, weight, metrics = HearthClient(device).fit(_params(), _config())
    assert weight > 0 and any(np.abs(d).sum() > 0 for d in delta)
    [entry] = device.ledger().entries
    assert metrics["epsilon"] == entry.epsilon_after
    assert entry.policy_hash == policy_hash(load_policy())


def test_replies_carry_exactly_the_allow_listed_metrics_and_no_effort_figures(hearth_home):
    client = HearthClient(_device(hearth_home))
    _, _, fit = client.fit(_params(), _config())
    _, _, declined = client.fit(_params(), _config(**{"policy-hash": "0" * 64}))
    _, _, evaluated = client.evaluate(_params(), _config())
    assert set(fit) | set(declined) | set(evaluated) == ALLOWED_METRICS  # no slack in the list
    # How long a laptop trained or how much its employee worked is none of the server's business.
    assert not {"train_seconds", "train_examples", "num_examples"} & ALLOWED_METRICS


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
    _, weight, metrics = HearthClient(device).fit(_params(), config)
    assert weight > 0 and metrics["declined"] == 0
    [entry] = device.ledger().entries
    assert entry.policy_hash == policy_hash(load_policy(agreed))
    _, weight, metrics = HearthClient(device).fit(_params(), _config(round=2))
    assert (weight, metrics["declined"]) == (0, 2)  # the default is not what it agreed to


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
    device = _device(hearth_home)  # one hour of data: a small device
    client = HearthClient(device)
    cap = load_policy().privacy.device_epsilon_cap
    for server_round in (1, 2, 3):
        config = _config(round=server_round, **{"num-rounds": 3, "batch-size": 512, "epochs": 2})
        _, weight, metrics = client.fit(_params(), config)
        assert weight > 0 and metrics["declined"] == 0, f"round {server_round} declined"
    entries = device.ledger().entries
    floor = load_policy().training.local_noise_multiplier
    assert entries[0].noise_multiplier > floor  # small devices add more than the floor
    assert 0.9 * cap < entries[-1].epsilon_after <= cap
