"""The user-level utility sweep: its noise, accounting and files, and `plan user` reading them."""

import json
import math
from types import SimpleNamespace

import dp_accounting
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from client.learning.featurize import Examples
from client.learning.training import TrainConfig
from policy.model import ModelConfig, NextActionPolicy, get_arrays
from privacy import cli as privacy_cli
from privacy.cli import app as privacy_app
from privacy.distributed_noise import share_std
from privacy.ledger import BudgetRule, planned_noise
from privacy.policy import default_policy_text, parse_policy
from simulations import cli as sim_cli
from simulations import inprocess
from simulations import user_level_sweep as sweep
from simulations.inprocess import UserLevelCampaign, run_user_level
from simulations.user_level_sweep import (
    UserSweepPoint,
    UserSweepSetup,
    horizon_rounds,
    noise_for,
    policy_at,
    write_user_outputs,
)

SHIPPED = parse_policy(default_policy_text())
Q = sweep.SHIPPED_PER_ROUND / sweep.SHIPPED_POPULATION


def _dp_accounting_epsilon(z: float, q: float, rounds: int, delta: float) -> float:
    """Google's accountant on the mechanism the campaign runs, built here independently."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
    )
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def test_the_horizon_is_the_rounds_the_shipped_noise_buys_at_the_shipped_target():
    rounds = horizon_rounds(SHIPPED, Q)
    z = SHIPPED.training.central_noise_multiplier
    delta = SHIPPED.privacy.delta_user
    assert rounds == 30  # what the shipped policy and README say: three default campaigns
    assert _dp_accounting_epsilon(z, Q, rounds, delta) <= SHIPPED.privacy.user_epsilon_target
    assert _dp_accounting_epsilon(z, Q, rounds + 20, delta) > SHIPPED.privacy.user_epsilon_target


def test_the_shipped_noise_keeps_30_rounds_a_year_within_epsilon_1_and_not_31():
    """Google's RDP accountant, as the server's runs: user epsilon 1 at delta 1e-7, q = 0.1."""
    z = SHIPPED.training.central_noise_multiplier
    assert (SHIPPED.privacy.user_epsilon_target, SHIPPED.privacy.delta_user) == (1.0, 1e-7)
    assert SHIPPED.privacy.user_horizon_days == 365
    assert _dp_accounting_rdp(z, 0.1, 30, 1e-7) <= 1.0
    assert _dp_accounting_rdp(z, 0.1, 31, 1e-7) > 1.0


def _dp_accounting_rdp(z: float, q: float, rounds: int, delta: float) -> float:
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), rounds
        )
    )
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize("target", sweep.DEFAULT_TARGETS[:-1])
def test_each_targets_noise_keeps_the_horizon_within_it_and_is_the_least_that_does(target):
    delta = SHIPPED.privacy.delta_user
    z = noise_for(target, Q, 90, delta)
    assert _dp_accounting_rdp(z, Q, 90, delta) <= target
    # The least that does: 2 % less noise would pass the target.
    assert _dp_accounting_rdp(z * 0.98, Q, 90, delta) > target


def test_the_no_noise_point_has_no_noise_no_clipping_and_no_local_dp():
    assert noise_for(math.inf, Q, 90, 1e-7) == 0.0
    policy = policy_at(0.0, 80)
    assert policy.training.central_noise_multiplier == 0.0
    assert policy.training.local_noise_multiplier == 0.0
    assert share_std(policy) == 0.0
    assert policy.training.update_clip_norm >= sweep.NO_UPDATE_CLIP
    noised = policy_at(2.5, 80)
    assert noised.training.central_noise_multiplier == 2.5
    assert noised.training.min_cohort == 80
    assert noised.training.update_clip_norm == SHIPPED.training.update_clip_norm
    assert noised.training.local_noise_multiplier == SHIPPED.training.local_noise_multiplier


def _clients(n: int, size: int = 40) -> list[Examples]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        context = rng.integers(0, 20, size=(size, 8))
        out.append(Examples(context, rng.integers(0, 5, size), (context[:, -1] + 1) % 20))
    return out


def _campaign(policy, sampling=1.0, rounds=1):
    train = TrainConfig(batch_size=16, sample_rate=0.5, steps=1, private=False)
    return UserLevelCampaign(
        rounds=rounds, train=train, policy=policy, sampling=sampling, server_momentum=0.0
    )


def _initial():
    """The campaign's initial model (seeded by the run config's seed, as on the server)."""
    torch.manual_seed(7)
    return get_arrays(NextActionPolicy(ModelConfig()))


def test_the_no_noise_campaign_draws_no_noise_at_all(monkeypatch):
    def refuse(*_):
        raise AssertionError("noise drawn in the no-noise campaign")

    monkeypatch.setattr(inprocess, "add_share", refuse)
    monkeypatch.setattr(inprocess, "_draw_central_noise", refuse)
    outcome = run_user_level(_clients(4), _campaign(policy_at(0.0, 2)), ModelConfig())
    assert outcome.aggregated == (True,)


def test_the_noised_mean_carries_the_shares_over_the_fixed_denominator(monkeypatch):
    """Zero updates: what moves the model is the noise alone, z C sqrt(n/m) / (q N)."""
    zeros = [np.zeros_like(a) for a in get_arrays(NextActionPolicy(ModelConfig())).values()]
    monkeypatch.setattr(inprocess, "train_round", lambda *_: SimpleNamespace(delta=zeros))
    n, m, z = 8, 2, 3.0
    policy = policy_at(z, m)
    before = np.concatenate([a.ravel() for a in _initial().values()])
    outcome = run_user_level(_clients(n), _campaign(policy), ModelConfig())
    after = np.concatenate([a.ravel() for a in get_arrays(outcome.model).values()])
    clip = policy.training.update_clip_norm
    expected = z * clip * math.sqrt(n / m) / (1.0 * n)
    assert np.std(after - before) == pytest.approx(expected, rel=0.03)


def test_a_round_below_min_cohort_is_discarded_and_the_model_kept():
    policy = policy_at(3.0, 5)
    outcome = run_user_level(_clients(3), _campaign(policy, rounds=2), ModelConfig())
    assert outcome.aggregated == (False, False)
    initial = _initial()
    for name, array in get_arrays(outcome.model).items():
        np.testing.assert_array_equal(array, initial[name])


def test_update_norms_are_recorded_before_the_update_clip(monkeypatch):
    """The clip is chosen against the norms devices send: the record must not be clipped."""
    arrays = get_arrays(NextActionPolicy(ModelConfig())).values()
    ones = [np.ones_like(a) for a in arrays]
    size = sum(a.size for a in ones)
    monkeypatch.setattr(inprocess, "train_round", lambda *_: SimpleNamespace(delta=ones))
    policy = policy_at(3.0, 2, update_clip=0.5)
    outcome = run_user_level(_clients(4), _campaign(policy, rounds=2), ModelConfig())
    assert len(outcome.update_norms) == 2
    for round_norms in outcome.update_norms:
        assert round_norms == pytest.approx((math.sqrt(size),) * 4)


def test_an_update_clip_replaces_the_shipped_one_in_the_noised_campaigns_only():
    clipped = policy_at(2.5, 80, update_clip=0.5)
    assert clipped.training.update_clip_norm == 0.5
    assert clipped.training.central_noise_multiplier == 2.5
    assert policy_at(0.0, 80, update_clip=0.5).training.update_clip_norm >= sweep.NO_UPDATE_CLIP


def _setup(population: int = 1000) -> UserSweepSetup:
    return UserSweepSetup(
        population=population,
        sampling=0.1,
        campaign_rounds=10,
        horizon_rounds=90,
        horizon_days=365.0,
        delta=1e-7,
        min_cohort=80,
        update_clip=5.0,
        device_epsilon_cap=10.0,
        device_delta=1e-5,
        local_noise=1.97,
        learning_rate=4.0,
    )


def _point(target: float, z: float, top1: float, loss: float) -> UserSweepPoint:
    return UserSweepPoint(
        target_epsilon=target,
        noise_multiplier=z,
        noise_std_on_mean=z * 5.0 / 100,
        epsilon_campaign=math.inf if z == 0 else target / 3,
        epsilon_horizon=math.inf if z == 0 else target,
        top1=top1,
        top3=top1 + 0.2,
        relative_loss=loss,
        learning_rate=4.0,
        mean_cohort=100.0,
        rounds_aggregated=10,
    )


POINTS = [
    _point(math.inf, 0.0, 0.50, 0.0),
    _point(0.5, 8.0, 0.20, 0.60),
    _point(1.0, 5.0, 0.30, 0.40),
    _point(2.0, 3.0, 0.45, 0.10),
    _point(4.0, 1.8, 0.48, 0.04),
    _point(8.0, 1.1, 0.49, 0.02),
]


def test_the_outputs_are_a_png_a_table_and_json_with_what_ran(tmp_path):
    png, table, data = write_user_outputs(_setup(), POINTS, tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = table.read_text()
    assert "Population 1,000, q = 0.1" in text and "z planned for 90 rounds" in text
    assert "local noise 1.970" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(POINTS)
    saved = json.loads(data.read_text())
    assert saved["setup"]["population"] == 1000
    assert saved["points"][0]["target_epsilon"] == "inf"


PLAN = ("plan", "user", "--population", "10000", "--delta", "1e-7", "--target-epsilon", "1")


def _plan(*args: str) -> dict:
    result = CliRunner().invoke(
        privacy_app,
        [*PLAN, *args, "--json"],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_plan_user_reads_the_sweep_as_its_utility_bound(tmp_path, monkeypatch):
    # The grid's noise planning is tested with the accountant; here only the bound matters.
    monkeypatch.setattr(privacy_cli, "noise_for_target", lambda _t, q, rounds, _d: q * rounds)
    _, _, data = write_user_outputs(_setup(), POINTS, tmp_path)
    plan = _plan("--utility-sweep", str(data), "--max-loss", "0.05", "--clip", "5")
    # The most noise on the mean at which every point up to it lost at most 5 %: eps 4's.
    assert plan["utility"]["max_noise_std"] == pytest.approx(1.8 * 5.0 / 100)
    assert plan["utility"]["sweep_population"] == 1000
    fits = {(r["per_round"], r["rounds"]): r["meets_utility"] for r in plan["plans"]}
    for row in plan["plans"]:
        assert row["noise_std_on_mean"] == pytest.approx(
            row["sampling_rate"] * row["rounds"] * 5.0 / row["per_round"]
        )
        assert row["meets_utility"] == (row["noise_std_on_mean"] <= 0.09)
    assert fits[(100, 10)] and not fits[(100, 300)]
    strict = _plan("--utility-sweep", str(data), "--max-loss", "0.01")
    assert strict["utility"]["max_noise_std"] is None
    assert not any(r["meets_utility"] for r in strict["plans"])
    # Without --clip, the noise on the mean is at the policy's update clip.
    clip = SHIPPED.training.update_clip_norm
    for row in strict["plans"]:
        assert row["noise_std_on_mean"] == pytest.approx(
            row["sampling_rate"] * row["rounds"] * clip / row["per_round"]
        )


def test_plan_user_refuses_a_file_that_is_not_a_sweep_in_one_line(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    result = CliRunner().invoke(
        privacy_app,
        [*PLAN, "--utility-sweep", str(bad)],
    )
    assert result.exit_code == 1
    assert "hearth-sim sweep --user-level" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_the_sweep_runs_each_target_and_scores_against_the_no_noise_run(monkeypatch):
    """End to end on a few synthetic devices, two rounds (the campaign code is real)."""
    monkeypatch.setattr(sweep, "SHIPPED_POPULATION", sweep.SHIPPED_PER_ROUND)  # q = 1
    monkeypatch.setattr(sweep, "horizon_rounds", lambda *_: 10)
    monkeypatch.setattr(sweep, "noise_for", lambda target, *_: 0.0 if math.isinf(target) else 4.0)
    clients = _clients(6, 60)
    setup, points = sweep.run_user_sweep(
        clients, clients, targets=(8.0, math.inf), rounds=1, grid=(0.5,)
    )
    none, dp = points
    assert math.isinf(none.target_epsilon) and none.noise_multiplier == 0.0
    assert none.relative_loss == 0.0 and none.learning_rate == 0.5
    clip = SHIPPED.training.update_clip_norm
    assert dp.noise_multiplier == 4.0 and dp.noise_std_on_mean == pytest.approx(4.0 * clip / 6)
    # One round trained of the ten the horizon allows, each accounted at what ran (q = 1).
    assert dp.epsilon_horizon == pytest.approx(_dp_accounting_rdp(4.0, 1.0, 10, 1e-7), rel=0.02)
    assert dp.epsilon_campaign == pytest.approx(_dp_accounting_rdp(4.0, 1.0, 1, 1e-7), rel=0.02)
    assert dp.relative_loss == pytest.approx(1 - dp.top1 / none.top1)
    assert type(dp.top1) is float and type(dp.relative_loss) is float  # not numpy scalars
    assert (setup.population, setup.sampling, setup.min_cohort) == (6, 1.0, 4)
    assert none.rounds_aggregated == dp.rounds_aggregated == 1
    assert 0 < dp.update_norm_median <= dp.update_norm_p90


def test_the_sweep_runs_its_noised_campaigns_at_the_update_clip_asked(monkeypatch):
    monkeypatch.setattr(sweep, "SHIPPED_POPULATION", sweep.SHIPPED_PER_ROUND)  # q = 1
    monkeypatch.setattr(sweep, "horizon_rounds", lambda *_: 10)
    monkeypatch.setattr(sweep, "noise_for", lambda target, *_: 4.0)
    seen = []
    real = sweep.run_user_level

    def spy(clients, campaign, config):
        seen.append(campaign.policy.training.update_clip_norm)
        return real(clients, campaign, config)

    monkeypatch.setattr(sweep, "run_user_level", spy)
    clients = _clients(4, 30)
    setup, (point,) = sweep.run_user_sweep(
        clients, clients, targets=(8.0,), rounds=1, update_clip=0.5
    )
    assert seen == [0.5] and setup.update_clip == 0.5
    assert point.noise_std_on_mean == pytest.approx(4.0 * 0.5 / 4)


def test_the_device_spend_is_the_ledgers_and_the_planned_noise_just_fills_a_days_lifetime():
    policy = policy_at(1.0, 80)
    planned = planned_noise(policy, BudgetRule.from_policy(policy))
    spend = sweep.device_spend(policy, planned)
    assert spend.rounds_within_cap == spend.lifetime_rounds == 3  # 0.2 a day over 15 days
    # Less local noise buys fewer rounds per day of data: the ledger, not the noise, pays.
    assert sweep.device_spend(policy, planned * 0.97).rounds_within_cap < 3
    lower = sweep.device_spend(policy, 1.0)
    assert 0 < lower.rounds_within_cap < 3 and lower.epsilon_one_round > spend.epsilon_one_round
    # A floor of 0.6 spends more than the cap in one round: no device could join it.
    floor = sweep.device_spend(policy, 0.6)
    assert floor.rounds_within_cap == 0 and floor.epsilon_one_round > 10.0


def test_the_shipped_scale_runs_the_shipped_populations_noise_on_the_mean(monkeypatch):
    seen = []
    monkeypatch.setattr(
        sweep, "run_user_level", lambda c, campaign, m: seen.append(campaign) or _fake_outcome()
    )
    monkeypatch.setattr(sweep, "mean_accuracy", lambda *_: (0.4, 0.6))
    clients = _clients(20, 8)
    setup, (point, two) = sweep.run_user_sweep(
        clients, clients, targets=(1.0, 2.0), shipped_scale=True
    )
    # At the policy's own target the sweep runs the policy's own z: the shipped campaign.
    z = SHIPPED.training.central_noise_multiplier
    clip = SHIPPED.training.update_clip_norm
    assert setup.shipped_scale and setup.horizon_rounds == 30
    assert seen[0].policy.training.central_noise_multiplier == pytest.approx(z * 20 / 10_000)
    assert point.noise_std_on_mean == pytest.approx(z * clip / (Q * 10_000))
    # The epsilons are the shipped population's at the accounted z, not this run's tiny z.
    assert point.epsilon_horizon == pytest.approx(0.996, abs=0.001)
    # Any other target: the accountant's least z for the same 30 rounds.
    assert two.noise_multiplier == pytest.approx(noise_for(2.0, Q, 30, 1e-7) * 20 / 10_000)
    assert two.epsilon_horizon == pytest.approx(2.0, abs=0.01)
    # The model is the run config's (hidden-width 32), the local noise the policy's plan.
    assert (setup.hidden, setup.update_clip) == (32, clip)
    assert setup.local_noise == pytest.approx(1.158, abs=0.001)


def _fake_outcome():
    return inprocess.UserLevelOutcome(NextActionPolicy(ModelConfig()), (2,), (True,), ((1.0,),))


def test_local_noise_and_the_device_dp_only_campaign_run_as_asked(monkeypatch):
    monkeypatch.setattr(sweep, "SHIPPED_POPULATION", sweep.SHIPPED_PER_ROUND)  # q = 1
    monkeypatch.setattr(sweep, "horizon_rounds", lambda *_: 10)
    monkeypatch.setattr(sweep, "noise_for", lambda target, *_: 0.0 if math.isinf(target) else 4.0)
    seen = []
    scores = iter([(0.5, 0.7), (0.4, 0.6), (0.2, 0.3)])

    def spy(clients, campaign, config):
        training = campaign.policy.training
        seen.append((training.central_noise_multiplier, campaign.train.noise_multiplier))
        seen[-1] += (campaign.train.private, training.update_clip_norm)
        return _fake_outcome()

    monkeypatch.setattr(sweep, "run_user_level", spy)
    monkeypatch.setattr(sweep, "mean_accuracy", lambda *_: next(scores))
    monkeypatch.setattr(sweep, "tune_user_level", lambda *_: inprocess.LearningRateSearch(0.5, ()))
    clients = _clients(4, 30)
    setup, points = sweep.run_user_sweep(
        clients,
        clients,
        targets=(8.0, math.inf),
        rounds=1,
        grid=(0.5,),
        local_noise=1.2,
        local_only=True,
    )
    # The baseline, device DP only, then the target.
    assert seen == [
        (0.0, 0.0, False, sweep.NO_UPDATE_CLIP),
        (0.0, 1.2, True, SHIPPED.training.update_clip_norm),
        (4.0, 1.2, True, SHIPPED.training.update_clip_norm),
    ]
    baseline, device_only, target = points
    assert sweep.is_baseline(baseline) and not sweep.is_baseline(device_only)
    assert (
        device_only.local_noise == target.local_noise == 1.2 and device_only.noise_std_on_mean == 0
    )
    assert device_only.relative_loss == pytest.approx(1 - 0.4 / 0.5)
    assert target.relative_loss == pytest.approx(1 - 0.2 / 0.5)
    assert setup.local_noise == 1.2
    assert setup.device_rounds_within_cap == sweep.device_spend(SHIPPED, 1.2).rounds_within_cap
    assert (
        setup.examples_per_device == 30
        and setup.expected_batch == 30 * SHIPPED.training.sample_rate
    )


def test_the_cli_passes_the_levers_to_the_sweep(monkeypatch):
    calls = []
    monkeypatch.setattr(sim_cli, "_user_level_sweep", lambda *args: calls.append(args))
    result = CliRunner().invoke(
        sim_cli.app,
        [
            *("sweep", "--user-level", "--epsilons", "none,local,1", "--hours", "8"),
            *("--local-noise", "1.2", "--update-clip", "2", "--shipped-scale"),
        ],
    )
    assert result.exit_code == 0, result.output
    ((targets, _, _, hours, _, _, _, options),) = calls
    assert targets == [math.inf, 1.0] and hours == 8.0
    assert options == sim_cli.UserSweepOptions(1.2, 2.0, True, True)
    bad = CliRunner().invoke(sim_cli.app, ["sweep", "--user-level", "--epsilons", "1,loc"])
    assert bad.exit_code == 1 and "comma-separated" in bad.output
