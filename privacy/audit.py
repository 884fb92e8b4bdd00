"""Read a campaign's checkpoint sidecars and total what was spent.

The ServerApp writes ``round-NNNN.json`` beside each checkpoint with at least:
``round``, ``cohort_size``, ``epsilon_local_max`` (device-level, one example on
one device), ``epsilon_user`` (user-level after this round, or null when no
central noise is used), ``delta`` and ``policy_hash``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class AuditError(ValueError):
    """The directory holds no readable campaign."""


def audit_campaign(directory: Path) -> dict[str, Any]:
    """Per-round rows and totals; user-level epsilon is cumulative already."""
    files = sorted(directory.glob("round-[0-9][0-9][0-9][0-9].json"))
    if not files:
        raise AuditError(f"no round sidecars (round-NNNN.json) in {directory}")
    rows = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise AuditError(f"{path.name} is not readable JSON") from None
        rows.append(
            {
                "round": data.get("round"),
                "cohort_size": data.get("cohort_size"),
                "epsilon_local_max": data.get("epsilon_local_max"),
                "epsilon_user": data.get("epsilon_user"),
                "delta": data.get("delta"),
                "policy_hash": data.get("policy_hash"),
            }
        )
    local = [r["epsilon_local_max"] for r in rows if r["epsilon_local_max"] is not None]
    return {
        "rounds": rows,
        "epsilon_local_max": max(local) if local else None,
        "epsilon_user": rows[-1]["epsilon_user"],
        "delta": rows[-1]["delta"],
        "policy_hashes": sorted({r["policy_hash"] for r in rows if r["policy_hash"]}),
    }
