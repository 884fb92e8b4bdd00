"""The mark of a device home whose vault holds synthetic events, not anyone's work.

``hearth-sim seed-device HOME`` fills a laptop's vault with made-up work for a
deployment walk-through and writes ``synthetic.json`` beside it; ``hearth data
summary`` then says, before anything else, that the data is synthetic. The mark
is plain JSON with no event content: what generated the data, for which
synthetic employee, how many events, and when.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

MARKER_FILE: Final = "synthetic.json"


def read_marker(home: Path) -> dict[str, Any] | None:
    """The synthetic-data mark of ``home``, or None for a real recording."""
    try:
        marker = json.loads((home / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def describe(marker: dict[str, Any]) -> str:
    """One line for the employee (or the tester): what this synthetic data is."""
    return (
        f"SYNTHETIC DATA: this vault holds {marker.get('events', '?'):,} made-up events "
        f"(synthetic employee {marker.get('employee', '?')}, from {marker.get('source', '?')} "
        f"at {marker.get('seeded_at', '?')}), not a recording of anyone's work."
    )


__all__ = ["MARKER_FILE", "describe", "read_marker"]
