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
offset, so devices, checkpoints and the ledger see campaign rounds. A
checkpoint-dir whose campaign ledger is gone is refused: the user-level spend
could not be restored.

The strategy runs the mechanism its accountant models. Each available node joins
a round independently with probability ``q`` (the run config's fraction), drawn
from the OS's CSPRNG (Poisson sampling). Every train reply is checked against
the reply contract (``strategies.reply_contract``) and dropped when it breaks
it. Under central noise the clipped updates are summed and divided by the fixed
``q x N`` (N: nodes available when sampling), with noise of std
``z x clip / (q x N)``: exactly the Poisson-sampled Gaussian mechanism, one user
added or removed, that ``privacy.accountants.epsilon_user`` composes.

Two user-level figures are written (``privacy.user_level``): ``epsilon_user``
faces readers of the model and checkpoints (amplified by the sampling they do not
see), and ``epsilon_user_vs_server`` faces the server itself, which picks the
cohort and sees who replies: no amplification, for a user who joined every round.
The server can claim the latter only when it never held a sum without the noise,
that is with distributed noise (``privacy.distributed_noise``) under SecAgg+;
otherwise it is null. Both compose every noised round of every campaign within
the policy's horizon (``UserLevelLedger``), and the campaign stops before a round
that would take ``epsilon_user`` past the policy's target.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, Final

import numpy as np
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    log,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from policy.model_version import model_version
from policy.replies import TRAIN_WEIGHT
from policy.round_contract import RoundContract
from privacy.distributed_noise import noised_norm_bound
from privacy.policy import PrivacyPolicy, policy_hash
from privacy.user_level import NoisedRound, UserLevelLedger, epsilon_readers, epsilon_server
from server.checkpoints import (
    append_round_outcome,
    latest_checkpoint,
    load_checkpoint,
    read_sidecars,
    save_arrays,
    save_checkpoint,
)
from server.config import CampaignConfig, ServerConfigError
from server.model_tracking import TENSORBOARD_DIR, RoundTracker
from server.report import (
    aggregate_evaluate_metrics,
    refusal_counts,
    round_outcome,
    round_table,
)
from strategies.delta_fedavg import DeltaFedAvg, unweighted_sum
from strategies.reply_contract import broken_rule

CAMPAIGN_LEDGER_FILE = "campaign-ledger.json"
MOMENTUM_SUFFIX = ".momentum.npz"
ADJACENCY_USER: Final = "add/remove one user"
# Under SecAgg+ each coordinate is quantized (2**22 levels over the clipping range),
# so an honest aggregate may exceed the bound by that rounding: a looser slack.
SECAGG_NORM_TOLERANCE: Final = 1e-3
VS_SERVER_NOTE: Final = (
    "epsilon_user faces readers of the model and checkpoints: it counts on the Poisson "
    "sampling of cohorts, which they do not see. epsilon_user_vs_server faces the server, "
    "which picks the cohort and sees who replies: no amplification, for a user who joined "
    "every round. It is null unless the devices added the noise in shares under SecAgg+; "
    "then nothing else protects a user against the server beyond each device's "
    "example-level guarantee (epsilon_example_cap, one example on one device)."
)


def poisson_cohort(nodes: Sequence[ClientProxy], rate: float) -> list[ClientProxy]:
    """Each node joins independently with probability ``rate``, drawn from the OS's CSPRNG.

    ``rate >= 1`` takes every node. Never a seeded generator: whoever knew the seed
    would know the cohort, and sampling amplifies privacy only while it is secret.
    """
    if rate >= 1:
        return list(nodes)
    rng = secrets.SystemRandom()
    return [node for node in nodes if rng.random() < rate]


def round_instructions(
    config: CampaignConfig, policy: PrivacyPolicy, server_round: int
) -> dict[str, Scalar]:
    """What every client is told for a round: the round contract (``policy.round_contract``)."""
    return RoundContract(
        server_round=server_round,
        total_rounds=config.num_server_rounds,
        policy_hash=policy_hash(policy),
        learning_rate=config.learning_rate,
        context_length=config.context_length,
        hidden_width=config.hidden_width,
    ).to_config()


@dataclass
class CampaignStrategy(Strategy):
    """Enforces the minimum cohort, sends instructions, saves a checkpoint per round."""

    inner: DeltaFedAvg
    config: CampaignConfig
    policy: PrivacyPolicy
    checkpoint_dir: Path
    parameter_names: list[str]
    # The model's configuration with its vocabulary (``ModelConfig.to_dict``), in every sidecar.
    model_config: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    _fit: dict[int, dict[str, Any]] = field(default_factory=dict)
    user_rounds: list[float] = field(default_factory=list)  # sampling rate of each noised round
    stopped: bool = False
    start_round: int = 0  # rounds already done before this run (resumed campaign)
    # Fixed denominator (q x N) of each noised round, by campaign round.
    _denominators: dict[int, float] = field(default_factory=dict)
    run_id: int = 0  # recorded with each round's outcome (a checkpoint-dir may hold several runs)
    _sampled: dict[int, int] = field(default_factory=dict)  # devices asked to train, by round
    _tracker: RoundTracker | None = None
    # Noised rounds of other campaigns within the policy's horizon, and where this
    # campaign's rounds are added for the next ones (None: this campaign only).
    user_ledger: UserLevelLedger | None = None
    prior_rounds: list[NoisedRound] = field(default_factory=list)

    @property
    def central_noise(self) -> float:
        """The policy's central noise multiplier (0: no user-level claim)."""
        return self.policy.training.central_noise_multiplier

    def _noised(self, sampling_rates: list[float]) -> list[NoisedRound]:
        z = self.central_noise
        return [*self.prior_rounds, *(NoisedRound(z, q) for q in sampling_rates)]

    def user_epsilon(self, sampling_rates: list[float]) -> float | None:
        """User-level epsilon facing model readers, within the horizon, after these rounds."""
        if self.central_noise <= 0:
            return None
        return epsilon_readers(self._noised(sampling_rates), self.policy.privacy.delta_user)

    def user_epsilon_vs_server(self, sampling_rates: list[float]) -> float | None:
        """User-level epsilon facing the server (None unless it never saw an unnoised sum)."""
        if not (self.config.secaggplus and self.policy.training.distributed_noise):
            return None
        if self.central_noise <= 0:
            return None
        return epsilon_server(self._noised(sampling_rates), self.policy.privacy.delta_user)

    def resume(self) -> int:
        """Continue after the newest checkpoint in ``checkpoint_dir``; returns its round (0: new).

        Raises ``ServerConfigError`` when the directory holds a campaign under
        another privacy policy or model, or one whose campaign ledger is missing
        or unreadable: its audit trail is never overwritten, and the user-level
        spend is never restarted at 0.
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
        ledger = self._read_campaign_ledger()
        done = int(sidecar["round"])
        momentum = latest.with_name(latest.name.replace(".npz", MOMENTUM_SUFFIX))
        velocity = list(load_checkpoint(momentum).values()) if momentum.is_file() else None
        self.inner.resume(list(arrays.values()), velocity, done)
        self.user_rounds = [float(r["sampling_rate"]) for r in ledger["noised_rounds"]]
        self.stopped = bool(ledger.get("stopped_at_target", False))
        self.rows = [row for row in read_sidecars(self.checkpoint_dir) if row["round"] <= done]
        self.start_round = done
        log(INFO, "hearth: campaign resumes after round %s from %s", done, latest)
        return done

    def _read_campaign_ledger(self) -> dict[str, Any]:
        """The campaign ledger beside the checkpoints; refuses to go on without it."""
        path = self.checkpoint_dir / CAMPAIGN_LEDGER_FILE
        try:
            ledger = json.loads(path.read_text())
            if not isinstance(ledger, dict):
                raise TypeError("not an object")
            [float(r["sampling_rate"]) for r in ledger["noised_rounds"]]
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ServerConfigError(
                f"checkpoint-dir {self.checkpoint_dir} has checkpoints but no readable "
                f"{CAMPAIGN_LEDGER_FILE}: the user-level privacy spent cannot be restored; "
                "restore that file or start a new checkpoint-dir"
            ) from err
        return ledger

    def sample(self, client_manager: ClientManager, rate: float) -> tuple[list[ClientProxy], int]:
        """A Poisson cohort at ``rate`` and N, the number of nodes it was drawn from."""
        if rate <= 0:
            return [], client_manager.num_available()
        client_manager.wait_for(self.inner.min_available_clients, 86400)
        nodes = list(client_manager.all().values())
        return poisson_cohort(nodes, rate), len(nodes)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """The server's own initial model."""
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Sample a Poisson cohort and send it this round's instructions (none once ended)."""
        server_round += self.start_round
        rate = self.config.fraction_train
        target = self.policy.privacy.user_epsilon_target
        next_eps = self.user_epsilon([*self.user_rounds, rate])
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
        cohort, population = self.sample(client_manager, rate)
        self._sampled[server_round] = len(cohort)
        if self.central_noise > 0:
            # The round is charged once sampled, whether or not enough devices reply.
            self.user_rounds.append(rate)
            self._denominators[server_round] = rate * population
            if self.user_ledger is not None:
                self.user_ledger.record(
                    NoisedRound(self.central_noise, rate, time.time(), str(self.checkpoint_dir))
                )
        extra = round_instructions(self.config, self.policy, server_round)
        return [(proxy, FitIns(parameters, dict(extra))) for proxy in cohort]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Check every reply against the contract, then aggregate if the cohort is big enough."""
        server_round += self.start_round
        if self.config.secaggplus:
            total, contributors, rejected = self._secagg_sum(server_round, results)
        else:
            total, contributors, rejected = self._checked_sum(server_round, results)
        sampled = self._sampled.get(server_round, len(results) + len(failures))
        metrics: dict[str, Scalar] = {
            "clients": sampled,
            "clients_trained": contributors,
            "clients_rejected": rejected,
            **refusal_counts(failures),
            "clients_no_reply": max(sampled - len(results) - len(failures), 0),
        }
        self._fit[server_round] = dict(metrics)
        min_cohort = self.policy.training.min_cohort
        aggregated = total is not None and contributors >= min_cohort
        append_round_outcome(
            self.checkpoint_dir,
            {
                "run_id": self.run_id,
                "round": server_round,
                "aggregated": aggregated,
                "min_cohort": min_cohort,
                **metrics,
            },
        )
        log(
            INFO if aggregated else WARNING,
            "hearth: %s",
            round_outcome(server_round, metrics, min_cohort, aggregated),
        )
        if total is None or not aggregated:
            self._fit[server_round]["skipped"] = 1
            if self.central_noise > 0:
                self._write_campaign_ledger()  # the sampled round was charged all the same
            return None, metrics
        denominator = float(contributors)
        if self.central_noise > 0:
            denominator = self._denominators.get(server_round, denominator)
        return self.inner.step(total, denominator), metrics

    def _shapes(self) -> list[tuple[int, ...]]:
        return [tuple(a.shape) for a in self.inner.global_arrays]

    def _checked_sum(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> tuple[list[np.ndarray[Any, Any]] | None, int, int]:
        """The sum of the replies that keep the contract, their number, the number dropped."""
        shapes = self._shapes()
        clip = noised_norm_bound(self.policy, sum(math.prod(s) for s in shapes), 1)
        kept = []
        for _, res in results:
            arrays = parameters_to_ndarrays(res.parameters)
            rule = broken_rule(res.num_examples, arrays, shapes, clip, TRAIN_WEIGHT)
            if rule is None:
                kept.append(arrays)
            else:
                log(
                    WARNING,
                    "round %s: a reply was dropped: it breaks the %s rule",
                    server_round,
                    rule,
                )
        total = unweighted_sum(kept) if kept else None
        return total, len(kept), len(results) - len(kept)

    def _secagg_sum(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]]
    ) -> tuple[list[np.ndarray[Any, Any]] | None, int, int]:
        """The unmasked sum under SecAgg+, when it is finite and within ``clip x contributors``.

        ``SecAggPlusWorkflow`` hands every result the same unmasked aggregate: the
        weighted mean of the summed vectors (weights are the devices' plaintext
        ``num_examples``). No single reply can be taken out of it, so a round whose
        aggregate breaks the contract is skipped as a whole.
        """
        if not results:
            return None, 0, 0
        contributors = len(results)
        dimension = sum(math.prod(s) for s in self._shapes())
        bound = noised_norm_bound(self.policy, dimension, contributors)
        mean = parameters_to_ndarrays(results[0][1].parameters)
        total = [m.astype(np.float64) * contributors for m in mean]
        weights_kept = all(res.num_examples == TRAIN_WEIGHT for _, res in results)
        rule = "weight" if not weights_kept else None
        rule = rule or broken_rule(
            TRAIN_WEIGHT,
            total,
            self._shapes(),
            bound,
            TRAIN_WEIGHT,
            SECAGG_NORM_TOLERANCE,
        )
        if rule is not None:
            log(
                WARNING,
                "round %s: the secure aggregate was dropped: it breaks the %s rule",
                server_round,
                rule,
            )
            return None, 0, contributors
        return total, contributors, 0

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Federated evaluation on a Poisson cohort, for rounds that changed the model.

        A round that aggregated nothing is not evaluated: the model is the one
        already measured, and each evaluation costs the devices privacy.
        """
        server_round += self.start_round
        if self._fit.get(server_round, {}).get("skipped"):
            return []
        cohort, _ = self.sample(client_manager, self.config.fraction_evaluate)
        extra = round_instructions(self.config, self.policy, server_round)
        return [(proxy, EvaluateIns(parameters, dict(extra))) for proxy in cohort]

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
            "epsilon_user_vs_server": self.user_epsilon_vs_server(self.user_rounds),
            "epsilon_user_unit": self._user_unit(),
            "delta_user": self.policy.privacy.delta_user,
            "adjacency": ADJACENCY_USER,
            "policy_hash": policy_hash(self.policy),
            "model_version": model_version(self.inner.global_arrays),
            "config": {k: v for k, v in vars(self.config).items()},
            "model": self.model_config,
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
        if self.config.tensorboard:
            if self._tracker is None:
                self._tracker = RoundTracker(self.checkpoint_dir / TENSORBOARD_DIR)
            self._tracker.write(row)
        log(INFO, "\n%s", round_table(self.rows))
        return loss, metrics

    def _user_unit(self) -> str:
        days = self.policy.privacy.user_horizon_days
        return f"one user, every campaign within {days:g} days"

    def _write_campaign_ledger(self) -> None:
        """The campaign's user-level spend so far, beside the checkpoints (not secret)."""
        ledger = {
            "policy_hash": policy_hash(self.policy),
            "central_noise_multiplier": self.central_noise,
            "delta": self.policy.privacy.delta,
            "user_epsilon_target": self.policy.privacy.user_epsilon_target,
            "unit": "one user across the campaign",
            "adjacency": ADJACENCY_USER,
            "sampling": "Poisson: each available node joins a round with probability q",
            "noised_rounds": [
                {
                    "sampling_rate": q,
                    "epsilon_user_after": self.user_epsilon(self.user_rounds[: i + 1]),
                }
                for i, q in enumerate(self.user_rounds)
            ],
            "epsilon_user": self.user_epsilon(self.user_rounds),
            "epsilon_user_vs_server": self.user_epsilon_vs_server(self.user_rounds),
            "delta_user": self.policy.privacy.delta_user,
            "earlier_rounds_within_horizon": len(self.prior_rounds),
            "notes": VS_SERVER_NOTE,
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
