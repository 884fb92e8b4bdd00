"""Read a campaign's checkpoint sidecars and total what was spent.

The ServerApp writes ``round-NNNN.json`` beside each checkpoint. Current sidecars
carry ``round``, ``cohort_size``, ``delta``, ``policy_hash``, ``adjacency``,
``epsilon_example_cap`` (the policy's device cap: devices no longer report what
they spent, each enforces the cap on its own ledger), ``epsilon_user`` (user-level
after this round, facing readers of the model and checkpoints, with client-sampling
amplification) and ``epsilon_user_vs_server`` (user-level after this round facing
the server, without amplification); the last two are null when there is no such
guarantee. Older sidecars carry ``epsilon_local_max`` (the largest epsilon devices
reported) instead of the cap and no ``epsilon_user_vs_server``; both kinds are read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from privacy.accountants import (
    ADJACENCY_EXAMPLE,
    ADJACENCY_USER,
    ADJACENCY_USER_VS_SERVER,
    UNIT_LOCAL,
    UNIT_USER,
)

# What each total protects, against which neighbour: printed and in the JSON.
FIGURES = {
    "epsilon_example_cap": {"unit": UNIT_LOCAL, "adjacency": ADJACENCY_EXAMPLE},
    "epsilon_user": {"unit": UNIT_USER, "adjacency": ADJACENCY_USER},
    "epsilon_user_vs_server": {"unit": UNIT_USER, "adjacency": ADJACENCY_USER_VS_SERVER},
}


class AuditError(ValueError):
    """The directory holds no readable campaign."""


def _row(data: dict[str, Any]) -> dict[str, Any]:
    """One round as the audit shows it; absent keys (older sidecars) become None."""
    return {
        "round": data.get("round"),
        "cohort_size": data.get("cohort_size"),
        "epsilon_example_cap": data.get("epsilon_example_cap"),
        "epsilon_local_max": data.get("epsilon_local_max"),
        "epsilon_user": data.get("epsilon_user"),
        "epsilon_user_vs_server": data.get("epsilon_user_vs_server"),
        "vs_server_recorded": "epsilon_user_vs_server" in data,
        "adjacency": data.get("adjacency"),
        "delta": data.get("delta"),
        "policy_hash": data.get("policy_hash"),
    }


def _largest(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return max(values) if values else None


def audit_campaign(directory: Path) -> dict[str, Any]:
    """Per-round rows and totals; user-level figures are cumulative already."""
    files = sorted(directory.glob("round-[0-9][0-9][0-9][0-9].json"))
    if not files:
        raise AuditError(f"no round sidecars (round-NNNN.json) in {directory}")
    rows = []
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise AuditError(f"{path.name} is not readable JSON") from None
        if not isinstance(data, dict):
            raise AuditError(f"{path.name} is not a round sidecar")
        rows.append(_row(data))
    last = rows[-1]
    return {
        "rounds": rows,
        "epsilon_example_cap": _largest(rows, "epsilon_example_cap"),
        "epsilon_local_max": _largest(rows, "epsilon_local_max"),
        "epsilon_user": last["epsilon_user"],
        "epsilon_user_vs_server": last["epsilon_user_vs_server"],
        "vs_server_recorded": last["vs_server_recorded"],
        "delta": last["delta"],
        "adjacency": sorted({r["adjacency"] for r in rows if r["adjacency"]}),
        "policy_hashes": sorted({r["policy_hash"] for r in rows if r["policy_hash"]}),
        "figures": FIGURES,
    }
