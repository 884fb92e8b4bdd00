"""One recorded action sits in up to K+1 examples: its figure is group privacy."""

import warnings

import numpy as np
import pytest
from opacus.accountants.analysis import rdp as rdp_analysis

from policy.model import ModelConfig
from privacy.accountants import (
    DEFAULT_CONTEXT_LENGTH,
    RoundShape,
    epsilon_local,
    epsilon_per_action,
    per_action_at_cap,
)

HISTORY = [(6.0, 0.05, 60), (6.0, 0.05, 40)]


def _mironov_group_of_16(history, delta):
    """Proposition 2 with c = 4, straight from Opacus over every integer alpha >= 32."""
    alphas = list(range(32, 1001))
    rdp = sum(
        s * np.asarray(rdp_analysis.compute_rdp(q=q, noise_multiplier=z, steps=1, orders=alphas))
        for z, q, s in history
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eps, _ = rdp_analysis.get_privacy_spent(
            orders=[a / 16 for a in alphas], rdp=81 * rdp, delta=delta
        )
    return float(eps)


def test_the_per_action_figure_is_mironovs_group_bound_for_k_plus_1_rounded_up():
    direct = _mironov_group_of_16(HISTORY, 1e-5)
    ours = epsilon_per_action(HISTORY, 1e-5, context_length=8)  # 9 examples -> 16
    assert ours >= direct  # our orders are a subset of the direct ones
    assert ours == pytest.approx(direct, rel=1e-2)


def test_a_group_is_rounded_up_to_a_power_of_two():
    assert epsilon_per_action(HISTORY, 1e-5, 8) == epsilon_per_action(HISTORY, 1e-5, 15)


def test_the_per_action_figure_is_never_below_the_per_example_one():
    history = [(1.2, 0.25, 8), (8.0, 1.0, 1), (1.5, 0.25, 8), (8.0, 1.0, 1)]
    example = epsilon_local(history, 1e-5)
    assert example < epsilon_per_action(history, 1e-5, 1) < epsilon_per_action(history, 1e-5, 8)


def test_without_context_an_action_is_one_example():
    assert epsilon_per_action(HISTORY, 1e-5, 0) == epsilon_local(HISTORY, 1e-5)


def test_nothing_spent_is_zero_and_no_noise_is_infinite():
    assert epsilon_per_action([], 1e-5) == 0.0
    assert epsilon_per_action([(0.0, 0.25, 8)], 1e-5) == float("inf")


def test_the_default_context_length_is_the_models():
    assert ModelConfig().context_length == DEFAULT_CONTEXT_LENGTH


def test_a_round_spends_its_steps_and_its_evaluations():
    shape = RoundShape(sample_rate=0.25, steps=8, evaluation_noise=8.0, evaluations=2)
    assert shape.history(1.5, 3) == [(1.5, 0.25, 24), (8.0, 1.0, 6)]
    assert RoundShape(0.25, 8, 8.0, evaluations=0).history(1.5, 3) == [(1.5, 0.25, 24)]


def test_a_device_spending_the_whole_cap_stays_within_it():
    shape = RoundShape(sample_rate=0.25, steps=8, evaluation_noise=8.0)
    noise, action = per_action_at_cap(10.0, 1e-5, shape, 10, 8)
    spent = epsilon_local(shape.history(noise, 10), 1e-5)
    assert 9.5 < spent <= 10.0
    assert action == epsilon_per_action(shape.history(noise, 10), 1e-5, 8)
