"""Events to training examples: windows of the last K actions and the next one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from policy.events import Event
from policy.vocabulary import PAD_ID, Action, actions


@dataclass(frozen=True)
class Examples:
    """Next-action examples: ``context[i]`` and ``category[i]`` predict ``target[i]``."""

    context: NDArray[np.int64]
    category: NDArray[np.int64]
    target: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.target)

    def slice(self, start: int, stop: int | None = None) -> Examples:
        """A contiguous part, in time order."""
        return Examples(
            self.context[start:stop], self.category[start:stop], self.target[start:stop]
        )


@dataclass(frozen=True)
class ActionSequence:
    """A device's actions in time order, compact: two bytes a token, two a category.

    The windows of ``Examples`` repeat each token K times in int64; a simulation
    that keeps thousands of devices featurized keeps this instead and cuts the
    windows when a round needs them (a vectorized gather, sub-millisecond).
    """

    tokens: NDArray[np.int16]
    categories: NDArray[np.int16]

    @classmethod
    def of(cls, acts: Iterable[Action]) -> ActionSequence:
        """Pack ``acts`` (token ids and categories fit in int16)."""
        pairs = np.array([(a.token, a.category) for a in acts], dtype=np.int16).reshape(-1, 2)
        return cls(pairs[:, 0].copy(), pairs[:, 1].copy())

    @property
    def nbytes(self) -> int:
        """Memory held by the sequence."""
        return int(self.tokens.nbytes + self.categories.nbytes)

    def windows(self, context_length: int) -> Examples:
        """Every position after the first becomes one example, left-padded with PAD."""
        n = max(0, len(self.tokens) - 1)
        tokens = self.tokens.astype(np.int64)
        padded = np.concatenate([np.full(context_length, PAD_ID, dtype=np.int64), tokens])
        index = np.arange(n)[:, None] + np.arange(context_length)[None, :] + 1
        context = padded[index] if n else np.zeros((0, context_length), dtype=np.int64)
        category = self.categories[1:].astype(np.int64)
        return Examples(context, category, tokens[1:].copy())


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
