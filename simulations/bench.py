"""Run every benchmark and write ``results.json`` and ``results.md``."""

from __future__ import annotations

import argparse
import importlib
import inspect
import time
from pathlib import Path

from simulations.benchmarks import Measurement, markdown, write_results

# Each name is a module in simulations/benchmarks/ with run(quick) -> list[Measurement].
SUBJECTS: tuple[str, ...] = (
    "vault",
    "training",
    "recorder",
    "redaction",
    "deployment",
    "controls",
    "lifetime",
    "model",
    "scale",
    "fleet",
    "utility",
)


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks (all by default)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench"))
    parser.add_argument("--only", nargs="*", default=list(SUBJECTS))
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for smoke tests")
    args = parser.parse_args(argv)
    results: list[Measurement] = []
    args.out.mkdir(parents=True, exist_ok=True)
    for subject in args.only:
        module = importlib.import_module(f"simulations.benchmarks.{subject}")
        started = time.perf_counter()
        # A benchmark that writes files besides its figures (a plot) takes the output directory.
        wants_out = "out" in inspect.signature(module.run).parameters
        results.extend(module.run(args.quick, args.out) if wants_out else module.run(args.quick))
        print(f"{subject}: {time.perf_counter() - started:.1f}s", flush=True)
    write_results(args.out, results)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
