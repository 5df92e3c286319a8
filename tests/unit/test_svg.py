"""The static first-paint chart (klviz.views.svg): the same numbers, axes, order and texts as the plotly
mass-moved figure it stands in for, every text escaped exactly once, and nothing in it that runs or loads."""

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from klviz.engine.columns import BAND_LABELS
from klviz.views import plots, svg, style

NS = "{http://www.w3.org/2000/svg}"


def random_bands(seed: int, labels=BAND_LABELS) -> dict:
    rng = np.random.default_rng(seed)
    gained, lost = rng.dirichlet(np.ones(len(labels))) * 0.3, rng.dirichlet(np.ones(len(labels))) * 0.2
    gained[0] = 0.0  # an empty band draws a zero-width bar
    return {"label": list(labels), "mass_gained": gained.tolist(), "mass_lost": lost.tolist()}


def parse(doc: str) -> ET.Element:
    return ET.fromstring(doc)  # well-formed XML, or this raises


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_bar_is_its_band_value_on_the_figures_axis(seed):
    bands = random_bands(seed)
    root = parse(svg.mass_moved_svg(bands))
    top = max(max(bands["mass_gained"]), max(bands["mass_lost"]))  # float64, as the figure takes its range
    fig = plots.mass_moved_figure(bands)
    assert list(fig.layout.xaxis.range) == pytest.approx([-1.1 * top, 1.1 * top], rel=0, abs=0)
    per_unit = (svg.PLOT["right"] - svg.PLOT["left"]) / (2.2 * top)  # % of the width per unit
    zero = (svg.PLOT["left"] + svg.PLOT["right"]) / 2
    for kind, values, sign in (("gained", bands["mass_gained"], 1), ("lost", bands["mass_lost"], -1)):
        rects = {r.get("data-band"): r for r in root.iter(f"{NS}rect") if r.get("class") == kind}
        assert set(rects) == set(BAND_LABELS)
        for label, value in zip(bands["label"], values):
            r = rects[label]
            assert float(r.get("data-value")) == value  # the exact float64, round-tripped through repr
            x, width = (float(r.get(a).removesuffix("%")) for a in ("x", "width"))  # % of the image's width
            assert width == pytest.approx(value * per_unit, abs=6e-5)  # drawn to 1/10,000 of a percent
            assert (x if sign > 0 else x + width) == pytest.approx(zero, abs=6e-5)
    # the plotly figure draws the same values: gained to the right, lost to the left
    assert list(fig.data[0].x) == bands["mass_gained"] and list(-fig.data[1].x) == bands["mass_lost"]


def test_bands_run_bottom_to_top_in_band_order_whatever_the_input_order():
    bands = random_bands(3)
    shuffled = {k: list(reversed(v)) for k, v in bands.items()}
    root = parse(svg.mass_moved_svg(shuffled))
    ys = {r.get("data-band"): float(r.get("y")) for r in root.iter(f"{NS}rect") if r.get("class") == "gained"}
    assert sorted(ys, key=ys.get, reverse=True) == list(BAND_LABELS)  # the lowest q band at the bottom
    assert svg.mass_moved_svg(shuffled) == svg.mass_moved_svg(bands)  # the same picture either way


def test_texts_are_the_figures_and_escaped_exactly_once():
    labels = ["<1e-6", "a & b", 'say "hi"', "</svg><script>alert(1)</script>"]
    bands = {"label": labels, "mass_gained": [0.1, 0.2, 0.0, 0.05], "mass_lost": [0.0, 0.1, 0.3, 0.0]}
    doc = svg.mass_moved_svg(bands)
    root = parse(doc)
    texts = ["".join(t.itertext()) for t in root.iter(f"{NS}text")]
    for label in labels:  # each label shows as typed (parsed back once), never double-escaped
        assert label in texts
    assert "&amp;amp;" not in doc and "&amp;lt;" not in doc and "<script" not in doc
    assert not [e for e in root.iter() if e.tag in (f"{NS}script", f"{NS}image", f"{NS}foreignObject", f"{NS}a")]
    assert "href" not in doc and "url(" not in doc  # nothing to load
    fig = plots.mass_moved_figure(random_bands(0))
    assert fig.layout.title.text in texts and fig.layout.xaxis.title.text in texts
    assert fig.layout.yaxis.title.text in texts
    assert texts[0] == fig.layout.title.text and " · ".join(texts[1:3]) == fig.layout.title.subtitle.text  # 2 lines
    assert [fig.data[0].name, fig.data[1].name] == [style.GAINED_NAME, style.LOST_NAME]
    assert style.GAINED_NAME in texts and style.LOST_NAME in texts


def test_ticks_are_round_numbers_inside_the_axis():
    for limit in (1.1, 0.25, 1.1e-7, 3.3e-3, 0.99, 0.11, 1.1e-12):
        ticks = svg.nice_ticks(limit)
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** np.floor(np.log10(step))
        assert 0.0 in ticks and 2 <= len(ticks) // 2 <= 4 and all(abs(t) <= limit for t in ticks)
        assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-9


def test_no_bands_still_draw():
    root = parse(svg.mass_moved_svg({"label": [], "mass_gained": [], "mass_lost": []}))
    assert not [r for r in root.iter(f"{NS}rect") if r.get("class")]


# Live PPO's curves as an image (svg.ppo_curves_svg), drawn while a run trains instead of the plotly figure.

def random_runs(seed: int, n_runs: int = 2, steps: int = 30) -> dict:
    """Metrics rows as a PPO job's snapshot holds them: a missing estimate (None) and an absent kl_coef make
    gaps, and the second run is shorter than the first (as a run started later)."""
    rng = np.random.default_rng(seed)
    runs = {}
    for r in range(n_runs):
        rows = []
        for s in range(1, steps - 7 * r + 1):
            row = {"step": s, "reward_mean": float(rng.normal()), "kl_reverse": float(rng.gamma(2.0) * s),
                   "kl_forward": float(rng.gamma(2.0) * s), "k3": None if s % 7 == 3 else float(rng.gamma(1.0)),
                   "kl_coef": 0.05 * float(np.exp(rng.normal(0, 0.1)))}
            if s == 2:
                del row["kl_coef"]  # a lone first point, then a gap
            rows.append(row)
        runs[f"#{r + 1} k3 in reward <{r}> & co"] = rows
    return runs


def curves(root) -> dict:
    """{(run, metric): [(elements' steps, values, drawn points), ...]} with each panel's axis ranges."""
    out = {}
    for panel in root.iter(f"{NS}svg"):
        if panel.get("data-x0") is None:
            continue
        x0, x1, y0, y1 = (float(panel.get(a)) for a in ("data-x0", "data-x1", "data-y0", "data-y1"))
        for el in panel:
            if el.get("class") != "curve":
                continue
            if el.tag == f"{NS}circle":
                pts = [(float(el.get("cx")), float(el.get("cy")))]
            else:
                pts = [tuple(map(float, p.split(","))) for p in el.get("points").split()]
            drawn = [(x0 + x / svg.SPAN * (x1 - x0), y0 + (1 - y / svg.SPAN) * (y1 - y0)) for x, y in pts]
            out.setdefault((el.get("data-run"), el.get("data-key")), []).append(
                ([float(v) for v in el.get("data-steps").split()], [float(v) for v in el.get("data-values").split()],
                 drawn, (x0, x1, y0, y1)))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_every_curve_point_is_its_metric_on_the_panels_axis(seed):
    runs = random_runs(seed)
    root = parse(svg.ppo_curves_svg(runs, "k3"))
    drawn = curves(root)
    fig = plots.ppo_curves_figure(runs, "k3")
    # the same curves as the plotly figure: one per run and metric, the figure's trace order
    keys = [c[0] for _, _, c in style.ppo_panels("k3") for c in c]
    assert sorted(drawn) == sorted((name, key) for name in runs for key in keys)
    assert len(fig.data) == len(drawn)
    for name, rows in runs.items():
        for key in keys:
            # brute force: the metric straight from the rows, a missing one NaN
            steps = [float(r["step"]) for r in rows]
            values = [float(r[key]) if r.get(key) is not None else np.nan for r in rows]
            trace = next(t for t in fig.data if t.name == plots.esc(name) and f" · {key}<br>" in t.hovertemplate)
            np.testing.assert_array_equal(np.asarray(trace.y, dtype=float), values)  # the figure draws the same
            elements = drawn[name, key]
            for el_steps, el_values, _, _ in elements:  # each element carries the whole series, exactly
                assert el_steps == steps
                np.testing.assert_array_equal(el_values, values)
            finite = [(s, v) for s, v in zip(steps, values) if np.isfinite(v)]
            points = [p for _, _, pts, _ in elements for p in pts]
            assert len(points) == len(finite)  # every finite value drawn once; NaN ones are gaps
            x0, x1, y0, y1 = elements[0][3]
            for (s, v), (x, y) in zip(finite, points):
                assert x == pytest.approx(s, abs=1e-5 * (x1 - x0))  # drawn to 1/1000 of a viewBox unit
                assert y == pytest.approx(v, abs=1e-5 * (y1 - y0))
            gaps = sum(1 for a, b in zip(values, values[1:]) if np.isfinite(a) and not np.isfinite(b))
            assert len(elements) == gaps + (np.isfinite(values[-1]) or 0)  # one element per run of finite values


def test_curves_axes_share_the_steps_and_hold_every_value():
    runs = random_runs(2, n_runs=3)
    drawn = curves(parse(svg.ppo_curves_svg(runs, "k3")))
    every_step = [float(r["step"]) for rows in runs.values() for r in rows]
    for elements in drawn.values():
        for steps, values, _, (x0, x1, y0, y1) in elements:
            assert (x0, x1) == (min(every_step), max(every_step))  # shared x, no padding (plotly's for lines)
            finite = [v for v in values if np.isfinite(v)]
            assert y0 < min(finite) and max(finite) < y1


def test_curves_without_an_estimator_or_steps_still_draw():
    runs = random_runs(3, n_runs=1)
    root = parse(svg.ppo_curves_svg(runs, None))
    assert {key for _, key in curves(root)} == {"reward_mean", "kl_reverse", "kl_forward", "kl_coef"}
    texts = ["".join(t.itertext()) for t in root.iter(f"{NS}text")]
    assert "estimate (none chosen)" in texts
    empty = parse(svg.ppo_curves_svg({"#1 none": []}, "k1"))  # a run before its first step
    assert not curves(empty) and "#1 none" in ["".join(t.itertext()) for t in empty.iter(f"{NS}text")]


def test_curves_texts_are_the_figures_and_escaped_exactly_once():
    runs = random_runs(4, n_runs=4)
    doc = svg.ppo_curves_svg(runs, "k3")
    root = parse(doc)
    texts = ["".join(t.itertext()) for t in root.iter(f"{NS}text")]
    for name in runs:  # the legend: each run as typed, parsed back once
        assert name in texts
    assert "&amp;amp;" not in doc and "&amp;lt;" not in doc
    assert not [e for e in root.iter() if e.tag in (f"{NS}script", f"{NS}image", f"{NS}foreignObject", f"{NS}a")]
    assert "href" not in doc and "url(" not in doc
    fig = plots.ppo_curves_figure(runs, "k3")
    for annotation in fig.layout.annotations:  # every panel title, line by line
        for line in annotation.text.split("<br>"):
            assert line in texts
    assert fig.layout.title.text in texts and "step" in texts
    assert {fig.layout.yaxis.title.text, fig.layout.yaxis2.title.text} <= set(texts)
    colors = {el.get("data-run"): el.get("stroke") or el.get("fill") for el in root.iter() if el.get("class") == "curve"}
    assert [colors[name] for name in runs] == list(style.RUN_COLORS)  # the figure's run colours, in order
    assert [t.line.color for t in fig.data if t.showlegend] == list(style.RUN_COLORS)


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-2.3, 2.6), (0.045, 0.055), (1.0, 30.0), (-1e-9, 3e-9), (95.2, 104.9)])
def test_axis_ticks_are_round_and_inside(lo, hi):
    ts = svg.ticks(lo, hi)
    assert 2 <= len(ts) <= 5 and all(lo - 1e-12 <= t <= hi + 1e-12 for t in ts)
    step = ts[1] - ts[0]
    mantissa = step / 10 ** np.floor(np.log10(step))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-9
    assert svg.axis_range([3.0]) == (2.7, 3.3) and svg.axis_range([]) == (0.0, 1.0) and svg.axis_range([0.0]) == (-1, 1)
