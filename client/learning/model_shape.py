"""The shape of the run's model: all a device's reply may carry.

The egress guard holds every reply to these names, shapes and dtypes; the run config
names the model (``context-length``, ``hidden-width``) within the bounds the round
contract holds every server to.
"""

from __future__ import annotations

from functools import cache

from flwr.app import Context

from client.learning.egress import ArraySpec, EgressViolation
from policy.round_contract import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_HIDDEN_WIDTH,
    RoundContract,
    RoundContractError,
)


def model_spec(
    context_length: int = DEFAULT_CONTEXT_LENGTH, hidden_width: int = DEFAULT_HIDDEN_WIDTH
) -> list[ArraySpec]:
    """Names, shapes and dtypes of the global model: all a reply may carry."""
    return list(_model_spec(context_length, hidden_width))


@cache
def _model_spec(context_length: int, hidden_width: int) -> tuple[ArraySpec, ...]:
    """Built once per process: a model is built only to read its shapes (2 ms a message)."""
    from policy.model import ModelConfig, NextActionPolicy  # noqa: PLC0415

    model = NextActionPolicy(ModelConfig(context_length=context_length, hidden=hidden_width))
    return tuple(ArraySpec(name, tuple(p.shape), "float32") for name, p in model.named_parameters())


def run_model_spec(context: Context) -> list[ArraySpec]:
    """The run's model, within the bounds the round contract holds every server to.

    Out of bounds, nothing may leave: a wider model would carry more of the device.
    """
    run = context.run_config
    try:
        shape = RoundContract(
            0,
            0,
            "",
            context_length=int(run.get("context-length", DEFAULT_CONTEXT_LENGTH)),
            hidden_width=int(run.get("hidden-width", DEFAULT_HIDDEN_WIDTH)),
        )
    except (RoundContractError, TypeError, ValueError) as exc:
        raise EgressViolation(f"the run's model shape is refused: {exc}") from None
    return model_spec(shape.context_length, shape.hidden_width)


__all__ = ["model_spec", "run_model_spec"]
