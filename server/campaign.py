"""A campaign around the aggregation strategy: cohort rule, instructions, checkpoints.

Composition, as Flower's DP wrappers do it: ``CampaignStrategy`` wraps the
delta-aware FedAvg and adds what the ML and privacy teams need around it, without
touching the aggregation math.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    log,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from server.checkpoints import save_checkpoint
from server.config import CampaignConfig
from server.report import aggregate_evaluate_metrics, round_table
from strategies.delta_fedavg import DeltaFedAvg


def round_instructions(config: CampaignConfig, server_round: int) -> dict[str, Scalar]:
    """What every client is told for a round (validated again where it lands)."""
    return {
        "round": server_round,
        "epochs": config.local_epochs,
        "batch-size": config.batch_size,
        "max-steps": config.max_steps,
        "learning-rate": config.learning_rate,
        "noise-multiplier": config.noise_multiplier,
        "max-grad-norm": config.max_grad_norm,
        "delta": config.delta,
        "epsilon-cap": config.epsilon_cap,
        "update-clip-norm": config.update_clip_norm,
        "uniform-weights": config.central_noise_multiplier > 0,
        "context-length": config.context_length,
        "seed": config.seed,
        "private": config.noise_multiplier > 0,
    }


@dataclass
class CampaignStrategy(Strategy):
    """Enforces the minimum cohort, sends instructions, saves a checkpoint per round."""

    inner: DeltaFedAvg
    config: CampaignConfig
    checkpoint_dir: Path
    parameter_names: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    _fit: dict[int, dict[str, Any]] = field(default_factory=dict)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The server's own initial model."""
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Sample the cohort and attach this round's instructions."""
        pairs = self.inner.configure_fit(server_round, parameters, client_manager)
        extra = round_instructions(self.config, server_round)
        return [(proxy, FitIns(ins.parameters, {**ins.config, **extra})) for proxy, ins in pairs]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Aggregate only when enough devices actually trained this round."""
        contributing = [r for r in results if r[1].num_examples > 0]
        metrics = (
            self.inner.fit_metrics_aggregation_fn(
                [(res.num_examples, res.metrics) for _, res in results]
            )
            if self.inner.fit_metrics_aggregation_fn
            else {}
        )
        metrics = {**metrics, "failures": len(failures)}
        self._fit[server_round] = dict(metrics)
        if len(contributing) < self.config.min_cohort:
            log(
                WARNING,
                "round %s: %s devices contributed, fewer than the minimum cohort of %s; "
                "the global model is unchanged",
                server_round,
                len(contributing),
                self.config.min_cohort,
            )
            self._fit[server_round]["skipped"] = 1
            return None, metrics
        parameters, _ = self.inner.aggregate_fit(server_round, contributing, failures)
        return parameters, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Federated evaluation on each device's held-out data."""
        pairs = self.inner.configure_evaluate(server_round, parameters, client_manager)
        extra = round_instructions(self.config, server_round)
        return [
            (proxy, EvaluateIns(ins.parameters, {**ins.config, **extra})) for proxy, ins in pairs
        ]

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Aggregate accuracies, then checkpoint the round and print the table."""
        loss, _ = self.inner.aggregate_evaluate(server_round, results, failures)
        metrics = aggregate_evaluate_metrics([(r.num_examples, r.metrics) for _, r in results])
        row = {
            "round": server_round,
            "fit": self._fit.get(server_round, {}),
            "evaluate": {**metrics, "loss": loss},
            "epsilon_local_max": self._fit.get(server_round, {}).get("epsilon_max"),
            "epsilon_unit": "one example on one device",
            "delta": self.config.delta,
            "cohort_size": self._fit.get(server_round, {}).get("clients_trained", 0),
            "epsilon_user": None,
            "config": {k: v for k, v in vars(self.config).items()},
        }
        self.rows.append(row)
        save_checkpoint(
            self.checkpoint_dir,
            server_round,
            self.parameter_names,
            self.inner.global_arrays,
            row,
        )
        log(INFO, "\n%s", round_table(self.rows))
        return loss, metrics

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """No central evaluation: the server holds no one's data."""
        return None
