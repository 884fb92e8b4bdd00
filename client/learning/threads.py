"""How many CPU threads local training uses: one, so a round never takes the employee's cores.

The ClientApp caps torch with it when it trains; the SuperNode's governor
(``client.deployment.governor``) caps the BLAS libraries with the same number
through the environment, before torch is first imported.
"""

from __future__ import annotations

from typing import Final

TRAINING_THREADS: Final = 1

__all__ = ["TRAINING_THREADS"]
