"""The real deployment path: round time, bytes per device, SuperLink memory.

One federation of real processes on 127.0.0.1 per size (``hearth-server up``
with TLS and SuperNode authentication, ``hearth join`` devices through the
byte-counting TLS tap of ``simulations.deployment``) runs the same short
campaign twice, without and then with SecAgg+, side by side. A round's time and
bytes are taken between two consecutive checkpoints (the last round), so the
ServerApp's start and the bundle download are not counted; bytes are the
plaintext HTTP bytes a device sends and receives (Flower 1.41's Fleet API is
protobuf over HTTPS; TLS adds a few percent), idle polling included. The
SuperLink's resident memory is sampled every 0.25 s.
Training is kept tiny (two steps of 32 examples): this measures the protocol.

Every device here shares two cores with the SuperLink, which in a deployment has
its own machine, so the SuperLink runs at a higher priority than the devices. At
20 devices a round's time is mostly the devices' training queueing for those two
cores, not the protocol; the ratios are the figures to compare. Each round-time
figure says how many devices reached the aggregate (a device whose reply was lost
makes the round wait out its timeout).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from simulations.benchmarks import Measurement
from simulations.deployment import Federation, federation

SUBJECT = "deployment"
ROUND_TIMEOUT = 120.0  # per stage of a round; more for large federations on two cores


@dataclass
class _Sampler:
    """Peak RSS of the SuperLink process, and of it with its children (the ServerApp)."""

    fed: Federation
    peak: int = 0
    peak_tree: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            link = self.fed.superlink()
            if link is None:
                continue
            with contextlib.suppress(psutil.Error):
                own = link.memory_info().rss
                tree = own + sum(c.memory_info().rss for c in link.children(recursive=True))
                self.peak, self.peak_tree = max(self.peak, own), max(self.peak_tree, tree)

    def __enter__(self) -> _Sampler:
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()


@dataclass(frozen=True)
class _Campaign:
    round_seconds: float
    sent_per_device: float
    received_per_device: float
    trained: int  # devices whose update reached the aggregate (the rest timed out)


def _round_timeout(devices: int) -> float:
    """Every device's task of a stage may queue behind the others' on a two-core machine."""
    return max(ROUND_TIMEOUT, 10.0 * devices)


def _campaign(
    fed: Federation, secaggplus: bool, rounds: int, round_timeout: float | None = None
) -> _Campaign:
    """Run one campaign; the last round's time and bytes per device."""
    round_timeout = round_timeout or _round_timeout(len(fed.homes))
    checkpoints = fed.root / f"campaign-{'secagg' if secaggplus else 'plain'}"
    marks: dict[int, tuple[float, int, int]] = {}
    done = threading.Event()

    def watch() -> None:  # the moment each round's checkpoint appears, with the tap's counts
        while not done.is_set():
            for r in range(1, rounds + 1):
                if r not in marks and (checkpoints / f"round-{r:04d}.json").exists():
                    marks[r] = (time.perf_counter(), *fed.tap.counts())
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    overrides: dict[str, object] = {
        "num-server-rounds": rounds,
        "secaggplus": secaggplus,
        "round-timeout": round_timeout,
        "checkpoint-dir": str(checkpoints),
        "policy-file": str(fed.policy),
        "bundle-signature": fed.token(),
    }
    budget = round_timeout * 5 * rounds
    started = time.monotonic()
    log = fed.flwr_run(overrides, timeout=budget)
    # `flwr run --stream` may return before the campaign ends (its log stream dropped
    # on a loaded machine): the checkpoints say when it did.
    while rounds not in marks and time.monotonic() - started < budget:
        time.sleep(0.5)
    time.sleep(0.2)
    done.set()
    if rounds not in marks or rounds - 1 not in marks:
        raise RuntimeError(f"campaign did not finish {rounds} rounds:\n{log[-2000:]}")
    (t0, s0, r0), (t1, s1, r1) = marks[rounds - 1], marks[rounds]
    devices = len(fed.homes)
    last = json.loads((checkpoints / f"round-{rounds:04d}.json").read_text())
    trained = int(last["fit"].get("clients_trained", 0))
    if trained == 0:
        raise RuntimeError(
            f"no device trained in round {rounds}: {json.dumps(last['fit'])};"
            f" devices: {fed.device_outcomes()}"
        )
    return _Campaign(t1 - t0, (s1 - s0) / devices, (r1 - r0) / devices, trained)


def _prioritise_superlink(fed: Federation) -> None:
    """Give the server side its own machine's share of the CPU (see the module note)."""
    link = fed.superlink()
    if link is not None:
        with contextlib.suppress(psutil.Error):  # not root: measure without it
            link.nice(-5)


def _measure(devices: int, rounds: int) -> list[Measurement]:
    with (
        tempfile.TemporaryDirectory(prefix="hearth-bench-deploy-") as tmp,
        # Two campaigns on the same devices: a cap that lasts both (this measures the protocol).
        federation(Path(tmp), devices, keep_sent=False, device_epsilon_cap=1000.0) as fed,
        _Sampler(fed) as sampler,
    ):
        _prioritise_superlink(fed)
        plain = _campaign(fed, secaggplus=False, rounds=rounds)
        secagg = _campaign(fed, secaggplus=True, rounds=rounds)
    at = f"{devices} SuperNodes"
    out = []
    for label, c in (("FedAvg", plain), ("SecAgg+", secagg)):
        out += [
            Measurement(
                SUBJECT,
                f"round time, {label}, {at}",
                c.round_seconds,
                "s",
                note=f"{c.trained} of {devices} devices in the aggregate"
                + ("" if c.trained == devices else "; the round waited out its timeout"),
            ),
            Measurement(
                SUBJECT,
                f"bytes per device per round, {label}, {at}",
                c.sent_per_device + c.received_per_device,
                "B",
                note=f"sent {c.sent_per_device:,.0f} B, received {c.received_per_device:,.0f} B",
            ),
        ]
    plain_bytes = plain.sent_per_device + plain.received_per_device
    secagg_bytes = secagg.sent_per_device + secagg.received_per_device
    out += [
        Measurement(
            SUBJECT,
            f"SecAgg+ / FedAvg round time, {at}",
            secagg.round_seconds / plain.round_seconds,
            "x",
        ),
        Measurement(
            SUBJECT, f"SecAgg+ / FedAvg bytes per device, {at}", secagg_bytes / plain_bytes, "x"
        ),
        Measurement(
            SUBJECT,
            f"SuperLink peak RSS, {at}",
            sampler.peak / 2**20,
            "MiB",
            note=f"with its ServerApp and executor: {sampler.peak_tree / 2**20:,.0f} MiB",
        ),
    ]
    return out


def run(quick: bool, sizes: tuple[int, ...] | None = None) -> list[Measurement]:
    """Quick: 5 SuperNodes. Full: 5 and 20. Two rounds per mode; the second is measured."""
    sizes = sizes or ((5,) if quick else (5, 20))
    rounds = 2
    results: list[Measurement] = []
    for devices in sizes:
        results += _measure(devices, rounds)
    return results
