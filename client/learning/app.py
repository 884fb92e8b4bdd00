"""The ClientApp: local DP training on the vault, stacked with its guards.

Stacking (outermost first), visible in one place::

    secure aggregation  ->  distributed noise  ->  egress guard  ->  refusals  ->  hearth client
                                                     (gates, budget, DP-SGD, update clipping)

``refusal_mod`` turns a ``Declined`` raised anywhere in the client into an error
reply with nothing but a code from ``policy.replies``. ``secure_aggregation_mod``
runs Flower's ``secaggplus_mod`` when the server runs the SecAgg+ workflow (run
config ``secaggplus = true``), after the device's own checks of each SecAgg+
message (``client.learning.secagg_guard``), and is transparent otherwise unless the policy
requires SecAgg+, so simulation and deployment use one ClientApp. It sits outside
the egress guard, so the guard checks the plain, clipped update before it is masked.
Between them, ``distributed_noise_mod`` adds the device's share of the central noise
when the policy sets ``distributed_noise`` (``client.learning.distributed_noise``): after the
guard checked the clipped update's norm, before SecAgg+ quantizes and masks it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.app.error import Error
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Scalar
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from numpy.typing import NDArray

from client.learning.clipping import clip_update
from client.learning.distributed_noise import make_distributed_noise_mod
from client.learning.egress import make_egress_guard, reply_arrays, reply_size
from client.learning.featurize import Examples, split_held_out
from client.learning.model_shape import run_model_spec
from client.learning.secagg_guard import check_plain_round, check_secagg
from client.learning.threads import TRAINING_THREADS
from policy.model_version import model_version
from policy.replies import (
    EVAL_SENSITIVITY,
    EVALUATE_LOSS,
    EVALUATE_SUMS,
    EVALUATE_WEIGHT,
    POLICY_MISMATCH,
    PROTOCOL_ERROR,
    TRAIN_WEIGHT,
    UNAVAILABLE,
    refusal_reason,
)
from policy.round_contract import RoundContract, RoundContractError
from privacy.policy import PolicyError, PrivacyPolicy, policy_hash

if TYPE_CHECKING:
    from client.learning.device import Device
    from client.learning.training import TrainConfig
    from policy.model import NextActionPolicy
    from privacy.accountants import HistoryEntry
    from privacy.ledger import DeviceLedger

# Torch, Opacus and the accountants are imported inside the functions that train or
# evaluate, not at import: a device runs each message in a fresh process, and
# three of SecAgg+'s four stages only exchange keys.

HELD_OUT_FRACTION: Final = 0.2


class Declined(Exception):
    """The device will not answer this message; ``code`` is one of ``policy.replies``'."""

    def __init__(self, code: int) -> None:
        super().__init__(refusal_reason(code))
        self.code = code


def train_config(policy: PrivacyPolicy, learning_rate: float) -> TrainConfig:
    """The local round the device's own policy allows, at the server's learning rate."""
    from client.learning.training import TrainConfig  # noqa: PLC0415 (torch: see the note above)

    training = policy.training
    return TrainConfig(
        sample_rate=training.sample_rate,
        steps=training.steps,
        batch_size=training.batch_size,
        learning_rate=learning_rate,
        noise_multiplier=training.local_noise_multiplier,
        max_grad_norm=training.max_grad_norm,
        delta=policy.privacy.delta,
        private=training.local_noise_multiplier > 0,
    )


def evaluation_entry(policy: PrivacyPolicy) -> HistoryEntry:
    """What one released evaluation costs in the ledger: one Gaussian release, no sampling."""
    return (policy.training.evaluation_noise_multiplier, 1.0, 1)


def _model(ins: RoundContract, parameters: list[NDArray[np.float32]]) -> NextActionPolicy:
    """The global model at the shape the round's contract names (bounded there).

    Arrays of any other count or shape decline the round: the server sent a model
    other than the one it told the device to train.
    """
    from policy.model import ModelConfig, NextActionPolicy, set_arrays  # noqa: PLC0415

    model = NextActionPolicy(
        ModelConfig(context_length=ins.context_length, hidden=ins.hidden_width)
    )
    try:
        set_arrays(model, parameters)
    except ValueError:
        raise Declined(PROTOCOL_ERROR) from None
    return model


def _recent(examples: Examples, most: int) -> Examples:
    """At most ``most`` of the newest examples: delta is planned against that many."""
    return examples.slice(max(0, len(examples) - most))


def _mismatch(asked: str, policy: PrivacyPolicy) -> str:
    """What a device records when the server runs a round under another policy."""
    return (
        f"round refused (policy mismatch): the server runs it under policy {asked[:12]!r}, "
        f"this device's policy is {policy_hash(policy)[:12]}"
    )


class HearthClient(NumPyClient):
    """Trains on this device's own vault; replies carry only ledger-covered noise or constants."""

    def __init__(self, device: Device) -> None:
        import torch  # noqa: PLC0415 (see the note on imports)

        self.device = device
        torch.set_num_threads(TRAINING_THREADS)

    def _admit(self, config: Mapping[str, Scalar]) -> tuple[RoundContract, PrivacyPolicy]:
        """The gates every message passes: well-formed, consent and pause, the agreed policy."""
        try:
            ins = RoundContract.from_config(config)
        except RoundContractError:
            raise Declined(PROTOCOL_ERROR) from None
        if not self.device.admitted():
            raise Declined(UNAVAILABLE)
        try:
            policy = self.device.policy()
        except PolicyError as exc:
            self.device.record_refusal(f"round refused: {exc}")
            raise Declined(POLICY_MISMATCH) from None
        if ins.policy_hash != policy_hash(policy):
            self.device.record_refusal(_mismatch(ins.policy_hash, policy))
            raise Declined(POLICY_MISMATCH)
        return ins, policy

    def _ledger(self) -> DeviceLedger:
        """The device's ledger; a missing, rolled-back or unreadable one declines the round."""
        from privacy.ledger import LedgerError  # noqa: PLC0415

        try:
            return self.device.ledger()
        except LedgerError as exc:
            self.device.record_refusal(f"round refused: {exc}")
            raise Declined(UNAVAILABLE) from None

    def _split(self, context_length: int, most: int) -> tuple[Examples, Examples]:
        """Training and held-out examples; a vault put back as an older copy declines."""
        from client.storage.vault_store import VaultRollbackError  # noqa: PLC0415

        try:
            examples = self.device.examples(context_length)
        except VaultRollbackError as exc:
            self.device.record_refusal(f"round refused: {exc}")
            raise Declined(UNAVAILABLE) from None
        train, held = split_held_out(examples, HELD_OUT_FRACTION)
        return _recent(train, most), _recent(held, most)

    def _charge(
        self,
        ledger: DeviceLedger,
        planned: HistoryEntry,
        policy: PrivacyPolicy,
        round_: int,
        kind: str,
    ) -> None:
        """Record ``planned`` against every day it could read before anything leaves, or decline.

        The days are the retention window's and the vault's (``Device.held_days``); the
        decision depends only on when earlier rounds ran and what they cost.
        """
        from privacy.ledger import BudgetRule, check_round  # noqa: PLC0415

        rule = BudgetRule.from_policy(policy, self.device.employee_cap())
        held = self.device.held_days()
        decision = check_round(ledger, planned, rule, held=held)
        if not decision.allowed:
            self.device.record_refusal(f"round refused: {decision.reason}")
            raise Declined(UNAVAILABLE)
        ledger.record(round_, planned, rule, policy_hash(policy), held=held, kind=kind)

    def fit(
        self, parameters: list[NDArray[np.float32]], config: dict[str, Scalar]
    ) -> tuple[list[NDArray[np.float32]], int, dict[str, Scalar]]:
        """One local round: gates and budget first, then train, clip and check the update."""
        from client.learning.training import plan_round, train_round  # noqa: PLC0415
        from privacy.accountants import PlanningError  # noqa: PLC0415
        from privacy.ledger import BudgetRule, planned_noise  # noqa: PLC0415

        ins, policy = self._admit(config)
        model = _model(ins, parameters)  # a model other than the one named: before any charge
        config_ = train_config(policy, ins.learning_rate)
        train, _ = self._split(ins.context_length, policy.privacy.max_examples_per_device)
        if len(train) == 0:
            raise Declined(UNAVAILABLE)
        if config_.private:
            ledger = self._ledger()
            if policy.training.spread_local_budget:
                rule = BudgetRule.from_policy(policy, self.device.employee_cap())
                try:
                    noise = planned_noise(policy, rule)
                except PlanningError:
                    raise Declined(UNAVAILABLE) from None
                config_ = replace(config_, noise_multiplier=noise)
            self._charge(
                ledger, plan_round(config_).as_history(), policy, ins.server_round, "train"
            )
        result = train_round(model, train, config_)
        update = clip_update(result.delta, policy.training.update_clip_norm)
        if not all(np.isfinite(a).all() for a in update):
            raise Declined(PROTOCOL_ERROR)
        return update, TRAIN_WEIGHT, {}

    def evaluate(
        self, parameters: list[NDArray[np.float32]], config: dict[str, Scalar]
    ) -> tuple[float, int, dict[str, Scalar]]:
        """Noised sums of top-1, top-3 and clipped loss on held-out data, charged to the ledger."""
        from client.learning.training import held_out_sums  # noqa: PLC0415
        from privacy.randomness import gaussian, secret_generator  # noqa: PLC0415

        ins, policy = self._admit(config)
        _, held = self._split(ins.context_length, policy.privacy.max_examples_per_device)
        if len(held) == 0:
            raise Declined(UNAVAILABLE)
        sums = held_out_sums(_model(ins, parameters), held)
        z_eval = policy.training.evaluation_noise_multiplier
        if policy.training.local_noise_multiplier > 0:
            self._charge(
                self._ledger(), evaluation_entry(policy), policy, ins.server_round, "evaluation"
            )
        noised = sums + gaussian(secret_generator(), z_eval * EVAL_SENSITIVITY, sums.shape)
        metrics: dict[str, Scalar] = {
            key: float(v) for key, v in zip(EVALUATE_SUMS, noised, strict=True)
        }
        return EVALUATE_LOSS, EVALUATE_WEIGHT, metrics


def _clip_for(context: Context) -> float:
    from client.learning.device import device_for  # noqa: PLC0415

    return device_for(context).policy().training.update_clip_norm


def _log_upload(message: Message, context: Context, reply: Message) -> None:
    """Append every model update that passed the guard to the device's upload history."""
    if message.metadata.message_type != MessageType.TRAIN:
        return
    from client.learning.device import device_for  # noqa: PLC0415

    content = reply.content
    received = next(iter(message.content.array_records.values()), None)
    device = device_for(context)
    device.log_upload(
        {
            "round": int(message.metadata.group_id or 0),
            "bytes": reply_size(content),
            "arrays": reply_arrays(content),
            # What the device had spent when it sent this (never sent itself).
            "epsilon": device.ledger().recorded_spend(),
            # The global model this update was trained from (as in the server's checkpoints).
            "model_version": model_version(a.numpy() for a in received.values())
            if received is not None
            else None,
        }
    )


def client_fn(context: Context) -> Any:
    """Build the client for the device this invocation runs on."""
    from client.learning.device import device_for  # noqa: PLC0415

    return HearthClient(device_for(context)).to_client()


def _refusal(code: int, message: Message) -> Message:
    return Message(Error(code=code, reason=refusal_reason(code)), reply_to=message)


def refusal_mod(
    message: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """Turn a ``Declined`` into an error reply that carries only its code and fixed word."""
    try:
        return call_next(message, context)
    except Declined as declined:
        return _refusal(declined.code, message)


def secure_aggregation_mod(
    message: Message, context: Context, call_next: Callable[[Message, Context], Message]
) -> Message:
    """Flower's ``secaggplus_mod`` for messages of the SecAgg+ protocol, behind the policy's rules.

    Every TRAIN message is first checked against the device's own policy
    (``client.learning.secagg_guard``): a plain round when the policy requires SecAgg+, a setup
    below its shares or threshold, an unmask with overlapping lists or too few active
    devices are refused, and the device keeps why. Otherwise plain rounds pass through.
    A device that declines at the masked-vector stage answers with its refusal, as a
    device that dropped out: its neighbours' shares remove its masks from the sum.
    """
    if message.metadata.message_type != MessageType.TRAIN:
        return call_next(message, context)
    from client.learning.device import device_for  # noqa: PLC0415 (see the note on imports)

    device = device_for(context)
    try:
        policy = device.policy()
    except PolicyError as exc:
        device.record_refusal(f"round refused: {exc}")
        return _refusal(POLICY_MISMATCH, message)
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is None or Key.STAGE not in configs:
        violation = check_plain_round(policy)
        if violation is None:
            return call_next(message, context)
    else:
        violation = check_secagg(configs, message.metadata.dst_node_id, policy)
    if violation is not None:
        device.record_refusal(violation.reason)
        return _refusal(violation.code, message)

    def train_or_raise(inner: Message, ctx: Context) -> Message:
        reply = call_next(inner, ctx)
        if reply.has_error():
            raise Declined(reply.error.code)
        return reply

    try:
        return secaggplus_mod(message, context, train_or_raise)
    except Declined as declined:
        return _refusal(declined.code, message)


def _policy_for(context: Context) -> PrivacyPolicy:
    from client.learning.device import device_for  # noqa: PLC0415

    return device_for(context).policy()


egress_guard_mod = make_egress_guard(run_model_spec, observe=_log_upload, max_norm_for=_clip_for)
distributed_noise_mod = make_distributed_noise_mod(_policy_for)

app = ClientApp(
    client_fn=client_fn,
    mods=[secure_aggregation_mod, distributed_noise_mod, egress_guard_mod, refusal_mod],
)
