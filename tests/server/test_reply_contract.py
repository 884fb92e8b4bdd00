"""The server checks every train reply against the contract before aggregating it."""

import logging

import numpy as np
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays

from server.app import build_strategy
from server.config import CampaignConfig
from tests.server.fakes import Manager, policy, reply, scaled_like

CLIP = 5.0  # the default policy's update_clip_norm


def _strategy(tmp_path, secaggplus=False, **policy_changes):
    config = CampaignConfig(
        checkpoint_dir=str(tmp_path), server_momentum=0.0, secaggplus=secaggplus
    )
    strategy = build_strategy(config, policy(**policy_changes), run_id=1)
    strategy.configure_fit(1, ndarrays_to_parameters(strategy.inner.global_arrays), Manager(3))
    return strategy


def test_a_reply_claiming_weight_600_is_dropped_and_the_honest_ones_aggregated(tmp_path, caplog):
    strategy = _strategy(tmp_path)
    start = [a.copy() for a in strategy.inner.global_arrays]
    honest = scaled_like(start, 1.0)
    heavy = scaled_like(start, 1.0, direction=-1.0)
    with caplog.at_level(logging.WARNING):
        params, metrics = strategy.aggregate_fit(
            1, [reply(honest), reply(honest), reply(heavy, weight=600)], []
        )
    assert metrics["clients_rejected"] == 1
    assert metrics["clients_trained"] == 2
    for new, old, h in zip(parameters_to_ndarrays(params), start, honest, strict=True):
        np.testing.assert_allclose(new, old + h, atol=1e-6)  # the unweighted mean of the two
    assert "weight rule" in caplog.text


def test_a_reply_with_a_nan_is_dropped(tmp_path, caplog):
    strategy = _strategy(tmp_path)
    honest = scaled_like(strategy.inner.global_arrays, 1.0)
    poisoned = [a.copy() for a in honest]
    poisoned[0][0, 0] = np.nan
    with caplog.at_level(logging.WARNING):
        params, metrics = strategy.aggregate_fit(
            1, [reply(honest), reply(honest), reply(poisoned)], []
        )
    assert metrics["clients_rejected"] == 1
    assert all(np.isfinite(a).all() for a in parameters_to_ndarrays(params))
    assert "finite rule" in caplog.text
    assert "nan" not in caplog.text.lower()  # the rule is named, never a value


def test_a_reply_over_the_clipping_norm_is_dropped(tmp_path, caplog):
    strategy = _strategy(tmp_path)
    start = [a.copy() for a in strategy.inner.global_arrays]
    honest = scaled_like(start, CLIP)  # exactly at the clip: kept
    huge = scaled_like(start, CLIP * 1.01)
    with caplog.at_level(logging.WARNING):
        params, metrics = strategy.aggregate_fit(1, [reply(honest), reply(honest), reply(huge)], [])
    assert (metrics["clients_trained"], metrics["clients_rejected"]) == (2, 1)
    for new, old, h in zip(parameters_to_ndarrays(params), start, honest, strict=True):
        np.testing.assert_allclose(new, old + h, atol=1e-6)
    assert "norm rule" in caplog.text


def test_a_reply_shaped_unlike_the_global_model_is_dropped(tmp_path):
    strategy = _strategy(tmp_path)
    honest = scaled_like(strategy.inner.global_arrays, 1.0)
    _, metrics = strategy.aggregate_fit(
        1, [reply(honest), reply(honest), reply([np.zeros(3, np.float32)])], []
    )
    assert metrics["clients_rejected"] == 1


def test_when_rejections_leave_fewer_than_the_minimum_cohort_the_model_stays(tmp_path):
    strategy = _strategy(tmp_path)
    start = [a.copy() for a in strategy.inner.global_arrays]
    honest = scaled_like(start, 1.0)
    params, metrics = strategy.aggregate_fit(1, [reply(honest), reply(honest, weight=0)], [])
    assert params is None
    assert metrics["clients_rejected"] == 1
    for new, old in zip(strategy.inner.global_arrays, start, strict=True):
        np.testing.assert_array_equal(new, old)


def _secagg_results(mean, n, weight=1):
    """What SecAggPlusWorkflow hands the strategy: n results sharing one unmasked mean."""
    shared = ndarrays_to_parameters(mean)
    results = [reply(mean, weight) for _ in range(n)]
    for _, res in results:
        res.parameters = shared
    return results


def test_under_secaggplus_an_aggregate_within_clip_times_contributors_is_applied(tmp_path):
    strategy = _strategy(tmp_path, secaggplus=True)
    start = [a.copy() for a in strategy.inner.global_arrays]
    mean = scaled_like(start, CLIP)
    params, metrics = strategy.aggregate_fit(1, _secagg_results(mean, 3), [])
    assert metrics["clients_trained"] == 3
    for new, old, m in zip(parameters_to_ndarrays(params), start, mean, strict=True):
        np.testing.assert_allclose(new, old + m, atol=1e-6)


def test_under_secaggplus_an_aggregate_over_clip_times_contributors_skips_the_round(tmp_path):
    strategy = _strategy(tmp_path, secaggplus=True)
    start = [a.copy() for a in strategy.inner.global_arrays]
    params, metrics = strategy.aggregate_fit(
        1, _secagg_results(scaled_like(start, 2 * CLIP), 3), []
    )
    assert params is None
    assert metrics["clients_rejected"] == 3
    for new, old in zip(strategy.inner.global_arrays, start, strict=True):
        np.testing.assert_array_equal(new, old)


def test_under_secaggplus_a_non_finite_aggregate_skips_the_round(tmp_path):
    strategy = _strategy(tmp_path, secaggplus=True)
    mean = scaled_like(strategy.inner.global_arrays, 1.0)
    mean[-1][0] = np.inf
    params, _ = strategy.aggregate_fit(1, _secagg_results(mean, 3), [])
    assert params is None
