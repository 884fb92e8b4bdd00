"""Vault throughput with encryption on, so storage is never the recorder's bottleneck.

Writes realistic, already-minimized events (a synthetic employee's day) in
segments the size a recorder flushes once a second, then streams them back the
way the trainer does. CPU time of this process is reported next to wall time.

The disk cost of constant-rate sealing (``client.vault_cadence``) is measured side
by side on the same workday: one segment per second with activity (the old
recorder), one per ``SEAL_INTERVAL`` of uptime padded to the smallest class that
fits (the cadence before fixed classes), and one per interval at the fixed class
with the carry-over backlog (what the recorder does now); segments and bytes per
day for a recorder that runs all day (the workday's events, then idle). For the
fixed class it also reports the largest backlog (bytes, and how many intervals
its oldest event waited: what a killed recorder loses) and how many rows took a
larger class, over several synthetic employees.
"""

from __future__ import annotations

import math
import sqlite3
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

from client.day_keys import DAY_SECONDS
from client.vault import DB_FILE, Vault, framed_size
from client.vault_cadence import (
    BACKLOG_INTERVALS,
    SEAL_INTERVAL,
    SEGMENT_CLASS,
    next_segment,
)
from policy.events import Event
from simulations.benchmarks import Measurement
from simulations.generator import generate_employee

SUBJECT = "vault"
TARGET_WRITE = 50_000
BENCH_PASSPHRASE = "benchmark only"  # noqa: S105 - a throwaway vault of synthetic events


def _events(total: int) -> list[Event]:
    events: list[Event] = []
    employee = 0
    while len(events) < total:
        day = generate_employee(employee, seed=1, hours=8)
        offset = len(events)
        events.extend(replace(e, seq=offset + i) for i, e in enumerate(day))
        employee += 1
    return events[:total]


def _write(vault: Vault, events: list[Event], batch: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(events), batch):
        vault.append(events[start : start + batch])
    return time.perf_counter() - wall, time.process_time() - cpu


def _day_on_disk(
    directory: Path, batches: list[list[Event]], slot: float, pads: list[int] | None = None
) -> tuple[int, int]:
    """(segments, bytes of vault.db) once ``batches`` are sealed, one per ``slot`` seconds."""
    start = 20_000 * DAY_SECONDS  # one UTC day: the segments all land in it
    with Vault.open(directory, passphrase=BENCH_PASSPHRASE) as vault:
        for index, batch in enumerate(batches):
            pad = pads[index] if pads is not None else 0
            vault.append(batch, wall_time=start + index * slot, pad_to=pad)
        vault._checkpoint()  # the WAL folded in: the file is what the day left
    db = sqlite3.connect(directory / DB_FILE)
    try:
        rows = int(db.execute("SELECT COUNT(*) FROM segments").fetchone()[0])
    finally:
        db.close()
    return rows, (directory / DB_FILE).stat().st_size


@dataclass(frozen=True)
class _FixedDay:
    """The recorder's fixed-class sealing replayed over one day's intervals."""

    batches: list[list[Event]]
    pads: list[int]
    max_backlog: int  # bytes (framed) waiting after a seal
    max_wait: int  # intervals the oldest waiting event had waited
    larger: int  # interval rows that took a class above the fixed one


def _fixed(slots: list[list[Event]]) -> _FixedDay:
    """Seal ``slots`` as the recorder does: what fits the class; the rest waits; stop drains."""
    pending: list[Event] = []
    born: list[int] = []  # the interval each waiting event arrived in
    batches: list[list[Event]] = []
    pads: list[int] = []
    max_backlog = max_wait = larger = 0
    for index, slot in enumerate(slots):
        pending += slot
        born += [index] * len(slot)
        batch, pad = next_segment(pending, None)
        batches.append(batch)
        pads.append(pad)
        larger += pad > SEGMENT_CLASS
        del pending[: len(batch)], born[: len(batch)]
        if pending:
            max_backlog = max(max_backlog, framed_size(pending))
            max_wait = max(max_wait, index + 1 - born[0])
    batch, pad = next_segment(pending, None, stopping=True)
    batches.append(batch)
    pads.append(pad)
    return _FixedDay(batches, pads, max_backlog, max_wait, larger)


def _slots(events: list[Event], count: int) -> list[list[Event]]:
    by_slot: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_slot[int(event.t // SEAL_INTERVAL)].append(event)
    return [by_slot.get(i, []) for i in range(count)]


def _cadence(root: Path, quick: bool) -> list[Measurement]:
    """Segments and bytes per day: one per active second, one per interval, fixed class."""
    hours = 2.0 if quick else 8.0
    events = generate_employee(0, seed=1, hours=hours)
    by_second: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_second[int(event.t)].append(event)
    old = [by_second[s] for s in sorted(by_second)]
    # The recorder runs the whole day: the workday's slots, then idle (empty) ones.
    slots = math.ceil(DAY_SECONDS / SEAL_INTERVAL)
    new = _slots(events, slots)
    fixed = _fixed(new)
    old_rows, old_bytes = _day_on_disk(root / "cadence-old", old, 1.0)
    new_rows, new_bytes = _day_on_disk(root / "cadence-new", new, SEAL_INTERVAL)
    fixed_rows, fixed_bytes = _day_on_disk(
        root / "cadence-fixed", fixed.batches, SEAL_INTERVAL, fixed.pads
    )
    # The backlog over more workdays (no disk needed: the replay alone).
    employees = 2 if quick else 8
    days = [fixed] + [
        _fixed(_slots(generate_employee(e, seed=1, hours=hours), slots))
        for e in range(1, employees)
    ]
    note = f"{hours:g} h synthetic workday, recorder up 24 h; {len(events):,} events"
    many = f"{employees} synthetic {hours:g} h workdays, {SEGMENT_CLASS} B class"
    return [
        Measurement(
            SUBJECT,
            "segments per day, old cadence (1 per active second)",
            old_rows,
            "rows",
            note=note,
        ),
        Measurement(
            SUBJECT,
            f"segments per day, {SEAL_INTERVAL:g} s cadence (uptime only)",
            new_rows,
            "rows",
            note=note,
        ),
        Measurement(SUBJECT, "vault.db bytes per day, old cadence", old_bytes, "bytes", note=note),
        Measurement(
            SUBJECT,
            f"vault.db bytes per day, {SEAL_INTERVAL:g} s cadence",
            new_bytes,
            "bytes",
            note=f"{new_bytes / old_bytes:.2f}x the old cadence; {note}",
        ),
        Measurement(
            SUBJECT,
            f"segments per day, {SEAL_INTERVAL:g} s cadence, fixed {SEGMENT_CLASS} B class",
            fixed_rows,
            "rows",
            note=f"{fixed.larger} interval rows above the class; {note}",
        ),
        Measurement(
            SUBJECT,
            f"vault.db bytes per day, {SEAL_INTERVAL:g} s cadence, fixed {SEGMENT_CLASS} B class",
            fixed_bytes,
            "bytes",
            note=(
                f"{fixed_bytes / new_bytes:.2f}x smallest-class padding, "
                f"{fixed_bytes / old_bytes:.2f}x the old cadence; {note}"
            ),
        ),
        Measurement(
            SUBJECT,
            "largest carry-over backlog, fixed class",
            max(d.max_backlog for d in days),
            "bytes",
            f"<= {BACKLOG_INTERVALS * SEGMENT_CLASS:,} (the bound)",
            max(d.max_backlog for d in days) <= BACKLOG_INTERVALS * SEGMENT_CLASS,
            note=many,
        ),
        Measurement(
            SUBJECT,
            "longest wait of an unsealed event (crash-loss window), fixed class",
            (max(d.max_wait for d in days) + 1) * SEAL_INTERVAL,
            "s",
            note=f"the current interval plus the backlog's oldest; {many}",
        ),
        Measurement(
            SUBJECT,
            "interval rows above the fixed class",
            sum(d.larger for d in days),
            "rows",
            note=f"of {sum(len(d.pads) - 1 for d in days):,}; {many}",
        ),
    ]


def run(quick: bool) -> list[Measurement]:
    """Sustained write rate at two segment sizes, the streaming read rate, the cadence's disk."""
    total = 50_000 if quick else 300_000
    events = _events(total)
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="hearth-bench-vault-") as tmp:
        for batch in (1_000, 200):
            with Vault.open(Path(tmp) / f"vault-{batch}", passphrase=BENCH_PASSPHRASE) as vault:
                wall, cpu = _write(vault, events, batch)
                rate = total / cpu
                results.append(
                    Measurement(
                        SUBJECT,
                        f"write, {batch} events per segment (per CPU-second)",
                        rate,
                        "events/s",
                        f">= {TARGET_WRITE:,}",
                        rate >= TARGET_WRITE,
                        note=f"{total:,} events; wall {total / wall:,.0f}/s",
                    )
                )
        with Vault.open(Path(tmp) / "vault-1000", passphrase=BENCH_PASSPHRASE) as vault:
            wall, cpu = time.perf_counter(), time.process_time()
            count = sum(1 for _ in vault.iter_events())
            cpu = time.process_time() - cpu
            wall = time.perf_counter() - wall
        results.append(
            Measurement(
                SUBJECT,
                "read for training (per CPU-second)",
                count / cpu,
                "events/s",
                note=f"wall {count / wall:,.0f}/s, one segment in memory at a time",
            )
        )
        results += _cadence(Path(tmp), quick)
    return results
