"""A SuperLink restart resumes the campaign from its newest checkpoint."""

import json

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

from privacy.policy import parse_policy
from server.app import build_strategy
from server.campaign import CampaignStrategy
from server.checkpoints import latest_checkpoint, load_checkpoint
from server.config import CampaignConfig, ServerConfigError
from server.model_loader import load_policy
from tests.server.fakes import Manager as _Manager
from tests.server.fakes import small_policy_text


def _policy(central_noise=0.0):
    text = small_policy_text().replace(
        "central_noise_multiplier = 0.0", f"central_noise_multiplier = {central_noise}"
    )
    return parse_policy(text)


def _strategy(tmp_path, policy, context_length=8, hidden_width=32):
    config = CampaignConfig(
        checkpoint_dir=str(tmp_path), context_length=context_length, hidden_width=hidden_width
    )
    return build_strategy(config, policy, run_id=1)


def _round(strategy: CampaignStrategy, server_round: int) -> None:
    """One workflow round: five devices send the same small delta, then evaluation."""
    strategy.configure_fit(server_round, ndarrays_to_parameters([]), _Manager())
    delta = [np.full_like(a, 0.01) for a in strategy.inner.global_arrays]
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(delta), 1, {})
    strategy.aggregate_fit(server_round, [(object(), res)] * 5, [])
    strategy.aggregate_evaluate(server_round, [], [])


def test_a_new_campaign_starts_at_round_one(tmp_path):
    strategy = _strategy(tmp_path, _policy())
    assert strategy.resume() == 0
    _round(strategy, 1)
    assert latest_checkpoint(tmp_path).name == "round-0001.npz"


def test_a_restarted_campaign_continues_after_its_newest_checkpoint(tmp_path):
    before = _strategy(tmp_path, _policy())
    _round(before, 1)
    _round(before, 2)

    after = _strategy(tmp_path, _policy())
    assert after.resume() == 2
    saved = load_checkpoint(tmp_path / "round-0002.npz")
    for ours, theirs in zip(after.inner.global_arrays, saved.values(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(after.inner.velocity, before.inner.velocity, strict=True):
        np.testing.assert_array_equal(ours, theirs)  # server momentum carries over
    params = ndarrays_to_parameters(after.inner.global_arrays)
    [(_, ins), *_] = after.configure_fit(1, params, _Manager())  # Flower's round 1 ...
    assert ins.config["round"] == 3  # ... is the campaign's round 3
    _round(after, 1)
    assert latest_checkpoint(tmp_path).name == "round-0003.npz"
    assert [row["round"] for row in after.rows] == [1, 2, 3]


def test_the_user_level_privacy_spent_before_the_restart_still_counts(tmp_path):
    before = _strategy(tmp_path, _policy(central_noise=2.0))
    _round(before, 1)
    spent = before.user_epsilon(before.user_rounds)

    after = _strategy(tmp_path, _policy(central_noise=2.0))
    after.resume()
    assert after.user_rounds == before.user_rounds
    _round(after, 1)
    assert after.user_epsilon(after.user_rounds) > spent
    ledger = json.loads((tmp_path / "campaign-ledger.json").read_text())
    assert len(ledger["noised_rounds"]) == 2


def test_the_central_noise_is_never_the_same_twice_nor_kept_in_the_checkpoints(tmp_path):
    first = _strategy(tmp_path / "a", _policy(central_noise=2.0))
    draws = [first.inner.draw_noise(1.0, (4,)) for _ in range(2)]
    assert not np.array_equal(*draws)
    _round(first, 1)
    sidecar = (tmp_path / "a" / "round-0001.json").read_text()
    assert "rng" not in sidecar and "noise_seed" not in sidecar


def test_a_checkpoint_dir_of_a_campaign_under_another_policy_is_refused(tmp_path):
    _round(_strategy(tmp_path, _policy()), 1)
    other = _strategy(tmp_path, _policy(central_noise=2.0))
    with pytest.raises(ServerConfigError, match="another privacy policy"):
        other.resume()
    assert sorted(p.name for p in tmp_path.glob("round-*.json")) == ["round-0001.json"]


def test_a_checkpoint_dir_of_another_model_is_refused(tmp_path):
    _round(_strategy(tmp_path, _policy()), 1)
    with pytest.raises(ServerConfigError, match="another model"):
        _strategy(tmp_path, _policy(), context_length=4).resume()
    with pytest.raises(ServerConfigError, match="another model"):
        _strategy(tmp_path, _policy(), hidden_width=64).resume()


@pytest.mark.parametrize("width", [32, 64])
def test_a_campaigns_checkpoints_record_its_width_and_load_policy_rebuilds_it(tmp_path, width):
    _round(_strategy(tmp_path, _policy(), hidden_width=width), 1)
    sidecar = json.loads((tmp_path / "round-0001.json").read_text())
    assert sidecar["config"]["hidden_width"] == sidecar["model"]["hidden"] == width
    loaded = load_policy(tmp_path)
    assert loaded.config.hidden == width
    assert loaded.model.out.weight.shape[1] == width
    [(token, p)] = loaded.predict_next(["switch:editor", "key:letter"], k=1)
    assert token in loaded.tokens and 0 < p <= 1


def test_resuming_is_asked_for_in_the_run_config():
    assert not CampaignConfig.from_run_config({}).resume
    assert CampaignConfig.from_run_config({"resume": True}).resume
    with pytest.raises(ServerConfigError, match="'resume'"):
        CampaignConfig.from_run_config({"resume": "yes"})


def test_a_checkpoint_dir_whose_campaign_ledger_is_gone_refuses_to_resume(tmp_path):
    _round(_strategy(tmp_path, _policy(central_noise=2.0)), 1)
    (tmp_path / "campaign-ledger.json").unlink()
    with pytest.raises(ServerConfigError, match="user-level privacy spent cannot be restored"):
        _strategy(tmp_path, _policy(central_noise=2.0)).resume()


def test_a_checkpoint_dir_whose_campaign_ledger_does_not_parse_refuses_to_resume(tmp_path):
    _round(_strategy(tmp_path, _policy(central_noise=2.0)), 1)
    (tmp_path / "campaign-ledger.json").write_text("{not json")
    with pytest.raises(ServerConfigError, match="restore that file or start a new checkpoint-dir"):
        _strategy(tmp_path, _policy(central_noise=2.0)).resume()
