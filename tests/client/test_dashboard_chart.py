"""The events chart: one bar segment per day and modality, no script, escaped."""

from __future__ import annotations

from client.dashboard.chart import COLORS, MAX_DAYS, budget_chart, events_chart
from client.dashboard.snapshot import delta_in_words


def test_each_day_and_modality_gets_a_labelled_bar_segment() -> None:
    rows = [
        {"day": "2026-11-20", "modality": "keys", "events": 120, "bytes": 900},
        {"day": "2026-11-20", "modality": "pointer", "events": 30, "bytes": 200},
        {"day": "2026-11-21", "modality": "apps", "events": 7, "bytes": 50},
    ]
    svg = events_chart(rows)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<rect") == 3 + 3  # three segments, three legend swatches
    assert "<title>2026-11-20 keys: 120 events</title>" in svg
    assert COLORS["pointer"] in svg
    assert "<script" not in svg


def test_no_rows_is_a_sentence_not_an_empty_chart() -> None:
    assert "Nothing recorded yet" in events_chart([])


def test_only_the_latest_days_are_drawn() -> None:
    rows = [
        {"day": f"2026-{1 + i // 28:02d}-{1 + i % 28:02d}", "modality": "keys", "events": 1}
        for i in range(60)
    ]
    svg = events_chart(rows)
    assert svg.count("keys: 1 events") == MAX_DAYS


def test_a_modality_name_from_disk_is_escaped() -> None:
    svg = events_chart([{"day": "2026-11-20", "modality": "<x>", "events": 1}])
    assert "<x>" not in svg and "&lt;x&gt;" in svg


def test_delta_in_words() -> None:
    assert delta_in_words(1e-5) == "a 1 in 100,000 chance that the guarantee does not hold"


def test_the_budget_chart_draws_spent_and_left_for_each_day_of_data() -> None:
    days = [
        {"day": "2026-11-20", "epsilon_spent": 7.5, "holds_data": True},
        {"day": "2026-11-21", "epsilon_spent": 0.0, "holds_data": False},
    ]
    svg = budget_chart(days, 10.0)
    assert svg.startswith("<svg") and "<script" not in svg
    assert "<title>2026-11-20: spent 7.50, left 2.50</title>" in svg
    assert "2026-11-21: spent 0.00, left 10.00 (no data held)" in svg
    assert "No day of data" in budget_chart([], 10.0)
