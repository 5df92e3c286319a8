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
