"""The ServerApp's settings, read once from Flower's run config and validated."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policy.round_contract import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_HIDDEN_WIDTH,
    DEFAULT_LEARNING_RATE,
    MAX_CONTEXT_LENGTH,
    MAX_HIDDEN_WIDTH,
)
from server.home import server_home

if TYPE_CHECKING:
    from policy.model import ModelConfig


class ServerConfigError(ValueError):
    """A run-config value is missing or wrong; the message names the key."""


@dataclass(frozen=True)
class CampaignConfig:
    """One campaign (a ``flwr run``): rounds and training; privacy comes from the policy."""

    num_server_rounds: int = 10
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    # The round contract's defaults (pyproject.toml's [tool.flwr.app.config] spells the same).
    learning_rate: float = DEFAULT_LEARNING_RATE
    context_length: int = DEFAULT_CONTEXT_LENGTH
    # The model's hidden width (``ModelConfig.hidden``), sent to devices with every round.
    hidden_width: int = DEFAULT_HIDDEN_WIDTH
    server_learning_rate: float = 1.0
    server_momentum: float = 0.7
    seed: int = 7  # the initial model only; never noise or sampling
    checkpoint_dir: str = ""
    sim_root: str = ""
    policy_file: str = ""
    secaggplus: bool = False
    secaggplus_num_shares: int = 3
    secaggplus_reconstruction_threshold: int = 2
    round_timeout: float = 600.0
    resume: bool = False  # continue after the newest checkpoint in checkpoint-dir
    tensorboard: bool = False  # each round's metrics as event files in checkpoint-dir/tensorboard
    # The user-level ledger that outlives campaigns ("": <server home>/user-level-ledger.json).
    user_ledger: str = ""

    def model_config(self) -> ModelConfig:
        """The global model this campaign trains: the shape its round contract names."""
        from policy.model import ModelConfig  # noqa: PLC0415 (torch: only when a model is built)

        return ModelConfig(context_length=self.context_length, hidden=self.hidden_width)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> CampaignConfig:
        """Read kebab-case keys (``num-server-rounds``) with type checks."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            key = field.name.replace("_", "-")
            if key not in run_config:
                continue
            value = run_config[key]
            default = field.default
            if (
                isinstance(default, float)
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                value = float(value)
            if type(value) is not type(default):
                raise ServerConfigError(
                    f"run config {key!r} must be {type(default).__name__}, got {value!r}"
                )
            values[field.name] = value
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Reject settings that cannot work, naming the key."""
        if self.num_server_rounds < 1:
            raise ServerConfigError("run config 'num-server-rounds' must be at least 1")
        if not 0 < self.fraction_train <= 1 or not 0 <= self.fraction_evaluate <= 1:
            raise ServerConfigError("run config 'fraction-train' must be in (0, 1]")
        # What every device would decline in the round contract, refused before round 1.
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ServerConfigError("run config 'learning-rate' must be a positive number")
        if not 1 <= self.context_length <= MAX_CONTEXT_LENGTH:
            raise ServerConfigError(
                f"run config 'context-length' must be in 1..{MAX_CONTEXT_LENGTH}"
            )
        if not 1 <= self.hidden_width <= MAX_HIDDEN_WIDTH:
            raise ServerConfigError(
                f"run config 'hidden-width' must be in 1..{MAX_HIDDEN_WIDTH} (devices refuse "
                f"a wider model), got {self.hidden_width}"
            )
        if not 0 <= self.server_momentum < 1:
            raise ServerConfigError("run config 'server-momentum' must be in [0, 1)")
        if self.secaggplus and not (
            2 <= self.secaggplus_reconstruction_threshold <= self.secaggplus_num_shares
        ):
            raise ServerConfigError(
                "run config 'secaggplus-reconstruction-threshold' must be between 2 and "
                "'secaggplus-num-shares'"
            )
        if self.round_timeout <= 0:
            raise ServerConfigError("run config 'round-timeout' must be positive")

    def user_ledger_path(self) -> Path:
        """Where every campaign's noised rounds are kept, for the policy's horizon."""
        return (
            Path(self.user_ledger) if self.user_ledger else server_home() / "user-level-ledger.json"
        )

    def checkpoint_path(self, run_id: int) -> Path:
        """Where this run's checkpoints go."""
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        return server_home() / "runs" / str(run_id)
