"""klviz.views.tables frames -> plotly figures. No streamlit, and no pandas import (the band figures also
take plain {column: list} mappings, which the dashboard's first view draws before pandas loads).

Every KL label states its direction: KL(policy || SFT) = sum_v p log(p/q) (InstructGPT's penalty),
KL(SFT || policy) = sum_v q log(q/p). Token text is html-escaped before it reaches any text, hover
or label, since plotly renders a subset of HTML in them.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from klviz.engine.columns import BAND_LABELS

if TYPE_CHECKING:
    import pandas as pd

Bands = Mapping[str, Sequence]  # tables.band_totals' frame, or its columns as lists (klviz.shipped_view)

GAINED_COLOR = "#d6604d"  # mass the policy gained (p > q); punished by KL(policy || SFT)
LOST_COLOR = "#4393c3"  # mass the policy lost (q > p); punished by KL(SFT || policy)
KL_REVERSE_COLOR = "#b2182b"
KL_FORWARD_COLOR = "#2166ac"
K1_COLOR, K3_COLOR = "#7f7f7f", "#1b9e77"
POLICY_COLOR, SFT_COLOR = "#762a83", "#5aae61"
RUN_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")
MAX_RUNS = len(RUN_COLORS)
KL_REVERSE = "KL(policy || SFT)"
KL_FORWARD = "KL(SFT || policy)"
LOG10_FLOOR = -45.0  # log10 of ~the smallest float32 subnormal: where a p or q of 0 is drawn
STRIP_ROW_CHARS = 60  # the token inspector wraps its strip after about this many characters
VISIBLE_WS = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}
QUANTITY_LABELS = {
    "log_ratio": "log p(y)/q(y)", "kl_reverse": KL_REVERSE, "kl_forward": KL_FORWARD,
    "k1": f"k1 (estimates {KL_REVERSE})", "k3": f"k3 (estimates {KL_REVERSE})",
}


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


def _log10(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.maximum(np.log10(x), LOG10_FLOOR)


def mass_moved_figure(bands: Bands) -> go.Figure:
    """The headline: per SFT-probability band, mass gained (right) against mass lost (left)."""
    y = [esc(s) for s in bands["label"]]
    gained = np.asarray(bands["mass_gained"], dtype=np.float64)
    lost = np.asarray(bands["mass_lost"], dtype=np.float64)
    fig = go.Figure()
    fig.add_bar(y=y, x=gained, orientation="h", marker_color=GAINED_COLOR,
                name=f"mass gained (p > q): what {KL_REVERSE} punishes where q is small",
                hovertemplate="q band %{y}<br>gained %{x:.4g} per token<extra></extra>")
    fig.add_bar(y=y, x=-lost, orientation="h", marker_color=LOST_COLOR, customdata=lost,
                name=f"mass lost (q > p): what {KL_FORWARD} punishes where p became small",
                hovertemplate="q band %{y}<br>lost %{customdata:.4g} per token<extra></extra>")
    top = float(max(gained.max(), lost.max(), 1e-12)) if len(y) else 1.0
    fig.add_vline(x=0, line_color="black", line_width=1)
    fig.update_layout(
        barmode="relative",
        title=dict(text="Where the probability mass moved, by SFT probability q(v)",
                   subtitle=dict(text=f"→ mass gained on tokens the SFT model found unlikely: what {KL_REVERSE} "
                                      f"punishes · ← mass lost on tokens it found likely: what {KL_FORWARD} punishes")),
        margin=dict(t=90),
        xaxis=dict(title="← mass lost per token · mass gained per token →",
                   range=[-1.1 * top, 1.1 * top], tickformat=".2~g"),
        yaxis=dict(title="SFT probability band of q(v)", categoryorder="array",
                   categoryarray=[esc(s) for s in BAND_LABELS]),
        legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig


def kl_by_band_figure(bands: Bands) -> go.Figure:
    """Each band's share of KL(policy || SFT) and of KL(SFT || policy), per token."""
    x = [esc(s) for s in bands["label"]]
    fig = go.Figure()
    fig.add_bar(x=x, y=np.asarray(bands["kl_reverse"], dtype=np.float64), name=KL_REVERSE,
                marker_color=KL_REVERSE_COLOR)
    fig.add_bar(x=x, y=np.asarray(bands["kl_forward"], dtype=np.float64), name=KL_FORWARD,
                marker_color=KL_FORWARD_COLOR)
    fig.update_layout(barmode="group", title="KL contributions per SFT-probability band",
                      xaxis_title="SFT probability band of q(v)",
                      yaxis_title=f"nats per token ({KL_REVERSE} and {KL_FORWARD})")
    return fig


def _diagonal(lo: float, hi: float) -> go.Scatter:
    return go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="p = q",
                      line=dict(color="black", dash="dot", width=1), hoverinfo="skip")


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


def token_shift_figure(gained: pd.DataFrame, lost: pd.DataFrame) -> go.Figure:
    """Tokens most gained (summed p log(p/q)) and most lost (summed q log(q/p)), by token text."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"most gained: sum of p log(p/q), share of {KL_REVERSE}",
        f"most lost: sum of q log(q/p), share of {KL_FORWARD}"))
    for col, (frame, color, name) in enumerate(((gained, GAINED_COLOR, "gained"),
                                                (lost, LOST_COLOR, "lost")), start=1):
        f = frame.iloc[::-1]  # largest at the top
        fig.add_trace(go.Bar(
            y=[_label(t) for t in f["token"]], x=f["contrib"], orientation="h", name=name,
            marker_color=color, customdata=np.stack([f["count"], f["mean_p"], f["mean_q"]], -1)
            if len(f) else None,
            hovertemplate="%{y}<br>contrib %{x:.4g}<br>count %{customdata[0]}"
                          "<br>mean p %{customdata[1]:.3g}, mean q %{customdata[2]:.3g}<extra></extra>"),
            row=1, col=col)
    fig.update_layout(title="Tokens whose probability moved most", showlegend=False)
    fig.update_xaxes(title_text="nats (summed over positions)")
    return fig


def position_profile_figure(profile: pd.DataFrame) -> go.Figure:
    """Mean per-token exact KL both ways, and the k1 / k3 estimates, by response position."""
    fig = go.Figure()
    for col, name, color, dash in (("kl_reverse", f"exact {KL_REVERSE}", KL_REVERSE_COLOR, None),
                                   ("kl_forward", f"exact {KL_FORWARD}", KL_FORWARD_COLOR, None),
                                   ("k1", f"k1 (estimates {KL_REVERSE})", K1_COLOR, "dot"),
                                   ("k3", f"k3 (estimates {KL_REVERSE})", K3_COLOR, "dash")):
        fig.add_scatter(x=profile["position"], y=profile[col], name=name, mode="lines+markers",
                        line=dict(color=color, dash=dash), customdata=profile["n"],
                        hovertemplate="position %{x}<br>%{y:.4g} nats (n=%{customdata})")
    fig.update_layout(title="KL profile by response position", xaxis_title="response position",
                      yaxis_title="mean nats per token")
    return fig


SEQUENCE_NOTE = (f"Exact {KL_REVERSE} is ≥ 0 at every token, so its sum is too. k1 = log p(y)/q(y) is "
                 "unbiased only in expectation over y from the policy; single tokens with p(y) < q(y) "
                 "give k1 < 0, so a k1 sum can be negative. k3 = (q/p) − 1 − log(q/p) ≥ 0 always.")


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
                      yaxis_title="nats per response (summed over tokens)", margin=dict(b=110))
    fig.add_annotation(text=SEQUENCE_NOTE, xref="paper", yref="paper", x=0, y=-0.25, showarrow=False,
                       xanchor="left", align="left", font=dict(size=11))
    return fig


def _strip_layout(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wrap tokens into rows of ~STRIP_ROW_CHARS characters; a newline token ends its row.

    Returns (row, start, width) per token, in character units.
    """
    row, start, width = np.zeros(len(texts), int), np.zeros(len(texts)), np.zeros(len(texts))
    r, col = 0, 0.0
    for i, t in enumerate(texts):
        w = max(len(visible_token_text(t)), 1) + 0.6  # a little gap between neighbours
        if col > 0 and col + w > STRIP_ROW_CHARS:
            r, col = r + 1, 0.0
        row[i], start[i], width[i] = r, col, w
        col += w
        if "\n" in t:
            r, col = r + 1, 0.0
    return row, start, width


def token_strip_figure(tokens: pd.DataFrame, quantity: str) -> go.Figure:
    """One response as clickable token cells coloured by `quantity`, wrapped into rows.

    tokens: rows of one response (columns token, position, `quantity`), drawn in the given order.
    log_ratio and k1 (= log_ratio, signed) use a diverging scale centred at 0; kl_reverse =
    KL(policy || SFT), kl_forward = KL(SFT || policy) and k3 (all >= 0) use a sequential one. For st.plotly_chart(on_select="rerun",
    selection_mode="points"): a selected point's point_index and customdata[0] are the row's index
    into `tokens` (iloc); customdata[1] is its position.
    """
    texts = [str(t) for t in tokens["token"]]
    values = tokens[quantity].to_numpy(dtype=np.float64)
    row, start, width = _strip_layout(texts)
    diverging = quantity in ("log_ratio", "k1")
    bound = float(np.nanmax(np.abs(values))) if len(values) else 1.0
    marker = dict(color=values, colorscale="RdBu_r" if diverging else "Reds", showscale=True,
                  colorbar=dict(title=esc(QUANTITY_LABELS.get(quantity, quantity))),
                  line=dict(color="white", width=1))
    marker.update(dict(cmid=0.0) if diverging else dict(cmin=min(0.0, float(np.nanmin(values, initial=0))),
                                                         cmax=max(bound, 1e-12)))
    positions = tokens["position"].to_numpy() if "position" in tokens else np.arange(len(tokens))
    fig = go.Figure(go.Bar(
        x=width, base=start, y=row, orientation="h", width=0.85, marker=marker,
        text=[_label(t) for t in texts], textposition="inside", insidetextanchor="middle",
        textfont=dict(family="monospace"), constraintext="none",
        customdata=np.stack([np.arange(len(tokens)), positions, values], -1) if len(tokens) else None,
        hovertext=[esc(repr(t)) for t in texts],
        hovertemplate="%{hovertext}<br>position %{customdata[1]}<br>"
                      + esc(quantity) + " %{customdata[2]:.4g}<extra></extra>"))
    n_rows = int(row.max()) + 1 if len(row) else 1
    fig.update_layout(
        title=f"Response tokens coloured by {esc(QUANTITY_LABELS.get(quantity, quantity))}",
        height=120 + 34 * n_rows, uniformtext=dict(minsize=10, mode="show"), clickmode="event+select",
        xaxis=dict(visible=False, range=[-0.5, STRIP_ROW_CHARS + 8]),
        yaxis=dict(visible=False, autorange="reversed"), showlegend=False,
        margin=dict(t=48, b=8, l=8, r=8))  # plotly's default 100 + 80 px would leave no room for one row
    return fig


def position_detail_figure(detail: dict[str, pd.DataFrame]) -> go.Figure:
    """At one position: policy p and SFT q of the tokens gained most (top p log(p/q), shares of
    KL(policy || SFT)) and lost most (top q log(q/p), shares of KL(SFT || policy))."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"gained most (share of {KL_REVERSE})", f"lost most (share of {KL_FORWARD})"))
    for col, kind in enumerate(("gained", "lost"), start=1):
        f = detail[kind].iloc[::-1]
        y = [_label(t) for t in f["token"]]
        for prob, name, color in (("p", "policy p(v)", POLICY_COLOR), ("q", "SFT q(v)", SFT_COLOR)):
            fig.add_trace(go.Bar(y=y, x=f[prob], orientation="h", name=name, marker_color=color,
                                 legendgroup=prob, showlegend=col == 1, customdata=f["contrib"],
                                 hovertemplate="%{y}<br>" + name + " %{x:.4g}<br>"
                                               "contrib %{customdata:.4g}<extra></extra>"),
                          row=1, col=col)
    fig.update_layout(barmode="group", title="Where this position's mass moved")
    fig.update_xaxes(title_text="probability")
    return fig


def logq_vs_logp_figure(detail: dict[str, pd.DataFrame]) -> go.Figure:
    """log q (SFT) against log p (policy), natural logs, for this position's top tokens."""
    fig = go.Figure()
    lo = 0.0
    for kind, color, name in (("gained", GAINED_COLOR, f"top by p log(p/q) ({KL_REVERSE})"),
                              ("lost", LOST_COLOR, f"top by q log(q/p) ({KL_FORWARD})")):
        f = detail[kind]
        lo = min([lo, *f["log_q"], *f["log_p"]])
        fig.add_scatter(x=f["log_q"], y=f["log_p"], mode="markers+text", name=name,
                        marker=dict(color=color, size=9), text=[_label(t) for t in f["token"]],
                        textposition="top center", customdata=f["contrib"],
                        hovertemplate="%{text}<br>log q %{x:.3g}, log p %{y:.3g}"
                                      "<br>contrib %{customdata:.4g}<extra></extra>")
    fig.add_trace(_diagonal(lo, 0.0))
    fig.update_layout(title="log q against log p, top tokens at this position",
                      xaxis_title="log q(v) (SFT)", yaxis_title="log p(v) (policy)")
    return fig


def _series(metrics: list[dict], key: str) -> tuple[list, list]:
    steps = [m.get("step", i) for i, m in enumerate(metrics)]
    return steps, [m.get(key, np.nan) if m.get(key) is not None else np.nan for m in metrics]


def ppo_curves_figure(runs: dict[str, list[dict]], estimator_key: str | None) -> go.Figure:
    """Per step, up to MAX_RUNS runs overlaid: reward, exact KL(policy || SFT) (solid) and
    KL(SFT || policy) (dashed), the chosen estimate of KL(policy || SFT), and the coefficient beta."""
    est = f"{estimator_key} estimate of {KL_REVERSE}" if estimator_key else "estimate (none chosen)"
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, subplot_titles=(
        "reward (mean)", f"exact {KL_REVERSE} — and {KL_FORWARD} dashed", est, "KL coefficient beta"))
    panels = [("reward_mean", 1, 1, None), ("kl_reverse", 1, 2, None), ("kl_forward", 1, 2, "dash"),
              (estimator_key, 2, 1, None), ("kl_coef", 2, 2, None)]
    for i, (name, metrics) in enumerate(list(runs.items())[:MAX_RUNS]):
        for j, (key, r, c, dash) in enumerate(panels):
            if key is None:
                continue
            x, y = _series(metrics, key)
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=esc(name), legendgroup=esc(name),
                                     showlegend=j == 0, line=dict(color=RUN_COLORS[i], dash=dash),
                                     hovertemplate=esc(name) + f" · {key}<br>step %{{x}}: %{{y:.4g}}"
                                                   "<extra></extra>"), row=r, col=c)
    fig.update_xaxes(title_text="step", row=2)
    fig.update_yaxes(title_text="nats", row=1, col=2)
    fig.update_layout(title="Live PPO", legend_title_text="run")
    return fig
