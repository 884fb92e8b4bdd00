"""The default campaign as ``pyproject.toml`` declares it, for simulations and benchmarks.

``flwr run .`` reads ``[tool.flwr.app.config]``; experiments that train outside
Flower (the sweep's planning, the training benchmark) read the same table, so
they measure the round a real campaign runs, not a second set of defaults.
"""

from __future__ import annotations

import tomllib

from client.learning.training import TrainConfig
from privacy.policy import PrivacyPolicy, load_policy
from server.config import CampaignConfig
from simulations.flwr_runner import PROJECT_ROOT


def default_campaign() -> CampaignConfig:
    """The run config ``flwr run .`` uses when nothing is overridden."""
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    return CampaignConfig.from_run_config(pyproject["tool"]["flwr"]["app"]["config"])


def campaign_train_config(private: bool, policy: PrivacyPolicy | None = None) -> TrainConfig:
    """The local round of the default campaign under ``policy`` (default: the shipped one)."""
    from dataclasses import replace  # noqa: PLC0415

    from client.learning.app import train_config  # noqa: PLC0415

    config = train_config(policy or load_policy(), default_campaign().learning_rate)
    return replace(config, private=private)
