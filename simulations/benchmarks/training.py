"""Local rounds with and without DP-SGD, delta size, and simulated round times.

The DP and non-DP rounds run side by side, interleaved, on the same employee's
data in one process, so the ratio survives a noisy shared machine.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

from client.learning.device import (
    SIM_POLICY_FILE,
    Device,
    clear_examples_cache,
    simulated_device_home,
)
from client.learning.featurize import split_held_out
from client.learning.training import train_round
from policy.model import NextActionPolicy, count_parameters
from policy.round_contract import DEFAULT_CONTEXT_LENGTH
from privacy.policy import demo_policy_text
from server.checkpoints import read_sidecars
from simulations.benchmarks import Measurement
from simulations.campaign import campaign_train_config
from simulations.flwr_runner import run_app
from simulations.population import seed_population

SUBJECT = "training"


class _PeakRss:
    """Samples this process's RSS in a thread while a block runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def __enter__(self) -> _PeakRss:
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _local_rounds(root: Path, repeats: int) -> list[Measurement]:
    """DP and no-DP rounds interleaved, each as a device runs it in its own ClientApp process.

    The examples cache is cleared before each round: a deployed device starts a
    fresh ClientApp process per round, so it decrypts and featurizes every time.
    """
    seed_population(root, employees=1, seed=7, hours=8.0)
    passphrase = (root / "synthetic.passphrase").read_text()
    device = Device(simulated_device_home(root, 0), passphrase)
    torch.set_num_threads(1)
    rounds: dict[bool, list[float]] = {True: [], False: []}
    training: dict[bool, list[float]] = {True: [], False: []}
    peak = 0
    configs = {private: campaign_train_config(private) for private in (False, True)}
    for _ in range(repeats):
        for private in (False, True):
            clear_examples_cache()
            with _PeakRss() as rss:
                started = time.perf_counter()
                train, _ = split_held_out(device.examples(DEFAULT_CONTEXT_LENGTH), 0.2)
                config = configs[private]
                result = train_round(NextActionPolicy(), train, config)
                rounds[private].append(time.perf_counter() - started)
                training[private].append(result.seconds)
            peak = max(peak, rss.peak)
    dp, plain = statistics.median(rounds[True]), statistics.median(rounds[False])
    dp_train, plain_train = statistics.median(training[True]), statistics.median(training[False])
    params = count_parameters(NextActionPolicy())
    delta_bytes = sum(d.nbytes for d in result.delta)
    shape = (
        f"{len(train)} examples, sample rate {config.sample_rate}, {config.steps} steps "
        f"(the default policy's round), median of {repeats}"
    )
    return [
        Measurement(SUBJECT, "local round, DP-SGD (decrypt + featurize + train)", dp, "s"),
        Measurement(SUBJECT, "local round, no DP (same data, same steps)", plain, "s"),
        Measurement(
            SUBJECT,
            "DP / no-DP time ratio, whole round",
            dp / plain,
            "x",
            "<= 2",
            dp / plain <= 2.0,
            note=shape,
        ),
        Measurement(
            SUBJECT,
            "DP / no-DP time ratio, training steps only",
            dp_train / plain_train,
            "x",
            "<= 2",
            dp_train / plain_train <= 2.0,
            note=(
                f"DP {dp_train * 1000:.0f} ms vs {plain_train * 1000:.0f} ms; clipped sums in "
                "one backward pass (client.learning.clipped_gradients), hardened float64 noise"
            ),
        ),
        Measurement(SUBJECT, "peak RSS during a local round", peak / 2**20, "MiB"),
        Measurement(SUBJECT, "model parameters", params, "count"),
        Measurement(
            SUBJECT, "delta size", delta_bytes, "bytes", note=f"{delta_bytes / params:.1f} B/param"
        ),
    ]


def _round_time(root: Path, clients: int) -> Measurement:
    seed_population(root, employees=clients, seed=7, hours=8.0)
    # The shipped policy's cohort (800 a round) cannot be met by 20 or 100 devices: its
    # rounds would wait out the round timeout and aggregate nothing. The demo policy,
    # as `hearth-sim demo` uses at this size.
    policy_file = root / SIM_POLICY_FILE
    policy_file.write_text(demo_policy_text())
    run = run_app(
        num_supernodes=clients,
        run_config={
            "num-server-rounds": 2,
            "sim-root": str(root),
            "checkpoint-dir": str(root / "checkpoints"),
            "policy-file": str(policy_file),
        },
        flwr_home=root / "flwr-home",
        log_file=root / "flwr.log",
    )
    files = sorted((root / "checkpoints").glob("round-*.json"))
    if run.returncode != 0 or len(files) < 2:
        return Measurement(
            SUBJECT,
            f"simulated round, {clients} clients",
            float("nan"),
            "s",
            note=f"run failed, see {run.log_file}",
        )
    seconds = files[1].stat().st_mtime - files[0].stat().st_mtime
    rows = read_sidecars(root / "checkpoints")
    return Measurement(
        SUBJECT,
        f"simulated round, {clients} clients",
        seconds,
        "s",
        note=f"round 2 (warm); top-1 {rows[-1]['evaluate']['top1']:.3f}",
    )


def run(quick: bool) -> list[Measurement]:
    """Local round ratio and memory, then simulated round times."""
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp:
        root = Path(tmp)
        results = _local_rounds(root / "local", repeats=3 if quick else 9)
        for clients in (4,) if quick else (20, 100):
            results.append(_round_time(root / f"sim-{clients}", clients))
    return results
