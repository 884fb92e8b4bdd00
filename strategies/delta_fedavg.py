"""FedAvg over model deltas: the server applies the weighted mean change.

Clients send ``local - global``, not weights. The mean delta is applied to the
global model the server holds, so the update is correct whether the arrays
arrive one by one or already summed under SecAgg+ (where every result carries
the same unmasked aggregate).

``step`` is the core: it divides a sum of clipped updates by a denominator, adds
Gaussian noise calibrated to that denominator, and applies the result. The
noise comes from a ``draw_noise(std, shape)`` callable the caller supplies
(hearth's ServerApp passes a hardened draw from fresh OS entropy); this module
stays plain numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from flwr.common import (
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg
from numpy.typing import NDArray

Arrays = list[NDArray[np.float32]]
NoiseDraw = Callable[[float, tuple[int, ...]], NDArray[np.float64]]


def numpy_gaussian(std: float, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Plain Gaussian noise from a fresh ``default_rng()`` (128 bits of OS entropy)."""
    return np.random.default_rng().normal(0.0, std, size=shape)


def unweighted_sum(deltas: Sequence[Arrays]) -> list[NDArray[np.float64]]:
    """The sum of per-client deltas, array by array, in float64."""
    if not deltas:
        raise ValueError("need at least one delta")
    return [
        np.sum([d[i].astype(np.float64) for d in deltas], axis=0) for i in range(len(deltas[0]))
    ]


def weighted_mean_delta(deltas: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    """Mean of per-client deltas, weighted (e.g. by example counts)."""
    if not deltas or len(deltas) != len(weights):
        raise ValueError("need one weight per delta and at least one delta")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to a positive number")
    mean: Arrays = []
    for i in range(len(deltas[0])):
        acc = np.zeros(deltas[0][i].shape, dtype=np.float64)
        for delta, weight in zip(deltas, weights, strict=True):
            acc += weight * delta[i].astype(np.float64)
        mean.append((acc / total).astype(np.float32))
    return mean


def apply_delta(weights: Arrays, delta: Arrays, server_lr: float = 1.0) -> Arrays:
    """The new global model: ``weights + server_lr * delta``, shape by shape."""
    if len(weights) != len(delta):
        raise ValueError("delta and model have different numbers of arrays")
    out = []
    for w, d in zip(weights, delta, strict=True):
        if w.shape != d.shape:
            raise ValueError(f"delta shape {d.shape} does not match model shape {w.shape}")
        out.append((w + server_lr * d).astype(w.dtype))
    return out


def momentum_step(velocity: Arrays | None, mean: Arrays, momentum: float) -> Arrays:
    """Server momentum (FedAvgM): ``v = momentum * v + mean``; the step is ``v``.

    Noise in the clients' DP updates is independent from round to round while
    the useful direction persists, so the running sum keeps more signal. It
    only post-processes the (noised) mean, so it costs no privacy.
    """
    if velocity is None or momentum == 0.0:
        return [m.copy() for m in mean]
    return [(momentum * v + m).astype(np.float32) for v, m in zip(velocity, mean, strict=True)]


def central_noise_std(noise_multiplier: float, clipping_norm: float, denominator: float) -> float:
    """The noise on ``sum / denominator`` of clipped updates: ``z * clip / denominator``.

    Adding or removing one user changes the sum by at most ``clipping_norm``, so
    the quotient by at most ``clipping_norm / denominator``.
    """
    if denominator <= 0:
        raise ValueError("the denominator must be positive")
    return noise_multiplier * clipping_norm / denominator


def add_central_noise(
    mean: Sequence[NDArray[np.floating[Any]]],
    noise_multiplier: float,
    clipping_norm: float,
    denominator: float,
    draw_noise: NoiseDraw = numpy_gaussian,
) -> Arrays:
    """Gaussian noise on ``sum / denominator`` of clipped updates, rounded to float32 last."""
    std = central_noise_std(noise_multiplier, clipping_norm, denominator)
    return [(m.astype(np.float64) + draw_noise(std, m.shape)).astype(np.float32) for m in mean]


class DeltaFedAvg(FedAvg):
    """Flower's FedAvg, with ``aggregate_fit`` applying the mean delta to the global model."""

    def __init__(
        self,
        *,
        initial_parameters: Parameters,
        server_lr: float = 1.0,
        server_momentum: float = 0.0,
        noise_multiplier: float = 0.0,
        clipping_norm: float = 0.0,
        draw_noise: NoiseDraw = numpy_gaussian,
        **kwargs: Any,
    ):
        super().__init__(initial_parameters=initial_parameters, **kwargs)
        if noise_multiplier > 0 and clipping_norm <= 0:
            raise ValueError("central noise needs the clients' update clipping norm")
        self.global_arrays: Arrays = parameters_to_ndarrays(initial_parameters)
        if not 0.0 <= server_momentum < 1.0:
            raise ValueError("server momentum must be in [0, 1)")
        self.server_lr = server_lr
        self.server_momentum = server_momentum
        self.velocity: Arrays | None = None
        self.noise_multiplier = noise_multiplier
        self.clipping_norm = clipping_norm
        # Fresh OS entropy for every draw; never a seed anyone can read.
        self.draw_noise = draw_noise

    def resume(self, global_arrays: Arrays, velocity: Arrays | None, after_round: int) -> None:
        """Continue a campaign after ``after_round`` with its model and server momentum.

        Every round's central noise is drawn from fresh OS entropy, so a restart
        cannot replay earlier rounds' noise.
        """
        self.global_arrays = [np.asarray(a, dtype=np.float32) for a in global_arrays]
        self.velocity = velocity

    def initialize_parameters(self, client_manager: object) -> Parameters | None:
        """Hand the server's initial model to the workflow (no client is asked for it)."""
        return ndarrays_to_parameters(self.global_arrays)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Average the deltas (weighted by ``num_examples``) and return the updated model."""
        if not results:
            return None, {}
        if not self.accept_failures and failures:
            return None, {}
        kept = [(d, r) for d, r in results if r.num_examples > 0]
        if not kept:
            return None, {}
        deltas = [parameters_to_ndarrays(res.parameters) for _, res in kept]
        weights = [float(res.num_examples) for _, res in kept]
        # The weighted mean times the number of clients, as a sum over equal weights.
        mean = weighted_mean_delta(deltas, weights)
        total = [m.astype(np.float64) * len(kept) for m in mean]
        parameters = self.step(total, float(len(kept)))
        metrics: dict[str, Scalar] = {}
        if self.fit_metrics_aggregation_fn is not None:
            metrics = self.fit_metrics_aggregation_fn(
                [(res.num_examples, res.metrics) for _, res in results]
            )
        return parameters, metrics

    def step(self, total: Sequence[NDArray[np.float64]], denominator: float) -> Parameters:
        """Apply ``total / denominator`` plus central noise; returns the new global model.

        ``total`` is the sum of the clients' clipped updates, array by array;
        ``denominator`` what it is divided by (the number of contributors, or a
        fixed expected cohort size), and what the noise is calibrated to.
        """
        if denominator <= 0:
            raise ValueError("the denominator must be positive")
        exact = [np.asarray(t, dtype=np.float64) / denominator for t in total]
        if self.noise_multiplier > 0:
            mean = add_central_noise(
                exact, self.noise_multiplier, self.clipping_norm, denominator, self.draw_noise
            )
        else:
            mean = [m.astype(np.float32) for m in exact]
        self.velocity = momentum_step(self.velocity, mean, self.server_momentum)
        self.global_arrays = apply_delta(self.global_arrays, self.velocity, self.server_lr)
        return ndarrays_to_parameters(self.global_arrays)
