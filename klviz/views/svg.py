"""Charts as static SVG images: the Overview's mass-moved chart as a new session's first paint (before
plotly.js), and Live PPO's charts while a run trains.

Why. A new browser tab spends ~2 s evaluating plotly.js's 4.7 MB chunk before it draws any plotly
chart; on the 2-core box a fresh server's first chart took 5.0 s in a cold browser, 4.2 s for a bare
Streamlit app with one plotly chart (bench/open_table.py, bench/RESULTS.md). An image is in
Streamlit's main bundle: the same figure drawn here as SVG shows as soon as the run's data arrive.
The first view (klviz.app.first_view) sends it in the chart's place on a new session's first run; the
next run, REST_SOON_S later, puts the interactive plotly figure (klviz.views.plots.mass_moved_figure)
there. It draws the same numbers, on the same axes, in the same colours, with the same labels.

Live PPO (ppo_curves_svg, and mass_moved_svg for its bands). While a run trains, the page redraws its charts
every few seconds; each plotly redraw cost the browser and the server together ~0.3 of a core per watching
page, taken from the training run on the 2-core box (a third session's page waited behind them: bench/live.py,
bench/RESULTS.md). An image costs a fraction of that, so the page draws these while a run trains and the
interactive figures (the same panels: klviz.views.style.ppo_panels) once none does.

Safe by construction: st.image sends it as an <img> data URL (an SVG image runs no script and loads
nothing), and every text is XML-escaped once here (band labels hold "<"). No streamlit, no pandas.
"""

from __future__ import annotations

from typing import Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

from klviz.engine.columns import BAND_LABELS
from klviz.views.style import (BAND_AXIS_TITLE, GAINED_COLOR, GAINED_NAME, LOST_COLOR, LOST_NAME, MASS_MOVED_SUBTITLE,
                               MASS_MOVED_TITLE, MASS_MOVED_X_TITLE, MAX_RUNS, PPO_CURVES_TITLE, RUN_COLORS,
                               mass_axis_top, ppo_panels, ppo_series)

H = 450
"""The image's height in pixels, plotly's default chart height. Its width is the column's: every x below is a
percentage of it and every font a pixel size, so the text keeps its size at any width (a scaled viewBox drew
it twice the interactive chart's size in a wide column)."""
PLOT = dict(left=14.0, right=96.0, top=92, bottom=330)
"""The plot area: left and right in % of the width (y labels on the left), top and bottom in pixels (title
above, x title and legend below)."""
MASS_MOVED_ALT = "Where the probability mass moved, by SFT probability band"
"""The mass-moved image's alt text (read aloud, and shown if it cannot be drawn)."""
ALT = MASS_MOVED_ALT + ": the interactive chart follows"
"""The first paint's alt text."""
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


CURVES_H = 520
"""The Live PPO curves image's height in pixels."""
PANELS = (((9.0, 44.0), (104, 224)), ((58.0, 93.0), (104, 224)), ((9.0, 44.0), (314, 434)), ((58.0, 93.0), (314, 434)))
"""Each panel's plot area, as style.ppo_panels orders them: (left, right) in % of the width, (top, bottom) in
pixels. Its title lines and y-axis title sit above it, its y ticks to its left."""
CURVES_ALT = "Live PPO's curves per step: reward, exact KL both ways, the chosen estimate, and beta"
"""The curves image's alt text."""
SPAN = 1000.0
"""A panel's curves are drawn in a nested <svg> whose viewBox is SPAN x SPAN, stretched over the plot area
(polyline points take no percentages); x = SPAN (step - x0) / (x1 - x0), y = SPAN (1 - (v - y0) / (y1 - y0))."""


def axis_range(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    """(lo, hi) around the finite `values`, `pad` of their spread added on each side; a single value gets
    +-10% of itself (+-1 at 0); none gets (0, 1)."""
    import math

    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    lo, hi = min(finite), max(finite)
    margin = pad * (hi - lo) if hi > lo else (0.1 * abs(lo) or 1.0)
    return lo - margin, hi + margin


def ticks(lo: float, hi: float, most: int = 5) -> list[float]:
    """Multiples of the smallest 1, 2 or 5 x 10^k step that puts at most `most` ticks within [lo, hi]."""
    import math

    power = 10.0 ** math.floor(math.log10((hi - lo) / most))
    for step in sorted(m * p for m in (1, 2, 5) for p in (power, 10 * power, 100 * power)):
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
        if last - first + 1 <= most:
            return [k * step for k in range(first, last + 1)]
    raise AssertionError("unreachable: a step of 100 x 10^floor(log10(span / most)) leaves at most `most`")


def _segments(steps: Sequence[float], values: Sequence[float]) -> list[list[tuple[float, float]]]:
    """The curve's runs of finite points (a missing value is a gap, as in the plotly figure)."""
    import math

    out: list[list[tuple[float, float]]] = [[]]
    for x, v in zip(steps, values):
        if math.isfinite(v):
            out[-1].append((float(x), v))
        elif out[-1]:
            out.append([])
    return [seg for seg in out if seg]


def ppo_curves_svg(runs: Mapping[str, list[dict]], estimator_key: str | None) -> str:
    """Live PPO's curves as an SVG document (a str): per step, up to MAX_RUNS runs overlaid in the panels of
    style.ppo_panels, with plots.ppo_curves_figure's curves, titles and colours (the x axis shared by all four;
    each y axis fits its values with axis_range, where plotly's autorange pads them its own way). Each curve is
    a <polyline class="curve"> (a lone point a <circle>) per run of finite values, carrying its run, metric,
    steps and exact values (data-run, data-key, data-steps, data-values: tests read them); each panel's
    nested <svg> carries its axis ranges (data-x0, data-x1, data-y0, data-y1)."""
    panels = ppo_panels(estimator_key)
    shown = list(runs.items())[:MAX_RUNS]
    series = {(name, key): ppo_series(metrics, key) for name, metrics in shown
              for _, _, curves in panels for key, _ in curves}
    x0, x1 = axis_range([float(x) for steps, _ in series.values() for x in steps], pad=0.0)
    x_ticks = [int(t) for t in ticks(x0, x1, 6) if t == int(t)]  # steps are whole numbers; every panel's
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" height="{CURVES_H}" {FONT}>',
           '<rect width="100%" height="100%" fill="white"/>',
           _text("1%", 24, PPO_CURVES_TITLE, 16, extra='font-weight="600"')]
    for (title, y_title, curves), ((left, right), (top, bottom)) in zip(panels, PANELS):
        y0, y1 = axis_range([v for name, _ in shown for key, _ in curves for v in series[name, key][1]])
        lines = [*title, *([y_title] if y_title else [])]
        for k, line in enumerate(lines):
            out.append(_text(_pct(left), top - 8 - 15 * (len(lines) - 1 - k), line, 13 if k < len(title) else 11,
                             extra="" if k < len(title) else 'fill-opacity="0.7"'))
        width = right - left
        for tick in ticks(y0, y1):
            y = bottom - (tick - y0) / (y1 - y0) * (bottom - top)
            out.append(f'<line x1="{_pct(left)}" y1="{y:.2f}" x2="{_pct(right)}" y2="{y:.2f}" stroke="#ebf0f8"/>')
            out.append(_text(_pct(left - 0.8), y + 4, f"{tick:.4g}", 11, "end"))
        for tick in x_ticks:
            x = _pct(left + (tick - x0) / (x1 - x0) * width)
            out.append(f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" stroke="#ebf0f8"/>')
            out.append(_text(x, bottom + 16, f"{tick}", 11, "middle"))
        out.append(f'<rect x="{_pct(left)}" y="{top}" width="{_pct(width)}" height="{bottom - top}" fill="none" '
                   'stroke="#c8d4e3"/>')
        out.append(f'<svg x="{_pct(left)}" y="{top}" width="{_pct(width)}" height="{bottom - top}" '
                   f'viewBox="0 0 {SPAN:g} {SPAN:g}" preserveAspectRatio="none" overflow="visible" '
                   f'data-x0="{x0!r}" data-x1="{x1!r}" data-y0="{y0!r}" data-y1="{y1!r}">')
        for i, (name, _) in enumerate(shown):
            for key, dashed in curves:
                steps, values = series[name, key]
                data = (f'data-run={quoteattr(name)} data-key={quoteattr(key)} '
                        f'data-steps="{" ".join(repr(float(x)) for x in steps)}" '
                        f'data-values="{" ".join(repr(v) for v in values)}"')
                for seg in _segments(steps, values):
                    pts = [(SPAN * (x - x0) / (x1 - x0), SPAN * (1 - (v - y0) / (y1 - y0))) for x, v in seg]
                    if len(pts) == 1:
                        out.append(f'<circle class="curve" {data} cx="{pts[0][0]:.3f}" cy="{pts[0][1]:.3f}" r="3" '
                                   f'fill="{RUN_COLORS[i]}" vector-effect="non-scaling-stroke"/>')
                        continue
                    dash = ' stroke-dasharray="6 4"' if dashed else ""
                    out.append(f'<polyline class="curve" {data} points="{" ".join(f"{x:.3f},{y:.3f}" for x, y in pts)}" '
                               f'fill="none" stroke="{RUN_COLORS[i]}" stroke-width="2"{dash} '
                               'vector-effect="non-scaling-stroke"/>')
        out.append("</svg>")
    for (left, right), (_, bottom) in PANELS[2:]:  # the shared x axis' title, under each bottom panel
        out.append(_text(_pct((left + right) / 2), bottom + 34, "step", 12, "middle"))
    y = CURVES_H - 28
    out.append(_text("1%", y + 4, "run", 12))
    for i, (name, _) in enumerate(shown):
        x = 5 + 22 * i
        out.append(f'<line x1="{_pct(x)}" y1="{y}" x2="{_pct(x + 2.5)}" y2="{y}" stroke="{RUN_COLORS[i]}" stroke-width="2"/>')
        out.append(_text(_pct(x + 3.2), y + 4, name, 12))
    out.append("</svg>")
    return "".join(out)
