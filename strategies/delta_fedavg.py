"""FedAvg over model deltas: the server applies the weighted mean change.

Clients send ``local - global``, not weights. The mean delta is applied to the
global model the server holds, so the update is correct whether the arrays
arrive one by one or already summed under SecAgg+ (where every result carries
the same unmasked aggregate).
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


def add_central_noise(
    mean: Arrays,
    noise_multiplier: float,
    clipping_norm: float,
    num_clients: int,
    rng: np.random.Generator,
) -> Arrays:
    """Gaussian noise on the mean of ``num_clients`` clipped updates (equal weights).

    One user changes the sum by at most ``clipping_norm``, so the mean by
    ``clipping_norm / num_clients``; the noise is that sensitivity times ``z``.
    """
    std = noise_multiplier * clipping_norm / num_clients
    return [(m + rng.normal(0.0, std, size=m.shape)).astype(np.float32) for m in mean]


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
        noise_source: Callable[[], np.random.Generator] = np.random.default_rng,
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
        # A fresh generator for every round's noise, seeded from the OS (numpy's
        # default_rng() takes 128 bits of OS entropy); never a seed anyone can read.
        self._noise_source = noise_source

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
        """Average the deltas and return the updated global model."""
        if not results:
            return None, {}
        if not self.accept_failures and failures:
            return None, {}
        deltas = [parameters_to_ndarrays(res.parameters) for _, res in results]
        weights = [float(res.num_examples) for _, res in results]
        contributing = sum(1 for w in weights if w > 0)
        if contributing == 0:
            return None, {}
        mean = weighted_mean_delta(deltas, weights)
        if self.noise_multiplier > 0:
            mean = add_central_noise(
                mean, self.noise_multiplier, self.clipping_norm, contributing, self._noise_source()
            )
        self.velocity = momentum_step(self.velocity, mean, self.server_momentum)
        self.global_arrays = apply_delta(self.global_arrays, self.velocity, self.server_lr)
        metrics: dict[str, Scalar] = {}
        if self.fit_metrics_aggregation_fn is not None:
            metrics = self.fit_metrics_aggregation_fn(
                [(res.num_examples, res.metrics) for _, res in results]
            )
        return ndarrays_to_parameters(self.global_arrays), metrics
