"""Seed a population of synthetic employees, each with its own encrypted vault.

Simulated devices read their data exactly as laptops do, from a vault; the only
difference is the key: a synthetic passphrase file in the simulation root, which
exists because these employees are made up.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from client.device import SIM_PASSPHRASE_FILE, simulated_device_home
from client.home import ensure_private_dir
from client.synthetic import MARKER_FILE, read_marker
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
