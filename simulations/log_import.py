"""`hearth-sim import-log`: an event log becomes simulated devices, each with an encrypted vault.

A log's cases are dealt to ``devices`` simulated devices (in blocks of time, or at
random) and written into each device's vault as ``Activity`` events, through the
vault's public API: sealed per segment, under a data key wrapped like every
simulated device's. Nothing of the log is kept in the clear but its vocabulary
(the distinct activity names), written into the model's configuration beside the
devices (``log-model.json``), as every checkpoint carries it.

`hearth-sim train-log` then federates on those vaults in process: each device
reads its own vault, keeps the newest third of its cases to test, and trains the
same DP-SGD local round a laptop runs; the global model is written as a checkpoint
that ``hearth-server model`` and ``load_policy`` read, its predictions the log's
activities.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import numpy as np

from client.learning.device import SIM_PASSPHRASE_FILE, simulated_device_home
from client.learning.device_cache import data_key
from client.storage.keys import read_key_file
from client.storage.vault import Vault
from policy.baselines import NGram
from policy.events import MAX_ACTIVITY_LENGTH, Activity
from policy.model import ModelConfig, get_arrays
from policy.model_version import model_version
from server.checkpoints import save_checkpoint
from simulations.event_log import (
    MIN_TEST_PREFIX,
    Case,
    EventLogError,
    case_examples,
    device_partition,
    log_model_config,
    split_cases,
)
from simulations.inprocess import federate, mean_accuracy
from simulations.log_evaluation import DELTA, LogSettings, dp_federation
from simulations.population import new_device_vault, new_simulation_root, write_events

LOG_MODEL_FILE: Final = "log-model.json"


class Split(StrEnum):
    """How cases are dealt to devices."""

    TIME = "time"  # contiguous blocks of cases by start: device 0 has the oldest
    RANDOM = "random"  # each device a random share, each share in time order


@dataclass(frozen=True)
class ImportedLog:
    """What an import wrote."""

    root: Path
    devices: int
    cases: int
    events: int
    config: ModelConfig


def split_devices(cases: Sequence[Case], devices: int, split: Split, seed: int) -> list[list[Case]]:
    """Deal ``cases`` to ``devices``; every device gets at least one case."""
    if not 1 <= devices <= len(cases):
        raise EventLogError(f"--devices must be between 1 and the log's {len(cases)} cases")
    if split is Split.TIME:
        return device_partition(cases, devices)
    order = np.random.default_rng(seed).permutation(len(cases))
    return [[cases[i] for i in sorted(block)] for block in np.array_split(order, devices)]


def activity_events(cases: Sequence[Case]) -> Iterator[Activity]:
    """One device's cases as vault events, case numbers in the order given."""
    seq = 0
    for number, case in enumerate(cases):
        for step, name in enumerate(case.activities):
            yield Activity(seq, case.time_of(step), number, name)
            seq += 1


def import_log(
    cases: Sequence[Case],
    root: Path,
    devices: int,
    split: Split = Split.TIME,
    context_length: int = 8,
    seed: int = 7,
    source: str = "",
) -> ImportedLog:
    """Write one encrypted vault per device under ``root`` (replacing earlier devices)."""
    long = [a for c in cases for a in c.activities if len(a) > MAX_ACTIVITY_LENGTH]
    if long:
        raise EventLogError(
            f"an activity name is longer than {MAX_ACTIVITY_LENGTH} characters: {long[0][:40]!r}..."
        )
    parts = split_devices(cases, devices, split, seed)
    config = log_model_config(cases, context_length)
    kek, salt = new_simulation_root(root)
    events = 0
    for device, part in enumerate(parts):
        with new_device_vault(root, device, kek, salt) as vault:
            events += write_events(vault, activity_events(part))
    record = {
        "source": source,
        "devices": devices,
        "split": split.value,
        "cases": len(cases),
        "model": config.to_dict(),
    }
    (root / LOG_MODEL_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return ImportedLog(root, devices, len(cases), events, config)


def imported_config(root: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model configuration (with the log's vocabulary) an import wrote, and its record."""
    path = root / LOG_MODEL_FILE
    if not path.is_file():
        raise EventLogError(f"{root} holds no imported log (no {LOG_MODEL_FILE}): run import-log")
    record = json.loads(path.read_text())
    return ModelConfig.from_dict(record["model"]), record


def vault_cases(vault: Vault) -> list[Case]:
    """A device's cases as its vault holds them (other events are not a log's)."""
    by_case: dict[int, list[Activity]] = {}
    for event in vault.iter_events():
        if isinstance(event, Activity):
            by_case.setdefault(event.case, []).append(event)
    return [
        Case(
            f"{number}",
            tuple(e.name for e in rows),
            rows[0].t,
            tuple(e.t for e in rows),
        )
        for number, rows in sorted(by_case.items())
    ]


def device_cases(root: Path, devices: int) -> list[list[Case]]:
    """Every simulated device's cases, each read from its own vault."""
    passphrase = (root / SIM_PASSPHRASE_FILE).read_text().strip()
    out = []
    for device in range(devices):
        vault_dir = simulated_device_home(root, device) / "vault"
        wrapped = read_key_file(vault_dir)
        if wrapped is None:
            raise EventLogError(f"{vault_dir} has no key file: import the log again")
        # The devices share one synthetic passphrase: its KEK is derived once.
        with Vault(vault_dir, data_key(vault_dir, passphrase), wrapped.generation) as vault:
            out.append(vault_cases(vault))
    return out


@dataclass(frozen=True)
class ImportedTraining:
    """A federation on imported vaults, scored on each device's newest cases."""

    checkpoint: Path
    top1: float
    top3: float
    ngram_top1: float
    ngram_top3: float
    test_predictions: int
    learning_rate: float
    noise: float


def train_imported(
    root: Path, settings: LogSettings, checkpoint_dir: Path | None = None
) -> ImportedTraining:
    """Federate with DP-SGD on the imported vaults; write the global model's checkpoint.

    Each device splits its own cases by start (two thirds train, the newest third
    tests, after every prefix of two or more); the n-gram is fitted on every
    device's training cases pooled, a yardstick no real deployment could have.
    """
    config, record = imported_config(root)
    directory = checkpoint_dir or root / "checkpoints"
    if any(directory.glob("round-*.json")):
        raise EventLogError(
            f"{directory} already holds checkpoints: remove it or pass another --checkpoint-dir"
        )
    parts = [split_cases(cases) for cases in device_cases(root, int(record["devices"]))]
    clients = [case_examples(train, config) for train, _ in parts]
    tests = [case_examples(test, config, MIN_TEST_PREFIX) for _, test in parts]
    if not any(len(c) for c in clients) or not any(len(t) for t in tests):
        raise EventLogError("each device needs a few cases: import with fewer --devices")
    federation, noise, search = dp_federation(clients, config, settings)
    model = federate(clients, federation, config)
    top1, top3 = (float(v) for v in mean_accuracy(model, tests))
    pooled = [c for c in clients if len(c)]
    ngram = NGram(
        np.concatenate([c.context for c in pooled]), np.concatenate([c.target for c in pooled]), 3
    )
    context = np.concatenate([t.context for t in tests])
    target = np.concatenate([t.target for t in tests])
    arrays = get_arrays(model)
    save_checkpoint(
        directory,
        settings.rounds,
        list(arrays),
        list(arrays.values()),
        {
            "source": f"hearth-sim train-log (in process) on {record.get('source') or root}",
            "evaluate": {"top1": top1, "top3": top3},
            "epsilon_example_cap": settings.epsilon,
            "epsilon_unit": "one example on one device",
            "delta": DELTA,
            "cohort_size": len(pooled),
            "model_version": model_version(arrays.values()),
            "model": config.to_dict(),
        },
    )
    return ImportedTraining(
        directory,
        top1,
        top3,
        ngram.accuracy(context, target, 1),
        ngram.accuracy(context, target, 3),
        len(target),
        search.best,
        noise,
    )
