"""The egress guard: the last check on everything the ClientApp sends.

A reply may carry only arrays whose count, shapes and dtypes match the global
model, in the model's parameter order, plus numeric metrics from a fixed
allow-list, plus Flower's own bookkeeping (example count, a success status).
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

# Exactly what the ClientApp reports and the server aggregates (server/report.py); not
# how long training took or how many examples (the count goes only as Flower's weight,
# and under SecAgg+ or central noise that weight is 1).
ALLOWED_METRICS: Final = frozenset(
    {
        # fit
        "train_loss",
        "epsilon",
        "delta",
        "budget_exhausted",
        "declined",
        "upload_bytes",
        # evaluate
        "top1",
        "top3",
        "baseline_frequent_top1",
        "baseline_frequent_top3",
        "baseline_bigram_top1",
        "baseline_bigram_top3",
    }
)
# Flower's legacy status record: a code and, on success, this exact message.
_STATUS_MESSAGES: Final = frozenset({"Success", ""})
_ARRAY_RECORD_KEYS: Final = frozenset({"fitres.parameters", "getparametersres.parameters"})
_CONFIG_METRIC_KEYS: Final = frozenset({"fitres.metrics", "evaluateres.metrics"})
_STATUS_KEYS: Final = frozenset({"fitres.status", "evaluateres.status", "getparametersres.status"})
# Flower's own scalars, each alone in a record named after it: the weight and the loss.
_SCALAR_RECORDS: Final = {
    "fitres.num_examples": "num_examples",
    "evaluateres.num_examples": "num_examples",
    "evaluateres.loss": "loss",
}
EGRESS_ERROR_CODE: Final = 4001


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


def check_content(content: RecordDict, spec: list[ArraySpec]) -> None:
    """Check a whole outgoing RecordDict against the rules above."""
    for key, array_record in content.array_records.items():
        if key not in _ARRAY_RECORD_KEYS:
            raise EgressViolation("an array record is not a model update")
        check_arrays((a.numpy() for a in array_record.values()), spec)
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
        check_metrics(dict(metric_record.items()), frozenset({_SCALAR_RECORDS[key]}))


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
    spec_for: Callable[[Context], list[ArraySpec]], observe: UploadObserver | None = None
) -> Mod:
    """Build the guard mod; ``observe`` sees each reply that passed, e.g. to log it."""

    def egress_guard_mod(
        message: Message, context: Context, call_next: Callable[[Message, Context], Message]
    ) -> Message:
        reply = call_next(message, context)
        if reply.has_error():
            # Error text could echo data; send the code only.
            return Message(Error(code=reply.error.code, reason="client error"), reply_to=message)
        try:
            check_content(reply.content, spec_for(context))
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
