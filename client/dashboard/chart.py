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
