"""Bar charts as self-contained SVG text, for report.html: no plotting library to install.

Public API: ``column_chart(heights, *, title, ..., edges=None, labels=None, ...)`` (vertical bars:
a histogram over numeric ``edges`` or one bar per label) and ``row_chart(labels, series, *,
title, xlabel, totals=False)`` (horizontal bars, stacked when there are several series).

Why not matplotlib: the report is the one place a plot is drawn, four kinds of bar chart, and
the default install should write it (issue 13) without a 40 MB dependency and its second of
import time at every merge. SVG is text: small, sharp at any zoom, and testable by parsing it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

FONT = "font-family='system-ui, sans-serif'"
GRID = "#e3e3e3"
INK = "#222"


def nice_ticks(top: float, count: int = 5, integer: bool = False) -> list[float]:
    """0 and round steps (1, 2, 5 x 10^k) up to at least ``top``."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    return [i * step for i in range(int(math.ceil(top / step - 1e-9)) + 1)]


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}"


def _text(x: float, y: float, text: str, size: int = 11, anchor: str = "middle", extra: str = ""):
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' {FONT} "
        f"fill='{INK}' {extra}>{escape(str(text))}</text>"
    )


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img'><title>{escape(title)}</title>"
        f"<rect width='{width}' height='{height}' fill='white'/>" + "".join(body) + "</svg>"
    )


def _legend(right: float, y: float, entries: Sequence[tuple[str, str, str]]) -> list[str]:
    """Entries (label, color, kind: "box" | "dash" | "none") on one line ending at ``right``."""
    out, x = [], right
    for label, color, kind in reversed(entries):
        x -= 6.0 * len(label) + 4
        out.append(_text(x, y, label, 10, "start"))
        if kind == "box":
            x -= 14
            out.append(f"<rect x='{x:.1f}' y='{y - 9:.1f}' width='10' height='10' fill='{color}'/>")
        elif kind == "dash":
            x -= 22
            out.append(
                f"<line x1='{x:.1f}' y1='{y - 4:.1f}' x2='{x + 16:.1f}' y2='{y - 4:.1f}' "
                f"stroke='{color}' stroke-width='1.5' stroke-dasharray='4 3'/>"
            )
        x -= 12
    return out


def column_chart(
    heights: Sequence[float],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    edges: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    colors: Sequence[str] | str = "#3a6ea5",
    vline: tuple[float, str] | None = None,
    legend: Sequence[tuple[str, str, str]] = (),
    width: int = 700,
    height: int = 360,
) -> str:
    """Vertical bars: a histogram (``edges``, len(heights) + 1 numbers) or one bar per label.
    ``vline`` is (x, color) on a histogram's axis, drawn dashed (name it in ``legend``)."""
    n = len(heights)
    rotate = labels is not None and (n > 6 or max((len(s) for s in labels), default=0) > 8)
    left, right, top = 60, 20, 50 if legend else 34
    bottom = 52 + (44 if rotate else 0)
    plot_w, plot_h = width - left - right, height - top - bottom
    ticks = nice_ticks(max(heights, default=0), integer=True)
    y_max = ticks[-1]

    def y_of(v: float) -> float:
        return top + plot_h * (1 - v / y_max)

    body = [_text(width / 2, 20, title, 13, extra="font-weight='600'")]
    for t in ticks:
        body.append(
            f"<line x1='{left}' x2='{left + plot_w}' y1='{y_of(t):.1f}' y2='{y_of(t):.1f}' stroke='{GRID}'/>"
        )
        body.append(_text(left - 6, y_of(t) + 4, _num(t), 10, "end"))
    palette = [colors] * n if isinstance(colors, str) else list(colors)
    if edges is not None:
        lo, hi = float(edges[0]), float(edges[-1])
        span = hi - lo or 1.0

        def x_of(v: float) -> float:
            return left + plot_w * (v - lo) / span

        for i, h in enumerate(heights):
            x0, x1 = x_of(edges[i]), x_of(edges[i + 1])
            body.append(
                f"<rect x='{x0:.1f}' y='{y_of(h):.1f}' width='{max(x1 - x0 - 0.5, 0.5):.1f}' "
                f"height='{plot_h + top - y_of(h):.1f}' fill='{palette[i]}'/>"
            )
        steps = nice_ticks(hi - lo, 6)
        step = steps[1] - steps[0]
        tick = math.ceil(lo / step - 1e-9) * step
        while tick <= hi + 1e-9:  # at round values, not at the first edge
            body.append(_text(x_of(tick), top + plot_h + 16, _num(round(tick, 10)), 10))
            tick += step
        if vline is not None:
            x, color = vline
            body.append(
                f"<line x1='{x_of(x):.1f}' x2='{x_of(x):.1f}' y1='{top}' y2='{top + plot_h}' "
                f"stroke='{color}' stroke-width='1.5' stroke-dasharray='5 4'/>"
            )
    else:
        slot = plot_w / max(n, 1)
        for i, h in enumerate(heights):
            x0 = left + slot * i + slot * 0.1
            body.append(
                f"<rect x='{x0:.1f}' y='{y_of(h):.1f}' width='{slot * 0.8:.1f}' "
                f"height='{plot_h + top - y_of(h):.1f}' fill='{palette[i]}'/>"
            )
            cx, cy = left + slot * (i + 0.5), top + plot_h + 14
            if rotate:
                body.append(
                    _text(
                        cx, cy, labels[i], 10, "end", f"transform='rotate(-45 {cx:.1f} {cy:.1f})'"
                    )
                )
            else:
                body.append(_text(cx, cy, labels[i], 10))
    body.append(
        f"<line x1='{left}' x2='{left + plot_w}' y1='{top + plot_h}' y2='{top + plot_h}' stroke='{INK}'/>"
    )
    body.append(_text(left + plot_w / 2, height - 10, xlabel, 11))
    body.append(
        _text(
            16,
            top + plot_h / 2,
            ylabel,
            11,
            extra=f"transform='rotate(-90 16 {top + plot_h / 2:.1f})'",
        )
    )
    body += _legend(left + plot_w, top - 12, legend)
    return _svg(width, height, body, title)


def row_chart(
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    title: str,
    xlabel: str,
    totals: bool = False,
    legend: bool | None = None,
    width: int = 750,
) -> str:
    """Horizontal bars, top to bottom in ``labels`` order; several ``series`` (name, values,
    color) stack left to right; ``legend`` (default: when there are several) names them under
    the plot; ``totals`` writes each row's sum at its end."""
    n = len(labels)
    label_w = min(260, 12 + 6.2 * max((len(s) for s in labels), default=1))
    left, right, top, row_h = label_w, 60 if totals else 24, 34, 20
    height = max(160, top + row_h * n + 46)
    plot_w = width - left - right
    sums = [sum(s[1][i] for s in series) for i in range(n)]
    ticks = nice_ticks(max(sums, default=0), integer=True)
    x_max = ticks[-1]

    def x_of(v: float) -> float:
        return left + plot_w * v / x_max

    body = [_text(width / 2, 20, title, 13, extra="font-weight='600'")]
    bottom = top + row_h * n
    for t in ticks:
        body.append(
            f"<line x1='{x_of(t):.1f}' x2='{x_of(t):.1f}' y1='{top}' y2='{bottom}' stroke='{GRID}'/>"
        )
        body.append(_text(x_of(t), bottom + 14, _num(t), 10))
    for i, label in enumerate(labels):
        y = top + row_h * i
        body.append(_text(left - 6, y + row_h * 0.65, label, 10, "end"))
        start = 0.0
        for _, values, color in series:
            w = values[i]
            if w:
                body.append(
                    f"<rect x='{x_of(start):.1f}' y='{y + 3:.1f}' width='{x_of(start + w) - x_of(start):.1f}' "
                    f"height='{row_h - 6}' fill='{color}'/>"
                )
            start += w
        if totals:
            body.append(_text(x_of(start) + 4, y + row_h * 0.65, _num(start), 10, "start"))
    body.append(_text(left + plot_w / 2, bottom + 34, xlabel, 11))
    if legend if legend is not None else len(series) > 1:  # right of the axis label's line
        body += _legend(left + plot_w, bottom + 34, [(s[0], s[2], "box") for s in series])
    return _svg(width, height, body, title)
