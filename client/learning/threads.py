"""How many CPU threads local training uses: one, so a round never takes the employee's cores.

The ClientApp caps torch with it when it trains; the SuperNode's governor
(``client.deployment.governor``) caps the BLAS libraries with the same number
through the environment, before torch is first imported (so this module does not
import torch at import time). Simulations run many devices' training in one
process: ``training_threads`` gives a block the devices' count and restores the
process's after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

TRAINING_THREADS: Final = 1


@contextmanager
def training_threads() -> Iterator[None]:
    """Run the block on ``TRAINING_THREADS`` torch threads, as a device trains."""
    import torch  # noqa: PLC0415 - imported only when a block trains (see the module note)

    before = torch.get_num_threads()
    torch.set_num_threads(TRAINING_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = ["TRAINING_THREADS", "training_threads"]
