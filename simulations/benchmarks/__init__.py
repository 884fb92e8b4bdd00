"""Benchmarks, one module per subject; each exposes ``run(quick: bool) -> list[Measurement]``.

`make bench` (``python -m simulations.bench``) runs them all and writes
``bench/results.json`` and ``bench/results.md``. Ratios are measured side by side
in one run, because these machines are shared and noisy.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measurement:
    """One measured figure, with its target when the issue names one."""

    subject: str
    name: str
    value: float
    unit: str
    target: str | None = None
    passed: bool | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def markdown(results: list[Measurement]) -> str:
    """The results as one Markdown table."""
    lines = [
        "| subject | measurement | value | unit | target | met |",
        "|---|---|---:|---|---|---|",
    ]
    for m in results:
        met = "" if m.passed is None else ("yes" if m.passed else "**no**")
        value = f"{m.value:,.3f}" if abs(m.value) < 1000 else f"{m.value:,.0f}"
        lines.append(f"| {m.subject} | {m.name} | {value} | {m.unit} | {m.target or ''} | {met} |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: list[Measurement]) -> None:
    """``results.json`` (with the machine) and ``results.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "results": [m.as_dict() for m in results],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
