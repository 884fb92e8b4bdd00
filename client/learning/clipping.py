"""Clip the whole model update to an L2 norm before it leaves the device.

This bounds one user's influence on the aggregate, which the server's central
Gaussian noise relies on for its user-level guarantee.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def update_norm(delta: list[NDArray[np.float32]]) -> float:
    """L2 norm of all arrays taken together."""
    return float(np.sqrt(sum(float(np.sum(np.square(d, dtype=np.float64))) for d in delta)))


def clip_update(delta: list[NDArray[np.float32]], max_norm: float) -> list[NDArray[np.float32]]:
    """Scale ``delta`` down to ``max_norm`` if it is longer; ``max_norm <= 0`` disables."""
    if max_norm <= 0:
        return delta
    norm = update_norm(delta)
    if norm <= max_norm:
        return delta
    scale = max_norm / norm
    return [(d * scale).astype(np.float32) for d in delta]
