"""The user-level levers: the device's ledger in the campaign, the server search, the budget's
rounds and accountant, a smaller model, and the levers record."""

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import dp_accounting
import numpy as np
import pytest
from typer.testing import CliRunner

from client.learning.featurize import Examples
from client.learning.training import TrainConfig
from policy.model import ModelConfig, NextActionPolicy
from simulations import cli as sim_cli
from simulations import inprocess
from simulations import user_level_levers as levers
from simulations import user_level_sweep as sweep
from simulations.inprocess import UserLevelCampaign, run_user_level, tune_server
from simulations.user_level_sweep import UserSweepPoint, UserSweepSetup, policy_at


def _clients(n: int, size: int = 30) -> list[Examples]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        context = rng.integers(0, 20, size=(size, 8))
        out.append(Examples(context, rng.integers(0, 5, size), (context[:, -1] + 1) % 20))
    return out


def _campaign(policy, rounds=1, device_rounds=None):
    train = TrainConfig(batch_size=16, sample_rate=0.5, steps=1, private=False)
    return UserLevelCampaign(
        rounds=rounds,
        train=train,
        policy=policy,
        sampling=1.0,
        server_momentum=0.0,
        device_rounds=device_rounds,
    )


def test_a_device_past_its_ledgers_rounds_declines_and_the_round_falls_short(monkeypatch):
    """Every device sampled every round, its ledger admitting 2: the third round has nobody."""
    trained = []
    real = inprocess.train_round

    def spy(model, examples, config):
        trained.append(id(examples))
        return real(model, examples, config)

    monkeypatch.setattr(inprocess, "train_round", spy)
    clients = _clients(4)
    outcome = run_user_level(clients, _campaign(policy_at(2.0, 2), 3, 2), ModelConfig())
    assert outcome.aggregated == (True, True, False)
    assert outcome.declined == 4
    assert sorted(trained.count(id(c)) for c in clients) == [2, 2, 2, 2]
    # Without a ledger limit (the no-noise baseline), every device joins every round.
    unlimited = run_user_level(clients, _campaign(policy_at(0.0, 2), 3), ModelConfig())
    assert unlimited.aggregated == (True, True, True) and unlimited.declined == 0


def test_the_server_search_keeps_the_best_validation_score_and_never_sees_the_test_part(
    monkeypatch,
):
    seen = []

    def fake_run(clients, campaign, config):
        seen.append((campaign.server_learning_rate, campaign.server_momentum, len(clients[0])))
        return SimpleNamespace(model=(campaign.server_learning_rate, campaign.server_momentum))

    # Validation top-1 peaks at rate 0.5, momentum 0.9.
    monkeypatch.setattr(inprocess, "run_user_level", fake_run)
    monkeypatch.setattr(
        inprocess,
        "mean_accuracy",
        lambda model, held: (1 - abs(model[0] - 0.5) - abs(model[1] - 0.9), 0.0),
    )
    clients = _clients(3, 50)
    search = tune_server(
        clients, _campaign(policy_at(2.0, 2)), ModelConfig(), (0.25, 0.5, 1.0), (0.7, 0.9)
    )
    assert search.best == (0.5, 0.9)
    assert len(search.scores) == 6
    # Each candidate trained on the fitting part only (80 % of each device's training part).
    assert {n for *_, n in seen} == {40}


def test_the_budgets_rounds_and_the_accountant_choose_the_noise(monkeypatch):
    asked = []

    def noise(target, sampling, rounds, delta, accountant="rdp"):
        asked.append((rounds, accountant))
        return 0.0 if math.isinf(target) else 3.0

    monkeypatch.setattr(sweep, "noise_for", noise)
    monkeypatch.setattr(sweep, "mean_accuracy", lambda *_: (0.5, 0.7))
    monkeypatch.setattr(
        sweep,
        "run_user_level",
        lambda c, campaign, m: inprocess.UserLevelOutcome(
            NextActionPolicy(m), (2,), (True,), ((1.0,),), 3
        ),
    )
    clients = _clients(20, 8)
    small = ModelConfig(hidden=8, token_dim=4)
    setup, (point,) = sweep.run_user_sweep(
        clients,
        clients,
        targets=(1.0,),
        rounds=30,
        budget_rounds=30,
        accountant="pld",
        model_config=small,
    )
    assert asked == [(30, "pld")]
    assert (setup.horizon_rounds, setup.campaign_rounds, setup.accountant) == (30, 30, "pld")
    assert setup.model_parameters == sum(p.numel() for p in NextActionPolicy(small).parameters())
    assert setup.model_parameters < 16_107 and (setup.hidden, setup.token_dim) == (8, 4)
    assert point.rounds_declined == 3
    # The campaign's epsilon is PLD's over the rounds it ran.
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(3.0)), 30
    )
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(event)
    assert point.epsilon_campaign == pytest.approx(pld.get_epsilon(1e-7), rel=0.01)


def test_pld_needs_less_noise_than_rdp_for_the_shipped_year_and_still_meets_the_target():
    rdp = sweep.noise_for(1.0, 0.1, 90, 1e-7, "rdp")
    pld = sweep.noise_for(1.0, 0.1, 90, 1e-7, "pld")
    assert rdp == pytest.approx(5.0, abs=0.01) and pld < 0.95 * rdp
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(pld)), 90
    )
    accountant = dp_accounting.pld.PLDAccountant()
    accountant.compose(event)
    assert accountant.get_epsilon(1e-7) <= 1.0


def test_the_sweep_searches_the_server_optimizer_for_every_campaign(monkeypatch):
    monkeypatch.setattr(sweep, "noise_for", lambda t, *_: 0.0 if math.isinf(t) else 3.0)
    monkeypatch.setattr(sweep, "mean_accuracy", lambda *_: (0.5, 0.7))
    monkeypatch.setattr(sweep, "tune_user_level", lambda *_: inprocess.LearningRateSearch(0.5, ()))
    ran = []
    monkeypatch.setattr(
        sweep,
        "run_user_level",
        lambda c, campaign, m: (
            ran.append(campaign)
            or inprocess.UserLevelOutcome(NextActionPolicy(m), (2,), (True,), ((1.0,),))
        ),
    )
    searched = []

    def search(train, campaign, config, rates, momenta):
        searched.append((campaign.policy.training.central_noise_multiplier, rates, momenta))
        return inprocess.ServerSearch((rates[-1], momenta[0]), ())

    monkeypatch.setattr(sweep, "tune_server", search)
    clients = _clients(20, 8)
    _, (_, noised) = sweep.run_user_sweep(
        clients,
        clients,
        targets=(2.0, math.inf),  # not the policy's own target: its z is the policy's
        rounds=1,
        server_rates=(0.5, 1.0),
        server_momenta=(0.7, 0.9),
    )
    assert [z for z, *_ in searched] == [0.0, 3.0]
    assert [(c.server_learning_rate, c.server_momentum) for c in ran] == [(1.0, 0.7)] * 2
    assert (noised.server_learning_rate, noised.server_momentum) == (1.0, 0.7)
    # The ledger's limit applies to the private campaign only.
    assert ran[0].device_rounds is None and ran[1].device_rounds is not None


def _setup(**changes):
    base = UserSweepSetup(
        population=300,
        sampling=0.1,
        campaign_rounds=10,
        horizon_rounds=90,
        horizon_days=365,
        delta=1e-7,
        min_cohort=24,
        update_clip=3.0,
        device_epsilon_cap=10,
        device_delta=1e-5,
        local_noise=1.2,
        learning_rate=4.0,
        device_epsilon_round=6.18,
        device_rounds_within_cap=3,
        shipped_scale=True,
        model_parameters=16_107,
    )
    return replace(base, **changes)


def _point(target, z, top1, loss, local=1.2):
    return UserSweepPoint(
        target_epsilon=target,
        noise_multiplier=z,
        noise_std_on_mean=z * 3 / 30,
        epsilon_campaign=0.35 if z else math.inf,
        epsilon_horizon=1.0 if z else math.inf,
        top1=top1,
        top3=0.8,
        relative_loss=loss,
        learning_rate=4.0 if z else 0.5,
        mean_cohort=30,
        rounds_aggregated=10,
        local_noise=local,
    )


def test_the_levers_record_compares_each_campaign_with_its_own_baseline(tmp_path):
    path = tmp_path / "levers2.json"
    levers.record(
        path,
        _setup(),
        [_point(math.inf, 0, 0.6, 0.0, local=0), _point(1.0, 0.15, 0.54, 0.1)],
        "hearth-sim sweep --user-level --epsilons none,1",
        8.0,
    )
    # A later run without a baseline: its loss is against the recorded one of the same
    # campaign; a 30-round run has none recorded, so no loss is made up for it.
    levers.record(
        path, _setup(), [_point(1.0, 0.15, 0.57, math.nan)], "hearth-sim sweep ... one", 8.0
    )
    levers.record(
        path,
        _setup(campaign_rounds=30),
        [_point(1.0, 0.15, 0.57, math.nan)],
        "hearth-sim sweep ... thirty",
        8.0,
    )
    rows = levers.read_rows(path)
    assert len(rows) == 4 and rows[0].baseline and not rows[1].baseline
    losses = [loss for _, loss in levers.with_losses(rows)]
    assert losses[:3] == pytest.approx([0.0, 0.1, 1 - 0.57 / 0.6])
    assert math.isnan(losses[3])
    assert rows[1].noise_accounted == pytest.approx(0.15 / (300 / 10_000))
    table = path.with_suffix(".md").read_text()
    assert "1. `hearth-sim sweep --user-level --epsilons none,1`" in table
    assert "+5.0%" in table and "no baseline" in table
    assert path.with_suffix(".png").stat().st_size > 0
    json.loads(path.read_text())  # valid JSON, infinities as strings


def test_a_damaged_levers_record_is_refused_in_one_line(tmp_path):
    path = tmp_path / "levers2.json"
    path.write_text("[{]")
    with pytest.raises(ValueError, match="not a levers record"):
        levers.read_rows(path)


def test_the_cli_passes_the_new_levers(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(sim_cli, "_user_level_sweep", lambda *args: calls.append(args))
    result = CliRunner().invoke(
        sim_cli.app,
        [
            *("sweep", "--user-level", "--epsilons", "none,1", "--rounds", "30"),
            *("--budget-rounds", "30", "--accountant", "pld", "--hidden", "32"),
            *("--server-learning-rates", "0.5,1", "--server-momenta", "0.7,0.9"),
            *("--record", str(tmp_path / "l.json")),
        ],
    )
    assert result.exit_code == 0, result.output
    ((_, _, rounds, *_, options),) = calls
    assert rounds == 30
    assert (options.budget_rounds, options.accountant, options.hidden) == (30, "pld", 32)
    assert options.server_learning_rates == (0.5, 1.0) and options.server_momenta == (0.7, 0.9)
    assert options.record == tmp_path / "l.json"
    assert sim_cli._model_config(options).hidden == 32
    bad = CliRunner().invoke(sim_cli.app, ["sweep", "--user-level", "--accountant", "prv"])
    assert bad.exit_code == 1 and "rdp or pld" in bad.output


def test_one_learning_rate_given_is_used_without_a_search(monkeypatch):
    def refuse(*_):
        raise AssertionError("searched a grid of one rate")

    monkeypatch.setattr(sweep, "tune_user_level", refuse)
    monkeypatch.setattr(sweep, "mean_accuracy", lambda *_: (0.5, 0.7))
    monkeypatch.setattr(
        sweep,
        "run_user_level",
        lambda c, campaign, m: inprocess.UserLevelOutcome(NextActionPolicy(m), (2,), (True,)),
    )
    clients = _clients(20, 8)
    _, (none,) = sweep.run_user_sweep(clients, clients, targets=(math.inf,), grid=(0.25,))
    assert none.learning_rate == 0.25
