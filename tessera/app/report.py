"""The demo's HTML report: plots drawn as inline SVG (no plotting library needed), data
from Tessera's ClickHouse views."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path
from typing import Sequence

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]


def svg_chart(title: str, series: dict[str, Sequence[tuple[float, float]]], *, y_label: str = "",
              band: tuple[Sequence[float], Sequence[float], Sequence[float]] | None = None,
              width: int = 860, height: int = 300, x_unit: str = "s") -> str:
    """Line chart; ``band`` = (xs, lows, highs) draws a shaded interval under the lines."""
    pts = [p for s in series.values() for p in s]
    if band:
        pts += list(zip(band[0], band[1])) + list(zip(band[0], band[2]))
    if not pts:
        return f"<h3>{html.escape(title)}</h3><p>(no data)</p>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(0.0, min(p[1] for p in pts)), max(p[1] for p in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1
    L, R, T, B = 60, 150, 30, 40

    def sx(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * (width - L - R)

    def sy(y: float) -> float:
        return height - B - (y - y0) / (y1 - y0) * (height - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11">',
           f'<text x="{L}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
           f'<line x1="{L}" y1="{height - B}" x2="{width - R}" y2="{height - B}" stroke="#444"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{height - B}" stroke="#444"/>']
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        out.append(f'<text x="{L - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
        out.append(f'<line x1="{L}" y1="{sy(yv):.1f}" x2="{width - R}" y2="{sy(yv):.1f}" stroke="#eee"/>')
    for k in range(5):
        xv = x0 + (x1 - x0) * k / 4
        out.append(f'<text x="{sx(xv):.1f}" y="{height - B + 16}" text-anchor="middle">{xv:.0f}{html.escape(x_unit)}</text>')
    if y_label:
        out.append(f'<text x="14" y="{T + (height - T - B) / 2}" transform="rotate(-90 14 {T + (height - T - B) / 2})" '
                   f'text-anchor="middle">{html.escape(y_label)}</text>')
    if band and band[0]:
        upper = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(band[0], band[2]))
        lower = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in reversed(list(zip(band[0], band[1]))))
        out.append(f'<polygon points="{upper} {lower}" fill="#1f77b4" fill-opacity="0.18" stroke="none"/>')
    for i, (name, s) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        if s:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
            out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="1.6"/>')
        out.append(f'<rect x="{width - R + 10}" y="{T + 16 * i}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{width - R + 24}" y="{T + 16 * i + 9}">{html.escape(name)}</text>')
    if band:
        out.append(f'<rect x="{width - R + 10}" y="{T + 16 * len(series)}" width="10" height="10" fill="#1f77b4" '
                   f'fill-opacity="0.3"/><text x="{width - R + 24}" y="{T + 16 * len(series) + 9}">forecast band</text>')
    out.append("</svg>")
    return "\n".join(out)


def write_report(path: Path, title: str, sections: list[tuple[str, str]], tables: list[tuple[str, str]]) -> Path:
    """``sections``: (heading, svg); ``tables``: (heading, preformatted text)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222}"
             "pre{background:#f6f6f6;padding:10px;overflow-x:auto}</style></head><body>",
             f"<h1>{html.escape(title)}</h1><p>Generated {datetime.now().astimezone().isoformat(timespec='seconds')}</p>"]
    for heading, svg in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{svg}")
    for heading, text in tables:
        parts.append(f"<h2>{html.escape(heading)}</h2><pre>{html.escape(text)}</pre>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path
