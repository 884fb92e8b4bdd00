"""Events to training examples: windows of the last K actions and the next one.

Each action in a window comes with the bucketed time since the action before it
(``policy.vocabulary.gap_bucket``): whether the person was typing, pausing to
think or back from a break. Only gaps inside the window are used, never the gap
before the action predicted: that one is not known until the action happens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from policy.events import Event
from policy.vocabulary import GAP_EDGES_SECONDS, PAD_ID, UNKNOWN_GAP, Action, actions


@dataclass(frozen=True)
class Examples:
    """Next-action examples: ``context[i]``, ``category[i]`` and ``gaps[i]`` predict ``target[i]``.

    ``gaps[i, j]`` is the gap bucket before ``context[i, j]``; examples built without
    times (an event log's, a test's) get ``UNKNOWN_GAP`` throughout.
    """

    context: NDArray[np.int64]
    category: NDArray[np.int64]
    target: NDArray[np.int64]
    gaps: NDArray[np.int64] = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))

    def __post_init__(self) -> None:
        if self.gaps.shape != self.context.shape:
            if self.gaps.size:
                raise ValueError("gaps must have the shape of context")
            object.__setattr__(self, "gaps", np.full_like(self.context, UNKNOWN_GAP))

    def __len__(self) -> int:
        return len(self.target)

    def slice(self, start: int, stop: int | None = None) -> Examples:
        """A contiguous part, in time order."""
        return Examples(
            self.context[start:stop],
            self.category[start:stop],
            self.target[start:stop],
            self.gaps[start:stop],
        )


@dataclass(frozen=True)
class ActionSequence:
    """A device's actions in time order, compact: two bytes a token, two a category, one a gap.

    The windows of ``Examples`` repeat each token K times in int64; a simulation
    that keeps thousands of devices featurized keeps this instead and cuts the
    windows when a round needs them (a vectorized gather, sub-millisecond).
    """

    tokens: NDArray[np.int16]
    categories: NDArray[np.int16]
    gaps: NDArray[np.uint8] = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))

    def __post_init__(self) -> None:
        if len(self.gaps) != len(self.tokens):
            if len(self.gaps):
                raise ValueError("one gap bucket per action")
            object.__setattr__(self, "gaps", np.full(len(self.tokens), UNKNOWN_GAP, np.uint8))

    @classmethod
    def of(cls, acts: Iterable[Action]) -> ActionSequence:
        """Pack ``acts`` (token ids and categories fit in int16, gap buckets in uint8)."""
        rows = [(a.token, a.category, a.t) for a in acts]
        table = np.array(rows, dtype=np.float64).reshape(-1, 3)
        times = table[:, 2]
        gaps = 1 + np.searchsorted(GAP_EDGES_SECONDS, np.diff(times, prepend=times[:1]), "right")
        if len(gaps):
            gaps[0] = UNKNOWN_GAP  # the first action's previous one is not in the record
        return cls(
            table[:, 0].astype(np.int16), table[:, 1].astype(np.int16), gaps.astype(np.uint8)
        )

    @property
    def nbytes(self) -> int:
        """Memory held by the sequence."""
        return int(self.tokens.nbytes + self.categories.nbytes + self.gaps.nbytes)

    def windows(self, context_length: int) -> Examples:
        """Every position after the first becomes one example, left-padded with PAD."""
        n = max(0, len(self.tokens) - 1)
        tokens = self.tokens.astype(np.int64)
        padded = np.concatenate([np.full(context_length, PAD_ID, dtype=np.int64), tokens])
        padded_gaps = np.concatenate(
            [np.full(context_length, UNKNOWN_GAP, dtype=np.int64), self.gaps.astype(np.int64)]
        )
        index = np.arange(n)[:, None] + np.arange(context_length)[None, :] + 1
        empty = np.zeros((0, context_length), dtype=np.int64)
        context = padded[index] if n else empty
        gaps = padded_gaps[index] if n else empty
        category = self.categories[1:].astype(np.int64)
        return Examples(context, category, tokens[1:].copy(), gaps)


def windows(acts: list[Action], context_length: int) -> Examples:
    """Every position after the first becomes one example, left-padded with PAD."""
    return ActionSequence.of(acts).windows(context_length)


def action_sequence(events: Iterable[Event]) -> ActionSequence:
    """The compact action sequence of an event stream."""
    return ActionSequence.of(actions(events))


def featurize(events: Iterable[Event], context_length: int) -> Examples:
    """Turn an event stream into next-action examples."""
    return action_sequence(events).windows(context_length)


def split_held_out(examples: Examples, held_out_fraction: float) -> tuple[Examples, Examples]:
    """Split in time order: the last part is held out, so evaluation sees the future."""
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError("held_out_fraction must be in (0, 1)")
    cut = round(len(examples) * (1.0 - held_out_fraction))
    return examples.slice(0, cut), examples.slice(cut)
