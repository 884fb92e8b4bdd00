import json

import pytest
from flwr.common import ndarrays_to_parameters

from policy.model import NextActionPolicy, get_arrays
from privacy.accountants import epsilon_user
from privacy.policy import parse_policy
from privacy.user_level import epsilon_readers
from server.app import build_strategy
from server.config import CampaignConfig
from tests.server.fakes import Manager as _Manager
from tests.server.fakes import small_policy_text


def _strategy(tmp_path, central_noise, target):
    text = (
        small_policy_text()
        .replace("central_noise_multiplier = 0.0", f"central_noise_multiplier = {central_noise}")
        .replace("user_epsilon_target = 8.0", f"user_epsilon_target = {target}")
    )
    config = CampaignConfig(checkpoint_dir=str(tmp_path), fraction_train=0.5)
    strategy = build_strategy(config, parse_policy(text), run_id=1)
    params = ndarrays_to_parameters(list(get_arrays(NextActionPolicy()).values()))
    return strategy, params


def test_the_campaign_stops_before_the_user_level_target_and_says_so(tmp_path, caplog):
    per_round = epsilon_user(2.0, 0.5, 1, 1e-5)
    two_rounds = epsilon_user(2.0, 0.5, 2, 1e-5)
    strategy, params = _strategy(tmp_path, 2.0, target=(per_round + two_rounds) / 2)
    strategy.configure_fit(1, params, _Manager())
    assert strategy.user_rounds == [0.5]  # charged at the rate it samples with
    assert strategy.configure_fit(2, params, _Manager()) == []
    assert strategy.configure_fit(3, params, _Manager()) == []
    assert "campaign ended before round 2" in caplog.text
    assert strategy.user_epsilon(strategy.user_rounds) <= (per_round + two_rounds) / 2
    strategy._write_campaign_ledger()
    ledger = json.loads((tmp_path / "campaign-ledger.json").read_text())
    assert ledger["stopped_at_target"] is True
    assert len(ledger["noised_rounds"]) == 1


def test_instructions_carry_the_policy_hash(tmp_path):
    strategy, params = _strategy(tmp_path, 0.0, target=8.0)
    [(_, ins), *_] = strategy.configure_fit(1, params, _Manager(1000))
    assert len(ins.config["policy-hash"]) == 64
    assert strategy.user_epsilon([0.5]) is None  # no central noise: no user-level claim


def test_a_new_campaign_starts_from_what_earlier_ones_spent_within_the_horizon(tmp_path):
    first, _ = _strategy(tmp_path / "one", 2.0, target=1000.0)
    params = ndarrays_to_parameters(list(get_arrays(NextActionPolicy()).values()))
    first.configure_fit(1, params, _Manager())
    first.configure_fit(2, params, _Manager())
    second, _ = _strategy(tmp_path / "two", 2.0, target=1000.0)
    assert len(second.prior_rounds) == 2
    assert second.user_epsilon([0.5]) == pytest.approx(
        epsilon_readers(first._noised([0.5, 0.5, 0.5])[-3:], second.policy.privacy.delta_user)
    )
