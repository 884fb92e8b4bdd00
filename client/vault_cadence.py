"""When the recorder seals a segment, and how big it is: one fixed size, on a fixed grid.

Sealing a segment whenever something happened makes the number of rows in
``vault.db`` per day the number of active seconds, readable without any key. While
recording, the recorder instead seals exactly one segment per ``SEAL_INTERVAL``
on a grid that starts when it starts (or resumes), with whatever the interval
held, nothing included (``Vault.append`` seals an empty batch as a padded
segment like any other). A day's row count then says how long the recorder
ran, plus one row per pause and per stop (their markers are sealed at once).

The size of a row would still tell a busy interval from a quiet one, so every
interval's segment is padded to one fixed class (``segment_class``), never
smaller, and takes only what fits it (``next_segment``); the rest waits, in
memory, for the next interval (the backlog: dropped by a pause or revocation
like everything unwritten, sealed at stop). Only when the backlog would exceed
``BACKLOG_INTERVALS`` intervals of capacity does a segment take a larger class,
the smallest that brings it back under the bound.

Why 1 KiB: on the synthetic workdays of ``simulations/benchmarks/vault.py`` a
30 s interval holds 73 B of compressed events at the median, 1.3 KB at the
90th percentile and 2.4 KB at most, 330 KB over an 8-hour day. 256 B a row would
not keep up (245 KB of capacity over those 8 hours: the backlog would grow all
day); 1 KiB has three times the workday's volume and drains a burst within
minutes; 4 KiB would need no backlog at all but costs more than three times the
disk. Measured for a recorder up 24 h: ``vault.db`` grows 4.0 MB a day at 1 KiB
(SQLite fits three such rows in a 4 KiB page), 13.3 MB at 4 KiB, 1.6 MB with
each row padded to its smallest class; over the default 14-day retention 56 MB
against 187 MB, beside the 500 MiB quota. With screens granted a thumbnail alone
costs up to 2.7 KB sealed (64x40 gray, base64 in the record; a flat screen
0.1 KB), so the class is 4 KiB: one changed screen per interval fits beside the
interval's events; a screen changing every 5 s (the sampler's fastest) outruns
the backlog and shows as larger rows.

Why 4 intervals: what a killed recorder (power loss, ``kill -9``) loses is what
it had not sealed, the current interval plus the backlog. The bound keeps the
backlog to 4 KiB of compressed events; on 8 synthetic workdays the largest was
3.9 KiB and no event waited more than 5 intervals (a crash loses at most the
last 180 s), while only 10 of 23,040 interval rows took a larger class.

What still leaks: a larger row when a burst outruns the backlog bound (those
10 rows: about one a day, each saying "a long burst around here"); the stop's
row, which holds the whole backlog (larger when more than one class was
waiting); and whether screens is granted (the class), which is consent, not
activity.

Why 30 seconds: 30 s bounds crash loss to the interval plus the backlog; a
shorter interval costs disk even when nothing happens: every interval adds a
1 KiB ciphertext, 2,880 rows and 4.0 MB a day of uptime at 30 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from client.vault import PADDED_SIZES, framed_size
from policy.events import Event, Modality

if TYPE_CHECKING:  # consent pulls in the privacy policy (numpy): this stays light
    from client.consent import ConsentRecord

SEAL_INTERVAL: Final = 30.0
SEGMENT_CLASS: Final = 1024  # every interval's row, without screens
SCREENS_CLASS: Final = 4096  # with screens granted: a thumbnail costs up to 2.7 KB
BACKLOG_INTERVALS: Final = 4  # the backlog a segment may leave behind, in its class


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


def segment_class(consent: ConsentRecord | None) -> int:
    """The fixed size of every interval's segment under ``consent``."""
    screens = consent is not None and consent.allows(Modality.SCREENS)
    return SCREENS_CLASS if screens else SEGMENT_CLASS


def next_segment(
    pending: Sequence[Event], consent: ConsentRecord | None, stopping: bool = False
) -> tuple[list[Event], int]:
    """The oldest events of ``pending`` to seal now, and the class to pad them to.

    What fits the fixed class; when what is left would exceed the backlog bound
    (or the oldest event alone does not fit), the smallest larger class that
    fixes that. ``stopping`` takes everything (the stop's row). The order of
    events is kept: the rest stays at the front of ``pending`` for next time.
    """
    size = segment_class(consent)
    if stopping or not pending:
        return list(pending), size
    bound = BACKLOG_INTERVALS * size
    for cls in (c for c in PADDED_SIZES if c >= size):
        count = _fitting(pending, cls)
        if count and _within(pending[count:], bound):
            return list(pending[:count]), cls
    return list(pending), size  # more than the largest class: all of it, whole MiB


def _fitting(events: Sequence[Event], size: int) -> int:
    """How many of the oldest ``events`` fit one segment of ``size`` (gallop, then bisect)."""
    fits = 0
    probe = 1
    while probe <= len(events) and framed_size(events[:probe]) <= size:
        fits, probe = probe, probe * 2
    high = min(probe, len(events) + 1)  # the first count known (or assumed) not to fit
    while high - fits > 1:
        middle = (fits + high) // 2
        if framed_size(events[:middle]) <= size:
            fits = middle
        else:
            high = middle
    return fits


def _within(events: Sequence[Event], bound: int) -> bool:
    """Whether ``events`` would take at most ``bound`` bytes, without encoding all of a flood."""
    probe = 1
    while True:
        if framed_size(events[:probe]) > bound:
            return False
        if probe >= len(events):
            return True
        probe *= 2
