"""The ClientApp: local DP training on the vault, stacked with its guards.

Stacking (outermost first), visible in one place::

    secure aggregation  ->  egress guard  ->  hearth client (budget, DP-SGD, update clipping)

``secure_aggregation_mod`` runs Flower's ``secaggplus_mod`` when the server runs
the SecAgg+ workflow (run config ``secaggplus = true``) and is transparent
otherwise, so simulation and deployment use one ClientApp. It sits outside the
egress guard, so the guard checks the plain, clipped update before it is masked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Scalar
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from numpy.typing import NDArray

from client.clipping import clip_update
from client.egress import ArraySpec, make_egress_guard, reply_arrays, reply_size
from client.featurize import Examples, split_held_out
from client.governor import TRAINING_THREADS
from policy.baselines import Bigram, MostFrequent
from policy.model_version import model_version
from privacy.policy import policy_hash

if TYPE_CHECKING:
    from client.device import Device
    from client.training import TrainConfig
    from policy.model import NextActionPolicy
    from privacy.ledger import DeviceLedger

# Torch, Opacus and the accountants are imported inside the functions that train or
# evaluate, not at import: a device runs each message in a fresh process, and
# three of SecAgg+'s four stages only exchange keys.

HELD_OUT_FRACTION = 0.2
# Why a device replied without training (the "declined" metric).
DECLINED_BUDGET = 1
DECLINED_POLICY_MISMATCH = 2


@dataclass(frozen=True)
class RoundInstructions:
    """What the server asked for in one round, validated once where it enters."""

    train: TrainConfig
    context_length: int
    epsilon_cap: float
    update_clip_norm: float
    uniform_weights: bool
    server_round: int
    total_rounds: int
    policy_hash: str

    @classmethod
    def from_config(cls, config: dict[str, Scalar]) -> RoundInstructions:
        """Parse the server's config; a missing or mistyped key is a clear error."""
        from client.training import TrainConfig  # noqa: PLC0415 (torch: see the note above)

        def get(key: str, kind: type, default: Any) -> Any:
            value = config.get(key, default)
            if kind is float and isinstance(value, int):
                value = float(value)
            if not isinstance(value, kind):
                raise ValueError(f"round config {key!r} must be {kind.__name__}")
            return value

        return cls(
            train=TrainConfig(
                epochs=get("epochs", int, 1),
                batch_size=get("batch-size", int, 128),
                max_steps=get("max-steps", int, 50),
                learning_rate=get("learning-rate", float, 2.0),
                noise_multiplier=get("noise-multiplier", float, 1.0),
                max_grad_norm=get("max-grad-norm", float, 1.0),
                delta=get("delta", float, 1e-5),
                private=get("private", bool, True),
                seed=get("seed", int, 0) + get("round", int, 0),
            ),
            context_length=get("context-length", int, 8),
            epsilon_cap=get("epsilon-cap", float, float("inf")),
            update_clip_norm=get("update-clip-norm", float, 0.0),
            uniform_weights=get("uniform-weights", bool, False),
            server_round=get("round", int, 0),
            total_rounds=get("num-rounds", int, get("round", int, 0)),
            policy_hash=get("policy-hash", str, ""),
        )


def _model(context_length: int, parameters: list[NDArray[np.float32]]) -> NextActionPolicy:
    from policy.model import ModelConfig, NextActionPolicy, set_arrays  # noqa: PLC0415

    model = NextActionPolicy(ModelConfig(context_length=context_length))
    set_arrays(model, parameters)
    return model


def _noise_to_last(
    ins: RoundInstructions, config: TrainConfig, ledger: DeviceLedger, cap: float, examples: int
) -> float:
    """The least noise, not below the device policy's, that keeps the cap for every round left."""
    from client.training import plan_round  # noqa: PLC0415 (torch: see the note on imports)
    from privacy.accountants import noise_to_last  # noqa: PLC0415

    planned = plan_round(examples, config)
    return noise_to_last(
        ledger.history(),
        planned.sample_rate,
        planned.steps,
        ins.total_rounds - ins.server_round + 1,
        cap,
        config.delta,
        floor=config.noise_multiplier,
    )


class HearthClient(NumPyClient):
    """Trains on this device's own vault and reports only allowed numbers."""

    def __init__(self, device: Device) -> None:
        import torch  # noqa: PLC0415 (see the note on imports)

        self.device = device
        torch.set_num_threads(TRAINING_THREADS)

    def _split(self, context_length: int) -> tuple[Examples, Examples]:
        return split_held_out(self.device.examples(context_length), HELD_OUT_FRACTION)

    def fit(
        self, parameters: list[NDArray[np.float32]], config: dict[str, Scalar]
    ) -> tuple[list[NDArray[np.float32]], int, dict[str, Scalar]]:
        """One local round: policy and budget checks first, then train, then clip."""
        from client.training import plan_round, train_round  # noqa: PLC0415
        from privacy.accountants import PlanningError  # noqa: PLC0415
        from privacy.ledger import check_round, effective_cap  # noqa: PLC0415

        ins = RoundInstructions.from_config(config)
        policy = self.device.policy()
        if ins.policy_hash != policy_hash(policy):
            return self._declined(parameters, DECLINED_POLICY_MISMATCH, None, ins)
        delta = policy.privacy.delta
        train_config = replace(
            ins.train,
            delta=delta,
            noise_multiplier=policy.training.local_noise_multiplier,
            max_grad_norm=policy.training.max_grad_norm,
            private=policy.training.local_noise_multiplier > 0,
        )
        train, _ = self._split(ins.context_length)
        ledger = self.device.ledger()
        if train_config.private:
            cap = effective_cap(policy.privacy.device_epsilon_cap, self.device.employee_cap())
            if policy.training.spread_local_budget:
                try:
                    noise = _noise_to_last(ins, train_config, ledger, cap, len(train))
                    train_config = replace(train_config, noise_multiplier=noise)
                except PlanningError:
                    return self._declined(parameters, DECLINED_BUDGET, ledger, ins)
            planned = plan_round(len(train), train_config).as_history()
            if not check_round(ledger, planned, delta, cap).allowed:
                return self._declined(parameters, DECLINED_BUDGET, ledger, ins)
        model = _model(ins.context_length, parameters)
        result = train_round(model, train, train_config)
        if result.planned is not None:
            ledger.record(ins.server_round, result.planned.as_history(), delta, ins.policy_hash)
        delta_arrays = clip_update(result.delta, policy.training.update_clip_norm)
        metrics: dict[str, Scalar] = {
            "train_loss": result.loss,
            "epsilon": ledger.spent(delta),
            "delta": delta,
            "upload_bytes": sum(d.nbytes for d in delta_arrays),
            "budget_exhausted": 0,
            "declined": 0,
        }
        weight = 1 if ins.uniform_weights else result.num_examples
        return delta_arrays, weight, metrics

    def _declined(
        self,
        parameters: list[NDArray[np.float32]],
        reason: int,
        ledger: DeviceLedger | None,
        ins: RoundInstructions,
    ) -> tuple[list[NDArray[np.float32]], int, dict[str, Scalar]]:
        """Reply without training: a zero update with zero weight and the reason code."""
        zero = [np.zeros_like(p, dtype=np.float32) for p in parameters]
        metrics: dict[str, Scalar] = {
            "budget_exhausted": int(reason == DECLINED_BUDGET),
            "declined": reason,
            "epsilon": ledger.spent(ins.train.delta) if ledger is not None else 0.0,
            "delta": ins.train.delta,
            "upload_bytes": 0,
        }
        return zero, 0, metrics

    def evaluate(
        self, parameters: list[NDArray[np.float32]], config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        """Top-1/top-3 of the global model and of the two baselines on held-out data."""
        from client.training import evaluate  # noqa: PLC0415

        ins = RoundInstructions.from_config(config)
        train, held = self._split(ins.context_length)
        scores = evaluate(_model(ins.context_length, parameters), held)
        frequent = MostFrequent(train.target)
        bigram = Bigram(train.context[:, -1], train.target)
        previous = held.context[:, -1]
        metrics: dict[str, Scalar] = {
            "top1": scores["top1"],
            "top3": scores["top3"],
            "baseline_frequent_top1": frequent.accuracy(held.target, 1),
            "baseline_frequent_top3": frequent.accuracy(held.target, 3),
            "baseline_bigram_top1": bigram.accuracy(previous, held.target, 1),
            "baseline_bigram_top3": bigram.accuracy(previous, held.target, 3),
        }
        return scores["loss"], len(held), metrics


def model_spec(context_length: int = 8) -> list[ArraySpec]:
    """Names, shapes and dtypes of the global model: all a reply may carry."""
    from policy.model import ModelConfig, NextActionPolicy  # noqa: PLC0415

    model = NextActionPolicy(ModelConfig(context_length=context_length))
    return [ArraySpec(name, tuple(p.shape), "float32") for name, p in model.named_parameters()]


def _spec_for(context: Context) -> list[ArraySpec]:
    return model_spec(int(context.run_config.get("context-length", 8)))


def _log_upload(message: Message, context: Context, reply: Message) -> None:
    """Append every model update that passed the guard to the device's upload history."""
    if message.metadata.message_type != MessageType.TRAIN:
        return
    from client.device import device_for  # noqa: PLC0415

    content = reply.content
    metrics: Mapping[str, Any] = content.config_records.get("fitres.metrics", {})
    received = next(iter(message.content.array_records.values()), None)
    device_for(context).log_upload(
        {
            "round": int(message.metadata.group_id or 0),
            "bytes": reply_size(content),
            "arrays": reply_arrays(content),
            "epsilon": metrics.get("epsilon"),
            # The global model this update was trained from (as in the server's checkpoints).
            "model_version": model_version(a.numpy() for a in received.values())
            if received is not None
            else None,
        }
    )


def client_fn(context: Context) -> Any:
    """Build the client for the device this invocation runs on."""
    from client.device import device_for  # noqa: PLC0415

    return HearthClient(device_for(context)).to_client()


def secure_aggregation_mod(
    message: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """Flower's ``secaggplus_mod`` for messages of the SecAgg+ protocol, a no-op otherwise."""
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    if message.metadata.message_type == MessageType.TRAIN and configs and Key.STAGE in configs:
        return secaggplus_mod(message, context, call_next)
    return call_next(message, context)


egress_guard_mod = make_egress_guard(_spec_for, observe=_log_upload)

app = ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod, egress_guard_mod])
