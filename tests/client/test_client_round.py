"""The ClientApp's gates on one device: consent, policy hash, budget, and what leaves."""

import json

import numpy as np
import pytest
from flwr.app import Context, RecordDict
from typer.testing import CliRunner

from client.cli.main import app
from client.control.consent import grant, revoke
from client.control.participation import read_deployment
from client.control.pause import pause
from client.learning.app import Declined, HearthClient
from client.learning.device import Device
from client.learning.egress import ALLOWED_METRICS, EgressViolation
from client.learning.model_shape import run_model_spec
from client.storage.vault import Vault
from policy.events import Modality
from policy.model import ModelConfig, NextActionPolicy, get_arrays
from policy.replies import (
    EVALUATE_SUMS,
    POLICY_MISMATCH,
    PROTOCOL_ERROR,
    TRAIN_WEIGHT,
    UNAVAILABLE,
)
from privacy.policy import default_policy_text, load_policy, policy_hash
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
    hearth_client = HearthClient(_device(hearth_home))
    code = _declined(lambda: hearth_client.fit(_params(), _config(**{"policy-hash": "0" * 64})))
    assert code == POLICY_MISMATCH
    assert hearth_client.device.ledger().entries == []


def test_a_round_naming_no_policy_is_refused_as_a_mismatch_and_recorded(hearth_home):
    hearth_client = HearthClient(_device(hearth_home))
    code = _declined(lambda: hearth_client.fit(_params(), {"round": 1, "learning-rate": 4.0}))
    assert code == POLICY_MISMATCH
    assert hearth_client.device.ledger().entries == []
    assert "policy mismatch" in read_deployment(hearth_home)["refusal"]["reason"]


def test_a_round_without_its_number_is_a_protocol_error(hearth_home):
    hearth_client = HearthClient(_device(hearth_home))
    code = _declined(
        lambda: hearth_client.fit(_params(), {"policy-hash": "h", "learning-rate": 4.0})
    )
    assert code == PROTOCOL_ERROR
    assert hearth_client.device.ledger().entries == []


def test_a_round_over_the_cap_trains_nothing_and_leaves_the_ledger_alone(hearth_home):
    device = _device(hearth_home)
    client = HearthClient(device)
    client.fit(_params(), _config())
    entries = list(device.ledger().entries)
    device.set_employee_cap(entries[-1].epsilon_after + 0.001)
    assert _declined(lambda: client.fit(_params(), _config(round=2))) == UNAVAILABLE
    assert device.ledger().entries == entries


def _params_at(width):
    return list(get_arrays(NextActionPolicy(ModelConfig(hidden=width))).values())


def test_a_model_other_than_the_width_it_was_told_or_past_its_bound_is_refused(hearth_home):
    """A server cannot make a device train (and upload) a model other than the one it named."""
    device = _device(hearth_home)
    client = HearthClient(device)
    wide = _params_at(64)
    # Told 32 (the default), sent 64: refused before anything is charged or trained.
    assert _declined(lambda: client.fit(wide, _config())) == PROTOCOL_ERROR
    assert _declined(lambda: client.evaluate(wide, _config())) == PROTOCOL_ERROR
    # A width past the device's bound is refused whatever arrays come with it.
    huge = _config(**{"hidden-width": 65})
    assert _declined(lambda: client.fit(_params_at(65), huge)) == PROTOCOL_ERROR
    assert device.ledger().entries == []
    # Told 64 and sent 64: it trains, and the update has the 64-wide shapes.
    delta, _, _ = client.fit(wide, _config(**{"hidden-width": 64}))
    assert [d.shape for d in delta] == [w.shape for w in wide]


def test_the_egress_guard_holds_replies_to_the_run_configs_width_within_its_bound():
    def context(run_config):
        return Context(
            run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=run_config
        )

    assert [s.shape for s in run_model_spec(context({}))] == [a.shape for a in _params_at(32)]
    at_64 = run_model_spec(context({"hidden-width": 64}))
    assert [s.shape for s in at_64] == [a.shape for a in _params_at(64)]
    with pytest.raises(EgressViolation, match=r"'hidden-width' must be in 1\.\.64"):
        run_model_spec(context({"hidden-width": 100_000}))


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
    assert '"unit": "one example on one device, over the 14 days it is kept"' in shown.output
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


def _campaign(client, rounds):
    for server_round in range(1, rounds + 1):
        config = _config(round=server_round, **{"num-rounds": rounds})
        client.fit(_params(), config)  # declining would raise
        client.evaluate(_params(), config)


def _spent():
    shown = CliRunner().invoke(app, ["budget", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    return json.loads(shown.output)


def test_a_short_campaign_spends_a_short_campaigns_share_and_the_next_campaign_trains(
    hearth_home, tmp_path, monkeypatch
):
    """Issue 19: a 2-round campaign spent 9.99 of 10, and every later one trained nothing."""
    # A pace of 1 round a day (the shipped policy's is 0.2: 3 rounds a day of data).
    paced = tmp_path / "paced.toml"
    paced.write_text(default_policy_text().replace("rounds_per_day = 0.2", "rounds_per_day = 1.0"))
    monkeypatch.setenv("HEARTH_POLICY", str(paced))
    assert load_policy().training.rounds_per_day == 1.0
    device = _device(hearth_home)
    client = HearthClient(device)
    _campaign(client, 2)
    first = _spent()
    day = max(first["days"], key=lambda d: d["fraction"])
    # Noise is planned for the 15 rounds a day of data can join over its 14 days, not for
    # the 2 rounds of this campaign: two rounds use about 2/15 of each day's budget.
    assert day["fraction"] == pytest.approx(2 / first["lifetime_rounds"], rel=0.15)
    assert first["epsilon_spent"] < first["epsilon_cap"] / 2
    _campaign(client, 2)  # the second campaign trains: no Declined
    second = _spent()
    assert len(device.ledger().entries) == 8
    assert first["epsilon_spent"] < second["epsilon_spent"] <= second["epsilon_cap"]
    assert max(d["fraction"] for d in second["days"]) == pytest.approx(4 / 15, rel=0.15)
