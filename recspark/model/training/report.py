"""The evaluation report of a training run: one self-contained HTML page with inline SVG charts.

Metric-by-K curves show whether the model's lead over the baselines holds at every list length,
not just at the configured K; the popularity-vs-frequency chart shows whether the model gives the
long tail any shelf space or only repeats the bestsellers. No plotting dependency: the inputs
are small aggregated series (K points, at most a few dozen popularity bands).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from recspark.core.config.model import BASELINE_LABELS, RANKING_METRICS
from recspark.model.evaluation.holdout import Scored
from recspark.model.training.promotion import PromotionDecision

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
LABELS = {
    "champion": "the champion",
    "als": "ALS",
    "ease": "EASE (item-item)",
    "blend": "ALS + EASE blend",
    **BASELINE_LABELS,
}

Series = Sequence[tuple[float, float]]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / (count - 1)
    return [low + i * step for i in range(count)]


def line_chart(
    title: str, series: Mapping[str, Series], x_label: str, y_label: str, width: int = 440, height: int = 270
) -> str:
    """An SVG line chart of named (x, y) series on shared axes (y from 0)."""
    left, right, top, bottom = 56, 12, 28, 44
    points = [p for values in series.values() for p in values]
    if not points:
        return f"<p>{html.escape(title)}: no data</p>"
    x_min, x_max = min(p[0] for p in points), max(p[0] for p in points)
    y_max = max(p[1] for p in points) or 1.0
    y_max *= 1.05
    x_span = (x_max - x_min) or 1.0

    def sx(x: float) -> float:
        return left + (x - x_min) / x_span * (width - left - right)

    def sy(y: float) -> float:
        return height - bottom - y / y_max * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" '
        'stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>',
    ]
    for y in _ticks(0.0, y_max):
        parts.append(
            f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>'
            f'<line x1="{left}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" stroke="#eee"/>'
        )
    for x in _ticks(x_min, x_max):
        parts.append(f'<text x="{sx(x):.1f}" y="{height - bottom + 14}" text-anchor="middle">{x:.4g}</text>')
    parts.append(
        f'<text x="{(left + width - right) / 2:.0f}" y="{height - 8}" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text x="12" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(top + height - bottom) / 2:.0f})">{html.escape(y_label)}</text>'
    )
    for i, (name, values) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}">'
            f"<title>{html.escape(name)}</title></polyline>"
        )
        parts.append(
            f'<rect x="{left + 10}" y="{top + 4 + 14 * i}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{left + 24}" y="{top + 13 + 14 * i}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def evaluation_report(
    title: str,
    scored: Mapping[str, Scored],
    summary: Mapping[str, float],
    decision: PromotionDecision,
    metric: str,
) -> str:
    """The HTML page: the decision, each recommender's metrics with bootstrap intervals, the
    paired comparisons behind the decision, metric-by-K curves and popularity vs frequency.

    ``scored``: recommender (the model's family, "popular", "category_popular") -> its scores.
    """
    names = {name: LABELS.get(name, name) for name in scored}
    charts = [
        line_chart(
            f"{m} by K",
            {names[n]: [(row["k"], row[m]) for row in s.by_k] for n, s in scored.items()},
            "K (list length)",
            m,
        )
        for m in RANKING_METRICS
    ]
    charts.append(
        line_chart(
            "popularity vs recommendation frequency",
            {names[n]: [(row["first_rank"], row["share"]) for row in s.bands] for n, s in scored.items()},
            "item popularity rank (1 = most popular), band start",
            "share of top-K slots",
            width=900,
        )
    )
    header = "".join(f"<th>{html.escape(names[n])}</th>" for n in scored)
    rows = "".join(
        f"<tr><td>{m}@K</td>"
        + "".join(f"<td>{html.escape(str(s.intervals[m]))}</td>" for s in scored.values())
        + "</tr>"
        for m in RANKING_METRICS
    )
    users = "".join(f"<td>{int(s.metrics['users'])}</td>" for s in scored.values())
    intervals = (
        f"<table><tr><th>metric (mean [95% bootstrap interval])</th>{header}</tr>{rows}"
        f"<tr><td>test users</td>{users}</tr></table>"
    )
    comparisons = "".join(
        f"<li>{html.escape(c.describe(metric, LABELS.get(ref, ref)))}</li>"
        for ref, c in decision.comparisons.items()
    )
    table = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{value:.5f}</td></tr>"
        for name, value in sorted(summary.items())
    )
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:20px} svg{margin:6px;border:1px solid #ddd}"
        "td,th{padding:1px 10px;text-align:left}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<h2>Decision: {html.escape(decision.status)}</h2><p>{html.escape(decision.reason)}</p>"
        f"<h2>Paired comparisons on the same test users</h2><ul>{comparisons or '<li>none</li>'}</ul>"
        f"<h2>Metrics with confidence intervals</h2>{intervals}"
        f"<div>{''.join(charts)}</div>"
        f"<h2>All logged metrics</h2><table>{table}</table>"
        "</body></html>\n"
    )
