"""``flower-supernode`` that answers the next stage of a round without a 3-second nap.

Flower 1.41's SuperNode loop (``flwr.supernode.start_client_internal``) sleeps a
fixed 3 s whenever it finds no message to pull, and has no flag to change it. A
SecAgg+ round is five messages in a row (four protocol stages and an evaluation),
and after each reply the next message usually is not there yet (the server
waits for every device), so a round paid that nap five times per device.

``python -m client.deployment.supernode ARGS`` runs Flower's own ``flower-supernode`` with
the same arguments and one change: after a message arrived (a round is in progress)
the idle wait is a tenth of the time since that message
(``client.deployment.patience``), from ``ACTIVE_POLL_SECONDS`` up to Flower's 3 s,
which it reaches 30 s after the message: the next stage is pulled within ~10 % of
the wait, and a device that waits for the slowest of a large cohort does not poll
the SuperLink three times a second; otherwise it stays Flower's 3 s, so an idle
laptop does not poll more than Flower's own SuperNode would. Everything else, TLS
and authentication included, is Flower's code unchanged.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from client.deployment.patience import next_wait

ACTIVE_POLL_SECONDS: Final = 0.3
FLOWER_IDLE_SECONDS: Final = 3.0
SUPERNODE_LOOP: Final = "flwr.supernode.start_client_internal"


class RoundAwareClock:
    """Stands in for the ``time`` module inside Flower's SuperNode loop."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._sleep = time.sleep
        self.last_message = float("-inf")

    def message_arrived(self) -> None:
        """Note that the SuperNode just pulled a message."""
        self.last_message = self._now()

    def wait_for(self, seconds: float) -> float:
        """How long an idle wait of ``seconds`` lasts: shorter while a round is in progress."""
        if seconds == FLOWER_IDLE_SECONDS:  # never a message: since is infinite, so 3 s
            since = self._now() - self.last_message
            return next_wait(since, ACTIVE_POLL_SECONDS, FLOWER_IDLE_SECONDS)
        return seconds

    def sleep(self, seconds: float) -> None:
        """``time.sleep`` with the idle wait shortened during a round."""
        self._sleep(self.wait_for(seconds))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)  # everything else is the real ``time`` module


def install(module: Any, clock: RoundAwareClock) -> None:
    """Point ``module``'s ``time`` at ``clock`` and note every pulled message."""
    pull = module._pull_and_store_message

    def pull_and_note(*args: Any, **kwargs: Any) -> int | None:
        run_id: int | None = pull(*args, **kwargs)
        if run_id is not None:
            clock.message_arrived()
        return run_id

    module.time = clock
    module._pull_and_store_message = pull_and_note


def main() -> None:
    """Flower's ``flower-supernode`` entry point, with the round-aware idle wait."""
    from flwr.supernode.cli import flower_supernode  # noqa: PLC0415 (heavy: Flower's runtime)

    install(importlib.import_module(SUPERNODE_LOOP), RoundAwareClock())
    sys.argv[0] = "flower-supernode"
    flower_supernode()


if __name__ == "__main__":
    main()
