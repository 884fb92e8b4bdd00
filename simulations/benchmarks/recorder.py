"""The recorder's footprint under real input: CPU share, memory, losses, callback time.

A real X server (Xvfb + openbox) and a real window; ``hearth record`` runs in a
subprocess with every gate and the encrypted vault; xdotool sends real key
presses and clicks (XTEST, seen by pynput through XRecord). Afterwards the vault
is decrypted and every sent event must be in it, with no gap in sequence numbers.
CPU time is the recorder process's own (user + system) over the input phase.

The anchor: ``naive_recorder`` (pynput listeners writing one JSON line per event,
no gates, no encryption) gets the same input in the same run, and the ratios of
CPU and memory are reported. Keys reach the vault as runs (``KeyRun``): an event
is found when a run counts it.

Sizes: ``make bench`` sends 6,000 events (2 minutes at 50/s) to each of the two,
to stay short on a shared machine; ``--events 30000`` is the issue's 10 minutes.
``--quick`` is a smoke run; run alone, the module writes its figures to
``bench/recorder/results.json`` and ``results.md`` (``--out``), each CPU figure
with the machine's load average over its input phase (the machine is shared);
``HEARTH_BENCH_RECORDER_EVENTS`` and
``HEARTH_BENCH_RECORDER_RATE`` override the count and the send rate, and
``python -m simulations.benchmarks.recorder --events N --rate R`` runs it alone.
``--baseline DIR`` first runs the recorder from another checkout (e.g.
``git archive main | tar -x -C DIR``) with the same input, so a change is
measured side by side on the same noisy machine; ``--input pynput`` forces the
pynput listeners instead of the X RECORD source.

On X11 the recorder reads input through X RECORD (``client.recording.capture.input_x11``),
key presses only, on its writer thread; the per-thread note lists the process's
threads in creation order (now main, writer, control socket; a baseline may
have had keyboard and mouse threads after main).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from client.control.consent import grant
from client.storage.vault import Vault
from policy.events import Click, Key, KeyRun, Modality, Thumbnail
from simulations.benchmarks import Measurement, write_results
from simulations.xserver import XServer

SUBJECT = "recorder"
BENCH_PASSPHRASE = "benchmark only"  # noqa: S105 - a throwaway vault
ROOT = Path(__file__).resolve().parents[2]
CHUNK = 100  # characters per xdotool call, then one click
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 "


@dataclass(frozen=True)
class RunResult:
    """What one recorder run measured."""

    sent: int
    found: int
    seq_gaps: int
    send_seconds: float
    cpu_share: float  # percent of one core over the input phase
    idle_cpu_share: float
    peak_rss_mb: float  # the kernel's high-water mark (includes unlocking the vault key)
    steady_rss_mb: float  # the largest RSS sampled while input flowed
    callback_p99_ms: float | None
    dropped: int
    thumbnails: int
    thread_shares: tuple[float, ...]  # percent of one core per thread, in creation order
    load: tuple[float, float]  # the machine's 1-minute load average before and after input


class _X:
    """A private X server (``simulations.xserver``) and one window this process owns."""

    def __init__(self) -> None:
        self.server = XServer()
        self.env = self.server.env
        from Xlib import display  # noqa: PLC0415

        try:
            self.conn: Any = display.Display(self.server.display)
            screen = self.conn.screen()
            self.window = screen.root.create_window(
                0, 0, 1280, 800, 0, screen.root_depth, background_pixel=screen.white_pixel
            )
            self.window.set_wm_class("code", "Code")
            self.window.set_wm_name("bench.py - Code")
            self.window.map()
            self.conn.sync()
        except BaseException:
            self.server.close()
            raise
        self._colors = (screen.white_pixel, screen.black_pixel)
        self._flip = 0

    def activate(self) -> None:
        self.server.activate(self.window.id)

    def change_screen(self) -> None:
        """Repaint the window in the other color, so thumbnails have something to see."""
        self._flip ^= 1
        self.window.change_attributes(background_pixel=self._colors[self._flip])
        self.window.clear_area(0, 0, 0, 0)
        self.conn.sync()

    def close(self) -> None:
        self.conn.close()
        self.server.close()


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _idle_cpu_share(proc: psutil.Process, seconds: float) -> float:
    """Share of one core ``proc`` uses over ``seconds`` with nothing to record."""
    cpu0 = _cpu(proc)
    time.sleep(seconds)
    return 100.0 * (_cpu(proc) - cpu0) / seconds


class _PeakRss:
    """A process's highest resident memory (MB), sampled every half second until stopped."""

    def __init__(self, proc: psutil.Process) -> None:
        self.peak = 0.0
        self._proc = proc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self._proc.memory_info().rss / 2**20)

    def stop(self) -> None:
        """Stop sampling; ``peak`` is final."""
        self._stop.set()
        self._thread.join()


def _send(x: _X, total: int, rate: float, screens: bool) -> tuple[int, float]:
    """Type lowercase letters, digits and spaces, with a click after each chunk."""
    # xdotool spends its delay on both press and release: type in short bursts at
    # twice the rate, then sleep so the average is ``rate``.
    delay_ms = max(1, round(1000 / rate / 2))
    sent = 0
    started = time.monotonic()
    last_flip = started
    i = 0
    while sent < total:
        n = min(CHUNK, total - sent - 1) if total - sent > 1 else 0
        if n > 0:
            text = "".join(_ALPHABET[(i + k) % len(_ALPHABET)] for k in range(n))
            x.server.xdotool("type", "--delay", str(delay_ms), text, timeout=600)
            sent += n
            i += n
        x.server.xdotool("click", "1", timeout=30)
        sent += 1
        ahead = sent / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
        if screens and time.monotonic() - last_flip > 2.0:
            x.change_screen()
            last_flip = time.monotonic()
    return sent, time.monotonic() - started


def _wait_listening(home: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the recorder exited with {process.returncode}")
        try:
            if json.loads((home / "recorder.json").read_text()).get("listening"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError("the recorder did not start listening")


def run_once(
    total: int,
    rate: float,
    screens: bool = False,
    idle_seconds: float = 5.0,
    code: Path = ROOT,
    extra_env: dict[str, str] | None = None,
) -> RunResult:
    """One recorder subprocess running the code under ``code``, ``total`` events at ``rate``/s."""
    x = _X()
    try:
        with tempfile.TemporaryDirectory(prefix="hearth-bench-recorder-") as tmp:
            home = Path(tmp) / "home"
            home.mkdir(mode=0o700)
            modalities = (Modality.POINTER, Modality.KEYS, Modality.APPS)
            grant(home, (*modalities, Modality.SCREENS) if screens else modalities)
            env = {
                **x.env,
                "HEARTH_HOME": str(home),
                "HEARTH_PASSPHRASE": BENCH_PASSPHRASE,
                "HEARTH_KEYRING": "0",
                "PYTHONPATH": str(code),
                **(extra_env or {}),
            }
            recorder = subprocess.Popen(
                [sys.executable, "-m", "client.cli.record"],
                env=env,
                cwd=code,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait_listening(home, recorder)
            proc = psutil.Process(recorder.pid)
            x.activate()
            time.sleep(0.5)
            idle_share = _idle_cpu_share(proc, idle_seconds)
            rss = _PeakRss(proc)
            threads0 = {t.id: t.user_time + t.system_time for t in proc.threads()}
            load0 = os.getloadavg()[0]
            cpu0, wall0 = _cpu(proc), time.monotonic()
            sent, send_seconds = _send(x, total, rate, screens)
            time.sleep(1.5)  # the last flush
            elapsed = time.monotonic() - wall0
            cpu_share = 100.0 * (_cpu(proc) - cpu0) / elapsed
            load = (load0, os.getloadavg()[0])
            threads1 = {t.id: t.user_time + t.system_time for t in proc.threads()}
            shares = tuple(
                100.0 * (threads1[tid] - threads0.get(tid, 0.0)) / elapsed
                for tid in sorted(threads1)
            )
            rss.stop()
            recorder.send_signal(signal.SIGTERM)
            recorder.wait(60)
            beat = json.loads((home / "recorder.json").read_text())
            with Vault.open(home / "vault", passphrase=BENCH_PASSPHRASE) as vault:
                events = list(vault.iter_events())
            seqs = sorted(e.seq for e in events)
            gaps = sum(1 for a, b in itertools.pairwise(seqs) if b != a + 1)
            return RunResult(
                sent=sent,
                found=sum(
                    e.count if isinstance(e, KeyRun) else 1
                    for e in events
                    if isinstance(e, Key | KeyRun | Click)
                ),
                seq_gaps=gaps + (1 if seqs and seqs[0] != 0 else 0),
                send_seconds=send_seconds,
                cpu_share=cpu_share,
                idle_cpu_share=idle_share,
                # The kernel's high-water mark can lag a sample taken since by a page or two.
                peak_rss_mb=max(float(beat.get("peak_rss_mb") or 0.0), rss.peak),
                steady_rss_mb=rss.peak,
                callback_p99_ms=beat.get("callback_p99_ms"),
                dropped=int(beat.get("dropped", 0)),
                thumbnails=sum(isinstance(e, Thumbnail) for e in events),
                thread_shares=shares,
                load=load,
            )
    finally:
        x.close()


@dataclass(frozen=True)
class NaiveResult:
    """The naive recorder's figures over the same input."""

    sent: int
    found: int
    lines: int
    bytes_written: int
    cpu_share: float
    idle_cpu_share: float
    steady_rss_mb: float
    load: tuple[float, float]


def run_naive(total: int, rate: float, idle_seconds: float = 5.0) -> NaiveResult:
    """The anchor: pynput listeners writing one JSON line per event, same input."""
    x = _X()
    try:
        with tempfile.TemporaryDirectory(prefix="hearth-bench-naive-") as tmp:
            out = Path(tmp) / "events.jsonl"
            process = subprocess.Popen(
                [sys.executable, "-m", "simulations.benchmarks.naive_recorder", str(out)],
                env={**x.env, "PYTHONPATH": str(ROOT)},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            ready = out.with_name(out.name + ".ready")
            deadline = time.monotonic() + 60
            while not ready.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the naive recorder did not start")
                time.sleep(0.05)
            proc = psutil.Process(process.pid)
            x.activate()
            time.sleep(0.5)
            idle_share = _idle_cpu_share(proc, idle_seconds)
            rss = _PeakRss(proc)
            load0 = os.getloadavg()[0]
            cpu0, wall0 = _cpu(proc), time.monotonic()
            sent, _ = _send(x, total, rate, screens=False)
            time.sleep(1.5)
            elapsed = time.monotonic() - wall0
            cpu_share = 100.0 * (_cpu(proc) - cpu0) / elapsed
            load = (load0, os.getloadavg()[0])
            rss.stop()
            process.send_signal(signal.SIGTERM)
            process.wait(60)
            lines = out.read_text().splitlines()
            found = sum(
                1
                for line in lines
                if '"k": "press"' in line or ('"k": "click"' in line and '"p": true' in line)
            )
            return NaiveResult(
                sent, found, len(lines), out.stat().st_size, cpu_share, idle_share, rss.peak, load
            )
    finally:
        x.close()


def _ratios(result: RunResult, naive: NaiveResult) -> list[Measurement]:
    lost = naive.sent - naive.found
    return [
        Measurement(
            SUBJECT,
            "naive: CPU while typing",
            naive.cpu_share,
            "% of one core",
            note=f"pynput, one JSON line per event: {naive.lines:,} lines, "
            f"{naive.bytes_written / 1024:,.0f} KiB for {naive.sent:,} events; "
            f"load average {naive.load[0]:.1f} to {naive.load[1]:.1f}",
        ),
        Measurement(SUBJECT, "naive: CPU while idle", naive.idle_cpu_share, "% of one core"),
        Measurement(SUBJECT, "naive: RSS while recording", naive.steady_rss_mb, "MB"),
        Measurement(SUBJECT, "naive: events lost", float(lost), "events"),
        Measurement(
            SUBJECT,
            "CPU while typing, hearth / naive",
            result.cpu_share / naive.cpu_share if naive.cpu_share else float("nan"),
            "x",
            note="same input, same run; below 1 means hearth costs less",
        ),
        Measurement(
            SUBJECT,
            "RSS while recording, hearth / naive",
            result.steady_rss_mb / naive.steady_rss_mb if naive.steady_rss_mb else float("nan"),
            "x",
        ),
    ]


def _measurements(result: RunResult, label: str) -> list[Measurement]:
    rate = result.sent / result.send_seconds
    lost = result.sent - result.found
    p99 = result.callback_p99_ms if result.callback_p99_ms is not None else float("nan")
    threads = ", ".join(f"{share:.2f}" for share in result.thread_shares)
    note = (
        f"{result.sent:,} events at {rate:,.0f}/s; per thread in creation order "
        f"(main first): {threads} %; load average {result.load[0]:.1f} to {result.load[1]:.1f}"
    )
    rows = [
        Measurement(
            SUBJECT,
            f"{label}CPU while typing",
            result.cpu_share,
            "% of one core",
            "< 0.5%",
            result.cpu_share < 0.5,
            note,
        ),
        Measurement(
            SUBJECT,
            f"{label}CPU while idle",
            result.idle_cpu_share,
            "% of one core",
            "< 0.5%",
            result.idle_cpu_share < 0.5,
            "no input, writer and focus checks only",
        ),
        Measurement(
            SUBJECT,
            f"{label}peak RSS",
            result.peak_rss_mb,
            "MB",
            "< 80 MB",
            result.peak_rss_mb < 80,
            "high-water mark incl. the passphrase's scrypt at start",
        ),
        Measurement(
            SUBJECT,
            f"{label}RSS while recording",
            result.steady_rss_mb,
            "MB",
            "< 60 MB",
            result.steady_rss_mb < 60,
        ),
        Measurement(
            SUBJECT,
            f"{label}events lost",
            float(lost),
            "events",
            "0",
            lost == 0 and result.dropped == 0,
            f"sent {result.sent:,}, in the vault {result.found:,}; "
            f"recorder counted {result.dropped} dropped",
        ),
        Measurement(
            SUBJECT,
            f"{label}gaps in sequence numbers",
            float(result.seq_gaps),
            "gaps",
            "0",
            result.seq_gaps == 0,
        ),
        Measurement(
            SUBJECT,
            f"{label}p99 time inside an input callback",
            p99,
            "ms",
            "< 1 ms",
            p99 < 1.0,
        ),
    ]
    if result.thumbnails:
        rows.append(
            Measurement(
                SUBJECT,
                f"{label}thumbnails kept",
                float(result.thumbnails),
                "thumbnails",
                note="64x40 gray, at most every 5 s, only on change",
            )
        )
    return rows


def run(
    quick: bool,
    events: int | None = None,
    rate: float | None = None,
    baseline: Path | None = None,
    input_source: str | None = None,
) -> list[Measurement]:
    """Keys and clicks mode, then the same with screen thumbnails (a shorter run).

    With ``baseline``, the keys and clicks mode runs first from that checkout
    (rows labelled ``before:``), for a side-by-side comparison.
    """
    total = (
        events
        or int(os.environ.get("HEARTH_BENCH_RECORDER_EVENTS", "0"))
        or (1_000 if quick else 6_000)
    )
    per_second = rate or float(os.environ.get("HEARTH_BENCH_RECORDER_RATE", "0")) or 50.0
    env = {"HEARTH_INPUT": input_source} if input_source else None
    results: list[Measurement] = []
    if baseline is not None:
        results += _measurements(run_once(total, per_second, code=baseline), "before: ")
    result = run_once(total, per_second, extra_env=env)
    results += _measurements(result, "")
    results += _ratios(result, run_naive(total, per_second))
    thumbs_total = max(500, total // 10) if not quick else 500
    results += _measurements(
        run_once(thumbs_total, per_second, screens=True, extra_env=env), "screens on: "
    )
    return results


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone and print its table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None, help="events per second to send")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--baseline", type=Path, default=None, help="checkout to compare with")
    parser.add_argument("--input", choices=("xrecord", "pynput"), default=None)
    parser.add_argument(
        "--out", type=Path, default=Path("bench/recorder"), help="results.json + results.md"
    )
    args = parser.parse_args(argv)
    measured = run(args.quick, args.events, args.rate, args.baseline, args.input)
    write_results(args.out, measured)
    for m in measured:
        passed = "" if m.passed is None else ("ok" if m.passed else "MISSED")
        print(f"{m.name}: {m.value:,.3f} {m.unit} {m.target or ''} {passed} {m.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
