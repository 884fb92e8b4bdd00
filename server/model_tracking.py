"""Each round's metrics as TensorBoard event files, beside the checkpoints (server side only).

TensorBoard rather than MLflow: torch already ships the writer
(``torch.utils.tensorboard``), event files are plain files that live with the
checkpoints and need no tracking server or database, and the only new
dependency is ``tensorboard`` on the server (extra ``hearth[tracking]``). MLflow
would bring a web stack and a database into the server's environment. Devices
never import this module.

Accuracy and loss are the server's figures (ratios of noised sums); epsilon is
tagged with its unit. ``write_rounds`` replays sidecars, so a campaign that ran
without it can still be looked at: ``hearth-server model tensorboard DIR``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from logging import WARNING
from pathlib import Path
from typing import Any, Final

from flwr.common import log

TENSORBOARD_DIR: Final = "tensorboard"
SCALARS: Final = (
    ("evaluate/top1", ("evaluate", "top1")),
    ("evaluate/top3", ("evaluate", "top3")),
    ("evaluate/loss", ("evaluate", "loss")),
    ("cohort/trained", ("fit", "clients_trained")),
    ("cohort/rejected", ("fit", "clients_rejected")),
    ("privacy/epsilon_user (one user, campaign)", ("epsilon_user",)),
    ("privacy/epsilon_example_cap (one example, device)", ("epsilon_example_cap",)),
)


def _value(row: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = row
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class RoundTracker:
    """Writes one step per round; a no-op (with one warning) where tensorboard is missing."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (optional)
        except ImportError:
            log(WARNING, "hearth: tensorboard is not installed; pip install 'hearth[tracking]'")
            return
        self._writer = SummaryWriter(log_dir=str(log_dir))

    @property
    def enabled(self) -> bool:
        """Whether event files are being written."""
        return self._writer is not None

    def write(self, row: Mapping[str, Any]) -> None:
        """One round's sidecar as scalars at step ``round``."""
        if self._writer is None:
            return
        step = int(row["round"])
        for tag, path in SCALARS:
            value = _value(row, path)
            if value is not None:
                self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()


def write_rounds(rows: Iterable[Mapping[str, Any]], log_dir: Path) -> int:
    """Replay sidecars into a fresh event file; returns how many rounds were written."""
    tracker = RoundTracker(log_dir)
    count = 0
    for row in rows:
        tracker.write(row)
        count += 1
    tracker.close()
    return count if tracker.enabled else 0
