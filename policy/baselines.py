"""Baselines every learned policy must beat, fitted on one person's own data."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
from numpy.typing import NDArray


def _topk_hits(ranked: list[int], target: int, k: int) -> bool:
    return target in ranked[:k]


class MostFrequent:
    """Always predicts the person's most frequent actions."""

    def __init__(self, targets: NDArray[np.int64]) -> None:
        self.ranked = [t for t, _ in Counter(targets.tolist()).most_common()]

    def accuracy(self, targets: NDArray[np.int64], k: int) -> float:
        """Top-k accuracy on ``targets``."""
        if len(targets) == 0:
            return 0.0
        return float(np.mean([_topk_hits(self.ranked, int(t), k) for t in targets]))


class Bigram:
    """Predicts from the previous action only, backing off to the most frequent."""

    def __init__(self, previous: NDArray[np.int64], targets: NDArray[np.int64]) -> None:
        counts: dict[int, Counter[int]] = defaultdict(Counter)
        for p, t in zip(previous.tolist(), targets.tolist(), strict=True):
            counts[p][t] += 1
        self.fallback = MostFrequent(targets).ranked
        self.ranked = {p: self._merge([t for t, _ in c.most_common()]) for p, c in counts.items()}

    def _merge(self, ranked: list[int]) -> list[int]:
        return ranked + [t for t in self.fallback if t not in ranked]

    def accuracy(self, previous: NDArray[np.int64], targets: NDArray[np.int64], k: int) -> float:
        """Top-k accuracy given each example's previous action."""
        if len(targets) == 0:
            return 0.0
        hits = [
            _topk_hits(self.ranked.get(int(p), self.fallback), int(t), k)
            for p, t in zip(previous.tolist(), targets.tolist(), strict=True)
        ]
        return float(np.mean(hits))


class NGram:
    """Predicts from the last ``order - 1`` actions, backing off to shorter contexts.

    ``NGram(contexts, targets, 2)`` ranks like ``Bigram``; order 3 is the per-person
    trigram: the two previous actions, then the previous one, then the most frequent.
    """

    def __init__(self, contexts: NDArray[np.int64], targets: NDArray[np.int64], order: int) -> None:
        if order < 1 or (order > 1 and contexts.shape[1] < order - 1):
            raise ValueError("an n-gram needs order >= 1 and at least order - 1 context actions")
        self.order = order
        self.fallback = MostFrequent(targets).ranked
        self.tables: list[tuple[int, dict[tuple[int, ...], list[int]]]] = []
        for n in range(order - 1, 0, -1):
            counts: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
            for row, t in zip(contexts[:, -n:].tolist(), targets.tolist(), strict=True):
                counts[tuple(row)][t] += 1
            self.tables.append((n, {k: [t for t, _ in c.most_common()] for k, c in counts.items()}))

    def ranked(self, context: list[int]) -> list[int]:
        """Every action seen, best first, for one context (oldest action first)."""
        ranked: list[int] = []
        seen: set[int] = set()
        fallback: tuple[int, dict[tuple[int, ...], list[int]]] = (0, {(): self.fallback})
        for n, table in [*self.tables, fallback]:
            for t in table.get(tuple(context[len(context) - n :]) if n else (), []):
                if t not in seen:
                    seen.add(t)
                    ranked.append(t)
        return ranked

    def accuracy(self, contexts: NDArray[np.int64], targets: NDArray[np.int64], k: int) -> float:
        """Top-k accuracy given each example's context."""
        if len(targets) == 0:
            return 0.0
        hits = [
            _topk_hits(self.ranked(row), int(t), k)
            for row, t in zip(contexts.tolist(), targets.tolist(), strict=True)
        ]
        return float(np.mean(hits))
