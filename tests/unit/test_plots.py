"""Each figure builds from small tables, has the expected traces, states KL directions, escapes tokens."""

import html
import json

import numpy as np
import plotly.graph_objects as go
import pytest

from klviz.views import plots, tables
from klviz.engine.columns import BAND_LABELS
from tests.unit.test_tables import SCRIPT, build_table, decode

REV, FWD = "KL(policy || SFT)", "KL(SFT || policy)"
ESCAPED = html.escape(SCRIPT)


@pytest.fixture(scope="module")
def df():
    return build_table()


def _text(fig: go.Figure) -> str:
    """Everything plotly would render as text: layout, trace names, texts, hovers (JSON)."""
    return json.dumps(fig.to_plotly_json(), ensure_ascii=False, default=str)


def _assert_escaped(fig: go.Figure):
    t = _text(fig)
    assert ESCAPED in t, "the <script> token should appear, escaped"
    assert "<script>" not in t


def test_mass_moved_figure(df):
    fig = plots.mass_moved_figure(tables.band_totals(df))
    gained, lost = fig.data
    assert gained.marker.color == plots.GAINED_COLOR and lost.marker.color == plots.LOST_COLOR
    assert all(x >= 0 for x in gained.x) and all(x <= 0 for x in lost.x) and min(lost.x) < 0
    assert list(gained.y) == [html.escape(s) for s in BAND_LABELS]
    t = _text(fig)
    assert REV in t and FWD in t and "found unlikely" in t


def test_mass_moved_figure_from_ppo_record():
    record = {"step": 1, "n_tokens": 4, "mass_gained_by_sft_bin": [0, 0, 0, 0, 0.1, 0.2, 0.3],
              "mass_lost_by_sft_bin": [0.6, 0, 0, 0, 0, 0, 0], "kl_reverse_by_sft_bin": [0] * 7,
              "kl_forward_by_sft_bin": [0] * 7}
    fig = plots.mass_moved_figure(tables.bands_from_ppo(record))
    assert fig.data[0].x[-1] == pytest.approx(0.075) and fig.data[1].x[0] == pytest.approx(-0.15)


def test_kl_by_band_figure(df):
    fig = plots.kl_by_band_figure(tables.band_totals(df))
    assert [d.name for d in fig.data] == [REV, FWD]


def test_prob_scatter_figure(df):
    fig = plots.prob_scatter_figure(tables.top_token_points(df, decode))
    kinds = [d for d in fig.data if isinstance(d, go.Scattergl)]
    assert len(kinds) == 2 and fig.data[-1].name == "p = q"
    assert np.all(np.asarray(kinds[0].x) <= 0) and np.isfinite(np.asarray(kinds[0].y)).all()
    t = _text(fig)
    assert REV in t and FWD in t
    _assert_escaped(fig)


def test_token_shift_figure(df):
    gained, lost = tables.token_shift(df, decode, top=40)
    fig = plots.token_shift_figure(gained, lost)
    assert len(fig.data) == 2 and fig.data[0].marker.color == plots.GAINED_COLOR
    assert REV in _text(fig) and FWD in _text(fig)
    _assert_escaped(fig)
    assert "·" in _text(fig) and "↵" in _text(fig)  # whitespace tokens made visible


def test_position_profile_figure(df):
    fig = plots.position_profile_figure(tables.position_profile(df))
    names = " ".join(d.name for d in fig.data)
    assert len(fig.data) == 4 and REV in names and FWD in names


def test_sequence_kl_figure(df):
    fig = plots.sequence_kl_figure(tables.per_sequence(df))
    assert len(fig.data) == 2  # one box per source
    assert len(fig.data[0].y) == 3 * 3  # three policy responses, three quantities
    t = _text(fig)
    assert REV in t and "negative" in t


def test_visible_token_text():
    assert plots.visible_token_text(" a\n\tb") == "·a↵→b"
    assert plots.visible_token_text("") == "∅"


def test_apart_labels_skip_a_cluster():
    # three points in one cluster, then two apart: the cluster keeps its first label only
    x, y = [-1.0, -1.05, -1.1, -5.0, -9.0], [-2.0, -2.1, -2.05, -6.0, -1.0]
    assert plots.apart_labels(x, y, k=3, span=10.0) == [True, False, False, True, True]
    assert plots.apart_labels(x, y, k=2, span=10.0) == [True, False, False, True, False]
    taken = [(-5.0, -6.0)]  # a label placed by the other kind
    assert plots.apart_labels(x, y, k=3, span=10.0, taken=taken) == [True, False, False, False, True]
    assert len(taken) == 3
    assert plots.apart_labels([-1.0, -4.0], [-1.0, -1.0], k=3, span=10.0) == [True, True]  # 3 apart in x


def test_position_detail_figures(df):
    row = df.iloc[0].to_dict()
    row["gained_top_ids"] = np.array([2, *row["gained_top_ids"][1:]])  # decodes to the <script> token
    detail = tables.position_detail(row, decode)
    fig = plots.position_detail_figure(detail)
    assert len(fig.data) == 4  # p and q bars, for gained and for lost
    assert REV in _text(fig) and FWD in _text(fig)
    _assert_escaped(fig)
    fig2 = plots.logq_vs_logp_figure(detail)
    assert len(fig2.data) == 3 and fig2.data[-1].name == "p = q"
    placed = []
    for trace, kind in zip(fig2.data, ("gained", "lost")):  # the largest few that don't collide named, all on hover
        named = [bool(t) for t in trace.text]
        assert named[0] or kind == "lost" and placed, "the largest gained token is always named"
        assert sum(named) <= plots.LABELLED
        assert [t for t, n in zip(trace.text, named) if n] == [plots._label(t) for t, n in
                                                                zip(detail[kind]["token"], named) if n]
        placed += [(x, y) for x, y, n in zip(trace.x, trace.y, named) if n]
        assert list(trace.hovertext) == [plots._label(t) for t in detail[kind]["token"]]
    w, h = plots.LABEL_BOX
    span = -min(0.0, *(v for t in fig2.data[:2] for v in (*t.x, *t.y)))
    for i, (xa, ya) in enumerate(placed):  # no two named points' label boxes overlap
        for xb, yb in placed[i + 1:]:
            assert abs(xa - xb) >= w * span or abs(ya - yb) >= h * span
    _assert_escaped(fig2)


def _metrics(n, shift):
    return [{"step": s, "reward_mean": s + shift, "reward_std": 1.0, "kl_reverse": 0.1 * s,
             "kl_forward": 0.05 * s, "k1": 0.09 * s, "k2": 0.1 * s, "k3": 0.11 * s, "kl_coef": 0.1}
            for s in range(n)]


def test_ppo_curves_figure_fits_a_narrow_column():
    """Titles short per line, a gap for the right panels' axis title, the legend below (seen overlapping at 1280 px)."""
    fig = plots.ppo_curves_figure({"a": _metrics(3, 0)}, "k3")
    for a in fig.layout.annotations:
        assert all(len(line) <= 28 for line in a.text.split("<br>")), a.text
    left, right = fig.layout.xaxis.domain, fig.layout.xaxis2.domain
    assert right[0] - left[1] >= 0.2
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0


def test_ppo_curves_figure():
    runs = {f"run {i} <b>": _metrics(5, i) for i in range(6)}
    fig = plots.ppo_curves_figure(runs, "k3")
    assert len(fig.data) == plots.MAX_RUNS * 5  # at most four runs, five curves each
    assert len({d.line.color for d in fig.data}) == plots.MAX_RUNS
    t = _text(fig)
    assert REV in t and FWD in t and "k3 estimate" in t and "<b>" not in t
    none = plots.ppo_curves_figure({"a": _metrics(3, 0), "empty": []}, None)
    assert len(none.data) == 2 * 4


def test_figures_on_empty_and_single_row(df):
    for small in (df.head(0), df.head(1)):
        plots.mass_moved_figure(tables.band_totals(small))
        plots.kl_by_band_figure(tables.band_totals(small))
        plots.prob_scatter_figure(tables.top_token_points(small, decode))
        plots.token_shift_figure(*tables.token_shift(small, decode))
        plots.position_profile_figure(tables.position_profile(small))
        plots.sequence_kl_figure(tables.per_sequence(small))


def _axes(fig: go.Figure) -> list:
    out = []
    fig.for_each_xaxis(out.append)
    fig.for_each_yaxis(out.append)
    return out


def test_ranked_bars_each_have_a_label(df):
    gained, lost = tables.token_shift(df, decode, top=20)
    lost = lost.assign(token=[" ", "·", *lost["token"][2:]])  # equal visible text: still two bars
    fig = plots.token_shift_figure(gained, lost)
    for trace, frame, axis in zip(fig.data, (gained, lost), (fig.layout.yaxis, fig.layout.yaxis2)):
        n = len(frame)
        assert n == 20 and list(trace.y) == list(range(n))
        assert list(axis.tickvals) == list(range(n)) and axis.tickmode == "array"
        assert list(axis.ticktext) == [plots._short_label(t) for t in frame["token"].iloc[::-1]]
    assert fig.layout.height >= 20 * plots.BAR_PX  # room for every label
    assert fig.layout.yaxis2.ticktext[-2:] == ("·", "·")
    long = gained.assign(token=["x" * 40] * len(gained))
    assert all(len(t) <= plots.LABEL_CHARS for t in plots.token_shift_figure(long, lost).layout.yaxis.ticktext)


def _all_figures(df):
    from klviz.views import lab_plots
    detail = tables.position_detail(df.iloc[0], decode)
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.2, 0.3, 0.5])
    return [plots.mass_moved_figure(tables.band_totals(df)), plots.kl_by_band_figure(tables.band_totals(df)),
            plots.prob_scatter_figure(tables.top_token_points(df, decode)),
            plots.token_shift_figure(*tables.token_shift(df, decode)),
            plots.position_profile_figure(tables.position_profile(df)),
            plots.sequence_kl_figure(tables.per_sequence(df)),
            plots.position_detail_figure(detail), plots.logq_vs_logp_figure(detail),
            plots.ppo_curves_figure({"a": _metrics(3, 0)}, "k3"),
            lab_plots.distributions_figure(p, q), lab_plots.convergence_figure(np.array([0.1, 0.2]), 0.15, 0.1),
            lab_plots.optima_figure(q, p, p, q), lab_plots.gradients_figure({"grad KL(pi||ref)": p - q})]


def test_no_si_suffixes_on_any_axis(df):
    """plotly's default exponentformat "B" writes 7.7e-13 nats as "774.69f"."""
    for fig in _all_figures(df):
        for axis in _axes(fig):
            assert axis.exponentformat == "e", fig.layout.title.text


def test_subplot_titles_are_short_lines(df):
    """Neighbouring subplot titles overlapped at 1280 px; each line now fits its panel, and no
    annotation is one line too long for a 1280 px page (plotly does not wrap them)."""
    for fig in _all_figures(df):
        for ann in fig.layout.annotations:
            if ann.xref == "paper" and ann.yref == "paper" and ann.text:
                title = ann.yanchor == "bottom" and ann.xanchor == "center"  # make_subplots' titles
                assert max(len(line) for line in ann.text.split("<br>")) <= (40 if title else 100), ann.text


def test_one_colour_per_model_on_every_page():
    from klviz.views import lab_plots
    assert (lab_plots.POLICY_COLOR, lab_plots.SFT_COLOR) == (plots.POLICY_COLOR, plots.SFT_COLOR)
    assert (lab_plots.REVERSE_COLOR, lab_plots.FORWARD_COLOR) == (plots.KL_REVERSE_COLOR, plots.KL_FORWARD_COLOR)


def test_kl_axes_state_units(df):
    fig = plots.ppo_curves_figure({"a": _metrics(3, 0)}, "k3")
    assert fig.layout.yaxis2.title.text == fig.layout.yaxis3.title.text == "nats per sequence"
    assert "nats per token" in fig_text(plots.kl_by_band_figure(tables.band_totals(df)))
    assert "nats per token" in plots.position_profile_figure(tables.position_profile(df)).layout.yaxis.title.text


def fig_text(fig):
    return _text(fig)


def test_token_text_is_escaped_exactly_once_for_plotly():
    # plotly decodes &lt; &gt; &amp; (and numeric entities) but not &quot;: a quote must reach it as is
    assert plots.esc('say "hi" & <b>') == 'say "hi" &amp; &lt;b&gt;'
    assert plots.esc("it's") == "it's"
