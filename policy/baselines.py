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
