"""What a device's reply may say: the contract the client keeps and the server enforces.

Every number a device sends is either covered by its privacy ledger or a constant
(DESIGN invariant 5). So a reply carries:

- a *train* reply: the clipped (noised) model update, weight exactly
  ``TRAIN_WEIGHT``, and no metrics at all;
- an *evaluate* reply: Flower's loss and example count as the constants
  ``EVALUATE_LOSS`` / ``EVALUATE_WEIGHT``, and the metrics ``EVALUATE_SUMS``:
  Gaussian-noised sums over the device's held-out examples whose cost the device
  charged to its ledger before sending;
- a *refusal*: an error whose code is one of the constants below and whose
  reason is the code's fixed word. Everything that is the employee's or the
  laptop's business (paused, no consent, not idle, on battery, CPU busy, metered,
  out of budget) is the one code ``UNAVAILABLE``; only what the server caused has
  a code of its own.
"""

from __future__ import annotations

from typing import Final

# Error codes of refusals (Flower error codes are ints; hearth's live at 41xx).
BUNDLE_REFUSED: Final = 4101
UNAVAILABLE: Final = 4102
POLICY_MISMATCH: Final = 4103
PROTOCOL_ERROR: Final = 4104
REFUSAL_REASONS: Final = {
    BUNDLE_REFUSED: "bundle refused",
    UNAVAILABLE: "unavailable",
    POLICY_MISMATCH: "policy mismatch",
    PROTOCOL_ERROR: "protocol error",
}

TRAIN_WEIGHT: Final = 1
EVALUATE_WEIGHT: Final = 1
EVALUATE_LOSS: Final = 0.0

# Per held-out example: top-1 hit, top-3 hit, loss / EVAL_LOSS_BOUND (clipped to 1),
# and 1 for the count. One example changes the vector by at most L2 norm 2.
EVALUATE_SUMS: Final = ("top1_sum", "top3_sum", "loss_sum", "count")
EVAL_LOSS_BOUND: Final = 10.0
EVAL_SENSITIVITY: Final = 2.0


def refusal_reason(code: int) -> str:
    """The fixed word that goes with a refusal code (never the device's own reason)."""
    return REFUSAL_REASONS.get(code, "client error")


__all__ = [
    "BUNDLE_REFUSED",
    "EVALUATE_LOSS",
    "EVALUATE_SUMS",
    "EVALUATE_WEIGHT",
    "EVAL_LOSS_BOUND",
    "EVAL_SENSITIVITY",
    "POLICY_MISMATCH",
    "PROTOCOL_ERROR",
    "REFUSAL_REASONS",
    "TRAIN_WEIGHT",
    "UNAVAILABLE",
    "refusal_reason",
]
