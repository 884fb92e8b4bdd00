"""The round's accuracy from noised sums reads as an accuracy however the noise fell."""

from __future__ import annotations

import pytest

from policy.replies import EVAL_LOSS_BOUND
from server.report import aggregate_evaluate_metrics


def _reply(top1: float, top3: float, loss: float, count: float) -> tuple[int, dict[str, float]]:
    return 1, {"top1_sum": top1, "top3_sum": top3, "loss_sum": loss, "count": count}


def test_sums_are_ratios_of_the_cohorts_totals() -> None:
    metrics = aggregate_evaluate_metrics([_reply(3, 5, 2, 8), _reply(1, 3, 2, 8)])
    assert metrics["top1"] == pytest.approx(4 / 16)
    assert metrics["top3"] == pytest.approx(8 / 16)
    assert metrics["loss"] == pytest.approx(4 / 16 * EVAL_LOSS_BOUND)
    assert metrics["held_out_examples"] == 16


def test_noise_that_pushed_a_sum_out_of_range_is_clamped_to_it() -> None:
    # A small cohort's noised top-1 sum came out negative and its top-3 sum above the count.
    metrics = aggregate_evaluate_metrics([_reply(-2.5, 9, -1, 4), _reply(0.5, 4, 30, 4)])
    assert metrics["top1"] == 0.0
    assert metrics["top3"] == 1.0
    assert metrics["loss"] == pytest.approx(EVAL_LOSS_BOUND)


def test_no_count_means_no_figures() -> None:
    assert aggregate_evaluate_metrics([_reply(1, 1, 1, 0.4)]) == {}
    assert aggregate_evaluate_metrics([]) == {}
