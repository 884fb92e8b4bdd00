"""The ServerApp: one aggregation path for simulation and deployment.

Flower 1.41 runs SecAgg+ only through the legacy ``DefaultWorkflow`` with
``SecAggPlusWorkflow`` and a ``flwr.server.strategy`` strategy, so hearth uses
that path everywhere; run config ``secaggplus`` switches the fit workflow to
SecAgg+ (simulation usually runs without it). Under SecAgg+ every result the
strategy sees carries the same unmasked mean (devices send weight 1 and decline
with an error reply); ``CampaignStrategy`` checks that aggregate against the
clipping norm, counts its contributors for the minimum cohort, and
``DeltaFedAvg`` applies it with the central noise. A device lost mid-round is
recovered by the survivors (``server.secagg``); a round where fewer than the
reconstruction threshold survive is halted by the workflow and leaves the model unchanged.
"""

from __future__ import annotations

from logging import INFO, WARNING
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context
from flwr.common import log, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow
from numpy.typing import NDArray

from policy.model import NextActionPolicy, get_arrays
from privacy.distributed_noise import MODULUS_RANGE, QUANTIZATION_RANGE, required_clipping_range
from privacy.policy import PrivacyPolicy, load_policy, policy_hash
from privacy.randomness import gaussian, secret_generator
from privacy.user_level import UserLevelLedger
from server.campaign import CampaignStrategy
from server.config import CampaignConfig
from server.indexed_linkstate import index_simulation_grid
from server.round_timeout import RoundTimeoutGrid
from server.secagg import DropoutTolerantSecAggPlus
from strategies.delta_fedavg import DeltaFedAvg

app = ServerApp()


def draw_central_noise(std: float, shape: tuple[int, ...]) -> NDArray[np.float64]:
    """The central Gaussian, drawn as a device draws its own (``privacy.randomness``).

    A fresh generator from 256 bits of OS entropy for every draw, and each value a
    sum of four float64 draws: nothing in the run config, a checkpoint or a log
    can regenerate it.
    """
    return gaussian(secret_generator(), std, shape)


def build_strategy(config: CampaignConfig, policy: PrivacyPolicy, run_id: int) -> CampaignStrategy:
    """The campaign strategy around delta-aware FedAvg, starting from a seeded model.

    The run config's ``seed`` seeds the initial model and nothing else: the
    central noise and every device's noise come from their own OS randomness.
    """
    training = policy.training
    torch.manual_seed(config.seed)
    model_config = config.model_config()
    arrays = get_arrays(NextActionPolicy(model_config))
    inner = DeltaFedAvg(
        initial_parameters=ndarrays_to_parameters(list(arrays.values())),
        server_lr=config.server_learning_rate,
        server_momentum=config.server_momentum,
        # Under distributed noise the devices' shares are the central noise: the server
        # adds none (it could not protect anyone against itself anyway).
        noise_multiplier=0.0 if training.distributed_noise else training.central_noise_multiplier,
        clipping_norm=training.update_clip_norm,
        draw_noise=draw_central_noise,
        fraction_fit=config.fraction_train,
        fraction_evaluate=config.fraction_evaluate,
        min_fit_clients=training.min_cohort,
        min_evaluate_clients=training.min_cohort,
        min_available_clients=training.min_cohort,
    )
    checkpoint_dir = config.checkpoint_path(run_id)
    ledger = UserLevelLedger(config.user_ledger_path(), policy.privacy.user_horizon_days)
    return CampaignStrategy(
        inner=inner,
        config=config,
        policy=policy,
        checkpoint_dir=checkpoint_dir,
        parameter_names=list(arrays),
        run_id=run_id,
        model_config=model_config.to_dict(),
        user_ledger=ledger if training.central_noise_multiplier > 0 else None,
        prior_rounds=ledger.rounds(exclude_campaign=str(checkpoint_dir)),
    )


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one campaign of ``num-server-rounds`` rounds."""
    if index_simulation_grid(grid):
        # Flower's simulation engine scans every stored message for every node on each
        # pull sweep; indexed, 1,000 devices of 10,000 cost milliseconds, not minutes.
        log(INFO, "hearth: simulation LinkState indexes pending messages by node")
    config = CampaignConfig.from_run_config(context.run_config)
    policy = load_policy(Path(config.policy_file) if config.policy_file else None)
    strategy = build_strategy(config, policy, context.run_id)
    log(INFO, "hearth: checkpoints go to %s", strategy.checkpoint_dir)
    done = strategy.resume() if config.resume else 0
    if done >= config.num_server_rounds:
        log(INFO, "hearth: the campaign already ran its %s rounds", config.num_server_rounds)
        return
    log(INFO, "hearth: privacy policy %s", policy_hash(policy))
    if policy.aggregation.require_secure_aggregation and not config.secaggplus:
        log(WARNING, "hearth: the policy requires SecAgg+: devices refuse every plain round")
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(
            num_rounds=config.num_server_rounds - done, round_timeout=config.round_timeout
        ),
        strategy=strategy,
    )
    fit_workflow = None
    if config.secaggplus:
        fit_workflow = DropoutTolerantSecAggPlus(
            num_shares=config.secaggplus_num_shares,
            reconstruction_threshold=config.secaggplus_reconstruction_threshold,
            max_weight=1.0,  # devices send weight 1 (or 0 when they decline)
            # Clipped updates, with their noise shares under distributed noise, fit the
            # range; 2**20 levels sum over up to 4,096 devices without wrapping 2**32.
            clipping_range=required_clipping_range(policy),
            quantization_range=QUANTIZATION_RANGE,
            modulus_range=MODULUS_RANGE,
            timeout=config.round_timeout,
        )
        log(
            INFO,
            "hearth: SecAgg+ on (%s shares, threshold %s)",
            fit_workflow.num_shares,
            fit_workflow.reconstruction_threshold,
        )
    # Flower's plain fit and evaluate stages would wait for a lost laptop forever.
    DefaultWorkflow(fit_workflow=fit_workflow)(RoundTimeoutGrid(grid, config.round_timeout), legacy)
