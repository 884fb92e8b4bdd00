"""Seed a population of synthetic employees, each with its own encrypted vault.

Simulated devices read their data exactly as laptops do, from a vault; the only
difference is the key: a synthetic passphrase file in the simulation root, which
exists because these employees are made up.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from client.device import SIM_PASSPHRASE_FILE, simulated_device_home
from client.home import ensure_private_dir
from client.vault import Vault
from policy.events import Event
from simulations.generator import generate_employee

SEGMENT_EVENTS = 2_000


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


def seed_population(root: Path, employees: int, seed: int, hours: float) -> Population:
    """Create ``employees`` device homes under ``root`` (replacing any earlier ones)."""
    if employees < 1:
        raise ValueError("a population needs at least one employee")
    devices = root / "devices"
    if devices.exists():
        shutil.rmtree(devices)
    ensure_private_dir(root)
    passphrase_file = root / SIM_PASSPHRASE_FILE
    passphrase = secrets.token_urlsafe(24)
    passphrase_file.write_text(passphrase)
    passphrase_file.chmod(0o600)
    total = 0
    for employee in range(employees):
        home = simulated_device_home(root, employee)
        with Vault.open(home / "vault", passphrase) as vault:
            total += _write(vault, generate_employee(employee, seed, hours=hours))
    return Population(root, employees, total)
