"""What the server checks of a train reply before it may reach the aggregate.

A device's train reply is its clipped update with a constant weight. The server
does not take that on trust: a reply whose weight is not the constant, whose
arrays are not finite or not shaped like the global model, or whose L2 norm is
over the clipping norm is dropped before aggregation. Each check names its rule
(``RULES``) so the server can log which rule a reply broke without logging any
value of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

# Relative slack on the clipping norm for float32 rounding of a clipped update.
NORM_TOLERANCE: Final = 1e-5
RULES: Final = ("weight", "shape", "finite", "norm")


def l2_norm(arrays: Sequence[NDArray[Any]]) -> float:
    """The L2 norm of all arrays taken together as one vector (float64)."""
    return float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))


def broken_rule(
    weight: float,
    arrays: Sequence[NDArray[Any]],
    shapes: Sequence[tuple[int, ...]],
    clip: float,
    expected_weight: float,
    tolerance: float = NORM_TOLERANCE,
) -> str | None:
    """The first rule of ``RULES`` a reply breaks, or ``None`` when it keeps the contract.

    Parameters
    ----------
    weight
        The weight the reply claims (Flower's ``num_examples``).
    arrays
        The update (or, under secure aggregation, the unmasked aggregate).
    shapes
        The global model's array shapes.
    clip
        The largest L2 norm allowed (``<= 0``: no norm bound).
    expected_weight
        The one weight a reply may carry.
    tolerance
        Relative slack on ``clip``.

    Returns
    -------
    str | None
        ``"weight"``, ``"shape"``, ``"finite"`` or ``"norm"``, or ``None``.

    """
    if weight != expected_weight:
        return "weight"
    if len(arrays) != len(shapes) or any(
        tuple(a.shape) != tuple(s) for a, s in zip(arrays, shapes, strict=False)
    ):
        return "shape"
    if not all(np.issubdtype(a.dtype, np.number) and np.all(np.isfinite(a)) for a in arrays):
        return "finite"
    if clip > 0 and l2_norm(arrays) > clip * (1 + tolerance):
        return "norm"
    return None


__all__ = ["NORM_TOLERANCE", "RULES", "broken_rule", "l2_norm"]
