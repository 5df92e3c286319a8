"""klviz.views.acted frames -> plotly figures for the "Where RL acted" page. No streamlit.

KL directions as everywhere: KL(policy || SFT) = sum_v p log(p/q), KL(SFT || policy) = sum_v q log(q/p).
Token text is html-escaped (plots._label) before it reaches a label or a hover.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import numpy as np
import plotly.graph_objects as go

from klviz.views.acted import SHIFT_CLASSES
from klviz.views.plots import (GAINED_COLOR, KL_FORWARD, KL_FORWARD_COLOR, KL_REVERSE, KL_REVERSE_COLOR,
                               BAR_PX, _diagonal, _label, _short_label, ranked_axis, readable)

if TYPE_CHECKING:
    import pandas as pd

SHIFT_COLORS = {"unshifted": "#bababa", "marginal": "#f4a582", "shifted": GAINED_COLOR}
SHIFT_NAMES = {"unshifted": "unshifted (SFT rank 1)", "marginal": "marginal (SFT rank 2-3)",
               "shifted": "shifted (SFT rank > 3)"}
SCATTER_POINTS = 4000  # the entropy scatter draws at most this many tokens (largest |change| first)


@readable
def shift_by_position_figure(by_position: pd.DataFrame) -> go.Figure:
    """Stacked fractions of unshifted / marginal / shifted sampled tokens by response position."""
    fig = go.Figure()
    for c in SHIFT_CLASSES:
        fig.add_bar(x=by_position["position"], y=by_position[c], name=SHIFT_NAMES[c],
                    marker_color=SHIFT_COLORS[c], customdata=by_position["n"],
                    hovertemplate="position %{x}<br>%{y:.1%} of %{customdata} tokens<extra></extra>")
    fig.update_layout(barmode="stack", title="Token shift by response position (Lin et al. 2023)",
                      xaxis_title="response position", yaxis=dict(title="fraction of sampled tokens",
                                                                  tickformat=".0%", range=[0, 1]),
                      legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig


@readable
def most_shifted_figure(frame: pd.DataFrame) -> go.Figure:
    """The sampled tokens most often shifted (SFT rank > 3), one labelled bar each, most at the top."""
    f = frame.iloc[::-1]
    fig = go.Figure(go.Bar(
        y=np.arange(len(f)), x=f["shifted"], orientation="h", marker_color=GAINED_COLOR,
        hovertext=[_label(t) for t in f["token"]],
        customdata=np.stack([f["n"], f["shifted_fraction"], f["mean_rank_sft"]], -1) if len(f) else None,
        hovertemplate="%{hovertext}<br>shifted %{x} of %{customdata[0]} times (%{customdata[1]:.0%})"
                      "<br>mean SFT rank %{customdata[2]:.1f}<extra></extra>"))
    fig.update_layout(title="Tokens most often shifted", height=140 + BAR_PX * max(len(f), 1),
                      yaxis=ranked_axis([_short_label(t) for t in f["token"]]),
                      xaxis_title="times sampled with SFT rank > 3")
    return fig


@readable
def forking_figure(forking: Mapping[str, float]) -> go.Figure:
    """The forking positions' share of tokens against their share of each summed KL."""
    x = ["share of tokens", f"share of {KL_REVERSE}", f"share of {KL_FORWARD}"]
    y = [forking["token_share"], forking["share_kl_reverse"], forking["share_kl_forward"]]
    fig = go.Figure(go.Bar(x=x, y=y, marker_color=["#7f7f7f", KL_REVERSE_COLOR, KL_FORWARD_COLOR],
                           text=[f"{v:.0%}" for v in y], textposition="outside",
                           hovertemplate="%{x}: %{y:.2%}<extra></extra>"))
    fig.update_layout(title=dict(text="Forking positions (top 20% by SFT entropy, Wang et al. 2025)",
                                 subtitle=dict(text="their share of the summed KL in each direction, "
                                                    "against their share of tokens")),
                      margin=dict(t=90), yaxis=dict(title="fraction of the rows shown", tickformat=".0%",
                                                    range=[0, 1.1]))
    return fig


@readable
def entropy_scatter_figure(exact: np.ndarray, first_order: np.ndarray, correlation: float,
                           tokens=None) -> go.Figure:
    """Per token: the exact entropy change H(policy) - H(SFT) against its first-order prediction
    -Cov_{v~q}(log q, log p - log q) (Cui et al. 2025), with the line y = x; nats per token."""
    exact, first = np.asarray(exact, np.float64), np.asarray(first_order, np.float64)
    keep = np.argsort(-np.abs(exact), kind="stable")[:SCATTER_POINTS]
    text = [_label(tokens[i]) for i in keep] if tokens is not None else None
    fig = go.Figure(go.Scattergl(
        x=first[keep], y=exact[keep], mode="markers", name="tokens", hovertext=text,
        marker=dict(color=KL_REVERSE_COLOR, size=5, opacity=0.5),
        hovertemplate="%{hovertext}<br>first order %{x:.4g} nats<br>exact %{y:.4g} nats<extra></extra>"))
    both = np.concatenate([exact[keep], first[keep]])
    both = both[np.isfinite(both)]
    lo, hi = (float(both.min()), float(both.max())) if len(both) else (-1.0, 1.0)
    fig.add_trace(_diagonal(lo, hi).update(name="exact = first order"))
    r = "n/a" if not np.isfinite(correlation) else f"{correlation:.3f}"
    fig.update_layout(title=dict(text=f"Entropy change per token: exact against first order (r = {r})",
                                 subtitle=dict(text="H(policy) − H(SFT) against −Cov_q(log q, log p − log q), "
                                                    "Cui et al. 2025")),
                      margin=dict(t=90), xaxis_title="first-order prediction, nats per token",
                      yaxis_title="exact H(policy) − H(SFT), nats per token",
                      legend=dict(orientation="h", yanchor="top", y=-0.2))
    return fig
