"""A campaign around the aggregation strategy: cohort rule, instructions, checkpoints.

Composition, as Flower's DP wrappers do it: ``CampaignStrategy`` wraps the
delta-aware FedAvg and adds what the ML and privacy teams need around it, without
touching the aggregation math.

A campaign survives a SuperLink restart: run it again with the same
``checkpoint-dir`` and run config ``resume = true``, and ``resume`` picks up
after the newest checkpoint there (model, server momentum, the user-level
privacy spent so far, the round number), provided it was made under the same
privacy policy and model shape.
Flower's workflow then counts its rounds from 1 again; the strategy adds the
offset, so devices, checkpoints and the ledger see campaign rounds.
"""

from __future__ import annotations

import json
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

from policy.model_version import model_version
from privacy.accountants import epsilon_user
from privacy.policy import PrivacyPolicy, policy_hash
from server.checkpoints import (
    latest_checkpoint,
    load_checkpoint,
    read_sidecars,
    save_arrays,
    save_checkpoint,
)
from server.config import CampaignConfig, ServerConfigError
from server.report import aggregate_evaluate_metrics, refusal_counts, round_table
from strategies.delta_fedavg import DeltaFedAvg

CAMPAIGN_LEDGER_FILE = "campaign-ledger.json"
MOMENTUM_SUFFIX = ".momentum.npz"


def round_instructions(
    config: CampaignConfig, policy: PrivacyPolicy, server_round: int
) -> dict[str, Scalar]:
    """What every client is told for a round (validated again where it lands).

    Nothing here bears on privacy: noise, clipping, sample rate, steps and caps are
    each device's own policy, and the policy hash lets a device refuse a round run
    under any other. No seed is sent: a device's randomness is its own.
    """
    return {
        "round": server_round,
        "num-rounds": config.num_server_rounds,
        "policy-hash": policy_hash(policy),
        "learning-rate": config.learning_rate,
        "context-length": config.context_length,
    }


@dataclass
class CampaignStrategy(Strategy):
    """Enforces the minimum cohort, sends instructions, saves a checkpoint per round."""

    inner: DeltaFedAvg
    config: CampaignConfig
    policy: PrivacyPolicy
    checkpoint_dir: Path
    parameter_names: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    _fit: dict[int, dict[str, Any]] = field(default_factory=dict)
    user_rounds: list[float] = field(default_factory=list)  # sampling rate of each noised round
    stopped: bool = False
    start_round: int = 0  # rounds already done before this run (resumed campaign)

    @property
    def central_noise(self) -> float:
        """The policy's central noise multiplier (0: no user-level claim)."""
        return self.policy.training.central_noise_multiplier

    def user_epsilon(self, sampling_rates: list[float]) -> float | None:
        """User-level epsilon after rounds with these cohort sampling rates (RDP)."""
        if self.central_noise <= 0:
            return None
        if not sampling_rates:
            return 0.0
        # Composition with the largest rate bounds rounds with smaller ones.
        return epsilon_user(
            self.central_noise, max(sampling_rates), len(sampling_rates), self.policy.privacy.delta
        )

    def resume(self) -> int:
        """Continue after the newest checkpoint in ``checkpoint_dir``; returns its round (0: new).

        Raises ``ServerConfigError`` when the directory holds a campaign under
        another privacy policy or model: its audit trail is never overwritten.
        """
        latest = latest_checkpoint(self.checkpoint_dir)
        if latest is None:
            return 0
        sidecar = json.loads(latest.with_suffix(".json").read_text())
        if sidecar.get("policy_hash") != policy_hash(self.policy):
            raise ServerConfigError(
                f"checkpoint-dir {self.checkpoint_dir} holds a campaign under another privacy "
                "policy; resume it with that policy or choose another checkpoint-dir"
            )
        arrays = load_checkpoint(latest)
        shapes = [a.shape for a in self.inner.global_arrays]
        if list(arrays) != self.parameter_names or [a.shape for a in arrays.values()] != shapes:
            raise ServerConfigError(
                f"checkpoint-dir {self.checkpoint_dir} holds another model; "
                "choose another checkpoint-dir"
            )
        done = int(sidecar["round"])
        momentum = latest.with_name(latest.name.replace(".npz", MOMENTUM_SUFFIX))
        velocity = list(load_checkpoint(momentum).values()) if momentum.is_file() else None
        self.inner.resume(list(arrays.values()), velocity, done)
        ledger_path = self.checkpoint_dir / CAMPAIGN_LEDGER_FILE
        if ledger_path.is_file():
            ledger = json.loads(ledger_path.read_text())
            self.user_rounds = [float(r["sampling_rate"]) for r in ledger["noised_rounds"]]
            self.stopped = bool(ledger.get("stopped_at_target", False))
        self.rows = [row for row in read_sidecars(self.checkpoint_dir) if row["round"] <= done]
        self.start_round = done
        log(INFO, "hearth: campaign resumes after round %s from %s", done, latest)
        return done

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The server's own initial model."""
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Sample the cohort and attach this round's instructions, unless the campaign is over."""
        server_round += self.start_round
        pairs = self.inner.configure_fit(server_round, parameters, client_manager)
        target = self.policy.privacy.user_epsilon_target
        population = max(1, client_manager.num_available())
        next_eps = self.user_epsilon([*self.user_rounds, len(pairs) / population])
        if self.stopped or (next_eps is not None and next_eps > target):
            if not self.stopped:
                log(
                    WARNING,
                    "campaign ended before round %s: it would bring user-level epsilon to "
                    "%.3f, over the policy's target %s (delta %s, unit: one user)",
                    server_round,
                    next_eps,
                    target,
                    self.policy.privacy.delta,
                )
            self.stopped = True
            return []
        if self.central_noise > 0:
            self.user_rounds.append(len(pairs) / population)
        extra = round_instructions(self.config, self.policy, server_round)
        return [(proxy, FitIns(ins.parameters, {**ins.config, **extra})) for proxy, ins in pairs]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Aggregate only when enough devices actually trained this round."""
        server_round += self.start_round
        contributing = [r for r in results if r[1].num_examples > 0]
        metrics: dict[str, Scalar] = {
            "clients": len(results) + len(failures),
            "clients_trained": len(contributing),
            **refusal_counts(failures),
        }
        self._fit[server_round] = dict(metrics)
        min_cohort = self.policy.training.min_cohort
        if len(contributing) < min_cohort:
            log(
                WARNING,
                "round %s: %s devices contributed, fewer than the minimum cohort of %s; "
                "the global model is unchanged",
                server_round,
                len(contributing),
                min_cohort,
            )
            self._fit[server_round]["skipped"] = 1
            return None, metrics
        parameters, _ = self.inner.aggregate_fit(server_round, contributing, failures)
        return parameters, metrics

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Federated evaluation on each device's held-out data."""
        server_round += self.start_round
        pairs = self.inner.configure_evaluate(server_round, parameters, client_manager)
        extra = round_instructions(self.config, self.policy, server_round)
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
        server_round += self.start_round
        metrics = aggregate_evaluate_metrics([(r.num_examples, r.metrics) for _, r in results])
        loss = float(metrics["loss"]) if "loss" in metrics else None
        row = {
            "round": server_round,
            "fit": self._fit.get(server_round, {}),
            "evaluate": {**metrics, **refusal_counts(failures)},
            # Devices report no spend: each enforces this cap on its own ledger.
            "epsilon_example_cap": self.policy.privacy.device_epsilon_cap,
            "epsilon_unit": "one example on one device",
            "delta": self.policy.privacy.delta,
            "cohort_size": self._fit.get(server_round, {}).get("clients_trained", 0),
            "epsilon_user": self.user_epsilon(self.user_rounds),
            "epsilon_user_unit": "one user across the campaign",
            "policy_hash": policy_hash(self.policy),
            "model_version": model_version(self.inner.global_arrays),
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
        if self.inner.velocity is not None:
            momentum = self.checkpoint_dir / f"round-{server_round:04d}{MOMENTUM_SUFFIX}"
            save_arrays(momentum, self.parameter_names, self.inner.velocity)
        self._write_campaign_ledger()
        log(INFO, "\n%s", round_table(self.rows))
        return loss, metrics

    def _write_campaign_ledger(self) -> None:
        """The campaign's user-level spend so far, beside the checkpoints (not secret)."""
        ledger = {
            "policy_hash": policy_hash(self.policy),
            "central_noise_multiplier": self.central_noise,
            "delta": self.policy.privacy.delta,
            "user_epsilon_target": self.policy.privacy.user_epsilon_target,
            "unit": "one user across the campaign",
            "noised_rounds": [
                {
                    "sampling_rate": q,
                    "epsilon_user_after": self.user_epsilon(self.user_rounds[: i + 1]),
                }
                for i, q in enumerate(self.user_rounds)
            ],
            "epsilon_user": self.user_epsilon(self.user_rounds),
            "stopped_at_target": self.stopped,
        }
        path = self.checkpoint_dir / CAMPAIGN_LEDGER_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(ledger, indent=2) + "\n")
        tmp.replace(path)

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """No central evaluation: the server holds no one's data."""
        return None
