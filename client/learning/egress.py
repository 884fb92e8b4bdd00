"""The egress guard: the last check on everything the ClientApp sends.

A reply may carry only arrays whose count, shapes and dtypes match the global
model, in the model's parameter order, plus numeric metrics from a fixed
allow-list, plus Flower's own bookkeeping as constants (weight 1, loss 0, a
success status); an error carries its code and that code's fixed word.
Anything else raises ``EgressViolation`` and the reply is replaced by an error
that names the rule broken, never the offending content.

It is a Flower mod, so it composes with clipping and SecAgg+: placed inside
``secaggplus_mod``, it sees the plain update before it is masked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error

from client.learning.clipping import update_norm
from policy.replies import (
    EVALUATE_LOSS,
    EVALUATE_SUMS,
    EVALUATE_WEIGHT,
    TRAIN_WEIGHT,
    refusal_reason,
)

# Exactly what the ClientApp reports (policy.replies): a train reply has no metrics; an
# evaluate reply has the noised sums, charged to the device's ledger before they leave.
ALLOWED_METRICS: Final = frozenset(EVALUATE_SUMS)
# Flower's legacy status record: a code and, on success, this exact message.
_STATUS_MESSAGES: Final = frozenset({"Success", ""})
_ARRAY_RECORD_KEYS: Final = frozenset({"fitres.parameters", "getparametersres.parameters"})
_CONFIG_METRIC_KEYS: Final = frozenset({"fitres.metrics", "evaluateres.metrics"})
_STATUS_KEYS: Final = frozenset({"fitres.status", "evaluateres.status", "getparametersres.status"})
# Flower's own scalars, each alone in a record named after it: constants, whatever the data.
_SCALAR_RECORDS: Final = {
    "fitres.num_examples": ("num_examples", TRAIN_WEIGHT),
    "evaluateres.num_examples": ("num_examples", EVALUATE_WEIGHT),
    "evaluateres.loss": ("loss", EVALUATE_LOSS),
}
EGRESS_ERROR_CODE: Final = 4001
# Clipping rounds to float32; the server allows the same margin.
NORM_TOLERANCE: Final = 1.0 + 1e-5


class EgressViolation(Exception):
    """A reply carried something other than model arrays and allowed metrics."""


@dataclass(frozen=True)
class ArraySpec:
    """Name, shape and dtype of one array of the global model."""

    name: str
    shape: tuple[int, ...]
    dtype: str


def check_arrays(arrays: Iterable[np.ndarray], spec: list[ArraySpec]) -> None:
    """Refuse unless ``arrays`` match ``spec`` one to one, in order."""
    arrays = list(arrays)
    if len(arrays) != len(spec):
        raise EgressViolation(f"reply has {len(arrays)} arrays, the global model has {len(spec)}")
    for array, expected in zip(arrays, spec, strict=True):
        if not isinstance(array, np.ndarray):
            raise EgressViolation(f"{expected.name}: not a numeric array")
        if tuple(array.shape) != expected.shape:
            raise EgressViolation(
                f"{expected.name}: shape {tuple(array.shape)} differs from {expected.shape}"
            )
        if str(array.dtype) != expected.dtype:
            raise EgressViolation(f"{expected.name}: dtype {array.dtype} is not {expected.dtype}")
        if not np.isfinite(array).all():
            raise EgressViolation(f"{expected.name}: values are not all finite")


def check_metrics(metrics: Mapping[str, Any], allowed: frozenset[str] = ALLOWED_METRICS) -> None:
    """Refuse any metric not on the allow-list or not a finite number."""
    for key, value in metrics.items():
        if key not in allowed:
            raise EgressViolation("a metric name is not on the allow-list")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EgressViolation("a metric value is not a number")
        if not math.isfinite(value):
            raise EgressViolation("a metric value is not finite")


def _check_status(record: ConfigRecord) -> None:
    if set(record) != {"code", "message"} or record["message"] not in _STATUS_MESSAGES:
        raise EgressViolation("status record carries more than a code")
    if not isinstance(record["code"], int):
        raise EgressViolation("status code is not an integer")


def check_content(content: RecordDict, spec: list[ArraySpec], max_norm: float = 0.0) -> None:
    """Check a whole outgoing RecordDict against the rules above.

    ``max_norm > 0`` is the policy's update clip: an update longer than it (with a
    float32 rounding margin) is refused, as the server would refuse it.
    """
    for key, array_record in content.array_records.items():
        if key not in _ARRAY_RECORD_KEYS:
            raise EgressViolation("an array record is not a model update")
        arrays = [a.numpy() for a in array_record.values()]
        check_arrays(arrays, spec)
        if max_norm > 0 and update_norm(arrays) > max_norm * NORM_TOLERANCE:
            raise EgressViolation("the update is longer than the policy's clipping norm")
    for key, config in content.config_records.items():
        if key in _STATUS_KEYS:
            _check_status(config)
        elif key in _CONFIG_METRIC_KEYS:
            check_metrics(config)
        else:
            raise EgressViolation("a config record is not allowed")
    for key, metric_record in content.metric_records.items():
        if key not in _SCALAR_RECORDS:
            raise EgressViolation("a metric record is not allowed")
        name, constant = _SCALAR_RECORDS[key]
        if dict(metric_record.items()) != {name: constant}:
            raise EgressViolation(f"{key} must be the constant {constant}")


def reply_size(content: RecordDict) -> int:
    """Bytes of array payload in a reply (what the upload history reports)."""
    return sum(a.numpy().nbytes for rec in content.array_records.values() for a in rec.values())


def reply_arrays(content: RecordDict) -> list[tuple[str, tuple[int, ...]]]:
    """Key and shape of every array in a reply, for the upload history."""
    return [
        (name, tuple(a.shape)) for rec in content.array_records.values() for name, a in rec.items()
    ]


Mod = Callable[[Message, Context, Callable[[Message, Context], Message]], Message]
UploadObserver = Callable[[Message, Context, Message], None]


def make_egress_guard(
    spec_for: Callable[[Context], list[ArraySpec]],
    observe: UploadObserver | None = None,
    max_norm_for: Callable[[Context], float] | None = None,
) -> Mod:
    """Build the guard mod; ``observe`` sees each reply that passed, e.g. to log it.

    ``max_norm_for`` gives the update clip the device's policy sets (none if omitted).
    """

    def egress_guard_mod(
        message: Message, context: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        reply = call_next(message, context)
        if reply.has_error():
            # Error text could echo data or say why; send the code and its fixed word only.
            code = reply.error.code
            return Message(Error(code=code, reason=refusal_reason(code)), reply_to=message)
        try:
            max_norm = max_norm_for(context) if max_norm_for is not None else 0.0
            check_content(reply.content, spec_for(context), max_norm)
        except EgressViolation as violation:
            return Message(
                Error(code=EGRESS_ERROR_CODE, reason=f"egress guard refused reply: {violation}"),
                reply_to=message,
            )
        if observe is not None:
            observe(message, context, reply)
        return reply

    return egress_guard_mod


__all__ = [
    "ALLOWED_METRICS",
    "ArraySpec",
    "EgressViolation",
    "check_arrays",
    "check_content",
    "check_metrics",
    "make_egress_guard",
]
