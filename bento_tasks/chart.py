"""The admin's chart of the last hour, drawn on the server as inline SVG: no JavaScript, no CDN.

Pure: rows of the per-minute series in (``Buffer.series``), markup out. Three panels share the
time axis: queue depth (a line, broken where no flush ran), events delivered per minute (bars),
and POSTs answered 429 / 5xx / not at all (stacked bars).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

WIDTH, PANEL, GAP, LEFT, TOP = 720, 70, 34, 64, 18
COLOURS = {"depth": "#417690", "delivered": "#79aec8", "status_429": "#e0a030", "status_5xx": "#ba2121"}
FAILURES = (("status_429", "429"), ("status_5xx", "5xx"), ("status_error", "no answer"))


def _clock(minute: int) -> str:
    return dt.datetime.fromtimestamp(minute * 60, dt.timezone.utc).strftime("%H:%M UTC")


def _ceiling(value: float) -> int:
    """A round axis maximum at or above ``value``: 1, 2, 5, 10, 20, 50, ..."""
    top, factors, i = 1, (2, 2.5, 2), 0
    while top < value:
        top = round(top * factors[i % 3])
        i += 1
    return top


def _panel_frame(y: float, title: str, top: int) -> list[str]:
    right = WIDTH - 8
    return [
        f'<text x="{LEFT}" y="{y - 5:.0f}" class="title">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{y + PANEL}" x2="{right}" y2="{y + PANEL}" class="axis"/>',
        f'<line x1="{LEFT}" y1="{y}" x2="{right}" y2="{y}" class="grid"/>',
        f'<text x="{LEFT - 6}" y="{y + 4:.0f}" class="tick">{top:,}</text>',
        f'<text x="{LEFT - 6}" y="{y + PANEL + 4:.0f}" class="tick">0</text>',
    ]


def last_hour_svg(rows: Sequence[Mapping[str, Any]]) -> str:
    """The chart for ``rows`` (oldest minute first), as an ``<svg>`` element."""
    count = max(len(rows), 1)
    step = (WIDTH - 8 - LEFT) / count
    height = TOP + 3 * (PANEL + GAP) + 6
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="100%" '
        f'role="img" aria-label="Queue depth and deliveries, last {count} minutes" class="bento-chart">',
        "<style>.title{font:600 12px sans-serif;fill:currentColor}.tick{font:11px sans-serif;fill:#777;"
        "text-anchor:end}.axis{stroke:#999}.grid{stroke:#ddd;stroke-dasharray:3 3}"
        ".label{font:11px sans-serif;fill:#777}</style>",
    ]

    # Queue depth: a line through each flushed minute, broken where no flush recorded one.
    y0 = TOP
    depths = [row.get("depth") for row in rows]
    top = _ceiling(max([d for d in depths if d is not None] or [0]))
    parts += _panel_frame(y0, "Queue depth (events waiting, largest in the minute)", top)
    segment: list[str] = []
    segments: list[list[str]] = []
    for i, (row, depth) in enumerate(zip(rows, depths, strict=True)):
        if depth is None:
            if segment:
                segments.append(segment)
            segment = []
            continue
        x = LEFT + step * (i + 0.5)
        y = y0 + PANEL - PANEL * depth / top
        segment.append(f"{x:.1f},{y:.1f}")
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{COLOURS["depth"]}" class="depth">'
            f"<title>{escape(_clock(row['minute']))}: {depth:,} queued</title></circle>"
        )
    if segment:
        segments.append(segment)
    for points in segments:
        parts.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{COLOURS["depth"]}" stroke-width="1.5"/>'
        )

    # Events delivered per minute.
    y0 = TOP + PANEL + GAP
    top = _ceiling(max([int(row.get("delivered", 0)) for row in rows] or [0]))
    parts += _panel_frame(y0, "Events delivered per minute", top)
    for i, row in enumerate(rows):
        value = int(row.get("delivered", 0))
        if value:
            h = PANEL * value / top
            parts.append(
                f'<rect x="{LEFT + step * i + 1:.1f}" y="{y0 + PANEL - h:.1f}" width="{max(step - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{COLOURS["delivered"]}" class="delivered">'
                f"<title>{escape(_clock(row['minute']))}: {value:,} delivered</title></rect>"
            )

    # POSTs answered 429, 5xx or nothing, stacked.
    y0 = TOP + 2 * (PANEL + GAP)
    totals = [sum(int(row.get(name, 0)) for name, _ in FAILURES) for row in rows]
    top = _ceiling(max(totals or [0]))
    parts += _panel_frame(y0, "POSTs answered 429 (orange), 5xx or not at all (red)", top)
    for i, row in enumerate(rows):
        base: float = y0 + PANEL
        for name, label in FAILURES:
            value = int(row.get(name, 0))
            if not value:
                continue
            h = PANEL * value / top
            base -= h
            colour = COLOURS["status_429"] if name == "status_429" else COLOURS["status_5xx"]
            parts.append(
                f'<rect x="{LEFT + step * i + 1:.1f}" y="{base:.1f}" width="{max(step - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}" class="{name}">'
                f"<title>{escape(_clock(row['minute']))}: {value:,} answered {escape(label)}</title></rect>"
            )

    bottom = TOP + 3 * (PANEL + GAP) - GAP + 16
    if rows:
        parts.append(f'<text x="{LEFT}" y="{bottom}" class="label">{escape(_clock(rows[0]["minute"]))}</text>')
        parts.append(
            f'<text x="{WIDTH - 8}" y="{bottom}" class="label" text-anchor="end">'
            f"{escape(_clock(rows[-1]['minute']))} (now)</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
