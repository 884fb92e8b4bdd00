"""Cohorts are Poisson-sampled from the OS's CSPRNG, as the user-level accountant assumes."""

import json
import secrets

import numpy as np
import pytest
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

from server.app import build_strategy
from server.campaign import poisson_cohort
from server.config import CampaignConfig
from tests.server.fakes import Manager, policy, reply, scaled_like

N, Q, DRAWS = 200, 0.1, 2000


def test_over_many_rounds_the_cohort_size_is_binomial_n_q():
    nodes = list(range(N))
    sizes = np.array([len(poisson_cohort(nodes, Q)) for _ in range(DRAWS)])
    assert sizes.mean() == pytest.approx(N * Q, abs=4 * np.sqrt(N * Q * (1 - Q) / DRAWS))
    assert sizes.var() == pytest.approx(N * Q * (1 - Q), rel=0.15)
    assert len(set(sizes)) > 10  # sizes vary: not a fixed-size cohort


def test_a_fraction_of_one_takes_every_node():
    assert poisson_cohort(list(range(7)), 1.0) == list(range(7))


def test_the_sampler_draws_from_the_os_csprng(monkeypatch):
    made = []

    class Recording:
        def __init__(self):
            made.append(self)

        def random(self):
            return 0.05 if len(made) % 2 else 0.5  # below q on odd cohorts only

    monkeypatch.setattr(secrets, "SystemRandom", Recording)
    assert poisson_cohort(list(range(5)), Q) == list(range(5))
    assert poisson_cohort(list(range(5)), Q) == []
    assert len(made) == 2  # a SystemRandom per cohort: nothing seeded, nothing kept


def _noised_strategy(tmp_path, draw):
    config = CampaignConfig(checkpoint_dir=str(tmp_path), fraction_train=0.5, server_momentum=0.0)
    strategy = build_strategy(config, policy(central_noise=1.2), run_id=1)
    strategy.inner.draw_noise = draw
    return strategy


def test_under_central_noise_the_mean_divides_by_q_times_n_and_the_noise_is_calibrated_to_it(
    tmp_path,
):
    asked = []

    def draw(std, shape):
        asked.append(std)
        return np.zeros(shape)

    strategy = _noised_strategy(tmp_path, draw)
    start = [a.copy() for a in strategy.inner.global_arrays]
    strategy.configure_fit(1, ndarrays_to_parameters(start), Manager(10))  # q x N = 5
    update = scaled_like(start, 1.0)
    params, _ = strategy.aggregate_fit(1, [reply(update)] * 3, [])  # three replied
    for new, old, u in zip(parameters_to_ndarrays(params), start, update, strict=True):
        np.testing.assert_allclose(new, old + 3 * u / 5, atol=1e-6)
    assert asked and asked == [pytest.approx(1.2 * 5.0 / 5)] * len(asked)  # z x clip / (q x N)


def test_the_user_level_epsilon_is_dp_accountings_for_the_poisson_rounds_that_ran(tmp_path):
    import dp_accounting  # noqa: PLC0415

    strategy = _noised_strategy(tmp_path, lambda std, shape: np.zeros(shape))
    params = ndarrays_to_parameters(strategy.inner.global_arrays)
    update = scaled_like(strategy.inner.global_arrays, 1.0)
    for rnd in (1, 2, 3):
        strategy.configure_fit(rnd, params, Manager(10))
        strategy.aggregate_fit(rnd, [reply(update)] * 3, [])
        strategy.aggregate_evaluate(rnd, [], [])

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.5, dp_accounting.GaussianDpEvent(1.2)), 3
    )
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(event)
    expected = accountant.get_epsilon(1e-5)
    sidecar = json.loads((tmp_path / "round-0003.json").read_text())
    ledger = json.loads((tmp_path / "campaign-ledger.json").read_text())
    assert sidecar["epsilon_user"] == pytest.approx(expected, rel=0.02)
    assert ledger["epsilon_user"] == sidecar["epsilon_user"]
    assert [r["sampling_rate"] for r in ledger["noised_rounds"]] == [0.5] * 3


def test_sidecars_and_ledger_state_both_user_level_figures_and_their_adjacency(tmp_path):
    strategy = _noised_strategy(tmp_path, lambda std, shape: np.zeros(shape))
    strategy.configure_fit(1, ndarrays_to_parameters(strategy.inner.global_arrays), Manager(10))
    strategy.aggregate_evaluate(1, [], [])
    sidecar = json.loads((tmp_path / "round-0001.json").read_text())
    ledger = json.loads((tmp_path / "campaign-ledger.json").read_text())
    for record in (sidecar, ledger):
        assert record["epsilon_user"] > 0
        assert record["epsilon_user_vs_server"] is None
        assert record["adjacency"] == "add/remove one user"
    assert sidecar["epsilon_unit"] == "one example on one device"
    assert {"round", "cohort_size", "delta", "policy_hash", "epsilon_example_cap"} <= set(sidecar)
    assert "server" in ledger["notes"] and "example-level" in ledger["notes"]
