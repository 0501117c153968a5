"""The report's charts: throughput over time per point, and GB/hour per concurrency.

The same series are drawn twice: as inline SVG for the self-contained HTML page
(no script, no external reference), and as a PNG with matplotlib's Agg backend
for mail and tickets.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from migrator.velocity.report import VelocityReport

COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class Series:
    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]


def throughput_series(report: VelocityReport) -> list[Series]:
    """GB/hour per minute; x: minutes since the point started, at the middle of the
    part of each minute the point ran in."""
    result = []
    for point in report.points:
        xs = tuple((max(0.0, s.offset_seconds) + s.seconds / 2) / 60 for s in point.samples)
        ys = tuple(s.gb_per_hour for s in point.samples)
        label = f"concurrency {point.concurrency}"
        if any(p.repeat > 1 for p in report.points):
            label += f", run {point.repeat}"
        result.append(Series(label, xs, ys))
    return result


def curve_series(report: VelocityReport) -> Series:
    curve = report.curve
    return Series(
        "mean GB/hour",
        tuple(float(c.concurrency) for c in curve),
        tuple(c.gb_per_hour for c in curve),
    )


def svg_chart(
    title: str, series: Sequence[Series], x_label: str, y_label: str, *, width: int = 720
) -> str:
    """A line chart with markers as an inline <svg> (no xmlns needed inside HTML)."""
    height, left, right, top, bottom = 320, 70, 20, 40, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for s in series for x in s.xs]
    ys = [y for s in series for y in s.ys]
    x_max = max(xs, default=1.0) or 1.0
    y_max = (max(ys, default=1.0) or 1.0) * 1.1

    def px(x: float) -> float:
        return left + plot_w * x / x_max

    def py(y: float) -> float:
        return top + plot_h * (1 - y / y_max)

    esc = html.escape
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{esc(title)}">',
        f'<text x="{width / 2}" y="22" text-anchor="middle" class="title">{esc(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#333"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#333"/>',
    ]
    for i in range(5):
        y = y_max * i / 4
        x = x_max * i / 4
        parts.append(
            f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + plot_w}" y2="{py(y):.1f}" '
            'stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>'
            f'<text x="{px(x):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{x:.3g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">{esc(x_label)}</text>'
        f'<text x="16" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {top + plot_h / 2})">{esc(y_label)}</text>'
    )
    for index, one in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(one.xs, one.ys, strict=True))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
        )
        for x, y in zip(one.xs, one.ys, strict=True):
            parts.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{colour}">'
                f"<title>{esc(one.label)}: {y:.3g} at {x:.3g}</title></circle>"
            )
        legend_y = top + 14 + 16 * index
        parts.append(
            f'<rect x="{left + plot_w - 190}" y="{legend_y - 9}" width="10" height="10" '
            f'fill="{colour}"/><text x="{left + plot_w - 175}" y="{legend_y}">'
            f"{esc(one.label)}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def write_png(report: VelocityReport, path: Path) -> None:
    """The throughput chart (and, with more than one concurrency, the curve) as a PNG."""
    # The object API with an explicit Agg canvas: no pyplot global state, no display
    # needed, and safe beside the copier's threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with_curve = len(report.curve) > 1
    figure = Figure(figsize=(12 if with_curve else 8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2 if with_curve else 1, squeeze=False)[0]
    over_time = axes[0]
    for one in throughput_series(report):
        over_time.plot(one.xs, one.ys, marker="o", label=one.label)
    over_time.set_title("Throughput over time")
    over_time.set_xlabel("minutes since the point started")
    over_time.set_ylabel("GB/hour")
    over_time.set_xlim(left=0)
    over_time.margins(y=0.15)
    over_time.set_ylim(bottom=0)
    over_time.grid(True, alpha=0.3)
    if report.points:
        over_time.legend(loc="best", fontsize="small")
    if with_curve:
        curve = curve_series(report)
        axes[1].plot(curve.xs, curve.ys, marker="o")
        axes[1].set_xticks(curve.xs)
        axes[1].set_title("Throughput by concurrency")
        axes[1].set_xlabel("concurrent mailboxes (workers)")
        axes[1].set_ylabel("GB/hour")
        axes[1].margins(y=0.15)
        axes[1].set_ylim(bottom=0)
        axes[1].grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="png")
