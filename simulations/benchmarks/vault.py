"""Vault throughput with encryption on, so storage is never the recorder's bottleneck.

Writes realistic, already-minimized events (a synthetic employee's day) in
segments the size a recorder flushes once a second, then streams them back the
way the trainer does. CPU time of this process is reported next to wall time.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

from client.storage.vault import Vault
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


def run(quick: bool) -> list[Measurement]:
    """Sustained write rate at two segment sizes, and the streaming read rate."""
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
    return results
