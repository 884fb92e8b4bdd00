"""When the recorder seals a segment: on a fixed grid, empty or not, so counts trace only uptime.

Sealing a segment whenever something happened makes the number of rows in
``vault.db`` per day the number of active seconds, readable without any key. While
recording, the recorder instead seals exactly one segment per ``SEAL_INTERVAL``
on a grid that starts when it starts (or resumes), with whatever the interval
held, nothing included (``Vault.append`` seals an empty batch as a padded
segment like any other). A day's row count then says how long the recorder
ran, plus one row per pause and per stop (their markers are sealed at once).

Why 30 seconds: a killed recorder (power loss, ``kill -9``) loses what was not
sealed yet, up to one interval; 30 s bounds that to half a minute of activity.
A shorter interval costs disk even when nothing happens: every interval adds a
256-byte ciphertext (plus SQLite's row overhead), 2,880 rows and about 0.9 MB a
day of uptime at 30 s, about 12 MB over the default 14-day retention, far under
the 500 MiB quota (``simulations/benchmarks/vault.py`` measures it).
"""

from __future__ import annotations

import math
from typing import Final

SEAL_INTERVAL: Final = 30.0


def next_grid_point(last: float, now: float, interval: float) -> float:
    """Where the grid stands after sealing at ``now``; ``last`` is the previous grid point.

    A seal that is due (``now - last >= interval``) keeps the grid: the new point is
    the last whole interval at or before ``now``, so late ticks do not drift the
    cadence and a suspended laptop does not catch up with a burst of rows. An early
    seal (a pause or a stop) starts a new grid at ``now``.
    """
    if interval <= 0 or now - last < interval:
        return now
    return last + math.floor((now - last) / interval) * interval
