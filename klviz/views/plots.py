"""klviz.views.tables frames -> plotly figures. No streamlit, and no pandas import (the band figures also
take plain {column: list} mappings, which the dashboard's first view draws before pandas loads).

Every KL label states its direction: KL(policy || SFT) = sum_v p log(p/q) (InstructGPT's penalty),
KL(SFT || policy) = sum_v q log(q/p). Token text is html-escaped before it reaches any text, hover
or label, since plotly renders a subset of HTML in them.
"""

from __future__ import annotations

import functools
import html
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from klviz.engine.columns import BAND_LABELS
from klviz.views.style import (BAND_AXIS_TITLE, GAINED_COLOR, GAINED_NAME, KL_FORWARD, KL_REVERSE, LOST_COLOR,
                               LOST_NAME, MASS_MOVED_SUBTITLE, MASS_MOVED_TITLE, MASS_MOVED_X_TITLE, MAX_RUNS,
                               PPO_CURVES_TITLE, RUN_COLORS, mass_axis_top, ppo_panels, ppo_series)

if TYPE_CHECKING:
    import pandas as pd

Bands = Mapping[str, Sequence]  # tables.band_totals' frame, or its columns as lists (klviz.shipped_view)

KL_REVERSE_COLOR = "#b2182b"
KL_FORWARD_COLOR = "#2166ac"
K1_COLOR, K3_COLOR = "#7f7f7f", "#1b9e77"
POLICY_COLOR, SFT_COLOR = "#762a83", "#5aae61"
LOG10_FLOOR = -45.0  # log10 of ~the smallest float32 subnormal: where a p or q of 0 is drawn
VISIBLE_WS = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}
QUANTITY_LABELS = {
    "log_ratio": "log p(y)/q(y)", "kl_reverse": KL_REVERSE, "kl_forward": KL_FORWARD,
    "k1": f"k1 (estimates {KL_REVERSE})", "k3": f"k3 (estimates {KL_REVERSE})",
}


LABEL_CHARS = 18  # a ranked bar's token label is cut to this many characters (the hover has it whole)
LABELLED = 3  # points of each kind named on the log q against log p chart (largest contributions)
LABEL_BOX = (0.25, 0.1)  # a point label's width and height (with its marker) as fractions of the axis span
BAR_PX = 22  # height per bar of a ranked bar chart, so that every bar keeps its label
SUBTITLE_FONT = dict(size=13)  # subplot titles, two short lines each, so neighbours never overlap


def readable(build: Callable[..., go.Figure]) -> Callable[..., go.Figure]:
    """Decorate a figure builder: every axis writes plain numbers (1e-12, never SI suffixes).

    plotly's default exponentformat "B" writes SI prefixes, so 7.7469e-13 nats read "774.69f"
    (plotly.com/python/reference/layout/xaxis/#layout-xaxis-exponentformat); "e" writes 7.7469e-13.
    """
    @functools.wraps(build)
    def wrapper(*args, **kwargs) -> go.Figure:
        fig = build(*args, **kwargs)
        fig.update_xaxes(exponentformat="e")
        fig.update_yaxes(exponentformat="e")
        return fig
    return wrapper


def ranked_axis(labels: Sequence[str]) -> dict:
    """A category axis for a ranked bar chart with one tick per bar: bars sit at 0..n-1 and the
    ticks carry the labels, so plotly never thins the labels out and equal labels stay two bars."""
    return dict(tickmode="array", tickvals=list(range(len(labels))), ticktext=list(labels),
                range=[-0.6, len(labels) - 0.4] if len(labels) else None, automargin=True)


def esc(s) -> str:
    """Token text for plotly: <, > and & escaped (so `<script>` shows as text), quotes left as they are:
    plotly's pseudo-HTML decodes only a few named entities and `&quot;` is not one of them, so a `"`
    escaped as `&quot;` showed as `&quot;` (plotly.js src/constants/string_mappings.js, entityToUnicode).
    Without `<` no tag, and so no attribute, can be formed from token text."""
    return html.escape(str(s), quote=False)


def visible_token_text(s: str) -> str:
    """Token text with whitespace made visible: "·" space, "↵" newline, "→" tab (not escaped)."""
    return "".join(VISIBLE_WS.get(c, c) for c in str(s)) or "∅"


def _label(s) -> str:
    return esc(visible_token_text(s))


def apart_labels(x: Sequence[float], y: Sequence[float], k: int, span: float,
                 taken: list[tuple[float, float]] | None = None) -> list[bool]:
    """Which of the points (in order of importance) carry their label: the first `k` whose label box, about
    LABEL_BOX of `span` wide and high around the point, clears every label already placed (`taken`,
    extended in place). Clustered top tokens overlapped in the browser at 1280 and 1600 px (issue 15)."""
    taken = [] if taken is None else taken
    w, h = LABEL_BOX[0] * span, LABEL_BOX[1] * span
    keep = []
    for xi, yi in zip(x, y):
        ok = sum(keep) < k and all(abs(xi - a) >= w or abs(yi - b) >= h for a, b in taken)
        if ok:
            taken.append((xi, yi))
        keep.append(ok)
    return keep


def _short_label(s) -> str:
    t = visible_token_text(s)
    return esc(t if len(t) <= LABEL_CHARS else t[:LABEL_CHARS - 1] + "…")


def _log10(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log10(x), LOG10_FLOOR)


@readable
def mass_moved_figure(bands: Bands) -> go.Figure:
    """The headline: per SFT-probability band, mass gained (right) against mass lost (left)."""
    y = [esc(s) for s in bands["label"]]
    gained = np.asarray(bands["mass_gained"], dtype=np.float64)
    lost = np.asarray(bands["mass_lost"], dtype=np.float64)
    fig = go.Figure()
    fig.add_bar(y=y, x=gained, orientation="h", marker_color=GAINED_COLOR, name=GAINED_NAME,
                hovertemplate="q band %{y}<br>gained %{x:.4g} per token<extra></extra>")
    fig.add_bar(y=y, x=-lost, orientation="h", marker_color=LOST_COLOR, customdata=lost, name=LOST_NAME,
                hovertemplate="q band %{y}<br>lost %{customdata:.4g} per token<extra></extra>")
    top = mass_axis_top(gained, lost)
    fig.add_vline(x=0, line_color="black", line_width=1)
    fig.update_layout(
        barmode="relative",
        title=dict(text=MASS_MOVED_TITLE, subtitle=dict(text=MASS_MOVED_SUBTITLE)),
        margin=dict(t=90),
        xaxis=dict(title=MASS_MOVED_X_TITLE, range=[-1.1 * top, 1.1 * top], tickformat=".2~g", exponentformat="e"),
        yaxis=dict(title=BAND_AXIS_TITLE, categoryorder="array",
                   categoryarray=[esc(s) for s in BAND_LABELS]),
        legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig


@readable
def kl_by_band_figure(bands: Bands) -> go.Figure:
    """Each band's share of KL(policy || SFT) and of KL(SFT || policy), per token."""
    x = [esc(s) for s in bands["label"]]
    fig = go.Figure()
    fig.add_bar(x=x, y=np.asarray(bands["kl_reverse"], dtype=np.float64), name=KL_REVERSE,
                marker_color=KL_REVERSE_COLOR)
    fig.add_bar(x=x, y=np.asarray(bands["kl_forward"], dtype=np.float64), name=KL_FORWARD,
                marker_color=KL_FORWARD_COLOR)
    fig.update_layout(barmode="group", margin=dict(t=90),
                      title=dict(text="KL contributions per SFT-probability band",
                                 subtitle=dict(text="nats per token, mean over the tokens shown")),
                      xaxis_title=BAND_AXIS_TITLE,
                      yaxis_title=f"nats per token ({KL_REVERSE} and {KL_FORWARD})")
    return fig


def _diagonal(lo: float, hi: float) -> go.Scatter:
    return go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="p = q",
                      line=dict(color="black", dash="dot", width=1), hoverinfo="skip")


@readable
def prob_scatter_figure(points: pd.DataFrame) -> go.Figure:
    """log10 q (SFT) against log10 p (policy) for the top tokens of every position (Scattergl)."""
    fig = go.Figure()
    names = {"gained": f"top by p log(p/q) (share of {KL_REVERSE})",
             "lost": f"top by q log(q/p) (share of {KL_FORWARD})"}
    lo = 0.0
    for kind, color in (("gained", GAINED_COLOR), ("lost", LOST_COLOR)):
        pts = points[points["kind"] == kind]
        x, y = _log10(pts["q"]), _log10(pts["p"])
        lo = min([lo, *x, *y])
        fig.add_trace(go.Scattergl(
            x=x, y=y, mode="markers", name=names[kind], marker=dict(color=color, size=5, opacity=0.6),
            hovertext=[_label(t) for t in pts["token"]], customdata=pts["contrib"],
            hovertemplate="%{hovertext}<br>log10 q %{x:.2f}, log10 p %{y:.2f}"
                          "<br>contrib %{customdata:.3g}<extra></extra>"))
    fig.add_trace(_diagonal(lo, 0.0))
    fig.update_layout(title="SFT probability against policy probability, top tokens",
                      xaxis_title="log10 q(v) (SFT)", yaxis_title="log10 p(v) (policy)")
    return fig


@readable
def token_shift_figure(gained: pd.DataFrame, lost: pd.DataFrame) -> go.Figure:
    """Tokens most gained (summed p log(p/q)) and most lost (summed q log(q/p)), by token text."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.22, subplot_titles=(
        f"most gained: sum of p log(p/q)<br>(share of {KL_REVERSE})",
        f"most lost: sum of q log(q/p)<br>(share of {KL_FORWARD})"))
    for col, (frame, color, name) in enumerate(((gained, GAINED_COLOR, "gained"),
                                                (lost, LOST_COLOR, "lost")), start=1):
        f = frame.iloc[::-1]  # largest at the top
        fig.add_trace(go.Bar(
            y=np.arange(len(f)), x=f["contrib"], orientation="h", name=name, marker_color=color,
            hovertext=[_label(t) for t in f["token"]],
            customdata=np.stack([f["count"], f["mean_p"], f["mean_q"]], -1) if len(f) else None,
            hovertemplate="%{hovertext}<br>%{x:.4g} nats<br>count %{customdata[0]}"
                          "<br>mean p %{customdata[1]:.3g}, mean q %{customdata[2]:.3g}<extra></extra>"),
            row=1, col=col)
        fig.update_yaxes(ranked_axis([_short_label(t) for t in f["token"]]), row=1, col=col)
    n = max(len(gained), len(lost), 1)
    fig.update_annotations(font=SUBTITLE_FONT)
    fig.update_layout(title="Tokens whose probability moved most", showlegend=False,
                      height=160 + BAR_PX * n, margin=dict(t=110))
    fig.update_xaxes(title_text="nats, summed over positions")
    return fig


@readable
def position_profile_figure(profile: pd.DataFrame) -> go.Figure:
    """Mean per-token exact KL both ways, and the k1 / k3 estimates, by response position."""
    fig = go.Figure()
    for col, name, color, dash in (("kl_reverse", f"exact {KL_REVERSE}", KL_REVERSE_COLOR, None),
                                   ("kl_forward", f"exact {KL_FORWARD}", KL_FORWARD_COLOR, None),
                                   ("k1", f"k1 (estimates {KL_REVERSE})", K1_COLOR, "dot"),
                                   ("k3", f"k3 (estimates {KL_REVERSE})", K3_COLOR, "dash")):
        fig.add_scatter(x=profile["position"], y=profile[col], name=name, mode="lines+markers",
                        line=dict(color=color, dash=dash), customdata=profile["n"],
                        hovertemplate="position %{x}<br>%{y:.4g} nats per token (n=%{customdata})")
    fig.update_layout(title="KL profile by response position", xaxis_title="response position",
                      yaxis_title="mean nats per token")
    return fig


SEQUENCE_NOTE = (f"Exact {KL_REVERSE} is ≥ 0 at every token, so its sum is too.<br>k1 = log p(y)/q(y) is "
                 "unbiased only in expectation over y from the policy; single tokens<br>with p(y) < q(y) "
                 "give k1 < 0, so a k1 sum can be negative. k3 = (q/p) − 1 − log(q/p) ≥ 0 always.")
# (<br>: plotly never wraps an annotation, and one 250-character line was cut off at 1280 px.)


@readable
def sequence_kl_figure(per_seq: pd.DataFrame) -> go.Figure:
    """Per response: summed exact KL(policy || SFT) against the sums of k1 and k3, with spread."""
    fig = go.Figure()
    quantities = (("kl_reverse", f"sum of exact {KL_REVERSE}"), ("k1", "sum of k1"), ("k3", "sum of k3"))
    sources = list(dict.fromkeys(per_seq["source"])) if "source" in per_seq else ["all"]
    for i, src in enumerate(sources or ["all"]):
        d = per_seq[per_seq["source"] == src] if "source" in per_seq else per_seq
        ids = [f"{esc(p)} / {s}" for p, s in zip(d["prompt_id"], d["sample_id"])]
        fig.add_trace(go.Box(
            x=[label for _, label in quantities for _ in range(len(d))],
            y=np.concatenate([d[c].to_numpy(dtype=np.float64) for c, _ in quantities]),
            text=ids * len(quantities), name=f"{esc(src)} samples", boxpoints="all", jitter=0.4,
            pointpos=0, marker_color=RUN_COLORS[i % MAX_RUNS],
            hovertemplate="response %{text}<br>%{y:.4g} nats<extra></extra>"))
    fig.add_hline(y=0, line_color="black", line_width=1)
    fig.update_layout(boxmode="group", title=f"Sequence-level {KL_REVERSE}: exact against k1 and k3",
                      yaxis_title="nats per response (summed over tokens)", margin=dict(b=150))
    fig.add_annotation(text=SEQUENCE_NOTE, xref="paper", yref="paper", x=0, y=-0.18, showarrow=False,
                       yanchor="top",
                       xanchor="left", align="left", font=dict(size=11))
    return fig


@readable
def position_detail_figure(detail: dict[str, pd.DataFrame]) -> go.Figure:
    """At one position: policy p and SFT q of the tokens gained most (top p log(p/q), shares of
    KL(policy || SFT)) and lost most (top q log(q/p), shares of KL(SFT || policy))."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.22, subplot_titles=(
        f"gained most<br>(share of {KL_REVERSE})", f"lost most<br>(share of {KL_FORWARD})"))
    for col, kind in enumerate(("gained", "lost"), start=1):
        f = detail[kind].iloc[::-1]
        for prob, name, color in (("p", "policy p(v)", POLICY_COLOR), ("q", "SFT q(v)", SFT_COLOR)):
            fig.add_trace(go.Bar(y=np.arange(len(f)), x=f[prob], orientation="h", name=name,
                                 marker_color=color, legendgroup=prob, showlegend=col == 1,
                                 customdata=f["contrib"], hovertext=[_label(t) for t in f["token"]],
                                 hovertemplate="%{hovertext}<br>" + name + " %{x:.4g}<br>"
                                               "contrib %{customdata:.4g} nats<extra></extra>"),
                          row=1, col=col)
        fig.update_yaxes(ranked_axis([_short_label(t) for t in f["token"]]), row=1, col=col)
    fig.update_annotations(font=SUBTITLE_FONT)
    fig.update_layout(barmode="group", title="Where this position's mass moved", margin=dict(t=100, r=100),
                      legend=dict(orientation="h", yanchor="top", y=-0.3))  # below the x titles; r: the right title fits
    fig.update_xaxes(title_text="probability")
    return fig


@readable
def logq_vs_logp_figure(detail: dict[str, pd.DataFrame]) -> go.Figure:
    """log q (SFT) against log p (policy), natural logs, for this position's top tokens."""
    fig = go.Figure()
    kinds = (("gained", GAINED_COLOR, f"top by p log(p/q) ({KL_REVERSE})"),
             ("lost", LOST_COLOR, f"top by q log(q/p) ({KL_FORWARD})"))
    lo = min([0.0, *(v for kind, _, _ in kinds for c in ("log_q", "log_p") for v in detail[kind][c])])
    taken: list[tuple[float, float]] = []
    for kind, color, name in kinds:
        f = detail[kind]
        labels = [_label(t) for t in f["token"]]
        # Only the LABELLED largest of each kind that clear the labels placed so far carry their text on
        # the chart (the rest overlapped in clusters); every point names its token on hover.
        named = apart_labels(f["log_q"], f["log_p"], LABELLED, span=max(-lo, 1e-9), taken=taken)
        fig.add_scatter(x=f["log_q"], y=f["log_p"], mode="markers+text", name=name,
                        marker=dict(color=color, size=9), hovertext=labels,
                        text=[t if keep else "" for t, keep in zip(labels, named)],
                        textposition="top center", customdata=f["contrib"],
                        hovertemplate="%{hovertext}<br>log q %{x:.3g}, log p %{y:.3g}"
                                      "<br>contrib %{customdata:.4g} nats<extra></extra>")
    fig.add_trace(_diagonal(lo, 0.0))
    fig.update_layout(title="log q against log p, top tokens at this position",
                      xaxis_title="log q(v) (SFT)", yaxis_title="log p(v) (policy)")
    return fig


@readable
def ppo_curves_figure(runs: dict[str, list[dict]], estimator_key: str | None) -> go.Figure:
    """Per step, up to MAX_RUNS runs overlaid, in the panels of style.ppo_panels: reward, exact
    KL(policy || SFT) (solid) and KL(SFT || policy) (dashed), the chosen estimate of KL(policy || SFT), and
    the coefficient beta. klviz.views.svg.ppo_curves_svg draws the same as an image."""
    panels = ppo_panels(estimator_key)
    # Wide gaps and the legend below: in Live PPO's column at 1280 px the right panels' axis title ran
    # into the left panels' ticks (issue 15).
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, vertical_spacing=0.22, horizontal_spacing=0.2,
                        subplot_titles=["<br>".join(title) for title, _, _ in panels])
    for i, (name, metrics) in enumerate(list(runs.items())[:MAX_RUNS]):
        first = True
        for k, (_, _, curves) in enumerate(panels):
            for key, dashed in curves:
                x, y = ppo_series(metrics, key)
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=esc(name), legendgroup=esc(name),
                                         showlegend=first, line=dict(color=RUN_COLORS[i], dash="dash" if dashed else None),
                                         hovertemplate=esc(name) + f" · {key}<br>step %{{x}}: %{{y:.4g}}"
                                                       "<extra></extra>"), row=k // 2 + 1, col=k % 2 + 1)
                first = False
    fig.update_xaxes(title_text="step", row=2)
    for k, (_, y_title, _) in enumerate(panels):
        if y_title:
            fig.update_yaxes(title_text=y_title, row=k // 2 + 1, col=k % 2 + 1)
    fig.update_annotations(font=SUBTITLE_FONT)
    fig.update_layout(title=PPO_CURVES_TITLE, legend=dict(title_text="run", orientation="h", yanchor="top", y=-0.24),
                      margin=dict(t=110))
    return fig
