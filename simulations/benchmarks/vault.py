"""Vault throughput with encryption on, so storage is never the recorder's bottleneck.

Writes realistic, already-minimized events (a synthetic employee's day) in
segments the size a recorder flushes once a second, then streams them back the
way the trainer does. CPU time of this process is reported next to wall time.

The disk cost of constant-rate sealing (``client.vault_cadence``) is measured side
by side with the old cadence on the same workday: one segment per second with
activity (the old recorder) against one per ``SEAL_INTERVAL`` of uptime, empty ones
included; segments and bytes per day for a recorder that runs all day (the
workday's events, then idle).
"""

from __future__ import annotations

import math
import sqlite3
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from client.day_keys import DAY_SECONDS
from client.vault import DB_FILE, Vault
from client.vault_cadence import SEAL_INTERVAL
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


def _day_on_disk(directory: Path, batches: list[list[Event]], slot: float) -> tuple[int, int]:
    """(segments, bytes of vault.db) once ``batches`` are sealed, one per ``slot`` seconds."""
    start = 20_000 * DAY_SECONDS  # one UTC day: the segments all land in it
    with Vault.open(directory, passphrase=BENCH_PASSPHRASE) as vault:
        for index, batch in enumerate(batches):
            vault.append(batch, wall_time=start + index * slot)
        vault._checkpoint()  # the WAL folded in: the file is what the day left
    db = sqlite3.connect(directory / DB_FILE)
    try:
        rows = int(db.execute("SELECT COUNT(*) FROM segments").fetchone()[0])
    finally:
        db.close()
    return rows, (directory / DB_FILE).stat().st_size


def _cadence(root: Path, quick: bool) -> list[Measurement]:
    """Segments and bytes per day: one per active second (old) against one per interval."""
    hours = 2.0 if quick else 8.0
    events = generate_employee(0, seed=1, hours=hours)
    by_second: dict[int, list[Event]] = defaultdict(list)
    by_slot: dict[int, list[Event]] = defaultdict(list)
    for event in events:
        by_second[int(event.t)].append(event)
        by_slot[int(event.t // SEAL_INTERVAL)].append(event)
    old = [by_second[s] for s in sorted(by_second)]
    # The recorder runs the whole day: the workday's slots, then idle (empty) ones.
    slots = math.ceil(DAY_SECONDS / SEAL_INTERVAL)
    new = [by_slot.get(i, []) for i in range(slots)]
    old_rows, old_bytes = _day_on_disk(root / "cadence-old", old, 1.0)
    new_rows, new_bytes = _day_on_disk(root / "cadence-new", new, SEAL_INTERVAL)
    note = f"{hours:g} h synthetic workday, recorder up 24 h; {len(events):,} events"
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
