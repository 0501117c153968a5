"""The pilot report as files: JSON, a self-contained HTML page, and a PNG beside it.

The HTML holds its style and charts inline (SVG) and refers to nothing outside
itself, so it can be mailed or attached to a ticket as one file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

from migrator.velocity.chart import curve_series, svg_chart, throughput_series, write_png
from migrator.velocity.report import (
    KNEE_SHARE,
    Figures,
    MailboxFigures,
    PointReport,
    VelocityReport,
)


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    html: Path
    png: Path


def write_report(report: VelocityReport, directory: Path) -> ReportFiles:
    directory.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(
        directory / "velocity.json", directory / "velocity.html", directory / "velocity.png"
    )
    files.json.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    files.html.write_text(render_html(report), encoding="utf-8")
    write_png(report, files.png)
    return files


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
.chart text { font-size: 11px; fill: #333; }
.chart .title { font-size: 14px; font-weight: bold; }
.note { color: #666; }
"""

_FIGURE_COLUMNS = [
    "Messages",
    "MB",
    "Wall s",
    "Messages/s",
    "MB/s",
    "GB/hour",
    "Source wait s (all connections)",
    "Target wait s (all connections)",
    "Throttled s (all connections)",
]


def render_html(report: VelocityReport) -> str:
    meta = report.meta
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Velocity report {escape(report.run_id)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Velocity report {escape(report.run_id)}</h1>",
        _table(["", ""], [[escape(k), escape(v)] for k, v in meta.items()], numeric=()),
        "<h2>Throughput by concurrency</h2>",
        _table(
            ["Concurrency", "Runs", "GB/hour (mean)", "min", "max", "Messages/s (mean)"],
            [
                [
                    str(c.concurrency),
                    str(c.runs),
                    f"{c.gb_per_hour:.3f}",
                    f"{c.gb_per_hour_min:.3f}",
                    f"{c.gb_per_hour_max:.3f}",
                    f"{c.messages_per_second:.1f}",
                ]
                for c in report.curve
            ],
        ),
    ]
    out.extend(_curve_notes(report))
    if len(report.curve) > 1:
        out.append(
            svg_chart(
                "Throughput by concurrency",
                [curve_series(report)],
                "concurrent mailboxes (workers)",
                "GB/hour",
            )
        )
    out.append("<h2>Throughput over time</h2>")
    out.append(
        svg_chart(
            "Throughput over time",
            throughput_series(report),
            "minutes since the point started",
            "GB/hour",
        )
    )
    out.append(
        '<p class="note">In buckets of whole minutes that fit the run; each bucket is '
        "divided by the seconds the point ran in it, and a first or last bucket it ran "
        "less than half of is folded into its neighbour.</p>"
    )
    for point in report.points:
        out.extend(_point(point, report.slowest_count))
    out.append("</body></html>\n")
    return "\n".join(out)


def _curve_notes(report: VelocityReport) -> list[str]:
    """Where throughput stops growing (or that it did not), and the rate per session."""
    out: list[str] = []
    if report.knee is not None:
        out.append(
            f"<p>Throughput stops growing at concurrency <b>{report.knee}</b>: "
            f"the smallest that reaches {KNEE_SHARE:.0%} of the best mean; more sessions "
            "bought little more.</p>"
        )
    elif report.still_growing:
        out.append(
            f"<p>Throughput was still growing at concurrency <b>{report.curve[-1].concurrency}"
            "</b>, the largest tried: try larger ones to find where it levels off.</p>"
        )
    per_session = report.per_session_gb_per_hour
    if per_session is not None:
        out.append(
            f"<p>Per session: <b>{per_session:.3f} GB/hour</b> "
            "(<code>velocity plan --throughput</code>, or <code>--from-report</code> "
            "this report's velocity.json).</p>"
        )
    return out


def _point(point: PointReport, slowest: int) -> list[str]:
    title = f"Point: concurrency {point.concurrency}, run {point.repeat} (batch {point.batch_id})"
    t = point.total.timings
    waits = t.source_seconds + t.target_seconds + t.throttle_seconds
    busy = sum(m.figures.wall_seconds for m in point.mailboxes)
    parts = [
        f"<h2>{escape(title)}</h2>",
        "<h3>Total</h3>",
        _table(_FIGURE_COLUMNS, [_figures(point.total)]),
    ]
    if waits == 0:
        parts.append(
            '<p class="note">The copier recorded no waiting times (source_seconds, '
            "target_seconds, throttle_seconds) for these mailboxes.</p>"
        )
    elif busy > 0:
        parts.append(
            '<p class="note">Waiting, summed over every connection of every mailbox: '
            f"source {t.source_seconds:.1f} s, target {t.target_seconds:.1f} s, throttling "
            f"{t.throttle_seconds:.1f} s; the mailboxes ran {busy:.1f} s between them. A "
            "mailbox copied over several connections waits on each at once, so its waits "
            "can add up to more than its wall time.</p>"
        )
    parts.append(f"<h3>Slowest mailboxes (lowest MB/s, up to {slowest})</h3>")
    parts.append(_mailbox_table(point.slowest(slowest)))
    parts.append("<h3>Mailboxes</h3>")
    parts.append(_mailbox_table(point.mailboxes))
    return parts


def _mailbox_table(rows: Sequence[MailboxFigures]) -> str:
    return _table(
        ["Job", "Source", "Target", "State", *_FIGURE_COLUMNS],
        [
            [
                escape(m.job_id),
                escape(m.source_identity),
                escape(m.target_identity),
                escape(m.state),
                *_figures(m.figures, estimated=m.bytes_estimated),
            ]
            for m in rows
        ],
        numeric=range(4, 4 + len(_FIGURE_COLUMNS)),
    )


def _figures(f: Figures, *, estimated: bool = False) -> list[str]:
    return [
        str(f.messages),
        f"{f.bytes / 1e6:.2f}" + (" (est.)" if estimated else ""),
        f"{f.wall_seconds:.1f}",
        f"{f.messages_per_second:.1f}",
        f"{f.mb_per_second:.3f}",
        f"{f.gb_per_hour:.3f}",
        f"{f.timings.source_seconds:.1f}",
        f"{f.timings.target_seconds:.1f}",
        f"{f.timings.throttle_seconds:.1f}",
    ]


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Iterable[int] | None = None
) -> str:
    """Cells are HTML already (escaped by the caller); header cells are escaped here."""
    right = set(range(len(header)) if numeric is None else numeric)
    lines = ["<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = "".join(
            f'<td class="n">{c}</td>' if i in right else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        lines.append(f"<tr>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)
