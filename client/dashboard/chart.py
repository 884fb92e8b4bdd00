"""Events per day and modality as a small inline SVG, drawn on the server.

No script, no external asset: a stacked bar per day, one colour per modality
(Okabe-Ito, readable with colour-vision deficiencies), a legend, and a
``<title>`` on every bar for screen readers and hover.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from html import escape
from typing import Final

COLORS: Final[Mapping[str, str]] = {
    "pointer": "#0072B2",
    "keys": "#E69F00",
    "apps": "#009E73",
    "text": "#CC79A7",
    "screens": "#56B4E9",
}
OTHER_COLOR: Final = "#767676"
MAX_DAYS: Final = 31
_WIDTH, _HEIGHT, _LEFT, _BOTTOM, _TOP, _LEGEND = 640, 220, 56, 28, 12, 110


def _stack(rows: Sequence[Mapping[str, object]]) -> tuple[list[str], dict[str, dict[str, int]]]:
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        day, modality = str(row["day"]), str(row["modality"])
        events = row["events"]
        per_day[day][modality] = per_day[day].get(modality, 0) + (
            events if isinstance(events, int) else 0
        )
    days = sorted(per_day)[-MAX_DAYS:]
    return days, per_day


def events_chart(rows: Sequence[Mapping[str, object]]) -> str:
    """An SVG of events per day (``rows`` as ``daily_summary`` returns them)."""
    days, per_day = _stack(rows)
    if not days:
        return '<p class="muted">Nothing recorded yet.</p>'
    modalities = sorted(
        {m for day in days for m in per_day[day]},
        key=lambda m: (list(COLORS).index(m) if m in COLORS else len(COLORS), m),
    )
    peak = max(sum(per_day[day].values()) for day in days) or 1
    plot_w = _WIDTH - _LEFT - _LEGEND
    plot_h = _HEIGHT - _TOP - _BOTTOM
    slot = plot_w / len(days)
    bar = max(2.0, min(40.0, slot * 0.7))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'width="100%" role="img" aria-labelledby="chart-title" class="chart">',
        f'<title id="chart-title">Events recorded per day and modality, '
        f"{escape(days[0])} to {escape(days[-1])}</title>",
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}" '
        f'stroke="#444"/>',
        f'<text x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end" font-size="11">{peak:,}</text>',
        f'<text x="{_LEFT - 6}" y="{_TOP + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    label_every = max(1, len(days) // 10)
    for i, day in enumerate(days):
        x = _LEFT + i * slot + (slot - bar) / 2
        y = float(_TOP + plot_h)
        for modality in modalities:
            count = per_day[day].get(modality, 0)
            if not count:
                continue
            h = plot_h * count / peak
            y -= h
            color = COLORS.get(modality, OTHER_COLOR)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{color}"><title>{escape(day)} {escape(modality)}: {count:,} events'
                "</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{_HEIGHT - 10}" text-anchor="middle" '
                f'font-size="11">{escape(day[5:])}</text>'
            )
    for j, modality in enumerate(modalities):
        lx, ly = _WIDTH - _LEGEND + 14, _TOP + 6 + j * 18
        parts.append(
            f'<rect x="{lx}" y="{ly}" width="12" height="12" '
            f'fill="{COLORS.get(modality, OTHER_COLOR)}"/>'
            f'<text x="{lx + 18}" y="{ly + 10}" font-size="12">{escape(modality)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


SPENT_COLOR: Final = "#D55E00"  # Okabe-Ito vermillion
LEFT_COLOR: Final = "#DDDDDD"


def budget_chart(days: Sequence[Mapping[str, object]], cap: float) -> str:
    """An SVG of epsilon spent and left per day of data (``budget_figures``' ``days``).

    One bar per day still kept, the whole bar the cap: each example of that day is
    protected at the cap, and the filled part is what the rounds that could read it spent.
    """
    if not days or cap <= 0:
        return '<p class="muted">No day of data has a budget yet.</p>'
    plot_w = _WIDTH - _LEFT - _LEGEND
    plot_h = _HEIGHT - _TOP - _BOTTOM
    slot = plot_w / len(days)
    bar = max(2.0, min(40.0, slot * 0.7))
    first, last = escape(str(days[0]["day"])), escape(str(days[-1]["day"]))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'width="100%" role="img" aria-labelledby="budget-chart-title" class="chart">',
        f'<title id="budget-chart-title">Epsilon per example spent and left for each day of '
        f"data, {first} to {last}, of a cap of {cap:g}</title>",
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_LEFT + plot_w}" y2="{_TOP + plot_h}" '
        f'stroke="#444"/>',
        f'<text x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end" font-size="11">{cap:g}</text>',
        f'<text x="{_LEFT - 6}" y="{_TOP + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    label_every = max(1, len(days) // 10)
    for i, row in enumerate(days):
        day = str(row["day"])
        spent_value = row.get("epsilon_spent", 0.0)
        spent = float(spent_value) if isinstance(spent_value, int | float) else 0.0
        shown = min(max(spent, 0.0), cap)
        x = _LEFT + i * slot + (slot - bar) / 2
        h = plot_h * shown / cap
        held = "" if row.get("holds_data", True) else " (no data held)"
        label = f"{day}: spent {spent:.2f}, left {max(0.0, cap - spent):.2f}{held}"
        parts.append(
            f'<rect x="{x:.1f}" y="{_TOP}" width="{bar:.1f}" height="{plot_h - h:.1f}" '
            f'fill="{LEFT_COLOR}"><title>{escape(label)}</title></rect>'
            f'<rect x="{x:.1f}" y="{_TOP + plot_h - h:.1f}" width="{bar:.1f}" '
            f'height="{h:.1f}" fill="{SPENT_COLOR}"><title>{escape(label)}</title></rect>'
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{_HEIGHT - 10}" text-anchor="middle" '
                f'font-size="11">{escape(day[5:])}</text>'
            )
    for j, (name, color) in enumerate((("spent", SPENT_COLOR), ("left", LEFT_COLOR))):
        lx, ly = _WIDTH - _LEGEND + 14, _TOP + 6 + j * 18
        parts.append(
            f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{color}"/>'
            f'<text x="{lx + 18}" y="{ly + 10}" font-size="12">{name}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
