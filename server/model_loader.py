"""``load_policy``: the ML team's way to use a campaign's model from Python.

    >>> from server.model_loader import load_policy
    >>> policy = load_policy("checkpoints/")          # newest round, or a round-NNNN.npz
    >>> policy.predict_next(["switch:editor", "key:letter", "shortcut:save"], k=3)
    [('switch:terminal', 0.61), ('key:letter', 0.17), ...]

Actions are token names of the model's own vocabulary (``policy.tokens``); the
app in front is read from the last ``switch:`` action among them, as the
featurizer does on a device. ``times`` (seconds, one per action, e.g. from
``time.monotonic()``) give the model the gaps between actions it was trained
with; without them every gap reads as unknown, which a model with a gap
embedding handles less well (``predict_next(actions, times=[...])``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch

from policy.model import ModelConfig, NextActionPolicy
from policy.vocabulary import NO_CATEGORY, PAD, UNKNOWN_GAP, gap_bucket
from server.model_store import load_model

SWITCH_PREFIX = "switch:"


def encode(
    config: ModelConfig, actions: Sequence[str], times: Sequence[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(1, K) token ids, left-padded, (1,) category id of the app in front, (1, K) gap buckets."""
    if times is not None and len(times) != len(actions):
        raise ValueError(f"give one time per action: {len(times)} times, {len(actions)} actions")
    index = {token: i for i, token in enumerate(config.tokens)}
    unknown = [a for a in actions if a not in index]
    if unknown:
        raise ValueError(f"not in this model's vocabulary: {unknown[:3]} (see .tokens)")
    pad = index[PAD]
    recent = [index[a] for a in actions][-config.context_length :]
    context = [pad] * (config.context_length - len(recent)) + recent
    category = NO_CATEGORY
    for action in actions:
        if action.startswith(SWITCH_PREFIX):
            category = action.removeprefix(SWITCH_PREFIX)
    categories = {name: i for i, name in enumerate(config.categories)}
    category_id = categories.get(category, 0)
    known = [UNKNOWN_GAP]
    if times is not None:
        known += [gap_bucket(later - earlier) for earlier, later in pairwise(times)]
    recent_gaps = (known if times is not None else [UNKNOWN_GAP] * len(actions))[
        len(actions) - len(recent) :
    ]
    gaps = [UNKNOWN_GAP] * (config.context_length - len(recent)) + recent_gaps
    return (
        torch.tensor([context], dtype=torch.long),
        torch.tensor([category_id], dtype=torch.long),
        torch.tensor([gaps], dtype=torch.long),
    )


@dataclass(frozen=True)
class LoadedPolicy:
    """A checkpoint's global model with its vocabulary and where it came from."""

    model: NextActionPolicy
    sidecar: dict[str, Any]

    @property
    def config(self) -> ModelConfig:
        """Shape and vocabulary."""
        return self.model.config

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every action the model knows, by id."""
        return self.config.tokens

    @torch.no_grad()
    def probabilities(
        self, actions: Sequence[str], times: Sequence[float] | None = None
    ) -> torch.Tensor:
        """The next action's distribution over ``tokens`` after ``actions`` (at ``times``)."""
        context, category, gaps = encode(self.config, actions, times)
        return torch.softmax(self.model(context, category, gaps), dim=1)[0]

    def predict_next(
        self, actions: Sequence[str], k: int = 3, times: Sequence[float] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` most likely next actions with their probabilities, best first."""
        if k < 1:
            raise ValueError("k must be at least 1")
        probs = self.probabilities(actions, times)
        top = torch.topk(probs, min(k, len(probs)))
        return [
            (self.tokens[int(i)], float(p))
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]


def load_policy(checkpoint: str | Path, server_round: int | None = None) -> LoadedPolicy:
    """The model of a checkpoint directory (newest round, or ``server_round``) or npz file."""
    model, sidecar = load_model(Path(checkpoint), server_round)
    return LoadedPolicy(model, sidecar)
