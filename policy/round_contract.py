"""The round contract: what a server tells every device about a round, spelt once.

The server builds it from its campaign (``server.campaign``) and sends it as the
config of every train and evaluate message (``to_config``); a device parses it
back (``from_config``) before anything else and declines a round whose contract
is missing a key or ill-typed. Nothing in it bears on privacy: noise, clipping,
sample rate, steps and caps are each device's own policy, and ``policy_hash``
lets a device refuse a round run under any other. No seed is sent: a device's
randomness is its own. Keys a device does not know are ignored.

The defaults here are the campaign's: ``server.config.CampaignConfig`` reads them,
and ``pyproject.toml``'s ``[tool.flwr.app.config]`` (what ``flwr run`` and the
demo use) spells the same values, kept in step by a test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

# What the server's campaign sends unless its run config says otherwise.
DEFAULT_LEARNING_RATE: Final = 4.0
DEFAULT_CONTEXT_LENGTH: Final = 8  # actions the model reads; privacy.accountants' K too
MAX_CONTEXT_LENGTH: Final = 64
# The model's hidden width: 32 for the company campaign under user-level DP (a smaller
# model loses less top-1 to the central noise: bench/user-sweep/levers2.md rows 10, 12,
# 16). A device builds nothing wider than MAX_HIDDEN_WIDTH, the widest model hearth
# ships (the demo's), so no server can make its uploads larger than that model's: at most
# 343 KiB with MAX_CONTEXT_LENGTH, as before the width was the run's. A wider model
# reaches laptops as a hearth release that raises this bound, not in a run config.
DEFAULT_HIDDEN_WIDTH: Final = 32
MAX_HIDDEN_WIDTH: Final = 64

ConfigValue = int | float | str | bytes | bool
T = TypeVar("T", int, float, str)


class RoundContractError(ValueError):
    """The round's instructions are missing a key or hold a bad value; one line names the key."""


@dataclass(frozen=True)
class RoundContract:
    """Which round of how many, the policy it runs under, a learning rate and the model's shape."""

    server_round: int
    total_rounds: int
    policy_hash: str
    learning_rate: float = DEFAULT_LEARNING_RATE
    context_length: int = DEFAULT_CONTEXT_LENGTH
    hidden_width: int = DEFAULT_HIDDEN_WIDTH

    def __post_init__(self) -> None:
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise RoundContractError("round config 'learning-rate' must be a positive number")
        if not 1 <= self.context_length <= MAX_CONTEXT_LENGTH:
            raise RoundContractError(
                f"round config 'context-length' must be in 1..{MAX_CONTEXT_LENGTH}"
            )
        if not 1 <= self.hidden_width <= MAX_HIDDEN_WIDTH:
            raise RoundContractError(
                f"round config 'hidden-width' must be in 1..{MAX_HIDDEN_WIDTH}"
            )
        if self.server_round < 0 or self.total_rounds < self.server_round:
            raise RoundContractError("round config 'round' and 'num-rounds' are inconsistent")

    def to_config(self) -> dict[str, ConfigValue]:
        """The message config a server sends (Flower's kebab-case keys)."""
        return {
            "round": self.server_round,
            "num-rounds": self.total_rounds,
            "policy-hash": self.policy_hash,
            "learning-rate": self.learning_rate,
            "context-length": self.context_length,
            "hidden-width": self.hidden_width,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, ConfigValue]) -> RoundContract:
        """Parse a message's config; ``round`` is required.

        A missing ``policy-hash`` reads as "" (no policy has it), so a device refuses
        the round as a policy mismatch and records it, as for any other policy.
        ``num-rounds`` defaults to ``round``, the learning rate, context length and
        hidden width to the campaign's defaults. Raises ``RoundContractError`` naming the key.
        """
        server_round = _get(config, "round", int)
        return cls(
            server_round=server_round,
            total_rounds=_get(config, "num-rounds", int, server_round),
            policy_hash=_get(config, "policy-hash", str, ""),
            learning_rate=_get(config, "learning-rate", float, DEFAULT_LEARNING_RATE),
            context_length=_get(config, "context-length", int, DEFAULT_CONTEXT_LENGTH),
            hidden_width=_get(config, "hidden-width", int, DEFAULT_HIDDEN_WIDTH),
        )


def _get(config: Mapping[str, ConfigValue], key: str, kind: type[T], default: T | None = None) -> T:
    """``config[key]`` as ``kind`` (an int is a float; a bool is neither), or ``default``."""
    if key not in config:
        if default is None:
            raise RoundContractError(f"round config {key!r} is missing")
        return default
    value = config[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RoundContractError(
            f"round config {key!r} must be {kind.__name__}, got {type(value).__name__}"
        )
    return value
