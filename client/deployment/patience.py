"""How long a poller waits before asking again: a share of the time it has already waited.

A device polls twice over: its SuperNode asks the SuperLink for the next message, and
hearth's executor asks the SuperNode for the next task. A fixed short interval answers
a round's next stage quickly but, across a fleet, turns every device that is merely
waiting (for the server to hear from the slowest of a thousand, or for the next round)
into a steady stream of requests: 100 SuperNodes polling every 0.3 s were 330 TLS
requests a second at the SuperLink and left the devices' training tasks starved of CPU.
Waiting a tenth of the time already waited keeps a reply's extra delay within about
10 % of the wait it ends (plus the shortest interval), while a long wait costs a few
requests a minute.
"""

from __future__ import annotations

from typing import Final

# The share of the time already waited that the next poll waits.
SHARE: Final = 0.1


def next_wait(waited: float, shortest: float, longest: float) -> float:
    """Seconds until the next poll, ``waited`` seconds after the last thing arrived."""
    if not 0 < shortest <= longest:
        raise ValueError("poll intervals need 0 < shortest <= longest")
    return min(longest, max(shortest, SHARE * max(waited, 0.0)))


__all__ = ["SHARE", "next_wait"]
