import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from client.learning.app import HELD_OUT_FRACTION
from client.learning.device import Device, simulated_device_home
from client.learning.featurize import split_held_out
from policy.model import ModelConfig
from privacy.accountants import noise_for_local
from privacy.policy import demo_policy_text, parse_policy
from server.checkpoints import save_checkpoint
from simulations import sweep
from simulations.campaign import campaign_train_config, default_campaign
from simulations.ground_truth import GroundTruth
from simulations.inprocess import LEARNING_RATE_GRID, Federation, federate, mean_accuracy
from simulations.population import seed_population
from simulations.sweep import NO_UPDATE_CLIP, SweepPoint, policy_for, write_outputs


def test_each_budget_becomes_a_valid_policy_with_that_cap_and_noise():
    policy = parse_policy(policy_for(2.0, 1.7))
    assert policy.privacy.device_epsilon_cap == 2.0
    assert policy.training.local_noise_multiplier == 1.7
    no_dp = parse_policy(policy_for(math.inf, 0.0))
    assert no_dp.training.local_noise_multiplier == 0.0


def test_outputs_are_a_png_and_a_table_with_one_row_per_budget(tmp_path):
    points = [
        SweepPoint(1.0, 3.0, 0.30, 0.50, 0.55, 0.98),
        SweepPoint(8.0, 0.9, 0.50, 0.70, 0.55, 7.9),
        SweepPoint(math.inf, 0.0, 0.60, 0.80, 0.55, 0.0),
    ]
    png, table = write_outputs(points, tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(table.read_text().splitlines()) == 2 + len(points)


def test_the_no_dp_yardstick_has_no_update_clipping_to_speak_of_and_no_central_noise():
    policy = parse_policy(policy_for(math.inf, 0.0))
    assert policy.training.update_clip_norm >= NO_UPDATE_CLIP
    assert policy.training.central_noise_multiplier == 0.0
    dp = parse_policy(policy_for(4.0, 1.2))
    # The DP runs keep the demo policy's clip (the device-level sweep's small federation).
    assert (
        dp.training.update_clip_norm == parse_policy(demo_policy_text()).training.update_clip_norm
    )


def test_the_no_dp_run_gets_its_own_learning_rate_and_the_dp_runs_the_campaigns(
    tmp_path, monkeypatch
):
    configs = {}

    def fake_run_app(*, run_config, **_):
        configs[Path(run_config["policy-file"]).name] = run_config
        save_checkpoint(
            Path(run_config["checkpoint-dir"]),
            1,
            ["w"],
            [np.zeros(1)],
            {"fit": {"clients_trained": 2}},
        )

    truth = GroundTruth(0.5, 0.8, 0.2, 0.4, 0.4, 0.7, 100, 1.0, 1.0, 1e-5)
    monkeypatch.setattr(sweep, "run_app", fake_run_app)
    monkeypatch.setattr(sweep, "ground_truth", lambda *_: truth)
    searches = []
    points = sweep.run_sweep(
        tmp_path, [4.0, math.inf], employees=2, rounds=1, hours=0.5, on_search=searches.append
    )
    (search,) = searches
    assert [rate for rate, _ in search.scores] == list(LEARNING_RATE_GRID)
    assert configs["policy-eps-inf.toml"]["learning-rate"] == search.best == points[1].learning_rate
    assert configs["policy-eps-4.toml"]["learning-rate"] == default_campaign().learning_rate


@pytest.mark.slow
def test_the_tuned_no_dp_federation_scores_at_least_the_best_dp_one(tmp_path):
    # The sweep's yardstick on a small population, in process: no DP with its own rate
    # against epsilon 1 and 4 at the campaign's rate, on the same held-out data.
    seed_population(tmp_path, employees=3, seed=7, hours=1.0)
    rounds = 3
    search = sweep.tune_non_private(tmp_path, 3, rounds, seed=7)
    passphrase = (tmp_path / "synthetic.passphrase").read_text().strip()
    parts = [
        split_held_out(
            Device(simulated_device_home(tmp_path, e), passphrase, simulated=True).examples(8),
            HELD_OUT_FRACTION,
        )
        for e in range(3)
    ]
    train, held = [p[0] for p in parts], [p[1] for p in parts]
    no_dp = Federation(rounds, replace(campaign_train_config(False), learning_rate=search.best))
    scores = {math.inf: mean_accuracy(federate(train, no_dp, ModelConfig()), held)[0]}
    rate, steps = sweep._typical_plan(rounds)
    for epsilon in (1.0, 4.0):
        noise = noise_for_local(epsilon, rate, steps, 1e-5)
        dp = Federation(
            rounds,
            replace(campaign_train_config(True), noise_multiplier=noise),
            update_clip_norm=5.0,
        )
        scores[epsilon] = mean_accuracy(federate(train, dp, ModelConfig()), held)[0]
    # Example sampling and DP noise come from the OS CSPRNG, so on 3 devices' 168 held-out
    # examples a run moves by a few points (CI once saw no DP 0.208 against epsilon 4's
    # 0.220); the broken yardstick this guards against, no DP at the DP rate, scores 0.0.
    assert scores[math.inf] >= max(scores[1.0], scores[4.0]) - 0.05, scores
