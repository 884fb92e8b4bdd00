"""A global model's version: one SHA-256 over its arrays, computed the same on both sides.

The server writes it into each round's checkpoint sidecar and a device writes the
version it trained from into its upload history, so an ML engineer can tell
which model every device started from (and that a laptop back from being
offline trained from the current one, not the last it saw).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray


def model_version(arrays: Iterable[NDArray[Any]]) -> str:
    """Hex SHA-256 over each array's dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        data = np.ascontiguousarray(array)
        digest.update(f"{data.dtype.str}{data.shape}".encode())
        digest.update(data.tobytes())
    return digest.hexdigest()
