import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from strategies.delta_fedavg import DeltaFedAvg, add_central_noise, apply_delta, weighted_mean_delta


def _arrays(v):
    return [np.full((2, 2), v, dtype=np.float32), np.full(3, v, dtype=np.float32)]


def test_weighted_mean_delta_weights_by_examples():
    mean = weighted_mean_delta([_arrays(1.0), _arrays(4.0)], [3, 1])
    np.testing.assert_allclose(mean[0], np.full((2, 2), 1.75))


def test_apply_delta_adds_to_the_global_model():
    new = apply_delta(_arrays(1.0), _arrays(0.5), server_lr=2.0)
    np.testing.assert_allclose(new[1], np.full(3, 2.0))


def test_apply_delta_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        apply_delta(_arrays(1.0), [np.zeros((3, 3), np.float32), np.zeros(3, np.float32)])


def _fit(delta, n):
    return (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(delta), n, {}))


def test_strategy_applies_the_weighted_mean_delta_to_its_global_model():
    strategy = DeltaFedAvg(initial_parameters=ndarrays_to_parameters(_arrays(10.0)))
    params, _ = strategy.aggregate_fit(1, [_fit(_arrays(1.0), 1), _fit(_arrays(3.0), 3)], [])
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], np.full((2, 2), 12.5))
    # The next round builds on the new global model, not on the initial one.
    params, _ = strategy.aggregate_fit(2, [_fit(_arrays(-0.5), 1)], [])
    np.testing.assert_allclose(parameters_to_ndarrays(params)[1], np.full(3, 12.0))


def test_under_secagg_identical_aggregates_are_applied_once():
    # SecAgg+ hands every result the same unmasked mean; the mean of equals is itself.
    strategy = DeltaFedAvg(initial_parameters=ndarrays_to_parameters(_arrays(0.0)))
    params, _ = strategy.aggregate_fit(1, [_fit(_arrays(2.0), 5), _fit(_arrays(2.0), 7)], [])
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], np.full((2, 2), 2.0))


def test_devices_with_zero_weight_do_not_move_the_model():
    strategy = DeltaFedAvg(initial_parameters=ndarrays_to_parameters(_arrays(1.0)))
    params, _ = strategy.aggregate_fit(1, [_fit(_arrays(0.0), 0)], [])
    assert params is None


def test_central_noise_has_the_calibrated_standard_deviation():
    mean = [np.zeros(200_000, dtype=np.float32)]
    noisy = add_central_noise(mean, noise_multiplier=1.0, clipping_norm=2.0, denominator=10)
    assert noisy[0].std() == pytest.approx(0.2, rel=0.02)


def test_central_noise_is_drawn_by_the_function_the_caller_supplies():
    asked = []

    def draw(std, shape):
        asked.append((std, shape))
        return np.ones(shape)

    noisy = add_central_noise(_arrays(0.0), 2.0, 3.0, denominator=4.0, draw_noise=draw)
    assert asked == [(1.5, (2, 2)), (1.5, (3,))]
    np.testing.assert_array_equal(noisy[1], np.ones(3, dtype=np.float32))


def test_a_step_divides_the_sum_by_the_fixed_denominator_and_calibrates_noise_to_it():
    asked = []

    def draw(std, shape):
        asked.append(std)
        return np.zeros(shape)

    strategy = DeltaFedAvg(
        initial_parameters=ndarrays_to_parameters(_arrays(0.0)),
        noise_multiplier=1.2,
        clipping_norm=5.0,
        draw_noise=draw,
    )
    total = [a.astype(np.float64) for a in _arrays(3.0)]  # e.g. three devices sent 1.0
    params = strategy.step(total, denominator=2.5)  # q x N = 0.25 x 10
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], np.full((2, 2), 1.2))
    assert asked == [pytest.approx(1.2 * 5.0 / 2.5)] * 2


def test_server_momentum_carries_the_previous_step_forward():
    strategy = DeltaFedAvg(
        initial_parameters=ndarrays_to_parameters(_arrays(0.0)), server_momentum=0.5
    )
    params, _ = strategy.aggregate_fit(1, [_fit(_arrays(1.0), 1)], [])
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], np.full((2, 2), 1.0))
    # Round 2: velocity = 0.5 * 1.0 + 2.0 = 2.5, added to the model at 1.0.
    params, _ = strategy.aggregate_fit(2, [_fit(_arrays(2.0), 1)], [])
    np.testing.assert_allclose(parameters_to_ndarrays(params)[1], np.full(3, 3.5))


def test_server_momentum_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="momentum"):
        DeltaFedAvg(initial_parameters=ndarrays_to_parameters(_arrays(0.0)), server_momentum=1.0)
