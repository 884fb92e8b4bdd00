"""Benchmarks, one module per subject; each exposes ``run(quick: bool) -> list[Measurement]``.

`make bench` (``python -m simulations.bench``) runs them all and writes
``bench/results.json`` and ``bench/results.md``. Ratios are measured side by side
in one run, because these machines are shared and noisy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
