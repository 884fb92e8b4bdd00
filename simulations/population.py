"""Seed a population of synthetic employees, each with its own encrypted vault.

Simulated devices read their data exactly as laptops do, from a vault; the only
difference is the key: a synthetic passphrase file in the simulation root, which
exists because these employees are made up.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from client.learning.device import SIM_PASSPHRASE_FILE, simulated_device_home
from client.storage.home import ensure_private_dir
from client.storage.keys import passphrase_kek, wrap_with_kek, write_key_file
from client.storage.synthetic import MARKER_FILE, read_marker
from client.storage.vault import Vault
from policy.events import Event
from simulations.generator import generate_employee

SEGMENT_EVENTS = 2_000
CHUNK = 50  # employees per task: progress moves, tasks amortize their start


@dataclass(frozen=True)
class Population:
    """Where a seeded population lives and how big it is."""

    root: Path
    employees: int
    events: int


def _write(vault: Vault, events: Iterable[Event]) -> int:
    batch: list[Event] = []
    count = 0
    for event in events:
        batch.append(event)
        if len(batch) >= SEGMENT_EVENTS:
            vault.append(batch)
            count += len(batch)
            batch = []
    if batch:
        vault.append(batch)
        count += len(batch)
    return count


def _new_key(directory: Path, kek: bytes, salt: bytes) -> bytes:
    """A fresh data key for ``directory``, wrapped under the population's KEK."""
    ensure_private_dir(directory)
    data_key = AESGCM.generate_key(bit_length=256)
    write_key_file(directory, wrap_with_kek(data_key, kek, salt))
    return data_key


@dataclass(frozen=True)
class _Chunk:
    """Employees one worker seeds (the KEK is synthetic: it may cross processes)."""

    root: Path
    employees: range
    seed: int
    hours: float
    kek: bytes
    salt: bytes


def new_simulation_root(root: Path) -> tuple[bytes, bytes]:
    """Replace any devices under ``root``; a fresh synthetic passphrase, its KEK and salt.

    Every simulated vault's data key is wrapped under this KEK: the synthetic
    employees share one passphrase (in ``root``), since they are made up.
    """
    devices = root / "devices"
    if devices.exists():
        shutil.rmtree(devices)
    ensure_private_dir(root)
    passphrase_file = root / SIM_PASSPHRASE_FILE
    passphrase = secrets.token_urlsafe(24)
    passphrase_file.write_text(passphrase)
    passphrase_file.chmod(0o600)
    salt = os.urandom(16)
    return passphrase_kek(passphrase, salt), salt


def new_device_vault(root: Path, device: int, kek: bytes, salt: bytes) -> Vault:
    """A simulated device's home with its ledger key and a new, empty vault, open."""
    home = simulated_device_home(root, device)
    _new_key(home / "privacy", kek, salt)
    return Vault(home / "vault", _new_key(home / "vault", kek, salt))


def write_events(vault: Vault, events: Iterable[Event]) -> int:
    """Append ``events`` in segments of ``SEGMENT_EVENTS``; returns how many."""
    return _write(vault, events)


def _seed_chunk(chunk: _Chunk) -> tuple[int, int]:
    """Seed a chunk of employees; returns (employees, events)."""
    events = 0
    for employee in chunk.employees:
        with new_device_vault(chunk.root, employee, chunk.kek, chunk.salt) as vault:
            events += _write(vault, generate_employee(employee, chunk.seed, hours=chunk.hours))
    return len(chunk.employees), events


def _tally(results: Iterable[tuple[int, int]], progress: Callable[[int], None] | None) -> int:
    total, done = 0, 0
    for seeded, events in results:
        done += seeded
        total += events
        if progress is not None:
            progress(done)
    return total


def seed_population(
    root: Path,
    employees: int,
    seed: int,
    hours: float,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> Population:
    """Create ``employees`` device homes under ``root`` (replacing any earlier ones).

    Every synthetic employee shares one passphrase, so their key files share one
    scrypt salt too: the KEK is derived once for the population (0.1 s) instead of
    once per vault and once per ledger. Each vault and each ledger still has its own
    random data key in an ordinary key file. ``progress`` is called with the number
    of employees seeded so far; ``workers`` processes seed chunks of employees in
    parallel (each employee's events depend only on the seed and its id).
    """
    if employees < 1:
        raise ValueError("a population needs at least one employee")
    kek, salt = new_simulation_root(root)
    jobs = [
        _Chunk(root, range(start, min(start + CHUNK, employees)), seed, hours, kek, salt)
        for start in range(0, employees, CHUNK)
    ]
    if workers <= 1 or len(jobs) == 1:
        total = _tally(map(_seed_chunk, jobs), progress)
    else:
        # Fork: a spawned worker would import hearth-sim's whole world again (torch:
        # seconds, 400 MB); the workers only generate events and write vaults.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            total = _tally(
                (f.result() for f in as_completed(pool.submit(_seed_chunk, j) for j in jobs)),
                progress,
            )
    return Population(root, employees, total)


class SeedError(Exception):
    """A device home that must not receive synthetic events (the message says why)."""


def seed_device(home: Path, employee: int = 0, seed: int = 7, hours: float = 1.0) -> int:
    """Fill a laptop's vault under ``home`` with one synthetic employee's work, marked synthetic.

    The vault's key comes from where the laptop's own comes from (the OS keyring, or
    ``HEARTH_PASSPHRASE``), so ``hearth`` on that laptop opens it. A vault that holds
    a real recording (no synthetic mark) is refused: made-up events are never mixed
    into someone's work. Returns the number of events written.
    """
    vault_dir = home / "vault"
    marker = read_marker(home)
    if vault_dir.exists() and marker is None:
        raise SeedError(
            f"{home} already holds a vault that is not synthetic; seed-device never mixes "
            "made-up events into a recording: choose an empty HEARTH_HOME"
        )
    ensure_private_dir(home)
    with Vault.open(vault_dir) as vault:
        count = _write(vault, generate_employee(employee, seed, hours=hours))
    record = {
        "source": "hearth-sim seed-device",
        "employee": employee,
        "seed": seed,
        "events": count + int((marker or {}).get("events", 0)),
        "seeded_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    (home / MARKER_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return count
