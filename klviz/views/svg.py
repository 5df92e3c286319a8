"""The Overview's mass-moved chart as a static SVG: the first paint of a new session, before plotly.js.

Why. A new browser tab spends ~2 s evaluating plotly.js's 4.7 MB chunk before it draws any plotly
chart; on the 2-core box a fresh server's first chart took 5.0 s in a cold browser, 4.2 s for a bare
Streamlit app with one plotly chart (bench/open_table.py, bench/RESULTS.md). An image is in
Streamlit's main bundle: the same figure drawn here as SVG shows as soon as the run's data arrive.
The first view (klviz.app.first_view) sends it in the chart's place on a new session's first run; the
next run, REST_SOON_S later, puts the interactive plotly figure (klviz.views.plots.mass_moved_figure)
there. It draws the same numbers, on the same axes, in the same colours, with the same labels.

Safe by construction: st.image sends it as an <img> data URL (an SVG image runs no script and loads
nothing), and every text is XML-escaped once here (band labels hold "<"). No streamlit, no pandas.
"""

from __future__ import annotations

from typing import Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

from klviz.engine.columns import BAND_LABELS
from klviz.views.style import (BAND_AXIS_TITLE, GAINED_COLOR, GAINED_NAME, LOST_COLOR, LOST_NAME, MASS_MOVED_SUBTITLE,
                               MASS_MOVED_TITLE, MASS_MOVED_X_TITLE, mass_axis_top)

H = 450
"""The image's height in pixels, plotly's default chart height. Its width is the column's: every x below is a
percentage of it and every font a pixel size, so the text keeps its size at any width (a scaled viewBox drew
it twice the interactive chart's size in a wide column)."""
PLOT = dict(left=14.0, right=96.0, top=92, bottom=330)
"""The plot area: left and right in % of the width (y labels on the left), top and bottom in pixels (title
above, x title and legend below)."""
ALT = "Where the probability mass moved, by SFT probability band: the interactive chart follows"
"""The image's alt text (read aloud, and shown if it cannot be drawn)."""
FONT = 'font-family="Source Sans Pro, Source Sans 3, Helvetica, Arial, sans-serif"'  # Streamlit's, where installed
INK = "#31333F"  # Streamlit's text colour


def _text(x: str, y: float, s: str, size: int = 12, anchor: str = "start", extra: str = "") -> str:
    return (f'<text x="{x}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{INK}" {extra}>'
            f"{escape(s)}</text>")


def _pct(x: float) -> str:
    return f"{x:.4f}%"


def x_scale(top: float) -> tuple[float, float]:
    """(% of the width per unit, x of 0 in %) for the axis range [-1.1 top, 1.1 top] (the plotly figure's)."""
    span = PLOT["right"] - PLOT["left"]
    return span / (2.2 * top), PLOT["left"] + span / 2


def nice_ticks(limit: float) -> list[float]:
    """Ticks at multiples of the largest 1, 2 or 5 x 10^k step that puts at least two on each side of 0
    within [-limit, limit] (two to four)."""
    import math

    power = 10.0 ** (math.floor(math.log10(limit)) - 1)
    step = max(m * p for m in (1, 2, 5) for p in (power, 10 * power) if limit / (m * p) >= 2 - 1e-9)
    n = int(limit / step + 1e-9)
    return [k * step for k in range(-n, n + 1)]


def mass_moved_svg(bands: Mapping[str, Sequence]) -> str:
    """Mass gained (right) and lost (left) per SFT-probability band, as an SVG document (a str).

    `bands`: tables.band_totals' frame or its columns as lists (label, mass_gained, mass_lost), as
    plots.mass_moved_figure takes them. Each bar carries its exact value in data-value (tests read it).
    """
    labels = [str(s) for s in bands["label"]]
    gained = [float(v) for v in bands["mass_gained"]]
    lost = [float(v) for v in bands["mass_lost"]]
    top = mass_axis_top(gained, lost)
    per_unit, zero = x_scale(top)
    order = {label: i for i, label in enumerate(BAND_LABELS)}  # bottom to top, as the figure's categoryarray
    rows = sorted(range(len(labels)), key=lambda i: order.get(labels[i], len(order) + i))
    slot = (PLOT["bottom"] - PLOT["top"]) / max(1, len(rows))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" height="{H}" {FONT}>',
           '<rect width="100%" height="100%" fill="white"/>',
           _text("1%", 24, MASS_MOVED_TITLE, 16, extra='font-weight="600"'),
           *(_text("1%", 44 + 15 * k, line, 12, extra='fill-opacity="0.7"')
             for k, line in enumerate(MASS_MOVED_SUBTITLE.split(" · ")))]
    for tick in nice_ticks(1.1 * top):  # grid and tick labels, plain numbers (no SI prefixes)
        x = _pct(zero + tick * per_unit)
        out.append(f'<line x1="{x}" y1="{PLOT["top"]}" x2="{x}" y2="{PLOT["bottom"]}" stroke="#ebf0f8"/>')
        out.append(_text(x, PLOT["bottom"] + 17, f"{tick:.2g}", 11, "middle"))
    for k, i in enumerate(rows):
        y = PLOT["bottom"] - (k + 1) * slot
        out.append(_text(_pct(PLOT["left"] - 1), y + slot / 2 + 4, labels[i], 12, "end"))
        for value, sign, color, kind in ((gained[i], 1, GAINED_COLOR, "gained"), (lost[i], -1, LOST_COLOR, "lost")):
            width = value * per_unit
            x = zero if sign > 0 else zero - width
            out.append(f'<rect class="{kind}" data-band={quoteattr(labels[i])} data-value="{value!r}" '
                       f'x="{_pct(x)}" y="{y + 0.1 * slot:.2f}" width="{_pct(width)}" height="{0.8 * slot:.2f}" '
                       f'fill="{color}"/>')
    out.append(f'<line x1="{_pct(zero)}" y1="{PLOT["top"]}" x2="{_pct(zero)}" y2="{PLOT["bottom"]}" stroke="black"/>')
    out.append(_text(_pct((PLOT["left"] + PLOT["right"]) / 2), PLOT["bottom"] + 38, MASS_MOVED_X_TITLE, 12, "middle"))
    y_mid = (PLOT["top"] + PLOT["bottom"]) / 2  # the rotated y title in pixels: rotate() takes no percentages
    out.append(f'<text x="14" y="{y_mid:.1f}" font-size="12" text-anchor="middle" fill="{INK}" '
               f'transform="rotate(-90 14 {y_mid:.1f})">{escape(BAND_AXIS_TITLE)}</text>')
    for k, (name, color) in enumerate(((GAINED_NAME, GAINED_COLOR), (LOST_NAME, LOST_COLOR))):
        y = PLOT["bottom"] + 72 + 21 * k
        out.append(f'<rect x="{_pct(PLOT["left"])}" y="{y - 10}" width="14" height="12" fill="{color}"/>')
        out.append(_text(_pct(PLOT["left"] + 2.2), y, name, 12))
    out.append("</svg>")
    return "".join(out)
